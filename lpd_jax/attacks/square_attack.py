"""Square attack, L-inf (Andriushchenko et al. 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search").

Gradient-free: only forward passes of the model, never `jax.grad`, so it is blind to
gradient masking (the gradient-free attack of Athalye et al.'s checklist). Random search
over square windows: each query redraws a window of side s (per channel +-eps, the same
over the window) and keeps it when the margin log p_y - max_{j != y} log p_j decreases.
The window shrinks on the authors' schedule (`window_sides`); the start is vertical
stripes of +-eps. Facts from the reference code (max-andr/square-attack) and the
AutoAttack version (p_init 0.8); written for JAX as one jitted `lax.fori_loop` (in chunks on
the host where progress is asked for, `common.host_loop`). Unlike the
reference, a drawn window is not redrawn when it happens to equal the current one (that
query is wasted, not wrong).
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax.attacks.common import as_partial, host_loop, on_host, sample_keys

SCHEDULES = ('rescaled', 'absolute')


def window_sides(queries, height, width, p_init=0.8, schedule='rescaled'):
  """Side s_i of the square window at query i = 0..queries-1, int [queries].

  p (the fraction of the image a window covers) starts at p_init and halves after queries
  10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of the authors' 10,000. `schedule`:
  'rescaled' stretches those points to `queries` (the reference code's
  rescale_schedule=True; a 1,000-query run shrinks its window as a 10,000-query run
  does); 'absolute' keeps them at those query counts (AutoAttack's standard Square: at
  5,000 queries p stops at p_init / 128). s = max(round(sqrt(p * H * W)), 1), at most
  min(H, W) - 1 (at least 1).
  """
  if schedule not in SCHEDULES:
    raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')
  bounds = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])
  sides = []
  for i in range(queries):
    progress = int(i / queries * 10000) if schedule == 'rescaled' else i
    p = p_init / 2 ** int(np.sum(progress > bounds))
    s = max(int(round(np.sqrt(p * height * width))), 1)
    sides.append(min(s, max(min(height, width) - 1, 1)))
  return np.asarray(sides, np.int32)


def _margin(log_probs, y):
  """log p_y - max_{j != y} log p_j [B]: < 0 means misclassified."""
  log_p_y = jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, log_probs.shape[-1], dtype=bool), -jnp.inf, log_probs)
  return log_p_y - jnp.max(others, axis=-1)


def _square_loop(model, x, y, key, eps, *, queries, p_init, schedule):
  """The search as `host_loop` takes it: (start() -> state, body(i, state), end(state))."""
  batch, height, width, channels = x.shape
  sides = jnp.asarray(window_sides(queries, height, width, p_init, schedule))
  keys = sample_keys(key, batch)  # [B]: sample i's randomness, whatever the batch

  def signs(k, shape):
    return jnp.where(jax.random.bernoulli(k, 0.5, shape), eps, -eps)

  # Start: vertical stripes, one +-eps per (column, channel); fold_in(key, queries) is a
  # stream no query uses.
  def start():
    stripes = jax.vmap(lambda k: signs(jax.random.fold_in(k, queries), (1, width, channels)))(keys)
    x_best = jnp.clip(x + jnp.broadcast_to(stripes, x.shape), 0.0, 1.0)
    return x_best, _margin(model(x_best), y)

  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]

  def body(i, state):
    x_best, margin_best = state
    side = sides[i]
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)

    def draw(k):
      k_row, k_col, k_sign = jax.random.split(k, 3)
      top = jax.random.randint(k_row, (), 0, height - side + 1)
      left = jax.random.randint(k_col, (), 0, width - side + 1)
      return top, left, signs(k_sign, (1, 1, channels))

    top, left, window_signs = jax.vmap(draw)(step_keys)
    inside = (
      (rows >= top[:, None, None, None])
      & (rows < (top + side)[:, None, None, None])
      & (cols >= left[:, None, None, None])
      & (cols < (left + side)[:, None, None, None])
    )
    delta = jnp.where(inside, window_signs, x_best - x)
    x_new = jnp.clip(x + delta, 0.0, 1.0)
    margin_new = _margin(model(x_new), y)
    # Only samples not yet misclassified search on; a change is kept when it lowers the margin.
    accept = (margin_best >= 0) & (margin_new < margin_best)
    return (
      jnp.where(accept[:, None, None, None], x_new, x_best),
      jnp.where(accept, margin_new, margin_best),
    )

  return start, body, lambda state: state[0]


@functools.partial(jax.jit, static_argnames=('queries', 'p_init', 'schedule'))
def _square(model, x, y, key, eps, *, queries, p_init, schedule):
  start, body, end = _square_loop(
    model, x, y, key, eps, queries=queries, p_init=p_init, schedule=schedule
  )
  return end(jax.lax.fori_loop(0, queries, body, start()))


def square(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: jax.Array,
  eps: float,
  queries: int = 1000,
  p_init: float = 0.8,
  schedule: str = 'rescaled',
) -> jax.Array:
  """Square attack (L-inf, untargeted): random search, forward passes only.

  Args:
    model_fn: x [B, H, W, c] -> log-probabilities [B, C] (see `pgd`); it is never
      differentiated.
    x: images [B, H, W, c] in [0, 1].
    y: int labels [B].
    key: PRNG key; sample i's draws come from fold_in(key, i), whatever the batch.
    eps: L-inf radius.
    queries: random-search iterations (one forward pass of the batch each; AutoAttack:
      5000).
    p_init: initial fraction of the image a window covers (AutoAttack: 0.8).
    schedule: how p shrinks over the queries (`window_sides`): 'rescaled' (to the
      budget) or 'absolute' (AutoAttack's standard Square).

  Returns:
    x_adv [B, H, W, c] in [0, 1] within eps of x: misclassified where the search found it,
    else the point of lowest margin found.
  """
  if x.ndim != 4:
    raise ValueError(f'square attacks images [B, H, W, c]; got shape {x.shape}')
  args = (as_partial(model_fn), x, y, key, eps)
  static = dict(queries=queries, p_init=p_init, schedule=schedule)
  if on_host(args):  # progress asked for: the same search in chunks on the host
    return host_loop(_square_loop, args, static, queries, 'queries', 'Square')
  return _square(*args, **static)
