"""Batched, padded evaluation over a whole split: the one padding policy of lpd-jax.

Every host loop over test images goes through `padded_batches`: batches of one fixed
size, the last one zero-padded, so a jitted function compiles once per shape; only the
first `n` rows of a batch count. Samples are independent in evaluation mode, so the
padding never changes a real sample's result.

Data parallel: given a `mesh` (`sharding.evaluation_mesh`), every batch is split over its
'data' axis (the batch size is the global batch, a multiple of the devices), the models
are replicated (`sharding.replicate`) and results gathered (`sharding.to_host`). The keys
of the attacks depend on a sample's test index and the global batch size only, so each
sample's result is the one-device result.
"""

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lpd_jax import sharding
from lpd_jax.data import to_float
from lpd_jax.ensemble import log_mean_softmax
from lpd_jax.errors import ConfigError
from lpd_jax.pytrees import PointKeys, as_partial


def num_batches(n, batch_size):
  """Batches `padded_batches` yields for n samples."""
  return -(-n // min(batch_size, n))


def batch_rows(n, batch_size, mesh=None):
  """Rows of each batch over n samples: min(batch_size, n), rounded up to a multiple of the
  mesh's data devices (padding). ConfigError where batch_size < n is not such a multiple:
  the batches would start elsewhere than on one device, and the attacks' keys with them."""
  devices = sharding.data_size(mesh)
  if batch_size < n and batch_size % devices:
    raise ConfigError(
      f'batch size {batch_size} must be a multiple of the {devices} devices evaluation '
      'splits each batch over (config.eval.data_devices)'
    )
  rows = min(batch_size, n)
  return -(-rows // devices) * devices


def padded_batches(images, labels, batch_size, mesh=None):
  """Yields (start, x float32 [b, ...] in [0, 1], y [b], n_valid), b = `batch_rows`.

  Images may be uint8 (scaled here) or float in [0, 1]. The last batch is zero-padded
  to b rows; only its first n_valid rows are real. Without a mesh x and y are numpy; with
  one, arrays split over its data axis (`sharding.split_batch`).
  """
  rows = batch_rows(len(labels), batch_size, mesh)
  for start in range(0, len(labels), min(batch_size, len(labels))):
    x, y, n = _rows(images, labels, np.arange(start, min(start + rows, len(labels))), rows)
    if mesh is not None:
      x, y = sharding.split_batch((x, y), mesh)
    yield start, x, y, n


def _rows(images, labels, index, rows):
  """images[index] as float in [0, 1] and labels[index], zero-padded to `rows` rows."""
  x = np.asarray(images[index[0] : index[-1] + 1] if _contiguous(index) else images[index])
  x = x if np.issubdtype(x.dtype, np.floating) else to_float(x)  # keeps float64 probes
  y = np.asarray(labels)[index]
  n = len(y)
  if n < rows:
    x = np.concatenate([x, np.zeros((rows - n, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(rows - n, y.dtype)])
  return x, y, n


def _contiguous(index):
  return len(index) and index[-1] - index[0] == len(index) - 1


@jax.jit
def _member_logits(ens, x):
  return ens.member_logits(x)


def member_logits(ens, images, batch_size, progress=False, mesh=None):
  """Member logits [K, N, C] (numpy) over a whole split, in the ensemble's inference mode
  (data parallel over `mesh`'s data axis when given)."""
  out = []
  ens = sharding.replicate(ens, mesh)
  bar = tqdm(
    padded_batches(images, np.zeros(len(images), np.int32), batch_size, mesh),
    total=num_batches(len(images), batch_size),
    desc='logits',
    leave=False,
    disable=None if progress else True,
  )
  for _, x, _, n in bar:
    out.append(sharding.to_host(_member_logits(ens, x))[:, :n])
  return np.concatenate(out, axis=1)


def logit_margins(logits, labels):
  """z_y - max_{j != y} z_j for logits [..., N, C] and labels [N] -> [..., N]."""
  logits = np.asarray(logits)
  z_y = np.take_along_axis(logits, np.broadcast_to(labels[:, None], logits.shape[:-1] + (1,)), -1)
  others = np.where(np.arange(logits.shape[-1]) == labels[:, None], -np.inf, logits)
  return z_y[..., 0] - others.max(-1)


def accuracy_from_logits(logits, labels):
  """Member logits [K, N, C] and labels [N] -> clean accuracy of each member and of eq. 1.

  Returns:
    dict with member_accuracy [K], ensemble_accuracy, member_correct bool [K, N] and
    ensemble_correct bool [N] (argmax of the mean member softmax, eq. 1).
  """
  member_correct = logits.argmax(-1) == labels[None]
  ensemble_correct = np.asarray(log_mean_softmax(jnp.asarray(logits))).argmax(-1) == labels
  return dict(
    member_accuracy=member_correct.mean(axis=1),
    ensemble_accuracy=float(ensemble_correct.mean()),
    member_correct=member_correct,
    ensemble_correct=ensemble_correct,
  )


def clean_accuracy(ens, images, labels, batch_size, progress=False, mesh=None):
  """`accuracy_from_logits` of the ensemble's member logits over a split."""
  return accuracy_from_logits(member_logits(ens, images, batch_size, progress, mesh), labels)


@jax.jit
def _correct(model, x, y):
  return jnp.argmax(model(x), -1) == y


def attack_correct(
  attack,
  params,
  source_fn,
  images,
  labels,
  *,
  key=None,
  batch_size=256,
  targets=None,
  bar=None,
  keep_examples=False,
  points=None,
  pack=True,
  mesh=None,
):
  """Which samples each target classifies right on `attack`'s examples against `source`.

  White-box when `targets` is None (the source itself), black-box transfer otherwise.

  Args:
    attack: `attack(model_fn, x, y, *, key, **params) -> x_adv` (lpd_jax.attacks), or
      None for the clean inputs.
    params: the attack's keyword parameters, e.g. {'eps': 0.02}.
    source_fn: the attacked model, x [B, ...] -> log-probabilities [B, C], e.g.
      `ensemble.log_predict` (see `lpd_jax.pytrees.as_partial`).
    images: [N, ...] uint8 or float in [0, 1]; labels: int [N].
    key: PRNG key; the batch starting at index s gets fold_in(key, s). None: no key.
    batch_size: samples per attack call (at most N); the last batch is zero-padded.
    targets: model functions evaluated on the examples, like `source_fn`.
    bar: optional tqdm bar, advanced once per batch.
    keep_examples: also return the adversarial examples [N, ...].
    points: optional increasing test indices [M] to attack instead of all N (the
      cascade: the points still robust); each gets the result it has in the run over all N.
    pack: with `points`, pack them into batches of the same size, each point with the
      key it has in the run over all N (`attacks.common.PointKeys`: for attacks that draw
      per sample through `sample_keys` / `fold_keys`, `Attack.point_keys`); else attack
      the batches of the run over all N that hold one of them (any attack).
    mesh: optional evaluation mesh: batches split over its data axis.

  Returns:
    list of bool arrays [N] (or [M] with `points`), one per target; with `keep_examples`,
    (that list, x_adv).
  """
  model = sharding.replicate(as_partial(source_fn), mesh)
  evaluated = (
    [model] if targets is None else [sharding.replicate(as_partial(t), mesh) for t in targets]
  )
  out, examples = [[] for _ in evaluated], []
  if points is not None and np.any(np.diff(points) <= 0):
    raise ValueError('attack_correct: points must be increasing test indices')
  batches = _attacked_batches(images, labels, key, batch_size, points, pack, mesh)
  for x, y, take, batch_key in batches:
    if attack is not None:
      x = attack(model, x, y, key=batch_key, **params)
    for o, t in zip(out, evaluated):
      o.append(sharding.to_host(_correct(t, x, y))[take])
    if keep_examples:
      examples.append(sharding.to_host(x)[take])
    if bar is not None:
      bar.update()
  correct = [np.concatenate(o) if o else np.zeros(0, bool) for o in out]
  if keep_examples:
    return correct, np.concatenate(examples) if examples else np.zeros((0, *images.shape[1:]))
  return correct


def _attacked_batches(images, labels, key, batch_size, points, pack, mesh):
  """(x, y, rows to keep, key) per batch: of all N samples (the batch starting at s with
  fold_in(key, s)), of those holding one of `points`, or of `points` packed with their
  `PointKeys`."""
  if points is None or not pack:
    wanted = None if points is None else np.asarray(points, np.int64)
    for start, x, y, n in padded_batches(images, labels, batch_size, mesh):
      take = np.arange(n)
      if wanted is not None:
        take = wanted[(wanted >= start) & (wanted < start + n)] - start
        if not len(take):
          continue
      x, y = (x, y) if mesh is not None else sharding.put((x, y))
      yield x, y, take, None if key is None else jax.random.fold_in(key, start)
    return
  step = min(batch_size, len(labels))  # the batches of the run over all N
  rows = batch_rows(len(labels), batch_size, mesh)
  points = np.asarray(points, np.int64)
  for first in range(0, len(points), rows):
    index = points[first : first + rows]
    x, y, n = _rows(images, labels, index, rows)
    x, y = sharding.split_batch((x, y), mesh)
    point_key = None
    if key is not None:
      padded = np.concatenate([index, np.zeros(rows - n, np.int64)])
      starts = padded // step * step
      batch_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.asarray(starts))
      point_key = sharding.split_batch(
        PointKeys(batch_keys, jnp.asarray(padded - starts, jnp.int32)), mesh
      )
    yield x, y, np.arange(n), point_key
