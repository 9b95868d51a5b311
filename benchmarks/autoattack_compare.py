"""lpd-jax's `standard` preset against the official AutoAttack (fra31/auto-attack, PyTorch)
on the same ensemble, points and eps: per attack, how many points each side broke and how
many per-point outcomes agree, and each side's seconds on the same CPU.

Each attack of AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square; 9 targets,
100 iterations, 5,000 queries, 1 restart, seed 0) runs on every point the ensemble
classifies right, on each side: the per-point outcomes compare attack by attack (the worst
case over the four is what the cascade of either side gives). APGD-CE, APGD-T and FAB-T
compare point for point: FAB-T's single restart starts at x on both sides, APGD's random
starts come from two generators (torch's, JAX's), so a point near its boundary may go either
way. Square is random search from random starts: it compares in aggregate over `--seeds`
seeds, lpd-jax's `draw='autoattack'` (the `standard` preset's) and its own `draw='lpd'`
against AutoAttack's; `--ablation` adds AutoAttack's Square with its corners drawn in
[0, h - s] instead of [0, h - s) (the cause the issue named).

Two steps, because JAX and PyTorch may live in two environments (PyTorch and AutoAttack are
never dependencies of lpd-jax; install them beside it, e.g. `python -m venv PATH/TO/VENV &&
PATH/TO/VENV/bin/pip install numpy torch git+https://github.com/fra31/auto-attack`):

  python benchmarks/autoattack_compare.py jax --workdir=W --out=/tmp/aa.npz [--num=100]
      [--eps=0.1,0.2] [--seeds=2]   # the weights, the points, lpd-jax's outcomes and seconds
  PATH/TO/VENV/bin/python benchmarks/autoattack_compare.py torch --npz=/tmp/aa.npz
      # ports the members to PyTorch, runs AutoAttack, prints the table and writes
      # benchmarks/results/autoattack_compare_cpu.json (or --out)

With JAX, lpd-jax and PyTorch in one environment, `python benchmarks/autoattack_compare.py
both --workdir=W` runs the two steps in turn. The torch step exits with a message (status 0)
where PyTorch or AutoAttack is missing. The members become PyTorch modules through
`benchmarks/lirpa_compare.member_module` (the export's module, `lpd_jax.export`); the torch
step checks the ported ensemble's log-probabilities against lpd-jax's first.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ATTACKS = ('apgd-ce', 'apgd-t', 'fab-t', 'square')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('step', choices=('jax', 'torch', 'both'))
  p.add_argument('--workdir', default='/tmp/lpd_quickstart', help='jax: a trained ensemble')
  p.add_argument('--num', type=int, default=100, help='jax: the first NUM test points')
  p.add_argument('--eps', default='0.1,0.2', help='jax: L-inf radii')
  p.add_argument('--seeds', type=int, default=2, help='Square seeds on each side')
  p.add_argument('--attacks', default=','.join(ATTACKS), help='jax: of ' + ','.join(ATTACKS))
  p.add_argument('--fab_unpacked', action='store_true', help='jax: also time FAB-T unpacked')
  p.add_argument(
    '--ablation', action='store_true', help="torch: AutoAttack's Square, corners in [0, h - s]"
  )
  p.add_argument('--npz', default='/tmp/autoattack_compare.npz', help='what the jax step wrote')
  p.add_argument('--queries', type=int, default=5000, help="jax: Square's queries (a smoke run)")
  p.add_argument('--out', default='', help='torch: the JSON')
  return p.parse_args(argv)


# -- the jax step: lpd-jax's side --------------------------------------------------------


def _lpd_run(ens, name, x, y, eps, **extra):
  """One attack of the standard preset on (x, y) -> (broken bool [N], seconds)."""
  import jax
  import jax.numpy as jnp

  from lpd_jax import attacks
  from lpd_jax.suites.robust import PRESETS

  attack = attacks.REGISTRY[name]
  params = {**attack.params, **PRESETS['standard'][name], **extra}
  start = time.perf_counter()
  x_adv = attack.fn(
    ens.log_predict, x, y, key=jax.random.key(params.pop('seed', 0)), eps=eps, **params
  )
  broken = np.asarray(jnp.argmax(ens.log_predict(x_adv), -1) != y)
  seconds = time.perf_counter() - start
  assert float(jnp.abs(x_adv - x).max()) <= eps + 1e-6
  return broken, seconds


def jax_step(args):
  import jax
  import jax.numpy as jnp

  import lpd_jax
  from lpd_jax.attacks import common
  from lpd_jax.data import load_dataset, to_float

  ens = lpd_jax.load(args.workdir, inference='raw')
  ds = load_dataset(ens.config)
  x_all = jnp.asarray(to_float(ds.test_images[: args.num]))
  y_all = jnp.asarray(ds.test_labels[: args.num])
  log_probs = np.asarray(ens.log_predict(x_all))
  clean = log_probs.argmax(-1) == np.asarray(y_all)
  x, y = x_all[clean], y_all[clean]
  out = dict(x=np.asarray(x_all), y=np.asarray(y_all), log_probs=log_probs, clean=clean)
  for path, leaf in jax.tree_util.tree_leaves_with_path(ens.variables):
    out['var' + jax.tree_util.keystr(path)] = np.asarray(leaf)
  epsilons = [float(e) for e in args.eps.split(',')]
  chosen = args.attacks.split(',')
  print(f'lpd-jax: {args.workdir}, {len(y)} of {args.num} points classified right')
  for eps in epsilons:
    for name in chosen:
      if name == 'square':
        for draw in ('autoattack', 'lpd'):
          for seed in range(args.seeds):
            broken, s = _lpd_run(ens, name, x, y, eps, draw=draw, seed=seed, queries=args.queries)
            out[f'lpd_square_{draw}_{seed}_{eps:g}'], out[f'lpd_square_{draw}_{seed}_{eps:g}_s'] = (
              broken,
              s,
            )
            print(
              f'  eps {eps:g} square draw={draw} seed {seed}: broke {broken.sum()} in {s:.1f} s'
            )
        continue
      broken, s = _lpd_run(ens, name, x, y, eps)
      out[f'lpd_{name}_{eps:g}'], out[f'lpd_{name}_{eps:g}_s'] = broken, s
      print(f'  eps {eps:g} {name}: broke {broken.sum()} in {s:.1f} s')
      if name == 'fab-t' and args.fab_unpacked:
        packable, common.packable = common.packable, lambda *trees: False
        try:
          unpacked, s = _lpd_run(ens, name, x, y, eps)
        finally:
          common.packable = packable
        out[f'lpd_fab-t_unpacked_{eps:g}'], out[f'lpd_fab-t_unpacked_{eps:g}_s'] = unpacked, s
        print(f'  eps {eps:g} fab-t unpacked: broke {unpacked.sum()} in {s:.1f} s')
  sys.path.insert(0, HERE)
  from _results import machine

  out['machine'] = json.dumps(machine(args, workdir=os.path.abspath(args.workdir)))
  out['eps'] = np.asarray(epsilons)
  out['attacks'] = np.asarray(chosen)
  out['seeds'] = args.seeds
  out['queries'] = args.queries
  path = args.npz
  np.savez(path, **out)
  print(f'wrote {path}')


# -- the torch step: AutoAttack's side (PyTorch, no JAX) ----------------------------------


def torch_ensemble(torch, nn, variables):
  """The exported variables as a PyTorch module: x NCHW -> log of the mean member softmax."""
  sys.path.insert(0, HERE)
  from lirpa_compare import member_module

  width = variables["['params']['stem_conv']['kernel']"].shape[-1]
  num_classes = variables["['params']['head']['bias']"].shape[-1]
  num_members = variables["['params']['head']['bias']"].shape[0]
  members = [member_module(nn, torch, variables, k, width, num_classes) for k in range(num_members)]

  class LogMeanSoftmax(nn.Module):
    def __init__(self):
      super().__init__()
      self.members = nn.ModuleList(members)

    def forward(self, x):
      logp = torch.stack([torch.log_softmax(m(x), -1) for m in self.members])
      return torch.logsumexp(logp, 0) - np.log(len(self.members))

  return LogMeanSoftmax().eval()


def _aa_run(torch, adversary, name, model, x, y, seed=0):
  """One attack as AutoAttack's run_standard_evaluation runs it -> (broken [N], seconds)."""
  start = time.perf_counter()
  if name == 'apgd-ce':
    adversary.apgd.loss, adversary.apgd.seed = 'ce', seed
    adv = adversary.apgd.perturb(x, y)
  elif name == 'apgd-t':
    adversary.apgd_targeted.seed = seed
    adv = adversary.apgd_targeted.perturb(x, y)
  elif name == 'fab-t':
    adversary.fab.targeted, adversary.fab.n_restarts, adversary.fab.seed = True, 1, seed
    adv = adversary.fab.perturb(x, y)
  else:
    adversary.square.seed = seed
    adv = adversary.square.perturb(x, y)
  with torch.no_grad():
    broken = (model(adv).argmax(-1) != y).numpy()
  assert float((adv - x).abs().max()) <= adversary.epsilon + 1e-6
  return broken, time.perf_counter() - start


