"""PDD masks without DEG on CIFAR100 ("PDD (no DEG)" in reports; DEG comes with its own issue).

python train.py --config=configs/pdd_cifar100.py --workdir=workdirs/pdd_cifar100
python eval.py --config=configs/pdd_cifar100.py --workdir=workdirs/pdd_cifar100
"""

from configs import lpd_cifar100


def get_config():
  config = lpd_cifar100.get_config()
  config.method = 'pdd'
  return config
