"""LPD ensemble of K = 3 ResNet-18s (width 64) on CIFAR-10, the paper's Table 4 setting.

Needs CIFAR-10 fetched once: python -m lpd_jax.datasets fetch cifar10 (README, "Data").
python train.py --config=configs/lpd_cifar10.py --workdir=workdirs/lpd_cifar10
python eval.py --config=configs/lpd_cifar10.py --workdir=workdirs/lpd_cifar10

The same as --config=configs/cifar10.py:lpd (the dataset file holds the settings).
"""

from configs import cifar10


def get_config():
  return cifar10.get_config('lpd')
