"""White-box attacks of the paper (section 5) and black-box transfer.

Every attack is `attack(model_fn, x, y, *, key=None, **params) -> x_adv`, with
`model_fn(x) -> [B, C]` log-probabilities, x [B, ...] in [0, 1] and y int labels [B];
x_adv lies in [0, 1] (and in the attack's norm ball). See docs/methods.md, "Attacks".

`REGISTRY` (name -> `Attack`, `lpd_jax.attacks.common`: each with its parameters, grid
and threat model) is the catalogue the suites and the config validation read: adding an
attack is one module here plus its import and one line below.
"""

from lpd_jax.attacks.autopgd import apgd
from lpd_jax.attacks.common import (
  LINF_GRID,
  LINF_GRIDS,
  Attack,
  as_partial,
  bounded_by_eps,
  config_key,
  linf_grid,
)
from lpd_jax.attacks.cw import cw_l2
from lpd_jax.attacks.eot import eot
from lpd_jax.attacks.fab import fab
from lpd_jax.attacks.gradient import bim, fgsm, pgd
from lpd_jax.attacks.saliency_map import jsma, random_targets
from lpd_jax.attacks.square_attack import square
from lpd_jax.attacks.transfer import transfer_accuracy


def _ours(*args, **kwargs):
  """An attack of this package: its randomness comes through sample_keys / fold_keys, so it
  takes per-point keys (`Attack.point_keys`: the robust suite's cascade packs points)."""
  return Attack(*args, point_keys=True, **kwargs)


# fmt: off
REGISTRY = {
  a.name: a
  for a in (
    _ours('fgsm', 'FGSM', fgsm),
    _ours('bim', 'BIM', bim, params={'steps': 10}, grids=LINF_GRIDS),
    _ours('pgd', 'PGD', pgd, params={'steps': 10}, grids=LINF_GRIDS),
    _ours('jsma', 'JSMA', jsma, 'gamma', (0.05, 0.1), {'theta': 0.1, 'variant': 'art'}, 'l0'),
    _ours('cw', 'C&W', cw_l2, 'c', (0.1,), dict(
      confidence=0.01, steps=1000, binary_search_steps=5, learning_rate=0.01,
      margin='probability'), 'minimal_l2'),
    _ours('apgd-ce', 'APGD-CE', apgd, params={'steps': 100, 'loss': 'ce'}, grids=LINF_GRIDS),
    _ours('apgd-t', 'APGD-T', apgd, params=dict(
      steps=100, loss='dlr', targeted=True, num_targets=9), grids=LINF_GRIDS),
    _ours('apgd-dlr', 'APGD-DLR', apgd, params={'steps': 100, 'loss': 'dlr'},
      grids=LINF_GRIDS),
    _ours('fab-t', 'FAB-T', fab, params=dict(steps=100, num_targets=9, restarts=1),
      grids=LINF_GRIDS),
    _ours('square', 'Square', square, params={'queries': 1000, 'schedule': 'rescaled'},
      grids=LINF_GRIDS),
    _ours('pgd-margin', 'PGD-margin', pgd, params=dict(
      steps=100, restarts=1, loss='margin'), grids=LINF_GRIDS),
    _ours('pgd-member-margin', 'PGD-member-margin', pgd, params=dict(
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
  'fab',
  'fgsm',
  'jsma',
  'linf_grid',
  'pgd',
  'random_targets',
  'square',
  'transfer_accuracy',
]
