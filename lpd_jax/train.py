"""Simultaneous training of a stacked K-member ensemble (paper Algorithm 1): the run.

`train_and_evaluate` reads the workdir, then `load_data`, `resume_or_init`, `compile_step`
and `train_epoch` (one checkpoint and one metrics.jsonl line each) in turn. The step itself
is `lpd_jax.train_step`'s (re-exported here).
"""

import contextlib
import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lpd_jax import (
  checkpoint,
  compilation_cache,
  data,
  ensemble,
  input_pipeline,
  interrupts,
  loading,
  methods,
  metric_writers,
  predict,
  progress,
  provenance,
  sharding,
)
from lpd_jax import config as config_lib
from lpd_jax import workdir as workdir_lib
from lpd_jax.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from lpd_jax.progress import phase
from lpd_jax.train_step import (
  TrainState,
  epochs_phrase,
  init_state,
  make_optimizer,
  make_train_step,
  schedule_restarts,
  train_step_fn,
)

__all__ = [
  'TrainState',
  'TrainingError',
  'init_state',
  'make_optimizer',
  'make_train_step',
  'train_and_evaluate',
  'train_step_fn',
]


def _epoch_record(means, test, epoch, state, schedule, seen, config, train_seconds):
  """One line of metrics.jsonl: the epoch's training means and its test evaluation."""
  record = dict(
    epoch=epoch + 1,
    step=int(state.step),
    learning_rate=float(schedule(int(state.step) - 1)),  # of the last step
    train_loss=float(means['loss']),
  )
  record.update({f'train_loss_{name}': float(v) for name, v in means['terms'].items()})
  for name, v in means['stats'].items():
    record[f'train_{name}'] = np.round(v, 6).tolist() if np.ndim(v) else float(v)
  record.update(
    train_member_accuracy=means['member_accuracy'].round(4).tolist(),
    train_ensemble_accuracy=float(means['ensemble_accuracy']),
    **test,
    images_per_second=seen * config.batch_size / train_seconds,
    epoch_seconds=train_seconds,
  )
  return record


def evaluate_epoch(ens, ds, batch_size, warm_up=False):
  """Test metrics logged every epoch: accuracies (raw inference, the report default) and
  the median member logit margin z_y - max_{j != y} z_j over members and test images, raw
  and, for a method with keep rates, expected: their ratio is the train/test scale drift
  of docs/methods.md, "Evaluation of dropout-trained members"."""
  if warm_up:  # compile what the epochs' evaluation runs: one batch of the same shape
    ds = dataclasses.replace(
      ds, test_images=ds.test_images[:batch_size], test_labels=ds.test_labels[:batch_size]
    )
  logits = predict.member_logits(ens, ds.test_images, batch_size)
  acc = predict.accuracy_from_logits(logits, ds.test_labels)
  out = dict(
    test_member_accuracy=np.round(acc['member_accuracy'], 4).tolist(),
    test_ensemble_accuracy=acc['ensemble_accuracy'],
    test_median_logit_margin=float(np.median(predict.logit_margins(logits, ds.test_labels))),
  )
  if ens.keep_rates is not None:
    expected = predict.member_logits(ens.with_inference('expected'), ds.test_images, batch_size)
    out['test_median_logit_margin_expected'] = float(
      np.median(predict.logit_margins(expected, ds.test_labels))
    )
  return out


def _check_finite(loss, step, epoch):
  """TrainingError naming the step and the last checkpoint (epoch `epoch` is running)."""
  if not np.isfinite(loss):
    saved = f'the last good checkpoint is epoch {epoch}' if epoch else 'no checkpoint was saved'
    raise TrainingError(
      f'loss is {loss} at step {step} (epoch {epoch + 1}). Training stopped; {saved}. '
      'Lower --config.learning_rate or check the data.'
    )


def make_mesh(config):
  """config.sharding -> the ('member', 'data') Mesh, or None on one device."""
  try:
    return sharding.make_mesh(config.sharding.member, config.sharding.data, config.num_members)
  except ValueError as e:
    raise ConfigError(str(e)) from None


