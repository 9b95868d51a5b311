"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"): APGD-CE and APGD-DLR, untargeted or targeted.

A strong attack (docs/methods.md, "Strong attacks"): PGD with a step size that starts at
2 eps and is halved at checkpoints where the loss stopped improving (and the iterate restarted from
the best point), plus momentum 0.75 after the first step. The schedule, the checkpoint
rules and the DLR losses follow the authors' reference code (fra31/auto-attack,
autopgd_base.py), read for the facts; this implementation is written for JAX: one jitted
`lax.fori_loop`, per-sample state, no host round trips (where progress is asked for, the same
loop in chunks on the host: `common.host_loop`).

The model is `model_fn(x) -> [B, C]` log-probabilities, as for every attack here. DLR is
computed on them: for one softmax, log-probability differences are logit differences, so
DLR is the authors' (and, like theirs, invariant to a scale of the logits); for an ensemble
it is DLR of the log mean softmax (eq. 1).
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax.attacks.common import (
  as_partial,
  cross_entropy,
  host_loop,
  on_host,
  over_targets,
  sample_keys,
)

LOSSES = ('ce', 'dlr')


def dlr(log_probs, y, target=None):
  """Difference of logits ratio [B] (Croce & Hein 2020, eq. 4; targeted: eq. 5).

  Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12); targeted:
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), pi the classes by decreasing z.
  Needs C >= 3 (untargeted) or C >= 4 (targeted).
  """
  z_sorted = jnp.sort(log_probs, axis=-1)
  z_y = jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
  if target is None:
    top_is_y = jnp.argmax(log_probs, axis=-1) == y
    z_other = jnp.where(top_is_y, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)
  z_t = jnp.take_along_axis(log_probs, target[:, None], axis=-1)[:, 0]
  return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def checkpoint_schedule(steps):
  """The iterations (0-based) after which the step size may be halved, and the window
  length at each: the first after max(int(0.22 N), 1) iterations, then windows shrinking
  by max(int(0.03 N), 1) down to max(int(0.06 N), 1) (the reference's n_iter_2,
  size_decr, n_iter_min). -> (is_check bool [N], window int [N])."""
  first, decrease, minimum = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
  is_check, window = np.zeros(steps, bool), np.zeros(steps, np.int32)
  counter, k = 0, first
  for i in range(steps):
    counter += 1
    if counter == k:
      is_check[i], window[i] = True, k
      k, counter = max(k - decrease, minimum), 0
  return is_check, window


def _apgd_loop(model, x, y, target, key, eps, *, steps, loss, rho=0.75):
  """APGD's loop as `host_loop` takes it: (start() -> state, body(i, state), end(state))."""
  axes = (-1,) + (1,) * (x.ndim - 1)
  per_sample = lambda v: v.reshape(axes)

  def objective(x_adv):
    log_probs = model(x_adv)
    if loss == 'ce':
      values = cross_entropy(log_probs, y)
    else:
      values = dlr(log_probs, y, target)
    return values.sum(), (values, log_probs)

  value_and_grad = jax.value_and_grad(objective, has_aux=True)

  def project(v):
    return jnp.clip(jnp.clip(v, x - eps, x + eps), 0.0, 1.0)

  def start():
    noise = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], minval=-1.0, maxval=1.0))(
      sample_keys(key, x.shape[0])
    )
    x0 = project(x + eps * noise)
    (_, (f0, logp0)), g0 = value_and_grad(x0)
    correct0 = jnp.argmax(logp0, -1) == y
    return dict(
      x=x0,
      x_old=x0,
      g=g0,
      f=f0,
      step=jnp.full(x.shape[0], 2.0 * eps),
      x_best=x0,
      f_best=f0,
      g_best=g0,
      correct=correct0,
      x_adv=jnp.where(per_sample(correct0), x, x0),
      increases=jnp.zeros(x.shape[0], jnp.int32),
      f_best_last_check=f0,
      reduced_last_check=jnp.ones(x.shape[0], bool),
    )

  is_check, window = map(jnp.asarray, checkpoint_schedule(steps))

  def body(i, s):
    momentum = jnp.where(i > 0, 0.75, 1.0)
    z = project(s['x'] + per_sample(s['step']) * jnp.sign(s['g']))
    x_new = project(s['x'] + (z - s['x']) * momentum + (s['x'] - s['x_old']) * (1 - momentum))
    (_, (f_new, log_probs)), g_new = value_and_grad(x_new)
    wrong = jnp.argmax(log_probs, -1) != y
    improved = f_new > s['f_best']
    s = dict(
      s,
      x_old=s['x'],
      correct=s['correct'] & ~wrong,
      x_adv=jnp.where(per_sample(wrong & s['correct']), x_new, s['x_adv']),
      increases=s['increases'] + (f_new > s['f']).astype(jnp.int32),
      x_best=jnp.where(per_sample(improved), x_new, s['x_best']),
      g_best=jnp.where(per_sample(improved), g_new, s['g_best']),
      f_best=jnp.where(improved, f_new, s['f_best']),
      f=f_new,
    )
    # Checkpoint: halve the step where the loss rose in at most rho of the window's steps,
    # or where nothing improved since the last checkpoint and the step was not just halved;
    # those samples restart from their best point.
    oscillating = s['increases'] <= window[i] * rho
    stalled = ~s['reduced_last_check'] & (s['f_best_last_check'] >= s['f_best'])
    reduce = is_check[i] & (oscillating | stalled)
    checked = lambda new, old: jnp.where(is_check[i], new, old)
    return dict(
      s,
      step=jnp.where(reduce, s['step'] / 2, s['step']),
      x=jnp.where(per_sample(reduce), s['x_best'], x_new),
      g=jnp.where(per_sample(reduce), s['g_best'], g_new),
      increases=checked(jnp.zeros_like(s['increases']), s['increases']),
      reduced_last_check=checked(reduce, s['reduced_last_check']),
      f_best_last_check=checked(s['f_best'], s['f_best_last_check']),
    )

  def end(s):  # a misclassified iterate where one was found, else the point of highest loss
    return jnp.where(per_sample(s['correct']), s['x_best'], s['x_adv'])

  return start, body, end


