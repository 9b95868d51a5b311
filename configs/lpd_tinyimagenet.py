"""LPD ensemble of K = 3 ResNet-18s (width 64) on Tiny-ImageNet (64x64, 200 classes), 100 epochs.

Needs Tiny-ImageNet fetched once: python -m lpd_jax.datasets fetch tiny_imagenet (README, "Data").
python train.py --config=configs/lpd_tinyimagenet.py --workdir=workdirs/lpd_tiny

The same as --config=configs/tinyimagenet.py:lpd (the dataset file holds the settings).
"""

from configs import tinyimagenet


def get_config():
  return tinyimagenet.get_config('lpd')