@dataclasses.dataclass
class Training:
  """What the pieces of one training run share (`train_and_evaluate`)."""

  config: Any
  workdir: str
  ds: Any  # data.Dataset
  members: Any  # ensemble.Members
  tx: Any  # the optimizer
  schedule: Any  # step -> learning rate
  mesh: Any  # jax.sharding.Mesh or None
  mgr: Any  # the workdir's orbax CheckpointManager
  steps_per_epoch: int
  writer: Any = dataclasses.field(default_factory=metric_writers.MetricWriter)  # TensorBoard

  @property
  def dropout_key(self):
    return jax.random.fold_in(jax.random.key(self.config.seed), 1)

  def ensemble_at(self, state, epoch):
    """The Ensemble of `state` after `epoch` epochs (for the test evaluation and return)."""
    meta = dict(
      workdir=os.path.abspath(self.workdir),
      epoch=epoch,
      num_classes=self.ds.num_classes,
      input_shape=tuple(self.ds.input_shape),
    )
    return loading.assemble(state.variables, self.members, self.config, meta)


def load_data(config):
  """The dataset, with a line saying what it holds; ConfigError if no batch fits."""
  with phase(f'loading {config.dataset}'):
    ds = data.load_dataset(config)
    print(
      f' {len(ds.train_labels):,} train / {len(ds.test_labels):,} test images of '
      f'{"x".join(map(str, ds.input_shape))}, {ds.num_classes} classes;',
      end='',
    )
  if data.num_train_steps(ds, config.batch_size) == 0:
    raise ConfigError(
      f'batch_size {config.batch_size} is larger than the {len(ds.train_labels)} training images'
    )
  return ds


INIT_FROM_FILE = 'init_from.json'  # the checkpoint a run started from (config.init_from)


def resume_or_init(run, meta, latest, restarts, continuing):
  """-> (first epoch to train, TrainState): the newest checkpoint that verifies (damaged
  newer ones moved aside), or a fresh init; metrics.jsonl reconciled with it, and
  ensemble.json written for a new or continued run; the epochs to come recorded in
  provenance.json."""
  config, workdir = run.config, run.workdir
  with phase(f'initialising {config.num_members} members ({config.model}, width {config.width})'):
    state = init_state(config, run.members, run.tx, run.ds.input_shape)
    if config.init_from and (meta is None or latest is None):
      variables, source = loading.starting_point(config, run.ds.num_classes, state.variables)
      if jax.process_index() == 0:
        workdir_lib.write_json_atomically(workdir_lib.path(workdir, INIT_FROM_FILE), source)
      print(f' from epoch {source["epoch"]} of {config.init_from} ({source["method"]});', end='')
      state = state.replace(variables=variables)
    state = sharding.place_state(state, run.mesh)
    jax.block_until_ready(state)
    if run.mesh is not None:
      print(f' on a {dict(run.mesh.shape)} mesh;', end='')
  start_epoch = 0
  if meta is not None and latest is not None:
    start_epoch, state, damaged = checkpoint.restore_newest(run.mgr, like_state=state)
    if damaged:  # move them aside so that those epochs can be written again
      checkpoint.move_aside(workdir, run.mgr, damaged)
      run.mgr = checkpoint.manager(workdir, keep=config.keep_checkpoints)
    workdir_lib.reconcile_metrics(workdir, start_epoch, checkpoint.saved_records(run.mgr))
    print(f'resuming from the checkpoint of epoch {start_epoch} in {workdir}')
  else:  # nothing is written into the workdir before the config and the data passed
    workdir_lib.reconcile_metrics(workdir, 0, {})  # drops lines of no checkpoint
  if continuing:
    print(
      f'continuing {workdir}: {epochs_phrase(restarts[-1] + 1, config.num_epochs)} on a new cosine '
      f'schedule from learning rate {config.learning_rate:g} to {config.final_learning_rate:g}'
    )
  if meta is None or continuing:
    saved = config_lib.run_config(config)
    ds = run.ds
    manifests = meta.manifests if meta is not None else True  # older checkpoints lack them
    workdir_lib.write_meta(
      workdir,
      workdir_lib.Meta(saved, ds.num_classes, tuple(ds.input_shape), tuple(restarts), manifests),
    )
  if jax.process_index() == 0 and start_epoch < config.num_epochs:
    provenance.record_training(workdir, start_epoch + 1, config.dtype)
  return start_epoch, state


