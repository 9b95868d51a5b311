"""The method object and the pieces every objective shares.

Loss convention (docs/methods.md, "Regularizers and other methods"): the data term of
every method is mean_k CE_k, the members' cross-entropies averaged (the PDD authors' code).
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from lpd_jax import dropout, gradients
from lpd_jax.errors import need


class Progress(NamedTuple):
  """Where training stands before a step (traced scalars).

  Attributes:
    fraction: float32 [] in [0, 1), step / (steps per epoch * num_epochs).
    epoch: int32 [], the 0-based epoch of the step (step // steps per epoch), exact.
  """

  fraction: jax.Array
  epoch: jax.Array


def progress_at(step, steps_per_epoch, num_epochs):
  """The `Progress` of step `step` (an int32 [] or a Python int)."""
  step = jnp.asarray(step, jnp.int32)
  fraction = step.astype(jnp.float32) / (steps_per_epoch * num_epochs)
  return Progress(fraction, step // steps_per_epoch)


class Method(NamedTuple):
  """A training objective.

  Attributes:
    name: the `config.method` value, also the name of its config group.
    display: the column label of reports (the paper's name where the method is the paper's).
    defaults: the config group `config.<name>` (defaults: docs/methods.md); {} for none.
    loss: `loss(members, params, batch_stats, x, y, key, progress, config) -> (scalar, aux)`:
      members an `ensemble.Members`, params and batch_stats stacked [K, ...], x [B, ...],
      y [B], key a PRNG key for this step, progress a `Progress` (where training stands
      before this step: TRS ramps its eps with its fraction, DVERGE draws its layer per
      epoch), config the run's config. aux is a dict
      with 'batch_stats' (updated, [K, ...]), 'logits' [K, B, C] (what the loss saw),
      'terms' {name: scalar} (the loss's parts, logged per epoch as train_loss_<name>)
      and 'stats' {name: scalar} (diagnostics, logged as train_<name>).
    keep_rates: config -> `dropout.KeepRates` (h [K, B, D] -> p) for 'expected' inference,
      or None when the head saw unscaled features in training (no dropout, or 1/p rescaling).
    validate: config -> None; raises ConfigError for settings of this method that cannot work.
    uses: the other methods whose config groups this one reads (DEG: PDD's masks).
    for_epoch: (config, epoch) -> {'group.field': value}: settings drawn per epoch that the
      training loop fixes in the step it compiles for that epoch (DVERGE's layer: one
      program per layer instead of a switch over all of them); None for none.
  """

  name: str
  display: str
  defaults: dict
  loss: Callable
  keep_rates: Optional[Callable] = None
  validate: Optional[Callable] = None
  uses: tuple = ()
  for_epoch: Optional[Callable] = None


def mean_cross_entropy(logits, y):
  """logits [K, B, C], y [B] -> (mean_k CE_k, CE_k [K]), CE_k the batch mean of member k."""
  member_ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[None]).mean(axis=1)
  return member_ce.mean(), member_ce


def _masked_heads(members, params, h, key, keep_rates, rescale):
  """h [K, B, D] -> (logits [K, B, C], stats): keep rates from the stop-gradient features of
  all K members at once (LPD's bin statistics are over the ensemble), Bernoulli(p) masks per
  (k, b, j), divided by p if `rescale`; the plain heads without `keep_rates`."""
  stats = {}
  if keep_rates is not None:
    h_fixed = jax.lax.stop_gradient(h)
    p = keep_rates(h_fixed)
    stats['mean_keep_rate'] = dropout.mean_active_keep_rate(h_fixed, p)
    h = h * dropout.sample_mask(key, p, rescale=rescale)
  return members.heads(params, h), stats


def forward(members, params, batch_stats, x, *, key=None, keep_rates=None, rescale=False):
  """Training-mode forward of all members: features -> keep rates -> masks -> heads.

  The shared helper of every dropout method (LPD, PDD); without `keep_rates` it is the
  plain forward.

  Returns:
    (logits [K, B, C], new batch_stats [K, ...], stats {'mean_keep_rate'} or {}).
  """
  h, new_batch_stats = members.features(
    {'params': params, 'batch_stats': batch_stats}, x, train=True
  )  # h [K, B, D]
  logits, stats = _masked_heads(members, params, h, key, keep_rates, rescale)
  return logits, new_batch_stats, stats


def num_members(params):
  """K, the leading axis of the stacked parameters."""
  return jax.tree.leaves(params)[0].shape[0]


def forward_with_input_gradients(
  members, params, batch_stats, x, y, *, key=None, keep_rates=None, rescale=False
):
  """`forward` plus each member's input gradient, for second-order methods (DEG, GAL, TRS).

  g_k = d CE_k / dx with CE_k member k's batch-mean cross-entropy through the same
  training-mode network the data term sees (BatchNorm batch statistics; the same dropout
  mask, which is held fixed w.r.t. x as the reference codes' host-side masks are); one
  backward pass for all K (`gradients.member_loss_gradients`). g is differentiable w.r.t.
  the parameters, so a loss on it is trained by double backprop.

  Returns:
    (g [K, B, ...], CE_k [K], logits [K, B, C], new batch_stats [K, ...], stats).
  """

  def member_logits(xs):  # xs [K, B, ...]: member k sees xs[k]
    h, new_batch_stats = members.features(
      {'params': params, 'batch_stats': batch_stats}, xs, train=True, per_member_inputs=True
    )
    logits, stats = _masked_heads(members, params, h, key, keep_rates, rescale)
    return logits, (new_batch_stats, stats)

  g, member_ce, logits, (new_batch_stats, stats) = gradients.member_loss_gradients(
    member_logits, x, y, num_members(params)
  )
  return g, member_ce, logits, new_batch_stats, stats


def result(loss, logits, batch_stats, terms, stats):
  """The (loss, aux) pair every Method.loss returns (see `Method`)."""
  return loss, dict(batch_stats=batch_stats, logits=logits, terms=terms, stats=stats)


def dropout_method(name, display, defaults, make_keep_rates, validate_group=None):
  """A method whose loss is mean_k CE_k of members masked by `make_keep_rates(config)`.

  LPD and PDD are this with their keep-rate functions; `config.<name>.rescale` chooses
  inverted dropout (1/p) in training, in which case 'expected' inference equals 'raw'.
  """

  def loss(members, params, batch_stats, x, y, key, progress, config):
    del progress
    logits, new_batch_stats, stats = forward(
      members,
      params,
      batch_stats,
      x,
      key=key,
      keep_rates=make_keep_rates(config),
      rescale=config[name].rescale,
    )
    ce, member_ce = mean_cross_entropy(logits, y)
    return result(ce, logits, new_batch_stats, {'ce': ce}, dict(stats, member_ce=member_ce))

  def keep_rates(config):
    return None if config[name].rescale else make_keep_rates(config)

  def validate(config):
    bins = config[name].num_bins
    need(
      bins >= config.num_members,
      f'{name}.num_bins ({bins}) must be >= num_members ({config.num_members}): '
      'each member needs its own priority bin',
    )
    if validate_group is not None:
      validate_group(config)

  return Method(name, display, defaults, loss, keep_rates, validate)
