"""Training-step cost of every method relative to Baseline (the paper's section 5.4 table).

For each method, the jitted training step (`lpd_jax.train.make_train_step`) of a K-member
ResNet-18 ensemble on random CIFAR-shaped images: compiled and warmed up first, then
timed with `block_until_ready`, methods interleaved round by round (so machine drift
hits all alike), the median over rounds of the mean step time of --steps steps.

  python benchmarks/train_step.py                                   # CPU: width 8
  python benchmarks/train_step.py --width 64 --rounds 5 --steps 20  # GPU, the paper's width

Prints a Markdown table, one row per method, ending with its step time relative to
Baseline's in the same run and the paper's V100 per-epoch ratio; writes JSON to
benchmarks/out/train_step_<backend>.json (or --out).
"""

import argparse
import os
import platform
import statistics
import time

import _results
import jax
import jax.numpy as jnp

from lpd_jax import ensemble, methods, sharding, train
from lpd_jax.config import base_config, validate
from lpd_jax.names import split_names

# Section 5.4: seconds per CIFAR-10 epoch on a V100, K = 3, batch 64 (the paper's "PDD" is
# PDD masks + DEG, `deg` here). Ratios to Baseline's 54 s.
PAPER_V100_EPOCH_SECONDS = {'baseline': 54, 'adp': 64, 'lpd': 80, 'deg': 703, 'trs': 4106}


def make_runner(method, args):
  config = base_config()
  config.update(
    dict(
      method=method,
      num_members=args.num_members,
      width=args.width,
      batch_size=args.batch_size,
      member_strategy=args.strategy,
      dtype=args.dtype,
    )
  )
  if method == 'dverge':  # the layer fixed, as the training loop compiles each epoch's step
    config.dverge.layer = getattr(args, 'dverge_layer', 9)
  validate(config)
  members = ensemble.create(config, num_classes=args.num_classes)
  tx, _ = train.make_optimizer(config, steps_per_epoch=100)
  shape = (args.size, args.size, 3)
  state = train.init_state(config, members, tx, shape)
  step = train.make_train_step(config, members, tx, steps_per_epoch=100)
  x = jax.random.uniform(jax.random.key(0), (args.batch_size, *shape))
  y = jnp.arange(args.batch_size) % args.num_classes
  start = time.perf_counter()
  state, m = step(state, x, y, jax.random.key(1))
  jax.block_until_ready(m)
  compile_seconds = time.perf_counter() - start
  holder = {'state': state}

  def run(steps):
    s = holder['state']
    start = time.perf_counter()
    for i in range(steps):
      s, m = step(s, x, y, jax.random.key(i))
    jax.block_until_ready((s, m))
    holder['state'] = s
    return (time.perf_counter() - start) / steps

  run(1)  # warm-up after compile
  return run, compile_seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default='baseline,lpd,pdd,deg,adp,gal,trs,graddiv,dverge')
  parser.add_argument(
    '--dverge_layer',
    type=int,
    default=9,
    help="DVERGE's distillation layer (1..18 of a ResNet-18; a drawn layer costs about the "
    'middle one on average)',
  )
  parser.add_argument('--width', type=int, default=8)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--num_members', type=int, default=3)
  parser.add_argument('--num_classes', type=int, default=10)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--strategy', default='auto', help='member strategy: auto|unroll|vmap|map')
  parser.add_argument('--dtype', default='float32', help='activations: float32 | bfloat16')
  parser.add_argument('--steps', type=int, default=3, help='steps per timed round')
  parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds (median taken)')
  parser.add_argument('--out', default='', help='JSON path (default benchmarks/out/...)')
  args = parser.parse_args()
  names = list(split_names(args.methods))
  for name in names:
    methods.get(name)
  if 'baseline' not in names:
    names.insert(0, 'baseline')

  device = sharding.describe()
  strategy = ensemble.resolve_strategy(args.strategy)
  print(
    f'backend {device["backend"]} ({device["device_kind"]}), K={args.num_members}, width '
    f'{args.width}, batch {args.batch_size}, {args.size}x{args.size}x3, members {strategy}, '
    f'{args.dtype}',
    flush=True,
  )
  runners, compile_seconds = {}, {}
  for name in names:
    print(f'compiling {name} ...', flush=True)
    runners[name], compile_seconds[name] = make_runner(name, args)
  times = {name: [] for name in names}
  for r in range(args.rounds):
    for name in names:
      times[name].append(runners[name](args.steps))
    print(f'round {r + 1}/{args.rounds} done', flush=True)

  base = statistics.median(times['baseline'])
  paper_base = PAPER_V100_EPOCH_SECONDS['baseline']
  rows = []
  lines = [
    '| method | step ms | images/s | compile s | paper V100 | relative to Baseline |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ]
  for name in names:
    t = statistics.median(times[name])
    paper = PAPER_V100_EPOCH_SECONDS.get(name)
    row = dict(
      method=name,
      display=methods.display_name(name),
      step_ms=1e3 * t,
      steps_per_second=1 / t,
      images_per_second=args.batch_size / t,
      compile_seconds=compile_seconds[name],
      round_ms=[1e3 * v for v in times[name]],
      relative=t / base,
      paper_v100_relative=paper / paper_base if paper else None,
    )
    rows.append(row)
    paper_text = f'{row["paper_v100_relative"]:.2f}x' if paper else '-'
    lines.append(
      f'| {row["display"]} | {row["step_ms"]:.1f} | {row["images_per_second"]:.0f} | '
      f'{row["compile_seconds"]:.1f} | {paper_text} | {row["relative"]:.2f}x |'
    )
  print('\n'.join(lines))
  out = dict(
    backend=device['backend'],
    device=device['device_kind'],
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    jax=jax.__version__,
    member_strategy=strategy,
    args=vars(args),
    results=rows,
    table='\n'.join(lines),
  )
  _results.write(out, 'train_step', device['backend'], args.out)


if __name__ == '__main__':
  main()