@contextlib.contextmanager
def compiling(message):
  """A start-up `phase` whose line says what its compiles were: 'compiled', 'read from the
  compilation cache' or 'already compiled in this process' (`compilation_cache.outcome`)."""
  with phase(message) as said:
    before = compilation_cache.counts()
    yield
    said['outcome'] = compilation_cache.outcome(before)


def compile_step(run, state, epoch, cache, steps=None):
  """The compiled training step of `epoch` for `state`'s layout, from `steps` (settings ->
  step, filled here) when an earlier epoch compiled it: one step for every epoch, except
  for a method that draws settings per epoch (`methods.config_for_epoch`: DVERGE's layer).
  The first call also warms up the test evaluation."""
  config, settings = methods.config_for_epoch(run.config, epoch)
  steps = {} if steps is None else steps
  key = tuple(sorted(settings.items()))
  if key in steps:
    return steps[key]
  where = f'compilation cache {cache}' if cache else 'compilation cache off'
  drawn = ', '.join(f'{k} = {v}' for k, v in settings.items())
  what = f'the training step of epoch {epoch + 1} ({drawn}; {where})' if drawn else None
  with compiling(what or f'the training step ({where})'):
    batches = data.train_batches(run.ds, config.batch_size, seed=config.seed, epoch=epoch)
    x0, y0 = sharding.place_batch(next(batches), run.mesh)
    steps[key] = (
      make_train_step(config, run.members, run.tx, run.steps_per_epoch, run.mesh)
      .lower(state, x0, y0, jax.random.fold_in(run.dropout_key, 0))
      .compile()
    )
  if len(steps) == 1:
    with compiling('the evaluation'):
      evaluate_epoch(run.ensemble_at(state, epoch), run.ds, config.eval.batch_size, True)
  return steps[key]


def train_epoch(run, train_step, state, epoch):
  """One epoch of steps, its test evaluation and its checkpoint -> (state, metrics line)."""
  config = run.config
  start, sums, seen = time.perf_counter(), None, 0
  # The next batches cross to the devices (as stored: uint8 for CIFAR) while a step runs.
  batches = input_pipeline.prefetch(
    data.train_batches(run.ds, config.batch_size, seed=config.seed, epoch=epoch), run.mesh
  )
  desc = f'epoch {epoch + 1}/{config.num_epochs}'
  # No bar in a log (carriage-return redraws): a line every progress.INTERVAL_S there instead.
  bar = tqdm(batches, total=run.steps_per_epoch, desc=desc, leave=False, disable=None)
  with progress.listening('training', bar), progress.units(run.steps_per_epoch, 'steps', desc):
    for i, (x, y) in enumerate(bar):
      step = epoch * run.steps_per_epoch + i  # host-side: no device sync per step
      state, m = train_step(state, x, y, jax.random.fold_in(run.dropout_key, step))
      sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
      seen += 1
      progress.tick()
      interrupts.check()  # a Ctrl-C that a finaliser swallowed stops the run here
      if seen % config.log_every_steps == 0:
        loss = float(m['loss'])
        _check_finite(loss, step, epoch)
        bar.set_postfix(loss=f'{loss:.4f}')
        run.writer.write_step(step, loss, m['terms'])
  means = jax.tree.map(lambda v: sharding.to_host(v) / seen, sums)
  _check_finite(float(means['loss']), int(state.step), epoch)
  train_seconds = time.perf_counter() - start
  test = evaluate_epoch(run.ensemble_at(state, epoch + 1), run.ds, config.eval.batch_size)
  record = _epoch_record(means, test, epoch, state, run.schedule, seen, config, train_seconds)
  checkpoint.save(run.mgr, epoch + 1, state, record)
  if sharding.is_main_process():  # one writer when several hosts train together
    workdir_lib.append_metrics(run.workdir, record)
    run.writer.write_epoch(record)
  print(
    f'epoch {epoch + 1:3d}  loss {record["train_loss"]:.4f}  '
    f'train acc {record["train_ensemble_accuracy"]:.4f}  '
    f'test acc {record["test_ensemble_accuracy"]:.4f} '
    f'(members {" ".join(f"{a:.3f}" for a in record["test_member_accuracy"])})  '
    f'{record["images_per_second"]:.0f} img/s',
    flush=True,
  )
  return state, record


