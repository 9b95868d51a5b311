"""Any method on Tiny-ImageNet (64x64, 200 classes), K = 3 ResNet-18s (width 64), 100 epochs.

Needs Tiny-ImageNet fetched once: python -m lpd_jax.datasets fetch tiny_imagenet (README, "Data").
python train.py --config=configs/tinyimagenet.py:deg --workdir=workdirs/deg_tiny
Variants as configs/cifar10.py (configs/_variants.py).
"""

from configs import _variants as variants
from lpd_jax.config import base_config


def get_config(spec='lpd'):
  config = base_config()
  config.dataset = 'tiny_imagenet'
  config.augment = True
  config.num_epochs = 100
  # BIM, PGD and the strong attacks run at the paper's Tiny-ImageNet grid, eps 0.01 and 0.02
  # (Table 4): their own grid for this dataset (lpd_jax.attacks.LINF_GRIDS).
  return variants.apply(config, spec)
