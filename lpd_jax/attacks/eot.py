"""Expectation over Transformation (Athalye et al. 2018) for stochastic models.

A user who deploys a dropout-trained ensemble with its masks on at test time deploys a
random function; gradient attacks on one draw of it (or on the deterministic network)
underestimate what an attacker who averages over the randomness can do. `eot` turns
`sample_fn(x, key) -> log-probabilities` into the deterministic model of the expected
prediction over `samples` draws, which every attack of this package accepts.
"""

import jax
import jax.numpy as jnp

from lpd_jax.attacks.common import as_partial


def _expected_log_probs(sample_fn, keys, x):
  log_probs = jax.vmap(lambda key: sample_fn(x, key))(keys)  # [S, B, C]
  return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(keys.shape[0])


def eot(sample_fn, key, samples=16):
  """-> model_fn(x) = log (1/S) sum_s exp(sample_fn(x, key_s)), S = `samples` fixed draws.

  Its input gradient is the Monte-Carlo average of the draws' probability gradients, so
  a gradient attack on it follows the expected prediction (EOT). The S keys are fixed for
  the whole attack (split from `key`): evaluate the examples on fresh draws.

  Args:
    sample_fn: (x [B, ...], key) -> log-probabilities [B, C], e.g.
      `Ensemble.sampled_log_predict` (a bound method of a pytree: its parameters stay
      traced arguments of the attacks' jitted cores).
    key: PRNG key of the S draws.
    samples: S.

  Returns:
    A `jax.tree_util.Partial`, x [B, ...] -> [B, C] log-probabilities.
  """
  return jax.tree_util.Partial(
    _expected_log_probs, as_partial(sample_fn), jax.random.split(key, samples)
  )
