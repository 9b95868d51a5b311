"""GAL, Gradient Alignment Loss (Kariyappa & Qureshi 2019), as in the TRS authors' code.

docs/methods.md, "Regularizers and other methods":

  loss = mean_k CE_k + (c / K) * mean_b log(sum_{i<j} exp cos(g_i[b], g_j[b]) + 1e-20)

g_k = d CE_k / dx (training mode), c = 0.5 (the reference sums CE over members, hence the
1/K that keeps its balance). Needs K >= 2 and double backprop.
"""

import jax.numpy as jnp

from lpd_jax import gradients
from lpd_jax.methods.common import Method, forward_with_input_gradients, need, result

DEFAULTS = dict(coefficient=0.5, log_offset=1e-20)


def alignment_term(g, log_offset=1e-20):
  """GAL's term mean_b log(sum_{i<j} exp cos(g_i[b], g_j[b]) + offset): g [K, B, ...] -> scalar."""
  return jnp.mean(jnp.log(jnp.sum(jnp.exp(gradients.pairwise_cosines(g)), axis=-1) + log_offset))


def loss(members, params, batch_stats, x, y, key, progress, config):
  """mean_k CE_k + (c/K) * alignment_term(g); see `Method.loss` for the signature."""
  del key, progress
  c = config.gal
  g, member_ce, logits, new_batch_stats, _ = forward_with_input_gradients(
    members, params, batch_stats, x, y
  )
  ce = member_ce.mean()
  alignment = alignment_term(g, c.log_offset)
  return result(
    ce + c.coefficient / config.num_members * alignment,
    logits,
    new_batch_stats,
    terms={'ce': ce, 'gradient_alignment': alignment},
    stats={'member_ce': member_ce},
  )


def validate(config):
  need(config.num_members >= 2, 'gal needs num_members >= 2 (pairs of member gradients)')


METHOD = Method('gal', 'GAL', DEFAULTS, loss, None, validate)
