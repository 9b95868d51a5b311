"""A workdir's ensemble in files that need no lpd-jax: `python -m lpd_jax.export`.

Writes into a folder:
  ensemble.safetensors  the K members' weights in PyTorch's names and layouts
                        (layout 'lpd_jax': `members.{k}.stem_conv.weight` [O, I, 3, 3], ...,
                        `members.{k}.head.weight` [C, D]; BatchNorm `running_mean`,
                        `running_var`, `num_batches_tracked` = the checkpoint's training
                        steps) and the ensemble's description in the header's metadata
  lpd_ensemble.py       the PyTorch module (`torch_module.py`, torch imports only): the members
                        and eq. 1 ('raw' inference) as `forward`
  check.npz             test images (NCHW) and lpd-jax's member logits and log mean softmax
                        on them: `python lpd_ensemble.py` compares the module with them

'expected' inference (docs/methods.md, "Evaluation of dropout-trained members") scales
each head's input by the method's keep rates, binned statistics over all members'
features; the module does not compute them, so an export of a workdir whose method has
keep rates in 'expected' inference is refused (for a method without keep rates it is
'raw'). ONNX is not written.
"""

import importlib.util
import os
import shutil

import jax
import numpy as np

from lpd_jax import data, ensemble, loading
from lpd_jax.errors import CheckpointError, ConfigError, DataError
from lpd_jax.torch_bridge import convert, files
from lpd_jax.torch_bridge.layouts.lpd_jax import LAYOUT

WEIGHTS = 'ensemble.safetensors'
MODULE = 'lpd_ensemble.py'
CHECK = 'check.npz'
TOLERANCE = 1e-5  # relative to the largest magnitude (torch_module.relative_difference)
NUM_CHECK_IMAGES = 16


def to_state_dict(variables, model, steps=0):
  """Stacked variables [K, ...] -> {`members.{k}.<name>`: array} in layout 'lpd_jax'."""
  variables = jax.tree.map(np.asarray, variables)
  out = {}
  for k in range(jax.tree.leaves(variables)[0].shape[0]):
    member = jax.tree.map(lambda a, k=k: a[k], variables)
    for key, value in convert.to_torch(member, model, LAYOUT, steps).items():
      out[f'members.{k}.{key}'] = value
  return out


def _inference(ens, asked):
  """The inference mode written ('raw'), or ConfigError for 'expected' with keep rates."""
  mode = asked or ens.config.eval.inference
  if mode == 'expected' and ens.keep_rates is not None:
    raise ConfigError(
      f"inference 'expected' of method {ens.config.method!r} scales each head's input by "
      "keep rates over all members' features, which the PyTorch module does not compute; "
      'export --inference=raw'
    )
  if mode not in ensemble.INFERENCE_MODES:
    raise ConfigError(f'unknown inference {mode!r}; choose one of raw, expected')
  return 'raw'


def _check_images(config, input_shape):
  """(x [N, H, W, c] in [0, 1], where they came from): the first test images, or uniform
  noise where the dataset is not on this machine."""
  try:
    ds = data.load_dataset(config)
    return data.to_float(ds.test_images[:NUM_CHECK_IMAGES]), f'{config.dataset} test images'
  except DataError:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(NUM_CHECK_IMAGES, *input_shape)).astype(np.float32)
    return x, f'uniform noise images ({config.dataset} is not on this machine)'


def torch_check(out):
  """{'member_logits', 'log_probs'} relative differences of the written module from lpd-jax's
  outputs (check.npz), or None where PyTorch is not importable."""
  if importlib.util.find_spec('torch') is None:
    return None
  spec = importlib.util.spec_from_file_location('lpd_ensemble', os.path.join(out, MODULE))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.check(out)


def export(workdir, out, inference=None):
  """Writes the ensemble of `workdir` into folder `out` (see the module docstring).

  Returns:
    [lines saying what was written and checked].
  """
  saved = loading.read_config(workdir)
  if saved is None:
    raise CheckpointError(f'no ensemble.json in {workdir}: nothing to export')
  config = saved.config
  if config.model not in convert.resnet_models():
    have = ', '.join(convert.resnet_models())
    raise ConfigError(f'export writes the ResNets ({have}); {workdir} holds a {config.model}')
  config.dtype = 'float32'  # the parameters are float32; a bfloat16 run's forward is not
  ens = loading.load(workdir, config, inference='raw')
  _inference(ens, inference)
  meta = ens.meta
  steps = meta['checkpoint'].get('step') or 0
  tensors = to_state_dict(ens.variables, config.model, steps)
  os.makedirs(out, exist_ok=True)
  width, K = config.width, ens.num_members
  description = dict(
    layout='lpd_jax',
    model=config.model,
    num_members=str(K),
    width=str(width),
    num_classes=str(meta['num_classes']),
    input_shape_nchw=','.join(map(str, (meta['input_shape'][-1], *meta['input_shape'][:2]))),
    inference='raw',
    method=config.method,
    dataset=config.dataset,
    workdir=meta['workdir'],
    epoch=str(meta['epoch']),
    digest=meta['checkpoint']['digest'],
  )
  files.write_safetensors(os.path.join(out, WEIGHTS), tensors, description)
  shutil.copyfile(os.path.join(os.path.dirname(__file__), 'torch_module.py'), f'{out}/{MODULE}')
  x, where = _check_images(config, meta['input_shape'])
  logits = np.asarray(jax.jit(lambda e, x: e.member_logits(x))(ens, x))
  log_probs = np.asarray(ensemble.log_mean_softmax(logits))
  np.savez(
    os.path.join(out, CHECK),
    x=np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
    member_logits=logits,
    log_probs=log_probs,
  )
  lines = [
    f'wrote {out}/{WEIGHTS}: {K} members ({config.model}, width {width}, {meta["num_classes"]} '
    f'classes) of epoch {meta["epoch"]} in PyTorch names and layouts (members.0.stem_conv.weight '
    f'{list(tensors["members.0.stem_conv.weight"].shape)}, OIHW)',
    f'wrote {out}/{MODULE}: the PyTorch module (torch only); forward = log mean softmax '
    "(eq. 1), 'raw' inference",
    f"wrote {out}/{CHECK}: {len(x)} {where} with lpd-jax's outputs",
  ]
  worst = torch_check(out)
  if worst is None:
    lines.append(
      "check skipped: PyTorch is not importable here (pip install -e '.[torch]'); where it is, "
      f'python {out}/{MODULE} compares the module with lpd-jax on {CHECK}'
    )
  elif max(worst.values()) > TOLERANCE:
    raise CheckpointError(
      f'the PyTorch module differs from lpd-jax by {max(worst.values()):.1e} relative on '
      f'{len(x)} {where} (tolerance {TOLERANCE:g}): the files in {out} are wrong'
    )
  else:
    lines.append(
      f'check: PyTorch matches lpd-jax on {len(x)} {where}: relative difference '
      f'{worst["member_logits"]:.1e} (member logits), {worst["log_probs"]:.1e} (log mean '
      f'softmax) <= {TOLERANCE:g}'
    )
  lines.append('ONNX: not written (load lpd_ensemble.py in PyTorch and use torch.onnx.export)')
  return lines
