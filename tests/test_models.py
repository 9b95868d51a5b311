"""The registered architectures: ResNet-18 / ResNet-34 (one implementation) and VGG-16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpd_jax import models
from lpd_jax.models import VGG16, ResNet18, ResNet34

NHWC = ('NHWC', 'HWIO', 'NHWC')


def count_params(model, input_shape):
  """Leaves of the 'params' collection only (not 'batch_stats'); nothing is allocated."""
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape))))
  return sum(leaf.size for leaf in jax.tree.leaves(variables['params']))


def numpy_variables(model, x):
  """model.init's variable tree, params drawn by NumPy, running mean 0 and variance 1.

  Tracing `model.init` (eval_shape) checks the architecture on x's shape; running it
  would compile flax's random initializers once per kernel shape, about 15 s on 2 CPU
  cores for the first model, which this file does not need.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    if name in ('mean', 'var'):
      return np.full(leaf.shape, float(name == 'var'), leaf.dtype)
    return (0.5 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def vgg16_count(width, num_classes, channels=3):
  """VGG-16 counted by hand: bias-free 3x3 convs, BatchNorm scale+bias, the Dense head."""
  layers = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]  # pools: no params
  total, cin = 0, channels
  for out in (c * width // 64 for c in layers):
    total += 3 * 3 * cin * out + 2 * out
    cin = out
  return total + cin * num_classes + num_classes


def test_registry_names_every_architecture():
  assert models.REGISTRY == {'resnet18': ResNet18, 'resnet34': ResNet34, 'vgg16': VGG16}


def test_resnet34_parameter_count():
  assert count_params(ResNet34(num_classes=10, width=64), (32, 32, 3)) == 21_282_122


def test_resnet18_parameter_count_unchanged_by_the_shared_implementation():
  assert count_params(ResNet18(num_classes=10, width=64), (32, 32, 3)) == 11_173_962


def test_vgg16_parameter_count():
  assert count_params(VGG16(num_classes=10, width=64), (32, 32, 3)) == vgg16_count(64, 10)
  assert count_params(VGG16(num_classes=100, width=8), (8, 8, 1)) == vgg16_count(8, 100, 1)


def test_parameter_names():
  def names(model):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
    return set(shapes['params'])

  blocks = lambda n: {f'blocks_{i}' for i in range(n)}
  assert names(ResNet18(10, 2)) == {'stem_conv', 'stem_bn', 'head'} | blocks(8)
  assert names(ResNet34(10, 2)) == {'stem_conv', 'stem_bn', 'head'} | blocks(16)


@pytest.mark.parametrize('model_cls', [ResNet18, ResNet34, VGG16])
def test_forward_shapes_on_digits_in_train_and_eval_mode(model_cls):
  model = model_cls(num_classes=5, width=2)
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
  variables = numpy_variables(model, x)
  logits, h = model.apply(variables, x)
  assert logits.shape == (3, 5) and h.shape == (3, 16)
  (logits, h), updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (3, 5) and h.shape == (3, 16)
  assert jax.tree.structure(updates['batch_stats']) == jax.tree.structure(variables['batch_stats'])
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize('side, channels, last_side', [(32, 3, 2), (8, 1, 1)])
def test_vgg16_skips_only_the_pools_that_would_leave_a_side_of_0(side, channels, last_side):
  """32x32: four pools before the last conv (2x2) and the fifth after it (h = its max);
  8x8: three pools (1x1), and the fourth and fifth skipped."""
  model = VGG16(num_classes=5, width=2)
  x = jax.random.uniform(jax.random.key(0), (3, side, side, channels))
  (_, h), state = model.apply(numpy_variables(model, x), x, capture_intermediates=True)
  (last,) = state['intermediates']['bns_12']['__call__']
  assert last.shape == (3, last_side, last_side, 16)
  np.testing.assert_allclose(h, jnp.max(jax.nn.relu(last), axis=(1, 2)), rtol=1e-6)


# The models' convolution (`models.conv`): lax's values and derivatives to first and second
# order, in float64, over the geometries a ResNet or VGG uses and a few it does not.
@pytest.mark.parametrize(
  'size, kernel, stride, padding, lhs_dilation',
  [
    (8, 3, 1, ((1, 1), (1, 1)), 1),  # a ResNet 3x3
    (8, 3, 2, ((1, 1), (1, 1)), 1),  # its strided first block
    (8, 1, 2, 'SAME', 1),  # the 1x1 shortcut
    (7, 3, 2, 'SAME', 1),  # odd size: asymmetric SAME pads
    (8, 3, 1, 'VALID', 1),
    (6, 3, 1, ((1, 1), (1, 1)), 2),  # input dilation (the transposed convolution's own form)
    (8, 3, 2, ((0, 1), (1, 0)), 1),
  ],
)
def test_conv_matches_lax_to_second_order_in_float64(size, kernel, stride, padding, lhs_dilation):
  from jax import lax

  from lpd_jax.models.conv import conv_general_dilated

  rng = np.random.default_rng(size + 10 * kernel + stride)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(2, size, size, 3)))
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)))
    geometry = ((stride, stride), padding, (lhs_dilation, lhs_dilation), None, NHWC)

    def outputs(conv):
      loss = lambda x, w: jnp.sum(jnp.tanh(conv(x, w, *geometry)) ** 2)
      grads = jax.grad(loss, (0, 1))
      squared = lambda x, w: sum(jnp.sum(g**2) for g in grads(x, w))
      return conv(x, w, *geometry), grads(x, w), jax.grad(squared, (0, 1))(x, w)

    ours, reference = outputs(conv_general_dilated), outputs(lax.conv_general_dilated)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
      assert a.dtype == jnp.float64
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
