"""White-box attacks of the paper (section 5) and black-box transfer.

Every attack is `attack(model_fn, x, y, *, key=None, **params) -> x_adv`, with
`model_fn(x) -> [B, C]` log-probabilities, x [B, ...] in [0, 1] and y int labels [B];
x_adv lies in [0, 1] (and in the attack's norm ball). See METHODS.md "Attacks".
"""

from lpd_jax.attacks.common import as_partial
from lpd_jax.attacks.cw import cw_l2
from lpd_jax.attacks.gradient import bim, fgsm, pgd
from lpd_jax.attacks.saliency_map import jsma, random_targets
from lpd_jax.attacks.transfer import transfer_accuracy

__all__ = [
  'as_partial', 'bim', 'cw_l2', 'fgsm', 'jsma', 'pgd', 'random_targets', 'transfer_accuracy',
]
