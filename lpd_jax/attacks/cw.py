"""Carlini & Wagner L2 attack (Carlini and Wagner 2017), untargeted.

Paper section 5, docs/methods.md, "Attacks as the paper ran them": c = 0.1, confidence
0.01, 1000 steps, 5 binary-search steps. Two margins (`MARGINS`): 'log_probability', the
Carlini-Wagner form (log-probabilities differ from logits by a per-sample constant, so the
margins are the logits'), and 'probability', the authors' cw.py run on the ensemble's
output, the mean member probabilities: a margin bounded by 1 that vanishes when the softmax
saturates, a weaker attack (the paper's Table 4 numbers).
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from lpd_jax.attacks.common import as_partial

MARGINS = ('log_probability', 'probability')


def margin_loss(log_probs, y, confidence, margin):
  """C&W's f = max(z_y - max_{j != y} z_j + confidence, 0) per sample, and success
  (max_{j != y} z_j > z_y + confidence): log-probabilities [B, C], y [B] -> ([B], [B]).

  z = log-probabilities ('log_probability') or probabilities ('probability', the authors'
  margin on the ensemble's mean softmax).
  """
  z = jnp.exp(log_probs) if margin == 'probability' else log_probs
  is_y = jax.nn.one_hot(y, z.shape[-1], dtype=bool)
  z_true = jnp.max(jnp.where(is_y, z, -jnp.inf), -1)
  z_other = jnp.max(jnp.where(is_y, -jnp.inf, z), -1)
  return jnp.maximum(z_true - z_other + confidence, 0.0), z_other > z_true + confidence


@functools.partial(jax.jit, static_argnames=('steps', 'binary_search_steps', 'margin'))
def _cw_l2(model, x, y, c, confidence, learning_rate, *, steps, binary_search_steps, margin):
  axes = tuple(range(1, x.ndim))
  per_sample = lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))
  to_x = lambda w: (jnp.tanh(w) + 1.0) / 2.0
  w_start = jnp.arctanh((2.0 * x - 1.0) * 0.999999)
  opt = optax.adam(learning_rate)

  def objective(w, c):
    x_adv = to_x(w)
    f, success = margin_loss(model(x_adv), y, confidence, margin)
    dist = jnp.sum(jnp.square(x_adv - x), axis=axes)
    loss = dist + c * f
    return loss.sum(), (x_adv, dist, success)

  def optimise(carry, _):
    c, lower, upper, best_dist, best_x = carry

    def step(_, state):
      w, opt_state, best_dist, best_x, found = state
      grad, (x_adv, dist, success) = jax.grad(objective, has_aux=True)(w, c)
      better = success & (dist < best_dist)
      updates, opt_state = opt.update(grad, opt_state)
      return (
        optax.apply_updates(w, updates),
        opt_state,
        jnp.where(better, dist, best_dist),
        jnp.where(per_sample(better), x_adv, best_x),
        found | success,
      )

    init = (w_start, opt.init(w_start), best_dist, best_x, jnp.zeros_like(y, dtype=bool))
    _, _, best_dist, best_x, found = jax.lax.fori_loop(0, steps, step, init)
    upper = jnp.where(found, jnp.minimum(upper, c), upper)
    lower = jnp.where(found, lower, jnp.maximum(lower, c))
    c = jnp.where(upper < 1e9, (lower + upper) / 2.0, c * 10.0)
    return (c, lower, upper, best_dist, best_x), None

  batch = x.shape[0]
  init = (
    jnp.full(batch, c, jnp.float32),
    jnp.zeros(batch),
    jnp.full(batch, 1e10),
    jnp.full(batch, jnp.inf),
    x,
  )
  (_, _, _, _, best_x), _ = jax.lax.scan(optimise, init, None, length=binary_search_steps)
  return best_x


def cw_l2(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: Optional[jax.Array] = None,
  c: float = 0.1,
  confidence: float = 0.01,
  steps: int = 1000,
  binary_search_steps: int = 5,
  learning_rate: float = 0.01,
  margin: str = 'log_probability',
) -> jax.Array:
  """Carlini-Wagner L2: minimise ||x' - x||_2^2 + c * max(z_y - max_{j!=y} z_j + confidence, 0).

  x' = (tanh(w) + 1) / 2 (always in [0, 1]); w starts at arctanh(2x - 1) and is optimised
  by Adam for `steps` steps in each of `binary_search_steps` rounds, each round from the
  start again. z is the model's log-probabilities (same margins as logits), or with
  margin='probability' its probabilities (the authors' cw.py on the ensemble's mean
  softmax). Per sample,
  c is binary-searched as in the authors' code: after a round that found an example
  upper = min(upper, c), else lower = max(lower, c); then c = (lower + upper) / 2, or
  c * 10 while no upper bound exists. Over all steps and rounds the successful
  iterate (max_{j!=y} z_j > z_y + confidence) with the smallest L2 distance is kept.

  Args:
    model_fn: x [B, ...] -> log-probabilities [B, C] (see `pgd`).
    x: inputs [B, ...] in [0, 1].
    y: int labels [B].
    key: unused (deterministic attack).
    c: initial trade-off constant.
    confidence: required margin kappa.
    steps: Adam steps per binary-search round.
    binary_search_steps: rounds of the search over c.
    learning_rate: Adam step size in tanh space.
    margin: 'log_probability' (Carlini-Wagner, strong) or 'probability' (the paper's).

  Returns:
    x_adv [B, ...] in [0, 1]; x itself where no round succeeded.
  """
  del key
  if margin not in MARGINS:
    raise ValueError(f'margin must be one of {MARGINS}, got {margin!r}')
  return _cw_l2(
    as_partial(model_fn),
    x,
    y,
    c,
    confidence,
    learning_rate,
    steps=steps,
    binary_search_steps=binary_search_steps,
    margin=margin,
  )
