"""CIFAR-style ResNet-18 (He et al. 2016) as used by the paper and METHODS.md.

3x3 stem with stride 1 and no max-pool; four stages of two BasicBlocks with widths
w, 2w, 4w, 8w (strides 1, 2, 2, 2); global average pooling gives the feature vector
h(x) of size D = 8w (512 at the paper's w = 64); a Dense head gives the logits.

The forward pass is split into `features` and `classify` so that dropout methods
whose masks depend on *all* members' features (LPD, PDD) can act between them.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (1x1 projection on change)."""

  filters: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
    y = nn.Conv(self.filters, (3, 3), self.strides, padding=1, use_bias=False, name='conv1')(x)
    y = nn.relu(norm('bn1')(y))
    y = nn.Conv(self.filters, (3, 3), 1, padding=1, use_bias=False, name='conv2')(y)
    y = norm('bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.filters:
      x = nn.Conv(self.filters, (1, 1), self.strides, use_bias=False, name='shortcut_conv')(x)
      x = norm('shortcut_bn')(x)
    return nn.relu(y + x)


class ResNet18(nn.Module):
  """CIFAR ResNet-18 with a `width` field (64: the paper; 4: the certification model).

  Attributes:
    num_classes: C.
    width: w; the feature size is D = 8 * w.
  """

  num_classes: int
  width: int = 64

  def setup(self):
    self.stem_conv = nn.Conv(self.width, (3, 3), 1, padding=1, use_bias=False)
    self.stem_bn = nn.BatchNorm(momentum=0.9)
    blocks = []
    for stage, mult in enumerate((1, 2, 4, 8)):
      for i in range(2):
        strides = 2 if (stage > 0 and i == 0) else 1
        blocks.append(BasicBlock(self.width * mult, strides))
    self.blocks = blocks
    self.head = nn.Dense(self.num_classes)

  def features(self, x, train: bool = False):
    """x [B, H, W, c] in [0, 1] -> h [B, D], the input of the last Dense layer."""
    y = nn.relu(self.stem_bn(self.stem_conv(x), use_running_average=not train))
    for block in self.blocks:
      y = block(y, train)
    return jnp.mean(y, axis=(1, 2))

  def classify(self, h):
    """h [B, D] -> logits [B, C]."""
    return self.head(h)

  def __call__(self, x, train: bool = False, feature_mask: Optional[jnp.ndarray] = None):
    """x [B, H, W, c] -> (logits [B, C], h [B, D]); `feature_mask` [B, D] multiplies h."""
    h = self.features(x, train)
    if feature_mask is not None:
      h = h * feature_mask
    return self.classify(h), h
