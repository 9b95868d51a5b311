"""Real datasets fetched once from their authors' sites, verified, and converted into the
layout `lpd_jax.data` reads memory-mapped (no TensorFlow, no TFDS).

  python -m lpd_jax.datasets fetch cifar10|cifar100|tiny_imagenet [--data_dir=DIR] [--from=FILE]

`fetch` downloads the canonical archive (resuming a cut download), checks its published size
and MD5, and converts it into DATA_DIR/<name>/ (`store`: uint8 images, int32 labels, class
names, a manifest of every array's shape and CRC-32, verified on every load). The archive is
kept in DATA_DIR/downloads/ (a damaged conversion is redone from it without a download).
`--from` takes the archive from disk instead, for a machine without internet. One fetch of a
dataset into a data dir at a time (an OS lock, as for training).

DATA_DIR is `--data_dir`, else $LPD_JAX_DATA_DIR, else ~/lpd_jax_data (`default_data_dir`).
"""

import dataclasses
import os

from lpd_jax import locks
from lpd_jax.datasets import cifar, download, store, tiny_imagenet
from lpd_jax.errors import DataError

__all__ = ['SOURCES', 'Source', 'default_data_dir', 'fetch', 'load']

DATA_DIR_ENV = 'LPD_JAX_DATA_DIR'
DOWNLOADS = 'downloads'


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a dataset's canonical archive is published, its size and MD5, and its converter
  `convert(path, name, progress) -> (arrays, info)`."""

  name: str
  url: str
  size: int  # bytes
  md5: str
  convert: object
  unpacked_bytes: int  # what the converted arrays take on disk (the disk-space check)

  @property
  def archive(self):
    return self.url.rsplit('/', 1)[-1]


# The archives' addresses, sizes and MD5s as their authors publish them.
SOURCES = {
  s.name: s
  for s in (
    Source(
      'cifar10',
      'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
      170_498_071,
      'c58f30108f718f92721af3b95e74349a',
      cifar.convert,
      60_000 * 3_072,
    ),
    Source(
      'cifar100',
      'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
      169_001_437,
      'eb9058c3a382ffc7106e4002c42a8d85',
      cifar.convert,
      60_000 * 3_072,
    ),
    Source(
      'tiny_imagenet',
      'http://cs231n.stanford.edu/tiny-imagenet-200.zip',
      248_100_043,
      '90528d7ca1a48142e341f4ef8d21d0de',
      tiny_imagenet.convert,
      110_000 * 12_288,
    ),
  )
}


def default_data_dir():
  """$LPD_JAX_DATA_DIR, else ~/lpd_jax_data: where `fetch` writes and the configs read by
  default (config.data_dir='')."""
  return os.path.expanduser(os.environ.get(DATA_DIR_ENV) or os.path.join('~', 'lpd_jax_data'))


def _source(name):
  if name not in SOURCES:
    raise DataError(f'no dataset {name!r} to fetch; choose one of {", ".join(SOURCES)}')
  return SOURCES[name]


def load(name, data_dir=''):
  """-> (arrays {name: memory-mapped ndarray}, manifest) of a fetched dataset, verified
  against its manifest. DataError with the fetch command when it is not there."""
  return store.read(data_dir or default_data_dir(), name)


def fetch(name, data_dir='', archive=None, force=False):
  """Makes dataset `name` ready in `data_dir` (see the module docstring); -> its folder.

  Args:
    name: a key of SOURCES.
    data_dir: the data dir ('' = `default_data_dir()`).
    archive: the canonical archive (or, for Tiny-ImageNet, its unzipped folder) already on
      disk; None downloads it (or reuses the one kept in DATA_DIR/downloads/).
    force: convert again even if a verified conversion is there.
  """
  source = _source(name)
  data_dir = os.path.abspath(data_dir or default_data_dir())
  try:
    os.makedirs(os.path.join(data_dir, DOWNLOADS), exist_ok=True)
  except OSError as e:
    raise DataError(f'cannot create data_dir {data_dir}: {e.strerror or e}') from None

  def busy(holder):
    return DataError(
      f'another fetch of {name} into {data_dir} is running ({holder}); wait for it to finish'
    )

  with locks.exclusive(os.path.join(data_dir, f'.{name}.lock'), busy):
    return _fetch_locked(source, data_dir, archive, force)


def _fetch_locked(source, data_dir, archive, force):
  name, folder = source.name, os.path.join(data_dir, source.name)
  if not force and store.read_manifest(data_dir, name) is not None:
    try:
      store.read(data_dir, name)
      print(f'{name} is already in {folder} (verified against its manifest); nothing to do')
      return folder
    except DataError as e:
      problem = str(e).split('; convert it again')[0]
      print(f'warning: {problem}; converting it again', flush=True)
  if archive is None:
    archive = os.path.join(data_dir, DOWNLOADS, source.archive)
    if not os.path.exists(archive):
      hint = f'--from=PATH/TO/{source.archive} (from {source.url})'
      download.fetch(source.url, archive, source.size, source_hint=hint)
    print(f'checking {archive} (size and MD5) ...', flush=True)
    download.verify(archive, source.size, source.md5, move_aside=True)
  elif not os.path.exists(archive):
    raise DataError(f'--from={archive}: no such file or folder')
  elif os.path.isdir(archive):
    if source.convert is not tiny_imagenet.convert:
      raise DataError(f'--from={archive} is a folder; {name} needs its archive {source.archive}')
    print(f'reading the unzipped folder {archive} (no checksum: the archive is not there)')
  else:
    print(f'checking {archive} (size and MD5) ...', flush=True)
    download.verify(archive, source.size, source.md5, move_aside=False)
  return _convert(source, data_dir, archive)


def _convert(source, data_dir, archive):
  free = download.free_bytes(data_dir)
  if free is not None and free < source.unpacked_bytes:
    raise DataError(
      f'not enough disk space in {data_dir} to convert {source.name}: it needs about '
      f'{source.unpacked_bytes / 1e6:,.0f} MB, {free / 1e6:,.0f} MB free'
    )
  print(f'converting {archive} into {os.path.join(data_dir, source.name)}', flush=True)
  arrays, info = source.convert(archive, source.name, lambda what: print(f'  {what}', flush=True))
  sizes = ', '.join(f'{k} {list(v.shape)}' for k, v in arrays.items() if k.endswith('images'))
  checked = None if os.path.isdir(archive) else source.md5  # a folder has no checksum
  info = dict(info, source=dict(url=source.url, archive=os.path.basename(archive), md5=checked))
  try:
    store.write(data_dir, source.name, arrays, info)
  except OSError as e:
    raise DataError(
      f'cannot write the converted {source.name} into {data_dir}: {e.strerror or e}; nothing '
      'was replaced (free space and rerun: the archive is kept)'
    ) from None
  print(f'{source.name} ready in {os.path.join(data_dir, source.name)}: {sizes}', flush=True)
  return os.path.join(data_dir, source.name)
