"""Batched, padded evaluation over a whole split: the one padding policy of lpd-jax.

Every host loop over test images goes through `padded_batches`: batches of one fixed
size, the last one zero-padded, so a jitted function compiles once per shape; only the
first `n` rows of a batch count. Samples are independent in evaluation mode, so the
padding never changes a real sample's result.
"""

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lpd_jax import sharding
from lpd_jax.data import to_float
from lpd_jax.ensemble import log_mean_softmax
from lpd_jax.pytrees import as_partial


def num_batches(n, batch_size):
  """Batches `padded_batches` yields for n samples."""
  return -(-n // min(batch_size, n))


def padded_batches(images, labels, batch_size):
  """Yields (start, x float32 [b, ...] in [0, 1], y [b], n_valid), b = min(batch_size, N).

  Images may be uint8 (scaled here) or float in [0, 1]. The last batch is zero-padded
  to b rows; only its first n_valid rows are real.
  """
  batch_size = min(batch_size, len(labels))
  for start in range(0, len(labels), batch_size):
    x = np.asarray(images[start : start + batch_size])
    x = x if np.issubdtype(x.dtype, np.floating) else to_float(x)  # keeps float64 probes
    y = np.asarray(labels[start : start + batch_size])
    n = len(y)
    if n < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
      y = np.concatenate([y, np.zeros(batch_size - n, y.dtype)])
    yield start, x, y, n


@jax.jit
def _member_logits(ens, x):
  return ens.member_logits(x)


def member_logits(ens, images, batch_size, progress=False):
  """Member logits [K, N, C] (numpy) over a whole split, in the ensemble's inference mode."""
  out = []
  bar = tqdm(
    padded_batches(images, np.zeros(len(images), np.int32), batch_size),
    total=num_batches(len(images), batch_size),
    desc='logits',
    leave=False,
    disable=None if progress else True,
  )
  for _, x, _, n in bar:
    out.append(np.asarray(_member_logits(ens, x))[:, :n])
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


def clean_accuracy(ens, images, labels, batch_size, progress=False):
  """`accuracy_from_logits` of the ensemble's member logits over a split."""
  return accuracy_from_logits(member_logits(ens, images, batch_size, progress), labels)


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

  Returns:
    list of bool arrays [N], one per target; with `keep_examples`, (that list, x_adv).
  """
  model = as_partial(source_fn)
  evaluated = [model] if targets is None else [as_partial(t) for t in targets]
  out, examples = [[] for _ in evaluated], []
  for start, x, y, n in padded_batches(images, labels, batch_size):
    x, y = sharding.put((x, y))
    if attack is not None:
      batch_key = None if key is None else jax.random.fold_in(key, start)
      x = attack(model, x, y, key=batch_key, **params)
    for o, t in zip(out, evaluated):
      o.append(np.asarray(_correct(t, x, y))[:n])
    if keep_examples:
      examples.append(np.asarray(x)[:n])
    if bar is not None:
      bar.update()
  correct = [np.concatenate(o) for o in out]
  return (correct, np.concatenate(examples)) if keep_examples else correct
