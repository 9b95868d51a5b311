"""Host-side datasets and batches: scikit-learn digits, .npz arrays, the fetched CIFAR-10/100
and Tiny-ImageNet (`lpd_jax.datasets`), TFDS.

Images are NHWC with pixels in [0, 1] (the paper's scale); uint8 sources stay uint8
in memory and in training batches (scaled on the device: `input_pipeline`). No download
ever happens here: a dataset that is not on disk raises one `DataError` giving the command
that fetches it.
"""

import dataclasses
import os
import zipfile

import numpy as np
from tqdm.auto import tqdm

from lpd_jax import datasets
from lpd_jax.errors import DataError

__all__ = ['LOADERS', 'DataError', 'Dataset', 'load_dataset', 'train_batches', 'to_float']


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test arrays; images [N, H, W, c] (uint8 or float32 in [0, 1]), labels int32 [N].

  `source` names where the arrays came from (a file, a folder, a TFDS name) for messages;
  a loader may leave num_classes None for `validate` to settle.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  source: str = ''

  @property
  def input_shape(self):
    return tuple(self.train_images.shape[1:])


def to_float(images):
  """uint8 [0, 255] or float [0, 1] images -> float32 [0, 1] (NumPy arrays, or JAX arrays
  inside the training step: `input_pipeline.device_batch`)."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images.astype(np.float32)


def _digits(config):
  """scikit-learn's bundled 8x8 digits, pixels / 16, a seeded 80/20 split (config.split_seed)."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]  # [1797, 8, 8, 1]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(config.split_seed).permutation(len(labels))
  n_train = int(round(0.8 * len(labels)))
  tr, te = order[:n_train], order[n_train:]
  return Dataset('digits', images[tr], labels[tr], images[te], labels[te], 10)


def _npz(config):
  """Arrays train_images, train_labels, test_images, test_labels of config.npz_path."""
  path = config.npz_path
  if not path or not os.path.isfile(path):
    raise DataError(
      f"dataset 'npz': no file at npz_path={path!r}. Give --config.npz_path=FILE.npz "
      'holding train_images, train_labels, test_images, test_labels '
      '(configs/cifar10_subset.py builds the CIFAR-10 subset of docs/results.md from the '
      'fetched CIFAR-10: python -m configs.cifar10_subset).'
    )
  try:
    with np.load(path) as f:
      missing = {'train_images', 'train_labels', 'test_images', 'test_labels'} - set(f.files)
      if missing:
        raise DataError(f'{path} lacks arrays {sorted(missing)}')
      arrays = {k: f[k] for k in ('train_images', 'train_labels', 'test_images', 'test_labels')}
      # C: the file's label_names if it has them, else config.num_classes or the labels' max + 1.
      num_classes = len(f['label_names']) if 'label_names' in f.files else None
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # not an npz of arrays
    with open(path, 'rb') as f:
      zip_magic = f.read(4) == b'PK\x03\x04'
    # numpy calls any file that is not an .npy/.npz one "pickled data": say what it is.
    reason = str(e).splitlines()[0].split('. ')[0] if zip_magic else 'not a zip archive at all'
    raise DataError(
      f'{path} is not an .npz archive of arrays (np.savez writes one; this file: {reason})'
    ) from None
  for k in ('train_images', 'test_images'):
    if arrays[k].ndim == 3:
      arrays[k] = arrays[k][..., None]
  return Dataset(
    'npz',
    arrays['train_images'],
    arrays['train_labels'],
    arrays['test_images'],
    arrays['test_labels'],
    num_classes,
    source=path,
  )


def canonical_order(ids):
  """Record ids like b'test_00042' -> the permutation sorting them by their number.

  Natural order (the number, not its digits as text), so 'test_9' < 'test_10' whether or
  not the ids are zero-padded; ids without a trailing number sort as text after them.
  """

  def key(record_id):
    text = record_id.decode() if isinstance(record_id, bytes) else str(record_id)
    stem, _, number = text.rpartition('_')
    return (0, stem, int(number), '') if number.isdigit() else (1, '', 0, text)

  return sorted(range(len(ids)), key=lambda i: key(ids[i]))


def _tfds_split(name, split, data_dir):
  import tensorflow_datasets as tfds

  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # TFDS raises several types for "not prepared"
    where = data_dir or '~/tensorflow_datasets (the TFDS default)'
    raise DataError(
      f'dataset {name!r} is not prepared for TFDS in data_dir {where} '
      f'(TFDS said: {type(e).__name__}). Either read it without TFDS: drop '
      f"--config.data_source='tfds' and run python -m lpd_jax.datasets fetch {name}; or, "
      f'where TensorFlow is installed (tfds build needs it), run tfds build {name} '
      f'--file_format=array_record{" --data_dir=" + data_dir if data_dir else ""} '
      '(random access needs array_record, not tfrecord)'
    ) from None
  examples = [source[i] for i in tqdm(range(len(source)), desc=f'{name}:{split}', leave=False)]
  if examples and 'id' in examples[0]:
    # TFDS shuffles records when it prepares a dataset; the `id` feature (e.g. 'test_00042')
    # restores the canonical order, so "the first N test images" are the paper's.
    examples = [examples[i] for i in canonical_order([ex['id'] for ex in examples])]
  images = np.stack([ex['image'] for ex in examples]).astype(np.uint8)
  labels = np.asarray([ex['label'] for ex in examples], np.int32)
  return images, labels


