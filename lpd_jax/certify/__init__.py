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

from lpd_jax.certify import alpha, bounds, cost, graph, memory, passes
from lpd_jax.certify.graph import member_graph
from lpd_jax.certify.passes import CROWN_GROUP, group_size, in_groups
from lpd_jax.errors import ConfigError

# The bounds, loosest first: intervals (IBP), CROWN from the output over interval bounds
# (CROWN-IBP), CROWN everywhere (the paper's), and CROWN with optimised slopes (alpha-CROWN).
METHODS = (*bounds.METHODS, 'alpha_crown')

# Neurons per sample and layer that 'crown' bounds by CROWN: None, every unstable one (full
# CROWN). A number caps them (the widest first; the rest keep interval bounds): a speed
# option whose bound is no longer CROWN's. The old default of 256 left 15 of the 17 ReLU
# layers of a width-4 ResNet-18 at CIFAR size mostly to intervals (up to 2,679 unstable
# neurons a layer), six orders of magnitude looser than CROWN.
MAX_UNSTABLE = None
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


def margins(
  ensemble,
  x: jax.Array,
  y: jax.Array,
  eps: float,
  method: str = 'crown',
  max_unstable: int | None = MAX_UNSTABLE,
  chunk: int = CHUNK,
  alpha_steps: int = alpha.STEPS,
  alpha_intermediate: bool = True,
) -> jax.Array:
  """Lower bounds of the ensemble's margins F_y - F_j (eq. 9) over B_inf(x, eps) ∩ [0, 1].

  Args:
    ensemble: an `Ensemble` (raw inference, or a method without keep rates).
    x: [B, H, W, c] in [0, 1].
    y: int labels [B].
    eps: L-inf radius.
    method: one of METHODS: 'ibp' | 'crown_ibp' | 'crown' | 'alpha_crown' (with
      `alpha_crown_margins`' default steps).
    max_unstable: 'crown', 'alpha_crown': None (full CROWN), or the unstable neurons per
      sample and layer bounded by CROWN, the rest by intervals (`margins_and_fallbacks`
      counts those).
    chunk: 'crown', 'alpha_crown': neurons per backward pass (caps the memory).
    alpha_steps: 'alpha_crown': optimisation steps (`alpha_crown_margins`).
    alpha_intermediate: 'alpha_crown': optimise the intermediate bounds' slopes too (the
      reference's default; about 3 * alpha_steps times CROWN's work) or only the last pass's.

  Returns:
    [B, C-1] lower bounds, j != y in increasing order; F is the mean of member logits.
  """
  return margins_and_fallbacks(
    ensemble,
    x,
    y,
    eps,
    method=method,
    max_unstable=max_unstable,
    chunk=chunk,
    alpha_steps=alpha_steps,
    alpha_intermediate=alpha_intermediate,
  )[0]


@functools.partial(
  jax.jit,
  static_argnames=(
    'method',
    'max_unstable',
    'chunk',
    'alpha_steps',
    'alpha_intermediate',
    'report',
  ),
)
def margins_and_fallbacks(
  ensemble,
  x: jax.Array,
  y: jax.Array,
  eps: float,
  method: str = 'crown',
  max_unstable: int | None = MAX_UNSTABLE,
  chunk: int = CHUNK,
  alpha_steps: int = alpha.STEPS,
  alpha_intermediate: bool = True,
  report: bool = False,
):
  """`margins` [B, C-1], and [K, ReLU layers, B] the unstable neurons per member, layer and
  sample that the cap `max_unstable` left with interval bounds (zeros without a cap).
  `report`: a `progress.tick` per unit of `progress_units` as it is done (host callbacks: a
  program with them is not kept in JAX's persistent cache)."""
  check_certifiable(ensemble)
  check_method(method)
  if method == 'alpha_crown':
    bound = functools.partial(_alpha_margins, steps=alpha_steps, intermediate=alpha_intermediate)
  else:
    bound = functools.partial(_margins, method=method)
  lower, fallbacks = in_groups(
    lambda xg, yg: bound(ensemble, xg, yg, eps, max_unstable, chunk, report=report),
    x,
    y,
    group_size(method, x.shape[0]),
  )
  return lower, jnp.moveaxis(fallbacks, 0, -1)  # [K, layers, B]


