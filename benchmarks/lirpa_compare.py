"""lpd-jax's bounds against the reference verifier's (auto_LiRPA, PyTorch) on the same
ensemble, points and eps: IBP, CROWN (auto_LiRPA's backward mode) and alpha-CROWN
(its CROWN-Optimized), each margin F_y - F_j of the mean member logits, and the time per
sample of each.

Two steps, because the two libraries live in two environments (PyTorch and auto_LiRPA
are never dependencies of lpd-jax; install them beside it, e.g. in /work/lirpa-venv:
`pip install "torch<2.9"` and `pip install <a checkout of Verified-Intelligence/auto_LiRPA>`):

  python benchmarks/lirpa_compare.py export --out=/tmp/cmp.npz [--workdir=W] [--num=4]
      [--eps=0.0005]     # lpd-jax: the members as a PyTorch state_dict (the library's
                         # export, lpd_jax.torch_bridge), the points, lpd-jax's bounds
  /work/lirpa-venv/bin/python benchmarks/lirpa_compare.py reference --npz=/tmp/cmp.npz
      # builds the members with lpd-jax's exported PyTorch module (torch_module.py, read
      # by path: no lpd-jax), checks their logits against lpd-jax's (1e-5 relative),
      # bounds them with auto_LiRPA, prints the table and writes
      # benchmarks/out/lirpa_compare.json (or --out)

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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  from lpd_jax.torch_bridge.export import to_state_dict

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
  # The members in PyTorch's names and layouts (the library's export, layout 'lpd_jax'):
  # the reference step builds them with lpd_jax/torch_bridge/torch_module.py.
  for key, value in to_state_dict(ens.variables, 'resnet18').items():
    out[f'torch/{key}'] = value
  out['member_logits'] = np.asarray(ens.member_logits(x))
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


def torch_module():
  """lpd-jax's exported PyTorch module file (lpd_jax/torch_bridge/torch_module.py: torch
  imports only), loaded by path: no lpd-jax or JAX needed."""
  import importlib.util

  path = os.path.join(REPO, 'lpd_jax', 'torch_bridge', 'torch_module.py')
  spec = importlib.util.spec_from_file_location('lpd_ensemble', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def member_module(nn, torch, variables, k, width, num_classes):
  """Member k of flat flax variables ({"['params']['stem_conv']['kernel']": [K, ...], ...},
  as a script without the library's export saves them) as the exported module's ResNet in
  eval mode: the export's names mirror flax's (layout 'lpd_jax'), kernels HWIO -> OIHW.
  Kept for benchmarks/autoattack_compare.py; new scripts save `to_state_dict`'s arrays."""
  del nn, width, num_classes  # read from the shapes
  suffix = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean'}
  suffix['var'] = 'running_var'
  state_dict = {}
  for path, value in variables.items():
    names = [n.strip("'") for n in path.strip('[]').split('][')][1:]
    modules = [n.replace('blocks_', 'blocks.') for n in names[:-1]]
    a = np.asarray(value[k], np.float32)
    if names[-1] == 'kernel':
      a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
    key = '.'.join(modules + [suffix[names[-1]]])
    state_dict[f'members.0.{key}'] = torch.tensor(np.ascontiguousarray(a))
    if names[-1] == 'mean':  # torch's BatchNorm step counter, which flax has not
      state_dict[f'members.0.{".".join(modules)}.num_batches_tracked'] = torch.tensor(0)
  return torch_module().from_state_dict(state_dict).members[0]


def exported_members(torch, data):
  """The npz's members as lpd-jax's exported PyTorch module builds them (`torch_module`), in
  eval mode; a ModuleList of K ResNets."""
  module = torch_module()
  state_dict = {
    k[len('torch/') :]: torch.tensor(data[k]) for k in data.files if k.startswith('torch/')
  }
  ensemble = module.from_state_dict(state_dict)
  x = torch.tensor(data['x']).permute(0, 3, 1, 2).contiguous()
  with torch.no_grad():  # the port computes lpd-jax's member logits (1e-5 relative)
    difference = module.relative_difference(ensemble.member_logits(x), data['member_logits'])
  assert difference <= 1e-5, f'the PyTorch members differ from lpd-jax by {difference:.1e}'
  return ensemble.members


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
  members = exported_members(torch, data)
  num_members = len(members)
  width = members[0].stem_conv.out_channels
  num_classes = members[0].head.out_features

  class Mean(nn.Module):
    def __init__(self):
      super().__init__()
      self.members = members

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
