"""Bound propagation on a `graph.Graph`: interval bounds (IBP) and CROWN's backward
linear relaxation (Zhang et al. 2018, "Efficient neural network robustness certification
with general activation functions", the paper's [38]).

Conventions. Bounds of a node are (lo, hi) [N, *shape]. A linear function of a node's
output is a coefficient tensor A [N, S, *shape] (S rows, one per bounded quantity) plus a
constant [N, S]; `backward` rewrites A·z_target + const as A'·z_node + const' for an
earlier node, valid as a *lower* bound: each ReLU y = max(z, 0) with pre-activation
bounds l < 0 < u is replaced by the line below it where its coefficient is >= 0
(y >= a z, a = 1 if u > -l else 0: CROWN's adaptive lower slope) and by the chord above
it where its coefficient is < 0 (y <= u (z - l) / (u - l)). An upper bound of q is minus
the lower bound of -q. `concretize` minimises A·z + const over a box of z.
"""

import jax
import jax.numpy as jnp

from lpd_jax import progress
from lpd_jax.certify import alpha, window
from lpd_jax.certify.graph import relu_inputs
from lpd_jax.certify.relaxation import (
  concretize,
  linear_backward,
  relu_backward,
  sum_trailing,
)

# The bound methods: (intermediate bounds, output bound).
#   'ibp':       intervals everywhere (Gowal et al. 2018), the cheap comparison.
#   'crown_ibp': intervals for the ReLU inputs, CROWN from the output (Zhang et al. 2020).
#   'crown':     CROWN for the ReLU inputs too, each layer's bounds from the tightened ones
#                before it (the paper's method).
# Every bound is intersected with the interval one (both are sound), so no method is
# looser than IBP.
METHODS = ('ibp', 'crown_ibp', 'crown')


def box(x, eps):
  """The L-inf ball of radius eps around x [N, ...] intersected with the image domain
  [0, 1] (attacks clip to it too): -> (lo, hi)."""
  return jnp.clip(x - eps, 0.0, 1.0), jnp.clip(x + eps, 0.0, 1.0)


def tick_after(report, value):
  """With `report`, one unit of progress (`progress.tick`) once `value` (arrays) is computed:
  an unordered host callback that reads one element of it, so it runs after the work. Without
  `report`, nothing: the program has no callback (and stays in the persistent cache)."""
  if report:
    jax.debug.callback(_tick, jnp.ravel(jax.tree.leaves(value)[0])[:1])


def _tick(_):
  progress.tick(1)


def interval_step(graph, index, bounds):
  """IBP through node `index` from its inputs' bounds -> (lo, hi) [N, *shape]."""
  node = graph[index]
  if node.op == 'linear':
    lo, hi = bounds[node.inputs[0]]
    center = node.apply((hi + lo) / 2) + node.bias
    radius = node.apply_abs((hi - lo) / 2)
    return center - radius, center + radius
  if node.op == 'relu':
    lo, hi = bounds[node.inputs[0]]
    return jax.nn.relu(lo), jax.nn.relu(hi)
  if node.op == 'add':
    (lo_a, hi_a), (lo_b, hi_b) = bounds[node.inputs[0]], bounds[node.inputs[1]]
    return lo_a + lo_b, hi_a + hi_b
  raise ValueError(f'no interval rule for node op {node.op!r}')


