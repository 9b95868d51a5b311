"""Regenerates tests/golden/torch_bridge/: tiny random PyTorch ResNet-18 ensembles in each
import layout, and PyTorch's outputs on fixed inputs, for tests/test_torch_bridge.py (which
checks lpd-jax's conversions against them without PyTorch).

Run with a Python that has torch, safetensors and numpy (never lpd-jax's environment):

  PATH/TO/TORCH/VENV/bin/python tests/golden/make_torch_goldens.py

Each network is width 2 (stages of 2, 4, 8, 16 channels), 10 classes, K = 2 members, its
BatchNorm weights and running statistics drawn away from their init. The modules below
follow the PDD authors' `networks/ensemble_resnet.py` and kuangliu/pytorch-cifar's
`models/resnet.py` in their module names and forward passes (read there, written here);
'lpd_jax' is lpd-jax's own exported module (`lpd_jax/torch_bridge/torch_module.py`).

Writes: pdd.safetensors (one `_fc` ensemble file: model_1, model_2 with their unused fc, and
the heads fc1, fc2; 8x8x3 inputs), kuangliu_1.safetensors and kuangliu_2.safetensors (one
member each, the second with DataParallel's `module.` prefix; 32x32x3 inputs, where its
avg_pool2d(4) is a global average), lpd_jax.safetensors (the export's `members.{k}.` names;
8x8x1 inputs), and outputs.npz: per layout `<layout>_x` [B, c, H, W], `<layout>_logits`
[K, B, C] (member logits) and `<layout>_log_probs` [B, C] (log mean softmax).
"""

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import save_file
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'torch_bridge')
REPO = os.path.dirname(os.path.dirname(HERE))
WIDTH, CLASSES, K, BATCH = 2, 10, 2, 4


def bn(c):
  return nn.BatchNorm2d(c)  # torch's defaults: eps 1e-5, momentum 0.1


class PddBlock(nn.Module):
  """The PDD BasicBlock: residual_function = conv, bn, relu, conv, bn; shortcut 1x1 + bn."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.residual_function = nn.Sequential(
      nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
      bn(cout),
      nn.ReLU(),
      nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
      bn(cout),
    )
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

  def forward(self, x):
    return F.relu(self.residual_function(x) + self.shortcut(x))


class PddResNet(nn.Module):
  """PDD's ResNet_fc names: conv1 (conv, bn, relu), conv2_x..conv5_x, avg_pool, fc."""

  def __init__(self, cin, w):
    super().__init__()
    self.conv1 = nn.Sequential(nn.Conv2d(cin, w, 3, padding=1, bias=False), bn(w), nn.ReLU())
    stages, c = [], w
    for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
      blocks = [PddBlock(c, w * mult, stride), PddBlock(w * mult, w * mult, 1)]
      stages.append(nn.Sequential(*blocks))
      c = w * mult
    self.conv2_x, self.conv3_x, self.conv4_x, self.conv5_x = stages
    self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(c, CLASSES)  # ResNet_fc keeps it, and never calls it

  def features(self, x):
    y = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(self.conv1(x)))))
    return self.avg_pool(y).flatten(1)


class PddEnsemble(nn.Module):
  """ensemble_K_resnet18_fc: members model_1.. and heads fc1.. (eval mode: no dropout)."""

  def __init__(self, cin, w):
    super().__init__()
    for k in range(1, K + 1):
      setattr(self, f'model_{k}', PddResNet(cin, w))
      setattr(self, f'fc{k}', nn.Linear(8 * w, CLASSES))

  def member_logits(self, x):
    return torch.stack(
      [getattr(self, f'fc{k}')(getattr(self, f'model_{k}').features(x)) for k in range(1, K + 1)]
    )


class KuangliuBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = bn(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = bn(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

  def forward(self, x):
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(out + self.shortcut(x))


class KuangliuResNet(nn.Module):
  """kuangliu's ResNet18: conv1, bn1, layer1..layer4, avg_pool2d(out, 4), linear."""

  def __init__(self, cin, w):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, w, 3, 1, 1, bias=False)
    self.bn1 = bn(w)
    c = w
    for s, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2))):
      blocks = [KuangliuBlock(c, w * mult, stride), KuangliuBlock(w * mult, w * mult, 1)]
      layer = nn.Sequential(*blocks)
      setattr(self, f'layer{s + 1}', layer)
      c = w * mult
    self.linear = nn.Linear(c, CLASSES)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return self.linear(F.avg_pool2d(out, 4).flatten(1))


def randomise(module, gen):
  """BatchNorm weights, biases and running statistics away from their init (so a swapped
  mean and var, or weight and bias, changes the outputs), and the step counters set."""
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.uniform_(0.5, 1.5, generator=gen)
        m.bias.normal_(0, 0.1, generator=gen)
        m.running_mean.normal_(0, 0.1, generator=gen)
        m.running_var.uniform_(0.5, 1.5, generator=gen)
        m.num_batches_tracked.fill_(7)
  return module.eval()


def log_mean_softmax(logits):
  return torch.logsumexp(F.log_softmax(logits, -1), 0) - np.log(logits.shape[0])


def lpd_jax_module():
  path = os.path.join(REPO, 'lpd_jax', 'torch_bridge', 'torch_module.py')
  spec = importlib.util.spec_from_file_location('torch_module', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main():
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(1)
  os.makedirs(OUT, exist_ok=True)
  outputs = {}

  def record(name, x, logits):
    outputs[f'{name}_x'] = x.numpy()
    outputs[f'{name}_logits'] = logits.detach().numpy()
    outputs[f'{name}_log_probs'] = log_mean_softmax(logits).detach().numpy()

  pdd = randomise(PddEnsemble(3, WIDTH), gen)
  save_file(pdd.state_dict(), os.path.join(OUT, 'pdd.safetensors'))
  x = torch.rand(BATCH, 3, 8, 8, generator=gen)
  record('pdd', x, pdd.member_logits(x))

  members = [randomise(KuangliuResNet(3, WIDTH), gen) for _ in range(K)]
  save_file(members[0].state_dict(), os.path.join(OUT, 'kuangliu_1.safetensors'))
  prefixed = {f'module.{k}': v for k, v in members[1].state_dict().items()}  # DataParallel
  save_file(prefixed, os.path.join(OUT, 'kuangliu_2.safetensors'))
  x = torch.rand(BATCH, 3, 32, 32, generator=gen)
  record('kuangliu', x, torch.stack([m(x) for m in members]))

  lpd = lpd_jax_module()
  widths = [WIDTH * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
  ens = randomise(lpd.Ensemble([lpd.ResNet(1, widths, CLASSES) for _ in range(K)]), gen)
  save_file(ens.state_dict(), os.path.join(OUT, 'lpd_jax.safetensors'))
  x = torch.rand(BATCH, 1, 8, 8, generator=gen)
  record('lpd_jax', x, ens.member_logits(x))

  np.savez(os.path.join(OUT, 'outputs.npz'), **outputs)
  for name in sorted(os.listdir(OUT)):
    print(f'{name}: {os.path.getsize(os.path.join(OUT, name))} bytes')


if __name__ == '__main__':
  with torch.no_grad():
    main()