@functools.partial(jax.jit, static_argnames=('steps', 'loss'))
def _apgd(model, x, y, target, key, eps, *, steps, loss):
  start, body, end = _apgd_loop(model, x, y, target, key, eps, steps=steps, loss=loss)
  return end(jax.lax.fori_loop(0, steps, body, start()))


def _run(model, x, y, target, key, eps, steps, loss, what):
  """`_apgd`, or its loop split on the host where progress is asked for (`host_loop`)."""
  args = (model, x, y, target, key, eps)
  if on_host(args):
    return host_loop(_apgd_loop, args, dict(steps=steps, loss=loss), steps, what=what)
  return _apgd(*args, steps=steps, loss=loss)


def apgd(
  model_fn: Callable,
  x: jax.Array,
  y: jax.Array,
  *,
  key: jax.Array,
  eps: float,
  steps: int = 100,
  loss: str = 'ce',
  targeted: bool = False,
  num_targets: int = 9,
) -> jax.Array:
  """APGD (L-inf) on the cross-entropy or DLR loss; targeted DLR over the top classes.

  Args:
    model_fn: x [B, ...] -> log-probabilities [B, C] (see `pgd`).
    x: inputs [B, ...] in [0, 1].
    y: int labels [B].
    key: PRNG key for the random start (sample i's from fold_in(key, i); each target
      class of a targeted run folds in its rank).
    eps: L-inf radius.
    steps: iterations per run (the authors: 100).
    loss: 'ce' or 'dlr'.
    targeted: with loss='dlr', one run per target class: the classes ranked 2nd to
      (num_targets + 1)th by the model on x (the authors' APGD-T, 9 targets); per sample
      the first run that misclassifies is kept, else the last.
    num_targets: target classes of a targeted run (at most C - 1).

  Returns:
    x_adv [B, ...] in [0, 1] and within eps of x: a misclassified iterate where one was
    found, else the iterate of highest loss.
  """
  if loss not in LOSSES:
    raise ValueError(f'loss must be one of {LOSSES}, got {loss!r}')
  if targeted and loss != 'dlr':
    raise ValueError("targeted APGD uses loss='dlr' (the authors' APGD-T)")
  model = as_partial(model_fn)
  if not targeted:
    return _run(model, x, y, None, key, eps, steps, loss, f'APGD-{loss.upper()}')

  def toward(x, y, key, target):  # only the points no earlier target fooled (as AutoAttack)
    x_t = _run(model, x, y, target, key, eps, steps, 'dlr', 'APGD-T')
    return x_t, jnp.argmax(model(x_t), -1) != y

  return over_targets(model, x, y, key, num_targets, toward, True, 'APGD-T', steps)
