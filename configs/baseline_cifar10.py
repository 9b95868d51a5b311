"""Baseline on CIFAR10 (independent members, no dropout): the comparison run for lpd_cifar10.py.

python train.py --config=configs/baseline_cifar10.py --workdir=workdirs/baseline_cifar10
python eval.py --config=configs/baseline_cifar10.py --workdir=workdirs/baseline_cifar10

The same as --config=configs/cifar10.py:baseline (the dataset file holds the settings).
"""

from configs import cifar10


def get_config():
  return cifar10.get_config('baseline')