def backward(graph, target, a, bounds, down_to=0, lower_slopes=None):
  """Rewrites the lower bound A·z_target + 0 as A'·z_{down_to} + const.

  Args:
    graph: the member's `Graph`.
    target: index of the node A acts on.
    a: A [N, S, *shape of target].
    bounds: {node index: (lo, hi)}, holding the inputs of every ReLU between down_to
      and target.
    down_to: a node every path from the input to `target` passes through (0: the input).
    lower_slopes: optional {ReLU input index: alpha [N, R, *shape] in [0, 1]}, R = 1 or
      S: the lower slopes of that ReLU's unstable neurons (alpha-CROWN, `alpha.py`) in place
      of CROWN's adaptive ones; sound for every alpha in [0, 1].

  Returns:
    (A' [N, S, *shape of down_to], const [N, S]).
  """
  n, s = a.shape[:2]
  pending = {target: a}
  const = jnp.zeros((n, s), a.dtype)

  def send(index, coefficients):
    pending[index] = pending[index] + coefficients if index in pending else coefficients

  for index in range(target, down_to, -1):
    if index not in pending:
      continue
    a = pending.pop(index)
    node = graph[index]
    if node.op == 'linear':
      source = node.inputs[0]
      if not (isinstance(node.bias, float) and node.bias == 0.0):
        const = const + sum_trailing(a * node.bias, 2)
      send(source, linear_backward(node.apply, a, graph[source].shape))
    elif node.op == 'relu':
      lo, hi = bounds[node.inputs[0]]
      alpha_slopes = (lower_slopes or {}).get(node.inputs[0])
      a, relu_const = relu_backward(a, lo[:, None], hi[:, None], alpha_slopes)
      const = const + relu_const
      send(node.inputs[0], a)
    elif node.op == 'add':
      send(node.inputs[0], a)
      send(node.inputs[1], a)
    else:
      raise ValueError(f'no backward rule for node op {node.op!r}')
  return pending[down_to], const