def check_method(method):
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}')


def progress_units(ensemble, input_shape, batch, method, max_unstable, chunk, alpha_steps):
  """The units of progress of `margins_and_fallbacks(..., report=True)` on `batch` samples
  (`passes.progress_units`: chunks of neurons and last passes)."""
  g = _member_graph(ensemble, 0, input_shape)  # members share their shapes
  return passes.progress_units(
    g, method, batch, ensemble.num_members, max_unstable, chunk, alpha_steps
  )


def _margins(ensemble, x, y, eps, max_unstable, chunk, method, report=False):
  """-> (lower bounds [N, C-1], fallbacks [N, K, layers]) by `method`."""
  x_lo, x_hi, a_logits = bounds.margin_problem(
    x, y, eps, ensemble.members.model.num_classes, ensemble.num_members
  )

  def member(variables):
    g = member_graph(ensemble.members.model, variables, x.shape[1:])
    return bounds.member_margin_terms(g, x_lo, x_hi, a_logits, method, max_unstable, chunk, report)

  # One member's program, run K times (`jax.lax.map`): a third of the unrolled compile.
  terms, interval, fallbacks = jax.lax.map(member, ensemble.variables)
  (a, const), interval = jax.tree.map(lambda t: jnp.sum(t, axis=0), (terms, interval))
  lower = bounds.combine(a, const, interval, x_lo, x_hi, method)
  return lower, jnp.moveaxis(fallbacks, -1, 0)  # [N, K, layers]


@functools.partial(
  jax.jit, static_argnames=('steps', 'shared', 'intermediate', 'max_unstable', 'chunk')
)
def alpha_crown_margins(
  ensemble,
  x: jax.Array,
  y: jax.Array,
  eps: float,
  steps: int = alpha.STEPS,
  learning_rate: float = alpha.LEARNING_RATE,
  shared: bool = False,
  intermediate: bool = True,
  max_unstable: int | None = MAX_UNSTABLE,
  chunk: int = CHUNK,
) -> jax.Array:
  """`margins` [B, C-1] by alpha-CROWN (`alpha.py`): the lower ReLU slopes optimised by
  `steps` projected Adam steps, first those of every intermediate bound (`intermediate`: per
  bounded neuron, each bound on its own, as the reference's CROWN-Optimized does by default;
  False: CROWN's intermediate bounds), then the last backward pass's (per unstable neuron and
  margin; `shared`: one per neuron for all margins). Each optimisation starts from CROWN's
  slopes and keeps its best, and every slope in [0, 1] is sound."""
  check_certifiable(ensemble)
  settings = dict(
    steps=steps, learning_rate=learning_rate, shared=shared, intermediate=intermediate
  )
  return in_groups(
    lambda xg, yg: _alpha_margins(ensemble, xg, yg, eps, max_unstable, chunk, **settings),
    x,
    y,
    group_size('alpha_crown', x.shape[0]),
  )[0]


