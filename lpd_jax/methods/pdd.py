"""Priority Diversified Dropout masks (paper eq. 2, the PDD authors' code), without DEG.

The paper's "PDD" column is these masks plus the second-order DEG term: method `deg`
(`methods/deg.py`); this one is labelled "PDD (no DEG)" in every report.
"""

from lpd_jax import dropout
from lpd_jax.methods.common import dropout_method, need

# docs/methods.md, "PDD keep rates": M = 10 bins for K = 3 (the authors use 20 for K = 5).
DEFAULTS = dict(num_bins=10, alpha=0.9, beta=0.1, rescale=False)


def keep_rates(config):
  """config.pdd -> the bound `dropout.pdd_keep_rates`."""
  c = config.pdd
  return dropout.KeepRates.bind(
    dropout.pdd_keep_rates, num_bins=c.num_bins, alpha=c.alpha, beta=c.beta
  )


def validate(config):
  # PDD keep rates beta * (1 - n/D) reach ~0 (measured on digits: 1/p up to 1e12 and a
  # collapse from 90% to 46% accuracy), so inverted dropout is refused, not floored.
  need(
    not config.pdd.rescale,
    'pdd.rescale=True is refused: PDD keep rates go down to ~0, so dividing by p blows '
    'features up (1/p up to 1e12) and training collapses. Leave pdd.rescale=False (the '
    "authors' 0/1 masks) and use --config.eval.inference=expected to evaluate at the "
    'training scale.',
  )


METHOD = dropout_method('pdd', 'PDD (no DEG)', DEFAULTS, keep_rates, validate)
