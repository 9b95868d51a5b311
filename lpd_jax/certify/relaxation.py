"""The pieces of a linear relaxation every bound pass shares: minimising a linear function
over a box, and the lines that bound a ReLU on an interval (CROWN, Zhang et al. 2018)."""

import jax
import jax.numpy as jnp


def sum_trailing(a, start):
  """Sums a over its axes from `start` on: [N, S, ...] -> [N, S] for start 2."""
  return jnp.sum(a, axis=tuple(range(start, a.ndim)))


def box_minimum(a, lo, hi):
  """min of A·z over lo <= z <= hi: A [N, S, *shape], lo/hi broadcastable to it -> [N, S]."""
  center, radius = (hi + lo) / 2, (hi - lo) / 2
  return sum_trailing(a * center - jnp.abs(a) * radius, 2)


def concretize(a, const, lo, hi):
  """min of A·z + const over lo <= z <= hi: A [N, S, *shape], const [N, S], lo/hi
  [N, *shape] -> [N, S]."""
  return box_minimum(a, lo[:, None], hi[:, None]) + const


def relu_relaxation(lo, hi):
  """ReLU relaxation for pre-activation bounds [lo, hi]: -> (lower slope, upper slope, upper
  intercept), each like lo: max(z, 0) >= lower_slope * z and <= upper_slope * z + intercept
  on [lo, hi]. Stable neurons get their exact line (slope 1 or 0, intercept 0)."""
  active = (lo >= 0).astype(lo.dtype)
  unstable = (lo < 0) & (hi > 0)
  width = jnp.where(unstable, hi - lo, 1.0)
  upper_slope = jnp.where(unstable, hi / width, active)
  upper_intercept = jnp.where(unstable, -hi * lo / width, 0.0)
  lower_slope = jnp.where(unstable, (hi > -lo).astype(lo.dtype), active)
  return lower_slope, upper_slope, upper_intercept


def linear_backward(apply, a, in_shape):
  """A·apply(z) as coefficients on z: A [N, S, *out] of a linear map `apply` (z [M, *in_shape]
  -> [M, *out]) -> [N, S, *in_shape] (its transpose).

  The transpose is `apply`'s VJP at 0 (for a linear map, the same map as
  `jax.linear_transpose`'s): a VJP goes through a model convolution's own rule
  (`models.conv`, fast inside the `lax.map` loops the bounds run in on XLA:CPU), which
  `linear_transpose` would bypass; the forward pass at 0 is dead code XLA removes."""
  n, s = a.shape[:2]
  _, transpose = jax.vjp(apply, jnp.zeros((n * s, *in_shape), a.dtype))
  (prev,) = transpose(a.reshape(n * s, *a.shape[2:]))
  return prev.reshape(n, s, *in_shape)


def relu_backward(a, lo, hi, lower_slopes=None):
  """CROWN's rule through a ReLU for a lower bound A·y, y = max(z, 0): A [N, S, *shape] and
  the bounds lo, hi of z (broadcastable to A) -> (coefficients on z, constant [N, S]): the
  lower line where A >= 0, the chord where A < 0. `lower_slopes` (alpha-CROWN, like A or
  broadcastable): the lower slopes of the unstable neurons instead of CROWN's adaptive ones."""
  lower_slope, upper_slope, intercept = relu_relaxation(lo, hi)
  if lower_slopes is not None:
    lower_slope = jnp.where((lo < 0) & (hi > 0), lower_slopes, lower_slope)
  positive, negative = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
  return positive * lower_slope + negative * upper_slope, sum_trailing(negative * intercept, 2)
