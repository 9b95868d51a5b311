"""PDD masks without DEG on CIFAR10, "PDD (no DEG)" (the paper's "PDD" is configs/cifar10.py:deg).

python train.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10
python eval.py --config=configs/pdd_cifar10.py --workdir=workdirs/pdd_cifar10

The same as --config=configs/cifar10.py:pdd (the dataset file holds the settings).
"""

from configs import cifar10


def get_config():
  return cifar10.get_config('pdd')
