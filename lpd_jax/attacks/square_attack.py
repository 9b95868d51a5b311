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

Two ways to draw the windows (`draw`, `DRAWS`): 'lpd' (the default) draws each point's own
window, its corner uniform over all h - s + 1 positions of each axis and its signs, per
query; 'autoattack' draws as AutoAttack's `SquareAttack` (fra31/auto-attack, square.py,
L-inf): one corner and one sign per channel per query for the whole batch, the corner
floor((h - s) U), U uniform in [0, 1), so in [0, h - s): never the last position, and
always 0 once s = h - 1 (on 8x8 digits the 7x7 windows of the first 10 queries never
touch the last row or column), with s at most min(h, w) (lpd: min(h, w) - 1). The
`standard` preset of the `robust` suite draws as AutoAttack, to give its numbers.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax.attacks.common import as_partial, batch_keys, host_loop, on_host, sample_keys

SCHEDULES = ('rescaled', 'absolute')
DRAWS = ('lpd', 'autoattack')


def window_sides(queries, height, width, p_init=0.8, schedule='rescaled', draw='lpd'):
  """Side s_i of the square window at query i = 0..queries-1, int [queries].

  p (the fraction of the image a window covers) starts at p_init and halves after queries
  10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of the authors' 10,000. `schedule`:
  'rescaled' stretches those points to `queries` (the reference code's
  rescale_schedule=True; a 1,000-query run shrinks its window as a 10,000-query run
  does); 'absolute' keeps them at those query counts (AutoAttack's standard Square: at
  5,000 queries p stops at p_init / 128). s = max(round(sqrt(p * H * W)), 1), at most
  min(H, W) - 1 (at least 1; draw='autoattack': at most min(H, W), as AutoAttack).
  """
  if schedule not in SCHEDULES:
    raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')
  if draw not in DRAWS:
    raise ValueError(f'draw must be one of {DRAWS}, got {draw!r}')
  largest = min(height, width) if draw == 'autoattack' else max(min(height, width) - 1, 1)
  bounds = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])
  sides = []
  for i in range(queries):
    progress = int(i / queries * 10000) if schedule == 'rescaled' else i
    p = p_init / 2 ** int(np.sum(progress > bounds))
    s = max(int(round(np.sqrt(p * height * width))), 1)
    sides.append(min(s, largest))
  return np.asarray(sides, np.int32)


def draw_windows(key, n, i, side, height, width, channels, eps, draw='lpd'):
  """The windows of query i for a batch of n: (top [n], left [n], signs [n, 1, 1, c] of +-eps).

  key: a key or per-point `PointKeys` [n]. 'lpd': each point its own corner, uniform over
  [0, H - s] x [0, W - s], and its own signs, from fold_in(its sample key, i). 'autoattack':
  one corner in [0, H - s) x [0, W - s) (0 where s = H) and one sign per channel for the whole
  batch, from fold_in(its batch key, i) (`common.batch_keys`): AutoAttack's
  `random_int(0, h - s)` (floor((h - s) U), U uniform in [0, 1)) and `random_choice([c, 1, 1])`.
  """
  if draw == 'autoattack':
    keys, top_end, left_end = batch_keys(key, n), height - side, width - side
    top_end, left_end = jnp.maximum(top_end, 1), jnp.maximum(left_end, 1)
  else:
    keys, top_end, left_end = sample_keys(key, n), height - side + 1, width - side + 1

  def one(k):
    k_row, k_col, k_sign = jax.random.split(jax.random.fold_in(k, i), 3)
    top = jax.random.randint(k_row, (), 0, top_end)
    left = jax.random.randint(k_col, (), 0, left_end)
    return top, left, jnp.where(jax.random.bernoulli(k_sign, 0.5, (1, 1, channels)), eps, -eps)

  return jax.vmap(one)(keys)


def _margin(log_probs, y):
  """log p_y - max_{j != y} log p_j [B]: < 0 means misclassified."""
  log_p_y = jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, log_probs.shape[-1], dtype=bool), -jnp.inf, log_probs)
  return log_p_y - jnp.max(others, axis=-1)


def _square_loop(model, x, y, key, eps, *, queries, p_init, schedule, draw='lpd'):
  """The search as `host_loop` takes it: (start() -> state, body(i, state), end(state))."""
  batch, height, width, channels = x.shape
  sides = jnp.asarray(window_sides(queries, height, width, p_init, schedule, draw))
  keys = sample_keys(key, batch)  # [B]: sample i's randomness, whatever the batch

  # Start: vertical stripes, one +-eps per (column, channel) and sample (AutoAttack too:
  # random_choice([B, c, 1, w])); fold_in(key, queries) is a stream no query uses.
  def start():
    stripes = jax.vmap(
      lambda k: jax.random.bernoulli(jax.random.fold_in(k, queries), 0.5, (1, width, channels))
    )(keys)
    stripes = jnp.where(stripes, eps, -eps)
    x_best = jnp.clip(x + jnp.broadcast_to(stripes, x.shape), 0.0, 1.0)
    return x_best, _margin(model(x_best), y)

  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]

  def body(i, state):
    x_best, margin_best = state
    side = sides[i]
    top, left, window_signs = draw_windows(key, batch, i, side, height, width, channels, eps, draw)
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


@functools.partial(jax.jit, static_argnames=('queries', 'p_init', 'schedule', 'draw'))
def _square(model, x, y, key, eps, *, queries, p_init, schedule, draw):
  start, body, end = _square_loop(
    model, x, y, key, eps, queries=queries, p_init=p_init, schedule=schedule, draw=draw
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
  draw: str = 'lpd',
) -> jax.Array:
  """Square attack (L-inf, untargeted): random search, forward passes only.

  Args:
    model_fn: x [B, H, W, c] -> log-probabilities [B, C] (see `pgd`); it is never
      differentiated.
    x: images [B, H, W, c] in [0, 1].
    y: int labels [B].
    key: PRNG key or `PointKeys`; sample i's draws come from fold_in(key, i), whatever the
      batch (draw='autoattack': the windows from key itself, shared by the batch).
    eps: L-inf radius.
    queries: random-search iterations (one forward pass of the batch each; AutoAttack:
      5000).
    p_init: initial fraction of the image a window covers (AutoAttack: 0.8).
    schedule: how p shrinks over the queries (`window_sides`): 'rescaled' (to the
      budget) or 'absolute' (AutoAttack's standard Square).
    draw: how each query's window is drawn (`draw_windows`): 'lpd', per point over every
      position, or 'autoattack', one window and sign per channel for the batch, never at
      the last position (AutoAttack's, weaker on small images: the `standard` preset's).

  Returns:
    x_adv [B, H, W, c] in [0, 1] within eps of x: misclassified where the search found it,
    else the point of lowest margin found.
  """
  if x.ndim != 4:
    raise ValueError(f'square attacks images [B, H, W, c]; got shape {x.shape}')
  args = (as_partial(model_fn), x, y, key, eps)
  if draw not in DRAWS:
    raise ValueError(f'draw must be one of {DRAWS}, got {draw!r}')
  static = dict(queries=queries, p_init=p_init, schedule=schedule, draw=draw)
  if on_host(args):  # progress asked for: the same search in chunks on the host
    return host_loop(_square_loop, args, static, queries, 'queries', 'Square')
  return _square(*args, **static)
