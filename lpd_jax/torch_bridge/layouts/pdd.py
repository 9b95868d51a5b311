"""Layout 'pdd': the ResNet-18/34 of the PDD authors' `networks/ensemble_resnet.py`
(ALIS-Lab/AAAI2021-PDD): `conv1.0` / `conv1.1` (the stem's conv and BatchNorm in a
Sequential with its ReLU), `conv{2..5}_x.{i}.residual_function.0` / `.1` / `.3` / `.4`
(conv, BatchNorm, -, conv, BatchNorm), `.shortcut.0` / `.shortcut.1`, `fc`.

Their training scripts save `{'net': ensemble.state_dict()}` of a whole ensemble: members
`model_1` ... `model_K`, each with its own `fc` (`ensemble_3_resnet18`, Baseline and ADP),
or, for the `_fc` ensembles that PDD and DEG train (features -> parallel dropout -> heads),
heads `fc1` ... `fcK` beside the members, whose own `model_k.fc` their `ResNet_fc.forward`
never calls: those keys are left unused (and listed in the workdir's imported.json). A
file may also hold one bare member. Their stem (3x3, stride 1, padding 1, no bias, no
max-pool), blocks, `AdaptiveAvgPool2d((1, 1))` and BatchNorm defaults (eps 1e-5, momentum
0.1) are lpd-jax's; their data pipeline feeds pixels in [0, 1] without normalisation, as
lpd-jax does. At test time their parallel dropout is the identity: lpd-jax's 'raw'
inference."""

import re

from lpd_jax.errors import CheckpointError
from lpd_jax.torch_bridge.convert import Layout

_MEMBER = re.compile(r'model_(\d+)\.')
_HEAD = re.compile(r'fc(\d+)\.(weight|bias)$')


def split(state_dict):
  """A PDD file -> ([member state_dicts, model_1 first], [unused keys])."""
  if not any(_MEMBER.match(k) for k in state_dict):
    return [state_dict], []
  members, heads = {}, {}
  for key, value in state_dict.items():
    if m := _MEMBER.match(key):
      members.setdefault(int(m.group(1)), {})[key[m.end() :]] = value
    elif m := _HEAD.match(key):
      heads.setdefault(int(m.group(1)), {})[f'fc.{m.group(2)}'] = value
    else:
      raise CheckpointError(f'unexpected key {key} beside the members model_1, model_2, ...')
  numbers = sorted(members)
  if numbers != list(range(1, len(numbers) + 1)) or (heads and sorted(heads) != numbers):
    raise CheckpointError(f'members model_{numbers} with heads fc{sorted(heads)}: expected 1..K')
  unused = []
  if heads:  # the `_fc` ensembles: the heads fc1..fcK replace each member's unused fc
    for n in numbers:
      unused += [f'model_{n}.{k}' for k in members[n] if k.startswith('fc.')]
      members[n] = {k: v for k, v in members[n].items() if not k.startswith('fc.')} | heads[n]
  return [members[n] for n in numbers], unused


LAYOUT = Layout(
  name='pdd',
  source='ALIS-Lab/AAAI2021-PDD networks/ensemble_resnet.py',
  stem_conv='conv1.0',
  stem_bn='conv1.1',
  head='fc',
  block='conv{s2}_x.{i}',
  block_layers=dict(
    conv1='residual_function.0',
    bn1='residual_function.1',
    conv2='residual_function.3',
    bn2='residual_function.4',
    shortcut_conv='shortcut.0',
    shortcut_bn='shortcut.1',
  ),
  split=split,
  notes="a `_fc` ensemble's heads are fc1..fcK; each member's own fc is unused there",
  member_prefix='model_{k1}.',  # (a message about a `_fc` ensemble's head says model_k.fc)
)
