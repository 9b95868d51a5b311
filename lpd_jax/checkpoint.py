"""Checkpoints behind one module: orbax `CheckpointManager` plus `ensemble.json`.

Pytrees in, pytrees out: this module knows no model or method (`lpd_jax.load` composes
them into an Ensemble).

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

from lpd_jax.errors import CheckpointError

# Fields that fix the shapes and meaning of the saved parameters, with the value a
# workdir saved before the field existed is taken to have.
MODEL_FIELDS = {
  'dataset': None,
  'model': 'resnet18',
  'num_members': None,
  'width': None,
  'method': None,
}


def manager(workdir, keep=2):
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, 'checkpoints')), options=options
  )


def save(mgr, epoch, state):
  """state: {'variables': ..., 'opt_state': ..., 'step': ...} with stacked leaves."""
  optimizer = {'opt_state': state['opt_state'], 'step': state['step']}
  mgr.save(
    epoch,
    args=ocp.args.Composite(
      variables=ocp.args.StandardSave(state['variables']),
      optimizer=ocp.args.StandardSave(optimizer),
    ),
  )
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
      optimizer=ocp.args.StandardRestore(_abstract(like_optimizer)),
    )
  else:
    args = ocp.args.Composite(variables=ocp.args.StandardRestore(_abstract(like_variables)))
  try:
    out = mgr.restore(epoch, args=args)
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
      f'checkpoint {mgr.directory}/{epoch} does not match this model: {str(e).splitlines()[0]}'
    ) from None
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
  saved = {k: saved_config.get(k, old) for k, old in MODEL_FIELDS.items()}
  diffs = [
    f'{k}: workdir has {saved[k]!r}, config says {config[k]!r}'
    for k in MODEL_FIELDS
    if saved[k] != config[k]
  ]
  if diffs:
    raise CheckpointError(
      f'workdir {workdir} holds a checkpoint of another ensemble ({"; ".join(diffs)}). '
      'Use a new --workdir, or the config it was trained with.'
    )
