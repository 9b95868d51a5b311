"""PDD on CIFAR10 (priority diversified dropout masks; DEG comes with its own issue).

python train.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10
python eval.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10
"""

from configs import lpd_cifar10


def get_config():
  config = lpd_cifar10.get_config()
  config.method = 'pdd'
  return config
