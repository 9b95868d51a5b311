"""lpd-jax's bounds against the reference verifier's (auto_LiRPA, PyTorch) on the same
ensemble, points and eps: IBP, CROWN (auto_LiRPA's backward mode) and alpha-CROWN
(its CROWN-Optimized), each margin F_y - F_j of the mean member logits, and the time per
sample of each.

Two steps, because the two libraries live in two environments (PyTorch and auto_LiRPA
are never dependencies of lpd-jax; install them beside it, e.g. in /work/lirpa-venv:
`pip install "torch<2.9"` and `pip install <a checkout of Verified-Intelligence/auto_LiRPA>`):

  python benchmarks/lirpa_compare.py export --out=/tmp/cmp.npz [--workdir=W] [--num=4]
      [--eps=0.0005]     # lpd-jax: the members' variables, the points, lpd-jax's bounds
  /work/lirpa-venv/bin/python benchmarks/lirpa_compare.py reference --npz=/tmp/cmp.npz
      # ports the members to PyTorch, bounds them with auto_LiRPA, prints the table and
      # writes benchmarks/out/lirpa_compare.json (or --out)

Without --workdir the ensemble is K = 3 random width-4 ResNet-18s (random BatchNorm
statistics) on uniform 32x32x3 points: the paper's certification shape. The reference
step exits with a message (status 0) where PyTorch or auto_LiRPA is missing. Settings on
both sides: ReLU lower slope 'adaptive' (1 if u > -l else 0, auto_LiRPA's default and
CROWN's), sparse intermediate bounds (the neurons unstable under interval bounds from the
bounds so far get CROWN's; the stable ones keep the interval bound), alpha-CROWN with 20
Adam steps at learning rate 0.5 decayed by 0.98 whose slopes include those of the
intermediate bounds (auto_LiRPA's CROWN-Optimized recomputes them with their own slopes at
every step, optimised for the last bound; lpd-jax optimises each intermediate bound for
itself, then the last one). Both sides bound convolutional layers' neurons on their
receptive fields (auto_LiRPA's default conv_mode 'patches', lpd-jax's `certify/window.py`).
"""

import argparse
import json
import os
import sys
import time
import zlib

import numpy as np

FLAX_BN_EPS = 1e-5


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('step', choices=('export', 'reference'))
  p.add_argument('--workdir', default='', help='export: a trained ensemble (default random)')
  p.add_argument('--num', type=int, default=4, help='export: points')
  p.add_argument('--eps', type=float, default=0.0005)
  p.add_argument('--npz', default='', help='reference: what export wrote')
  p.add_argument('--out', default='', help='export: the npz; reference: the JSON')
  p.add_argument('--methods', default='ibp,crown,alpha_crown')
  return p.parse_args(argv)


# -- export: lpd-jax's side --------------------------------------------------------------


def export(args):
  import jax
  import jax.numpy as jnp

  import lpd_jax
  from lpd_jax import certify
  from lpd_jax.data import load_dataset, to_float
  from lpd_jax.ensemble import Ensemble, Members
  from lpd_jax.models import ResNet18

  if args.workdir:
    ens = lpd_jax.load(args.workdir, inference='raw')
    ds = load_dataset(ens.config)
    x, y = (
      jnp.asarray(to_float(ds.test_images[: args.num])),
      jnp.asarray(ds.test_labels[: args.num]),
    )
    source = f'trained ({args.workdir})'
  else:
    members = Members(ResNet18(num_classes=10, width=4))
    variables = members.init(jax.random.key(0), 3, (32, 32, 3))
    key = jax.random.key(1)

    def perturb(path, leaf):  # BatchNorm statistics away from the init's identity
      name = jax.tree_util.keystr(path)
      k = jax.random.fold_in(key, zlib.crc32(name.encode()) >> 1)
      if name.endswith("['var']") or name.endswith("['scale']"):
        return jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5)
      if name.endswith("['mean']") or name.endswith("['bias']"):
        return 0.1 * jax.random.normal(k, leaf.shape)
      return leaf

    ens = Ensemble(jax.tree_util.tree_map_with_path(perturb, variables), members)
    x = jax.random.uniform(jax.random.key(2), (args.num, 32, 32, 3))
    y = jnp.arange(args.num) % 10
    source = 'random width-4 ResNet-18s, uniform points'
  out = dict(x=np.asarray(x), y=np.asarray(y), eps=args.eps)
  for path, leaf in jax.tree_util.tree_leaves_with_path(ens.variables):
    out['var' + jax.tree_util.keystr(path)] = np.asarray(leaf)
  for method in args.methods.split(','):
    fn = lambda: certify.margins(ens, x, y, args.eps, method=method).block_until_ready()
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    start = time.perf_counter()
    lower = fn()
    seconds = time.perf_counter() - start
    out[f'lpd_{method}'] = np.asarray(lower)
    out[f'lpd_{method}_seconds'] = seconds
    out[f'lpd_{method}_compile'] = first - seconds
    print(f'lpd-jax {method}: {seconds / len(y):.2f} s per sample, first call {first:.1f} s')
  out['source'] = source
  out['num_members'] = ens.num_members
  np.savez(args.out or '/tmp/lirpa_compare.npz', **out)
  print(f'wrote {args.out or "/tmp/lirpa_compare.npz"}')


