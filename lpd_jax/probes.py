"""Diversity and smoothness probes of an ensemble (paper section 4, docs/methods.md, "Probes").

- `ambiguity_entropy`: output ambiguity E of the members' correctness (eq. 7, Table 1).
- `gradient_cosine`: gradient diversity L_d = sum_{i<j} cos<g_i, g_j> (section 4.2, Table 2).
- `gradient_norm`: smoothness L_s = sum_k ||g_k||_2 (section 4.3, Table 3).
- `input_gradients`: g_k = d CE(f_k(x), y) / dx per member and sample in evaluation mode
  (`lpd_jax.gradients.member_input_gradients`), optionally in float64.
- `probe_quantiles`: batched driver giving the 25/50/75% quantiles of L_d and L_s over
  the first N test samples (the paper: the first 2000 CIFAR-10 test images).

Pure functions of arrays and pytrees (the eval report is `lpd_jax.suites.probes`). All
but `probe_quantiles` (a host loop) and `input_gradients(..., float64=True)` (switches
JAX to 64-bit mode, so it must run outside `jit`) are jittable.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import gradients, predict, pytrees, sharding
from lpd_jax.progress import StageBar


def ambiguity_entropy(correct: jax.Array) -> jax.Array:
  """Ambiguity entropy E of the members' correctness (eq. 7).

  E = 1/N sum_i min(l_i, K - l_i) / (K - ceil(K/2)), with l_i = sum_k correct[k, i] the
  number of members that classify sample i correctly. E = 0 when all members agree
  (all right or all wrong) on every sample; E = 1 when every sample splits the members
  as evenly as possible (floor(K/2) against the rest).

  Args:
    correct: bool or int [K, N]; correct[k, i] says member k classifies sample i right.

  Returns:
    Scalar float32. For K = 1 the denominator K - ceil(K/2) is 0 and a single member
    cannot disagree with itself: E is defined as 0.
  """
  k = correct.shape[0]
  denom = k - math.ceil(k / 2)
  if denom == 0:
    return jnp.zeros((), jnp.float32)
  num_right = jnp.sum(jnp.asarray(correct, jnp.int32), axis=0)
  return jnp.mean(jnp.minimum(num_right, k - num_right)) / denom


def _flatten_rescaled(g):
  """g [K, N, ...] -> (g / s [K, N, D], s [K, N]) with s = max |g| per member and sample.

  Norms and cosines are computed on the rescaled vectors (entries in [-1, 1]) so that
  squaring tiny gradients (|g| < 1e-19 in float32) does not underflow to 0.
  """
  g = g.reshape(g.shape[0], g.shape[1], -1)
  s = jnp.max(jnp.abs(g), axis=-1)
  return g / jnp.where(s > 0, s, 1)[..., None], s


def gradient_cosine(g: jax.Array) -> jax.Array:
  """Gradient diversity L_d = sum_{1 <= i < j <= K} cos<g_i, g_j> per sample (sec. 4.2).

  Args:
    g: [K, N, ...] input gradients (e.g. from `input_gradients`); the cosine is taken
      over the flattened trailing (input) dimensions.

  Returns:
    [N]. 0 means pairwise orthogonal gradients. A pair in which either gradient is
    exactly zero contributes cos = 0 (not NaN). For K = 1 there are no pairs: L_d = 0.
    The cosines are `gradients.pairwise_cosines` (one definition for probes and losses).
  """
  return jnp.sum(gradients.pairwise_cosines(g), axis=-1)


def gradient_norm(g: jax.Array) -> jax.Array:
  """Smoothness L_s = sum_{k=1}^K ||g_k||_2 per sample (sec. 4.3); smaller is smoother.

  Args:
    g: [K, N, ...] input gradients; the l2 norm is over the flattened trailing dims.

  Returns:
    [N].
  """
  u, s = _flatten_rescaled(g)
  return jnp.sum(s * jnp.sqrt(jnp.sum(u * u, axis=-1)), axis=0)


def input_gradients(ensemble, x: jax.Array, y: jax.Array, *, float64: bool = False) -> jax.Array:
  """Each member's cross-entropy gradient w.r.t. its input, g_k = d CE(f_k(x), y) / dx.

  `lpd_jax.gradients.member_input_gradients` of `ensemble.member_logits` (evaluation
  mode, the ensemble's inference mode).

  Args:
    ensemble: an object with `member_logits(x) -> [K, B, C]` that is deterministic and
      treats samples independently (eval mode: BatchNorm uses running statistics). For
      `float64` it must be a pytree holding its parameters (like `Ensemble`, whose
      `variables` are cast to float64).
    x: [N, ...] inputs (NHWC images in [0, 1] for the library's models).
    y: int [N] labels.
    float64: compute in 64-bit (outside `jit`); see `member_input_gradients`.

  Returns:
    [K, N, ...] gradients with x's trailing shape; float64 when `float64=True`. To keep
    float64 downstream, call `gradient_cosine` / `gradient_norm` on them inside
    `jax.enable_x64(True)` too, or use `probe_quantiles(..., float64=True)`.
  """
  return gradients.member_input_gradients(ensemble.member_logits, x, y, float64=float64)


@jax.jit
def _probe_batch(ensemble, x, y):
  g = gradients.member_input_gradients(ensemble.member_logits, x, y)
  return gradient_cosine(g), gradient_norm(g)


def probe_quantiles(
  ensemble,
  x,
  y,
  *,
  batch_size=256,
  quantiles=(0.25, 0.5, 0.75),
  float64=False,
  progress=False,
  mesh=None,
):
  """Quantiles of L_d (`gradient_cosine`) and L_s (`gradient_norm`) over x (Tables 2-3).

  Loops over `lpd_jax.predict.padded_batches` with one jitted per-batch function (the
  last batch zero-padded, so it compiles once; the padding is dropped).

  Args:
    ensemble: a pytree (passed to `jit` as an argument) with `member_logits`, in eval
      mode, e.g. `lpd_jax.ensemble.Ensemble`.
    x: [N, ...] inputs; pass the first N test samples (the paper: N = 2000).
    y: int [N] labels.
    batch_size: samples per jitted call (capped at N).
    quantiles: the quantile levels q in [0, 1].
    float64: compute gradients and probes in float64 (see `input_gradients`).
    progress: a progress bar (a line naming the probe where no terminal is attached).
    mesh: optional evaluation mesh (`lpd_jax.sharding.evaluation_mesh`): batches split
      over its data axis, the ensemble replicated.

  Returns:
    {'gradient_cosine': {q: float}, 'gradient_norm': {q: float},
     'per_sample': {'gradient_cosine': np.ndarray [N], 'gradient_norm': np.ndarray [N]}}
  """
  x, y = np.asarray(x), np.asarray(y)
  values = {'gradient_cosine': [], 'gradient_norm': []}
  with gradients.precision(float64):
    if float64:
      ensemble, x = pytrees.cast_floating(ensemble, jnp.float64), x.astype(np.float64)
    ensemble = sharding.replicate(ensemble, mesh)
    batches = predict.padded_batches(x, y, batch_size, mesh)
    total = predict.num_batches(len(x), batch_size)
    with StageBar(total=total, desc='probes', silent=not progress) as bar:
      bar.stage(f'L_d and L_s on {len(x)} images in {"float64" if float64 else "float32"}')
      for _, xb, yb, n in batches:
        for name, v in zip(values, _probe_batch(ensemble, xb, yb)):
          values[name].append(sharding.to_host(v)[:n])
        bar.update(1)
  per_sample = {name: np.concatenate(v) for name, v in values.items()}
  out = {name: {q: float(np.quantile(v, q)) for q in quantiles} for name, v in per_sample.items()}
  out['per_sample'] = per_sample
  return out
