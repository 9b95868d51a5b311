"""GradDiv, gradient diversity regularisation (Lee, Kim and Lee, TPAMI 2022, the paper's [17]),
on the K members of an ensemble, for any K >= 2.

docs/methods.md, "GradDiv". GradDiv views the directions of the loss gradients of a
randomised network's sampled models as draws of a von Mises-Fisher distribution on the unit
sphere and penalises their concentration; here the sampled models are the K members:

  loss = mean_k CE_k + coefficient * mean_b C(u_1[b], ..., u_K[b]),   u_k = g_k / ||g_k||

g_k = d CE_k / dx (training mode, `forward_with_input_gradients`), flattened per sample.
The concentration C (`variant`):
  'mean': R_b = || (1/K) sum_k u_k[b] ||, the mean resultant length: the sufficient
          statistic of the vMF concentration (its maximum-likelihood kappa is A_N^-1(R),
          increasing in R), 1 when the K directions agree, 0 when they cancel;
  'dpp':  -log det(U_b U_b^T + det_offset I), U_b [K, N] the unit vectors: a determinantal
          point process's repulsion, largest when the directions are orthogonal.
Double backprop, as GAL and TRS.
"""

import jax
import jax.numpy as jnp

from lpd_jax import gradients
from lpd_jax.methods.common import Method, forward_with_input_gradients, need, result

DEFAULTS = dict(variant='mean', coefficient=1.0, det_offset=1e-6)
VARIANTS = ('mean', 'dpp')


def mean_resultant_length(g):
  """R_b = ||mean_k u_k[b]||: g [K, B, ...] -> [B], in [0, 1] (a zero gradient counts as a
  zero vector; the root's derivative is taken where R_b > 0 only)."""
  m = jnp.mean(gradients.unit_vectors(g), axis=0)  # [B, N]
  sq = jnp.sum(m * m, axis=-1)
  return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def dpp_repulsion(g, det_offset=1e-6):
  """-log det(U_b U_b^T + det_offset I) per sample: g [K, B, ...] -> [B]."""
  u = gradients.unit_vectors(g)
  gram = jnp.einsum('kbn,lbn->bkl', u, u, precision=jax.lax.Precision.HIGHEST)
  return -jnp.linalg.slogdet(gram + det_offset * jnp.eye(u.shape[0]))[1]


def concentration(g, variant='mean', det_offset=1e-6):
  """mean_b C of the variant: g [K, B, ...] -> scalar."""
  if variant == 'mean':
    return jnp.mean(mean_resultant_length(g))
  return jnp.mean(dpp_repulsion(g, det_offset))


def loss(members, params, batch_stats, x, y, key, progress, config):
  """mean_k CE_k + coefficient * concentration(g); see `Method.loss` for the signature."""
  del key, progress
  c = config.graddiv
  g, member_ce, logits, new_batch_stats, _ = forward_with_input_gradients(
    members, params, batch_stats, x, y
  )
  ce = member_ce.mean()
  term = concentration(g, c.variant, c.det_offset)
  return result(
    ce + c.coefficient * term,
    logits,
    new_batch_stats,
    terms={'ce': ce, 'gradient_concentration': term},
    stats={'member_ce': member_ce},
  )


def validate(config):
  c = config.graddiv
  need(config.num_members >= 2, 'graddiv needs num_members >= 2 (a spread of member gradients)')
  need(c.variant in VARIANTS, f'unknown graddiv.variant {c.variant!r}; choose one of {VARIANTS}')
  need(c.det_offset > 0, 'graddiv.det_offset must be > 0 (log det of a singular matrix)')


METHOD = Method('graddiv', 'GradDiv', DEFAULTS, loss, None, validate)
