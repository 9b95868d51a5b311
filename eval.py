"""Evaluates the checkpoint in a workdir: python eval.py --workdir=DIR [--config=...].

Without --config the workdir's own config is used; `--config.eval.*` overrides need
--config (the one the ensemble was trained with).
"""

from lpd_jax import cli, evaluate, loading
from lpd_jax.errors import CheckpointError

_CONFIG, _WORKDIR = cli.define_flags(config_required=False)


def _config(workdir):
  if _CONFIG.value is not None:
    return _CONFIG.value
  meta = loading.read_config(workdir)
  if meta is None:
    raise CheckpointError(f'no ensemble.json in workdir {workdir}: train first, or pass --config')
  return meta[0]


def main(argv):
  del argv
  cli.run_reporting_user_errors(lambda w: evaluate.evaluate(_config(w), w), _WORKDIR.value)


if __name__ == '__main__':
  cli.run(main)
