"""Network definitions."""

from lpd_jax.models.resnet import ResNet18

__all__ = ['ResNet18']
