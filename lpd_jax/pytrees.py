"""Small helpers on pytrees shared by the pure modules (attacks, gradients, probes)."""

import inspect

import flax.struct
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


@flax.struct.dataclass
class PointKeys:
  """Per-point keys of a batch gathered from several batches (the cascade of the `robust`
  suite attacks the points still robust, packed into batches of their own).

  Point j carries the key of the batch it was first evaluated in (`batch_keys[j]`) and its
  index there (`index[j]`): every attack folds its own data (target rank, restart) into the
  batch key first and the index last (`fold_keys`, then `sample_keys`), so a point sees the
  same randomness as in the batch it came from, whatever it is packed with.
  """

  batch_keys: jax.Array  # PRNG keys [B]
  index: jax.Array  # int32 [B]
