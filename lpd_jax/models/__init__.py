"""Network definitions and their registry (`config.model` -> module class).

'resnet18' is the paper's CIFAR ResNet-18; 'resnet34' (CIFAR ResNet-34) and 'vgg16'
(CIFAR VGG-16 with BatchNorm) are surrogate architectures for black-box transfer attacks.
Every model takes `num_classes` and `width` (feature size D = 8 * width) and exposes
`features(x, train)` -> h [B, D] and `classify(h)` -> logits [B, C], so dropout methods
can act between them.
"""

from lpd_jax.models.resnet import ResNet18, ResNet34
from lpd_jax.models.vgg import VGG16

REGISTRY = {'resnet18': ResNet18, 'resnet34': ResNet34, 'vgg16': VGG16}

__all__ = ['REGISTRY', 'ResNet18', 'ResNet34', 'VGG16']
