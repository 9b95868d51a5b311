"""lpd-jax: robust deep ensembles with Laplace Priority Dropout, in JAX/Flax."""

from lpd_jax.checkpoint import load
from lpd_jax.ensemble import Ensemble

__all__ = ['Ensemble', 'load']
