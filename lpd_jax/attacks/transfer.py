"""Black-box transfer attacks (paper Table 5, docs/methods.md, "Black-box transfer"): adversarial
examples made on a surrogate (Type I: a Baseline ensemble; Type II: one trained with
the same defence), evaluated on the target model."""

import numpy as np

from lpd_jax import predict


def transfer_accuracy(surrogate_fn, target_fn, attack, x, y, *, key=None, batch_size=256, **params):
  """Accuracy of `target_fn` on `attack`'s examples against `surrogate_fn`.

  Runs `lpd_jax.predict.attack_correct` (batches of `batch_size`, the last one
  zero-padded, so one compile serves all; the batch starting at index s gets key
  fold_in(key, s)), the same loop the transfer suite uses.

  Args:
    surrogate_fn, target_fn: x [B, ...] -> log-probabilities [B, C] (see `pgd`).
    attack: an attack of this package, e.g. `pgd`.
    x: inputs [N, ...] in [0, 1]; y: int labels [N].
    key: PRNG key passed on (per batch) to the attack.
    batch_size: samples per attack call.
    **params: the attack's parameters, e.g. eps=0.02.

  Returns:
    {'accuracy': target accuracy on x_adv, 'clean_accuracy': on x,
     'x_adv': np.ndarray [N, ...]}.
  """
  x, y = np.asarray(x), np.asarray(y)
  (clean,) = predict.attack_correct(None, {}, target_fn, x, y, batch_size=batch_size)
  (adv,), x_adv = predict.attack_correct(
    attack,
    params,
    surrogate_fn,
    x,
    y,
    key=key,
    batch_size=batch_size,
    targets=(target_fn,),
    keep_examples=True,
  )
  return {'accuracy': float(adv.mean()), 'clean_accuracy': float(clean.mean()), 'x_adv': x_adv}
