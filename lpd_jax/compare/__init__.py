"""Several workdirs side by side: the paper's tables and figures for the user's own runs.

  python -m lpd_jax.compare --workdirs=A,B,C --out=DIR [--run_missing] [--suites=...]

A pivot over the flat metric records every evaluation report holds (`Metric`: key, label,
value, format, number of points, how it was measured): workdirs -> columns -> cells ->
tables -> figures.

  workdirs.py  a workdir's config, records of every `eval_*.json` and metrics.jsonl;
               `run_missing` evaluates what a workdir lacks
  columns.py   workdirs whose configs differ only in their seed (and in settings that do not
               change the model) are one column; a cell is the mean +- the sample standard
               deviation over its seeds, '-' where no workdir has the record
  provenance.py  per column, the software and machine behind its numbers; columns trained
               under another provenance than the first are marked
  tables.py    each table a declaration (`Table`: which suite's record keys in which rows
               under which caption), pivoted over the columns; the section 5.4 timing table
               from metrics.jsonl
  paired.py    paired statistics (pure NumPy): the paired and the seeds-and-points bootstrap,
               McNemar's exact test
  differences.py  under each accuracy row each column's difference to a reference column on
               the same test points, with its interval; intervals of quantile rows
  summary.py   the summary sentences, generated from those differences
  figures.py   Figure 3 (error bars: the bootstrap intervals), Figure 2 and the keep-rate /
               margin drift over training
  __main__.py  the command line

It writes into DIR: comparison.md (every table: clean accuracy, Tables 1-6, the section 5.4
timing, Figure 3 as a table, robust accuracy, the gradient-masking audit's verdicts and
certification; rows per inference mode where a column has 'expected' reports),
comparison.json (the same, with every workdir's value behind each cell), figure3.png,
figure2.png and drift.png. Workdirs of different datasets are refused.
"""

import json
import os

from lpd_jax import suites
from lpd_jax import workdir as workdir_lib
from lpd_jax.compare.columns import Column, cell, columns_of
from lpd_jax.compare.differences import Stats
from lpd_jax.compare.figures import figures
from lpd_jax.compare.paired import RESAMPLES
from lpd_jax.compare.provenance import MARK, provenance_table
from lpd_jax.compare.summary import summary
from lpd_jax.compare.tables import TABLES, Facts, Table, build_tables, pivot
from lpd_jax.compare.workdirs import Run, check_one_dataset, read_run, run_missing
from lpd_jax.errors import ConfigError

# The evaluations `--run_missing` runs by default (every suite), and those it also runs
# under 'expected' inference.
SUITES = tuple(suites.REGISTRY)
EXPECTED_SUITES = ('clean', 'probes', 'robust', 'audit')


def compare(workdirs, *, run_missing_evaluations=(), reference=None, seed=0, resamples=RESAMPLES):
  """-> (result dict, Markdown, {file name: PNG bytes}) over `workdirs` (one dataset).

  Args:
    workdirs: paths of trained workdirs.
    run_missing_evaluations: evaluation names (`lpd_jax.evaluations`: 'robust',
      'robust_expected', ...) to run first on each workdir that lacks their report.
    reference: the label of the column differences are taken against (None: the first).
    seed, resamples: of the bootstrap intervals (`differences.Stats`).
  """
  if not workdirs:
    raise ConfigError('give at least one workdir')
  runs = [read_run(w) for w in workdirs]
  dataset = check_one_dataset(runs)
  labels = [c.label for c in columns_of(runs)]
  if reference is not None and reference not in labels:
    raise ConfigError(f'--reference={reference!r}: no such column; the columns are {labels}')
  if resamples < 1:
    raise ConfigError(f'--resamples={resamples}: give at least 1 bootstrap replicate')
  stats = Stats(reference, seed, resamples)
  if run_missing_evaluations:
    runs = run_missing(runs, run_missing_evaluations)
  columns = columns_of(runs)
  built = build_tables(columns, stats)
  origins, differs = provenance_table(columns)
  built.append(origins)
  files = figures(columns, stats, built)
  described = [
    dict(col.describe(), provenance_differs=differs.get(col.label, [])) for col in columns
  ]
  header = [
    f'# Comparison on {dataset}',
    '',
    'Columns (several seeds of one configuration: mean ± sample std over them; '
    "'-': no report in the workdir, never 0):",
    '',
    *(
      f'- {d["label"]}: {", ".join(d["workdirs"])} (seeds {", ".join(map(str, d["seeds"]))}; '
      f'{checkpoints(d)})' + provenance_mark(d['provenance_differs'])
      for d in described
    ),
    *(['', *(f'Not averaged as seeds: {note}.' for note in columns[0].notes)] if columns else []),
  ]
  if not any(t['name'] == 'table6' for t in built):
    header += ['', 'Table 6: no adversarially trained column.']
  summarised = summary(built)
  if summarised:
    header += ['', *summarised]
  markdown = '\n\n'.join(['\n'.join(header), *(t['markdown'] for t in built)])
  if files:
    markdown += '\n\nPlots: ' + ', '.join(files)
  statistics = dict(reference=stats.reference or labels[0], seed=seed, resamples=resamples)
  result = dict(dataset=dataset, columns=described, tables=built, plots=sorted(files))
  result['statistics'] = dict(statistics, summary=summarised)
  return result, markdown, files


def checkpoints(described):
  """'trained 15 epochs, reports at epoch 14' for a column's line."""
  trained = sorted({e for e in described['trained_epochs'] if e is not None})
  text = f'trained {"/".join(map(str, trained)) or "?"} epochs'
  evaluated = described['evaluated_epochs']
  return text + (f', reports at epoch {"/".join(map(str, evaluated))}' if evaluated else '')


def history_text(workdirs):
  """The reports each workdir keeps in reports_history/ (replaced by later evaluations on
  other points, settings or weights), one line each, oldest first; compare never reads them."""
  lines = []
  for workdir in workdirs:
    kept = workdir_lib.report_history(workdir)
    lines.append(f'{workdir}: {len(kept)} earlier report(s) in {workdir_lib.HISTORY_DIR}/')
    for folder, report in kept:
      what = workdir_lib.describe_report(report)
      lines.append(f'  {folder}: {report.get("evaluation", "?")} on {what}')
  return '\n'.join(lines)


def provenance_mark(fields):
  if not fields:
    return ''
  return f' {MARK} trained under another provenance (the provenance table): {", ".join(fields)}'


def write(workdirs, out, **kwargs):
  """`compare` into `out`: comparison.json, comparison.md and the plots. Returns the result."""
  result, markdown, files = compare(workdirs, **kwargs)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'comparison.json'), 'w') as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(out, 'comparison.md'), 'w') as f:
    f.write(markdown + '\n')
  for name, content in files.items():
    with open(os.path.join(out, name), 'wb') as f:
      f.write(content)
  print(markdown)
  return result


__all__ = [
  'EXPECTED_SUITES',
  'RESAMPLES',
  'SUITES',
  'TABLES',
  'Column',
  'Facts',
  'Run',
  'Stats',
  'Table',
  'cell',
  'columns_of',
  'compare',
  'history_text',
  'pivot',
  'read_run',
  'write',
]
