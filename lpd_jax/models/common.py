"""What every model of `models.REGISTRY` shares: its fields and the features/head split."""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp


class FeatureClassifier(nn.Module):
  """A network split at its last Dense layer, so dropout methods can act between the parts.

  Subclasses define `features(x, train)` -> h [B, D] and, in `setup`, the Dense `head`.

  Attributes:
    num_classes: C.
    width: w; the feature size is D = 8 * w.
  """

  num_classes: int
  width: int = 64

  def classify(self, h):
    """h [B, D] -> logits [B, C]."""
    return self.head(h)

  def __call__(self, x, train: bool = False, feature_mask: Optional[jnp.ndarray] = None):
    """x [B, H, W, c] -> (logits [B, C], h [B, D]); `feature_mask` [B, D] multiplies h."""
    h = self.features(x, train)
    if feature_mask is not None:
      h = h * feature_mask
    return self.classify(h), h
