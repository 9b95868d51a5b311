"""Baseline on CIFAR100 (independent members, no dropout): the comparison run for lpd_cifar100.py.

python train.py --config=configs/baseline_cifar100.py --workdir=workdirs/baseline_cifar100
python eval.py --config=configs/baseline_cifar100.py --workdir=workdirs/baseline_cifar100
"""

from configs import lpd_cifar100


def get_config():
  config = lpd_cifar100.get_config()
  config.method = 'baseline'
  return config
