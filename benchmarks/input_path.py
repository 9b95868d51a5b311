"""The training input path alone, before and after it moved to the device (images/s).

before: what `train_epoch` did up to issue 29, one batch at a time in the loop's thread: a
  NumPy gather of the batch, NumPy pad/crop/flip, conversion to float32, transfer.
after: a NumPy gather of the uint8 batch, its transfer ahead of time (`input_pipeline.
  prefetch`, a background thread), float conversion and crop/flip on the device
  (`input_pipeline.device_batch`, jitted as the step runs it).
Each over one epoch of random uint8 CIFAR-sized images (--num_images, default CIFAR-10's
50,000), ended by a device sync; the augmentation on the device alone is timed too. With
--step_width the Baseline training step (K = 3 ResNet-18s) is timed on the same batches,
so the table says which of the two bounds the training loop.

  python benchmarks/input_path.py --step_width 16

Writes JSON to benchmarks/out/input_path_<backend>.json (or --out).
"""

import argparse
import time

import _results
import jax
import numpy as np

from lpd_jax import data, input_pipeline, sharding


def host_crop_and_flip(images, rng, pad=4):
  """The host augmentation of lpd-jax up to issue 29 (NumPy; the 'before' path)."""
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='constant')
  dy = rng.integers(0, 2 * pad + 1, b)
  dx = rng.integers(0, 2 * pad + 1, b)
  rows = dy[:, None] + np.arange(h)[None]
  cols = dx[:, None] + np.arange(w)[None]
  out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
  flip = rng.random(b) < 0.5
  out[flip] = out[flip, :, ::-1]
  return out


def synthetic(num_images, size):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num_images, size, size, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, num_images).astype(np.int32)
  return data.Dataset('synthetic', images, labels, images[:1], labels[:1], 10)


def before(ds, batch_size):
  """-> seconds for one epoch of the old host path (ends with the last batch on device)."""
  rng = np.random.default_rng([0, 0])
  order = rng.permutation(len(ds.train_labels))
  start, x = time.perf_counter(), None
  for i in range(len(order) // batch_size):
    idx = order[i * batch_size : (i + 1) * batch_size]
    x = jax.device_put(data.to_float(host_crop_and_flip(ds.train_images[idx], rng)))
  jax.block_until_ready(x)
  return time.perf_counter() - start


def after(ds, batch_size, consume):
  """-> seconds for one epoch of the new path, each batch given to `consume` (x, y, i)."""
  start, out = time.perf_counter(), None
  batches = data.train_batches(ds, batch_size, seed=0, epoch=0)
  for i, (x, y) in enumerate(input_pipeline.prefetch(batches)):
    out = consume(x, y, i)
  jax.block_until_ready(out)
  return time.perf_counter() - start


def measure(num_images=50_000, batch_size=128, size=32, rounds=3):
  """-> dict of images/s: before, after (transfer + device float and crop/flip), the device
  augmentation alone (on resident batches), each the best of `rounds` epochs."""
  ds = synthetic(num_images, size)
  steps = num_images // batch_size
  augment = jax.jit(lambda x, i: input_pipeline.device_batch(x, jax.random.key(i), True))
  resident = jax.device_put(ds.train_images[:batch_size])
  jax.block_until_ready(augment(resident, 0))  # compile
  best = lambda f: min(f() for _ in range(rounds))
  t_before = best(lambda: before(ds, batch_size))
  t_after = best(lambda: after(ds, batch_size, lambda x, y, i: augment(x, i)))

  def augment_only():
    start, out = time.perf_counter(), None
    for i in range(steps):
      out = augment(resident, i)
    jax.block_until_ready(out)
    return time.perf_counter() - start

  images = steps * batch_size
  return dict(
    num_images=num_images,
    batch_size=batch_size,
    size=size,
    before_images_per_second=images / t_before,
    after_images_per_second=images / t_after,
    device_augment_images_per_second=images / best(augment_only),
  )


def step_images_per_second(width, batch_size, size, steps=5):
  """The Baseline training step (K = 3 ResNet-18s, uint8 batches, augment on): images/s."""
  from lpd_jax import ensemble, train
  from lpd_jax.config import base_config, validate

  config = base_config()
  config.update(dict(method='baseline', width=width, batch_size=batch_size, augment=True))
  validate(config)
  members = ensemble.create(config, 10)
  tx, _ = train.make_optimizer(config, 100)
  state = train.init_state(config, members, tx, (size, size, 3))
  step = train.make_train_step(config, members, tx, 100)
  ds = synthetic(batch_size * (steps + 1), size)
  batches = list(data.train_batches(ds, batch_size, seed=0, epoch=0))
  state, m = step(state, *batches[0], jax.random.key(0))
  jax.block_until_ready(m)
  start = time.perf_counter()
  for i, (x, y) in enumerate(input_pipeline.prefetch(iter(batches[1:]))):
    state, m = step(state, x, y, jax.random.key(i))
  jax.block_until_ready(m)
  return steps * batch_size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_images', type=int, default=50_000)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--step_width', type=int, default=0, help='also time the step (0: no)')
  parser.add_argument('--out', default='', help='JSON path (default benchmarks/out/...)')
  args = parser.parse_args()
  device = sharding.describe()
  result = measure(args.num_images, args.batch_size, args.size, args.rounds)
  lines = [
    '| path | images/s |',
    '| --- | ---: |',
    f'| before: host gather, NumPy crop/flip, float32, transfer | '
    f'{result["before_images_per_second"]:,.0f} |',
    f'| after: host gather, uint8 prefetched, float + crop/flip on device | '
    f'{result["after_images_per_second"]:,.0f} |',
    f'| the device crop/flip alone | {result["device_augment_images_per_second"]:,.0f} |',
  ]
  if args.step_width:
    result['step_width'] = args.step_width
    result['step_images_per_second'] = step_images_per_second(
      args.step_width, args.batch_size, args.size
    )
    lines.append(
      f'| Baseline step, K = 3, width {args.step_width} | {result["step_images_per_second"]:,.0f} |'
    )
  print('\n'.join(lines))
  out = _results.machine(args, results=result, table='\n'.join(lines))
  _results.write(out, 'input_path', device['backend'], args.out)


if __name__ == '__main__':
  main()
