"""LPD ensemble of K = 3 ResNet-18s (width 64) on Tiny-ImageNet (64x64, 200 classes), 100 epochs.

Needs the unzipped tiny-imagenet-200 folder under data_dir (see README, "Data").
python train.py --config=configs/lpd_tinyimagenet.py --workdir=workdirs/lpd_tiny \
    --config.data_dir=/path/holding/tiny-imagenet-200
"""

from lpd_jax.config import base_config


def get_config():
  config = base_config()
  config.dataset = 'tiny_imagenet'
  config.augment = True
  config.method = 'lpd'
  config.num_epochs = 100
  config.eval.paper.pgd_eps = (0.01, 0.02)  # the paper's Tiny-ImageNet grid (Table 4)
  return config
