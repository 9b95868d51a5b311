"""Cost of the LPD keep rates and of their bin counts: scatter-add vs the one-hot they replaced.

`dropout.lpd_keep_rates` counts each member's active units per bin with a scatter-add
(O(K*B*D) whatever the number of bins M); the earlier code built a one-hot [K, B, D, M].
This times both countings and the whole keep-rate function on random features, jitted,
after a warm-up call, median of --repeats calls with `block_until_ready`.

  python benchmarks/keep_rates.py                       # K = 3, B = 64, D = 512
  python benchmarks/keep_rates.py --bins 64 1024 4096 --out results.json

Prints a Markdown table and writes JSON (default benchmarks/out/keep_rates_<backend>.json).
"""

import argparse
import functools
import os
import statistics
import time

import _results
import jax
import jax.numpy as jnp

from lpd_jax import dropout, sharding


def counts_one_hot(bins, active, num_bins):
  """The replaced counting: a [K, B, D, M] one-hot summed over D."""
  return (jax.nn.one_hot(bins, num_bins, dtype=jnp.float32) * active[..., None]).sum(axis=2)


def median_ms(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--members', type=int, default=3)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--features', type=int, default=512)
  p.add_argument('--bins', type=int, nargs='+', default=[64, 256, 1024])
  p.add_argument('--repeats', type=int, default=20)
  p.add_argument('--out', default='', help='JSON path (default benchmarks/out/...)')
  args = p.parse_args(argv)
  device = sharding.describe()
  shape = (args.members, args.batch, args.features)
  h = jax.nn.relu(jax.random.normal(jax.random.key(0), shape) * 3)  # features up to ~12
  print(
    f'{device["backend"]} ({device["device_kind"]}), K = {args.members}, B = {args.batch}, '
    f'D = {args.features}'
  )
  print(
    '| M | counts, scatter-add (ms) | counts, one-hot (ms) | one-hot / scatter | '
    'lpd_keep_rates (ms) |'
  )
  print('| --- | --- | --- | --- | --- |', flush=True)
  rows = []
  for m in args.bins:
    bins = jnp.clip(jnp.ceil(h / 0.1), 1, m).astype(jnp.int32) - 1
    active = h > 0
    scatter = median_ms(
      jax.jit(functools.partial(dropout._bin_counts, num_bins=m)),
      bins,
      active,
      repeats=args.repeats,
    )
    one_hot = median_ms(
      jax.jit(functools.partial(counts_one_hot, num_bins=m)), bins, active, repeats=args.repeats
    )
    keep = median_ms(functools.partial(dropout.lpd_keep_rates, num_bins=m), h, repeats=args.repeats)
    rows.append(
      dict(num_bins=m, counts_scatter_ms=scatter, counts_one_hot_ms=one_hot, lpd_keep_rates_ms=keep)
    )
    print(
      f'| {m} | {scatter:.3f} | {one_hot:.3f} | {one_hot / scatter:.1f}x | {keep:.3f} |', flush=True
    )
  result = dict(
    benchmark='keep_rates',
    jax_version=jax.__version__,
    cpu_count=os.cpu_count(),
    **device,
    args=vars(args),
    results=rows,
  )
  _results.write(result, 'keep_rates', device['backend'], args.out)


if __name__ == '__main__':
  main()