def _alpha_margins(
  ensemble,
  x,
  y,
  eps,
  max_unstable,
  chunk,
  steps=alpha.STEPS,
  learning_rate=alpha.LEARNING_RATE,
  shared=False,
  intermediate=True,
  report=False,
):
  """-> (lower bounds [N, C-1], fallbacks [N, K, layers]) by alpha-CROWN."""
  model = ensemble.members.model
  x_lo, x_hi, a_logits = bounds.margin_problem(x, y, eps, model.num_classes, ensemble.num_members)
  layers = graph.relu_inputs(_member_graph(ensemble, 0, x.shape[1:]))  # members share them

  def member_bounds(variables):  # CROWN's bounds of the ReLU inputs, and the interval bound
    g = member_graph(model, variables, x.shape[1:])
    b, fell_back = bounds.node_bounds_and_fallbacks(
      g, x_lo, x_hi, 'crown', max_unstable, chunk, steps if intermediate else 0, report=report
    )
    head = g[-1].inputs[0]
    a, const = bounds.backward(g, len(g) - 1, a_logits, b, down_to=head)
    interval = bounds.concretize(a, const, *b[head])
    bounds.tick_after(report, interval)
    return {i: b[i] for i in layers}, interval, fell_back

  relu_bounds, interval, fallbacks = jax.lax.map(member_bounds, ensemble.variables)  # [K, ...]
  rows = 1 if shared else a_logits.shape[1]
  slopes = {
    i: alpha.with_rows(alpha.initial_slopes(lo, hi), 1, rows) for i, (lo, hi) in relu_bounds.items()
  }

  def lower_bound(slopes):  # [N, C-1], sound for every slope in [0, 1]
    def member(args):
      variables, b, s = args
      g = member_graph(model, variables, x.shape[1:])
      return bounds.backward(g, len(g) - 1, a_logits, b, lower_slopes=s)

    a, const = jax.lax.map(member, (ensemble.variables, relu_bounds, slopes))
    return bounds.concretize(jnp.sum(a, 0), jnp.sum(const, 0), x_lo, x_hi)

  tick = functools.partial(bounds.tick_after, report)
  best = alpha.optimise(lower_bound, slopes, steps, learning_rate, on_step=tick)
  lower = jnp.maximum(best, jnp.sum(interval, axis=0))
  return lower, jnp.moveaxis(fallbacks, -1, 0)


def memory_estimate(
  ensemble, input_shape, method, batch_size, chunk=CHUNK, alpha_intermediate=True
):
  """Bytes a `margins` call on `batch_size` samples needs (estimated before it compiles):
  the variables, plus `memory.bytes_per_sample` for the samples bounded at once, plus
  each sample's input and output."""
  check_certifiable(ensemble)
  graph = _member_graph(ensemble, 0, input_shape)  # members share their shapes
  per_sample = memory.bytes_per_sample(
    [graph], method, ensemble.num_members, chunk, alpha_intermediate
  )
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
  ensemble, x: jax.Array, y: jax.Array, eps: float, max_unstable: int | None = MAX_UNSTABLE
) -> jax.Array:
  """`margins` by CROWN, intermediate bounds by CROWN too (the paper's method): [B, C-1]."""
  return margins(ensemble, x, y, eps, method='crown', max_unstable=max_unstable)


@functools.partial(jax.jit, static_argnames=('method',))
def unstable_counts(ensemble, x, eps, method='crown_ibp'):
  """Unstable ReLUs (pre-activation bounds l < 0 < u) per member, ReLU layer and sample:
  [K, layers, B] int, under `method`'s intermediate bounds ('ibp' and 'crown_ibp' share
  theirs)."""
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
  max_unstable: int | None = MAX_UNSTABLE,
  chunk: int = CHUNK,
  real: int | None = None,
  alpha_steps: int = alpha.STEPS,
  alpha_intermediate: bool = True,
) -> float:
  """Estimated seconds of `margins` on `num_samples` samples like x [B, H, W, c] (the
  unstable neurons under interval bounds of its first `real` samples, all by default, stand
  for all), compilation excluded: `cost`'s
  forward equivalents times `seconds_per_forward` (`forward_seconds`). It errs high for
  'crown' and 'alpha_crown' (interval bounds leave more neurons unstable than CROWN's)."""
  graph = _member_graph(ensemble, 0, x.shape[1:])
  unstable = None
  if method in ('crown', 'alpha_crown'):
    counts = np.asarray(unstable_counts(ensemble, x, eps)).max(axis=0)[:, :real]  # [layers, B]
    unstable = cost.group_maxima(counts, group_size(method, x.shape[0]))
  work = cost.forward_equivalents(
    graph, method, unstable, max_unstable, chunk, alpha_steps, alpha_intermediate
  )
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
  'CROWN_GROUP',
  'MAX_UNSTABLE',
  'METHODS',
  'alpha',
  'alpha_crown_margins',
  'bounds',
  'check_certifiable',
  'check_method',
  'crown_ibp_margins',
  'cost',
  'crown_margins',
  'forward_seconds',
  'in_groups',
  'graph',
  'passes',
  'progress_units',
  'ibp_margins',
  'margins',
  'margins_and_fallbacks',
  'mean_logit_margins',
  'member_graphs',
  'memory_estimate',
  'memory',
  'time_estimate',
  'unstable_counts',
]