def _agreement(ours, theirs):
  return dict(
    lpd_broke=int(ours.sum()),
    autoattack_broke=int(theirs.sum()),
    agree=int((ours == theirs).sum()),
    only_lpd=int((ours & ~theirs).sum()),
    only_autoattack=int((theirs & ~ours).sum()),
  )


def torch_step(args):
  try:
    import torch
    import torch.nn as nn
    from autoattack import AutoAttack
  except ImportError as e:
    print(f'skipped: {e} (install PyTorch and AutoAttack beside lpd-jax: see the docstring)')
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  data = np.load(args.npz)
  variables = {k[len('var') :]: data[k] for k in data.files if k.startswith('var')}
  model = torch_ensemble(torch, nn, variables)
  x_all = torch.tensor(data['x']).permute(0, 3, 1, 2).contiguous()
  with torch.no_grad():
    ported = model(x_all).numpy()
  gap = float(np.abs(ported - data['log_probs']).max())
  print(f'PyTorch port: max |log p - lpd-jax log p| = {gap:.2e}')
  assert gap < 1e-4, gap
  clean = data['clean']
  x, y = x_all[clean], torch.tensor(data['y'][clean]).long()
  seeds, rows = int(data['seeds']), []
  for eps in data['eps'].tolist():
    adversary = AutoAttack(
      model, norm='Linf', eps=eps, version='standard', seed=0, verbose=False, device='cpu'
    )
    adversary.square.n_queries = int(data['queries'])
    worst_lpd, worst_aa = np.zeros(len(y), bool), np.zeros(len(y), bool)
    for name in data['attacks'].tolist():
      if name != 'square':
        theirs, s = _aa_run(torch, adversary, name, model, x, y)
        ours = data[f'lpd_{name}_{eps:g}']
        row = dict(attack=name, eps=eps, autoattack_s=s, lpd_s=float(data[f'lpd_{name}_{eps:g}_s']))
        row.update(_agreement(ours, theirs))
        if f'lpd_{name}_unpacked_{eps:g}' in data.files:
          row['lpd_unpacked_s'] = float(data[f'lpd_{name}_unpacked_{eps:g}_s'])
        rows.append(row)
        worst_lpd, worst_aa = worst_lpd | ours, worst_aa | theirs
        print(row)
        continue
      theirs = [_aa_run(torch, adversary, 'square', model, x, y, seed) for seed in range(seeds)]
      variants = {'autoattack': theirs}
      if args.ablation:
        random_int = adversary.square.random_int
        adversary.square.random_int = lambda low=0, high=1, shape=[1]: random_int(
          low, high + 1, shape
        )
        try:
          variants['autoattack, corners [0, h - s]'] = [
            _aa_run(torch, adversary, 'square', model, x, y, seed) for seed in range(seeds)
          ]
        finally:
          adversary.square.random_int = random_int
      for draw in ('autoattack', 'lpd'):
        ours = [data[f'lpd_square_{draw}_{seed}_{eps:g}'] for seed in range(seeds)]
        seconds = [float(data[f'lpd_square_{draw}_{seed}_{eps:g}_s']) for seed in range(seeds)]
        row = dict(
          attack=f"square (lpd draw='{draw}')",
          eps=eps,
          lpd_broke_per_seed=[int(o.sum()) for o in ours],
          autoattack_broke_per_seed=[int(t.sum()) for t, _ in theirs],
          lpd_s=float(np.mean(seconds)),
          autoattack_s=float(np.mean([s for _, s in theirs])),
          agree_seed_0=int((ours[0] == theirs[0][0]).sum()),
        )
        if draw == 'autoattack':
          worst_lpd, worst_aa = worst_lpd | ours[0], worst_aa | theirs[0][0]
        rows.append(row)
        print(row)
      for label, runs in variants.items():
        if label != 'autoattack':
          rows.append(
            dict(
              attack=f'square ({label})',
              eps=eps,
              autoattack_broke_per_seed=[int(t.sum()) for t, _ in runs],
              autoattack_s=float(np.mean([s for _, s in runs])),
            )
          )
          print(rows[-1])
    rows.append(
      dict(
        attack='worst case (seed 0)',
        eps=eps,
        **_agreement(worst_lpd, worst_aa),
        lpd_robust=float((~worst_lpd).sum() / len(clean)),
        autoattack_robust=float((~worst_aa).sum() / len(clean)),
      )
    )
  header = json.loads(str(data['machine']))
  table = markdown(rows, int(clean.sum()), len(clean))
  print('\n' + table)
  result = dict(
    header, points=len(clean), clean=int(clean.sum()), port_max_gap=gap, rows=rows, table=table
  )
  out = args.out or os.path.join(HERE, 'results', 'autoattack_compare_cpu.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {out}')
  return result


