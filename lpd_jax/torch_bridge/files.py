"""PyTorch checkpoint files on disk: read (`.safetensors` with NumPy, `.pt` with PyTorch
where it is installed), unwrap, hash; write `.safetensors`.

A `.pt` / `.pth` file is a pickle that only PyTorch can read; `.safetensors` needs the
`safetensors` package alone (a dependency of lpd-jax).
"""

import hashlib
import os
import pickle
import re

import numpy as np

from lpd_jax.errors import CheckpointError

# The keys under which training scripts wrap a state_dict (PDD and kuangliu/pytorch-cifar:
# 'net'; many others 'state_dict' or 'model').
WRAPPERS = ('net', 'state_dict', 'model')
TORCH_HINT = (
  "pip install -e '.[torch]', or save the state_dict as .safetensors where PyTorch is "
  '(safetensors.torch.save_file(state_dict, PATH)) and import that'
)


def sha256(path):
  """The file's SHA-256, hex."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def _first_line(e):
  text = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines()  # no terminal colours
  return f'{type(e).__name__}: {text[0] if text else ""}'.rstrip(': ')


def _read_safetensors(path):
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  try:
    return load_file(path)
  except (SafetensorError, OSError, ValueError, TypeError) as e:
    raise CheckpointError(f'{path}: not a readable safetensors file ({_first_line(e)})') from None


def _read_pickle(path):
  try:
    import torch
  except ImportError:
    raise CheckpointError(f'{path}: reading a .pt file needs PyTorch; {TORCH_HINT}') from None
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    found = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
    if found is None:  # not a checkpoint at all
      raise CheckpointError(f'{path}: PyTorch cannot read it as a checkpoint') from None
    raise CheckpointError(
      f'{path}: holds a pickled {found.group(1)}, which torch.load(weights_only=True) does not '
      'run; save its state_dict() instead and import that'
    ) from None
  except Exception as e:  # noqa: BLE001  torch raises many types for files it cannot read
    raise CheckpointError(f'{path}: PyTorch cannot read it ({_first_line(e)})') from None
  obj = unwrap(obj, path)
  out = {}
  for key, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise CheckpointError(f'{path}: key {key} holds a {type(value).__name__}, not a tensor')
    value = value.detach().cpu()
    out[key] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def unwrap(obj, path):
  """A loaded checkpoint -> its state_dict: {'net': sd} and the like unwrapped."""
  if isinstance(obj, dict):
    for key in WRAPPERS:
      if isinstance(obj.get(key), dict):
        return obj[key]
    return obj
  raise CheckpointError(f'{path}: holds a {type(obj).__name__}, not a state_dict')


def strip_data_parallel(state_dict):
  """Keys without the `module.` prefix that torch.nn.DataParallel adds to every key."""
  if state_dict and all(k.startswith('module.') for k in state_dict):
    return {k[len('module.') :]: v for k, v in state_dict.items()}
  return state_dict


def read_state_dict(path):
  """{key: NumPy array} of a `.safetensors` or `.pt` / `.pth` file, unwrapped."""
  if not os.path.isfile(path):
    raise CheckpointError(f'no file {path}')
  if path.endswith('.safetensors'):
    state_dict = _read_safetensors(path)
  else:
    state_dict = _read_pickle(path)
  return strip_data_parallel(state_dict)


def safetensors_metadata(path):
  """The string metadata of a `.safetensors` file's header ({} for other files)."""
  if not path.endswith('.safetensors'):
    return {}
  from safetensors import safe_open

  with safe_open(path, framework='numpy') as f:
    return dict(f.metadata() or {})


def write_safetensors(path, tensors, metadata):
  """Writes {key: array} with {str: str} metadata (the keys sorted, as safetensors does)."""
  from safetensors.numpy import save_file

  # np.require, not np.ascontiguousarray: that one turns 0-d arrays (num_batches_tracked) 1-d.
  arrays = {k: np.require(v, requirements='C') for k, v in tensors.items()}
  save_file(arrays, path, metadata=metadata)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)  # safetensors writes 0600; a file to hand on reads as others do
