"""Suite 'transfer': black-box transfer (Table 5) from one or more surrogate workdirs.

Each attack of eval.transfer.attacks (Table 5: PGD and JSMA) runs on each surrogate at the
paper suite's grid (config.eval.paper, so JSMA is ART 1.1's by default), with the paper
suite's keys; this ensemble (the target) is evaluated on the examples. Each surrogate is
labelled Type I (a Baseline of another architecture or width: the authors' VGG-16 or
ResNet-34, `configs/*.py:baseline --config.model=vgg16`), Type II (the same defence: an
adaptive attacker) or other. The attack's labels are the true ones or the surrogate's
predictions (eval.transfer.labels), stated in the report. With the target's own workdir as
surrogate and true labels the result is the paper suite's white-box accuracy.
"""

import os

import jax.numpy as jnp

from lpd_jax import attacks, methods, predict
from lpd_jax.errors import CheckpointError, ConfigError
from lpd_jax.names import split_names
from lpd_jax.progress import StageBar
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  accuracies,
  attack_key,
  describe,
  fmt_param,
  grid_table,
  names,
  pct,
)
from lpd_jax.suites.paper import attack_grid
from lpd_jax.suites.samples import array_samples, per_sample_npz

LABELS = ('true', 'surrogate')

DEFAULTS = dict(
  workdir='',  # surrogate workdirs (comma-separated), on which the examples are made
  attacks='pgd,jsma',  # any attack of the ensemble's eq. 1, at the paper suite's grid (Table 5)
  labels='true',  # attack labels: 'true', or 'surrogate' (its own predictions, as ART)
)


def on_predicted_labels(attack):
  """`attack` run with the source model's own predictions as labels (ART's default when no
  labels are given); correctness is still judged against the true labels."""

  def run(model_fn, x, y, **params):
    del y
    return attack(model_fn, x, jnp.argmax(model_fn(x), -1), **params)

  return run


def transfer_attacks():
  """The attacks whose examples are made on a model's eq. 1 (not its member logits)."""
  return tuple(n for n, a in attacks.REGISTRY.items() if a.target == 'ensemble')


def surrogate_workdirs(cfg):
  workdirs = list(split_names(cfg.workdir))
  if not workdirs:
    raise ConfigError(
      "suite 'transfer' needs --config.eval.transfer.workdir=DIR[,DIR...]: the workdirs of "
      'the surrogate ensembles the adversarial examples are made on'
    )
  return workdirs


def load_surrogate(ctx, workdir):
  """The surrogate Ensemble of `workdir` (the driver's loader refuses one of another
  dataset); ConfigError naming the field if it cannot be loaded."""
  try:
    return ctx.load(workdir)
  except (CheckpointError, ConfigError) as e:
    raise ConfigError(f'eval.transfer.workdir={workdir!r}: {e}') from None


def transfer_type(target_config, surrogate_config):
  """'Type I' (a Baseline of another architecture or width), 'Type II' (the same defence),
  or 'other' (docs/methods.md, "Black-box transfer").

  Type I is decided first: for a Baseline target a Baseline VGG-16 surrogate is the
  paper's Type I, though it is also "the same defence" (none); a Baseline of the target's
  own architecture (another seed) is its Type II.
  """
  other = (surrogate_config.model, surrogate_config.width) != (
    target_config.model,
    target_config.width,
  )
  if surrogate_config.method == 'baseline' and other:
    return 'Type I'
  return 'Type II' if surrogate_config.method == target_config.method else 'other'


def from_surrogate(ens, ctx, index, workdir, rows_to_run, bar):
  """The attacks of `rows_to_run` made on the surrogate of `workdir`, evaluated on `ens`.

  Returns (the surrogate's description, its rows, the target's clean correctness [N], the
  target's correctness [N] per row)."""
  config, images, labels = ctx.config, ctx.images, ctx.labels
  surrogate = load_surrogate(ctx, workdir)
  both = (ens.log_predict, surrogate.log_predict)
  clean, surrogate_clean = predict.attack_correct(
    None,
    {},
    surrogate.log_predict,
    images,
    labels,
    batch_size=ctx.batch_size,
    targets=both,
    bar=bar,
    mesh=ctx.mesh,
  )
  sur = surrogate.config
  description = dict(
    workdir=os.path.abspath(workdir),
    method=sur.method,
    label=methods.label(sur),
    model=sur.model,
    num_members=surrogate.num_members,
    width=sur.width,
    type=transfer_type(config, sur),
    clean_accuracy=float(surrogate_clean.mean()),
  )
  rows, corrects = [], []
  for row in rows_to_run:
    bar.stage(f'{index + 1}: {row["label"]} {row["param"]:g}')
    attack = attacks.REGISTRY[row['attack']].fn
    correct, surrogate_correct = predict.attack_correct(
      on_predicted_labels(attack) if ctx.cfg.labels == 'surrogate' else attack,
      row['params'],
      surrogate.log_predict,
      images,
      labels,
      key=attack_key(config.seed, row['attack']),  # the paper suite's keys
      batch_size=ctx.batch_size,
      targets=both,
      bar=bar,
      mesh=ctx.mesh,
    )
    acc, acc_clean = accuracies(correct, clean)
    corrects.append(correct)
    rows.append(
      dict(
        row,
        surrogate=index,
        accuracy=acc,
        accuracy_clean_correct=acc_clean,
        surrogate_accuracy=float(surrogate_correct.mean()),
      )
    )
  return description, rows, clean, corrects


