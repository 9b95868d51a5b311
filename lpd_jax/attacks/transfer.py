"""Black-box transfer attacks (paper Table 5, METHODS.md "Attacks"): adversarial
examples made on a surrogate (Type I: a Baseline ensemble; Type II: one trained with
the same defence), evaluated on the target model."""

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax.attacks.common import as_partial


@jax.jit
def _predict(model, x):
  return jnp.argmax(model(x), -1)


def transfer_accuracy(surrogate_fn, target_fn, attack, x, y, *, key=None, batch_size=256, **params):
  """Accuracy of `target_fn` on `attack`'s examples against `surrogate_fn`.

  Batches of `batch_size` (the last one padded, so one compile serves all); the batch
  starting at index s gets key fold_in(key, s).

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
  target = as_partial(target_fn)
  x, y = np.asarray(x), np.asarray(y)
  batch_size = min(batch_size, len(x))
  x_adv, clean, adv = [], [], []
  for start in range(0, len(x), batch_size):
    n = min(batch_size, len(x) - start)
    index = np.minimum(np.arange(start, start + batch_size), len(x) - 1)  # pads with the last
    xb, yb = jnp.asarray(x[index]), jnp.asarray(y[index])
    batch_key = None if key is None else jax.random.fold_in(key, start)
    xb_adv = attack(surrogate_fn, xb, yb, key=batch_key, **params)
    x_adv.append(np.asarray(xb_adv[:n]))
    clean.append(np.asarray(_predict(target, xb)[:n] == yb[:n]))
    adv.append(np.asarray(_predict(target, xb_adv)[:n] == yb[:n]))
  return {
    'accuracy': float(np.concatenate(adv).mean()),
    'clean_accuracy': float(np.concatenate(clean).mean()),
    'x_adv': np.concatenate(x_adv),
  }
