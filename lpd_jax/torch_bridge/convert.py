"""One member's variables between lpd-jax's flax layout and a PyTorch state_dict.

A `Layout` names the PyTorch modules of a CIFAR ResNet (stem, blocks, head); the flax
side is read from the model itself (`jax.eval_shape` of `models.REGISTRY[name].init`), so
the table of keys and shapes is never written twice. Per leaf:

  flax                              PyTorch
  Conv kernel [kh, kw, I, O]  (HWIO) <-> Conv2d weight [O, I, kh, kw] (OIHW)
  Dense kernel [D, C]                <-> Linear weight [C, D]; bias [C] <-> bias [C]
  BatchNorm scale, bias              <-> weight, bias
  batch_stats mean, var              <-> running_mean, running_var
  (none)                             <-> num_batches_tracked (int64 [], training steps)

Conventions (docs/architecture.md, "PyTorch bridge"): flax BatchNorm epsilon 1e-5 (torch's
default) and momentum 0.9 (torch's momentum 0.1: the same running-statistics update);
3x3 convolutions padded 1 on each side (flax `padding=1`, torch `padding=1`); the 1x1
shortcut's flax 'SAME' padding is none, torch's `padding=0`; global average pooling.
"""

import re
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import models
from lpd_jax.errors import CheckpointError

BN_SUFFIXES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
STEPS_KEY = 'num_batches_tracked'  # torch BatchNorm's step counter: no flax counterpart
BLOCK_LAYERS = ('conv1', 'bn1', 'conv2', 'bn2', 'shortcut_conv', 'shortcut_bn')


class Layout(NamedTuple):
  """How one family of PyTorch checkpoints names a CIFAR ResNet's modules.

  Attributes:
    name: the `--layout` value.
    source: where these names come from (a file of a public repository).
    stem_conv, stem_bn, head: module names of the stem's Conv2d and BatchNorm2d and of the
      Linear head.
    block: module name of BasicBlock i of stage s, with `{s1}` = s + 1, `{s2}` = s + 2, `{i}`
      (in the stage) and `{b}` (counted over all stages) to fill in.
    block_layers: {lpd-jax layer (BLOCK_LAYERS): its module name inside a block}.
    split: a file's state_dict -> ([one state_dict per member], [keys deliberately unused]):
      how several members share one file.
    input_size: the only image side this architecture computes lpd-jax's function on
      (None: any).
    member_prefix: how a file holding several members prefixes the keys of its member k
      (`{k}` from 0, `{k1}` from 1), for messages that name a key.
    notes: what differs from lpd-jax, or what a user must know, in one sentence.
  """

  name: str
  source: str
  stem_conv: str
  stem_bn: str
  head: str
  block: str
  block_layers: dict
  split: Callable
  input_size: Optional[int] = None
  notes: str = ''
  member_prefix: str = ''

  def block_name(self, stage, index, number):
    return self.block.format(s1=stage + 1, s2=stage + 2, i=index, b=number)

  def module_name(self, flax_path, blocks_per_stage):
    """('blocks_5', 'conv1') -> 'layer3.1.conv1' (kuangliu), 'stem_conv' -> 'conv1', ..."""
    first = flax_path[0]
    if first in ('stem_conv', 'stem_bn', 'head'):
      return getattr(self, first)
    number = int(first.split('_')[1])
    stage, index = _stage_of(number, blocks_per_stage)
    return f'{self.block_name(stage, index, number)}.{self.block_layers[flax_path[1]]}'


def _stage_of(number, blocks_per_stage):
  """Block `number` (over all stages) -> (stage, index in the stage)."""
  for stage, count in enumerate(blocks_per_stage):
    if number < count:
      return stage, number
    number -= count
  raise ValueError(f'block {number} past {blocks_per_stage}')


def one_member(state_dict):
  """`Layout.split` of a file that holds one member."""
  return [state_dict], []


def by_prefix(pattern, first=0):
  """`Layout.split` for files that may hold several members under `pattern` (a regex with
  one group, the member's number, counted from `first`), or one member without it."""
  regex = re.compile(pattern)

  def split(state_dict):
    groups = {}
    for key, value in state_dict.items():
      m = regex.match(key)
      if m is None:
        return [state_dict], []
      groups.setdefault(int(m.group(1)), {})[key[m.end() :]] = value
    numbers = sorted(groups)
    if numbers != list(range(first, first + len(numbers))):
      raise CheckpointError(f'members numbered {numbers}: expected {first}..{len(numbers)}')
    return [groups[n] for n in numbers], []

  return split


# -- the flax side, read from the model --------------------------------------------------------


def resnet_models():
  """{name: blocks_per_stage} of the ResNets of models.REGISTRY (what a layout can hold)."""
  return {
    name: cls.blocks_per_stage
    for name, cls in models.REGISTRY.items()
    if hasattr(cls, 'blocks_per_stage')
  }


def flax_shapes(model, width, num_classes, in_channels):
  """{'params': ..., 'batch_stats': ...} of one member as ShapeDtypeStructs (no compile)."""
  net = models.REGISTRY[model](num_classes=num_classes, width=width)
  x = jnp.zeros((1, 8, 8, in_channels), jnp.float32)
  return jax.eval_shape(lambda: net.init(jax.random.key(0), x))


