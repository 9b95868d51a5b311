"""An lpd-jax ensemble in plain PyTorch: K CIFAR ResNets and their ensemble output (eq. 1).

Written by `python -m lpd_jax.export` as `lpd_ensemble.py`, beside `ensemble.safetensors`
(the weights) and `check.npz` (test images and lpd-jax's outputs on them). It needs torch
(`safetensors` to read the weights file, NumPy for the check), never lpd-jax or JAX:

  import lpd_ensemble
  ensemble = lpd_ensemble.load('DIR/ensemble.safetensors')  # in eval mode
  log_probs = ensemble(x)             # x [B, c, H, W] (NCHW) in [0, 1] -> [B, C]
  logits = ensemble.member_logits(x)  # [K, B, C]

`python lpd_ensemble.py` compares this module's outputs on check.npz with lpd-jax's.

The network (lpd-jax's `models/resnet.py`): a 3x3 stem convolution (stride 1, padding 1,
no bias), BatchNorm, ReLU, no max-pool; BasicBlocks of two 3x3 convolutions (padding 1)
with a 1x1 projection shortcut (no padding) where the stride or width changes, widths
w, 2w, 4w, 8w (the first block of each later stage has stride 2); global average pooling;
a Linear head. BatchNorm eps 1e-5 (flax's default and torch's), momentum 0.1 (flax's 0.9
is the same update). Inputs are pixels in [0, 1] without normalisation, NCHW.

`forward` is eq. 1 of the LPD paper in log space, log (1/K sum_k softmax(z_k)), lpd-jax's
'raw' inference (each head sees its member's features as they are). AutoAttack and
RobustBench take it as the model's logits: its softmax is the ensemble's mean softmax.

This file is copied verbatim into every export; lpd-jax never imports it.
"""

import os
import sys

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own spelling)
from torch import nn

BN_EPS = 1e-5


class BasicBlock(nn.Module):
  """conv1 (3x3, stride s) -> bn1 -> ReLU -> conv2 (3x3) -> bn2, + shortcut, ReLU."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
    self.projects = stride != 1 or cin != cout
    if self.projects:
      self.shortcut_conv = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
      self.shortcut_bn = nn.BatchNorm2d(cout, eps=BN_EPS)

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.projects else x
    return F.relu(y + shortcut)


class ResNet(nn.Module):
  """One member: x [B, c, H, W] -> logits [B, C].

  Args:
    in_channels: c.
    widths: each block's output channels (the stem has widths[0]); a block whose width
      differs from the one before it has stride 2.
    num_classes: C.
  """

  def __init__(self, in_channels, widths, num_classes):
    super().__init__()
    self.stem_conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
    self.stem_bn = nn.BatchNorm2d(widths[0], eps=BN_EPS)
    blocks, cin = [], widths[0]
    for cout in widths:
      blocks.append(BasicBlock(cin, cout, 1 if cout == cin else 2))
      cin = cout
    self.blocks = nn.ModuleList(blocks)
    self.head = nn.Linear(cin, num_classes)

  def features(self, x):
    """x [B, c, H, W] -> h [B, D], the head's input (global average pooling)."""
    y = F.relu(self.stem_bn(self.stem_conv(x)))
    for block in self.blocks:
      y = block(y)
    return y.mean(dim=(2, 3))

  def forward(self, x):
    return self.head(self.features(x))


class Ensemble(nn.Module):
  """K members; forward(x) = log of the mean member softmax [B, C] (eq. 1)."""

  def __init__(self, members):
    super().__init__()
    self.members = nn.ModuleList(members)

  def member_logits(self, x):
    """x [B, c, H, W] -> [K, B, C]."""
    return torch.stack([member(x) for member in self.members])

  def forward(self, x):
    log_probs = F.log_softmax(self.member_logits(x), dim=-1)
    return torch.logsumexp(log_probs, dim=0) - torch.log(torch.tensor(float(len(self.members))))


def from_state_dict(state_dict):
  """An Ensemble (eval mode) holding `state_dict` (keys `members.{k}.stem_conv.weight`, ...);
  its architecture is read from the shapes. A missing or unexpected key raises (strict)."""
  numbers = {int(key.split('.')[1]) for key in state_dict if key.startswith('members.')}
  if not numbers:
    raise KeyError('no members.{k}. keys: not an lpd-jax export')
  one = {k[len('members.0.') :]: v for k, v in state_dict.items() if k.startswith('members.0.')}
  widths, b = [], 0
  while f'blocks.{b}.conv1.weight' in one:
    widths.append(one[f'blocks.{b}.conv1.weight'].shape[0])
    b += 1
  in_channels = one['stem_conv.weight'].shape[1]
  num_classes = one['head.weight'].shape[0]
  ensemble = Ensemble([ResNet(in_channels, widths, num_classes) for _ in sorted(numbers)])
  ensemble.load_state_dict(state_dict, strict=True)
  return ensemble.eval()


def load(path):
  """The Ensemble saved at `path` (`.safetensors`, or a `.pt` state_dict), in eval mode."""
  if path.endswith('.safetensors'):
    from safetensors.torch import load_file

    return from_state_dict(load_file(path))
  return from_state_dict(torch.load(path, map_location='cpu', weights_only=True))


def relative_difference(ours, reference):
  """max |ours - reference| / max |reference|: the difference relative to the scale."""
  reference = torch.as_tensor(reference, dtype=torch.float64)
  scale = reference.abs().max().clamp_min(1e-12)
  return float((ours.double() - reference).abs().max() / scale)


def check(folder):
  """This module on `folder`'s check.npz -> {'member_logits', 'log_probs'}: the relative
  difference of each from lpd-jax's (`relative_difference`)."""
  import numpy as np

  ensemble = load(os.path.join(folder, 'ensemble.safetensors'))
  data = np.load(os.path.join(folder, 'check.npz'))
  x = torch.as_tensor(data['x'])
  with torch.no_grad():
    return dict(
      member_logits=relative_difference(ensemble.member_logits(x), data['member_logits']),
      log_probs=relative_difference(ensemble(x), data['log_probs']),
    )


if __name__ == '__main__':
  here = os.path.dirname(os.path.abspath(__file__))
  worst = check(here)
  n = len(__import__('numpy').load(os.path.join(here, 'check.npz'))['x'])
  ok = max(worst.values()) <= 1e-5
  print(
    f'{"ok" if ok else "MISMATCH"}: PyTorch vs lpd-jax on {n} images: relative difference '
    f'{worst["member_logits"]:.1e} (member logits), {worst["log_probs"]:.1e} (log mean softmax)'
    f'{"" if ok else " > 1e-5"}'
  )
  sys.exit(0 if ok else 1)