# -- reference: auto_LiRPA's side (PyTorch, no JAX) ------------------------------------------


def member_module(nn, torch, variables, k, width, num_classes):
  """Member k of the exported variables as a PyTorch ResNet-18 (eval mode)."""

  def get(name):
    return torch.tensor(np.asarray(variables[name][k]), dtype=torch.float32)

  def conv(prefix, cin, cout, kernel, stride):
    padding = 1 if kernel == 3 else 0
    c = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    c.weight.data = get(f"['params']{prefix}['kernel']").permute(3, 2, 0, 1).contiguous()
    return c

  def bn(prefix, channels):
    b = nn.BatchNorm2d(channels, eps=FLAX_BN_EPS)
    b.weight.data, b.bias.data = (
      get(f"['params']{prefix}['scale']"),
      get(f"['params']{prefix}['bias']"),
    )
    b.running_mean.data = get(f"['batch_stats']{prefix}['mean']")
    b.running_var.data = get(f"['batch_stats']{prefix}['var']")
    return b

  class Block(nn.Module):
    def __init__(self, prefix, cin, cout, stride):
      super().__init__()
      self.conv1, self.bn1 = (
        conv(f"{prefix}['conv1']", cin, cout, 3, stride),
        bn(f"{prefix}['bn1']", cout),
      )
      self.conv2, self.bn2 = (
        conv(f"{prefix}['conv2']", cout, cout, 3, 1),
        bn(f"{prefix}['bn2']", cout),
      )
      self.shortcut = None
      if stride != 1 or cin != cout:
        self.shortcut = nn.Sequential(
          conv(f"{prefix}['shortcut_conv']", cin, cout, 1, stride),
          bn(f"{prefix}['shortcut_bn']", cout),
        )

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))

  class Member(nn.Module):
    def __init__(self):
      super().__init__()
      cin = variables["['params']['stem_conv']['kernel']"].shape[-2]
      self.stem = nn.Sequential(conv("['stem_conv']", cin, width, 3, 1), bn("['stem_bn']", width))
      blocks, c, i = [], width, 0
      for stage, mult in enumerate((1, 2, 4, 8)):
        for j in range(2):
          stride = 2 if stage > 0 and j == 0 else 1
          blocks.append(Block(f"['blocks_{i}']", c, width * mult, stride))
          c, i = width * mult, i + 1
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Linear(8 * width, num_classes)
      self.head.weight.data = get("['params']['head']['kernel']").t().contiguous()
      self.head.bias.data = get("['params']['head']['bias']")

    def forward(self, x):
      y = self.blocks(torch.relu(self.stem(x)))
      return self.head(y.mean(dim=(2, 3)))

  return Member().eval()


