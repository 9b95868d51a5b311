"""The reports of `eval.py`, one module each; `REGISTRY` (name -> Suite) is their list.

A suite is `run(ens, ctx) -> Report` (`lpd_jax.suites.common`): it computes, the driver
(`lpd_jax.evaluate`) writes. Its config group `config.eval.<name>` holds its defaults.
Adding a suite is one module here plus one line below.
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
