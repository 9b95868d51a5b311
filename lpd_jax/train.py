"""Simultaneous training of a stacked K-member ensemble (paper Algorithm 1).

One jitted `train_step` updates all members at once: features of every member, then
the method's masks (LPD keep rates need all members' features of the same step),
then every head; the loss is sum_k CE_k. Members share batches and nothing else:
own parameters, own BatchNorm statistics, own optimizer state.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lpd_jax import checkpoint, data, dropout, ensemble, evaluate, methods
from lpd_jax import config as config_lib
from lpd_jax.models import ResNet18


class TrainingError(RuntimeError):
  """Training diverged (NaN or Inf loss)."""


def make_optimizer(config, steps_per_epoch):
  """SGD with momentum, coupled weight decay and cosine decay to final_learning_rate."""
  total = config.num_epochs * steps_per_epoch
  schedule = optax.cosine_decay_schedule(config.learning_rate, total,
                                         alpha=config.final_learning_rate / config.learning_rate)
  tx = optax.chain(optax.add_decayed_weights(config.weight_decay),
                   optax.sgd(schedule, momentum=config.momentum))
  return tx, schedule


def init_state(config, model, tx, input_shape):
  """-> {'variables': {'params', 'batch_stats'}, 'opt_state', 'step'}, leaves stacked [K, ...]."""
  key = jax.random.fold_in(jax.random.key(config.seed), 0)
  variables = ensemble.init_variables(model, key, config.num_members, input_shape)
  opt_state = jax.jit(jax.vmap(tx.init))(variables['params'])
  return dict(variables=variables, opt_state=opt_state, step=jnp.zeros((), jnp.int32))


def make_train_step(config, model, tx):
  """-> jitted (state, x [B, H, W, c], y [B], key) -> (state, metrics)."""
  strategy = ensemble.resolve_strategy(config.member_strategy)
  keep_rates, rescale = methods.keep_rate_fn(config)

  def loss_fn(params, batch_stats, x, y, key):
    def features(member):
      p, bs = member
      h, updates = model.apply({'params': p, 'batch_stats': bs}, x, train=True,
                               method=ResNet18.features, mutable=['batch_stats'])
      return h, updates['batch_stats']

    # h [K, B, D]
    h, new_batch_stats = ensemble.map_members(features, (params, batch_stats), strategy)
    if keep_rates is not None:
      p = keep_rates(jax.lax.stop_gradient(h))
      h = h * dropout.sample_mask(key, p, rescale=rescale)
    logits = ensemble.map_members(
        lambda m: model.apply({'params': m[0]}, m[1], method=ResNet18.classify), (params, h),
        strategy)  # [K, B, C]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[None]).mean(axis=1)  # [K]
    return ce.sum(), (new_batch_stats, logits, ce)

  def train_step(state, x, y, key):
    variables = state['variables']
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (batch_stats, logits, ce)), grads = grad_fn(variables['params'],
                                                       variables['batch_stats'], x, y, key)
    updates, opt_state = jax.vmap(tx.update)(grads, state['opt_state'], variables['params'])
    params = optax.apply_updates(variables['params'], updates)
    member_correct = (logits.argmax(-1) == y[None]).mean(axis=1)  # [K]
    ensemble_probs = jax.nn.softmax(logits, axis=-1).mean(axis=0)
    metrics = dict(loss=loss, member_loss=ce, member_accuracy=member_correct,
                   ensemble_accuracy=(ensemble_probs.argmax(-1) == y).mean())
    new_state = dict(variables=dict(params=params, batch_stats=batch_stats), opt_state=opt_state,
                     step=state['step'] + 1)
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)


def _check_finite(loss, step, epoch, last_saved):
  if not np.isfinite(loss):
    raise TrainingError(
        f'loss is {loss} at step {step} (epoch {epoch + 1}). Training stopped; the last good '
        f'checkpoint is epoch {last_saved}. Lower --config.learning_rate or check the data.')


def train_and_evaluate(config, workdir):
  """Trains config's ensemble in `workdir`, resuming from its latest checkpoint.

  Writes per-epoch metrics to stdout and `workdir/metrics.jsonl` and an orbax
  checkpoint after every epoch. Returns the final Ensemble.
  """
  config_lib.validate(config)
  meta = checkpoint.read_meta(workdir)
  mgr = checkpoint.manager(workdir, keep=config.keep_checkpoints)
  start_epoch = mgr.latest_step() or 0
  if meta is not None:
    checkpoint.check_compatible(workdir, config, meta[0])
    if start_epoch >= config.num_epochs:
      print(f'workdir {workdir} already holds the checkpoint of epoch {start_epoch}; nothing to do')
      return checkpoint.load(workdir, config)
  ds = data.load_dataset(config)
  steps_per_epoch = data.num_train_steps(ds, config.batch_size)
  if steps_per_epoch == 0:
    raise config_lib.ConfigError(f'batch_size {config.batch_size} is larger than the '
                                 f'{len(ds.train_labels)} training images')
  model = ResNet18(num_classes=ds.num_classes, width=config.width)
  tx, schedule = make_optimizer(config, steps_per_epoch)
  state = init_state(config, model, tx, ds.input_shape)
  if start_epoch:
    state = checkpoint.restore(mgr, start_epoch, like_state=state)
    print(f'resuming from the checkpoint of epoch {start_epoch} in {workdir}')
  else:
    checkpoint.write_meta(workdir, config, ds.num_classes, ds.input_shape)

  train_step = make_train_step(config, model, tx)
  eval_ensemble = lambda s: ensemble.Ensemble(s['variables'], model, config.member_strategy)
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  for epoch in range(start_epoch, config.num_epochs):
    start, sums, seen = time.perf_counter(), None, 0
    batches = data.train_batches(ds, config.batch_size, seed=config.seed, epoch=epoch,
                                 augment=config.augment)
    bar = tqdm(batches, total=steps_per_epoch, desc=f'epoch {epoch + 1}/{config.num_epochs}',
               leave=False)
    for i, (x, y) in enumerate(bar):
      step = epoch * steps_per_epoch + i  # host-side: no device sync per step
      state, m = train_step(state, x, y, jax.random.fold_in(dropout_key, step))
      sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
      seen += 1
      if seen % config.log_every_steps == 0:
        loss = float(m['loss'])
        _check_finite(loss, step, epoch, epoch)
        bar.set_postfix(loss=f'{loss:.4f}')
    means = jax.tree.map(lambda v: np.asarray(v) / seen, sums)
    _check_finite(float(means['loss']), int(state['step']), epoch, epoch)
    train_seconds = time.perf_counter() - start
    checkpoint.save(mgr, epoch + 1, state)
    test = evaluate.clean_accuracy(eval_ensemble(state), ds.test_images, ds.test_labels,
                                   config.eval.batch_size)
    record = dict(epoch=epoch + 1, step=int(state['step']),
                  learning_rate=float(schedule(int(state['step']) - 1)),  # of the last step
                  train_loss=float(means['loss']),
                  train_member_accuracy=means['member_accuracy'].round(4).tolist(),
                  train_ensemble_accuracy=float(means['ensemble_accuracy']),
                  test_member_accuracy=np.round(test['member_accuracy'], 4).tolist(),
                  test_ensemble_accuracy=test['ensemble_accuracy'],
                  images_per_second=seen * config.batch_size / train_seconds,
                  epoch_seconds=train_seconds)
    with open(metrics_path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    print(f"epoch {epoch + 1:3d}  loss {record['train_loss']:.4f}  "
          f"train acc {record['train_ensemble_accuracy']:.4f}  "
          f"test acc {record['test_ensemble_accuracy']:.4f} "
          f"(members {' '.join(f'{a:.3f}' for a in record['test_member_accuracy'])})  "
          f"{record['images_per_second']:.0f} img/s", flush=True)
  return eval_ensemble(state)
