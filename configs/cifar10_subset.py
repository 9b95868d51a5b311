"""Any method on the real CIFAR-10 subset shipped in ../shared/data (5,085 train, 500 test images).

A small-scale real-image run (CPU: use a narrow width; GPU: the paper's width 64).
python train.py --config=configs/cifar10_subset.py --workdir=workdirs/cifar10_subset
python train.py --config=configs/cifar10_subset.py --workdir=workdirs/cifar10_subset_w64 \
    --config.width=64
Another copy of the arrays: --config.npz_path=PATH.
Other methods (configs/_variants.py): --config=configs/cifar10_subset.py:deg, :trs, :lpd,advt_pgd
(adversarial training at eps 8/255, 7 PGD steps of 2/255).
"""

import os

from configs import _variants as variants
from lpd_jax.config import base_config

SUBSET = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data', 'cifar10_subset.npz'
)


def get_config(spec='lpd'):
  config = base_config()
  config.dataset = 'npz'
  config.npz_path = os.path.normpath(SUBSET)
  config.augment = True
  config.width = 16
  config.num_epochs = 30
  return variants.apply(config, spec)
