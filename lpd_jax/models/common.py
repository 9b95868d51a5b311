"""What every model of `models.REGISTRY` shares: its fields and the features/head split."""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from lpd_jax.models import conv

# A model's convolutions: flax's, computed by one of these (`FeatureClassifier.conv_impl`).
# 'lpd_jax' (`conv.conv_general_dilated`): lax's values, an input gradient that stays fast
# inside XLA:CPU loops (see that module); 'lax': lax's own, which `ensemble.create` picks
# for the vmap and map member strategies (vmapped, the custom VJP's grouped convolutions
# trained differently across processes than in one: tests/test_sharding.py).
CONVOLUTIONS = {'lpd_jax': conv.conv_general_dilated, 'lax': lax.conv_general_dilated}


def Conv(*args, conv_impl='lpd_jax', **kwargs):  # noqa: N802 (a layer, named as flax's)
  """`flax.linen.Conv` computed by CONVOLUTIONS[conv_impl]."""
  return nn.Conv(*args, conv_general_dilated=CONVOLUTIONS[conv_impl], **kwargs)


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
    conv_impl: 'lpd_jax' | 'lax', the convolution (CONVOLUTIONS); the same values.
  """

  num_classes: int
  width: int = 64
  dtype: Any = jnp.float32
  conv_impl: str = 'lpd_jax'

  def classify(self, h):
    """h [B, D] -> logits [B, C]."""
    return self.head(h)

  def __call__(self, x, train: bool = False, feature_mask: Optional[jnp.ndarray] = None):
    """x [B, H, W, c] -> (logits [B, C], h [B, D]); `feature_mask` [B, D] multiplies h."""
    h = self.features(x, train)
    if feature_mask is not None:
      h = h * feature_mask
    return self.classify(h), h
