"""Checkpoints behind one module: orbax `CheckpointManager` plus `ensemble.json`.

A workdir holds `checkpoints/<epoch>/` with two items, `variables` (stacked params
and batch_stats: all an evaluation needs) and `optimizer` (stacked optimizer state
and step), and `ensemble.json` (the config, num_classes and input_shape, enough to
rebuild the model without the data).
"""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from lpd_jax import ensemble as ensemble_lib
from lpd_jax.models import ResNet18

# Fields that fix the shapes and meaning of the saved parameters.
MODEL_FIELDS = ('dataset', 'num_members', 'width', 'method')


class CheckpointError(RuntimeError):
  """A workdir that cannot be used with the given config, or holds no checkpoint."""


def manager(workdir, keep=2):
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=options)


def save(mgr, epoch, state):
  """state: {'variables': ..., 'opt_state': ..., 'step': ...} with stacked leaves."""
  optimizer = {'opt_state': state['opt_state'], 'step': state['step']}
  mgr.save(epoch, args=ocp.args.Composite(variables=ocp.args.StandardSave(state['variables']),
                                          optimizer=ocp.args.StandardSave(optimizer)))
  mgr.wait_until_finished()


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore(mgr, epoch, like_state=None, like_variables=None):
  """Restores `epoch` into the structure of `like_state` (whole state) or of
  `like_variables` (variables only)."""
  if like_state is not None:
    like_optimizer = {'opt_state': like_state['opt_state'], 'step': like_state['step']}
    args = ocp.args.Composite(
        variables=ocp.args.StandardRestore(_abstract(like_state['variables'])),
        optimizer=ocp.args.StandardRestore(_abstract(like_optimizer)))
  else:
    args = ocp.args.Composite(variables=ocp.args.StandardRestore(_abstract(like_variables)))
  try:
    out = mgr.restore(epoch, args=args)
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f'checkpoint {mgr.directory}/{epoch} does not match this model: '
                          f'{str(e).splitlines()[0]}') from None
  if like_state is None:
    return out['variables']
  return dict(variables=out['variables'], **out['optimizer'])


def write_meta(workdir, config, num_classes, input_shape):
  os.makedirs(workdir, exist_ok=True)
  meta = dict(config=config.to_dict(), num_classes=num_classes, input_shape=list(input_shape))
  with open(os.path.join(workdir, 'ensemble.json'), 'w') as f:
    json.dump(meta, f, indent=2)


def read_meta(workdir):
  """-> (config ConfigDict, num_classes, input_shape), or None if the workdir has none."""
  path = os.path.join(workdir, 'ensemble.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    meta = json.load(f)
  return ml_collections.ConfigDict(meta['config']), meta['num_classes'], tuple(meta['input_shape'])


def check_compatible(workdir, config, saved_config):
  """Raises CheckpointError if the workdir was trained with a different model."""
  diffs = [f'{k}: workdir has {saved_config[k]!r}, config says {config[k]!r}'
           for k in MODEL_FIELDS if saved_config[k] != config[k]]
  if diffs:
    raise CheckpointError(
        f'workdir {workdir} holds a checkpoint of another ensemble ({"; ".join(diffs)}). '
        'Use a new --workdir, or the config it was trained with.')


def load(workdir, config=None, epoch=None):
  """Restores the latest (or the given) checkpoint of `workdir` as an Ensemble.

  Args:
    workdir: a directory written by `lpd_jax.train.train_and_evaluate`.
    config: if given, must describe the same model (MODEL_FIELDS); its
      `member_strategy` and `eval` settings are used.
    epoch: which checkpoint; default the latest.

  Returns:
    Ensemble with variables [K, ...] and the config (frozen) it was trained with.
  """
  meta = read_meta(workdir)
  mgr = manager(workdir) if meta else None
  epoch = epoch if epoch is not None else (mgr.latest_step() if mgr else None)
  if meta is None or epoch is None:
    raise CheckpointError(f'no checkpoint in workdir {os.path.abspath(workdir)}: train first with '
                          f'python train.py --config=... --workdir={workdir}')
  saved_config, num_classes, input_shape = meta
  if config is not None:
    check_compatible(workdir, config, saved_config)
  else:
    config = saved_config
  model = ResNet18(num_classes=num_classes, width=saved_config.width)
  like = jax.eval_shape(lambda: ensemble_lib.init_variables(
      model, jax.random.key(0), saved_config.num_members, input_shape))
  variables = restore(mgr, epoch, like_variables=like)
  return ensemble_lib.Ensemble(variables, model, config.member_strategy,
                               ml_collections.FrozenConfigDict(config))
