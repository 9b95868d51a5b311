"""The pieces of a linear relaxation every bound pass shares: minimising a linear function
over a box, and the lines that bound a ReLU on an interval (CROWN, Zhang et al. 2018)."""

import jax.numpy as jnp


def sum_trailing(a, start):
  """Sums a over its axes from `start` on: [N, S, ...] -> [N, S] for start 2."""
  return jnp.sum(a, axis=tuple(range(start, a.ndim)))


def concretize(a, const, lo, hi):
  """min of A·z + const over lo <= z <= hi: A [N, S, *shape], const [N, S], lo/hi
  [N, *shape] -> [N, S]."""
  center, radius = (hi + lo) / 2, (hi - lo) / 2
  return (
    sum_trailing(a * center[:, None], 2) - sum_trailing(jnp.abs(a) * radius[:, None], 2) + const
  )


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
