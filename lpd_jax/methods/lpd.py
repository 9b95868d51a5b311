"""Laplace Priority Dropout (paper eqs. 3-6, Algorithm 1): mean_k CE_k of LPD-masked members."""

from lpd_jax import dropout
from lpd_jax.methods.common import dropout_method, need

# docs/methods.md, "LPD keep rates"; gamma is not given by the paper (default 10, our choice).
DEFAULTS = dict(
  s=0.1, eps=0.0, gamma=10.0, lam=0.5, alpha=0.85, beta=0.127, num_bins=1024, rescale=False
)


def keep_rates(config):
  """config.lpd -> the bound `dropout.lpd_keep_rates`."""
  c = config.lpd
  return dropout.KeepRates.bind(
    dropout.lpd_keep_rates,
    s=c.s,
    eps=c.eps,
    gamma=c.gamma,
    lam=c.lam,
    alpha=c.alpha,
    beta=c.beta,
    num_bins=c.num_bins,
  )


def validate(config):
  need(config.lpd.s > 0 and config.lpd.lam > 0, 'lpd.s and lpd.lam must be > 0')


METHOD = dropout_method('lpd', 'LPD', DEFAULTS, keep_rates, validate)
