"""Diversity and smoothness probes of an ensemble (paper section 4, METHODS.md "Probes").

- `ambiguity_entropy`: output ambiguity E of the members' correctness (eq. 7, Table 1).
- `gradient_cosine`: gradient diversity L_d = sum_{i<j} cos<g_i, g_j> (section 4.2, Table 2).
- `gradient_norm`: smoothness L_s = sum_k ||g_k||_2 (section 4.3, Table 3).
- `input_gradients`: g_k = d CE(f_k(x), y) / dx per member and sample, free of the
  1 - p_y cancellation of confident members (the paper's LPD values are ~1e-8 and
  below), optionally in float64.
- `probe_quantiles`: batched driver giving the 25/50/75% quantiles of L_d and L_s over
  the first N test samples (the paper: the first 2000 CIFAR-10 test images).
- `probes_suite`: the `eval.py --config.eval.suite=probes` report (Tables 1-3 of one
  checkpoint, Markdown + JSON); `markdown_tables` renders them for several checkpoints.

The probes but `probe_quantiles` (a host loop) and `input_gradients(..., float64=True)`
(switches JAX to 64-bit mode, so it must run outside `jit`) are pure and jittable.
"""

import contextlib
import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lpd_jax import methods


def ambiguity_entropy(correct):
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


def gradient_cosine(g):
  """Gradient diversity L_d = sum_{1 <= i < j <= K} cos<g_i, g_j> per sample (sec. 4.2).

  Args:
    g: [K, N, ...] input gradients (e.g. from `input_gradients`); the cosine is taken
      over the flattened trailing (input) dimensions.

  Returns:
    [N]. 0 means pairwise orthogonal gradients. A pair in which either gradient is
    exactly zero contributes cos = 0 (not NaN). For K = 1 there are no pairs: L_d = 0.
  """
  u, _ = _flatten_rescaled(g)
  norm = jnp.sqrt(jnp.sum(u * u, axis=-1))
  u = u / jnp.where(norm > 0, norm, 1)[..., None]  # zero vectors stay zero -> cos 0
  # HIGHEST: no TF32/bf16 passes on accelerators; L_d of interest is ~1e-8.
  gram = jnp.einsum('knd,lnd->nkl', u, u, precision=jax.lax.Precision.HIGHEST)
  i, j = np.triu_indices(g.shape[0], 1)
  return jnp.sum(gram[:, i, j], axis=-1)


def gradient_norm(g):
  """Smoothness L_s = sum_{k=1}^K ||g_k||_2 per sample (sec. 4.3); smaller is smoother.

  Args:
    g: [K, N, ...] input gradients; the l2 norm is over the flattened trailing dims.

  Returns:
    [N].
  """
  u, s = _flatten_rescaled(g)
  return jnp.sum(s * jnp.sqrt(jnp.sum(u * u, axis=-1)), axis=0)


def _cross_entropy(logits, y):
  """-log softmax(z)_y = softplus(logsumexp_{j != y}(z_j - z_y)); [..., C], int [...] -> [...].

  With t = logsumexp_{j != y}(z_j - z_y) and r the softmax over j != y, autodiff of this
  form gives dCE/dz_y = -sigmoid(t) sum_{j != y} r_j instead of p_y - 1, which cancels
  to 0 once 1 - p_y is below the float epsilon (6e-8 in float32): gradients of confident
  members keep full relative precision down to the underflow of p_j (~1e-38 in float32,
  ~1e-308 in float64).
  """
  z_y = jnp.take_along_axis(logits, y[..., None], axis=-1)
  is_y = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  return jax.nn.softplus(jax.nn.logsumexp(jnp.where(is_y, -jnp.inf, logits - z_y), axis=-1))


def _per_member_gradients(ensemble, x, y):
  def member_losses(x):  # [K]: each member's cross-entropy summed over the batch
    return _cross_entropy(ensemble.member_logits(x), y[None]).sum(axis=1)

  # Row k of the Jacobian is the gradient of member k's summed loss; samples are
  # independent in eval mode, so its slice at sample i is d CE(f_k(x_i), y_i) / dx_i.
  return jax.jacrev(member_losses)(x)


_per_member_gradients_jit = jax.jit(_per_member_gradients)


def _to_float64(ensemble):
  """A copy of `ensemble` whose floating `variables` leaves are float64 (x64 mode on)."""
  if not (dataclasses.is_dataclass(ensemble) and hasattr(ensemble, 'variables')):
    raise TypeError(
      'float64 probes need an ensemble dataclass with a `variables` field (a pytree of '
      f'its parameters and statistics), like lpd_jax.ensemble.Ensemble; got {type(ensemble)}'
    )
  cast = lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a
  return dataclasses.replace(ensemble, variables=jax.tree.map(cast, ensemble.variables))


