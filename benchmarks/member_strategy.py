"""Training-step speed of the member execution strategies (unroll, vmap, map).

One jitted LPD training step of a K-member ResNet-18 ensemble on random 32x32x3
images, timed after a warm-up (compile) call, best of --repeats runs of --steps steps.
The `auto` strategy (lpd_jax.ensemble.resolve_strategy) should pick the fastest for
the backend; this script is how that choice is checked.

  python benchmarks/member_strategy.py                       # CPU: widths 8 16 32
  python benchmarks/member_strategy.py --widths 64 --steps 20  # GPU

Prints a table and writes benchmarks/out/member_strategy_<backend>.json (or --out).
"""

import argparse
import os
import platform
import time

import _results
import jax
import jax.numpy as jnp

from lpd_jax import ensemble, sharding, train
from lpd_jax.config import base_config


def time_strategy(strategy, width, args):
  config = base_config()
  config.update(
    dict(
      num_members=args.members,
      width=width,
      method=args.method,
      batch_size=args.batch,
      member_strategy=strategy,
    )
  )
  members = ensemble.create(config, num_classes=10)
  tx, _ = train.make_optimizer(config, steps_per_epoch=100)
  state = train.init_state(config, members, tx, (args.size, args.size, 3))
  step = train.make_train_step(config, members, tx)
  x = jax.random.uniform(jax.random.key(0), (args.batch, args.size, args.size, 3))
  y = jnp.arange(args.batch) % 10
  start = time.perf_counter()
  state, m = step(state, x, y, jax.random.key(1))
  jax.block_until_ready(m)
  compile_seconds = time.perf_counter() - start
  best = float('inf')
  for r in range(args.repeats):
    start = time.perf_counter()
    for i in range(args.steps):
      state, m = step(state, x, y, jax.random.key(i))
    jax.block_until_ready(m)
    best = min(best, (time.perf_counter() - start) / args.steps)
  return dict(
    strategy=strategy,
    width=width,
    step_ms=1e3 * best,
    images_per_second=args.batch / best,
    first_call_seconds=compile_seconds,
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--widths', type=int, nargs='+', default=[8, 16, 32])
  parser.add_argument('--strategies', nargs='+', default=['unroll', 'vmap', 'map'])
  parser.add_argument('--members', type=int, default=3)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--method', default='lpd')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument(
    '--out',
    default='',
    help='JSON path; default benchmarks/out/member_strategy_<backend>.json (git-ignored)',
  )
  args = parser.parse_args()

  device = sharding.describe()
  print(
    f'backend {device["backend"]} ({device["device_kind"]}), K={args.members}, '
    f'batch {args.batch}, {args.size}x{args.size}x3, method {args.method}'
  )
  print(f'{"width":>5} {"strategy":>8} {"step ms":>9} {"img/s":>8} {"compile s":>9}', flush=True)
  rows = []
  for w in args.widths:
    for s in args.strategies:
      r = time_strategy(s, w, args)
      rows.append(r)
      print(
        f'{r["width"]:>5} {r["strategy"]:>8} {r["step_ms"]:>9.1f} '
        f'{r["images_per_second"]:>8.1f} {r["first_call_seconds"]:>9.1f}',
        flush=True,
      )
  print('speed relative to vmap (step time of vmap / step time), same run:')
  for r in rows:
    vmap = next((q for q in rows if q['width'] == r['width'] and q['strategy'] == 'vmap'), None)
    r['speedup_vs_vmap'] = vmap['step_ms'] / r['step_ms'] if vmap else None
    if vmap:
      print(f'{r["width"]:>5} {r["strategy"]:>8} {r["speedup_vs_vmap"]:>6.2f}x')
  out = dict(
    backend=device['backend'],
    device=device['device_kind'],
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    jax=jax.__version__,
    args=vars(args),
    results=rows,
  )
  _results.write(out, 'member_strategy', device['backend'], args.out)


if __name__ == '__main__':
  main()
