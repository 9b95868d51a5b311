"""LPD ensemble of K = 3 ResNet-18s (width 64) on CIFAR-100, 150 epochs (METHODS.md defaults).

Needs CIFAR-100 prepared for TFDS in array_record format (see README, "Data").
python train.py --config=configs/lpd_cifar100.py --workdir=workdirs/lpd_cifar100
python eval.py --config=configs/lpd_cifar100.py --workdir=workdirs/lpd_cifar100
K = 5 (Table 1): add --config.num_members=5
"""

from lpd_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset = 'cifar100'
  config.augment = True
  config.method = 'lpd'
  config.num_epochs = 150
  return config
