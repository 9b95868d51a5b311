"""Input gradients of each member's own loss: the one helper for probes, DEG, GAL, TRS and audits.

g_k = d CE(f_k(x), y) / dx (METHODS.md "Regularizers and other methods", "Probes"). The
cross-entropy is written so that a confident member's gradient does not cancel to 0
in float32 (`cross_entropy`), and the whole computation can run in float64.
"""

import contextlib

import jax
import jax.numpy as jnp

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


def precision(float64):
  """Context for computing on float64 gradients: `jax.enable_x64(True)` or nothing."""
  return jax.enable_x64(True) if float64 else contextlib.nullcontext()
