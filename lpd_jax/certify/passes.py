"""How a bound's work is split: the groups of samples bounded at once, and the chunks of
neurons each backward pass of CROWN takes; their count is the progress a bound reports
(`progress_units`, one `bounds.tick_after` each)."""

import math

import jax
import jax.numpy as jnp

from lpd_jax.certify.graph import relu_inputs


def in_groups(fn, x, y, group):
  """fn(x, y) over the batch `group` samples at a time (`jax.lax.map`; the batch padded to
  whole groups), its outputs (leading axis: the samples) concatenated back to B rows.

  CROWN's passes go `group` samples at a time: XLA's CPU convolutions switch to a far
  hungrier algorithm above a few thousand coefficient rows per pass."""
  n = x.shape[0]
  if group >= n:
    return fn(x, y)
  pad = -n % group
  xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(
    -1, group, *x.shape[1:]
  )
  ys = jnp.concatenate([y, jnp.zeros(pad, y.dtype)]).reshape(-1, group)
  out = jax.lax.map(lambda xy: fn(*xy), (xs, ys))
  return jax.tree.map(lambda t: t.reshape(-1, *t.shape[2:])[:n], out)


# Samples per pass of 'crown' (see `margins`).
CROWN_GROUP = 8


def group_size(method, batch):
  """Samples `margins` bounds at once for a batch of `batch`."""
  return min(batch, CROWN_GROUP) if method in ('crown', 'alpha_crown') else batch


def chunks(graph, index, max_unstable, chunk):
  """The backward passes `bounds._tighten` runs over ReLU input `index` (those of chunks with
  no unstable neuron cost nothing): ceil(cap / min(chunk, cap)), cap the neurons it bounds."""
  neurons = math.prod(graph[index].shape)
  cap = neurons if max_unstable is None else min(max_unstable, neurons)
  return -(-cap // min(chunk, cap))


def progress_units(graph, method, batch, num_members, max_unstable, chunk, alpha_steps=20):
  """The units a `margins_and_fallbacks` call on `batch` samples reports with report=True:
  per group of samples and member, one per chunk of every ReLU input CROWN tightens
  ('crown', 'alpha_crown') and one for its last pass; 'alpha_crown' adds one per step of the
  last pass's optimisation, per group."""
  groups = -(-batch // group_size(method, batch))
  tightened = relu_inputs(graph) if method in ('crown', 'alpha_crown') else []
  per_member = 1 + sum(chunks(graph, i, max_unstable, chunk) for i in tightened)
  last = alpha_steps if method == 'alpha_crown' else 0
  return groups * (num_members * per_member + last)
