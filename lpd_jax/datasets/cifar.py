"""CIFAR-10 and CIFAR-100 from their authors' "python version" archives (Krizhevsky 2009,
https://www.cs.toronto.edu/~kriz/cifar.html).

The archives hold pickled dicts (written by Python 2; read with encoding='bytes'):
  cifar-10-python.tar.gz   cifar-10-batches-py/data_batch_1..5, test_batch:
                             b'data' uint8 [N, 3072] (1024 red, 1024 green, 1024 blue values,
                             rows top to bottom), b'labels' [N]; batches.meta: b'label_names'
  cifar-100-python.tar.gz  cifar-100-python/train, test: b'data', b'fine_labels',
                             b'coarse_labels'; meta: b'fine_label_names', b'coarse_label_names'
Converted to images uint8 [N, 32, 32, 3] (NHWC) and labels int32 [N] in the archive's order
(for CIFAR-100 the fine labels are `*_labels`, the coarse ones `*_coarse_labels`).
"""

import io
import pickle
import tarfile
import zlib

import numpy as np

from lpd_jax.errors import DataError

# Globals a CIFAR pickle may name: NumPy's array reconstruction (NumPy 1 and 2 spellings)
# and the bytes encoding of a protocol-2 pickle written by Python 3. Nothing else is
# unpickled: an archive is data, never code.
_ALLOWED = {
  ('numpy.core.multiarray', '_reconstruct'),
  ('numpy._core.multiarray', '_reconstruct'),
  ('numpy', 'ndarray'),
  ('numpy', 'dtype'),
  ('_codecs', 'encode'),
}


class _DataUnpickler(pickle.Unpickler):
  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f'{module}.{name} is not CIFAR data')
    return super().find_class(module, name)


def _load(archive, tar, member):
  try:
    raw = tar.extractfile(f'{archive.root}/{member}').read()
  except KeyError:
    raise DataError(
      f'{archive.path} has no {archive.root}/{member}: not the CIFAR archive'
    ) from None
  try:
    return _DataUnpickler(io.BytesIO(raw), encoding='bytes').load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise DataError(f'{archive.path}: {member} is no CIFAR batch ({e})') from None


def _images(batch):
  data = np.asarray(batch[b'data'], np.uint8)  # [N, 3072] channel planes
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # [N, 32, 32, 3]


def _names(values):
  return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class _Archive:
  def __init__(self, path, root):
    self.path, self.root = path, root


def convert(path, name, progress=lambda what: None):
  """The arrays and class names of a CIFAR archive at `path`.

  Args:
    path: cifar-10-python.tar.gz or cifar-100-python.tar.gz.
    name: 'cifar10' or 'cifar100'.
    progress: called with the member being read (for the caller's bar).

  Returns:
    (arrays, info): arrays {train_images [N, 32, 32, 3] uint8, train_labels [N] int32,
    test_images, test_labels (+ train/test_coarse_labels for CIFAR-100)}; info
    {class_names (+ coarse_class_names)}.
  """
  ten = name == 'cifar10'
  archive = _Archive(path, 'cifar-10-batches-py' if ten else 'cifar-100-python')
  try:
    with tarfile.open(path, 'r:gz') as tar:
      if ten:
        splits = {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']}
      else:
        splits = {'train': ['train'], 'test': ['test']}
      arrays = {}
      for split, members in splits.items():
        batches = []
        for member in members:
          progress(member)
          batches.append(_load(archive, tar, member))
        arrays[f'{split}_images'] = np.concatenate([_images(b) for b in batches])
        label_key = b'labels' if ten else b'fine_labels'
        arrays[f'{split}_labels'] = np.concatenate(
          [np.asarray(b[label_key], np.int32) for b in batches]
        )
        if not ten:
          arrays[f'{split}_coarse_labels'] = np.concatenate(
            [np.asarray(b[b'coarse_labels'], np.int32) for b in batches]
          )
      meta = _load(archive, tar, 'batches.meta' if ten else 'meta')
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise DataError(
      f'{path} cannot be read as a tar.gz archive ({type(e).__name__}: {e}); truncated or '
      'damaged: fetch it again'
    ) from None
  except KeyError as e:
    raise DataError(f'{path}: a CIFAR batch lacks the key {e}') from None
  if ten:
    info = dict(class_names=_names(meta[b'label_names']))
  else:
    info = dict(
      class_names=_names(meta[b'fine_label_names']),
      coarse_class_names=_names(meta[b'coarse_label_names']),
    )
  return arrays, info
