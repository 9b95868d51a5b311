"""`lpd_jax.load`: a workdir's checkpoint and config composed into an `Ensemble`.

Composes checkpoint (variables, meta), the model factory and the method's keep-rate
function (for 'expected' inference); it sits above all three so that none of them
imports another.
"""

import dataclasses
import os
from typing import Optional

import jax
import ml_collections

from lpd_jax import checkpoint, ensemble, methods
from lpd_jax import config as config_lib
from lpd_jax import workdir as workdir_lib
from lpd_jax.errors import CheckpointError, ConfigError


def read_config(workdir: str) -> Optional[workdir_lib.Meta]:
  """The workdir's Meta with its config over today's defaults (`config.from_saved`), or
  None without ensemble.json."""
  meta = workdir_lib.read_meta(workdir)
  if meta is None:
    return None
  return dataclasses.replace(meta, config=config_lib.from_saved(meta.config))


def load(
  workdir: str,
  config=None,
  *,
  inference: Optional[str] = None,
  epoch: Optional[int] = None,
) -> ensemble.Ensemble:
  """Restores the latest (or the given) checkpoint of `workdir` as an Ensemble.

  Args:
    workdir: a directory written by `lpd_jax.train.train_and_evaluate`.
    config: if given, must describe the same model (workdir.MODEL_FIELDS); its
      `member_strategy` and `eval` settings are used. Default: the workdir's own.
    inference: 'raw' | 'expected' (docs/methods.md, "Evaluation of dropout-trained
      members");
      default config.eval.inference ('raw').
    epoch: which checkpoint (CheckpointError if it fails verification); default the
      newest that verifies: a newer damaged one is reported in a one-line warning.

  Returns:
    Ensemble with variables [K, ...], the config (frozen) and `meta` {'workdir', 'epoch',
    'num_classes', 'input_shape', 'checkpoint' (`checkpoint.identity`: epoch, step, digest,
    the workdir's newest epoch)}.
  """
  saved = read_config(workdir)
  mgr = checkpoint.manager(workdir) if saved else None
  epoch_given = epoch is not None
  epoch = epoch if epoch is not None else (mgr.latest_step() if mgr else None)
  if saved is None or epoch is None:
    raise CheckpointError(
      f'no checkpoint in workdir {os.path.abspath(workdir)}: train first with '
      f'python train.py --config=... --workdir={workdir}'
    )
  saved_config, num_classes, input_shape = saved.config, saved.num_classes, saved.input_shape
  if config is not None:
    workdir_lib.check_compatible(workdir, config, saved_config)
  else:
    config = saved_config
  members = ensemble.create(config, num_classes)
  like = jax.eval_shape(
    lambda: members.init(jax.random.key(0), saved_config.num_members, input_shape)
  )
  if epoch_given:
    variables = checkpoint.restore(mgr, epoch, like_variables=like)
  else:
    epoch, variables, _ = checkpoint.restore_newest(mgr, like_variables=like)
  meta = dict(
    workdir=os.path.abspath(workdir),
    epoch=epoch,
    num_classes=num_classes,
    input_shape=tuple(input_shape),
    checkpoint=checkpoint.identity(mgr, epoch, variables),
  )
  return assemble(variables, members, config, meta, inference or config.eval.inference)


def assemble(variables, members, config, meta=None, inference='raw'):
  """Stacked variables + Members + config -> Ensemble, with the method's keep rates
  (config.method's `Method.keep_rates`) for 'expected' inference."""
  method = methods.get(config.method)
  keep_rates = method.keep_rates(config) if method.keep_rates else None
  return ensemble.Ensemble(
    variables, members, inference, keep_rates, ml_collections.FrozenConfigDict(config), meta
  )


def starting_point(config, num_classes, like_variables):
  """config.init_from's newest verified checkpoint as the starting members of a new run
  (DVERGE's reference starts from trained Baseline members).

  Returns:
    (variables {'params', 'batch_stats'} [K, ...] cast like `like_variables`, the source's
    `checkpoint.identity` with its 'workdir' and 'method'). ConfigError naming what differs
    when that workdir holds another ensemble (dataset, model, K, width, classes).
  """
  source = config.init_from
  saved = read_config(source)
  if saved is None:
    raise ConfigError(f'init_from: no trained ensemble in {source} (no ensemble.json there)')
  fields = ('dataset', 'model', 'num_members', 'width')
  diffs = [
    f'{f}: {saved.config.get(f)!r} there, {config[f]!r} here'
    for f in fields
    if saved.config.get(f) != config[f]
  ]
  if saved.num_classes != num_classes:
    diffs.append(f'classes: {saved.num_classes} there, {num_classes} here')
  if diffs:
    raise ConfigError(f'init_from {source} holds another ensemble ({"; ".join(diffs)})')
  ens = load(source)
  identity = dict(ens.meta['checkpoint'], workdir=os.path.abspath(source))
  identity['method'] = saved.config.method
  cast = lambda like, value: jax.numpy.asarray(value, like.dtype)
  return jax.tree.map(cast, like_variables, ens.variables), identity
