"""Gradient-sign and projected-gradient attacks: FGSM, BIM, PGD (L-inf and L2).

Paper section 5, docs/methods.md, "Attacks": FGSM (Goodfellow et al. 2015), BIM (Kurakin
et al. 2017) and PGD (Madry et al. 2018) maximise the cross-entropy -log p_y of the
model's log-probabilities (the paper's loss), or with loss='margin' the margin
max_{j != y} log p_j - log p_y (a strong attack's loss: its gradient does not vanish on
confident samples); 10 steps of eps/10 by default.
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from lpd_jax import progress
from lpd_jax.attacks.common import (
  LOSSES,
  as_partial,
  check_loss,
  fold_keys,
  host_loop,
  l2_norm,
  log_probs_of,
  loss_grad,
  on_host,
  sample_keys,
)

NORMS = ('linf', 'l2')


def _unit_ball_noise(key, shape, norm):
  """Uniform noise in the unit ball of `norm`, [B, ...]; sample i from fold_in(key, i)."""

  def one(k):
    if norm == 'linf':
      return jax.random.uniform(k, shape[1:], minval=-1.0, maxval=1.0)
    k_dir, k_rad = jax.random.split(k)
    direction = jax.random.normal(k_dir, shape[1:])
    radius = jax.random.uniform(k_rad) ** (1.0 / direction.size)
    return direction / jnp.linalg.norm(direction) * radius

  return jax.vmap(one)(sample_keys(key, shape[0]))


def _pgd_loop(model, x, y, key, eps, step_size, restart, *, steps, norm, random_start, loss):
  """One run of PGD as `host_loop` takes it: (start() -> x0, step(i, x_adv), end)."""

  def project(x_adv):
    delta = x_adv - x
    if norm == 'linf':
      delta = jnp.clip(delta, -eps, eps)
    else:
      delta = delta * jnp.minimum(1.0, eps / jnp.maximum(l2_norm(delta), 1e-12))
    # Clipping into [0, 1] moves each coordinate towards x, so the result stays in the ball.
    return jnp.clip(x + delta, 0.0, 1.0)

  def start():
    if random_start:
      return project(x + eps * _unit_ball_noise(fold_keys(key, restart), x.shape, norm))
    return x

  def step(_, x_adv):
    g = loss_grad(model, x_adv, y, loss)
    if norm == 'linf':
      direction = jnp.sign(g)
    else:
      direction = g / jnp.maximum(l2_norm(g), 1e-12)
    return project(x_adv + step_size * direction)

  return start, step, lambda x_adv: x_adv


def _scored(model, x_adv, y, loss):
  """(x_adv, misclassified [B], loss [B]): what the restarts compare."""
  out = model(x_adv)
  return x_adv, jnp.argmax(log_probs_of(out), -1) != y, LOSSES[loss](out, y)


def _keep_worst(model, y, loss, best, x_new):
  """The worse case per sample of `best` and a new run: misclassified first, else the higher
  loss."""
  x_best, wrong_best, loss_best = best
  _, wrong_new, loss_new = _scored(model, x_new, y, loss)
  better = (wrong_new & ~wrong_best) | ((wrong_new == wrong_best) & (loss_new > loss_best))
  pick = better.reshape((-1,) + (1,) * (x_new.ndim - 1))
  return (
    jnp.where(pick, x_new, x_best),
    jnp.where(better, wrong_new, wrong_best),
    jnp.where(better, loss_new, loss_best),
  )


@functools.partial(jax.jit, static_argnames=('steps', 'norm', 'random_start', 'restarts', 'loss'))
def _pgd(model, x, y, key, eps, step_size, *, steps, norm, random_start, restarts, loss):
  static = dict(steps=steps, norm=norm, random_start=random_start, loss=loss)

  def run(restart):
    start, step, _ = _pgd_loop(model, x, y, key, eps, step_size, restart, **static)
    return jax.lax.fori_loop(0, steps, step, start())

  if restarts == 1:
    return run(0)
  keep_worst = lambda r, best: _keep_worst(model, y, loss, best, run(r))
  return jax.lax.fori_loop(1, restarts, keep_worst, _scored(model, run(0), y, loss))[0]


_first_scored = jax.jit(_scored, static_argnames=('loss',))
_merged = jax.jit(_keep_worst, static_argnames=('loss',))


def _pgd_on_host(model, x, y, key, eps, step_size, *, restarts, **static):
  """`_pgd` with each run's loop split on the host (`host_loop`), to report its steps."""
  what = 'PGD' if static['loss'] == 'ce' else f'PGD-{static["loss"].replace("_", "-")}'
  with progress.units(restarts * static['steps'], 'steps', what):
    runs = [(model, x, y, key, eps, step_size, r) for r in range(restarts)]
    best = host_loop(_pgd_loop, runs[0], static, static['steps'])
    if restarts == 1:
      return best
    best = _first_scored(model, best, y, loss=static['loss'])
    for args in runs[1:]:
      x_r = host_loop(_pgd_loop, args, static, static['steps'])
      best = _merged(model, y, best=best, x_new=x_r, loss=static['loss'])
  return best[0]