def _tfds(config):
  """CIFAR-10/100 from TFDS random-access data sources (config.data_source='tfds')."""
  name, data_dir = config.dataset, config.data_dir
  train = _tfds_split(name, 'train', data_dir)
  test = _tfds_split(name, 'test', data_dir)
  where = f'TFDS {name} in {data_dir or "~/tensorflow_datasets"}'
  return Dataset(name, *train, *test, {'cifar10': 10, 'cifar100': 100}[name], source=where)


def _fetched(config):
  """CIFAR-10/100 and Tiny-ImageNet as `python -m lpd_jax.datasets fetch` converted them
  into config.data_dir ('' = `datasets.default_data_dir()`): memory-mapped uint8 images,
  verified against their manifest. config.data_source='tfds' reads TFDS's instead."""
  if config.get('data_source', 'fetched') == 'tfds':
    return _tfds(config)
  data_dir = config.data_dir or datasets.default_data_dir()
  arrays, manifest = datasets.load(config.dataset, data_dir)
  return Dataset(
    config.dataset,
    arrays['train_images'],
    arrays['train_labels'],
    arrays['test_images'],
    arrays['test_labels'],
    len(manifest['class_names']),
    source=os.path.join(data_dir, config.dataset),
  )


# config.dataset -> loader(config) -> Dataset. Adding a dataset is a loader and one line.
LOADERS = {
  'digits': _digits,
  'npz': _npz,
  'cifar10': _fetched,
  'cifar100': _fetched,
  'tiny_imagenet': _fetched,
}


def load_dataset(config):
  """config.dataset -> validated Dataset. DataError when it is not on disk or malformed."""
  if config.dataset not in LOADERS:
    raise DataError(f'unknown dataset {config.dataset!r}; choose one of {", ".join(LOADERS)}')
  return validate(LOADERS[config.dataset](config), config.get('num_classes', 0))


def _first(mask):
  return int(np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))[0])


def _check_split(where, split, images, labels):
  """One split's arrays: shapes, dtypes, finite pixels in [0, 1] (DataError otherwise)."""
  if images.ndim != 4:
    raise DataError(
      f'{where}: {split}_images has shape {images.shape}; expected '
      '[N, height, width, channels] (or [N, height, width])'
    )
  if labels.ndim != 1 or len(labels) != len(images):
    raise DataError(
      f'{where}: {split}_labels has shape {labels.shape} but {split}_images '
      f'holds {len(images)} images; expected one label per image'
    )
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(
      f'{where}: {split}_labels has dtype {labels.dtype}; labels must be '
      'integers 0..C-1 (store them as an integer array)'
    )
  if images.dtype == np.uint8:
    return
  if not np.issubdtype(images.dtype, np.floating):
    raise DataError(
      f'{where}: {split}_images has dtype {images.dtype}; use uint8 0..255 or float in [0, 1]'
    )
  if not np.isfinite(images).all():
    raise DataError(
      f'{where}: {split}_images[{_first(~np.isfinite(images))}] is not finite (NaN or Inf)'
    )
  if images.max() > 1 or images.min() < 0:
    i = _first((images > 1) | (images < 0))
    hint = (
      ' Pixels look like 0..255: divide by 255, or store them as uint8.' if images.max() > 1 else ''
    )
    raise DataError(
      f'{where}: {split}_images[{i}] has values in [{images[i].min():g}, '
      f'{images[i].max():g}]; float pixels must be in [0, 1].{hint}'
    )


def _check_labels(where, split, labels, classes):
  bad = (labels < 0) | (labels >= classes)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise DataError(
      f'{where}: {split}_labels[{i}] = {labels[i]} is outside 0..{classes - 1} ({classes} classes)'
    )


def validate(ds, num_classes=0):
  """Checks a loaded Dataset; -> the same data with int32 labels and num_classes settled.

  Every loader's output goes through here: images [N, H, W, c] of one shape, uint8 0..255
  or float in [0, 1] (finite); integer labels in 0..C-1; as many labels as images. C is
  `num_classes` if > 0, else the loader's (TFDS, Tiny-ImageNet, an npz's label_names),
  else the labels' max + 1. One DataError names the source, the array and the first
  offending index.
  """
  where = ds.source or ds.name
  for split in ('train', 'test'):
    _check_split(where, split, getattr(ds, f'{split}_images'), getattr(ds, f'{split}_labels'))
  if ds.train_images.shape[1:] != ds.test_images.shape[1:]:
    raise DataError(
      f'{where}: train images are {ds.train_images.shape[1:]} but test images are '
      f'{ds.test_images.shape[1:]}; they must have one shape'
    )
  largest = max(int(a.max()) if len(a) else -1 for a in (ds.train_labels, ds.test_labels))
  classes = num_classes if num_classes and num_classes > 0 else (ds.num_classes or largest + 1)
  for split in ('train', 'test'):
    _check_labels(where, split, getattr(ds, f'{split}_labels'), classes)
  return dataclasses.replace(
    ds,
    train_labels=ds.train_labels.astype(np.int32),
    test_labels=ds.test_labels.astype(np.int32),
    num_classes=classes,
  )


def train_batches(ds, batch_size, *, seed, epoch):
  """Yields (x [B, H, W, c] as stored: uint8 or float32, y int32 [B]) for one epoch; drops
  the last partial batch.

  The order depends only on (seed, epoch), so a resumed run sees exactly the batches an
  uninterrupted one would. Scaling to float and the augmentation happen on the device, in
  the training step (`input_pipeline.device_batch`).
  """
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(len(ds.train_labels))
  for i in range(len(order) // batch_size):
    idx = order[i * batch_size : (i + 1) * batch_size]
    yield ds.train_images[idx], ds.train_labels[idx]


def num_train_steps(ds, batch_size):
  return len(ds.train_labels) // batch_size
