"""LPD ensemble of K = 3 ResNet-18s (width 64) on Tiny-ImageNet (64x64, 200 classes), 100 epochs.

Needs the unzipped tiny-imagenet-200 folder under data_dir (see README, "Data").
python train.py --config=configs/lpd_tinyimagenet.py --workdir=workdirs/lpd_tiny \
    --config.data_dir=/path/holding/tiny-imagenet-200

The same as --config=configs/tinyimagenet.py:lpd (the dataset file holds the settings).
"""

from configs import tinyimagenet


def get_config():
  return tinyimagenet.get_config('lpd')
