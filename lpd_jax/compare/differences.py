"""Differences with their intervals in compare's tables (docs/methods.md, "Differences and
intervals").

Below every accuracy row whose records have per-sample values (`Run.samples`: the suites'
per-sample files, `lpd_jax.suites.samples`) comes a row 'Δ vs R': each column's value minus
the reference column R's, on the same test points, in percentage points, with its 95%
bootstrap interval and, for two single-seed columns, McNemar's exact p (`paired`). A
quantile row (L_d, L_s, margins, bounds) gets each column's interval in its cells instead.

Pairing is by test index: two columns pair where their samples hold the same test indices
(and the same labels where both recorded them); otherwise the cell says 'not paired' and
one line under the table names both columns and how their points differ. A column whose
seeds were evaluated on other points, or some of whose seeds lack the per-sample file,
gets no interval either ('n/a', said under the table); a column without the report at all
gets '-', as its value. A column's seeds are those with a report for the row, the seeds of
its value ('(1 of 3)': that one seed).
"""

import dataclasses
import zlib
from typing import Optional

import numpy as np

from lpd_jax.compare import paired

MARK = '*'
NOT_PAIRED, MISSING, REFERENCE, NO_REPORT = 'not paired', 'n/a', 'reference', '-'


@dataclasses.dataclass(frozen=True)
class Stats:
  """How compare computes its intervals.

  Attributes:
    reference: the label of the column every difference is taken against (None: the first
      column; a table without it takes its own first column).
    seed: of every bootstrap (each cell's generator is seeded by it and the cell's row and
      column: the same seed, the same tables).
    resamples: B, bootstrap replicates per interval.
  """

  reference: Optional[str] = None
  seed: int = 0
  resamples: int = paired.RESAMPLES

  def rng_seed(self, *names):
    return [self.seed, *(zlib.crc32(str(n).encode()) for n in names)]


def difference_note(stats):
  return (
    "Rows 'Δ vs R': each column's accuracy minus R's on the same test points (paired by test "
    'index), in percentage points, with its 95% bootstrap percentile interval (B = '
    f'{stats.resamples}; the test points resampled, and the seeds too where a column has '
    "several) and, for two single-seed columns, McNemar's exact p; "
    f"{MARK} marks a difference told apart from 0: its interval excludes 0 and, where McNemar's "
    'p is given, p < 0.05 too (docs/methods.md, "Differences and intervals").'
  )


def quantile_note(stats):
  return (
    'A quantile (L_d, L_s, a margin or bound) is followed by its 95% bootstrap percentile '
    f'interval [low, high] over the test points, and seeds where several (B = {stats.resamples}).'
  )


MISSING_NOTE = (
  f"'{MISSING}': no per-sample values behind the cell (a report written before lpd-jax kept "
  'per-sample files, a seed without one, or seeds evaluated on other points): rerun eval.py '
  'on the workdir for its interval.'
)


def _sorted(samples):
  order = np.argsort(samples.indices, kind='stable')
  labels = None if samples.labels is None else samples.labels[order]
  return dataclasses.replace(
    samples, indices=samples.indices[order], values=samples.values[order], labels=labels
  )


def how_points_differ(a, b, names=('the first', 'the second')):
  """None where Samples `a` and `b` (of columns `names`) hold the same test points, else
  how their points differ, in words."""
  if np.array_equal(a.indices, b.indices):
    if a.labels is None or b.labels is None or np.array_equal(a.labels, b.labels):
      return None
    return 'the same test indices hold other labels (another split or dataset file)'
  common = len(np.intersect1d(a.indices, b.indices))
  return f'{names[0]}: {a.points}; {names[1]}: {b.points}; {common} in common'


def has_report(column, row):
  """Whether some seed of `column` has a report holding `row` (its cell is not '-')."""
  return any(row.value(r) is not None for r in column.runs)


def column_samples(column, row):
  """-> (values [seeds, n], Samples of its first seed) or (None, None) where the column has
  no per-sample values for `row` (or not from all its seeds on the same points).

  The seeds are those whose reports hold the row, as in the cell's value: a study that attacks
  only seed 0 of a three-seed column ('(1 of 3)') pairs that seed; a seed whose report holds
  the row but whose per-sample file is missing leaves the column without values."""
  found = [row.samples(r) for r in column.runs if row.value(r) is not None]
  if not found or any(s is None for s in found):
    return None, None
  found = [_sorted(s) for s in found]
  if any(how_points_differ(found[0], s) for s in found[1:]):
    return None, None
  return np.stack([s.values for s in found]), found[0]


