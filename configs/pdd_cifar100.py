"""PDD masks without DEG on CIFAR100, "PDD (no DEG)" (the paper's "PDD": configs/cifar100.py:deg).

python train.py --config=configs/pdd_cifar100.py --workdir=workdirs/pdd_cifar100
python eval.py --config=configs/pdd_cifar100.py --workdir=workdirs/pdd_cifar100

The same as --config=configs/cifar100.py:pdd (the dataset file holds the settings).
"""

from configs import cifar100


def get_config():
  return cifar100.get_config('pdd')
