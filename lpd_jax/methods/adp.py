"""ADP, Adaptive Diversity Promoting (Pang et al. 2019), as in the PDD authors' `train_adp.py`.

docs/methods.md, "Regularizers and other methods":

  loss = mean_k CE_k - a * mean_b H(mean_k p_k) - b * mean_b log det(M M^T + 1e-6 I)

p_k [B, C] member k's softmax; H the Shannon entropy with log(p + 1e-20); the rows of
M [K, C-1] are the members' probabilities of the non-true classes, each L2-normalised
(the ensemble diversity). a = 2, b = 0.5. First order: no input gradients.
"""

import jax
import jax.numpy as jnp

from lpd_jax.methods.common import Method, forward, mean_cross_entropy, need, result

DEFAULTS = dict(alpha=2.0, beta=0.5, det_offset=1e-6, log_offset=1e-20)


def ensemble_entropy(logits, log_offset=1e-20):
  """H(mean_k softmax(logits_k)) per sample: logits [K, B, C] -> [B] (nats)."""
  p = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
  return -jnp.sum(p * jnp.log(p + log_offset), axis=-1)


def non_true_directions(logits, y):
  """The rows of ADP's M: logits [K, B, C], y [B] -> [B, K, C-1], member k's probabilities of
  the classes j != y_b (in class order), L2-normalised.

  p_j / ||p_{-y}|| equals q_j / ||q|| for q the softmax over the non-true logits alone,
  which is how it is computed: finite even when p_y rounds to 1.
  """
  c = logits.shape[-1]
  j = jnp.arange(c - 1)
  cols = jnp.where(j[None, :] < y[:, None], j[None, :], j[None, :] + 1)  # [B, C-1]
  others = jnp.take_along_axis(logits, jnp.broadcast_to(cols, logits.shape[:2] + (c - 1,)), -1)
  q = jax.nn.softmax(others, axis=-1)
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
  return jnp.swapaxes(q, 0, 1)


def log_det(logits, y, det_offset=1e-6):
  """ADP's ensemble diversity log det(M M^T + det_offset I) per sample: -> [B]."""
  m = non_true_directions(logits, y)
  gram = jnp.einsum('bkc,blc->bkl', m, m, precision=jax.lax.Precision.HIGHEST)
  return jnp.linalg.slogdet(gram + det_offset * jnp.eye(m.shape[1]))[1]


def loss(members, params, batch_stats, x, y, key, progress, config):
  """mean_k CE_k - a * entropy - b * log det; see `Method.loss` for the signature."""
  del key, progress
  c = config.adp
  logits, new_batch_stats, _ = forward(members, params, batch_stats, x)
  ce, member_ce = mean_cross_entropy(logits, y)
  entropy = jnp.mean(ensemble_entropy(logits, c.log_offset))
  diversity = jnp.mean(log_det(logits, y, c.det_offset))
  return result(
    ce - c.alpha * entropy - c.beta * diversity,
    logits,
    new_batch_stats,
    terms={'ce': ce, 'entropy': entropy, 'log_det': diversity},
    stats={'member_ce': member_ce},
  )


def validate(config):
  need(config.adp.det_offset > 0, 'adp.det_offset must be > 0 (log det of a singular matrix)')


METHOD = Method('adp', 'ADP', DEFAULTS, loss, None, validate)