def pgd(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: Optional[jax.Array] = None,
  eps: float,
  steps: int = 10,
  step_size: Optional[float] = None,
  norm: str = 'linf',
  random_start: bool = True,
  restarts: int = 1,
  loss: str = 'ce',
) -> jax.Array:
  """Projected gradient descent (Madry et al. 2018) on the cross-entropy or the margin.

  x_{t+1} = Proj_{B(x, eps) ∩ [0,1]}(x_t + step_size * d_t), with d_t = sign(grad) for
  'linf' and grad / ||grad||_2 for 'l2'; the last iterate is returned.

  Args:
    model_fn: x [B, ...] -> log-probabilities [B, C] (a function, a bound method of a
      pytree such as `Ensemble.log_predict`, or a `jax.tree_util.Partial`).
    x: inputs [B, ...] in [0, 1].
    y: int labels [B].
    key: PRNG key; required when random_start.
    eps: radius of the `norm` ball.
    steps: number of gradient steps.
    step_size: default eps / 10 ('linf') or 2.5 * eps / steps ('l2').
    norm: 'linf' or 'l2'.
    random_start: start at a uniform random point of the ball (then clipped to [0, 1]);
      sample i's noise comes from fold_in(fold_in(key, restart), i), so it does not
      depend on the batch size.
    restarts: runs per sample; keeps the worst case (misclassified first, else the
      highest loss).
    loss: 'ce' (-log p_y, the paper's) or 'margin' (max_{j != y} log p_j - log p_y,
      which keeps a gradient where the cross-entropy's float32 gradient is 0), or
      'member_margin' with a model_fn returning member logits [K, B, C]
      (`common.member_margin`: the members' own logit margins, averaged).

  Returns:
    x_adv [B, ...] in [0, 1] and within eps of x in `norm`.
  """
  check_loss(loss)
  if norm not in NORMS:
    raise ValueError(f'norm must be one of {NORMS}, got {norm!r}')
  if random_start and key is None:
    raise ValueError('pgd with random_start=True needs a key')
  if step_size is None:
    step_size = eps / 10 if norm == 'linf' else 2.5 * eps / steps
  args = (as_partial(model_fn), x, y, key, eps, step_size)
  static = dict(steps=steps, norm=norm, random_start=random_start, restarts=restarts, loss=loss)
  if on_host(args):  # progress asked for: the same runs, their loops in chunks on the host
    return _pgd_on_host(*args, **static)
  return _pgd(*args, **static)


def bim(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: Optional[jax.Array] = None,
  eps: float,
  steps: int = 10,
  step_size: Optional[float] = None,
  loss: str = 'ce',
) -> jax.Array:
  """Basic iterative method (Kurakin et al. 2017): L-inf PGD from x itself, no random
  start; step_size defaults to eps / 10. Shapes and conventions as `pgd`; `key` unused."""
  del key
  return pgd(
    model_fn,
    x,
    y,
    eps=eps,
    steps=steps,
    step_size=step_size,
    norm='linf',
    random_start=False,
    loss=loss,
  )


def fgsm(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: Optional[jax.Array] = None,
  eps: float,
  loss: str = 'ce',
) -> jax.Array:
  """Fast gradient sign method (Goodfellow et al. 2015): clip(x + eps * sign(grad), 0, 1),
  i.e. one L-inf step of size eps. Shapes and conventions as `pgd`; `key` unused."""
  del key
  return pgd(
    model_fn, x, y, eps=eps, steps=1, step_size=eps, norm='linf', random_start=False, loss=loss
  )
