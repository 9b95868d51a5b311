"""FAB-T, the targeted L-inf Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally
distorted adversarial examples with a fast adaptive boundary attack", ICML), as
AutoAttack's standard version runs it: 9 target classes, 1 restart, 100 iterations.

A minimum-norm attack: each iteration linearises f_t - f_y (target t, label y) at the
iterate, projects both the iterate and the original x onto that hyperplane within the box
[0, 1] (the smallest L-inf steps d1, d2, `project_linf`), and moves to the mix
(x1 + eta d1)(1 - alpha) + (x + eta d2) alpha, alpha = min(|d1| / (|d1| + |d2|),
alpha_max), which biases the search toward points close to x. When the iterate is
misclassified it is recorded if closer to x than the best so far, then pulled back toward
x: x + beta (x1 - x). The attack succeeds at eps where its closest point is within eps.

Facts taken from the authors' reference code (fra31/auto-attack: fab_base.py, fab_pt.py,
fab_projections.py; read, not copied): the update above with alpha_max 0.1, eta 1.05,
beta 0.9; the targeted gap f_t - f_y with its input gradient; success meaning any class
but y (not reaching t); the targets, classes ranked 2nd to 10th on the clean x; restart 0
starting at x, a later one at x + min(best norm, eps) / 2 * u / |u|_inf with u uniform in
[-1, 1]^D, clipped to [0, 1]; a step of norm < 1e-8 counted as 1e-8 in alpha; where the
box misses the hyperplane, the projection's step to the box corner nearest it; points the
model misclassifies at x returned as x. Written for JAX: one jitted core of nested
`lax.fori_loop`s (restarts, iterations) with per-sample state (where progress is asked for,
the restarts on the host and their iterations in chunks, `common.host_loop`); the projection
is exact by one sort per point (`project_linf`) instead of the reference's bisection over the
sorted knees. The model gives log-probabilities; for one softmax f_t - f_y on them is the logit
difference the reference uses; for an ensemble it is that of the log mean softmax (eq. 1).

As the reference, a target runs only on the points no earlier target fooled (packed,
`common.over_targets`). Unlike it, every such sample runs every restart (the reference
reruns only those not yet fooled within eps) and the best norm carries over restarts (the
reference resets it per run, so its random starts are within eps / 2; for the samples it
reruns, min(best norm, eps) = eps too), and of the restarts the closest point is kept
(the reference keeps the first within eps): the samples fooled within eps are the same.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from lpd_jax.attacks.common import (
  as_partial,
  fold_keys,
  host_loop,
  on_host,
  over_targets,
  sample_keys,
)


def project_linf(t, w, b):
  """Smallest L-inf step from points onto hyperplanes within the box [0, 1].

  d minimises ||d||_inf subject to w.(t + d) = b and t + d in [0, 1]^D. A step of L-inf
  size lam closes at most g(lam) = sum_i |w_i| min(lam, p_i) of the gap |w.t - b|, p_i
  the room coordinate i has toward the bound that closes it; g is piecewise linear with
  knees at the p_i, so sorting them gives the segment that holds g(lam) = |w.t - b| and
  lam in closed form. The step moves every coordinate with w_i != 0 by min(lam, p_i)
  toward that bound. Where the box misses the hyperplane (g(max p) < gap), it moves each
  to the bound: the corner of the box nearest the hyperplane (the reference's answer).

  Args:
    t: points [N, D] in [0, 1].
    w: normals [N, D].
    b: offsets [N].

  Returns:
    d [N, D], 0 where w_i = 0.
  """
  gap = jnp.sum(w * t, axis=1) - b
  w = jnp.where(gap[:, None] >= 0, w, -w)  # oriented: the step must lower w.z by |gap|
  gap = jnp.abs(gap)[:, None]
  rises = w < 0  # these coordinates rise toward 1, the others fall toward 0
  room = jnp.where(rises, 1.0 - t, t)
  order = jnp.argsort(room, axis=1)
  p = jnp.take_along_axis(room, order, axis=1)
  weight = jnp.take_along_axis(jnp.abs(w), order, axis=1)
  zero = jnp.zeros_like(gap)
  # At the knee k = 0..D (lam = 0, then the sorted p): the gap closed by the k saturated
  # coordinates, and the slope of g, the weight of the D - k that still move.
  knee = jnp.concatenate([zero, p], axis=1)
  closed = jnp.concatenate([zero, jnp.cumsum(weight * p, axis=1)], axis=1)
  slope = jnp.concatenate([jnp.cumsum(weight[:, ::-1], axis=1)[:, ::-1], zero], axis=1)
  short = closed + knee * slope < gap  # g < gap at the knee: true for knees 0..k
  k = jnp.maximum(jnp.sum(short, axis=1, keepdims=True) - 1, 0)
  closed_k = jnp.take_along_axis(closed, k, axis=1)
  slope_k = jnp.take_along_axis(slope, k, axis=1)
  lam = jnp.maximum((gap - closed_k) / jnp.where(slope_k > 0, slope_k, 1.0), 0.0)
  move = jnp.where(gap < closed[:, -1:], jnp.minimum(lam, room), room)
  return jnp.where(w == 0, 0.0, jnp.where(rises, move, -move))


def _linf(v):
  return jnp.max(jnp.abs(v), axis=1)


def _fab_loop(model, x, y, target, key, eps, alpha_max, eta, beta, restart, best, *, steps):
  """Restart `restart` of FAB from the best (points [B, D], norms [B]) so far, as `host_loop`
  takes it: (start() -> (x1, x_best, norm_best), iteration, end -> (x_best, norm_best))."""
  n = x.shape[0]
  x0 = x.reshape(n, -1)
  pick = lambda log_probs, c: jnp.take_along_axis(log_probs, c[:, None], axis=1)[:, 0]

  def gap(z):  # f_t - f_y [B] (< 0 where y still wins), summed for per-sample gradients
    log_probs = model(z.reshape(x.shape))
    f = pick(log_probs, target) - pick(log_probs, y)
    return f.sum(), f

  def iteration(_, s):
    x1, x_best, norm_best = s
    grad, f = jax.grad(gap, has_aux=True)(x1)
    # The linearised boundary {z: grad.z = grad.x1 - f}, from the iterate and from x.
    b = jnp.sum(grad * x1, axis=1) - f
    d = project_linf(jnp.concatenate([x1, x0]), jnp.concatenate([grad, grad]), jnp.tile(b, 2))
    d1, d2 = d[:n], d[n:]
    a1, a2 = jnp.maximum(_linf(d1), 1e-8), jnp.maximum(_linf(d2), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x1 = jnp.clip((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha, 0.0, 1.0)
    adv = jnp.argmax(model(x1.reshape(x.shape)), axis=-1) != y
    norm = _linf(x1 - x0)
    better = adv & (norm < norm_best)
    return (
      jnp.where(adv[:, None], x0 + beta * (x1 - x0), x1),  # the backward step
      jnp.where(better[:, None], x1, x_best),
      jnp.where(better, norm, norm_best),
    )

  def start():
    x_best, norm_best = best
    keys = sample_keys(fold_keys(key, restart), n)
    u = jax.vmap(lambda k: jax.random.uniform(k, x0.shape[1:], minval=-1.0, maxval=1.0))(keys)
    radius = 0.5 * jnp.minimum(norm_best, eps)[:, None]
    away = jnp.clip(x0 + radius * u / _linf(u)[:, None], 0.0, 1.0)
    return jnp.where(restart > 0, away, x0), x_best, norm_best

  return start, iteration, lambda s: s[1:]


def _fab_result(model, x, y, best):
  """(x_best [B, ...], norm [B]): x itself, norm 0, where the model misclassifies it."""
  x_best, norm_best = best
  wrong = jnp.argmax(model(x), axis=-1) != y  # already adversarial: x itself, norm 0
  x_best = jnp.where(wrong[:, None], x.reshape(x.shape[0], -1), x_best)
  return x_best.reshape(x.shape), jnp.where(wrong, 0.0, norm_best)


_fab_result_jit = jax.jit(_fab_result)


@functools.partial(jax.jit, static_argnames=('steps', 'restarts'))
def _fab(model, x, y, target, key, eps, alpha_max, eta, beta, *, steps, restarts):
  def restart(r, best):
    args = (model, x, y, target, key, eps, alpha_max, eta, beta, r, best)
    start, iteration, end = _fab_loop(*args, steps=steps)
    return end(jax.lax.fori_loop(0, steps, iteration, start()))

  init = (x.reshape(x.shape[0], -1), jnp.full(x.shape[0], jnp.inf, x.dtype))
  return _fab_result(model, x, y, jax.lax.fori_loop(0, restarts, restart, init))


def _fab_on_host(model, x, y, target, key, eps, alpha_max, eta, beta, *, steps, restarts):
  """`_fab` with each restart's loop split on the host (`host_loop`), to report its steps."""
  best = (jnp.reshape(x, (x.shape[0], -1)), jnp.full(x.shape[0], jnp.inf, x.dtype))
  for r in range(restarts):
    args = (model, x, y, target, key, eps, alpha_max, eta, beta, r, best)
    best = host_loop(_fab_loop, args, dict(steps=steps), steps, what='FAB')
  return _fab_result_jit(model, x, y, best)


def fab_minimal(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: jax.Array,
  target: jax.Array,
  eps: float,
  steps: int = 100,
  restarts: int = 1,
  alpha_max: float = 0.1,
  eta: float = 1.05,
  beta: float = 0.9,
) -> tuple[jax.Array, jax.Array]:
  """Targeted FAB toward one class per sample: the closest misclassified point it finds.

  Args:
    model_fn: x [B, ...] -> log-probabilities [B, C] (see `pgd`).
    x: inputs [B, ...] in [0, 1].
    y: int labels [B].
    key: PRNG key or `PointKeys`; restart r > 0 of sample i starts from the noise of
      fold_in(fold_in(key, r), i) (restart 0 starts at x: no randomness).
    target: int target classes [B] (!= y), whose boundary with y is linearised.
    eps: bounds the random starts of restarts r > 0: within min(best norm, eps) / 2 of x.
    steps: iterations per restart (the authors: 100).
    restarts: runs per sample (AutoAttack's FAB-T: 1); the closest point over all is kept.
    alpha_max, eta, beta: the largest weight of the step from x, the overshoot past the
      linearised boundary and the backward step (the authors: 0.1, 1.05, 0.9).

  Returns:
    (x_best [B, ...] in [0, 1], norm [B]): the misclassified point of smallest L-inf
    distance ||x_best - x||_inf = norm; x and inf where none was found, x and 0 where
    the model misclassifies x itself.
  """
  args = (as_partial(model_fn), x, y, target, key, eps, alpha_max, eta, beta)
  if on_host(args):  # progress asked for: the same restarts, their loops in chunks on the host
    return _fab_on_host(*args, steps=steps, restarts=restarts)
  return _fab(*args, steps=steps, restarts=restarts)


def fab(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: jax.Array,
  eps: float,
  steps: int = 100,
  num_targets: int = 9,
  restarts: int = 1,
  alpha_max: float = 0.1,
  eta: float = 1.05,
  beta: float = 0.9,
) -> jax.Array:
  """FAB-T (L-inf): targeted FAB toward each of the classes ranked 2nd to
  (num_targets + 1)th by the model on x; a sample is fooled by the first target whose
  closest misclassified point lies within eps (AutoAttack counts FAB only within eps).

  Args:
    model_fn: x [B, ...] -> log-probabilities [B, C] (see `pgd`).
    x: inputs [B, ...] in [0, 1].
    y: int labels [B].
    key: PRNG key or `PointKeys`; the target of rank k folds in k (`fab_minimal`).
    eps: L-inf radius.
    steps, restarts, alpha_max, eta, beta: per target, as `fab_minimal` (AutoAttack's
      FAB-T: 100, 1, 0.1, 1.05, 0.9).
    num_targets: target classes (at most C - 1; AutoAttack: 9).

  Returns:
    x_adv [B, ...] in [0, 1] within eps of x: the FAB point where one within eps is
    misclassified, else x.
  """
  model = as_partial(model_fn)
  params = dict(eps=eps, steps=steps, restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta)

  def toward(x, y, key, target):
    x_t, norm = fab_minimal(model, x, y, key=key, target=target, **params)
    # As AutoAttack, a fresh prediction confirms the point (it lies near the boundary).
    return x_t, (norm <= eps) & (jnp.argmax(model(x_t), axis=-1) != y)

  return over_targets(model, x, y, key, num_targets, toward, False, 'FAB-T', steps * restarts)
