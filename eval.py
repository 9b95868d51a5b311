"""Evaluates the checkpoint in a workdir: python eval.py --workdir=DIR [--config=...].

Without --config the workdir's own config is the base (lpd_jax/workdir_config.py), and
`--config.eval.suite=paper` and other `--config.*` overrides apply to it.
"""

import sys

from lpd_jax import cli, evaluate

_CONFIG, _WORKDIR = cli.define_flags(config_required=True)


def main(argv):
  del argv
  cli.run_reporting_user_errors(evaluate.evaluate, _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  sys.argv = cli.with_workdir_config(sys.argv)
  cli.run(main)
