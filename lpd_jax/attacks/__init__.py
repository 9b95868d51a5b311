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

# The paper's L-inf grid of BIM and PGD on CIFAR, and where a dataset's differs (Table 4).
LINF_GRID = (0.02, 0.04)
LINF_GRIDS = {'tiny_imagenet': (0.01, 0.02)}
THREATS = ('linf', 'l2', 'l0', 'minimal_l2')
TARGETS = ('ensemble', 'members')


class Attack(NamedTuple):
  """A registered attack, with its parameters as the paper (or RobustBench) ran it.

  Attributes:
    name: the config and report name ('pgd', 'apgd-t').
    label: the row label of the tables ('PGD').
    fn: `fn(model_fn, x, y, *, key=None, **params) -> x_adv`.
    param: the parameter a grid sweeps (the Para. column of Table 4): 'eps', 'gamma', 'c'.
    grid: its values as run on CIFAR; `grids` {dataset: values} where a dataset's differ.
    params: its other keyword arguments, as run; a suite's config group holds a copy
      (`config.eval.paper.<config_key(name)>`), so each is a setting.
    threat: what bounds the perturbation: 'linf' (an L-inf eps: the `robust` suite and
      its per-sample worst case take these), 'l2', 'l0' (JSMA's pixel budget) or
      'minimal_l2' (C&W: unbounded, minimal L2).
    target: what it attacks: 'ensemble' (`Ensemble.log_predict`, eq. 1) or 'members'
      (`Ensemble.member_logits`, [K, B, C]).
    grids: {dataset: grid} where a dataset's grid is not `grid`.
  """

  name: str
  label: str
  fn: Callable
  param: str = 'eps'
  grid: tuple = LINF_GRID
  params: dict = {}
  threat: str = 'linf'
  target: str = 'ensemble'
  grids: dict = {}

  def grid_for(self, dataset: str) -> tuple:
    """The attack's own grid of `param` for `dataset`."""
    return tuple(self.grids.get(dataset, self.grid))

  def settings(self) -> dict:
    """Its config group: the grid of `param` (() = its own grid for the run's dataset)
    and `params`."""
    return {self.param: (), **self.params}


def config_key(name: str) -> str:
  """An attack's name as a config field: 'apgd-t' -> 'apgd_t'."""
  return name.replace('-', '_')


def linf_grid(dataset: str) -> tuple:
  """The dataset's L-inf eps grid (the paper's BIM / PGD grid): the default of the suites
  that evaluate at L-inf eps (`robust`, `audit`)."""
  return tuple(LINF_GRIDS.get(dataset, LINF_GRID))


def bounded_by_eps(attack: Attack) -> bool:
  """Whether `attack` is an L-inf attack at a given eps (what `robust` and the worst case
  over attacks need)."""
  return attack.threat == 'linf' and attack.param == 'eps'


# fmt: off
REGISTRY = {
  a.name: a
  for a in (
    Attack('fgsm', 'FGSM', fgsm),
    Attack('bim', 'BIM', bim, params={'steps': 10}, grids=LINF_GRIDS),
    Attack('pgd', 'PGD', pgd, params={'steps': 10}, grids=LINF_GRIDS),
    Attack('jsma', 'JSMA', jsma, 'gamma', (0.05, 0.1), {'theta': 0.1, 'variant': 'art'}, 'l0'),
    Attack('cw', 'C&W', cw_l2, 'c', (0.1,), dict(
      confidence=0.01, steps=1000, binary_search_steps=5, learning_rate=0.01,
      margin='probability'), 'minimal_l2'),
    Attack('apgd-ce', 'APGD-CE', apgd, params={'steps': 100, 'loss': 'ce'}, grids=LINF_GRIDS),
    Attack('apgd-t', 'APGD-T', apgd, params=dict(
      steps=100, loss='dlr', targeted=True, num_targets=9), grids=LINF_GRIDS),
    Attack('square', 'Square', square, params={'queries': 1000}, grids=LINF_GRIDS),
    Attack('pgd-margin', 'PGD-margin', pgd, params=dict(
      steps=100, restarts=1, loss='margin'), grids=LINF_GRIDS),
    Attack('pgd-member-margin', 'PGD-member-margin', pgd, params=dict(
      steps=100, restarts=1, loss='member_margin'), target='members', grids=LINF_GRIDS),
  )
}
# fmt: on

__all__ = [
  'LINF_GRID',
  'REGISTRY',
  'Attack',
  'apgd',
  'as_partial',
  'bim',
  'bounded_by_eps',
  'config_key',
  'cw_l2',
  'eot',
  'fgsm',
  'jsma',
  'linf_grid',
  'pgd',
  'random_targets',
  'square',
  'transfer_accuracy',
]