def markdown(rows, clean, points):
  lines = [
    f'{points} points, {clean} classified right and attacked',
    '',
    '| eps | attack | lpd-jax broke | AutoAttack broke | agree | only lpd-jax | only AutoAttack '
    '| lpd-jax s | AutoAttack s |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for r in rows:
    seeds = 'lpd_broke_per_seed' in r or 'autoattack_broke_per_seed' in r
    ours = r.get('lpd_broke_per_seed', r.get('lpd_broke', '')) if seeds else r['lpd_broke']
    theirs = r.get('autoattack_broke_per_seed', r.get('autoattack_broke', ''))
    fmt = lambda v: '/'.join(map(str, v)) if isinstance(v, list) else str(v)
    agree = r.get('agree', r.get('agree_seed_0', ''))
    only = (r.get('only_lpd', ''), r.get('only_autoattack', ''))
    secs = [f'{r[k]:.0f}' if k in r else '' for k in ('lpd_s', 'autoattack_s')]
    if 'lpd_unpacked_s' in r:
      secs[0] += f' ({r["lpd_unpacked_s"]:.0f} unpacked)'
    lines.append(
      f'| {r["eps"]:g} | {r["attack"]} | {fmt(ours)} | {fmt(theirs)} | {agree} | '
      f'{only[0]} | {only[1]} | {secs[0]} | {secs[1]} |'
    )
  return '\n'.join(lines)


def main(argv=None):
  args = parse_args(argv)
  if args.step in ('jax', 'both'):
    jax_step(args)
  if args.step in ('torch', 'both'):
    torch_step(args)


if __name__ == '__main__':
  sys.exit(main())
