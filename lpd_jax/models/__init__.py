"""Network definitions and their registry (`config.model` -> module class).

Every model takes `num_classes` and `width` and exposes `features(x, train)` -> h [B, D]
and `classify(h)` -> logits [B, C], so dropout methods can act between them.
"""

from lpd_jax.models.resnet import ResNet18

REGISTRY = {'resnet18': ResNet18}

__all__ = ['REGISTRY', 'ResNet18']
