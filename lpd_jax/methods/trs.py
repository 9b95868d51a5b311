"""TRS, Transferability Reduced Smooth ensembles (Yang et al. 2021), for any K.

docs/methods.md, "Regularizers and other methods" (the TRS authors'
`train/Empirical/trainer.py`, paper coefficients from its issue #1):

  loss = mean_k CE_k + (l_a / K) * mean_{i<j} mean_b |cos(g_i[b], g_j[b])|
                     + (l_b / K) * smoothness(g(x~))

g_k = d CE_k / dx (batch-mean CE, training mode) on the clean batch for the cosine term;
smoothness(g) = (1/K) sum_k 2 * mean_b ||g_k[b]||^2 on x~, the batch whose first half is
clean and whose second half is moved by L-inf PGD that *maximises* that smoothness term
(not the CE): `pgd_steps` steps of eps_t / 3 from a uniform random start, clipped to
[0, 1], eps_t ramping linearly from eps_start to eps_end over training. l_a = 40, l_b = 2.5
(the reference sums CE over members: hence the 1/K). The reference hard-codes K = 3; here
the pairs and the member mean follow K. Double backprop, and a second-order PGD: the most
expensive method here (the paper's section 5.4: 76x Baseline).

BatchNorm: every forward is in training mode, as in the reference; the running statistics
kept are those of the clean batch's forward (the reference also updates them during its
PGD and on x~).
"""

import jax
import jax.numpy as jnp

from lpd_jax import gradients
from lpd_jax.methods.common import Method, forward_with_input_gradients, need, result

DEFAULTS = dict(
  cosine_weight=40.0, smoothness_weight=2.5, eps_start=0.01, eps_end=0.03, pgd_steps=6
)


def cosine_term(g):
  """mean_{i<j} mean_b |cos(g_i[b], g_j[b])|: g [K, B, ...] -> scalar (0 for K = 1)."""
  cos = gradients.pairwise_cosines(g)
  return jnp.mean(jnp.abs(cos)) if cos.shape[-1] else jnp.zeros((), g.dtype)


def smoothness_term(g):
  """(1/K) sum_k 2 * mean_b ||g_k[b]||_2^2: g [K, B, ...] -> scalar (the reference's
  `Magnitude`, averaged over members)."""
  g = g.reshape(g.shape[0], g.shape[1], -1)
  return jnp.mean(2 * jnp.sum(g * g, axis=-1))


def ramped_eps(progress, eps_start, eps_end):
  """eps_t = eps_start + (eps_end - eps_start) * progress (progress in [0, 1))."""
  return eps_start + (eps_end - eps_start) * progress


def _input_gradients(members, params, batch_stats, x, y):
  return forward_with_input_gradients(members, params, batch_stats, x, y)[0]


def smoothness_pgd(members, params, batch_stats, x, y, key, eps, steps):
  """L-inf PGD that maximises `smoothness_term` of the members' input gradients at x~.

  Uniform random start in the eps ball, `steps` sign steps of eps / 3, projection on the
  ball and [0, 1]. The parameters are constants here (stop-gradient): the attack is data.

  Returns:
    x~ [B, ...].
  """
  params, batch_stats = jax.lax.stop_gradient((params, batch_stats))

  def objective(x_adv):
    return smoothness_term(_input_gradients(members, params, batch_stats, x_adv, y))

  def step(_, x_adv):
    x_adv = x_adv + eps / 3 * jnp.sign(jax.grad(objective)(x_adv))
    return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)

  start = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), 0.0, 1.0)
  return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, step, start))


def loss(members, params, batch_stats, x, y, key, progress, config):
  """TRS loss; see the module docstring and `Method.loss` for the signature."""
  c = config.trs
  k = config.num_members
  g, member_ce, logits, new_batch_stats, _ = forward_with_input_gradients(
    members, params, batch_stats, x, y
  )
  ce = member_ce.mean()
  cos = cosine_term(g)
  half = x.shape[0] // 2
  eps = ramped_eps(progress.fraction, c.eps_start, c.eps_end)
  perturbed = smoothness_pgd(
    members, params, batch_stats, x[half:], y[half:], key, eps, c.pgd_steps
  )
  x_tilde = jnp.concatenate([x[:half], perturbed])
  smooth = smoothness_term(_input_gradients(members, params, batch_stats, x_tilde, y))
  return result(
    ce + c.cosine_weight / k * cos + c.smoothness_weight / k * smooth,
    logits,
    new_batch_stats,
    terms={'ce': ce, 'gradient_cosine': cos, 'smoothness': smooth},
    stats={'member_ce': member_ce, 'pgd_eps': eps},
  )


def validate(config):
  c = config.trs
  need(config.num_members >= 2, 'trs needs num_members >= 2 (pairs of member gradients)')
  need(
    0 <= c.eps_start <= c.eps_end,
    f'trs needs 0 <= eps_start <= eps_end, got {c.eps_start} and {c.eps_end}',
  )
  need(c.pgd_steps >= 0, f'trs.pgd_steps must be >= 0, got {c.pgd_steps}')
  need(config.batch_size >= 2, 'trs needs batch_size >= 2 (a clean half and a perturbed half)')


METHOD = Method('trs', 'TRS', DEFAULTS, loss, None, validate)
