"""One member network as a graph of the operations bound propagation understands.

A `Graph` is a tuple of `Node`s in topological order: node 0 is the input, the last node
the member's logits [C]. Every node holds one sample's output shape; the functions of a
node act on a leading batch axis N:

  'input'   x [N, H, W, c]
  'linear'  y = apply(z) + bias, `apply` linear in z (a convolution with its BatchNorm
            folded in evaluation mode, a global average pool, a Dense layer);
            `apply_abs` is z -> |apply|(z), the same operation with |weights| (IBP).
  'relu'    y = max(z, 0)
  'add'     y = z_a + z_b (a residual connection)

`resnet_graph` builds the graph of a `models.ResNet` member (ResNet-18, ResNet-34) from
its variables; `dense_graph` builds fully connected toys for tests and small models.
`forward` evaluates a graph at points, which tests compare with the Flax model.
"""

import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from lpd_jax.models import conv
from lpd_jax.models.resnet import ResNet

# Flax's BatchNorm default (nn.BatchNorm(epsilon=1e-5)); the models do not change it.
BATCHNORM_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class Node:
  """One operation of a `Graph` (see the module docstring).

  Attributes:
    op: 'input' | 'linear' | 'relu' | 'add'.
    inputs: indices of the nodes it reads (() for the input, two for 'add').
    shape: one sample's output shape.
    apply: 'linear' only: z [N, *in] -> [N, *shape], linear (no bias).
    apply_abs: 'linear' only: the same map with absolute weights.
    bias: 'linear' only: broadcastable to `shape`.
    conv: 'linear' convolutions only: a `Conv` (its geometry, for windowed backward passes,
      `window.py`); None for other linear maps.
  """

  op: str
  inputs: Tuple[int, ...]
  shape: Tuple[int, ...]
  apply: Optional[Callable] = None
  apply_abs: Optional[Callable] = None
  bias: Any = None
  conv: Optional['Conv'] = None


@dataclasses.dataclass(frozen=True)
class Conv:
  """The geometry of a convolution node: output position p (per spatial axis) reads input
  positions strides * p - padding .. strides * p - padding + kernel - 1; `valid_apply` is the
  node's map without padding (z [N, h, w, c_in] -> [N, (h - kernel) / strides + 1, ...])."""

  kernel: Tuple[int, int]
  strides: Tuple[int, int]
  padding: Tuple[int, int]  # the low side's
  valid_apply: Callable


Graph = Tuple[Node, ...]


class Builder:
  """Builds a `Graph` node by node; each method returns the new node's index.

  `Builder((d,))` starts from an input of shape (d,); `graph()` returns the tuple.
  """

  def __init__(self, input_shape):
    self.nodes = [Node('input', (), tuple(input_shape))]

  def add_node(self, op, inputs, shape, **kw):
    self.nodes.append(Node(op, tuple(inputs), tuple(shape), **kw))
    return len(self.nodes) - 1

  def linear(self, src, apply, apply_abs, bias, conv=None):
    shape = jax.eval_shape(apply, jnp.zeros((1, *self.nodes[src].shape))).shape[1:]
    return self.add_node(
      'linear', (src,), shape, apply=apply, apply_abs=apply_abs, bias=bias, conv=conv
    )

  def relu(self, src):
    return self.add_node('relu', (src,), self.nodes[src].shape)

  def add(self, a, b):
    return self.add_node('add', (a, b), self.nodes[a].shape)

  def graph(self):
    return tuple(self.nodes)


def _conv(kernel, strides, padding):
  def apply(z):  # the models' convolution: its transpose stays fast inside loops
    return conv.conv_general_dilated(
      z, kernel, (strides, strides), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )

  return apply


def conv_bn(builder, src, conv_params, bn_params, bn_stats, strides, padding):
  """A bias-free Conv followed by BatchNorm in evaluation mode, folded into one affine node:
  y = conv(z, W) * s + (beta - mean * s), s = gamma / sqrt(var + eps)."""
  kernel = conv_params['kernel']
  scale = bn_params['scale'] * jax.lax.rsqrt(bn_stats['var'] + BATCHNORM_EPSILON)
  shift = bn_params['bias'] - bn_stats['mean'] * scale
  conv, conv_abs = _conv(kernel, strides, padding), _conv(jnp.abs(kernel), strides, padding)
  valid = _conv(kernel, strides, 'VALID')
  low = (0, 0) if padding == 'VALID' else (padding[0][0], padding[1][0])
  geometry = Conv(kernel.shape[:2], (strides, strides), low, lambda z: valid(z) * scale)
  return builder.linear(
    src,
    lambda z: conv(z) * scale,
    lambda z: conv_abs(z) * jnp.abs(scale),
    shift,
    geometry,
  )


