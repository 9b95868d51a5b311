"""PDD masks without DEG on CIFAR10 ("PDD (no DEG)" in reports; DEG comes with its own issue).

python train.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10
python eval.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10
"""

from configs import lpd_cifar10


def get_config():
  config = lpd_cifar10.get_config()
  config.method = 'pdd'
  return config
