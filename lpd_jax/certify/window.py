"""Windowed backward passes: CROWN's intermediate bounds of convolutional layers on the
receptive field of each bounded neuron only (the idea of auto_LiRPA's `conv_mode='patches'`).

The coefficients of a backward pass from one neuron of a convolutional layer are zero
outside that neuron's receptive field, which in the first stages of a ResNet is a small part
of the image (a neuron of the fifth ReLU layer of a CIFAR ResNet-18 sees 11 x 11 of 32 x 32
pixels). Here each coefficient row lives on a window of each node: for a row bounding the
neuron at position q of the target node, node i's window starts at q * scale_i + offset_i
(per spatial axis) and has size_i positions, all static (`plan`). A convolution's transpose
maps an output window to the input window it reads (its map without padding,
`graph.Conv.valid_apply`), an 'add' node takes the union of its inputs' windows, and a node
whose window would cover more than half its positions switches to the full representation
of `bounds.backward` (then every node before it too).

Windows may reach past the image: there the ReLU bounds read as lo = hi = -1 (inactive:
slope 0, intercept 0, so the coefficients the padding received die at the next ReLU, as the
padding's zeros have no coefficient in the full pass), and the input box as [0, 0] (no
contribution). Everything else is the relaxation of `bounds.backward`, so the bounds are the
same up to float rounding (tests compare them).
"""

import dataclasses
import math
from typing import Tuple

import jax
import jax.numpy as jnp

from lpd_jax.certify.relaxation import (
  box_minimum,
  concretize,
  linear_backward,
  relu_backward,
  sum_trailing,
)

# What positions outside the image read (see the module docstring).
OUTSIDE_RELU_BOUND = -1.0
# A node whose window exceeds this share of its positions takes the full representation: a
# window holds per row what the full pass holds per sample (the ReLU bounds and slopes), so
# near-full windows cost more memory and time than they save.
FULL_AREA = 0.5


@dataclasses.dataclass(frozen=True)
class Window:
  """Per spatial axis: a row bounding target position q sees positions q * scale + offset ..
  q * scale + offset + size - 1 of the node."""

  scale: Tuple[int, int]
  offset: Tuple[int, int]
  size: Tuple[int, int]


def _union(a, b):
  if a.scale != b.scale:
    raise ValueError(f'windows of different scales meet: {a} and {b}')
  low = tuple(min(p, q) for p, q in zip(a.offset, b.offset))
  high = tuple(max(p + s, q + t) for p, s, q, t in zip(a.offset, a.size, b.offset, b.size))
  return Window(a.scale, low, tuple(h - lo for h, lo in zip(high, low)))


def _through_conv(w, conv):
  """The input window a convolution's output window `w` reads."""
  return Window(
    tuple(s * t for s, t in zip(w.scale, conv.strides)),
    tuple(o * t - p for o, t, p in zip(w.offset, conv.strides, conv.padding)),
    tuple(t * (s - 1) + k for s, t, k in zip(w.size, conv.strides, conv.kernel)),
  )


def supported(graph, target):
  """Whether a windowed pass from node `target` exists: spatial nodes [H, W, C] and only
  convolutions as linear nodes on the way to the input."""
  return (
    all(
      len(node.shape) == 3 and (node.op != 'linear' or node.conv is not None)
      for node in graph[1 : target + 1]
    )
    and len(graph[0].shape) == 3
  )


def plan(graph, target):
  """{node index: Window, or None for the full representation} of the nodes a backward pass
  from `target` visits (static: a function of the graph's shapes)."""
  proposals = {target: Window((1, 1), (0, 0), (1, 1))}
  out = {}
  for index in range(target, -1, -1):
    if index not in proposals:
      continue
    w, node = proposals[index], graph[index]
    covers = w is None or math.prod(w.size) > FULL_AREA * math.prod(node.shape[:2])
    out[index] = None if covers else w
    if index == 0:
      break
    if node.op == 'linear':
      sent = [None if covers else _through_conv(w, node.conv)]
    else:
      sent = [out[index]] * len(node.inputs)
    for source, s in zip(node.inputs, sent):
      if source in proposals:
        old = proposals[source]
        s = None if (s is None or old is None) else _union(old, s)
      proposals[source] = s
  return out


def _pads(w, shape, target_shape):
  """Static padding (low, high) per spatial axis so that every row's window of a node of
  `shape` lies inside the padded node."""
  pads = []
  for axis in range(2):
    first = w.offset[axis]
    last = (target_shape[axis] - 1) * w.scale[axis] + w.offset[axis] + w.size[axis]
    pads.append((max(0, -first), max(0, last - shape[axis])))
  return pads


def _origins(positions, w):  # positions [N, R, 2] -> window origins [N, R, 2]
  return positions * jnp.asarray(w.scale) + jnp.asarray(w.offset)


def gather(values, positions, w, target_shape, fill):
  """Each row's window of a node's values [N, H, W, C]: -> [N, R, *w.size, C] (`fill`
  outside the node)."""
  pads = _pads(w, values.shape[1:3], target_shape)
  padded = jnp.pad(values, ((0, 0), *pads, (0, 0)), constant_values=fill)
  start = _origins(positions, w) + jnp.asarray([p[0] for p in pads])

  def one(v, o):
    return jax.lax.dynamic_slice(v, (o[0], o[1], 0), (*w.size, v.shape[-1]))

  return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(padded, start)


