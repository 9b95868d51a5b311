"""The variant grammar shared by the dataset configs: `--config=configs/<dataset>.py:<spec>`.

spec = comma-separated tokens, the first a method of `lpd_jax.methods.REGISTRY`:
  baseline | lpd | pdd | deg | adp | gal | trs |  the method (deg = the paper's "PDD")
  dverge | graddiv
  k5                                               K = 5 members (Table 1); PDD/DEG masks
                                                   use 20 bins, as the PDD authors' code
  advt_fgsm | advt_pgd                             adversarial training (Table 6; the paper
                                                   suite then uses its FGSM eps 0.04, 0.08)
e.g. `--config=configs/cifar100.py:lpd,advt_pgd` is the paper's "AdvT_PGD + LPD".
"""

from lpd_jax import methods
from lpd_jax.names import split_names

ADVT = {'advt_fgsm': 'fgsm', 'advt_pgd': 'pgd'}


def apply(config, spec):
  """Sets config.method, num_members and adv_train from `spec`; returns the config."""
  tokens = list(split_names(spec))
  if tokens and tokens[0] in methods.REGISTRY:
    config.method = tokens.pop(0)
  for token in tokens:
    if token == 'k5':
      config.num_members = 5
      config.pdd.num_bins = 20
    elif token in ADVT:
      config.adv_train.attack = ADVT[token]
      config.eval.paper.fgsm.eps = (0.04, 0.08)  # Table 6's FGSM grid (PGD: 0.02, 0.04)
    else:
      raise ValueError(
        f'unknown config variant {token!r} in {spec!r}: the first token is a method '
        f'({", ".join(methods.REGISTRY)}), then k5, advt_fgsm or advt_pgd'
      )
  return config
