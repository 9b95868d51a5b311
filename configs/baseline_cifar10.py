"""Baseline on CIFAR10 (independent members, no dropout): the comparison run for lpd_cifar10.py.

python train.py --config=configs/baseline_cifar10.py --workdir=workdirs/baseline_cifar10
python eval.py --config=configs/baseline_cifar10.py --workdir=workdirs/baseline_cifar10
"""

from configs import lpd_cifar10


def get_config():
  config = lpd_cifar10.get_config()
  config.method = 'baseline'
  return config