def embed(a, positions, w, shape):
  """Windowed coefficients [N, R, *w.size, C] -> the full representation [N, R, *shape]:
  placed by one-hot matrices per axis (no padded copy per row), positions outside the node
  dropped (the full pass has no coefficient there)."""
  origins = _origins(positions, w)  # [N, R, 2]
  place = [  # [N, R, size, extent]: 1 where window position i lands on node position p
    (
      origins[..., axis, None, None] + jnp.arange(w.size[axis])[:, None] == jnp.arange(shape[axis])
    ).astype(a.dtype)
    for axis in range(2)
  ]
  a = jnp.einsum('nrijc,nrip->nrpjc', a, place[0])
  return jnp.einsum('nrpjc,nrjq->nrpqc', a, place[1])


def _resize(a, source, dest):
  """Coefficients on window `source` -> on the larger window `dest` of the same node."""
  low = [d - s for s, d in zip(source.offset, dest.offset)]
  pad = [(-lo, dz - sz + lo) for lo, sz, dz in zip(low, source.size, dest.size)]
  return jnp.pad(a, ((0, 0), (0, 0), *pad, (0, 0)))


def relu_windows(graph, target, positions, bounds, values_of):
  """{ReLU input index: values_of(lo, hi) on the windows (or full) of the ReLU reading it}
  for the ReLUs a pass from `target` crosses: the starting slopes of alpha-CROWN."""
  layout = plan(graph, target)
  n, r = positions.shape[:2]
  out = {}
  for index, w in layout.items():
    node = graph[index]
    if node.op != 'relu':
      continue
    lo, hi = bounds[node.inputs[0]]
    if w is None:
      values = values_of(lo, hi)[:, None]
      out[node.inputs[0]] = jnp.broadcast_to(values, (n, r, *values.shape[2:]))
    else:
      lo_w = gather(lo, positions, w, graph[target].shape, OUTSIDE_RELU_BOUND)
      hi_w = gather(hi, positions, w, graph[target].shape, OUTSIDE_RELU_BOUND)
      out[node.inputs[0]] = values_of(lo_w, hi_w)
  return out


def lower_bounds(graph, target, a, positions, bounds, x_lo, x_hi, lower_slopes=None):
  """min over the input box of A·z_target, by a windowed backward pass.

  Args:
    graph: a member `Graph` (`supported(graph, target)`).
    target: the node whose neurons are bounded.
    a: [N, R, 1, 1, C] each row's coefficients at its own position (its 1 x 1 window).
    positions: [N, R, 2] int, each row's (h, w) position in the target node.
    bounds: {node index: (lo, hi) [N, *shape]} of every ReLU input before `target`.
    x_lo, x_hi: the input box [N, H, W, c].
    lower_slopes: optional {ReLU input index: alpha on the ReLU's window [N, R, *size, C]
      (or [N, R, *shape] where the plan is full)}: alpha-CROWN's lower slopes.

  Returns:
    [N, R] lower bounds.
  """
  layout = plan(graph, target)
  target_shape = graph[target].shape
  n, r = a.shape[:2]
  const = jnp.zeros((n, r), a.dtype)
  pending = {}

  def send(index, coefficients, w):
    dest = layout[index]
    if dest is None and w is not None:
      coefficients = embed(coefficients, positions, w, graph[index].shape)
    elif dest is not None and dest != w:
      coefficients = _resize(coefficients, w, dest)
    pending[index] = pending[index] + coefficients if index in pending else coefficients

  pending[target] = a
  if layout[target] is None:  # a target too small for windows: its full one-hot rows
    pending[target] = embed(a, positions, Window((1, 1), (0, 0), (1, 1)), target_shape)
  for index in range(target, 0, -1):
    if index not in pending:
      continue
    a, w, node = pending.pop(index), layout[index], graph[index]
    if node.op == 'linear':
      const = const + sum_trailing(a * node.bias, 2)
      source = node.inputs[0]
      if w is None:
        send(source, linear_backward(node.apply, a, graph[source].shape), None)
      else:
        sent = _through_conv(w, node.conv)
        in_shape = (*sent.size, graph[source].shape[-1])
        send(source, linear_backward(node.conv.valid_apply, a, in_shape), sent)
    elif node.op == 'relu':
      lo, hi = bounds[node.inputs[0]]
      if w is not None:
        lo = gather(lo, positions, w, target_shape, OUTSIDE_RELU_BOUND)
        hi = gather(hi, positions, w, target_shape, OUTSIDE_RELU_BOUND)
      else:
        lo, hi = lo[:, None], hi[:, None]
      alpha_slopes = (lower_slopes or {}).get(node.inputs[0])
      a, relu_const = relu_backward(a, lo, hi, alpha_slopes)
      const = const + relu_const
      send(node.inputs[0], a, w)
    elif node.op == 'add':
      for source in node.inputs:
        send(source, a, w)
    else:
      raise ValueError(f'no backward rule for node op {node.op!r}')
  a, w = pending.pop(0), layout[0]
  if w is None:
    return concretize(a, const, x_lo, x_hi)
  lo = gather(x_lo, positions, w, target_shape, 0.0)
  hi = gather(x_hi, positions, w, target_shape, 0.0)
  return box_minimum(a, lo, hi) + const


def rows(picked, shape, dtype=jnp.float32):
  """Neuron indices [N, P] of a node of `shape` (H, W, C), flattened -> (coefficients
  [N, 2P, 1, 1, C]: +e and -e of each neuron's channel, positions [N, 2P, 2])."""
  _, w, c = shape
  pos = jnp.stack([picked // (w * c), (picked // c) % w], axis=-1)
  unit = jax.nn.one_hot(picked % c, c, dtype=dtype)[:, :, None, None, :]
  return jnp.concatenate([unit, -unit], axis=1), jnp.concatenate([pos, pos], axis=1)
