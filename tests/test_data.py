"""Datasets (digits, npz, TFDS mocks, a generated Tiny-ImageNet folder) and host batching."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import tiny_config

from lpd_jax import data, input_pipeline, predict

SHARED_SUBSET = os.path.join(
  os.path.dirname(__file__), '..', '..', 'shared', 'data', 'cifar10_subset.npz'
)


def test_digits_is_a_seeded_80_20_split_in_unit_range():
  ds = data.load_dataset(tiny_config())
  assert ds.train_images.shape == (1438, 8, 8, 1) and ds.test_images.shape == (359, 8, 8, 1)
  assert ds.num_classes == 10 and ds.input_shape == (8, 8, 1)
  assert ds.train_images.min() >= 0 and ds.train_images.max() == 1.0
  again = data.load_dataset(tiny_config())
  np.testing.assert_array_equal(ds.test_labels, again.test_labels)
  other = data.load_dataset(tiny_config(split_seed=1))
  assert not np.array_equal(ds.test_labels, other.test_labels)
  # The two halves partition the 1,797 images: per-class counts add up to the whole set.
  from sklearn.datasets import load_digits

  whole = np.bincount(load_digits().target, minlength=10)
  np.testing.assert_array_equal(
    np.bincount(ds.train_labels, minlength=10) + np.bincount(ds.test_labels, minlength=10), whole
  )


@pytest.mark.skipif(not os.path.isfile(SHARED_SUBSET), reason='shared CIFAR-10 subset not beside')
def test_npz_loads_the_shared_cifar10_subset():
  ds = data.load_dataset(tiny_config(dataset='npz', npz_path=SHARED_SUBSET))
  assert ds.train_images.shape == (5085, 32, 32, 3) and ds.test_images.shape == (500, 32, 32, 3)
  assert ds.train_images.dtype == np.uint8 and ds.num_classes == 10
  _, x, y, n = next(predict.padded_batches(ds.test_images, ds.test_labels, 64))
  assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.9 and n == 64


def test_npz_missing_file_and_missing_arrays_are_clear_errors(tmp_path):
  with pytest.raises(data.DataError, match='no file at npz_path'):
    data.load_dataset(tiny_config(dataset='npz', npz_path=str(tmp_path / 'nope.npz')))
  bad = tmp_path / 'bad.npz'
  np.savez(bad, train_images=np.zeros((2, 4, 4, 1)))
  with pytest.raises(data.DataError, match='lacks arrays'):
    data.load_dataset(tiny_config(dataset='npz', npz_path=str(bad)))


@pytest.mark.parametrize('name, classes', [('cifar10', 10), ('cifar100', 100)])
def test_tfds_datasets_through_mock_data(name, classes):
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset(tiny_config(dataset=name, data_source='tfds'))
  assert ds.train_images.shape == (12, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (12, 32, 32, 3) and ds.num_classes == classes
  assert ds.train_labels.dtype == np.int32 and ds.train_labels.max() < classes


def test_tfds_test_records_are_put_in_their_canonical_id_order():
  """TFDS shuffles records when it prepares CIFAR; "the first N test images" follow `id`."""
  assert data.canonical_order([b'test_10', b'test_9', b'test_00000', 'test_2']) == [2, 3, 1, 0]
  assert data.canonical_order(['b', 'test_1', 'a']) == [1, 2, 0]  # numbered first, then text
  with tfds.testing.mock_data(num_examples=12):
    source = tfds.data_source('cifar10', split='test')
    records = [source[i] for i in range(len(source))]
    ds = data.load_dataset(tiny_config(dataset='cifar10', data_source='tfds'))
  order = data.canonical_order([r['id'] for r in records])
  assert order != list(range(12))  # the mock's ids are not already sorted
  np.testing.assert_array_equal(ds.test_images, np.stack([records[i]['image'] for i in order]))
  np.testing.assert_array_equal(ds.test_labels, [records[i]['label'] for i in order])


def test_tfds_dataset_not_on_disk_names_dataset_dir_and_the_fix(tmp_path):
  with pytest.raises(data.DataError) as err:
    data.load_dataset(tiny_config(dataset='cifar100', data_dir=str(tmp_path), data_source='tfds'))
  message = str(err.value)
  assert "'cifar100'" in message and str(tmp_path) in message and '\n' not in message
  assert 'tfds build cifar100 --file_format=array_record' in message
  assert 'tfds build needs it' in message  # TensorFlow, which lpd-jax never installs
  assert 'python -m lpd_jax.datasets fetch cifar100' in message  # the way without it
  assert not any(tmp_path.iterdir()) or not (tmp_path / 'downloads').exists()  # never downloads


def test_device_crop_and_flip_equals_a_numpy_loop_over_pad_crop_flip():
  images = np.random.default_rng(0).integers(0, 255, (64, 6, 5, 3)).astype(np.uint8)
  key = jax.random.key(7)
  out = np.asarray(jax.jit(input_pipeline.crop_and_flip, static_argnums=2)(key, images, 2))
  assert out.dtype == np.uint8
  offsets, flip = map(np.asarray, input_pipeline.draw_crops(key, 64, 2))
  for i in range(64):
    padded = np.pad(images[i], ((2, 2), (2, 2), (0, 0)))
    crop = padded[offsets[i, 0] : offsets[i, 0] + 6, offsets[i, 1] : offsets[i, 1] + 5]
    np.testing.assert_array_equal(out[i], crop[:, ::-1] if flip[i] else crop)
  # Every offset 0..2*pad and both flips occur; a few draws land on padding (zeros).
  assert set(offsets.ravel()) == set(range(5)) and 0 < flip.sum() < 64


def test_device_batch_scales_uint8_and_augments_from_the_step_key():
  images = np.random.default_rng(0).integers(0, 256, (8, 4, 4, 3)).astype(np.uint8)
  key = jax.random.key(3)
  plain = np.asarray(input_pipeline.device_batch(images, key, augment=False))
  np.testing.assert_allclose(plain, images.astype(np.float32) / 255, rtol=1e-6)
  floats = np.asarray(input_pipeline.device_batch(plain, key, augment=False))
  np.testing.assert_array_equal(floats, plain)  # float data passes through
  augmented = np.asarray(input_pipeline.device_batch(images, key, augment=True))
  again = np.asarray(input_pipeline.device_batch(images, key, augment=True))
  np.testing.assert_array_equal(augmented, again)  # the step key decides: resumable
  expected = input_pipeline.crop_and_flip(
    jax.random.fold_in(key, input_pipeline.AUGMENT_STREAM), images
  )
  np.testing.assert_allclose(augmented, np.asarray(expected).astype(np.float32) / 255, rtol=1e-6)
  other = np.asarray(input_pipeline.device_batch(images, jax.random.key(4), augment=True))
  assert not np.array_equal(augmented, other)


def test_prefetch_yields_the_batches_in_order_on_the_device_and_raises_their_errors():
  batches = [(np.full((2, 3), i, np.uint8), np.full((2,), i, np.int32)) for i in range(5)]
  got = list(input_pipeline.prefetch(iter(batches)))
  assert [int(y[0]) for _, y in got] == list(range(5))
  assert all(isinstance(x, jax.Array) and x.dtype == jnp.uint8 for x, _ in got)

  def failing():
    yield batches[0]
    raise data.DataError('disk went away')

  stream = input_pipeline.prefetch(failing())
  assert int(next(stream)[1][0]) == 0
  with pytest.raises(data.DataError, match='disk went away'):
    next(stream)
  endless = input_pipeline.prefetch(iter(lambda: batches[0], None), size=1)
  next(endless)
  endless.close()  # the thread stops instead of filling a queue forever


def test_train_batches_depend_only_on_seed_and_epoch():
  ds = data.load_dataset(tiny_config())
  first = [y for _, y in data.train_batches(ds, 64, seed=0, epoch=3)]
  again = [y for _, y in data.train_batches(ds, 64, seed=0, epoch=3)]
  other = [y for _, y in data.train_batches(ds, 64, seed=0, epoch=4)]
  assert len(first) == data.num_train_steps(ds, 64) == 1438 // 64
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
  assert not np.array_equal(np.concatenate(first), np.concatenate(other))


def test_padded_batches_pad_to_a_fixed_shape_and_report_valid_rows():
  images = np.arange(10 * 2 * 2 * 1, dtype=np.float32).reshape(10, 2, 2, 1) / 40
  labels = np.arange(10, dtype=np.int32)
  batches = list(predict.padded_batches(images, labels, 4))
  assert [(start, n) for start, _, _, n in batches] == [(0, 4), (4, 4), (8, 2)]
  assert all(x.shape == (4, 2, 2, 1) for _, x, _, _ in batches)
  np.testing.assert_array_equal(np.concatenate([y[:n] for _, _, y, n in batches]), labels)
  np.testing.assert_array_equal(batches[-1][1][2:], 0.0)  # zero padding
  first = next(predict.padded_batches(images.astype(np.float64), labels, 4))
  assert first[1].dtype == np.float64  # float64 probes stay float64
