"""What every model of `models.REGISTRY` shares: its fields and the features/head split."""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from lpd_jax.models import conv

# Every model's convolution: flax's, computed by `conv.conv_general_dilated` (the same
# values; its input gradient stays fast inside XLA:CPU loops, see that module).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv.conv_general_dilated)


class FeatureClassifier(nn.Module):
  """A network split at its last Dense layer, so dropout methods can act between the parts.

  Subclasses define `features(x, train)` -> h [B, D] and, in `setup`, the Dense `head`;
  their layers compute in `dtype` and `features` returns h in float32, so the keep-rate
  statistics, the head and the losses stay in float32 (mixed precision: parameters are
  float32 whatever `dtype` is).

  Attributes:
    num_classes: C.
    width: w; the feature size is D = 8 * w.
    dtype: the activations' and matmuls' dtype (jnp.float32 or jnp.bfloat16).
  """

  num_classes: int
  width: int = 64
  dtype: Any = jnp.float32

  def classify(self, h):
    """h [B, D] -> logits [B, C]."""
    return self.head(h)

  def __call__(self, x, train: bool = False, feature_mask: Optional[jnp.ndarray] = None):
    """x [B, H, W, c] -> (logits [B, C], h [B, D]); `feature_mask` [B, D] multiplies h."""
    h = self.features(x, train)
    if feature_mask is not None:
      h = h * feature_mask
    return self.classify(h), h