def input_gradients(ensemble, x, y, *, float64=False):
  """Each member's cross-entropy gradient w.r.t. its input, g_k = d CE(f_k(x), y) / dx.

  Args:
    ensemble: any object with `member_logits(x) -> [K, B, C]` that is deterministic and
      treats samples independently (eval mode: BatchNorm uses running statistics).
    x: [N, ...] inputs (NHWC images in [0, 1] for the library's models).
    y: int [N] labels.
    float64: compute in 64-bit: x and every floating leaf of `ensemble.variables` are
      cast to float64 and the gradients are traced with `jax.enable_x64(True)`. Needs
      `ensemble` to be a dataclass pytree with a `variables` field (the library's
      `Ensemble` is) and must be called outside `jit`. The cross-entropy is written so
      that its gradient has no 1 - p_y cancellation (see `_cross_entropy`), so float32
      already resolves tiny gradients of confident members to float32 relative
      precision; float64 extends that below float32's range (1 - p_y < ~1e-38, where the
      float32 gradient is exactly 0) and removes float32 rounding of the forward pass.

  Returns:
    [K, N, ...] gradients with x's trailing shape; float64 when `float64=True`. To keep
    float64 downstream, call `gradient_cosine` / `gradient_norm` on them inside
    `jax.enable_x64(True)` too (outside it, JAX casts float64 inputs to float32), or use
    `probe_quantiles(..., float64=True)`.
  """
  if not float64:
    return _per_member_gradients(ensemble, x, y)
  with jax.enable_x64(True):
    return _per_member_gradients_jit(
      _to_float64(ensemble), jnp.asarray(x, jnp.float64), jnp.asarray(y)
    )


@jax.jit
def _probe_batch(ensemble, x, y):
  g = _per_member_gradients(ensemble, x, y)
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
):
  """Quantiles of L_d (`gradient_cosine`) and L_s (`gradient_norm`) over x (Tables 2-3).

  Loops over batches on the host with one jitted per-batch function; the last batch is
  padded (by repeating its last sample) to the fixed batch size, so it compiles once,
  and the padding is dropped.

  Args:
    ensemble: a pytree (passed to `jit` as an argument) with `member_logits`, in eval
      mode, e.g. `lpd_jax.ensemble.Ensemble`.
    x: [N, ...] inputs; pass the first N test samples (the paper: N = 2000).
    y: int [N] labels.
    batch_size: samples per jitted call (capped at N).
    quantiles: the quantile levels q in [0, 1].
    float64: compute gradients and probes in float64 (see `input_gradients`).
    progress: show a tqdm progress bar.

  Returns:
    {'gradient_cosine': {q: float}, 'gradient_norm': {q: float},
     'per_sample': {'gradient_cosine': np.ndarray [N], 'gradient_norm': np.ndarray [N]}}
  """
  x, y = np.asarray(x), np.asarray(y)
  n = len(x)
  batch_size = min(batch_size, n)
  values = {'gradient_cosine': [], 'gradient_norm': []}
  with jax.enable_x64(True) if float64 else contextlib.nullcontext():
    if float64:
      ensemble, x = _to_float64(ensemble), x.astype(np.float64)
    for start in tqdm.trange(0, n, batch_size, disable=not progress, desc='probes'):
      xb, yb = x[start : start + batch_size], y[start : start + batch_size]
      pad = batch_size - len(xb)
      xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
      yb = np.concatenate([yb, np.repeat(yb[-1:], pad, axis=0)])
      for name, v in zip(values, _probe_batch(ensemble, xb, yb)):
        values[name].append(np.asarray(v)[: batch_size - pad])
  per_sample = {name: np.concatenate(v) for name, v in values.items()}
  out = {
    name: {q: float(np.quantile(v, q)) for q in quantiles} for name, v in per_sample.items()
  }
  out['per_sample'] = per_sample
  return out


# ---------------------------------------------------------------- report (eval.py suite)

QUANTILES = (0.25, 0.5, 0.75)  # the rows of the paper's Tables 2-3


def _one_or_all(values):
  """'a' if all values are equal, else 'a / b / ...' (captions of multi-column tables)."""
  values = list(dict.fromkeys(values))
  return ' / '.join(str(v) for v in values)


