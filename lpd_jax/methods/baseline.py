"""Baseline: K members trained independently on the same batches (mean_k CE_k, no dropout)."""

from lpd_jax.methods.common import Method, forward, mean_cross_entropy, result


def loss(members, params, batch_stats, x, y, key, progress, config):
  """mean_k CE_k of the unmasked members; see `Method.loss` for the signature."""
  del key, progress, config
  logits, new_batch_stats, _ = forward(members, params, batch_stats, x)
  ce, member_ce = mean_cross_entropy(logits, y)
  return result(ce, logits, new_batch_stats, terms={'ce': ce}, stats={'member_ce': member_ce})


METHOD = Method('baseline', 'Baseline', {}, loss)