def train_and_evaluate(config, workdir):
  """Trains config's ensemble in `workdir`, resuming from its newest good checkpoint.

  Prints one line per start-up phase (data, init, compiles) with its time, then a
  progress bar per epoch; writes per-epoch metrics to stdout and `workdir/metrics.jsonl`
  and a verified checkpoint after every epoch. Holds the workdir's lock while it runs
  (`workdir.training_lock`): a second trainer of the same workdir gets a CheckpointError
  naming this one. Returns the final Ensemble.
  """
  config_lib.validate(config)
  if config.distributed:
    sharding.initialize_distributed(config)
  cache = compilation_cache.enable(config.compilation_cache)
  # One trainer per workdir: a second one exits at once naming the first (process 0 of a
  # multi-host run holds the lock for all).
  new = not os.path.exists(workdir)
  try:
    with workdir_lib.training_lock(workdir, hold=jax.process_index() == 0):
      return _train_and_evaluate(config, workdir, cache)
  except BaseException:
    if new:  # failed before writing anything but its lock (missing data, a bad config)
      workdir_lib.remove_if_only_lock(workdir)
    raise


def _train_and_evaluate(config, workdir, cache):
  """`train_and_evaluate` with the workdir's lock held."""
  meta = workdir_lib.read_meta(workdir)
  mgr, latest, restarts, continuing = None, None, [], False
  if meta is not None:
    workdir_lib.check_compatible(workdir, config, meta.config)
    mgr = checkpoint.manager(workdir, keep=config.keep_checkpoints)
    latest = mgr.latest_step()
    restarts, continuing = schedule_restarts(workdir, config, meta, latest)
    if latest is not None and latest >= config.num_epochs:
      try:
        ens = loading.load(workdir, config, epoch=latest)
        workdir_lib.reconcile_metrics(workdir, latest, checkpoint.saved_records(mgr))
        print(f'workdir {workdir} already holds the checkpoint of epoch {latest}; nothing to do')
        return ens
      except CheckpointError:
        pass  # damaged: the resume below falls back to the newest good checkpoint
  ds = load_data(config)
  steps_per_epoch = data.num_train_steps(ds, config.batch_size)
  tx, schedule = make_optimizer(config, steps_per_epoch, restarts)
  run = Training(
    config=config,
    workdir=workdir,
    ds=ds,
    members=ensemble.create(config, ds.num_classes),
    tx=tx,
    schedule=schedule,
    mesh=make_mesh(config),
    mgr=mgr or checkpoint.manager(workdir, keep=config.keep_checkpoints),
    steps_per_epoch=steps_per_epoch,
  )
  start_epoch, state = resume_or_init(run, meta, latest, restarts, continuing)
  steps = {}
  compile_step(run, state, start_epoch, cache, steps)
  epoch, record = start_epoch, None
  # Event files continue the curves from this checkpoint's step (what a killed run wrote
  # after it is purged); only process 0 writes, as for metrics.jsonl.
  run.writer = metric_writers.open_writer(
    workdir, int(state.step), start_epoch, config.tensorboard and sharding.is_main_process()
  )
  try:
    for epoch in range(start_epoch, config.num_epochs):
      train_step = compile_step(run, state, epoch, cache, steps)
      state, record = train_epoch(run, train_step, state, epoch)
      interrupts.check()  # one swallowed by the epoch's evaluation or save: before a compile
  except KeyboardInterrupt:
    saved = run.mgr.latest_step()
    raise Interrupted(
      f'in epoch {epoch + 1}; '
      + (
        f'the last saved checkpoint is epoch {saved} in {workdir}: rerun the same command to resume'
        if saved
        else 'no checkpoint was saved yet'
      )
    ) from None
  finally:
    run.writer.close()
  if record is not None:
    members = ' / '.join(f'{100 * a:.2f}' for a in record['test_member_accuracy'])
    accuracy = 100 * record['test_ensemble_accuracy']
    print(
      f'done: epoch {config.num_epochs}, test accuracy {accuracy:.2f}% (members {members}); '
      f'checkpoints in {os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR)}. '
      f'Next: python eval.py --workdir={workdir}',
      flush=True,
    )
  return run.ensemble_at(state, config.num_epochs)