def run(ens, ctx):
  """Every surrogate of eval.transfer.workdir, every attack of eval.transfer.attacks at the
  paper suite's grid, with the paper suite's keys.

  JSON: dataset, method, num_members, num_examples, num_clean_correct (target),
  clean_accuracy (target), labels ('true' | 'surrogate'), surrogates [{workdir, method,
  label, model, num_members, width, type, clean_accuracy}] and rows [{surrogate (index),
  attack, label, param_name, param, params, accuracy, accuracy_clean_correct,
  surrogate_accuracy}]. Files: `transfer_per_sample.npz` (test_index, labels, the target's
  clean correctness and its correctness per row, `row_<i>` for rows[i]).
  """
  config, cfg, labels = ctx.config, ctx.cfg, ctx.labels
  workdirs = surrogate_workdirs(cfg)
  if cfg.labels not in LABELS:
    raise ConfigError(f'eval.transfer.labels must be one of {LABELS}, got {cfg.labels!r}')
  chosen = names(cfg, 'attacks', transfer_attacks(), 'transfer')
  rows_to_run = attack_grid(config.eval.paper, chosen, config.dataset)
  per_row = predict.num_batches(len(labels), ctx.batch_size)
  surrogates, rows, corrects = [], [], []
  total = per_row * len(workdirs) * (1 + len(rows_to_run))
  with StageBar(total=total, desc='transfer') as bar:
    for index, workdir in enumerate(workdirs):
      surrogate, its_rows, clean, correct = from_surrogate(
        ens, ctx, index, workdir, rows_to_run, bar
      )
      surrogates.append(surrogate)
      rows += its_rows
      corrects += correct
  result = dict(
    dataset=config.dataset,
    method=config.method,
    num_members=ens.num_members,
    num_examples=len(labels),
    num_clean_correct=int(clean.sum()),
    clean_accuracy=float(clean.mean()),
    labels=cfg.labels,
    surrogates=surrogates,
    rows=rows,
  )
  arrays = {f'row_{i}': c for i, c in enumerate(corrects)}
  files = {'transfer_per_sample.npz': per_sample_npz(labels, clean=clean, **arrays)}
  return Report(result, transfer_markdown(result, ens, ctx), files, metrics(result))


def surrogate_description(s):
  return f'{s["label"]} {s["model"]} w{s["width"]} K={s["num_members"]}'


def metrics(result):
  """Per surrogate its clean accuracy; per surrogate, attack and param the target's accuracy.

  Keys name the surrogate by its type and, for Type I and other surrogates, its
  architecture (a Type II surrogate is 'same defence'), so the rows of ensembles attacked
  from their own Type II surrogates line up in one table."""
  n, labels = result['num_examples'], result['labels']
  whos = [
    'same defence' if s['type'] == 'Type II' else surrogate_description(s)
    for s in result['surrogates']
  ]
  out = [
    Metric(
      f'surrogate/{s["type"]}/{who}/clean_accuracy',
      f'{s["type"]} ({who}): clean accuracy of the surrogate',
      s['clean_accuracy'],
      'pct',
      n,
      f'{s["type"]} surrogate {s["workdir"]}',
    )
    for s, who in zip(result['surrogates'], whos)
  ]
  for r in result['rows']:
    s, who = result['surrogates'][r['surrogate']], whos[r['surrogate']]
    out.append(
      Metric(
        f'{s["type"]}/{who}/{r["attack"]}/{r["param"]:g}/accuracy',
        f'{s["type"]} ({who}): {r["label"]} {fmt_param(r["param"])}',
        r['accuracy'],
        'pct',
        n,
        f'attack labels: {labels}',
        dict(attack=r['attack'], param=r['param'], type=s['type']),
      )
    )
  return out


def transfer_markdown(result, ens, ctx):
  with_labels = {
    'true': 'the true labels',
    'surrogate': "the surrogate's own predictions as labels",
  }[result['labels']]
  parts = [
    f'Transfer attacks (Table 5 layout): examples made on each surrogate with {with_labels}, '
    f'evaluated on this ensemble: {describe(ens, ctx)}; clean {pct(result["clean_accuracy"])}',
  ]
  for index, sur in enumerate(result['surrogates']):
    parts += [
      '',
      f'{sur["type"]}: surrogate {sur["workdir"]} ({sur["label"]}, {sur["model"]}, '
      f'K = {sur["num_members"]}, width {sur["width"]}; clean {pct(sur["clean_accuracy"])})',
      '',
      grid_table(
        (
          'Attacks',
          'Para.',
          'Accuracy (%)',
          'Accuracy on clean-correct (%)',
          'Surrogate accuracy, white-box (%)',
        ),
        [r for r in result['rows'] if r['surrogate'] == index],
        (
          lambda r: pct(r['accuracy']),
          lambda r: pct(r['accuracy_clean_correct']),
          lambda r: pct(r['surrogate_accuracy']),
        ),
      ),
    ]
  return '\n'.join(parts)


def validate(config, cfg):
  names(cfg, 'attacks', transfer_attacks(), 'transfer')
  if cfg.labels not in LABELS:
    raise ConfigError(f'eval.transfer.labels must be one of {LABELS}, got {cfg.labels!r}')


def per_sample(result, load):
  """The target's correctness per test image under each row's examples
  (transfer_per_sample.npz: `row_<i>`), keyed as `metrics` keys the rows."""
  arrays = load('transfer_per_sample.npz')
  if arrays is None:
    return {}
  keys = [m.key for m in metrics(result) if not m.key.startswith('surrogate/')]
  found = {key: array_samples(arrays, f'row_{i}') for i, key in enumerate(keys)}
  return {key: s for key, s in found.items() if s is not None}


SUITE = Suite('transfer', run, DEFAULTS, validate, metrics, per_sample)
