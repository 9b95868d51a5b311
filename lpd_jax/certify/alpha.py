"""alpha-CROWN (Xu et al. 2021, "Fast and complete: enabling complete neural network
verification with rapid and massively parallel incomplete verifiers"): CROWN's last backward
pass with the lower slopes of the unstable ReLUs made free parameters alpha in [0, 1] and
optimised by projected gradient ascent on the bound.

For every alpha in [0, 1], alpha * z is a lower bound of max(z, 0) on [l, u] with l < 0 < u,
so every bound evaluated on the way is sound; the best per margin is kept, and the first
evaluation uses CROWN's own adaptive slope (1 if u > -l else 0), so alpha-CROWN is never
looser than CROWN on the same intermediate bounds. As the reference verifier's
CROWN-Optimized does by default (auto_LiRPA: 20 iterations, Adam with learning rate 0.5
decayed by 0.98 per step, the best kept, intermediate bounds fixed), the intermediate
bounds are CROWN's and only the last pass is optimised; alpha is per unstable neuron and
per margin (one per bounded quantity), or shared by the margins (`shared`).

Pure: `optimise` takes the bound as a function of the slopes.
"""

import jax
import jax.numpy as jnp
import optax

# The reference's CROWN-Optimized defaults (auto_LiRPA's `optimize_bound_args`).
STEPS = 20
LEARNING_RATE = 0.5
DECAY = 0.98


def initial_slopes(lo, hi):
  """CROWN's adaptive lower slope (1 if u > -l else 0) of each ReLU with pre-activation
  bounds lo, hi: like lo (only the unstable neurons read it)."""
  return (hi > -lo).astype(lo.dtype)


def with_rows(slope, batch_axis, rows):
  """Inserts a margin axis of `rows` after `batch_axis`: [..., N, *shape] ->
  [..., N, rows, *shape]."""
  slope = jnp.expand_dims(slope, batch_axis + 1)
  shape = list(slope.shape)
  shape[batch_axis + 1] = rows
  return jnp.broadcast_to(slope, shape)


def optimise(bound_fn, slopes, steps=STEPS, learning_rate=LEARNING_RATE, decay=DECAY, on_step=None):
  """The best lower bounds [N, S] over `steps` projected Adam steps of the slopes.

  Args:
    bound_fn: slopes (a pytree of arrays in [0, 1]) -> lower bounds [N, S], sound for all.
    slopes: the starting slopes (CROWN's: the first bound evaluated is CROWN's).
    steps: Adam steps; steps + 1 bounds are evaluated (the last slopes too).
    learning_rate, decay: Adam's learning rate, multiplied by `decay` after each step.
    on_step: optional, called (traced) with the best bounds after each step (progress).
  """
  optimiser = optax.adam(optax.exponential_decay(learning_rate, 1, decay))

  def objective(s):
    lower = bound_fn(s)
    return -jnp.sum(lower), lower

  def step(carry, _):
    s, state, best = carry
    (_, lower), grads = jax.value_and_grad(objective, has_aux=True)(s)
    updates, state = optimiser.update(grads, state, s)
    s = jax.tree.map(lambda v: jnp.clip(v, 0.0, 1.0), optax.apply_updates(s, updates))
    best = jnp.maximum(best, lower)
    if on_step is not None:
      on_step(best)
    return (s, state, best), None

  lower = jax.eval_shape(bound_fn, slopes)
  start = (slopes, optimiser.init(slopes), jnp.full(lower.shape, -jnp.inf, lower.dtype))
  (slopes, _, best), _ = jax.lax.scan(step, start, None, length=steps)
  return jnp.maximum(best, bound_fn(slopes))
