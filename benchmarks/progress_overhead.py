"""What progress inside a long call costs (`lpd_jax.progress`): the strong attacks with their
loops split on the host (`attacks.common.host_loop`, as the suites run them) against the
one-program loops of a library call, and a CROWN bound with a host callback per chunk of
neurons (`certify.margins_and_fallbacks(report=True)`) against the one without.

A K = 3 random ResNet-18 ensemble (the cost does not depend on the weights) on uniform noise.
Each variant gets one warm-up call (its compile), then the two are timed in --rounds
interleaved rounds (quiet, listened, quiet, listened, ...); the ratio is of the medians.
Progress lines are on (progress.INTERVAL_S = 0: a line at every chunk, the most it prints)
but go to /dev/null. Writes JSON to benchmarks/out/progress_overhead_<backend>.json (or
--out; the committed CPU record is benchmarks/results/progress_overhead_cpu.json, from
  python benchmarks/progress_overhead.py --rounds=5 \
      --out=benchmarks/results/progress_overhead_cpu.json
on 2 shared cores).
"""

import argparse
import contextlib
import os
import platform
import statistics
import time

import _results
import jax
import jax.numpy as jnp

from lpd_jax import certify, progress
from lpd_jax.attacks import apgd, fab, pgd, square
from lpd_jax.ensemble import Ensemble, Members
from lpd_jax.models import ResNet18


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--width', type=int, default=8, help='ResNet-18 base width')
  p.add_argument('--image_size', type=int, default=32)
  p.add_argument('--batch', type=int, default=16, help='images per attack call')
  p.add_argument('--steps', type=int, default=100, help='APGD-CE and PGD-margin steps')
  p.add_argument('--targets', type=int, default=3, help='APGD-T and FAB-T targets')
  p.add_argument('--target_steps', type=int, default=30, help='steps per target')
  p.add_argument('--queries', type=int, default=300, help='Square queries')
  p.add_argument('--crown_size', type=int, default=8, help='CROWN: 1-channel image side')
  p.add_argument('--crown_batch', type=int, default=4)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--out', default='', help='JSON path (default benchmarks/out/...)')
  return p.parse_args(argv)


def ensemble(width, image_size, channels, seed=0):
  members = Members(ResNet18(num_classes=10, width=width))
  return Ensemble(
    members.init(jax.random.key(seed), 3, (image_size, image_size, channels)), members
  )


def timed(name, call, rounds):
  """Median seconds of `call` quiet and listened to (warm-up calls first), interleaved."""

  def once(listen):
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
      with progress.listening('bench') if listen else contextlib.nullcontext():
        start = time.perf_counter()
        jax.block_until_ready(call())
        return time.perf_counter() - start

  first = {False: once(False), True: once(True)}  # compiles
  times = {False: [], True: []}
  for _ in range(rounds):
    for listen in (False, True):
      times[listen].append(once(listen))
  quiet, heard = statistics.median(times[False]), statistics.median(times[True])
  print(f'{name}: quiet {quiet:.2f} s, listened {heard:.2f} s, ratio {heard / quiet:.3f}')
  return dict(
    quiet_s=quiet,
    listened_s=heard,
    ratio=heard / quiet,
    first_call_quiet_s=first[False],
    first_call_listened_s=first[True],
    quiet_rounds_s=times[False],
    listened_rounds_s=times[True],
  )


def main(argv=None):
  args = parse_args(argv)
  progress.INTERVAL_S = 0.0
  ens = ensemble(args.width, args.image_size, 3)
  x = jax.random.uniform(jax.random.key(1), (args.batch, args.image_size, args.image_size, 3))
  y = jnp.arange(args.batch) % 10
  key, eps, t = jax.random.key(2), 0.03, args.targets
  calls = {
    f'apgd-ce ({args.steps} steps)': lambda: apgd(
      ens.log_predict, x, y, key=key, eps=eps, steps=args.steps
    ),
    f'apgd-t ({t} x {args.target_steps} steps)': lambda: apgd(
      ens.log_predict,
      x,
      y,
      key=key,
      eps=eps,
      steps=args.target_steps,
      loss='dlr',
      targeted=True,
      num_targets=t,
    ),
    f'pgd-margin ({args.steps} steps)': lambda: pgd(
      ens.log_predict, x, y, key=key, eps=eps, steps=args.steps, loss='margin'
    ),
    f'square ({args.queries} queries)': lambda: square(
      ens.log_predict, x, y, key=key, eps=eps, queries=args.queries
    ),
    f'fab-t ({t} x {args.target_steps} steps)': lambda: fab(
      ens.log_predict, x, y, key=key, eps=eps, steps=args.target_steps, num_targets=t
    ),
  }
  results = {}
  for name, call in calls.items():
    results[name] = timed(name, call, args.rounds)
  small = ensemble(2, args.crown_size, 1)
  xc = jax.random.uniform(
    jax.random.key(3), (args.crown_batch, args.crown_size, args.crown_size, 1)
  )
  yc = jnp.arange(args.crown_batch) % 10
  for method in ('crown', 'alpha_crown'):
    settings = dict(method=method, alpha_steps=5, alpha_intermediate=False)
    units = certify.progress_units(small, xc.shape[1:], len(xc), method, None, certify.CHUNK, 5)

    def bound(report=False):
      lower = certify.margins_and_fallbacks(small, xc, yc, 0.001, report=report, **settings)[0]
      lower = jax.block_until_ready(lower)
      jax.effects_barrier()
      return lower

    def reported():
      with (
        progress.units(units, 'passes', method) if progress.listened() else contextlib.nullcontext()
      ):
        return bound(report=progress.listened())

    name = f'{method} ({len(xc)} samples of {xc.shape[1:]}, width 2, {units} ticks)'
    results[name] = timed(name, reported, args.rounds)
  record = _results.machine(args, benchmark='progress_overhead', platform=platform.platform())
  record['results'] = results
  _results.write(record, 'progress_overhead', jax.default_backend(), args.out)


if __name__ == '__main__':
  main()
