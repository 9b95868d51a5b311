"""PDD + DEG, the paper's "PDD" column: PDD masks plus the second-order gradient term.

docs/methods.md, "Regularizers and other methods" (the PDD authors' `train_pdd_deg.py`):

  loss = alpha * mean_k CE_k + beta * sum_{i<j} mean_b cos(g_i[b], g_j[b])

with g_k = d CE_k / dx the input gradient of member k's batch loss through the masked
training-mode network, the raw cosine (not |cos|; pushing it down makes the members'
gradients point apart), alpha = 1, beta = 0.01. The masks are PDD's with the `config.pdd`
group (num_bins, alpha, beta); `deg.pdd_masks=False` gives DEG alone on undropped members
(the authors' `train_deg.py`). The gradient term needs double backprop.
"""

import jax.numpy as jnp

from lpd_jax import gradients
from lpd_jax.methods import pdd
from lpd_jax.methods.common import Method, forward_with_input_gradients, need, result

DEFAULTS = dict(alpha=1.0, beta=0.01, pdd_masks=True)


def cosine_term(g):
  """DEG's term sum_{i<j} mean_b cos(g_i[b], g_j[b]): g [K, B, ...] -> scalar.

  +1 per pair for identical gradients, 0 for orthogonal ones, 0 for K = 1.
  """
  return jnp.sum(jnp.mean(gradients.pairwise_cosines(g), axis=0))


def loss(members, params, batch_stats, x, y, key, progress, config):
  """alpha * mean_k CE_k + beta * cosine_term(g); see `Method.loss` for the signature."""
  del progress
  c = config.deg
  g, member_ce, logits, new_batch_stats, stats = forward_with_input_gradients(
    members,
    params,
    batch_stats,
    x,
    y,
    key=key,
    keep_rates=pdd.keep_rates(config) if c.pdd_masks else None,
  )
  ce = member_ce.mean()
  cos = cosine_term(g)
  return result(
    c.alpha * ce + c.beta * cos,
    logits,
    new_batch_stats,
    terms={'ce': ce, 'gradient_cosine': cos},
    stats=dict(stats, member_ce=member_ce),
  )


def keep_rates(config):
  """The PDD keep rates of the masks (None without them): 'expected' inference."""
  return pdd.keep_rates(config) if config.deg.pdd_masks else None


def validate(config):
  if config.deg.pdd_masks:
    pdd.METHOD.validate(config)
  need(config.deg.beta >= 0, f'deg.beta must be >= 0, got {config.deg.beta}')


METHOD = Method('deg', 'PDD', DEFAULTS, loss, keep_rates, validate, uses=('pdd',))
