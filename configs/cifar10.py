"""Any method on CIFAR-10, K = 3 ResNet-18s (width 64), 150 epochs: the paper's Table 4 setting.

Needs CIFAR-10 fetched once: python -m lpd_jax.datasets fetch cifar10 (README, "Data").
python train.py --config=configs/cifar10.py:deg --workdir=workdirs/deg_cifar10
python eval.py --workdir=workdirs/deg_cifar10 --config.eval.suite=paper
Variants (configs/_variants.py): :baseline :lpd :pdd :deg :adp :gal :trs, then ,k5 and
,advt_fgsm or ,advt_pgd, e.g. :lpd,k5.
"""

from configs import _variants as variants
from lpd_jax.config import base_config


def get_config(spec='lpd'):
  config = base_config()
  config.dataset = 'cifar10'
  config.augment = True
  config.num_epochs = 150
  return variants.apply(config, spec)