def reference(args):
  try:
    import torch
    import torch.nn as nn
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
  except ImportError as e:
    print(f'skipped: {e} (install PyTorch and auto_LiRPA beside lpd-jax: see the docstring)')
    return
  torch.set_num_threads(os.cpu_count() or 1)
  data = np.load(args.npz)
  variables = {k[len('var') :]: data[k] for k in data.files if k.startswith('var')}
  num_members = int(data['num_members'])
  width = variables["['params']['stem_conv']['kernel']"].shape[-1]
  num_classes = variables["['params']['head']['bias']"].shape[-1]
  members = [member_module(nn, torch, variables, k, width, num_classes) for k in range(num_members)]

  class Mean(nn.Module):
    def __init__(self):
      super().__init__()
      self.members = nn.ModuleList(members)

    def forward(self, x):
      return sum(m(x) for m in self.members) / len(self.members)

  model = Mean().eval()
  x = torch.tensor(data['x']).permute(0, 3, 1, 2).contiguous()
  y = torch.tensor(data['y']).long()
  eps = float(data['eps'])
  # The margins F_y - F_j, j != y in increasing order (lpd_jax.certify.bounds.margin_spec).
  spec = []
  for label in y.tolist():
    rows = [
      np.eye(num_classes)[label] - np.eye(num_classes)[j] for j in range(num_classes) if j != label
    ]
    spec.append(np.stack(rows))
  spec = torch.tensor(np.stack(spec), dtype=torch.float32)
  bounded = BoundedModule(model, torch.zeros_like(x), device='cpu')
  ptb = PerturbationLpNorm(norm=np.inf, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))
  inputs = BoundedTensor(x, ptb)
  rows = []
  modes = dict(ibp='IBP', crown='backward', alpha_crown='CROWN-Optimized')
  for method in args.methods.split(','):
    start = time.perf_counter()
    if method == 'alpha_crown':
      bounded.set_bound_opts({'optimize_bound_args': {'iteration': 20, 'lr_alpha': 0.5}})
      lower, _ = bounded.compute_bounds(
        x=(inputs,), C=spec, method=modes[method], bound_upper=False
      )
    else:
      with torch.no_grad():
        lower, _ = bounded.compute_bounds(
          x=(inputs,), C=spec, method=modes[method], bound_upper=False
        )
    seconds = time.perf_counter() - start
    ref = lower.detach().numpy()
    ours = data[f'lpd_{method}']
    relative = np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-6)
    rows.append(
      dict(
        method=method,
        reference_median_min=float(np.median(ref.min(axis=1))),
        lpd_median_min=float(np.median(ours.min(axis=1))),
        max_relative_difference=float(relative.max()),
        lpd_tighter_or_equal=bool(np.all(ours >= ref - 1e-5 * np.maximum(1, np.abs(ref)))),
        reference_s_per_sample=seconds / len(y),
        lpd_s_per_sample=float(data[f'lpd_{method}_seconds']) / len(y),
        lpd_compile_s=float(data[f'lpd_{method}_compile']),
      )
    )
  print(f'\n{data["source"]}: K = {num_members}, width {width}, {len(y)} points, eps {eps:g}\n')
  print(
    '| bound | median minimal lower bound, auto_LiRPA | lpd-jax | max relative difference | '
    'lpd-jax >= reference | s per sample, auto_LiRPA | lpd-jax | lpd-jax compile (s) |'
  )
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for r in rows:
    print(
      f'| {r["method"]} | {r["reference_median_min"]:.6g} | {r["lpd_median_min"]:.6g} | '
      f'{r["max_relative_difference"]:.2e} | {r["lpd_tighter_or_equal"]} | '
      f'{r["reference_s_per_sample"]:.2f} | {r["lpd_s_per_sample"]:.2f} | '
      f'{r["lpd_compile_s"]:.0f} |'
    )
  out = args.out or os.path.join(os.path.dirname(__file__), 'out', 'lirpa_compare.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(dict(source=str(data['source']), eps=eps, points=len(y), rows=rows), f, indent=1)
  print(f'wrote {out}')


def main(argv=None):
  args = parse_args(argv)
  (export if args.step == 'export' else reference)(args)


if __name__ == '__main__':
  sys.exit(main())
