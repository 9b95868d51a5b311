"""lpd-jax: robust deep ensembles with Laplace Priority Dropout, in JAX/Flax."""

from lpd_jax.ensemble import Ensemble
from lpd_jax.loading import load

__all__ = ['Ensemble', 'load']
