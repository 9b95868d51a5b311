"""Pieces shared by the white-box attacks: the attack loss, norms, keys.

Conventions (METHODS.md "Attacks"): `model(x) -> [B, C]` log-probabilities (for an
ensemble, log of the mean member softmax, eq. 1); x is float32 in [0, 1] with any
shape [B, ...]; y int labels [B]. Samples are independent (evaluation mode), so the
gradient of the batch-summed loss is each sample's own input gradient.
"""

import jax
import jax.numpy as jnp

from lpd_jax.pytrees import as_partial  # noqa: F401  (re-exported: the attacks' model wrapper)


def cross_entropy(log_probs, y):
  """Per-sample attack loss -log p_y [B] from log-probabilities [B, C]."""
  return -jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]


def margin(log_probs, y):
  """Per-sample margin loss max_{j != y} log p_j - log p_y [B] from log-probabilities [B, C].

  METHODS.md "Attacks" (strong attacks): a difference of log-probabilities, whose gradient
  does not underflow when the model is confident. The cross-entropy's float32 gradient is
  exactly 0 there (1 - p_y rounds to 0), which makes gradient attacks return their input.
  """
  log_p_y = jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, log_probs.shape[-1], dtype=bool), -jnp.inf, log_probs)
  return jnp.max(others, axis=-1) - log_p_y


LOSSES = {'ce': cross_entropy, 'margin': margin}


def check_loss(loss):
  if loss not in LOSSES:
    raise ValueError(f'loss must be one of {tuple(LOSSES)}, got {loss!r}')


def loss_grad(model, x, y, loss='ce'):
  """d LOSSES[loss](model(x), y) / dx, shaped as x (grad of the batch-summed loss)."""
  return jax.grad(lambda x: LOSSES[loss](model(x), y).sum())(x)


def l2_norm(v):
  """L2 norm over all but the batch axis, shaped [B, 1, ..., 1] to broadcast against v."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def sample_keys(key, n):
  """Key of sample i = fold_in(key, i): sample i gets the same randomness in any batch
  that holds it at index i, whatever the batch size."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
