"""PDD (priority diversified dropout masks; the DEG term comes with its own issue) on CIFAR10: the comparison run for configs/lpd_cifar10.py.

python train.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10
python eval.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10
"""

from configs import lpd_cifar10


def get_config():
  config = lpd_cifar10.get_config()
  config.method = 'pdd'
  return config
