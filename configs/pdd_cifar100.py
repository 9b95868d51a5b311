"""PDD (priority diversified dropout masks; the DEG term comes with its own issue) on CIFAR100: the comparison run for configs/lpd_cifar100.py.

python train.py --config=configs/pdd_cifar100.py --workdir=workdirs/pdd_cifar100
python eval.py --config=configs/pdd_cifar100.py --workdir=workdirs/pdd_cifar100
"""

from configs import lpd_cifar100


def get_config():
  config = lpd_cifar100.get_config()
  config.method = 'pdd'
  return config
