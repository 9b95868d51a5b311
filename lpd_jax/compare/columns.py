"""Runs grouped into columns (seeds of one configuration, evaluated alike, share one), and a
column's cell: the mean and sample standard deviation over its seeds."""

import dataclasses
import json
import os

import numpy as np

from lpd_jax import methods
from lpd_jax.suites.common import format_value

# Config fields that do not make another configuration: seeds of these are one column.
NOT_CONFIGURATION = (
  'seed',
  'eval',
  'compilation_cache',
  'log_every_steps',
  'tensorboard',
  'keep_checkpoints',
  'member_strategy',
  'sharding',
  'distributed',
  'coordinator_address',
  'num_processes',
  'process_id',
  'data_dir',
  'data_source',
  'continue_training',
)

# Fields named in a column's label when the columns differ in them.
LABEL_FIELDS = (
  ('num_members', 'K = {}'),
  ('width', 'width {}'),
  ('model', '{}'),
  ('num_epochs', '{} epochs'),
  ('batch_size', 'batch {}'),
)


@dataclasses.dataclass
class Column:
  """A table column: its label and the runs (seeds) behind each of its cells."""

  label: str
  runs: list
  notes: list = dataclasses.field(default_factory=list)  # why runs were kept apart

  @property
  def config(self):
    return self.runs[0].config

  def describe(self) -> dict:
    c = self.config
    return dict(
      label=self.label,
      method=c.method,
      adv_train=c.adv_train.attack,
      num_members=c.num_members,
      width=c.width,
      model=c.model,
      num_epochs=c.num_epochs,
      seeds=[r.config.seed for r in self.runs],
      workdirs=[os.path.abspath(r.workdir) for r in self.runs],
      trained_epochs=[r.trained_epochs for r in self.runs],
      evaluated_epochs=sorted(
        {e for r in self.runs for (s, v) in r.evaluations() if (e := r.evaluated_epoch(s, v))}
      ),
    )


def configuration(config):
  """The config without the fields of NOT_CONFIGURATION, as a comparable string."""
  d = config.to_dict()
  return json.dumps({k: v for k, v in d.items() if k not in NOT_CONFIGURATION}, sort_keys=True)


def why_not_seeds(run, other):
  """Why two runs of one configuration cannot be seeds of one column, or None if they can:
  the same seed (copies of one run), or a shared evaluation made with other settings
  (points, preset, budgets: `evaluations.settings_key`) or on another checkpoint epoch."""
  if run.config.seed == other.config.seed:
    return (
      f'{run.name} and {other.name} are both seed {run.config.seed} (copies of one run, not '
      'seeds): shown as separate columns'
    )
  mine, theirs = run.evaluations(), other.evaluations()
  for suite_type, variant in sorted(mine.keys() & theirs.keys()):
    (key, epoch), (other_key, other_epoch) = mine[suite_type, variant], theirs[suite_type, variant]
    name = suite_type if variant == 'raw' else f'{suite_type} ({variant})'
    if key != other_key:
      return (
        f'{run.name} and {other.name} ran {name} with other settings (points, preset or '
        'budgets): shown as separate columns, not averaged'
      )
    if epoch != other_epoch:
      return (
        f'{run.name} and {other.name} ran {name} on checkpoints of other epochs ({epoch} and '
        f'{other_epoch}): shown as separate columns, not averaged'
      )
  return None


def group_seeds(runs):
  """-> ([[run, ...] per column], notes): runs join a column when their configurations
  agree and `why_not_seeds` finds nothing against any run in it; each time a run of an
  existing configuration starts a column of its own, a note says why."""
  groups, notes = [], []
  for run in runs:
    reasons = []
    for group in groups:
      if configuration(group[0].config) != configuration(run.config):
        continue
      why = next(filter(None, (why_not_seeds(run, other) for other in group)), None)
      if why is None:
        group.append(run)
        break
      reasons.append(why)
    else:
      groups.append([run])
      notes += reasons[:1]
  return groups, notes


def columns_of(runs):
  """Runs grouped into columns (`group_seeds`: seeds of one configuration evaluated alike, in
  order of first appearance), each labelled by its method plus the LABEL_FIELDS (and seed)
  where columns differ; the first column's `notes` say why runs were kept apart."""
  grouped, notes = group_seeds(runs)
  firsts = [g[0].config for g in grouped]
  differ = [(field, form) for field, form in LABEL_FIELDS if len({c[field] for c in firsts}) > 1]
  seeds_differ = len({r.config.seed for r in runs}) > 1
  columns = []
  for group in grouped:
    c = group[0].config
    parts = [form.format(c[field]) for field, form in differ]
    if len(group) > 1:
      parts.append(f'{len(group)} seeds')
    elif seeds_differ:
      parts.append(f'seed {c.seed}')
    label = methods.label(c) + (f' ({", ".join(parts)})' if parts else '')
    columns.append(Column(label, group))
  labels = [col.label for col in columns]
  for col in columns:
    if labels.count(col.label) > 1:  # still ambiguous: name the workdirs
      col.label += f' [{", ".join(r.name for r in col.runs)}]'
  if columns:
    columns[0].notes = notes
  return columns


def cell(values, fmt):
  """Per-workdir values of one column -> (JSON cell, text). Several seeds: mean +- sample
  std over those present; a verdict cell counts the passes; '-' when none is present."""
  present = [v for v in values if v is not None]
  out = dict(values=values, n=len(present))
  if not present:
    return out, '-'
  partial = f' ({len(present)} of {len(values)})' if len(present) < len(values) else ''
  if fmt == 'verdict':
    if len(set(present)) == 1:
      text = present[0]
    else:
      text = f'{sum(v == "passed" for v in present)} of {len(present)} passed'
    return out, text + partial
  mean = float(np.mean(present))
  std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
  out.update(mean=mean, std=std)
  if len(values) == 1:
    return out, format_value(mean, fmt)
  if len(present) > 1:
    return out, f'{format_value(mean, fmt)} ± {format_value(std, fmt)}{partial}'
  return out, format_value(mean, fmt) + partial
