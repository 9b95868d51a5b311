"""Throughput of PGD-10 (L-inf, eps 0.03, random start) against a K = 3 ResNet-18 ensemble
(--attack=apgd: APGD-CE with its step-size schedule, the strong suite's attack).

Trains nothing: the members are randomly initialised (`lpd_jax.ensemble.Members.init`)
and the images are uniform noise; the attack's cost does not depend on the weights.
Each member strategy (`lpd_jax.ensemble.map_members`) gets one warm-up call (the
compile), then --repeats timed calls with `block_until_ready`; images/s = batch / the
median seconds per call. Prints a table and writes JSON to
`benchmarks/out/attack_<attack>_<backend>.json` (or --out; the committed records are
`benchmarks/results/attack_pgd_cpu.json` and `attack_apgd_cpu.json`).

The committed CPU results (2 shared cores, so a small width) came from
  python benchmarks/attack_pgd.py --width=16 --batch=64 --repeats=3
  python benchmarks/attack_pgd.py --attack=apgd --width=16 --batch=64 --repeats=3 \
      --strategy=unroll
The full-size run (width 64, 32x32x3, batch 128, unroll, vmap and map) on an accelerator:
  python benchmarks/attack_pgd.py
"""

import argparse
import os
import platform

import _results
import jax

from lpd_jax import sharding
from lpd_jax.attacks import apgd, pgd
from lpd_jax.ensemble import Ensemble, Members
from lpd_jax.models import ResNet18
from lpd_jax.names import split_names

# The evaluation attacks timed here: PGD (the paper's) and APGD-CE (the strong suite's).
ATTACKS = {'pgd': pgd, 'apgd': apgd}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--width', type=int, default=64, help='ResNet-18 base width (paper: 64)')
  p.add_argument('--image_size', type=int, default=32, help='square input side (CIFAR: 32)')
  p.add_argument('--channels', type=int, default=3)
  p.add_argument('--num_classes', type=int, default=10)
  p.add_argument('--members', type=int, default=3, help='K')
  p.add_argument('--batch', type=int, default=128)
  p.add_argument(
    '--strategy',
    default='unroll,vmap,map',
    help='comma-separated member strategies: unroll, vmap, map',
  )
  p.add_argument('--attack', default='pgd', choices=sorted(ATTACKS), help='pgd | apgd (CE)')
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--eps', type=float, default=0.03)
  p.add_argument('--repeats', type=int, default=5, help='timed calls after the warm-up')
  p.add_argument(
    '--out',
    default='',
    help='JSON path; default benchmarks/out/attack_pgd_<backend>.json (git-ignored)',
  )
  return p.parse_args(argv)


def bench(args, strategy, variables, model):
  ens = Ensemble(variables, Members(model, strategy))
  kx, ky, ka = jax.random.split(jax.random.key(1), 3)
  x = jax.random.uniform(kx, (args.batch, args.image_size, args.image_size, args.channels))
  y = jax.random.randint(ky, (args.batch,), 0, args.num_classes)

  attack = ATTACKS[args.attack]

  def call():
    return attack(ens.log_predict, x, y, key=ka, eps=args.eps, steps=args.steps).block_until_ready()

  _, first, times, median = _results.time_calls(call, args.repeats)
  return dict(
    strategy=strategy,
    width=args.width,
    batch=args.batch,
    image_size=args.image_size,
    members=args.members,
    steps=args.steps,
    first_call_s=first,
    seconds_per_call=median,
    times_s=times,
    images_per_s=args.batch / median,
  )


def main(argv=None):
  args = parse_args(argv)
  backend = jax.default_backend()
  model = ResNet18(num_classes=args.num_classes, width=args.width)
  variables = Members(model).init(
    jax.random.key(0), args.members, (args.image_size, args.image_size, args.channels)
  )
  rows = []
  print(
    f'{args.attack.upper()}-{args.steps} L-inf eps {args.eps}, K = {args.members} ResNet-18, '
    f'{args.image_size}x{args.image_size}x{args.channels}, {backend}: '
    f'{sharding.describe()["device_kind"]}',
    flush=True,
  )
  print('| strategy | width | batch | images/s | s per call | first call (compile) s |')
  print('| --- | --- | --- | --- | --- | --- |', flush=True)
  for strategy in split_names(args.strategy):
    r = bench(args, strategy, variables, model)
    rows.append(r)
    print(
      f'| {strategy} | {r["width"]} | {r["batch"]} | {r["images_per_s"]:.1f} | '
      f'{r["seconds_per_call"]:.3f} | {r["first_call_s"]:.1f} |',
      flush=True,
    )
  device = sharding.describe()
  result = dict(
    benchmark='attack_pgd',
    backend=backend,
    device=device['device_kind'],
    num_devices=device['num_devices'],
    jax_version=jax.__version__,
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    args=vars(args),
    results=rows,
  )
  _results.write(result, f'attack_{args.attack}', backend, args.out)
  return result


if __name__ == '__main__':
  main()
