"""The comparison's tables as declarations: which records (suite type, key patterns) go in
which rows, under which caption. `pivot` turns one into rows x columns of cells.

A row is a record key present in some column; a cell is '-' where a workdir has no such
record (absent, never a failed lookup). Where a table's workdirs hold several variants of a
suite (raw and expected inference, or named instances), its rows repeat per variant,
labelled ', <variant>'.

Adding a table is one `Table(...)` in `TABLES`; a new suite's records are selected by its
type and key patterns.
"""

import dataclasses
import fnmatch
from typing import Callable, Optional

import numpy as np

from lpd_jax.compare import differences, marks
from lpd_jax.compare.columns import cell
from lpd_jax.compare.workdirs import EXPECTED, RAW
from lpd_jax.suites.common import markdown_table

# Paper section 5.4: seconds per epoch on a Tesla V100, CIFAR-10, K = 3, batch 64.
PAPER_V100_EPOCH_SECONDS = {'baseline': 54, 'adp': 64, 'lpd': 80, 'deg': 703, 'trs': 4106}

EXPECTED_NOTE = (
  "Rows marked 'expected': heads see h * p(h), the scale they were trained on "
  '(docs/methods.md, "Evaluation of dropout-trained members"); '
  "for methods without keep rates 'expected' is 'raw' and repeats it."
)


def one_or_all(values):
  """Distinct values joined by ' / ' (in order), '-' if there are none."""
  values = [v for v in dict.fromkeys(values) if v is not None and v != '']
  return ' / '.join(str(v) for v in values) if values else '-'


@dataclasses.dataclass
class Facts:
  """What a table's caption and notes may say: every record of its suite and variants in
  its columns, as (column, run, Metric)."""

  selected: list

  def _matching(self, patterns):
    return [
      (col, run, m)
      for col, run, m in self.selected
      if any(fnmatch.fnmatchcase(m.key, p) for p in patterns)
    ]

  def n(self, *patterns):
    """The number(s) of test points behind the records matching `patterns`."""
    return one_or_all(m.num_points for _, _, m in self._matching(patterns))

  def measured(self, *patterns):
    """How the records matching `patterns` were measured, each distinct text once."""
    return one_or_all(m.measured for _, _, m in self._matching(patterns))

  def each(self, *patterns):
    """(column, run, Metric) of every record matching `patterns`."""
    return self._matching(patterns)


@dataclasses.dataclass(frozen=True)
class Table:
  """One table of the comparison.

  Attributes:
    name: its key in comparison.json.
    suite: the suite type whose records fill it.
    rows: key patterns (fnmatch), in row order; within a pattern, keys in order of first
      appearance over the columns.
    caption: Facts -> the caption.
    variants: which variants to show; None: every variant a workdir holds of its own
      (raw first).
    columns: Column -> whether it belongs in this table (None: all); a table with no
      column is left out.
    notes: Facts -> lines under the table.
  """

  name: str
  suite: str
  rows: tuple
  caption: Callable
  variants: Optional[tuple] = None
  columns: Optional[Callable] = None
  notes: Optional[Callable] = None


@dataclasses.dataclass
class Row:
  """A pivoted row: its label, the format of its cells, each run's value and (for records)
  the number of test images its evaluation ran on."""

  label: str
  format: str
  value: Callable  # run -> value or None
  test_images: Optional[Callable] = None  # run -> int or None
  epochs: Optional[Callable] = None  # run -> (evaluated epoch, newest trained epoch) or None
  samples: Optional[Callable] = None  # run -> its per-sample values (Samples) or None


def build(name, caption, rows, columns, notes=(), stats=None):
  """-> {'name', 'caption', 'columns', 'rows': [{'label', 'cells'}], 'markdown'}; with
  `stats` (`differences.Stats`), each row's differences or intervals (`differences.extend`)."""
  json_rows, cells, marked, said = [], [], set(), []
  for row in rows:
    pairs = [cell([row.value(r) for r in col.runs], row.format) for col in columns]
    marked |= marks.mark_cells(row, columns, pairs)
    added, lines = differences.extend(row, columns, pairs, stats)
    json_rows.append(dict(label=row.label, cells=[p[0] for p in pairs]))
    cells.append((row.label, *(p[1] for p in pairs)))
    json_rows += [json_row for json_row, _ in added]
    cells += [texts for _, texts in added]
    said += lines
  notes = [*notes, *marks.notes(marked), *differences.notes(said)]
  if all(c['n'] == 0 for r in json_rows for c in r['cells']):
    lines = [caption, '', f'No column has a report for this table ({name}).']
  else:
    lines = [caption, '', markdown_table(('', *(c.label for c in columns)), cells), *notes]
  return dict(
    name=name,
    caption=caption,
    columns=[c.label for c in columns],
    rows=json_rows,
    markdown='\n'.join(lines),
  )


