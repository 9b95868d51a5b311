"""Suite 'transfer': black-box transfer (Table 5) from a surrogate ensemble's workdir.

Each attack of eval.transfer.attacks runs on the surrogate at the paper suite's grid
(config.eval.paper), with the paper suite's keys; this ensemble (the target) is evaluated
on the examples. Labels for the attack are the true labels. With the target's own
workdir as surrogate the result is the paper suite's white-box accuracy.
"""

import os

from tqdm.auto import tqdm

from lpd_jax import methods, predict
from lpd_jax.errors import CheckpointError, ConfigError
from lpd_jax.suites.common import (
  Report,
  Suite,
  accuracies,
  describe,
  grid_table,
  names,
  pct,
  run_attack_row,
)
from lpd_jax.suites.paper import attack_grid

ATTACKS = ('fgsm', 'bim', 'pgd', 'jsma')

DEFAULTS = dict(
  workdir='',  # the surrogate ensemble's workdir, on which the examples are made
  attacks='pgd',  # attacks at the paper suite's grid (fgsm|bim|pgd|jsma)
)


def load_surrogate(ctx):
  """The surrogate Ensemble of eval.transfer.workdir (the driver's loader refuses one of
  another dataset); ConfigError naming the field if it cannot be loaded."""
  workdir = ctx.cfg.workdir
  if not workdir:
    raise ConfigError(
      "suite 'transfer' needs --config.eval.transfer.workdir=DIR: the workdir of the "
      'surrogate ensemble the adversarial examples are made on'
    )
  try:
    return ctx.load(workdir)
  except (CheckpointError, ConfigError) as e:
    raise ConfigError(f'eval.transfer.workdir={workdir!r}: {e}') from None


def run(ens, ctx):
  """JSON: dataset, method, num_members, surrogate {workdir, method, num_members, width},
  num_examples, num_clean_correct (target), clean_accuracy (target),
  surrogate_clean_accuracy, labels ('true') and rows [{attack, label, param_name, param,
  params, accuracy, accuracy_clean_correct, surrogate_accuracy}]."""
  config, images, labels = ctx.config, ctx.images, ctx.labels
  surrogate = load_surrogate(ctx)
  rows_to_run = attack_grid(config.eval.paper, names(ctx.cfg, 'attacks', ATTACKS, 'transfer'))
  batch_size = config.eval.batch_size
  per_row = predict.num_batches(len(labels), batch_size)
  both = (ens.log_predict, surrogate.log_predict)
  rows = []
  with tqdm(total=per_row * (1 + len(rows_to_run)), desc='transfer', disable=None) as bar:
    clean, surrogate_clean = predict.attack_correct(
      None, {}, surrogate.log_predict, images, labels, batch_size=batch_size, targets=both, bar=bar
    )
    for row in rows_to_run:
      bar.set_postfix_str(f'{row["label"]} {row["param"]:g}')
      correct, surrogate_correct = run_attack_row(
        row, surrogate.log_predict, ctx, targets=both, bar=bar
      )
      acc, acc_clean = accuracies(correct, clean)
      rows.append(
        dict(
          row,
          accuracy=acc,
          accuracy_clean_correct=acc_clean,
          surrogate_accuracy=float(surrogate_correct.mean()),
        )
      )
  sur = surrogate.config
  result = dict(
    dataset=config.dataset,
    method=config.method,
    num_members=ens.num_members,
    surrogate=dict(
      workdir=os.path.abspath(ctx.cfg.workdir),
      method=sur.method,
      model=sur.model,
      num_members=surrogate.num_members,
      width=sur.width,
    ),
    num_examples=len(labels),
    num_clean_correct=int(clean.sum()),
    clean_accuracy=float(clean.mean()),
    surrogate_clean_accuracy=float(surrogate_clean.mean()),
    labels='true',
    rows=rows,
  )
  markdown = '\n'.join(
    [
      f'Transfer attacks (Table 5 layout): examples made with true labels on the surrogate '
      f'{result["surrogate"]["workdir"]} ({methods.label(sur)}, {sur.model}, K = '
      f'{surrogate.num_members}, width {sur.width}), evaluated on this ensemble: '
      f'{describe(ens, ctx)}; clean {pct(result["clean_accuracy"])}',
      '',
      grid_table(
        (
          'Attacks',
          'Para.',
          'Accuracy (%)',
          'Accuracy on clean-correct (%)',
          'Surrogate accuracy, white-box (%)',
        ),
        rows,
        (
          lambda r: pct(r['accuracy']),
          lambda r: pct(r['accuracy_clean_correct']),
          lambda r: pct(r['surrogate_accuracy']),
        ),
      ),
    ]
  )
  return Report(result, markdown)


def validate(config):
  names(config.eval.transfer, 'attacks', ATTACKS, 'transfer')


SUITE = Suite('transfer', run, DEFAULTS, validate)
