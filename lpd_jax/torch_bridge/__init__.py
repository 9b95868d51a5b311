"""The PyTorch bridge: lpd-jax ensembles to and from PyTorch state_dicts.

`REGISTRY` (layout name -> `convert.Layout`, one module each in `layouts/`) is the one list
of checkpoint layouts that `python -m lpd_jax.import_torch --layout=NAME` reads;
`export.export` writes lpd-jax's own ('lpd_jax'). PyTorch itself is optional
(`pip install -e '.[torch]'`): the bridge reads and writes `.safetensors` with NumPy, and
imports torch only to read a `.pt` file or to check an export. Above `checkpoint` and
`models`, below the drivers; the core never imports it (docs/architecture.md, "PyTorch
bridge").
"""

import os

import jax

from lpd_jax.errors import CheckpointError, ConfigError
from lpd_jax.torch_bridge import convert, files
from lpd_jax.torch_bridge.layouts import kuangliu, lpd_jax, pdd

REGISTRY = {layout.name: layout for layout in (lpd_jax.LAYOUT, pdd.LAYOUT, kuangliu.LAYOUT)}


def get(name):
  """The registered Layout called `name`; ConfigError naming the choices otherwise."""
  if name not in REGISTRY:
    raise ConfigError(f'unknown layout {name!r}; choose one of {", ".join(REGISTRY)}')
  return REGISTRY[name]


def read_members(paths, layout):
  """K members from PyTorch checkpoint files, in order (a file may hold several).

  Args:
    paths: `.safetensors` / `.pt` files.
    layout: a `convert.Layout`.

  Returns:
    (model name, variables {'params', 'batch_stats'} as NumPy, every leaf [K, ...],
    sources [{'file', 'sha256', 'bytes', 'members' (indices k), 'unused_keys'}]).
  """
  members, sources, models = [], [], set()
  for path in paths:
    state_dict = files.read_state_dict(path)
    try:
      parts, unused = layout.split(state_dict)
    except CheckpointError as e:
      raise CheckpointError(f'{path}: {e} (layout {layout.name})') from None
    first = len(members)
    for j, part in enumerate(parts):
      prefix = '' if part is state_dict else layout.member_prefix.format(k=j, k1=j + 1)
      model, variables = convert.from_torch(part, layout, path, prefix=prefix)
      members.append(variables)
      models.add(model)
    sources.append(
      dict(
        file=path,
        sha256=files.sha256(path),
        bytes=os.path.getsize(path),
        members=list(range(first, len(members))),
        unused_keys=unused,
      )
    )
  if not members:
    raise ConfigError('no checkpoint files given: --checkpoints=a.pt,b.pt,...')
  shapes = {tuple(a.shape for a in jax.tree.leaves(m)) for m in members}
  if len(models) > 1 or len(shapes) > 1:
    raise CheckpointError(
      f'the members differ in architecture ({", ".join(sorted(models))}, or in width or '
      'classes): an ensemble needs K members of one network'
    )
  return models.pop(), convert.stack(members), sources


__all__ = ['REGISTRY', 'convert', 'files', 'get', 'read_members']
