"""Baseline on CIFAR100 (independent members, no dropout): the comparison run for lpd_cifar100.py.

python train.py --config=configs/baseline_cifar100.py --workdir=workdirs/baseline_cifar100
python eval.py --config=configs/baseline_cifar100.py --workdir=workdirs/baseline_cifar100

The same as --config=configs/cifar100.py:baseline (the dataset file holds the settings).
"""

from configs import cifar100


def get_config():
  return cifar100.get_config('baseline')
