"""LPD ensemble of K = 3 ResNet-18s (width 64) on CIFAR-10, the paper's Table 4 setting.

Needs CIFAR-10 prepared for TFDS in array_record format (see README, "Data").
python train.py --config=configs/lpd_cifar10.py --workdir=workdirs/lpd_cifar10
python eval.py --config=configs/lpd_cifar10.py --workdir=workdirs/lpd_cifar10
"""

from lpd_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset = 'cifar10'
  config.augment = True
  config.method = 'lpd'
  config.num_epochs = 150
  return config
