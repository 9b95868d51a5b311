"""Small helpers on pytrees shared by the pure modules (attacks, gradients, probes)."""

import inspect

import jax
import jax.numpy as jnp
from jax.tree_util import Partial


def as_partial(fn):
  """Wraps a function of x as a `jax.tree_util.Partial` for jitted cores.

  * a `Partial` is returned as is;
  * a bound method of a registered pytree (e.g. `Ensemble.log_predict` of a
    `flax.struct.dataclass`) becomes `Partial(type(obj).method, obj)`: the object's
    arrays are traced leaves, so another object of the same structure (new
    parameters) reuses the compiled function instead of baking parameters in;
  * any other callable becomes `Partial(fn)`; the callable is static, so a new
    closure compiles anew.
  """
  if isinstance(fn, Partial):
    return fn
  if inspect.ismethod(fn):
    obj = fn.__self__
    if not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(obj)):
      return Partial(fn.__func__, obj)
  return Partial(fn)


def cast_floating(tree, dtype):
  """Every floating leaf of `tree` cast to `dtype`; other leaves unchanged."""
  return jax.tree.map(
    lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree
  )