def variants_of(runs, suite):
  """'raw', then every other variant of `suite` some run holds of its own."""
  found = [v for r in runs for (s, v) in r.records if s == suite and r.has_own(s, v)]
  return list(dict.fromkeys([RAW, *found]))


def pivot(table, columns, stats=None):
  """A Table declaration over `columns` -> the table dict of `build` (None: no column)."""
  columns = [c for c in columns if table.columns is None or table.columns(c)]
  if not columns:
    return None
  runs = [r for c in columns for r in c.runs]
  variants = list(table.variants or variants_of(runs, table.suite))
  rows, selected = [], []
  for variant in variants:
    suffix = f', {variant}' if len(variants) > 1 else ''
    keys = {}
    for pattern in table.rows:
      for run in runs:
        for key, metric in run.records.get((table.suite, variant), {}).items():
          if fnmatch.fnmatchcase(key, pattern):
            keys.setdefault(key, metric)
    for key, metric in keys.items():
      rows.append(
        Row(
          metric.label + suffix,
          metric.format,
          lambda run, v=variant, k=key: run.value(table.suite, v, k),
          lambda run, v=variant, k=key: run.test_images(table.suite, v, k),
          lambda run, v=variant, k=key: run.epochs(table.suite, v, k),
          lambda run, v=variant, k=key: run.samples(table.suite, v, k),
        )
      )
    selected += [
      (col, run, metric)
      for col in columns
      for run in col.runs
      for metric in run.records.get((table.suite, variant), {}).values()
    ]
  facts = Facts(selected)
  notes = list(table.notes(facts)) if table.notes else []
  if EXPECTED in variants and len(variants) > 1:
    notes += ['', EXPECTED_NOTE]
  return build(table.name, table.caption(facts), rows, columns, notes, stats)


def _adversarial(column):
  return column.config.adv_train.attack != 'none'


def _surrogate_notes(facts):
  lines = [f'- {col.label} ({run.name}): {m.measured}' for col, run, m in facts.each('surrogate/*')]
  return ['', 'Surrogates:', *lines] if lines else []


PROBE_CAPTION = ': quantiles over the first {} test images ({}).'

TABLES = (
  Table(
    'clean',
    'clean',
    ('ensemble_accuracy', 'mean_member_accuracy'),
    lambda f: (
      f'Clean accuracy (%) on the first {f.n("ensemble_accuracy")} test images (ensemble: '
      'argmax of the mean softmax, eq. 1).'
    ),
  ),
  Table(
    'table1',
    'clean',
    ('ambiguity_entropy',),
    lambda f: (
      "Table 1. Ambiguity entropy E (eq. 7) of the members' correctness on the first "
      f'{f.n("ambiguity_entropy")} test images (0: members always agree; 1: maximal '
      'disagreement).'
    ),
  ),
  Table(
    'table2',
    'probes',
    ('gradient_cosine/*',),
    lambda f: (
      'Table 2. Loss gradient diversity L_d = sum_{i<j} cos<g_i, g_j>'
      + PROBE_CAPTION.format(f.n('gradient_cosine/*'), f.measured('gradient_cosine/*'))
    ),
  ),
  Table(
    'table3',
    'probes',
    ('gradient_norm/*',),
    lambda f: (
      'Table 3. Model smoothness L_s = sum_k ||g_k||_2'
      + PROBE_CAPTION.format(f.n('gradient_norm/*'), f.measured('gradient_norm/*'))
    ),
  ),
  Table(
    'table4',
    'paper',
    ('none/accuracy', '*/accuracy', '*/accuracy_clean_correct', 'cw/*/median_l2_successful'),
    lambda f: (
      'Table 4. Accuracy (%) under the white-box attacks as the paper ran them, on all '
      f'of the first {f.n("none/*")} test images and on those the ensemble classifies right clean '
      "(the authors' convention). Para.: eps for FGSM, BIM and PGD (10 steps of eps/10; PGD "
      'from a random start, CE on the log mean softmax), gamma for JSMA, c for C&W; '
      f'{f.measured("jsma/*", "cw/*")}.'
    ),
  ),
  Table(
    'table5',
    'transfer',
    ('*/accuracy',),
    lambda f: (
      'Table 5. Accuracy (%) under black-box transfer on the first '
      f'{f.n("*/accuracy")} test images: examples made on a surrogate '
      f"({f.measured('*/accuracy')}) at the paper suite's grid. Type I: a Baseline of another "
      'architecture or width; Type II: trained with the same defence.'
    ),
    variants=(RAW,),
    notes=_surrogate_notes,
  ),
  Table(
    'table6',
    'paper',
    ('fgsm/*/accuracy', 'pgd/*/accuracy'),
    lambda f: (
      'Table 6. Accuracy (%) of the adversarially trained columns under FGSM and PGD '
      '(white-box, the paper suite, all evaluated points).'
    ),
    variants=(RAW,),
    columns=_adversarial,
  ),
  'timing',
  Table(
    'figure3',
    'sweep',
    ('*/accuracy',),
    lambda f: (
      f'Figure 3 as a table: accuracy (%) under {f.measured("*/accuracy")} as eps '
      f'doubles, on the first {f.n("clean")} test images (plot: figure3.png).'
    ),
  ),
  Table(
    'robust',
    'robust',
    ('clean', 'worst/*', '*'),
    lambda f: (
      'Robust accuracy (%) under strong attacks, L-inf: the per-sample worst case over '
      'every attack (a sample counts only if right clean and under all of them), on all of the '
      f'first {f.n("worst/*")} test images; {f.measured("worst/*")}.'
    ),
  ),
  Table(
    'audit',
    'audit',
    ('check/*', 'worst_case'),
    lambda f: (
      'Gradient-masking audit (lpd_jax.audit: Athalye et al. 2018, Carlini et al. 2019) '
      f'at {f.measured("check/*")} on the first {f.n("worst_case")} test images: each check '
      'passed, FAILED (a sign of gradient masking or a too-weak attack), too few points to '
      'tell (past its tolerance on too few of them to fail) or not run.'
    ),
  ),
  Table(
    'certify',
    'certify',
    ('num_examples', 'bound/*', 'clean_minimal_margin', 'pgd_minimal_margin', 'curve/*'),
    lambda f: (
      f'Certified robustness (section 4.4, Figure 2) at {f.measured("num_examples")}; '
      'a sample is certified when the minimal lower bound of the margins of the mean member '
      'logits is > 0 (raw inference). The margin a PGD reaches is an upper bound of the '
      'certifiable one; the last rows trace the certified fraction against eps.'
    ),
    variants=(RAW,),
  ),
)


