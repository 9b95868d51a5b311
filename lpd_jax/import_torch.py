"""python -m lpd_jax.import_torch --checkpoints=a.pt,b.pt,c.pt --layout=NAME --config=CONFIG
--workdir=W: K PyTorch ResNet members as an lpd-jax workdir (its flags live here only).

The workdir gets what training would leave for evaluation: `ensemble.json` (the config,
with `model`, `width` and `num_members` read from the weights), one verified checkpoint
(`lpd_jax.checkpoint`, with a manifest) of epoch 0 holding the members' variables and a fresh
optimizer state, and `imported.json`: where the weights came from (each file's path,
SHA-256, size and the members it held; the layout and the keys left unused). `eval.py`,
`lpd_jax.compare`, the probes and certification read it as any workdir; `train.py` with the
same config fine-tunes it from epoch 0. Layouts: `lpd_jax.torch_bridge.REGISTRY`.
"""

import datetime
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lpd_jax import checkpoint, cli, data, loading, predict, torch_bridge
from lpd_jax import config as config_lib
from lpd_jax import workdir as workdir_lib
from lpd_jax.errors import CheckpointError
from lpd_jax.progress import phase
from lpd_jax.train_step import TrainState, make_optimizer

NUM_ACCURACY_IMAGES = 512  # the sanity check: accuracy on the first test images


def _check_fits(ds, config, layout, num_classes, in_channels):
  """CheckpointError in one line where the weights cannot compute on the config's data."""
  height, width, channels = ds.input_shape
  if num_classes != ds.num_classes:
    raise CheckpointError(
      f'the heads have {num_classes} classes, {config.dataset} has {ds.num_classes}'
    )
  if in_channels != channels:
    raise CheckpointError(
      f'the stem convolution takes {in_channels} input channels, {config.dataset} images '
      f'have {channels}'
    )
  if layout.input_size and (height, width) != (layout.input_size,) * 2:
    raise CheckpointError(
      f"layout {layout.name} computes lpd-jax's network on {layout.input_size}x"
      f'{layout.input_size} images only ({layout.notes}); {config.dataset} images are '
      f'{height}x{width}'
    )


def _state(config, variables):
  """The TrainState `train.py` resumes: the imported variables, step 0, and the optimizer's
  initial state (its structure does not depend on the schedule's length)."""
  tx, _ = make_optimizer(config, steps_per_epoch=1)
  variables = jax.tree.map(jnp.asarray, variables)
  opt_state = jax.jit(jax.vmap(tx.init))(variables['params'])
  return TrainState(variables=variables, opt_state=opt_state, step=jnp.zeros((), jnp.int32))


def import_workdir(config, workdir, checkpoints, layout_name):
  """Writes the members of `checkpoints` (layout `layout_name`) as the workdir `workdir` of
  `config`'s dataset. Returns [lines saying what was imported]."""
  layout = torch_bridge.get(layout_name)
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise CheckpointError(f'workdir {workdir} exists and is not empty: import into a new one')
  with phase(f'reading {len(checkpoints)} file(s) as layout {layout.name}'):
    model, variables, sources = torch_bridge.read_members(checkpoints, layout)
  kernel = variables['params']['stem_conv']['kernel']  # [K, 3, 3, c, w]
  num_members, in_channels, width = kernel.shape[0], kernel.shape[-2], kernel.shape[-1]
  num_classes = variables['params']['head']['bias'].shape[-1]
  config.model, config.width, config.num_members = model, int(width), int(num_members)
  config_lib.validate(config)
  with phase(f'loading {config.dataset}'):
    ds = data.load_dataset(config)
  _check_fits(ds, config, layout, num_classes, in_channels)
  workdir_lib.check_writable(workdir)
  with phase(f'writing the checkpoint of {num_members} members'):
    mgr = checkpoint.manager(workdir, config.keep_checkpoints)
    checkpoint.save(mgr, 0, _state(config, variables))
  saved = config_lib.run_config(config)
  workdir_lib.write_meta(workdir, workdir_lib.Meta(saved, ds.num_classes, ds.input_shape))
  record = dict(
    layout=layout.name,
    layout_source=layout.source,
    files=[dict(s, file=os.path.abspath(s['file'])) for s in sources],
    model=model,
    when=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  )
  workdir_lib.write_json_atomically(workdir_lib.path(workdir, workdir_lib.IMPORTED_FILE), record)
  ens = loading.load(workdir)
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), ens.variables, variables)
  if not all(jax.tree.leaves(same)):
    raise CheckpointError(f'the checkpoint written to {workdir} does not hold the imported weights')
  n = min(NUM_ACCURACY_IMAGES, len(ds.test_labels))
  images = data.to_float(ds.test_images[:n])
  acc = predict.clean_accuracy(ens, images, ds.test_labels[:n], config.eval.batch_size)
  unused = sum(len(s['unused_keys']) for s in sources)
  chance = acc['ensemble_accuracy'] < 2 / num_classes
  return [
    f'imported {num_members} members ({model}, width {width}, {num_classes} classes) from '
    f'{len(sources)} file(s) of layout {layout.name} into {workdir} (checkpoint of epoch 0'
    + (f'; {unused} unused keys listed in {workdir_lib.IMPORTED_FILE})' if unused else ')'),
    f'test accuracy {100 * acc["ensemble_accuracy"]:.2f}% on the first {n} {config.dataset} '
    f'test images (members {" / ".join(f"{100 * a:.2f}" for a in acc["member_accuracy"])})'
    + ('; near chance: do the weights expect other inputs (normalised ones)?' if chance else ''),
    f'next: python eval.py --workdir={workdir}',
  ]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  FLAGS = flags.FLAGS

  def run():
    paths = [p for p in FLAGS.checkpoints if p]
    for line in import_workdir(FLAGS.config, FLAGS.workdir, paths, FLAGS.layout):
      print(line, flush=True)

  cli.run_reporting_user_errors(run)


if __name__ == '__main__':
  cli.define_flags(config_required=True)
  flags.DEFINE_list('checkpoints', None, 'the members: .safetensors or .pt files, in order')
  flags.DEFINE_string(
    'layout', None, f'how the files name the modules: {", ".join(torch_bridge.REGISTRY)}'
  )
  flags.mark_flags_as_required(['checkpoints', 'layout'])
  cli.run(main)
