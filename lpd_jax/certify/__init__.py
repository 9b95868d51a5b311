"""Certified robustness of the ensemble (paper section 4.4, Figure 2): lower bounds on the
margins F_y - F_j of the mean member logits over an L-inf ball, by IBP, CROWN-IBP or
CROWN, in JAX (no maintained JAX library does this: jax_verify fails to import on current
JAX, and the paper's auto_LiRPA is PyTorch).

    lower = certify.crown_margins(ens, x, y, eps)     # [B, C-1]; > 0 everywhere: certified
    certified = lower.min(axis=1) > 0

A bound is over x' in B_inf(x, eps) ∩ [0, 1]^d with the ensemble in evaluation mode
(BatchNorm running statistics folded into the convolutions) and raw inference. Pure: no
config, data or checkpoint imports.

* `graph`: a member network as bound propagation sees it (ResNet-18/34; toys).
* `bounds`: interval and CROWN propagation, the margin specification (eq. 8).
* `memory`: the bytes per sample a method needs, printed before a run.
* `cost`: the work of a method in forward passes; `time_estimate` turns it into seconds.
"""

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax.certify import bounds, cost, graph, memory
from lpd_jax.certify.bounds import METHODS
from lpd_jax.certify.graph import member_graph
from lpd_jax.errors import ConfigError

# Neurons per sample and layer that 'crown' bounds by CROWN (the widest unstable ones;
# the rest keep interval bounds). 256 covers every unstable neuron of a width-4 ResNet-18
# at the paper's eps on CIFAR-shaped inputs (measured by `unstable_counts`).
MAX_UNSTABLE = 256
# Neurons per backward pass of 'crown': 2 * CHUNK coefficient rows are alive at once.
CHUNK = 64


def member_graphs(ensemble, input_shape):
  """The K member `Graph`s of an `Ensemble` for inputs of shape (H, W, c)."""
  check_certifiable(ensemble)
  return [_member_graph(ensemble, i, input_shape) for i in range(ensemble.num_members)]


def _member_graph(ensemble, i, input_shape):
  variables = jax.tree.map(lambda a: a[i], ensemble.variables)
  return member_graph(ensemble.members.model, variables, tuple(input_shape))


def check_certifiable(ensemble):
  """Raises ConfigError for an inference mode whose output these bounds do not describe."""
  if ensemble.inference == 'expected' and ensemble.keep_rates is not None:
    raise ConfigError(
      "certification bounds the raw network (inference 'raw'). In 'expected' inference the "
      "heads see h * p(h), and the keep rates p are binned statistics of all members' "
      'features, piecewise constant in h: no linear relaxation here bounds them soundly. '
      'Certify with --config.eval.inference=raw.'
    )


@functools.partial(jax.jit, static_argnames=('method', 'max_unstable', 'chunk'))
def margins(
  ensemble,
  x: jax.Array,
  y: jax.Array,
  eps: float,
  method: str = 'crown',
  max_unstable: int = MAX_UNSTABLE,
  chunk: int = CHUNK,
) -> jax.Array:
  """Lower bounds of the ensemble's margins F_y - F_j (eq. 9) over B_inf(x, eps) ∩ [0, 1].

  Args:
    ensemble: an `Ensemble` (raw inference, or a method without keep rates).
    x: [B, H, W, c] in [0, 1].
    y: int labels [B].
    eps: L-inf radius.
    method: 'ibp' | 'crown_ibp' | 'crown' (`bounds.METHODS`).
    max_unstable: 'crown': neurons per sample and layer bounded by CROWN.
    chunk: 'crown': neurons per backward pass (caps the memory).

  Returns:
    [B, C-1] lower bounds, j != y in increasing order; F is the mean of member logits.
  """
  check_certifiable(ensemble)
  bounds.check_method(method)
  group = group_size(method, x.shape[0])
  if group == x.shape[0]:
    return _margins(ensemble, x, y, eps, method, max_unstable, chunk)
  # 'crown' goes through the batch `group` samples at a time: XLA's CPU convolutions switch
  # to a far hungrier algorithm above a few thousand coefficient rows per pass.
  n = x.shape[0]
  pad = -n % group
  xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(
    -1, group, *x.shape[1:]
  )
  ys = jnp.concatenate([y, jnp.zeros(pad, y.dtype)]).reshape(-1, group)
  out = jax.lax.map(
    lambda xy: _margins(ensemble, xy[0], xy[1], eps, method, max_unstable, chunk), (xs, ys)
  )
  return out.reshape(-1, out.shape[-1])[:n]


# Samples per pass of 'crown' (see `margins`).
CROWN_GROUP = 8


def group_size(method, batch):
  """Samples `margins` bounds at once for a batch of `batch`."""
  return min(batch, CROWN_GROUP) if method == 'crown' else batch


def _margins(ensemble, x, y, eps, method, max_unstable, chunk):
  x_lo, x_hi, a_logits = bounds.margin_problem(
    x, y, eps, ensemble.members.model.num_classes, ensemble.num_members
  )

  def member(variables):
    g = member_graph(ensemble.members.model, variables, x.shape[1:])
    return bounds.member_margin_terms(g, x_lo, x_hi, a_logits, method, max_unstable, chunk)

  # One member's program, run K times (`jax.lax.map`): a third of the unrolled compile.
  (a, const), interval = jax.tree.map(
    lambda t: jnp.sum(t, axis=0), jax.lax.map(member, ensemble.variables)
  )
  return bounds.combine(a, const, interval, x_lo, x_hi, method)


