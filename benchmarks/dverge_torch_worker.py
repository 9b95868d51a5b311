"""Worker of benchmarks/dverge_peer.py, run with a Python that has PyTorch (never the
project's): one training step of DVERGE as the official code (zjysteven/DVERGE) takes it.

The official `distillation.Linf_distillation` is imported from the user's checkout
(`--dverge_repo`) unmodified; the per-batch body of `DVERGE_Trainer.train`
(train/train_dverge.py: each model distils the source batch toward the target batch, then
each model i steps its own SGD on sum_{j != i} CE(m_i(x~_j), y)) is written out here, because
that file also imports torchvision and TensorBoard for its data and logging. The network is a
PyTorch ResNet-18 of lpd-jax's architecture (3x3 stem, no max-pool, widths w..8w) with a
`get_features(x, layer, before_relu)` in DVERGE's layer numbering, as lpd-jax's
`ResNet.layer_features`: the official ResNet-20 has no ResNet-18 counterpart.

Protocol: prints '@@{json}' when ready, then answers 'run N [step|distill|train]' (seconds
per call over N calls: the whole step, its K distillations, or its K training updates on fixed
distilled images) and 'quit' on stdin.
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class Block(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = None
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
      )

  def forward(self, x, stop=''):
    y = self.bn1(self.conv1(x))
    if stop == 'inner':
      return y
    y = self.bn2(self.conv2(F.relu(y)))
    y = y + (x if self.shortcut is None else self.shortcut(x))
    return y if stop == 'output' else F.relu(y)


class ResNet18(nn.Module):
  def __init__(self, width, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    blocks, cin = [], width
    for stage, mult in enumerate((1, 2, 4, 8)):
      for i in range(2):
        blocks.append(Block(cin, width * mult, 2 if stage > 0 and i == 0 else 1))
        cin = width * mult
    self.blocks = nn.ModuleList(blocks)
    self.fc = nn.Linear(cin, num_classes)
    self.depth = 2 * len(blocks) + 2

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    for block in self.blocks:
      y = block(y)
    return self.fc(y.mean(dim=(2, 3)))

  def get_features(self, x, layer, before_relu=True):
    """DVERGE's numbering: 1 the stem's BatchNorm, 2b + 2 / 2b + 3 block b's first BatchNorm
    / its sum with the shortcut, depth the logits (pre-ReLU: before_relu=True only)."""
    assert before_relu
    y = self.bn1(self.conv1(x))
    if layer == 1:
      return y
    y = F.relu(y)
    for b, block in enumerate(self.blocks):
      if layer in (2 * b + 2, 2 * b + 3):
        return block(y, 'inner' if layer == 2 * b + 2 else 'output')
      y = block(y)
    return self.fc(y.mean(dim=(2, 3)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--dverge_repo', required=True)
  p.add_argument('--width', type=int, default=16)
  p.add_argument('--batch_size', type=int, default=64)
  p.add_argument('--members', type=int, default=3)
  p.add_argument('--layer', type=int, required=True)
  p.add_argument('--threads', type=int, default=2)
  a = p.parse_args()
  sys.path.insert(0, os.path.abspath(a.dverge_repo))
  from distillation import Linf_distillation  # the official function, unmodified

  torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  models = [ResNet18(a.width) for _ in range(a.members)]
  optimizers = [
    torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4) for m in models
  ]  # utils.get_optimizers
  # arguments.dverge_train_args' defaults
  cfg = dict(
    eps=0.07,
    alpha=0.007,
    steps=10,
    layer=a.layer,
    rand_start=False,
    before_relu=True,
    momentum=True,
  )
  criterion = nn.CrossEntropyLoss()
  si, ti = torch.rand(a.batch_size, 3, 32, 32), torch.rand(a.batch_size, 3, 32, 32)
  sl = torch.arange(a.batch_size) % 10

  def distill():
    for m in models:
      m.train()
    return [Linf_distillation(m, si, ti, **cfg) for m in models]

  fixed = distill()

  def learn(distilled):
    for i, m in enumerate(models):
      loss = 0
      for j, d in enumerate(distilled):
        if i != j:
          loss += criterion(m(d), sl)
      optimizers[i].zero_grad()
      loss.backward()
      optimizers[i].step()
      loss.item()

  def step():
    learn(distill())

  phases = {'step': step, 'distill': distill, 'train': lambda: learn(fixed)}

  start = time.perf_counter()
  step()
  warm = time.perf_counter() - start
  print('@@' + json.dumps(dict(ready=True, warmup_s=warm, torch=torch.__version__)), flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] == 'run':  # run N [phase]: the step, or its distillation or training
      call = phases[cmd[2] if len(cmd) > 2 else 'step']
      start = time.perf_counter()
      for _ in range(int(cmd[1])):
        call()
      print('@@' + json.dumps(dict(s=(time.perf_counter() - start) / int(cmd[1]))), flush=True)
    elif cmd and cmd[0] == 'quit':
      break


if __name__ == '__main__':
  main()
