"""Input gradients of each member's own loss: the one helper for probes, DEG, GAL, TRS and audits.

g_k = d CE(f_k(x), y) / dx (docs/methods.md, "Regularizers and other methods" and
"Probes"). The cross-entropy is written so that a confident member's gradient does not cancel to 0
in float32 (`cross_entropy`), and the whole computation can run in float64.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax.pytrees import as_partial, cast_floating


def cross_entropy(logits, y):
  """-log softmax(z)_y = softplus(logsumexp_{j != y}(z_j - z_y)); [..., C], int [...] -> [...].

  With t = logsumexp_{j != y}(z_j - z_y) and r the softmax over j != y, autodiff of this
  form gives dCE/dz_y = -sigmoid(t) sum_{j != y} r_j instead of p_y - 1, which cancels
  to 0 once 1 - p_y is below the float epsilon (6e-8 in float32): gradients of confident
  members keep full relative precision down to the underflow of p_j (~1e-38 in float32,
  ~1e-308 in float64).
  """
  z_y = jnp.take_along_axis(logits, y[..., None], axis=-1)
  is_y = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  return jax.nn.softplus(jax.nn.logsumexp(jnp.where(is_y, -jnp.inf, logits - z_y), axis=-1))


def _gradients(logits_fn, x, y):
  def member_losses(x):  # [K]: each member's cross-entropy summed over the batch
    return cross_entropy(logits_fn(x), y[None]).sum(axis=1)

  # Row k of the Jacobian is the gradient of member k's summed loss. In evaluation mode
  # samples are independent, so its slice at sample i is d CE(f_k(x_i), y_i) / dx_i.
  return jax.jacrev(member_losses)(x)


_gradients_jit = jax.jit(_gradients)


def member_input_gradients(logits_fn, x, y, *, float64=False):
  """Each member's cross-entropy gradient w.r.t. the input: g [K, B, ...].

  g[k] = d/dx sum_b CE(logits_fn(x)[k, b], y_b). Differentiable (second-order methods
  differentiate it w.r.t. the parameters) and jittable unless `float64`.

  The mode is the one of `logits_fn`:
    * evaluation mode, e.g. `Ensemble.member_logits` (BatchNorm running statistics, and
      the ensemble's inference mode): samples are independent, g[k, i] is sample i's own
      gradient d CE_k(x_i) / dx_i;
    * training mode, e.g. `lambda x: members.heads(params, members.features(variables, x,
      train=True)[0])`: BatchNorm batch statistics couple the samples, and g[k] is the
      gradient of member k's batch loss, as the DEG, GAL and TRS reference codes compute it
      (autograd of the batch loss w.r.t. the input batch).

  Args:
    logits_fn: x [B, ...] -> member logits [K, B, C]. For `float64`, a bound method of a
      pytree (such as `Ensemble.member_logits`) or a `jax.tree_util.Partial`, whose
      floating leaves are cast to float64.
    x: inputs [B, ...].
    y: int labels [B].
    float64: trace and compute in 64-bit (`jax.enable_x64`); must be called outside jit.
      Resolves gradients below float32's range (1 - p_y < ~1e-38) and removes float32
      rounding of the forward pass.

  Returns:
    [K, B, ...] gradients shaped like x; float64 when `float64=True`. To keep float64
    downstream, call the probes on them inside `jax.enable_x64(True)` too.
  """
  if not float64:
    return _gradients(logits_fn, x, y)
  fn = as_partial(logits_fn)
  if not jax.tree.leaves(fn):
    raise TypeError(
      'float64 gradients need logits_fn to be a bound method of a pytree holding its '
      'parameters (like Ensemble.member_logits, whose `variables` are cast) or a '
      f'jax.tree_util.Partial over them; got {logits_fn!r}, which holds no arrays'
    )
  with jax.enable_x64(True):
    return _gradients_jit(
      cast_floating(fn, jnp.float64), jnp.asarray(x, jnp.float64), jnp.asarray(y)
    )


def member_loss_gradients(member_logits_fn, x, y, num_members):
  """Each member's batch-mean cross-entropy and its input gradient, in one backward pass.

  The training-mode form used by the second-order methods (DEG, GAL, TRS): g_k = d CE_k / dx
  with CE_k = mean_b CE(f_k(x_b), y_b), the loss whose input gradient their reference codes
  take (`autograd.grad(criterion(m(x), y), x)`, batch-mean reduction; BatchNorm batch
  statistics in training mode couple the samples). Member k is given its own copy of x, so
  the gradient of sum_k CE_k w.r.t. the copies is all K gradients at the cost of one
  backward pass (`jax.jacrev` would take K). The result is differentiable: a loss built
  on g is differentiated w.r.t. the parameters by JAX (double backprop).

  Args:
    member_logits_fn: xs [K, B, ...] -> (logits [K, B, C], aux); member k must see xs[k]
      only (e.g. `Members.features(..., per_member_inputs=True)` then the heads).
    x: inputs [B, ...].
    y: int labels [B].
    num_members: K.

  Returns:
    (g [K, B, ...], CE_k [K], logits [K, B, C], aux). Note g is the gradient of the batch
    *mean*: sample b's slice is (1/B) d CE(f_k(x_b), y_b) / dx_b in evaluation mode.
  """

  def summed(xs):
    logits, aux = member_logits_fn(xs)
    member_ce = cross_entropy(logits, y[None]).mean(axis=1)
    return member_ce.sum(), (member_ce, logits, aux)

  xs = jnp.broadcast_to(x, (num_members, *x.shape))
  g, (member_ce, logits, aux) = jax.grad(summed, has_aux=True)(xs)
  return g, member_ce, logits, aux


def unit_vectors(g):
  """g [K, B, ...] -> u [K, B, N], each member's per-sample vector flattened (N the trailing
  size) and scaled to unit L2 norm; a zero vector stays zero.

  Each vector is first divided by its (stop-gradient) largest |entry|, which leaves the
  direction unchanged and keeps squares of tiny gradients (|g| < 1e-19 in float32) from
  underflowing; the norm's square root is taken where it is > 0 only, so derivatives stay
  finite at a zero vector.
  """
  k, b = g.shape[:2]
  g = g.reshape(k, b, -1)
  s = jax.lax.stop_gradient(jnp.max(jnp.abs(g), axis=-1, keepdims=True))
  u = g / jnp.where(s > 0, s, 1)
  sq = jnp.sum(u * u, axis=-1, keepdims=True)
  return u / jnp.sqrt(jnp.where(sq > 0, sq, 1))


def pairwise_cosines(g):
  """cos(g_i[b], g_j[b]) for every pair i < j: g [K, B, ...] -> [B, P], P = K(K-1)/2.

  Pairs in `numpy.triu_indices(K, 1)` order; the cosine is over the flattened trailing
  (input) dimensions. Safe for the probes and for training losses alike: each vector is
  first divided by its (stop-gradient) largest |entry|, which leaves the cosine unchanged
  and keeps squares of tiny gradients (|g| < 1e-19 in float32) from underflowing; a zero
  vector gives cos 0 with finite derivatives (no NaN from the norm at 0).
  """
  k = g.shape[0]
  u = unit_vectors(g)
  # HIGHEST: no TF32/bf16 passes on accelerators; cosines of interest go down to ~1e-8.
  gram = jnp.einsum('kbd,lbd->bkl', u, u, precision=jax.lax.Precision.HIGHEST)
  i, j = np.triu_indices(k, 1)
  return gram[:, i, j]


def precision(float64):
  """Context for computing on float64 gradients: `jax.enable_x64(True)` or nothing."""
  return jax.enable_x64(True) if float64 else contextlib.nullcontext()