def memory_estimate(ensemble, input_shape, method, batch_size, chunk=CHUNK):
  """Bytes a `margins` call on `batch_size` samples needs (estimated before it compiles):
  the variables, plus `memory.bytes_per_sample` for the samples bounded at once, plus
  each sample's input and output."""
  check_certifiable(ensemble)
  graph = _member_graph(ensemble, 0, input_shape)  # members share their shapes
  per_sample = memory.bytes_per_sample([graph], method, ensemble.num_members, chunk)
  variables = sum(a.nbytes for a in jax.tree.leaves(ensemble.variables))
  num_classes = graph[-1].shape[-1]
  io = memory.FLOAT_BYTES * (2 * math.prod(input_shape) + num_classes)
  return variables + group_size(method, batch_size) * per_sample + batch_size * io


def ibp_margins(ensemble, x: jax.Array, y: jax.Array, eps: float) -> jax.Array:
  """`margins` by interval bound propagation: [B, C-1]."""
  return margins(ensemble, x, y, eps, method='ibp')


def crown_ibp_margins(ensemble, x: jax.Array, y: jax.Array, eps: float) -> jax.Array:
  """`margins` by CROWN from the output with interval bounds inside: [B, C-1]."""
  return margins(ensemble, x, y, eps, method='crown_ibp')


def crown_margins(
  ensemble, x: jax.Array, y: jax.Array, eps: float, max_unstable: int = MAX_UNSTABLE
) -> jax.Array:
  """`margins` by CROWN, intermediate bounds by CROWN too (the paper's method): [B, C-1]."""
  return margins(ensemble, x, y, eps, method='crown', max_unstable=max_unstable)


@functools.partial(jax.jit, static_argnames=('method',))
def unstable_counts(ensemble, x, eps, method='crown_ibp'):
  """Unstable ReLUs (pre-activation bounds l < 0 < u) per member, ReLU layer and sample:
  [K, layers, B] int, under `method`'s intermediate bounds ('ibp' and 'crown_ibp' share
  theirs). Above `max_unstable` in a layer, 'crown' leaves the rest with interval bounds."""
  x_lo, x_hi = bounds.box(x, eps)
  out = []
  for g in member_graphs(ensemble, x.shape[1:]):
    b = bounds.node_bounds(g, x_lo, x_hi, 'ibp' if method == 'crown_ibp' else method)
    out.append(
      jnp.stack(
        [
          jnp.sum((b[i][0] < 0) & (b[i][1] > 0), axis=tuple(range(1, x.ndim)))
          for i in graph.relu_inputs(g)
        ]
      )
    )
  return jnp.stack(out)


def forward_seconds(ensemble, x, y):
  """Seconds of one sample's forward pass through one member, timed on this machine on
  x [B, H, W, c] (the better of two calls after a warm-up, which compiles if needed)."""
  mean_logit_margins(ensemble, x, y).block_until_ready()
  best = math.inf
  for _ in range(2):
    start = time.perf_counter()
    mean_logit_margins(ensemble, x, y).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return best / (x.shape[0] * ensemble.num_members)


def time_estimate(
  ensemble,
  x,
  eps: float,
  method: str,
  num_samples: int,
  seconds_per_forward: float,
  max_unstable: int = MAX_UNSTABLE,
  chunk: int = CHUNK,
  real: int | None = None,
) -> float:
  """Estimated seconds of `margins` on `num_samples` samples like x [B, H, W, c] (the
  unstable neurons under interval bounds of its first `real` samples, all by default, stand
  for all), compilation excluded: `cost`'s
  forward equivalents times `seconds_per_forward` (`forward_seconds`). It errs high for
  'crown' (interval bounds leave more neurons unstable than CROWN's)."""
  graph = _member_graph(ensemble, 0, x.shape[1:])
  unstable = None
  if method == 'crown':
    counts = np.asarray(unstable_counts(ensemble, x, eps)).max(axis=0)[:, :real]  # [layers, B]
    unstable = cost.group_maxima(counts, group_size(method, x.shape[0]))
  work = cost.forward_equivalents(graph, method, unstable, max_unstable, chunk)
  return cost.seconds(work, num_samples, ensemble.num_members, seconds_per_forward)


@jax.jit
def mean_logit_margins(ensemble, x, y):
  """The exact margins F_y(x) - F_j(x) [B, C-1] of the mean member logits (raw inference),
  in the order of the bounds: what the bounds bound, and their eps -> 0 limit."""
  check_certifiable(ensemble)
  logits = jnp.mean(ensemble.members.logits(ensemble.variables, x), axis=0)
  spec, _ = bounds.margin_spec(y, logits.shape[-1])
  return jnp.einsum('bsc,bc->bs', spec, logits)


__all__ = [
  'CHUNK',
  'MAX_UNSTABLE',
  'METHODS',
  'bounds',
  'check_certifiable',
  'crown_ibp_margins',
  'cost',
  'crown_margins',
  'forward_seconds',
  'graph',
  'ibp_margins',
  'margins',
  'mean_logit_margins',
  'member_graphs',
  'memory_estimate',
  'memory',
  'time_estimate',
  'unstable_counts',
]
