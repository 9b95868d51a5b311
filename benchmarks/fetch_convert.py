"""What `python -m lpd_jax.datasets fetch cifar10 --from=ARCHIVE` costs at full size, and a
verified load of its result (no network: the archive is a synthetic one in the canonical
format, written by tests/archives.py with CIFAR-10's 50,000 + 10,000 images of random
pixels; random pixels do not compress, so it is about as large as the real one).

  python benchmarks/fetch_convert.py

Times: writing the archive (setup, not part of fetch), the fetch (size and MD5 check, then
the conversion into uint8/int32 arrays with their manifest), and `data.load_dataset` twice
(memory-mapped arrays, each verified against its CRC-32: the first read after the
conversion, the second from the page cache). Writes JSON to
benchmarks/out/fetch_convert_<backend>.json (or --out).
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import _results

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests')
)

from archives import cifar_archive, md5_and_size  # noqa: E402

from lpd_jax import data, datasets  # noqa: E402
from lpd_jax.config import base_config  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument(
    '--per_batch', type=int, default=10_000, help='images per training batch (5 batches)'
  )
  parser.add_argument('--test', type=int, default=10_000)
  parser.add_argument('--dir', default='', help='working folder (default: a temporary one)')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  root = args.dir or tempfile.mkdtemp(prefix='lpd_fetch_bench_')
  archive = os.path.join(root, 'cifar-10-python.tar.gz')
  start = time.perf_counter()
  cifar_archive(archive, 'cifar10', train_per_batch=args.per_batch, test=args.test)
  write_s = time.perf_counter() - start
  digest, size = md5_and_size(archive)
  datasets.SOURCES['cifar10'] = dataclasses.replace(
    datasets.SOURCES['cifar10'], md5=digest, size=size
  )
  data_dir = os.path.join(root, 'data')
  start = time.perf_counter()
  datasets.fetch('cifar10', data_dir, archive=archive, force=True)
  fetch_s = time.perf_counter() - start
  config = base_config()
  config.update(dict(dataset='cifar10', data_dir=data_dir))
  loads = []
  for _ in range(2):
    start = time.perf_counter()
    ds = data.load_dataset(config)
    loads.append(time.perf_counter() - start)
  rows = [
    ('archive size', f'{size / 1e6:.1f} MB'),
    ('writing the archive (setup)', f'{write_s:.1f} s'),
    ('fetch --from: size and MD5 check, conversion, manifest', f'{fetch_s:.1f} s'),
    ('load_dataset, first (CRC-32 of every array)', f'{loads[0]:.2f} s'),
    ('load_dataset, again', f'{loads[1]:.2f} s'),
  ]
  print(f'cifar10 {ds.train_images.shape} / {ds.test_images.shape} from {archive}')
  print('| step | value |\n| --- | ---: |\n' + '\n'.join(f'| {a} | {b} |' for a, b in rows))
  result = _results.machine(
    args,
    archive_bytes=size,
    write_archive_s=write_s,
    fetch_s=fetch_s,
    load_s=loads,
    train_images=list(ds.train_images.shape),
  )
  _results.write(result, 'fetch_convert', 'cpu', args.out)


if __name__ == '__main__':
  main()
