"""White-box attacks of the paper (section 5) and black-box transfer.

Every attack is `attack(model_fn, x, y, *, key=None, **params) -> x_adv`, with
`model_fn(x) -> [B, C]` log-probabilities, x [B, ...] in [0, 1] and y int labels [B];
x_adv lies in [0, 1] (and in the attack's norm ball). See METHODS.md "Attacks".

`REGISTRY` (name -> `Attack`) is the catalogue the suites and the config validation
read: adding an attack is one module here plus one line below.
"""

from typing import Callable, NamedTuple

from lpd_jax.attacks.autopgd import apgd
from lpd_jax.attacks.common import as_partial
from lpd_jax.attacks.cw import cw_l2
from lpd_jax.attacks.eot import eot
from lpd_jax.attacks.gradient import bim, fgsm, pgd
from lpd_jax.attacks.saliency_map import jsma, random_targets
from lpd_jax.attacks.square_attack import square
from lpd_jax.attacks.transfer import transfer_accuracy


class Attack(NamedTuple):
  """A registered attack.

  Attributes:
    name: the config name (e.g. 'cw').
    label: the row label of the paper's tables (e.g. 'C&W').
    fn: `fn(model_fn, x, y, *, key=None, **params) -> x_adv`.
  """

  name: str
  label: str
  fn: Callable


REGISTRY = {
  a.name: a
  for a in (
    Attack('fgsm', 'FGSM', fgsm),
    Attack('bim', 'BIM', bim),
    Attack('pgd', 'PGD', pgd),
    Attack('jsma', 'JSMA', jsma),
    Attack('cw', 'C&W', cw_l2),
    Attack('apgd', 'APGD', apgd),
    Attack('square', 'Square', square),
  )
}

__all__ = [
  'REGISTRY',
  'Attack',
  'apgd',
  'as_partial',
  'bim',
  'cw_l2',
  'eot',
  'fgsm',
  'jsma',
  'pgd',
  'random_targets',
  'square',
  'transfer_accuracy',
]