def _median(values):
  return float(np.median(values)) if values else None


def timing_table(columns):
  """Section 5.4 from each workdir's metrics.jsonl, with each column relative to the first
  Baseline column trained without adversarial examples."""

  def median_epoch_seconds(run):
    return _median([m['epoch_seconds'] for m in run.metrics if 'epoch_seconds' in m])

  base = next((c for c in columns if c.config.method == 'baseline' and not _adversarial(c)), None)
  base_seconds = None
  if base is not None:
    values = [v for v in map(median_epoch_seconds, base.runs) if v is not None]
    base_seconds = float(np.mean(values)) if values else None

  def relative(run):
    seconds = median_epoch_seconds(run)
    return None if base_seconds is None or seconds is None else seconds / base_seconds

  def paper_ratio(run):
    c = run.config
    if c.adv_train.attack != 'none' or c.method not in PAPER_V100_EPOCH_SECONDS:
      return None
    return PAPER_V100_EPOCH_SECONDS[c.method] / PAPER_V100_EPOCH_SECONDS['baseline']

  rows = [
    Row('seconds per epoch (median)', '{:.1f}', median_epoch_seconds),
    Row(
      'images per second (median)',
      '{:.0f}',
      lambda r: _median([m['images_per_second'] for m in r.metrics if 'images_per_second' in m]),
    ),
    Row('relative to Baseline', '{:.2f}x', relative),
    Row('paper, V100: relative to Baseline', '{:.2f}x', paper_ratio),
    Row('epochs trained', '{:.0f}', lambda r: len(r.metrics) or None),
    Row(
      'training time (min)',
      '{:.1f}',
      lambda r: sum(m.get('epoch_seconds', 0) for m in r.metrics) / 60 or None,
    ),
  ]
  return build(
    'timing',
    "Section 5.4. Training cost from each workdir's metrics.jsonl (epoch_seconds: the "
    'training steps of an epoch, without its test evaluation), on the machine that trained it; '
    'the paper row is its Tesla V100 figure (CIFAR-10, K = 3, batch 64).',
    rows,
    columns,
  )


def build_tables(columns, stats=None):
  """Every table of TABLES over `columns`, in order ('timing': the training-cost table);
  `stats`: how to compute differences and intervals (None: none)."""
  out = []
  for table in TABLES:
    built = timing_table(columns) if table == 'timing' else pivot(table, columns, stats)
    if built is not None:
      out.append(built)
  return out
