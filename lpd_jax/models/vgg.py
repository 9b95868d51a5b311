"""CIFAR-style VGG-16 with BatchNorm (Simonyan & Zisserman 2015), a surrogate
architecture for black-box transfer attacks.

The configuration commonly used for CIFAR: 64, 64, M, 128, 128, M, 256, 256, 256, M,
512, 512, 512, M, 512, 512, 512, M, where a number is a 3x3 convolution (padding 1,
no bias) followed by BatchNorm and ReLU, and M a 2x2 max-pool with stride 2. Channel
counts are scaled by width / 64, so width 64 gives the standard net. Global average
pooling then gives the feature vector h(x) of size D = 8w (512 at w = 64) and one Dense
layer gives the logits.

The forward pass is split into `features` and `classify` as in the ResNets, so the
dropout methods that act on h (LPD, PDD) apply unchanged.
"""

import flax.linen as nn
import jax.numpy as jnp

from lpd_jax.models.common import Conv, FeatureClassifier

# Output channels at width 64 of each 3x3 conv; 'M' is a 2x2 max-pool with stride 2.
VGG16_LAYERS = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M')
VGG16_LAYERS += (512, 512, 512, 'M')


class VGG16(FeatureClassifier):
  """CIFAR VGG-16 with BatchNorm and a `width` field (64: the standard net).

  Max-pools that would take a spatial side below 1 are skipped, so inputs smaller than
  32x32 work (8x8 digits: the first three pools apply, the last two are skipped); on
  32x32 inputs all five apply and the last feature map is 1x1. A pool halves each side,
  rounding down (an odd side loses its last row or column).

  Convolutions have no bias (use_bias=False): the BatchNorm after each one has its own
  shift, which makes a conv bias redundant. Parameters, counted as the leaves of the
  'params' collection only: per conv 9 * c_in * c_out kernel weights and 2 * c_out
  BatchNorm scale + bias; the head D * C + C. The BatchNorm running statistics (the
  'batch_stats' collection) are not parameters and are not counted. At w = 64, C = 10
  and 32x32x3 inputs: 14,710,464 conv + 8,448 BatchNorm + 5,130 head = 14,724,042.
  (The count does not depend on the input's height and width; it depends on c only
  through the first conv.)

  Parameters are named `convs_0` ... `convs_12`, `bns_0` ... `bns_12` and `head`.

  Attributes:
    num_classes: C.
    width: w; layer channels are c * w / 64 and the feature size is D = 8 * w.
  """

  def setup(self):
    channels = [c // 64 * self.width for c in VGG16_LAYERS if c != 'M']
    self.convs = [
      Conv(c, (3, 3), 1, padding=1, use_bias=False, dtype=self.dtype, conv_impl=self.conv_impl)
      for c in channels
    ]
    self.bns = [nn.BatchNorm(momentum=0.9, dtype=self.dtype) for _ in channels]
    self.head = nn.Dense(self.num_classes)

  def features(self, x, train: bool = False):
    """x [B, H, W, c] in [0, 1] -> h [B, D], the input of the last Dense layer."""
    y = x.astype(self.dtype)
    i = 0
    for layer in VGG16_LAYERS:
      if layer == 'M':
        if min(y.shape[1], y.shape[2]) >= 2:  # else the pool would leave a side of 0
          y = nn.max_pool(y, (2, 2), strides=(2, 2))
      else:
        y = nn.relu(self.bns[i](self.convs[i](y), use_running_average=not train))
        i += 1
    return jnp.mean(y.astype(jnp.float32), axis=(1, 2))