def markdown_tables(columns):
  """The paper's Tables 1-3 (section 4) for one or several ensembles, as Markdown.

  Args:
    columns: list of (name, result) pairs, one per ensemble, `result` a dict as
      `probes_suite` returns it: num_members (K), num_examples and ambiguity_entropy
      (Table 1), probe_examples (N), float64, and gradient_cosine / gradient_norm
      mapping the quantile level q (float, or its str) to the quantile (Tables 2-3);
      optionally dataset.

  Returns:
    Markdown: Table 1 with a row per ensemble and a column per K (the paper's layout),
    Tables 2-3 with a row per quantile and a column per ensemble, values in scientific
    notation like the paper (3.76e-01).
  """
  names = [name for name, _ in columns]
  results = [r for _, r in columns]
  ks = sorted({r['num_members'] for r in results})
  datasets = [r['dataset'] for r in results if r.get('dataset')]
  lines = ['Probes of the ensemble (paper section 4)'
           + (f' on {_one_or_all(datasets)}.' if datasets else '.'), '']

  n_e = _one_or_all(r['num_examples'] for r in results)
  lines += [f"Table 1. Ambiguity entropy E (eq. 7) of the members' correctness on the first "
            f'{n_e} test images; 0 = members always agree, 1 = maximal disagreement.', '',
            '| Ensemble method | ' + ' | '.join(f'K = {k}' for k in ks) + ' |',
            '| --- |' + ' --- |' * len(ks)]
  for name, r in columns:
    cells = [f"{r['ambiguity_entropy']:.4f}" if r['num_members'] == k else '' for k in ks]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')

  n_p = _one_or_all(r['probe_examples'] for r in results)
  precision = _one_or_all('float64' if r['float64'] else 'float32' for r in results)
  captions = {
    'gradient_cosine': 'Table 2. Loss gradient diversity L_d = sum_{i<j} cos<g_i, g_j> '
                       '(0 = orthogonal input gradients)',
    'gradient_norm': 'Table 3. Model smoothness L_s = sum_k ||g_k||_2 (smaller is smoother)',
  }
  for probe, caption in captions.items():
    lines += ['', f'{caption}, quantiles over the first {n_p} test images ({precision}).', '',
              '| Q | ' + ' | '.join(names) + ' |', '| --- |' + ' --- |' * len(names)]
    levels = list(results[0][probe])
    for i, level in enumerate(levels):
      cells = [f'{list(r[probe].values())[i]:.2e}' for r in results]
      lines.append(f'| {float(level):.0%} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def probes_suite(ens, ds, config, workdir):
  """Suite 'probes' of eval.py: the paper's Tables 1-3 (section 4) for one checkpoint.

  Table 1: ambiguity entropy E (eq. 7) on the evaluated test prefix (eval.num_examples).
  Tables 2-3: 25/50/75% quantiles of L_d and L_s over the first eval.probe_examples
  images of that prefix (-1: all of it), in float64 if eval.probe_float64, batched by
  eval.batch_size. Writes the per-sample L_d and L_s (and the labels) to
  `workdir/probes_per_sample.npz`.

  Returns:
    (result dict: dataset, method, num_members, num_examples, ensemble_accuracy,
     ambiguity_entropy, probe_examples, float64, quantiles, gradient_cosine and
     gradient_norm {str(q): value}; Markdown of the three tables).
  """
  from lpd_jax import config as config_lib  # evaluate imports this module
  from lpd_jax import data, evaluate

  n = config.eval.probe_examples
  if n == 0:
    raise config_lib.ConfigError('eval.probe_examples must be >= 1, or -1 for all, got 0')
  images, labels = evaluate.test_prefix(ds, config)
  n = len(labels) if n is None or n < 0 else min(n, len(labels))
  clean = evaluate.clean_accuracy(ens, images, labels, config.eval.batch_size, progress=True)
  float64 = bool(config.eval.probe_float64)
  x, y = data.to_float(images[:n]), np.asarray(labels[:n])
  probed = probe_quantiles(ens, x, y, batch_size=config.eval.batch_size, quantiles=QUANTILES,
                           float64=float64, progress=True)
  np.savez(os.path.join(workdir, 'probes_per_sample.npz'), labels=y, **probed['per_sample'])
  result = dict(
    dataset=config.dataset, method=config.method, num_members=ens.num_members,
    num_examples=len(labels), ensemble_accuracy=clean['ensemble_accuracy'],
    ambiguity_entropy=clean['ambiguity_entropy'], probe_examples=n, float64=float64,
    quantiles=list(QUANTILES),
    **{probe: {str(q): v for q, v in probed[probe].items()}
       for probe in ('gradient_cosine', 'gradient_norm')})
  return result, markdown_tables([(methods.display_name(config.method), result)])
