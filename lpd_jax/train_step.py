"""The training step of a stacked K-member ensemble: pure, jitted, donated.

One jitted `train_step` differentiates the method's loss (`lpd_jax.methods`: the method
owns its forward pass and its terms) and applies the optimizer vmapped over the K axis.
Members share batches and nothing else: own parameters, own BatchNorm statistics, own
optimizer state.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from lpd_jax import ensemble, input_pipeline, methods, sharding
from lpd_jax.errors import ConfigError


def make_optimizer(config, steps_per_epoch, restarts=()):
  """SGD with momentum, coupled weight decay and cosine decay to final_learning_rate.

  One cosine over num_epochs; a continued run (`restarts`: the epochs at which
  config.continue_training extended it) starts a new cosine from learning_rate at each.
  """
  bounds = [0, *restarts, config.num_epochs]
  alpha = config.final_learning_rate / config.learning_rate
  pieces = [
    optax.cosine_decay_schedule(config.learning_rate, (b - a) * steps_per_epoch, alpha)
    for a, b in zip(bounds, bounds[1:])
  ]
  schedule = (
    pieces[0]
    if len(pieces) == 1
    else optax.join_schedules(pieces, [b * steps_per_epoch for b in bounds[1:-1]])
  )
  tx = optax.chain(
    optax.add_decayed_weights(config.weight_decay), optax.sgd(schedule, momentum=config.momentum)
  )
  return tx, schedule


@flax.struct.dataclass
class TrainState:
  """What a training step updates (a pytree; saved by `checkpoint.save`).

  Attributes:
    variables: {'params', 'batch_stats'}, every leaf stacked [K, ...].
    opt_state: the optimizer state of each member, stacked [K, ...] (`jax.vmap(tx.init)`).
    step: int32 [], the number of steps taken.
  """

  variables: dict
  opt_state: Any
  step: jax.Array


def init_state(config, members, tx, input_shape) -> TrainState:
  """The state before the first step: members initialised from config.seed."""
  key = jax.random.fold_in(jax.random.key(config.seed), 0)
  variables = members.init(key, config.num_members, input_shape)
  opt_state = jax.jit(jax.vmap(tx.init))(variables['params'])
  return TrainState(variables=variables, opt_state=opt_state, step=jnp.zeros((), jnp.int32))


def make_train_step(config, members, tx, steps_per_epoch=1, mesh=None):
  """-> jitted (state, x [B, H, W, c], y [B], key) -> (state, metrics): `train_step_fn`
  under `jax.jit`, the state donated (updated in place)."""
  return jax.jit(train_step_fn(config, members, tx, steps_per_epoch, mesh), donate_argnums=0)


def train_step_fn(config, members, tx, steps_per_epoch=1, mesh=None):
  """-> (state, x [B, H, W, c], y [B], key) -> (state, metrics), not jitted yet (tests wrap
  it in `chex.assert_max_traces`).

  x as stored (uint8 0..255 or float in [0, 1]): the step scales it to float32 and, with
  config.augment, crops and flips it from `key` (`input_pipeline.device_batch`); the
  method's loss sees the float batch and the same `key`.

  The method's loss is `methods.adversarial.wrap`ped when config.adv_train.attack is set
  (examples made against the current ensemble each step). `steps_per_epoch` sets the
  training progress the loss sees (`methods.Progress`: the fraction step / (steps_per_epoch *
  num_epochs) and the epoch step // steps_per_epoch).

  metrics: loss, terms {name: scalar} and stats {name: array} of the method's aux,
  member_accuracy [K] and ensemble_accuracy (eq. 1) on the batch as the loss saw it.
  With a `mesh` (`sharding.make_mesh`) the new state keeps the state's layout: members
  split over 'member' (`sharding.state_shardings`).
  """
  frozen = ml_collections.FrozenConfigDict(config)
  loss_fn = methods.adversarial.wrap(methods.get(config.method).loss, frozen)

  def train_step(state, x, y, key):
    x = input_pipeline.device_batch(x, key, config.augment)
    variables = state.variables
    progress = methods.progress_at(state.step, steps_per_epoch, config.num_epochs)
    grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
    (loss, aux), grads = grad_fn(
      members, variables['params'], variables['batch_stats'], x, y, key, progress, frozen
    )
    updates, opt_state = jax.vmap(tx.update)(grads, state.opt_state, variables['params'])
    params = optax.apply_updates(variables['params'], updates)
    logits = aux['logits']
    metrics = dict(
      loss=loss,
      terms=aux['terms'],
      stats=aux['stats'],
      member_accuracy=(logits.argmax(-1) == y[None]).mean(axis=1),
      ensemble_accuracy=(ensemble.log_mean_softmax(logits).argmax(-1) == y).mean(),
    )
    new_state = TrainState(
      variables=dict(params=params, batch_stats=aux['batch_stats']),
      opt_state=opt_state,
      step=state.step + 1,
    )
    if mesh is not None:
      new_state = jax.lax.with_sharding_constraint(
        new_state, sharding.state_shardings(new_state, mesh)
      )
    return new_state, metrics

  return train_step


def epochs_phrase(first, last):
  """'epoch 3' or 'epochs 3..5'."""
  return f'epoch {first}' if first == last else f'epochs {first}..{last}'


def schedule_restarts(workdir, config, meta, latest):
  """The schedule's restart epochs for this run; refuses a num_epochs that would silently
  change the learning-rate schedule of the workdir's run (ConfigError)."""
  restarts = list(meta.schedule_restarts)
  saved_epochs = meta.config.num_epochs
  if config.num_epochs == saved_epochs or latest is None or latest >= config.num_epochs:
    return restarts, False
  if latest < saved_epochs:
    raise ConfigError(
      f'workdir {workdir} holds epoch {latest} of a run of num_epochs={saved_epochs}; '
      f'num_epochs={config.num_epochs} would change its learning-rate schedule mid-run. '
      f'Pass --config.num_epochs={saved_epochs}, or a new --workdir'
    )
  if not config.continue_training:
    raise ConfigError(
      f'workdir {workdir} finished its run of num_epochs={saved_epochs} (its cosine schedule '
      f'ended at learning rate {config.final_learning_rate:g}); to train '
      f'{epochs_phrase(saved_epochs + 1, config.num_epochs)} with a new cosine schedule from '
      f'{config.learning_rate:g}, pass --config.continue_training=True, or use a new --workdir'
    )
  return [*restarts, saved_epochs], True
