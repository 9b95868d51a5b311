"""The config a workdir was trained with, as an ml_collections config file.

`eval.py` without --config passes `--config=<this file>:WORKDIR`, so that
`--config.eval.*=...` overrides apply to the workdir's own config (saved in its
ensemble.json, over today's defaults). Fields that change the model are refused later
with the workdir-mismatch message.
"""

from lpd_jax import loading
from lpd_jax.errors import CheckpointError


def get_config(workdir):
  saved = loading.read_config(workdir)
  if saved is None:
    raise CheckpointError(f'no ensemble.json in workdir {workdir}: train first, or pass --config')
  return saved.config
