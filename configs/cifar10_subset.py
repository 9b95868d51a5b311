"""Any method on a real CIFAR-10 subset (5,085 train, 500 test images): the data of docs/results.md.

A small-scale real-image run (CPU: use a narrow width; GPU: the paper's width 64).
python train.py --config=configs/cifar10_subset.py --workdir=workdirs/cifar10_subset
python train.py --config=configs/cifar10_subset.py --workdir=workdirs/cifar10_subset_w64 \
    --config.width=64
Other methods (configs/_variants.py): --config=configs/cifar10_subset.py:deg, :trs, :lpd,advt_pgd
(adversarial training at eps 8/255, 7 PGD steps of 2/255).

The subset: CIFAR-10's own images and labels (Krizhevsky 2009), the first 1,017 images of each
of its five training batches (data_batch_1 to data_batch_5, in that order: 5,085 train images)
and the first 500 of its test batch, in one .npz: train_images [5085, 32, 32, 3] and
test_images [500, 32, 32, 3] uint8 (HWC, RGB), train_labels and test_labels uint8 0..9,
label_names [10] str. Build it once from the full CIFAR-10:

python -m lpd_jax.datasets fetch cifar10   # into DATA_DIR/cifar10/, the archive's order
python -m configs.cifar10_subset           # writes DATA_DIR/cifar10_subset.npz

(DATA_DIR: $LPD_JAX_DATA_DIR, else ~/lpd_jax_data; `python -m configs.cifar10_subset DATA_DIR
[OUT.npz]` for others; from Python, `build_subset(data_dir, out_path)`.) The fetched training
arrays hold the five batches one after the other, 10,000 images each, so the subset's train
rows are b * 10,000 + i for b < 5, i < 1,017 (`subset_indices`). The command checks what it
wrote against the SHA-256 digests of the arrays behind docs/results.md (`DIGESTS`) and names
any array that differs. The config reads DATA_DIR/cifar10_subset.npz; where that file is not
there but a checkout has the project's shared copy beside it (../shared/data/cifar10_subset.npz
on the project's own machines, the same arrays), it reads that copy. Another copy:
--config.npz_path=PATH.
"""

import hashlib
import os
import sys

import numpy as np

from configs import _variants as variants
from lpd_jax import cli, datasets
from lpd_jax.config import base_config

FILE = 'cifar10_subset.npz'
SHARED_COPY = os.path.normpath(
  os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data', FILE)
)
BATCHES, BATCH_SIZE = 5, 10_000  # CIFAR-10's training batches, in the fetched arrays' order
TRAIN_PER_BATCH, NUM_TEST = 1_017, 500
# SHA-256 of each array's bytes (C order) in the subset behind docs/results.md.
DIGESTS = {
  'train_images': '8dcfa5d1197a1cd9d8d5e5b3eda9900c52b6cb49415c20f9c8ddf8649bbaf9eb',
  'train_labels': 'e97344ddfbb4871d3b6fa8e56f480e8e0c20595df8a53567db76b7e6168f9de8',
  'test_images': '8f2427926825821b6e0de483aa537ca1419ff2a5b82cc5e436d5dfc50e85cc7a',
  'test_labels': 'bbe0434d8a802d526f50804695a856046b325584d14495246771129e328f248d',
  'label_names': '0cd4e425527caa80530bc5c762cd5a696c8e31782e3984fe3cedcf5c4e5ac572',
}


def subset_indices():
  """The rows of CIFAR-10's fetched train arrays that form the subset's train split: [5085]."""
  return np.concatenate([b * BATCH_SIZE + np.arange(TRAIN_PER_BATCH) for b in range(BATCHES)])


def subset_arrays(train_images, train_labels, test_images, test_labels, class_names):
  """The subset's arrays (in the .npz's order) from CIFAR-10's in the archive's order."""
  rows = subset_indices()
  return {
    'train_images': np.asarray(train_images[rows], np.uint8),
    'train_labels': np.asarray(train_labels[rows], np.uint8),
    'test_images': np.asarray(test_images[:NUM_TEST], np.uint8),
    'test_labels': np.asarray(test_labels[:NUM_TEST], np.uint8),
    'label_names': np.asarray([str(n) for n in class_names]),
  }


def digest(array):
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def build_subset(data_dir='', out_path=''):
  """Writes the subset from the CIFAR-10 that `python -m lpd_jax.datasets fetch cifar10`
  converted into data_dir ('' = `datasets.default_data_dir()`).

  Returns:
    (out_path, the names of the arrays whose digest differs from `DIGESTS`: [] when the file
    holds the arrays of docs/results.md). out_path defaults to DATA_DIR/cifar10_subset.npz.
  """
  data_dir = data_dir or datasets.default_data_dir()
  out_path = out_path or os.path.join(data_dir, FILE)
  arrays, manifest = datasets.load('cifar10', data_dir)
  subset = subset_arrays(
    arrays['train_images'],
    arrays['train_labels'],
    arrays['test_images'],
    arrays['test_labels'],
    manifest['class_names'],
  )
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  partial = f'{out_path}.partial-{os.getpid()}.npz'
  np.savez_compressed(partial, **subset)
  os.replace(partial, out_path)
  return out_path, [k for k, a in subset.items() if digest(a) != DIGESTS[k]]


def default_npz_path():
  """DATA_DIR/cifar10_subset.npz, or the shared copy where only that one is there."""
  built = os.path.join(datasets.default_data_dir(), FILE)
  return SHARED_COPY if not os.path.isfile(built) and os.path.isfile(SHARED_COPY) else built


def get_config(spec='lpd'):
  config = base_config()
  config.dataset = 'npz'
  config.npz_path = default_npz_path()
  config.augment = True
  config.width = 16
  config.num_epochs = 30
  return variants.apply(config, spec)


def main(argv):
  """python -m configs.cifar10_subset [DATA_DIR [OUT.npz]]: `build_subset`, reported."""
  if len(argv) > 2:
    sys.exit('usage: python -m configs.cifar10_subset [DATA_DIR [OUT.npz]]')
  path, differ = cli.run_reporting_user_errors(build_subset, *argv)
  if differ:
    print(
      f'warning: wrote {path}, but {", ".join(differ)} differ from the subset of docs/results.md'
    )
    sys.exit(1)
  print(f'wrote {path}: every array is the one of docs/results.md')


if __name__ == '__main__':
  main(sys.argv[1:])
