"""Any method on CIFAR-100, K = 3 ResNet-18s (width 64), 150 epochs (docs/methods.md defaults).

Needs CIFAR-100 fetched once: python -m lpd_jax.datasets fetch cifar100 (README, "Data").
python train.py --config=configs/cifar100.py:adp --workdir=workdirs/adp_cifar100
Table 1 (K = 5): --config=configs/cifar100.py:deg,k5 (PDD masks with 20 bins).
Table 6 (adversarial training, eps 8/255, 7 PGD steps of 2/255): the six rows are
  :baseline,advt_fgsm  :pdd,advt_fgsm  :lpd,advt_fgsm
  :baseline,advt_pgd   :pdd,advt_pgd   :lpd,advt_pgd
(the paper's "+ PDD" rows: its PDD masks; use :deg,advt_pgd for masks plus DEG).
"""

from configs import _variants as variants
from lpd_jax.config import base_config


def get_config(spec='lpd'):
  config = base_config()
  config.dataset = 'cifar100'
  config.augment = True
  config.num_epochs = 150
  return variants.apply(config, spec)