def _leaves(tree):
  """[(collection, module path tuple, leaf name, leaf)] of a flax variables dict."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = tuple(p.key for p in path)
    out.append((names[0], names[1:-1], names[-1], leaf))
  return out


def torch_key(layout, blocks_per_stage, module_path, leaf_name):
  """The state_dict key of one flax leaf ('kernel' and 'scale' are torch's 'weight')."""
  suffix = 'weight' if leaf_name == 'kernel' else BN_SUFFIXES[leaf_name]
  return f'{layout.module_name(module_path, blocks_per_stage)}.{suffix}'


def _to_torch_array(leaf_name, a):
  if leaf_name == 'kernel':
    return np.transpose(a, (3, 2, 0, 1)) if a.ndim == 4 else a.T  # HWIO -> OIHW, [D,C] -> [C,D]
  return a


def _from_torch_array(leaf_name, a):
  if leaf_name == 'kernel':
    return np.transpose(a, (2, 3, 1, 0)) if a.ndim == 4 else a.T
  return a


def _bn_modules(leaves):
  """The module paths of the BatchNorm layers (those with a 'mean' statistic), in order."""
  return [path for collection, path, name, _ in leaves if name == 'mean']


def to_torch(variables, model, layout, steps=0):
  """One member's variables ({'params', 'batch_stats'}, NumPy) -> {key: array} in `layout`'s
  names and PyTorch's layouts (float32; `num_batches_tracked` int64 [] = `steps`)."""
  blocks = resnet_models()[model]
  leaves = _leaves(variables)
  out = {}
  for _, path, name, leaf in leaves:
    a = np.asarray(leaf, np.float32)
    out[torch_key(layout, blocks, path, name)] = np.ascontiguousarray(_to_torch_array(name, a))
  for path in _bn_modules(leaves):
    out[f'{layout.module_name(path, blocks)}.{STEPS_KEY}'] = np.array(steps, np.int64)
  return out


def _blocks_per_stage(state_dict, layout):
  """The BasicBlocks of each stage that the keys hold. Where the layout numbers blocks per
  stage, counted per stage; where it numbers them over all stages (`{b}`), a stage ends
  where the blocks' width changes (each later stage doubles it)."""
  conv1 = layout.block_layers['conv1']
  present = lambda stage, i, b: f'{layout.block_name(stage, i, b)}.{conv1}.weight' in state_dict
  if '{b}' not in layout.block:
    counts = []
    for stage in range(4):
      n = 0
      while present(stage, n, 0):
        n += 1
      counts.append(n)
    return tuple(counts)
  widths, b = [], 0
  while present(0, 0, b):
    widths.append(np.shape(state_dict[f'{layout.block_name(0, 0, b)}.{conv1}.weight'])[0])
    b += 1
  counts = []
  for i, w in enumerate(widths):
    if i == 0 or w != widths[i - 1]:
      counts.append(0)
    counts[-1] += 1
  return tuple(counts)


def _architecture(state_dict, layout, where, prefix=''):
  """(model name, width, num_classes, in_channels) that the state_dict's keys describe."""
  for name in (layout.stem_conv, layout.head):
    if f'{name}.weight' not in state_dict:
      raise CheckpointError(f'{where}: missing key {prefix}{name}.weight (layout {layout.name})')
  width, in_channels = np.shape(state_dict[f'{layout.stem_conv}.weight'])[:2]
  num_classes = np.shape(state_dict[f'{layout.head}.weight'])[0]
  counts = _blocks_per_stage(state_dict, layout)
  conv1 = layout.block_layers['conv1']
  found = [m for m, blocks in resnet_models().items() if tuple(blocks) == tuple(counts)]
  if not found:
    have = ', '.join(f'{m} {tuple(b)}' for m, b in resnet_models().items())
    raise CheckpointError(
      f'{where}: {tuple(counts)} BasicBlocks per stage (layout {layout.name}, keys '
      f'{prefix}{layout.block_name(0, 0, 0)}.{conv1}.weight ...): lpd-jax has {have}'
    )
  return found[0], int(width), int(num_classes), int(in_channels)


def from_torch(state_dict, layout, where, ignored=(), prefix=''):
  """One member's state_dict in `layout`'s names -> (model name, variables as NumPy).

  Every key must be one lpd-jax's ResNet has, with its shape (`num_batches_tracked` may be
  absent, and the keys in `ignored` are skipped); anything else raises CheckpointError in
  one line naming the key (as the file spells it: `prefix` + key).
  """
  model, width, num_classes, in_channels = _architecture(state_dict, layout, where, prefix)
  blocks = resnet_models()[model]
  shapes = flax_shapes(model, width, num_classes, in_channels)
  leaves = _leaves(shapes)
  used = set(ignored)
  variables = {}
  for collection, path, name, leaf in leaves:
    key = torch_key(layout, blocks, path, name)
    if key not in state_dict:
      raise CheckpointError(f'{where}: missing key {prefix}{key} (layout {layout.name})')
    a = np.asarray(state_dict[key])
    want = _to_torch_array(name, np.zeros(leaf.shape, np.int8)).shape
    if a.shape != want:
      raise CheckpointError(
        f'{where}: key {prefix}{key} has shape {list(a.shape)}, expected {list(want)} '
        f'(a {model} of width {width}, {num_classes} classes, {in_channels} input channels; '
        f'layout {layout.name})'
      )
    target = variables.setdefault(collection, {})
    for part in path:
      target = target.setdefault(part, {})
    target[name] = np.ascontiguousarray(_from_torch_array(name, a.astype(np.float32)))
    used.add(key)
  used |= {f'{layout.module_name(p, blocks)}.{STEPS_KEY}' for p in _bn_modules(leaves)}
  extra = sorted(k for k in state_dict if k not in used)
  if extra:
    more = f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''
    raise CheckpointError(
      f"{where}: unexpected key {prefix}{extra[0]}{more}: not part of lpd-jax's {model} "
      f'(layout {layout.name})'
    )
  return model, variables


def stack(members):
  """[member variables] -> the same tree with every leaf stacked [K, ...]."""
  return jax.tree.map(lambda *leaves: np.stack(leaves), *members)
