"""Runs grouped into columns (seeds of one configuration share one), and a column's cell:
the mean and sample standard deviation over its seeds."""

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
    )


def configuration(config):
  """The config without the fields of NOT_CONFIGURATION, as a comparable string."""
  d = config.to_dict()
  return json.dumps({k: v for k, v in d.items() if k not in NOT_CONFIGURATION}, sort_keys=True)


def columns_of(runs):
  """Runs grouped into columns (one per configuration, in order of first appearance),
  each labelled by its method plus the LABEL_FIELDS (and seed) where columns differ."""
  groups = {}
  for run in runs:
    groups.setdefault(configuration(run.config), []).append(run)
  grouped = list(groups.values())
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