def reference_index(columns, stats):
  labels = [c.label for c in columns]
  return labels.index(stats.reference) if stats.reference in labels else 0


def _pp(v):
  return f'{100 * v:+.2f}'


def difference_cell(stats, row, columns, data, i, ref):
  """(JSON cell, text) of column i's difference to column `ref` on `row`, and its note."""
  (values, samples), (ref_values, ref_samples) = data[i], data[ref]
  out = dict(n=0 if values is None else len(values))
  if values is None or ref_values is None:
    if not (has_report(columns[i], row) and has_report(columns[ref], row)):
      return dict(out, missing=True), NO_REPORT, None  # '-' as in the value's cell
    return dict(out, missing=True), MISSING, MISSING_NOTE
  a, b = columns[ref].label, columns[i].label
  differ = how_points_differ(ref_samples, samples, (a, b))
  if differ:
    line = f'Not paired: {a} and {b} were evaluated on other test points ({differ}).'
    return dict(out, refused=line), NOT_PAIRED, line
  interval = paired.paired_difference(
    values,
    ref_values,
    resamples=stats.resamples,
    seed=stats.rng_seed(row.label, columns[i].label, columns[ref].label),
  )
  cell = dict(
    out,
    difference=interval.estimate,
    low=interval.low,
    high=interval.high,
    excludes_zero=interval.excludes_zero,
    told_apart=interval.told_apart,
    p_value=interval.p_value,
    discordant=None if interval.discordant is None else list(interval.discordant),
    points=int(values.shape[1]),
    resamples=interval.resamples,
  )
  text = f'{_pp(interval.estimate)} [{_pp(interval.low)}, {_pp(interval.high)}]'
  text += MARK if interval.told_apart else ''
  if interval.p_value is not None:
    text += f' p={interval.p_value:.2g}'
  return cell, text, None


def difference_row(stats, row, columns, data):
  """-> (JSON row, text cells, notes) of row 'Δ vs R' under `row`."""
  ref = reference_index(columns, stats)
  reference = columns[ref].label
  json_cells, texts, notes = [], [], []
  for i in range(len(columns)):
    if i == ref:
      n = 0 if data[i][0] is None else len(data[i][0])
      json_cells.append(dict(n=n, reference=True))
      texts.append(REFERENCE)
      continue
    cell, text, note = difference_cell(stats, row, columns, data, i, ref)
    json_cells.append(cell)
    texts.append(text)
    notes += [note] if note else []
  label = f'{row.label}: Δ vs {reference}'
  return dict(label=label, of=row.label, reference=reference, cells=json_cells), label, texts, notes


def add_intervals(stats, row, columns, data, pairs):
  """Appends each column's interval of a quantile row to its cell (in place) -> notes."""
  notes = []
  for i, (values, samples) in enumerate(data):
    json_cell, text = pairs[i]
    if values is None:
      if json_cell['n']:
        pairs[i] = (dict(json_cell, interval=None), f'{text} [{MISSING}]')
        notes.append(MISSING_NOTE)
      continue
    interval = paired.bootstrap_statistic(
      values,
      samples.statistic,
      resamples=stats.resamples,
      seed=stats.rng_seed(row.label, columns[i].label),
    )
    low, high = (row.format.format(v) if row.format != 'pct' else _pp(v) for v in interval[1:3])
    json_cell = dict(json_cell, interval=[interval.low, interval.high])
    pairs[i] = (json_cell, f'{text} [{low}, {high}]')
  return [quantile_note(stats), *notes]


def extend(row, columns, pairs, stats):
  """The statistics of one pivoted row: -> ([(JSON row, text cells)] added under it, notes).

  An accuracy row (its records means of 1/0 values, format 'pct') gets its difference row;
  a quantile row gets intervals in its cells (`pairs`, changed in place). A row without
  per-sample values in any column, or a table without a `samples` reader, is left as it is.
  """
  if stats is None or getattr(row, 'samples', None) is None or not columns:
    return [], []
  data = [column_samples(c, row) for c in columns]
  found = [s for _, s in data if s is not None]
  if not found:
    return [], []
  if found[0].statistic == 'mean' and row.format == 'pct':
    json_row, label, texts, notes = difference_row(stats, row, columns, data)
    return [(json_row, (label, *texts))], [difference_note(stats), *notes]
  return [], add_intervals(stats, row, columns, data, pairs)


def notes(lines):
  """The statistics' lines under a table: each once, in order of first use, each its own
  paragraph."""
  return [out for line in dict.fromkeys(lines) for out in ('', line)]
