"""CIFAR-style ResNets (He et al. 2016): ResNet-18 as used by the paper (docs/methods.md,
"Ensemble"), and ResNet-34 as a surrogate architecture for black-box transfer attacks.

3x3 stem with stride 1 and no max-pool; four stages of BasicBlocks with widths
w, 2w, 4w, 8w (strides 1, 2, 2, 2): 2, 2, 2, 2 blocks for ResNet-18 and 3, 4, 6, 3
for ResNet-34. Global average pooling gives the feature vector h(x) of size D = 8w
(512 at the paper's w = 64); a Dense head gives the logits.

The forward pass is split into `features` and `classify` so that dropout methods
whose masks depend on *all* members' features (LPD, PDD) can act between them.
"""

from typing import Any, ClassVar, Tuple

import flax.linen as nn
import jax.numpy as jnp

from lpd_jax.models.common import Conv, FeatureClassifier


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (1x1 projection on change)."""

  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  conv_impl: str = 'lpd_jax'

  @nn.compact
  def __call__(self, x, train: bool, stop: str = ''):
    """x [B, H, W, c] -> the block's output after its ReLU; `stop` ends early with a
    pre-ReLU activation for DVERGE's feature distillation: 'inner' (bn1's output) or
    'output' (bn2's output plus the shortcut)."""
    norm = lambda name: nn.BatchNorm(
      use_running_average=not train, momentum=0.9, dtype=self.dtype, name=name
    )
    y = Conv(
      self.filters,
      (3, 3),
      self.strides,
      padding=1,
      use_bias=False,
      dtype=self.dtype,
      conv_impl=self.conv_impl,
      name='conv1',
    )(x)
    y = norm('bn1')(y)
    if stop == 'inner':
      return y
    y = nn.relu(y)
    y = Conv(
      self.filters,
      (3, 3),
      1,
      padding=1,
      use_bias=False,
      dtype=self.dtype,
      conv_impl=self.conv_impl,
      name='conv2',
    )(y)
    y = norm('bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.filters:
      x = Conv(
        self.filters,
        (1, 1),
        self.strides,
        use_bias=False,
        dtype=self.dtype,
        conv_impl=self.conv_impl,
        name='shortcut_conv',
      )(x)
      x = norm('shortcut_bn')(x)
    return y + x if stop == 'output' else nn.relu(y + x)


class ResNet(FeatureClassifier):
  """The CIFAR ResNet shared by ResNet18 and ResNet34; subclasses set `blocks_per_stage`.

  Parameters are named `stem_conv`, `stem_bn`, `blocks_0` ... `blocks_{n-1}` (n the total
  number of blocks, numbered across stages) and `head`.

  Attributes:
    num_classes: C.
    width: w; the feature size is D = 8 * w.
  """

  blocks_per_stage: ClassVar[Tuple[int, ...]] = (2, 2, 2, 2)

  def setup(self):
    self.stem_conv = Conv(
      self.width, (3, 3), 1, padding=1, use_bias=False, dtype=self.dtype, conv_impl=self.conv_impl
    )
    self.stem_bn = nn.BatchNorm(momentum=0.9, dtype=self.dtype)
    blocks = []
    for stage, (mult, num_blocks) in enumerate(zip((1, 2, 4, 8), self.blocks_per_stage)):
      for i in range(num_blocks):
        strides = 2 if (stage > 0 and i == 0) else 1
        blocks.append(BasicBlock(self.width * mult, strides, self.dtype, self.conv_impl))
    self.blocks = blocks
    self.head = nn.Dense(self.num_classes)

  def features(self, x, train: bool = False):
    """x [B, H, W, c] in [0, 1] -> h [B, D], the input of the last Dense layer."""
    y = nn.relu(self.stem_bn(self.stem_conv(x.astype(self.dtype)), use_running_average=not train))
    for block in self.blocks:
      y = block(y, train)
    return jnp.mean(y.astype(jnp.float32), axis=(1, 2))

  @property
  def distillation_depth(self):
    """L, the number of layers DVERGE can distill at (`layer_features`): the stem, two per
    block, the logits (18 for ResNet-18, 34 for ResNet-34: the depth in the name)."""
    return 2 * sum(self.blocks_per_stage) + 2

  def layer_features(self, x, train: bool, layer: int):
    """x [B, H, W, c] -> the pre-ReLU activation of `layer` (1..L, a Python int), numbered
    as DVERGE's ResNet numbers its layers (zjysteven/DVERGE, models/resnet.py `get_features`
    with before_relu=True): 1 the stem's BatchNorm output [B, H, W, w]; 2b + 2 block b's
    first BatchNorm output and 2b + 3 block b's sum with its shortcut (b = 0 .. blocks - 1,
    counted across stages); L the logits [B, C]. Layers after `layer` are not computed."""
    depth = self.distillation_depth
    if not 1 <= layer <= depth:
      raise ValueError(f'layer {layer} is outside 1..{depth}')
    y = self.stem_bn(self.stem_conv(x.astype(self.dtype)), use_running_average=not train)
    if layer == 1:
      return y.astype(jnp.float32)
    y = nn.relu(y)
    for b, block in enumerate(self.blocks):
      if layer in (2 * b + 2, 2 * b + 3):
        stop = 'inner' if layer == 2 * b + 2 else 'output'
        return block(y, train, stop).astype(jnp.float32)
      y = block(y, train)
    return self.classify(jnp.mean(y.astype(jnp.float32), axis=(1, 2)))


class ResNet18(ResNet):
  """CIFAR ResNet-18 with a `width` field (64: the paper; 4: the certification model).

  Stages of 2, 2, 2, 2 BasicBlocks; 11,173,962 parameters at w = 64, C = 10.

  Attributes:
    num_classes: C.
    width: w; the feature size is D = 8 * w.
  """

  blocks_per_stage: ClassVar[Tuple[int, ...]] = (2, 2, 2, 2)


class ResNet34(ResNet):
  """CIFAR ResNet-34, a surrogate architecture for transfer attacks.

  Stages of 3, 4, 6, 3 BasicBlocks (`blocks_0` ... `blocks_15`); 21,282,122 parameters
  at w = 64, C = 10.

  Attributes:
    num_classes: C.
    width: w; the feature size is D = 8 * w.
  """

  blocks_per_stage: ClassVar[Tuple[int, ...]] = (3, 4, 6, 3)
