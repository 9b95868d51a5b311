"""LPD ensemble of K = 3 ResNet-18s (width 64) on CIFAR-100, 150 epochs (the default recipe).

The defaults and where they come from: docs/methods.md, "Training defaults" and "LPD keep rates".

Needs CIFAR-100 fetched once: python -m lpd_jax.datasets fetch cifar100 (README, "Data").
python train.py --config=configs/lpd_cifar100.py --workdir=workdirs/lpd_cifar100
python eval.py --config=configs/lpd_cifar100.py --workdir=workdirs/lpd_cifar100
K = 5 (Table 1): --config=configs/cifar100.py:lpd,k5

The same as --config=configs/cifar100.py:lpd (the dataset file holds the settings).
"""

from configs import cifar100


def get_config():
  return cifar100.get_config('lpd')