def _tighten(
  graph, index, bounds, x_lo, x_hi, max_unstable, chunk, alpha_steps=0, windows=True, report=False
):
  """CROWN bounds for the unstable neurons of node `index` (all of them; the widest
  `max_unstable` per sample when that is not None), intersected with the bounds it has;
  with `alpha_steps` > 0, each neuron's two bounds optimised over the lower slopes of the
  unstable ReLUs before it (alpha-CROWN of intermediate bounds, `alpha.optimise`: one slope
  per neuron of every earlier ReLU per bound, CROWN's the first evaluated, the best kept);
  the others keep theirs (sound: a looser bound of a neuron only loosens what is built on
  it). A convolutional layer's neurons go back on their receptive fields only
  (`window.py`; `windows`=False: on the whole image, the same bounds, slower). Sparse: the
  neurons are ordered unstable first, widest first, and go through the backward pass
  `chunk` at a time (`jax.lax.map`, which caps the memory); a chunk holding
  no unstable neuron of any sample does no work, and stable neurons keep their interval
  bounds (no relaxation reads them), so a sample's bounds do not depend on its batch.

  Returns (lo, hi) [N, *shape] and the unstable neurons per sample that kept their interval
  bounds because of the cap [N] (0 without one)."""
  lo, hi = bounds[index]
  n, shape = lo.shape[0], lo.shape[1:]
  m = lo[0].size
  cap = m if max_unstable is None else min(max_unstable, m)
  chunk = min(chunk, cap)
  rows = -(-cap // chunk) * chunk  # whole chunks; a neuron picked twice is harmless
  flat_lo, flat_hi = lo.reshape(n, m), hi.reshape(n, m)
  unstable = (flat_lo < 0) & (flat_hi > 0)

  batch = jnp.arange(n)[:, None]

  windowed = windows and window.supported(graph, index)

  def crown_chunk(picked):  # [N, chunk] neuron indices -> their (lower, upper) bounds
    if windowed:  # each row on its neuron's receptive field (`window.py`)
      a, positions = window.rows(picked, shape, lo.dtype)

      def low_of(slopes):  # [N, 2 chunk] lower bounds of the neurons and of their negatives
        return window.lower_bounds(graph, index, a, positions, bounds, x_lo, x_hi, slopes)

      def first_slopes():
        return window.relu_windows(graph, index, positions, bounds, alpha.initial_slopes)
    else:
      unit = jax.nn.one_hot(picked, m, dtype=lo.dtype)  # [N, chunk, m]
      a = jnp.concatenate([unit, -unit], axis=1).reshape(n, 2 * chunk, *shape)

      def low_of(slopes):
        return concretize(*backward(graph, index, a, bounds, lower_slopes=slopes), x_lo, x_hi)

      def first_slopes():
        return {
          i: alpha.with_rows(alpha.initial_slopes(*bounds[i]), 0, 2 * chunk)
          for i in relu_inputs(graph)
          if i < index
        }

    slopes = first_slopes() if alpha_steps else {}
    low = alpha.optimise(low_of, slopes, alpha_steps) if slopes else low_of(None)
    # Only the unstable ones take it: a sample's bounds do not depend on its batch.
    keep = unstable[batch, picked]
    return (
      jnp.where(keep, low[:, :chunk], flat_lo[batch, picked]),
      jnp.where(keep, -low[:, chunk:], flat_hi[batch, picked]),
    )

  def bound_chunk(picked):  # a chunk with no unstable neuron in the batch keeps its bounds
    found = jax.lax.cond(
      jnp.any(unstable[batch, picked]),
      crown_chunk,
      lambda p: (flat_lo[batch, p], flat_hi[batch, p]),
      picked,
    )
    tick_after(report, found)  # a unit of `progress_units`
    return found

  # Unstable first, the widest first: at small eps only the first chunks (or none) work.
  score = jnp.where(unstable, jnp.minimum(-flat_lo, flat_hi), -jnp.inf)
  picked = jax.lax.top_k(score, cap)[1]
  picked = jnp.concatenate([picked, picked[:, : rows - cap]], axis=1)
  chunks = picked.reshape(n, rows // chunk, chunk).transpose(1, 0, 2)
  lower, upper = jax.lax.map(bound_chunk, chunks)  # [chunks, N, chunk]
  lower = lower.transpose(1, 0, 2).reshape(n, rows)
  upper = upper.transpose(1, 0, 2).reshape(n, rows)
  flat_lo, flat_hi = flat_lo.at[batch, picked].max(lower), flat_hi.at[batch, picked].min(upper)
  fell_back = jnp.maximum(jnp.sum(unstable, axis=1) - cap, 0)
  return (flat_lo.reshape(lo.shape), flat_hi.reshape(hi.shape)), fell_back


def node_bounds_and_fallbacks(
  graph, x_lo, x_hi, method, max_unstable=None, chunk=64, alpha_steps=0, windows=True, report=False
):
  """Bounds of every node for inputs in the box [x_lo, x_hi] [N, *input shape].

  Args:
    method: one of METHODS; 'crown' tightens the inputs of every ReLU by CROWN.
    max_unstable: 'crown' only: None (the default): every unstable neuron gets its CROWN
      bound; an int caps them per sample and layer (the widest first; the rest keep their
      interval bounds, and the bound is no longer CROWN's): a speed option.
    chunk: 'crown' only: neurons per backward pass (memory: 2 * chunk coefficient rows).
    alpha_steps: 'crown' only: > 0 optimises the lower slopes of every intermediate bound
      for that many steps (alpha-CROWN's intermediate bounds; `_tighten`).
    windows: 'crown' only: backward passes of convolutional layers on each neuron's
      receptive field (`window.py`); False: on the whole image (the same bounds, slower).
    report: 'crown' only: a `progress.tick` as each chunk of neurons is bounded (`tick_after`).

  Returns:
    ({node index: (lo, hi) [N, *shape]}, [ReLU inputs, N] int: per ReLU input
    (`relu_inputs` order) and sample the unstable neurons the cap left with interval
    bounds; zeros unless 'crown' with a cap that binds).
  """
  bounds = {0: (x_lo, x_hi)}
  tightened = set(relu_inputs(graph)) if method == 'crown' else set()
  fallbacks = {}
  for index in range(1, len(graph)):
    bounds[index] = interval_step(graph, index, bounds)
    if index in tightened:
      bounds[index], fallbacks[index] = _tighten(
        graph, index, bounds, x_lo, x_hi, max_unstable, chunk, alpha_steps, windows, report
      )
  n = x_lo.shape[0]
  counts = [fallbacks.get(i, jnp.zeros(n, jnp.int32)) for i in relu_inputs(graph)]
  return bounds, jnp.stack(counts).astype(jnp.int32) if counts else jnp.zeros((0, n), jnp.int32)


def node_bounds(graph, x_lo, x_hi, method, max_unstable=None, chunk=64, windows=True):
  """The bounds of `node_bounds_and_fallbacks`: {node index: (lo, hi) [N, *shape]}."""
  node, _ = node_bounds_and_fallbacks(
    graph, x_lo, x_hi, method, max_unstable, chunk, windows=windows
  )
  return node


def margin_spec(y, num_classes):
  """Eq. 8's specification: labels [N] -> (S [N, C-1, C] with rows e_y - e_j, j [N, C-1]),
  the other classes j != y in increasing order."""
  j = jnp.arange(num_classes - 1)[None, :]
  others = j + (j >= y[:, None])
  spec = jax.nn.one_hot(y, num_classes)[:, None, :] - jax.nn.one_hot(others, num_classes)
  return spec, others


def margin_problem(x, y, eps, num_classes, num_members):
  """What every member's bound starts from: the input box (lo, hi) [N, *input shape] of
  `box` and eq. 8's specification over one member's logits, S / K [N, C-1, C] (the
  ensemble output is the mean of the K member logits)."""
  x_lo, x_hi = box(x, eps)
  spec, _ = margin_spec(y, num_classes)
  return x_lo, x_hi, spec.astype(x.dtype) / num_members


def member_margin_terms(
  graph, x_lo, x_hi, a_logits, method, max_unstable=None, chunk=64, report=False
):
  """One member's share of the ensemble's margin bounds.

  Args:
    graph: the member's `Graph`, ending in logits [C].
    x_lo, x_hi: the input box [N, *input shape].
    a_logits: [N, S, C], the margin specification over this member's logits (eq. 8,
      divided by K for the mean of the member logits).
    method, max_unstable, chunk, report: see `node_bounds_and_fallbacks` (`report`: also a
      tick when the member's last pass is done).

  Returns:
    ((A [N, S, *input shape], const [N, S]): the member's CROWN linear lower bound of its
    share, A·x + const ((None, None) for 'ibp'); [N, S] its interval lower bound;
    [ReLU inputs, N] the neurons the cap left with interval bounds).
  """
  bounds, fallbacks = node_bounds_and_fallbacks(
    graph, x_lo, x_hi, method, max_unstable, chunk, report=report
  )
  last = len(graph) - 1
  # IBP: the spec folded into the last layer, then its input's interval.
  head_input = graph[last].inputs[0]
  a, const = backward(graph, last, a_logits, bounds, down_to=head_input)
  interval = concretize(a, const, *bounds[head_input])
  terms = (None, None) if method == 'ibp' else backward(graph, last, a_logits, bounds)
  tick_after(report, (terms, interval))
  return terms, interval, fallbacks


def combine(a, const, interval, x_lo, x_hi, method):
  """The members' summed terms of `member_margin_terms` -> lower bounds [N, S].

  The linear bounds are summed before the box is minimised, so the members' dependence on
  the same x is kept. Both the CROWN and the interval bound are sound; CROWN's adaptive
  slope can lose to an interval on a shallow net (a ReLU with u > -l bounded below by z,
  not by 0), so the larger is returned."""
  if method == 'ibp':
    return interval
  return jnp.maximum(concretize(a, const, x_lo, x_hi), interval)


def ensemble_margin_bounds(graphs, x, y, eps, method, max_unstable=None, chunk=64):
  """Lower bounds of the ensemble's C - 1 margins over the eps box (eqs. 8-9).

  The ensemble output is the mean of the member logits F = (1/K) sum_k z_k
  (docs/methods.md, "Ensemble");
  margin j is F_y - F_j (`member_margin_terms`, `combine`). For member graphs in a list
  (toys, tests); `lpd_jax.certify.margins` maps over an Ensemble's stacked members.

  Args:
    graphs: K member `Graph`s with the same input shape, each ending in logits [C].
    x: [N, *input shape] in [0, 1].
    y: int labels [N].
    eps: L-inf radius (a float or a traced scalar).
    method: one of METHODS.
    max_unstable, chunk: see `node_bounds_and_fallbacks`.

  Returns:
    lower bounds [N, C-1] of F_y - F_j, j != y in increasing order.
  """
  check_method(method)
  x_lo, x_hi, a_logits = margin_problem(x, y, eps, graphs[0][-1].shape[-1], len(graphs))
  terms = [
    member_margin_terms(g, x_lo, x_hi, a_logits, method, max_unstable, chunk) for g in graphs
  ]
  (a, const), interval = jax.tree.map(lambda *t: sum(t), *[t[:2] for t in terms])
  return combine(a, const, interval, x_lo, x_hi, method)


def check_method(method):
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}')