def dense(builder, src, params):
  kernel = params['kernel']
  return builder.linear(
    src, lambda z: z @ kernel, lambda z: z @ jnp.abs(kernel), params.get('bias', 0.0)
  )


def global_average_pool(builder, src):
  pool = lambda z: jnp.mean(z, axis=(1, 2))
  return builder.linear(src, pool, pool, 0.0)


def resnet_graph(model, variables, input_shape):
  """A `models.ResNet` member (evaluation mode) -> its `Graph`, ending in logits [C].

  Args:
    model: a ResNet18 / ResNet34 module (its `blocks_per_stage` gives the layout).
    variables: one member's {'params', 'batch_stats'} (no K axis).
    input_shape: (H, W, c).
  """
  params, stats = variables['params'], variables['batch_stats']
  b = Builder(input_shape)
  pad = ((1, 1), (1, 1))
  y = conv_bn(b, 0, params['stem_conv'], params['stem_bn'], stats['stem_bn'], 1, pad)
  y = b.relu(y)
  index = 0
  for stage, num_blocks in enumerate(model.blocks_per_stage):
    for i in range(num_blocks):
      strides = 2 if (stage > 0 and i == 0) else 1
      p, s = params[f'blocks_{index}'], stats[f'blocks_{index}']
      main = conv_bn(b, y, p['conv1'], p['bn1'], s['bn1'], strides, pad)
      main = conv_bn(b, b.relu(main), p['conv2'], p['bn2'], s['bn2'], 1, pad)
      shortcut = y
      if 'shortcut_conv' in p:  # Flax's 'SAME' padding of a 1x1 kernel pads nothing
        shortcut = conv_bn(
          b, y, p['shortcut_conv'], p['shortcut_bn'], s['shortcut_bn'], strides, 'VALID'
        )
      y = b.relu(b.add(main, shortcut))
      index += 1
  y = dense(b, global_average_pool(b, y), params['head'])
  return b.graph()


def dense_graph(layers, input_dim):
  """A fully connected ReLU network [(kernel [d_in, d_out], bias [d_out]), ...] -> `Graph`
  with ReLUs between the layers (none after the last); input [d]. For tests and toys."""
  b = Builder((input_dim,))
  y = 0
  for i, (kernel, bias) in enumerate(layers):
    if i:
      y = b.relu(y)
    y = dense(b, y, {'kernel': jnp.asarray(kernel), 'bias': jnp.asarray(bias)})
  return b.graph()


def member_graph(model, variables, input_shape):
  """The graph of one member of a `models.REGISTRY` architecture; a clear error for one
  bound propagation does not handle yet (VGG-16's max-pools need their own relaxation)."""
  if isinstance(model, ResNet):
    return resnet_graph(model, variables, input_shape)
  raise NotImplementedError(
    f'certification supports the ResNet models (resnet18, resnet34), not '
    f'{type(model).__name__}: its max-pool layers have no linear relaxation in lpd_jax.certify'
  )


def forward(graph, x):
  """Evaluates `graph` at x [N, *input shape] -> [N, *output shape] (tests, soundness)."""
  values = []
  for node in graph:
    if node.op == 'input':
      values.append(x)
    elif node.op == 'linear':
      values.append(node.apply(values[node.inputs[0]]) + node.bias)
    elif node.op == 'relu':
      values.append(jax.nn.relu(values[node.inputs[0]]))
    elif node.op == 'add':
      values.append(values[node.inputs[0]] + values[node.inputs[1]])
    else:
      raise ValueError(f'unknown node op {node.op!r}')
  return values[-1]


def relu_inputs(graph):
  """Indices of the nodes some ReLU reads: the only ones whose bounds the relaxation uses."""
  return sorted({node.inputs[0] for node in graph if node.op == 'relu'})
