"""The evaluation types of `eval.py`, one module each; `REGISTRY` (name -> Suite) is their
list.

A suite is `run(ens, ctx) -> Report` (`lpd_jax.suites.common`): it computes and returns its
JSON, Markdown, files and flat metric records; the driver (`lpd_jax.evaluate`) writes them
under the name of the evaluation (`lpd_jax.evaluations`). Its config group
`config.eval.<name>` holds its defaults. Adding a suite is one module here plus its import
and one line below.
"""

from lpd_jax.suites import audit, certify, clean, paper, probes, robust, sweep, transfer
from lpd_jax.suites.common import Report, Suite, SuiteContext

REGISTRY = {
  s.name: s
  for s in (
    clean.SUITE,
    paper.SUITE,
    sweep.SUITE,
    transfer.SUITE,
    probes.SUITE,
    robust.SUITE,
    audit.SUITE,
    certify.SUITE,
  )
}

__all__ = ['REGISTRY', 'Report', 'Suite', 'SuiteContext']
