"""The converted layout the loaders read: one folder per dataset under the data dir.

  DATA_DIR/<name>/manifest.json       what the folder holds: per array its file, shape, dtype
                                      and CRC-32; class names; the archive it came from
  DATA_DIR/<name>/<array>.npy         uint8 images [N, H, W, 3], int32 labels [N], ...

Arrays are written into a temporary folder that is renamed into place once every array and
the manifest are on disk, so a reader sees the old folder or the whole new one. `read`
memory-maps the arrays and verifies each against its manifest (as the checkpoints' manifests
are verified): a file damaged after conversion is one DataError naming it and the fix.
"""

import json
import os
import shutil
import zlib

import numpy as np

from lpd_jax.errors import DataError

MANIFEST = 'manifest.json'
FORMAT = 1  # the layout's version, in every manifest
_CHUNK = 1 << 24  # bytes per CRC-32 update: memory stays flat on a 1.2 GB array


def crc32(array):
  """CRC-32 of an array's bytes in C order, read in chunks (a memory-mapped array is not
  loaded whole)."""
  flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
  crc = 0
  for i in range(0, len(flat), _CHUNK):
    crc = zlib.crc32(flat[i : i + _CHUNK], crc)
  return crc


def fetch_command(name, data_dir, extra=''):
  """The command that (re)creates dataset `name` in `data_dir`."""
  return f'python -m lpd_jax.datasets fetch {name} --data_dir={data_dir}{extra}'


def write(data_dir, name, arrays, info):
  """Writes `arrays` {name: ndarray} and a manifest with `info` (class names, source) as
  DATA_DIR/<name>/, replacing an earlier conversion atomically."""
  final = os.path.join(data_dir, name)
  tmp = os.path.join(data_dir, f'.{name}.converting-{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    entries = {}
    for key, array in arrays.items():
      np.save(os.path.join(tmp, f'{key}.npy'), array)
      entries[key] = dict(
        file=f'{key}.npy', shape=list(array.shape), dtype=str(array.dtype), crc32=crc32(array)
      )
    manifest = dict(format=FORMAT, dataset=name, arrays=entries, **info)
    with open(os.path.join(tmp, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    old = None
    if os.path.exists(final):
      old = os.path.join(data_dir, f'.{name}.replaced-{os.getpid()}')
      os.replace(final, old)
    os.replace(tmp, final)
    if old:
      shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest


def read_manifest(data_dir, name):
  """The manifest of DATA_DIR/<name>, or None when the dataset was never converted there.
  DataError if it exists but cannot be read."""
  file_path = os.path.join(data_dir, name, MANIFEST)
  if not os.path.isfile(file_path):
    return None
  try:
    with open(file_path) as f:
      manifest = json.load(f)
    manifest['arrays'].items()
  except (ValueError, KeyError, AttributeError, OSError) as e:
    raise DataError(
      f'{file_path} is unreadable ({type(e).__name__}): convert the dataset again with '
      f'{fetch_command(name, data_dir)}'
    ) from None
  return manifest


def read(data_dir, name, verify=True):
  """-> (arrays {name: memory-mapped ndarray}, manifest) of DATA_DIR/<name>.

  DataError in one line when the folder is missing (with the fetch command), or an array
  is missing or differs from its manifest in shape, dtype or CRC-32 (damaged after
  conversion: with the command that converts it again, reusing the kept archive).
  """
  manifest = read_manifest(data_dir, name)
  if manifest is None:
    raise DataError(
      f'dataset {name!r} is not in data_dir {data_dir} (no {name}/{MANIFEST}); '
      f'fetch it first: {fetch_command(name, data_dir)}'
    )
  arrays = {}
  for key, entry in manifest['arrays'].items():
    file_path = os.path.join(data_dir, name, entry['file'])
    fix = f'convert it again: {fetch_command(name, data_dir, " --force")}'
    try:
      array = np.load(file_path, mmap_mode='r')
    except (OSError, ValueError) as e:
      reason = 'missing' if not os.path.exists(file_path) else f'unreadable ({type(e).__name__})'
      raise DataError(f'{file_path} is {reason}; {fix}') from None
    if list(array.shape) != entry['shape'] or str(array.dtype) != entry['dtype']:
      raise DataError(
        f'{file_path} holds {array.dtype} {list(array.shape)} but its manifest says '
        f'{entry["dtype"]} {entry["shape"]}; {fix}'
      )
    if verify and crc32(array) != entry['crc32']:
      raise DataError(
        f'{file_path} does not match its manifest (CRC-32 differs: damaged after conversion); {fix}'
      )
    arrays[key] = array
  return arrays, manifest
