"""Training objectives, selected by `config.method`.

A method says how the features h [K, B, D] of all members are masked between the
backbone and the heads (`keep_rates`, None for no dropout). Objectives with extra
loss terms (DEG, ADP, GAL, TRS) add them here as they arrive.
"""

import functools

from lpd_jax import dropout


def display_name(method):
  """Config method -> the paper's column name: 'baseline' -> 'Baseline', 'lpd' -> 'LPD'."""
  return method.capitalize() if method == 'baseline' else method.upper()


def keep_rate_fn(config):
  """config -> (h [K, B, D] -> p [K, B, D]) for the method, or None; and its `rescale`."""
  if config.method == 'baseline':
    return None, False
  if config.method == 'lpd':
    c = config.lpd
    fn = functools.partial(dropout.lpd_keep_rates, s=c.s, eps=c.eps, gamma=c.gamma, lam=c.lam,
                           alpha=c.alpha, beta=c.beta, num_bins=c.num_bins)
    return fn, c.rescale
  if config.method == 'pdd':
    c = config.pdd
    fn = functools.partial(dropout.pdd_keep_rates, num_bins=c.num_bins, alpha=c.alpha, beta=c.beta)
    return fn, c.rescale
  raise ValueError(f'unknown method {config.method!r}')
