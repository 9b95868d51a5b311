"""Several workdirs side by side: the paper's tables and figures for the user's own runs.

  python -m lpd_jax.compare --workdirs=A,B,C --out=DIR [--run_missing] [--suites=...]

Reads each workdir's saved config (`ensemble.json`), its eval reports (`eval_<suite>.json`,
and `eval_<suite>_expected.json` for 'expected' inference, `lpd_jax.evaluate.report_file`)
and its `metrics.jsonl`, and writes into DIR:

  comparison.md    every table, one column per configuration, labelled by its method (and
                   K, width, model, epochs, seed where the columns differ):
                   clean accuracy; Table 1 (ambiguity entropy); Tables 2-3 (L_d, L_s
                   quantiles); Table 4 (the paper's attacks, all points and clean-correct);
                   Table 5 (transfer); Table 6 (the adversarially trained columns); the
                   section 5.4 timing table; and what the paper never showed: robust
                   accuracy (per-sample worst case over the strong attacks), the
                   gradient-masking audit's verdicts and certified robustness. Where a
                   column has an 'expected' report its rows appear under both inferences
                   (for a method without keep rates, 'expected' is 'raw').
  comparison.json  the same, with every workdir's own value behind each cell
  figure3.png      Figure 3: accuracy under PGD against eps, every column on one axis per norm
  figure2.png      Figure 2: the certification scatter, one panel per workdir
  drift.png        mean keep rate and median test logit margins (raw, expected) per epoch

Workdirs whose configs differ only in their seed (and in settings that do not change the
model: eval, checkpoints, logging, devices) become one column, each cell the mean +- the
sample standard deviation over the seeds. A workdir without a suite's report shows '-'
(missing, never 0); with --run_missing the missing suites are run first (eval.py's driver
on the workdir's own config, with a progress bar). Workdirs of different datasets are
refused.
"""

import dataclasses
import json
import os
import sys

import numpy as np
from absl import app, flags
from tqdm.auto import tqdm

from lpd_jax import cli, evaluate, loading, methods
from lpd_jax.errors import ConfigError
from lpd_jax.suites.common import figure_png, fmt_param, markdown_table, pct

_WORKDIRS = flags.DEFINE_string('workdirs', None, 'comma-separated workdirs')
_OUT = flags.DEFINE_string('out', None, 'folder for comparison.md, comparison.json and plots')
_RUN_MISSING = flags.DEFINE_bool('run_missing', False, 'run the missing suites first')
_SUITES = flags.DEFINE_string(
  'suites', 'clean,probes,paper,sweep,robust,audit,certify,transfer', 'suites --run_missing runs'
)
_EXPECTED = flags.DEFINE_string(
  'expected_suites', 'clean,probes,robust,audit', "suites --run_missing also runs in 'expected'"
)

SUITES = ('clean', 'probes', 'paper', 'sweep', 'transfer', 'robust', 'audit', 'certify')
INFERENCES = ('raw', 'expected')
# Config fields that do not make another configuration: seeds of these are one column.
NOT_CONFIGURATION = (
  'seed',
  'eval',
  'compilation_cache',
  'log_every_steps',
  'keep_checkpoints',
  'member_strategy',
  'sharding',
  'distributed',
  'data_dir',
  'continue_training',
)
# Paper section 5.4: seconds per epoch on a Tesla V100, CIFAR-10, K = 3, batch 64.
PAPER_V100_EPOCH_SECONDS = {'baseline': 54, 'adp': 64, 'lpd': 80, 'deg': 703, 'trs': 4106}


@dataclasses.dataclass
class Run:
  """One workdir: its config, reports {(suite, inference): dict | None} and metrics lines."""

  workdir: str
  config: object
  num_classes: int
  input_shape: tuple
  reports: dict
  metrics: list

  def report(self, suite, inference='raw'):
    return self.reports.get((suite, inference))

  @property
  def name(self):
    return os.path.basename(os.path.normpath(self.workdir))


@dataclasses.dataclass
class Column:
  label: str
  runs: list


def read_run(workdir):
  """A workdir's config, reports and metrics; ConfigError if it holds no ensemble."""
  saved = loading.read_config(workdir)
  if saved is None:
    raise ConfigError(f'{workdir} holds no trained ensemble (no ensemble.json)')
  config, num_classes, input_shape = saved
  reports = {}
  for suite in SUITES:
    for inference in INFERENCES:
      path = evaluate.report_path(workdir, suite, inference)
      if os.path.exists(path):
        with open(path) as f:
          reports[suite, inference] = json.load(f)
    if not methods.has_expected_inference(config):  # 'expected' is 'raw' for this method
      reports[suite, 'expected'] = reports.get((suite, 'raw'))
  metrics = []
  path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path) as f:
      metrics = [json.loads(line) for line in f if line.strip()]
  return Run(workdir, config, num_classes, tuple(input_shape), reports, metrics)


def dataset_of(run):
  """What makes two workdirs' test sets the same: the dataset (and its npz file), classes
  and input shape, as a readable string."""
  c = run.config
  name = c.dataset + (f' ({os.path.basename(c.npz_path)})' if c.dataset == 'npz' else '')
  return f'{name}, {run.num_classes} classes, {"x".join(map(str, run.input_shape))} inputs'


def check_one_dataset(runs):
  datasets = {dataset_of(r) for r in runs}
  if len(datasets) > 1:
    held = '; '.join(f'{r.workdir}: {dataset_of(r)}' for r in runs)
    raise ConfigError(
      f'the workdirs hold different datasets and cannot share a table ({held}); compare '
      'workdirs of one dataset'
    )
  return datasets.pop()


def runnable(run, suite, inference):
  """Whether --run_missing can run `suite` in `inference` on this workdir (and why not)."""
  c = run.config
  if inference == 'expected' and not methods.has_expected_inference(c):
    return False, "'expected' is 'raw' for this method"
  if suite == 'certify' and (inference == 'expected' or c.model not in ('resnet18', 'resnet34')):
    return False, 'certification needs raw inference of a ResNet'
  if suite == 'transfer' and not c.eval.transfer.workdir:
    return False, 'no eval.transfer.workdir in its config'
  return True, ''


def run_missing(runs, suites, expected_suites):
  """Runs each missing (suite, inference) report on its workdir's own config, with a
  progress bar; returns the runs read again."""
  todo = []
  for run in runs:
    for inference in INFERENCES:
      for suite in suites if inference == 'raw' else expected_suites:
        if run.report(suite, inference) is not None:
          continue
        ok, why = runnable(run, suite, inference)
        if ok:
          todo.append((run, suite, inference))
        elif methods.has_expected_inference(run.config) or inference == 'raw':
          print(f'compare: not running {suite} ({inference}) on {run.workdir}: {why}')
  with tqdm(todo, desc='compare: missing reports', disable=None) as bar:
    for run, suite, inference in bar:
      bar.set_postfix_str(f'{run.name}: {suite} ({inference})')
      config = loading.read_config(run.workdir)[0]
      config.eval.suite, config.eval.inference = suite, inference
      evaluate.evaluate(config, run.workdir)
  return [read_run(r.workdir) for r in runs]


def configuration(config):
  """The config without the fields of NOT_CONFIGURATION, as a comparable string."""
  d = config.to_dict()
  return json.dumps({k: v for k, v in d.items() if k not in NOT_CONFIGURATION}, sort_keys=True)


# Fields named in a column's label when the columns differ in them.
LABEL_FIELDS = (
  ('num_members', 'K = {}'),
  ('width', 'width {}'),
  ('model', '{}'),
  ('num_epochs', '{} epochs'),
  ('batch_size', 'batch {}'),
)


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


@dataclasses.dataclass
class Row:
  """A table row: `get(run) -> value or None (missing)`; `fmt` formats a number; a 'verdict'
  row holds 'passed' | 'FAILED' | 'not run'."""

  label: str
  get: object
  fmt: object = pct
  kind: str = 'number'


def cell(values, row):
  """Per-workdir values of one column -> (JSON cell, text). Several seeds: mean +- sample
  std over those present; '-' when none is."""
  present = [v for v in values if v is not None]
  out = dict(values=values, n=len(present))
  if not present:
    return out, '-'
  if row.kind == 'verdict':
    if len(set(present)) == 1:
      text = present[0]
    else:
      text = f'{sum(v == "passed" for v in present)} of {len(present)} passed'
    if len(present) < len(values):
      text += f' ({len(present)} of {len(values)})'
    return out, text
  mean = float(np.mean(present))
  std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
  out.update(mean=mean, std=std)
  if len(values) == 1:
    return out, row.fmt(mean)
  text = f'{row.fmt(mean)} ± {row.fmt(std)}' if len(present) > 1 else row.fmt(mean)
  if len(present) < len(values):
    text += f' ({len(present)} of {len(values)})'
  return out, text


def make_table(name, caption, rows, columns, notes=()):
  """-> {'name', 'caption', 'columns', 'rows': [{'label', 'cells'}], 'markdown'}."""
  json_rows, cells = [], []
  for row in rows:
    pairs = [cell([_safe(row.get, r) for r in col.runs], row) for col in columns]
    json_rows.append(dict(label=row.label, cells=[p[0] for p in pairs]))
    cells.append((row.label, *(p[1] for p in pairs)))
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


def _safe(get, run):
  try:
    return get(run)
  except (KeyError, TypeError, IndexError):  # the report lacks this entry
    return None


def _one_or_all(values):
  values = [v for v in dict.fromkeys(values) if v is not None]
  return ' / '.join(str(v) for v in values) if values else '-'


def _reports(columns, suite, inference='raw'):
  return [r.report(suite, inference) for c in columns for r in c.runs if r.report(suite, inference)]


def _inferences(columns, suite):
  """'raw', and 'expected' when some column has an expected report of `suite` of its own."""
  out = ['raw']
  if any(
    methods.has_expected_inference(r.config) and r.report(suite, 'expected')
    for c in columns
    for r in c.runs
  ):
    out.append('expected')
  return out


def _suffix(inference, inferences):
  return f', {inference}' if len(inferences) > 1 else ''


EXPECTED_NOTE = (
  "Rows marked 'expected': heads see h * p(h), the scale they were trained on (METHODS.md); "
  "for methods without keep rates 'expected' is 'raw' and repeats it."
)


def clean_table(columns):
  infs = _inferences(columns, 'clean')
  rows = []
  for inf in infs:
    s = _suffix(inf, infs)
    rows += [
      Row(f'ensemble{s}', lambda r, i=inf: r.report('clean', i)['ensemble_accuracy']),
      Row(
        f'mean member{s}',
        lambda r, i=inf: float(np.mean(r.report('clean', i)['member_accuracy'])),
      ),
    ]
  n = _one_or_all(rep['num_examples'] for rep in _reports(columns, 'clean'))
  return make_table(
    'clean',
    f'Clean accuracy (%) on the first {n} test images (ensemble: argmax of the mean softmax, '
    'eq. 1).',
    rows,
    columns,
    ['', EXPECTED_NOTE] if len(infs) > 1 else [],
  )


def table1(columns):
  infs = _inferences(columns, 'clean')
  rows = [
    Row(
      f'E{_suffix(inf, infs)}',
      lambda r, i=inf: r.report('clean', i)['ambiguity_entropy'],
      lambda v: f'{v:.4f}',
    )
    for inf in infs
  ]
  n = _one_or_all(rep['num_examples'] for rep in _reports(columns, 'clean'))
  return make_table(
    'table1',
    "Table 1. Ambiguity entropy E (eq. 7) of the members' correctness on the first "
    f'{n} test images (0: members always agree; 1: maximal disagreement).',
    rows,
    columns,
  )


def probe_tables(columns):
  infs = _inferences(columns, 'probes')
  reports = _reports(columns, 'probes')
  n = _one_or_all(rep['probe_examples'] for rep in reports)
  precision = _one_or_all('float64' if rep['float64'] else 'float32' for rep in reports)
  out = []
  for name, probe, caption in (
    ('table2', 'gradient_cosine', 'Table 2. Loss gradient diversity L_d = sum_{i<j} cos<g_i, g_j>'),
    ('table3', 'gradient_norm', 'Table 3. Model smoothness L_s = sum_k ||g_k||_2'),
  ):
    rows = [
      Row(
        f'{q:.0%}{_suffix(inf, infs)}',
        lambda r, i=inf, q=q, p=probe: r.report('probes', i)[p][str(q)],
        lambda v: f'{v:.2e}',
      )
      for inf in infs
      for q in (0.25, 0.5, 0.75)
    ]
    out.append(
      make_table(
        name,
        f'{caption}: quantiles over the first {n} test images ({precision}).',
        rows,
        columns,
      )
    )
  return out


def _paper_rows(columns, attacks=None):
  """The (attack, param, label) of every paper-report row, in order of appearance."""
  seen = {}
  for rep in _reports(columns, 'paper'):
    for r in rep['rows']:
      if r['attack'] != 'none' and (attacks is None or r['attack'] in attacks):
        seen.setdefault((r['attack'], r['param']), r.get('label', r['attack'].upper()))
  return [(a, p, label) for (a, p), label in seen.items()]


def _find(rows, field, **match):
  """`field` of the first row (dict) of `rows` whose entries equal `match`; None if none."""
  for r in rows:
    if all(r.get(k) == v for k, v in match.items()):
      return r[field]
  return None


def _paper_value(run, inference, attack, param, field):
  return _find(run.report('paper', inference)['rows'], field, attack=attack, param=param)


def table4(columns):
  infs = _inferences(columns, 'paper')
  grid = _paper_rows(columns)
  rows = []
  for inf in infs:
    s = _suffix(inf, infs)
    rows.append(Row(f'No Attack{s}', lambda r, i=inf: r.report('paper', i)['rows'][0]['accuracy']))
    for field, where in (('accuracy', 'all'), ('accuracy_clean_correct', 'clean-correct')):
      rows += [
        Row(
          f'{label} {fmt_param(p)} ({where}{s})',
          lambda r, i=inf, a=a, p=p, f=field: _paper_value(r, i, a, p, f),
        )
        for a, p, label in grid
      ]
    rows += [
      Row(
        f'{label} {fmt_param(p)}: median L2 of successes{s}',
        lambda r, i=inf, a=a, p=p: _paper_value(r, i, a, p, 'median_l2_successful'),
        lambda v: f'{v:.3f}',
      )
      for a, p, label in grid
      if a == 'cw'
    ]
  reports = _reports(columns, 'paper')
  n = _one_or_all(rep['num_examples'] for rep in reports)
  variants = []
  for rep in reports:
    for r in rep['rows']:
      if r['attack'] == 'jsma':
        variants.append(f'JSMA {r["params"].get("variant")} (theta {r["params"].get("theta")})')
      if r['attack'] == 'cw':
        p = r['params']
        variants.append(
          f'C&W {p.get("steps")} steps x {p.get("binary_search_steps")} searches, margin on '
          f'{p.get("margin")}'
        )
  return make_table(
    'table4',
    'Table 4. Accuracy (%) under the white-box attacks as the paper ran them, on all of the '
    f'first {n} test images and on those the ensemble classifies right clean '
    "(the authors' convention). Para.: eps for FGSM, BIM and PGD (10 steps of eps/10; PGD "
    f'from a random start, CE on the log mean softmax), gamma for JSMA, c for C&W; '
    f'{_one_or_all(variants)}.',
    rows,
    columns,
  )


def _transfer_rows(columns):
  """Row keys (type, surrogate description, attack, param, attack label) in order."""
  seen = {}
  for col in columns:
    for run in col.runs:
      rep = run.report('transfer')
      if rep is None:
        continue
      for r in rep['rows']:
        s = rep['surrogates'][r['surrogate']]
        who = 'same defence' if s['type'] == 'Type II' else surrogate_description(s)
        seen.setdefault((s['type'], who, r['attack'], r['param']), r['label'])
  return [(*key, label) for key, label in seen.items()]


def surrogate_description(s):
  return f'{s["label"]} {s["model"]} w{s["width"]} K={s["num_members"]}'


def _transfer_value(run, kind, who, attack, param):
  rep = run.report('transfer')
  for r in rep['rows']:
    s = rep['surrogates'][r['surrogate']]
    w = 'same defence' if s['type'] == 'Type II' else surrogate_description(s)
    if (s['type'], w, r['attack'], r['param']) == (kind, who, attack, param):
      return r['accuracy']
  return None


def table5(columns):
  rows = [
    Row(
      f'{kind} ({who}): {label} {fmt_param(p)}',
      lambda r, k=kind, w=who, a=a, p=p: _transfer_value(r, k, w, a, p),
    )
    for kind, who, a, p, label in _transfer_rows(columns)
  ]
  reports = _reports(columns, 'transfer')
  n = _one_or_all(rep['num_examples'] for rep in reports)
  labels = _one_or_all(rep['labels'] for rep in reports)
  notes = []
  for col in columns:
    for run in col.runs:
      rep = run.report('transfer')
      if rep:
        for s in rep['surrogates']:
          notes.append(f'- {col.label} ({run.name}): {s["type"]} surrogate {s["workdir"]}')
  return make_table(
    'table5',
    f'Table 5. Accuracy (%) under black-box transfer on the first {n} test images: examples '
    f"made on a surrogate (attack labels: {labels}) at the paper suite's grid. Type I: a "
    'Baseline of another architecture or width; Type II: trained with the same defence.',
    rows,
    columns,
    ['', 'Surrogates:', *notes] if notes else [],
  )


def table6(columns):
  adversarial = [c for c in columns if c.runs[0].config.adv_train.attack != 'none']
  if not adversarial:
    return None
  rows = [
    Row(
      f'{label} {fmt_param(p)}',
      lambda r, a=a, p=p: _paper_value(r, 'raw', a, p, 'accuracy'),
    )
    for a, p, label in _paper_rows(adversarial, ('fgsm', 'pgd'))
  ]
  return make_table(
    'table6',
    'Table 6. Accuracy (%) of the adversarially trained columns under FGSM and PGD '
    '(white-box, the paper suite, all evaluated points).',
    rows,
    adversarial,
  )


def _median_epoch_seconds(run):
  seconds = [m['epoch_seconds'] for m in run.metrics if 'epoch_seconds' in m]
  return float(np.median(seconds)) if seconds else None


def timing_table(columns):
  base = next(
    (
      c
      for c in columns
      if c.runs[0].config.method == 'baseline' and c.runs[0].config.adv_train.attack == 'none'
    ),
    None,
  )
  base_seconds = None
  if base is not None:
    values = [v for v in map(_median_epoch_seconds, base.runs) if v is not None]
    base_seconds = float(np.mean(values)) if values else None

  def paper_ratio(run):
    c = run.config
    if c.adv_train.attack != 'none' or c.method not in PAPER_V100_EPOCH_SECONDS:
      return None
    return PAPER_V100_EPOCH_SECONDS[c.method] / PAPER_V100_EPOCH_SECONDS['baseline']

  def images_per_second(run):
    values = [m['images_per_second'] for m in run.metrics if 'images_per_second' in m]
    return float(np.median(values)) if values else None

  rows = [
    Row('seconds per epoch (median)', _median_epoch_seconds, lambda v: f'{v:.1f}'),
    Row('images per second (median)', images_per_second, lambda v: f'{v:.0f}'),
    Row(
      'relative to Baseline',
      lambda r: (
        None
        if base_seconds is None or _median_epoch_seconds(r) is None
        else _median_epoch_seconds(r) / base_seconds
      ),
      lambda v: f'{v:.2f}x',
    ),
    Row('paper, V100: relative to Baseline', paper_ratio, lambda v: f'{v:.2f}x'),
    Row('epochs trained', lambda r: len(r.metrics) or None, lambda v: f'{v:.0f}'),
    Row(
      'training time (min)',
      lambda r: sum(m.get('epoch_seconds', 0) for m in r.metrics) / 60 or None,
      lambda v: f'{v:.1f}',
    ),
  ]
  return make_table(
    'timing',
    "Section 5.4. Training cost from each workdir's metrics.jsonl (epoch_seconds: the "
    'training steps of an epoch, without its test evaluation), on the machine that trained it; '
    'the paper row is its Tesla V100 figure (CIFAR-10, K = 3, batch 64).',
    rows,
    columns,
  )


def robust_table(columns):
  infs = _inferences(columns, 'robust')
  rows = []
  for inf in infs:
    s = _suffix(inf, infs)
    grid, by_attack = {}, {}
    for rep in _reports(columns, 'robust', inf):
      for e in rep['eps']:
        grid.setdefault(f'{e:g}')
      for r in rep['rows']:
        by_attack.setdefault((r['attack'], r['eps']))
    rows.append(Row(f'clean{s}', lambda r, i=inf: r.report('robust', i)['clean_accuracy']))
    rows += [
      Row(
        f'robust, eps {e}{s}',
        lambda r, i=inf, e=e: r.report('robust', i)['robust_accuracy'][e],
      )
      for e in grid
    ]
    rows += [
      Row(
        f'  {a}, eps {e:g}{s}',
        lambda r, i=inf, a=a, e=e: _find(
          r.report('robust', i)['rows'], 'accuracy', attack=a, eps=e
        ),
      )
      for a, e in by_attack
    ]
  reports = _reports(columns, 'robust')
  n = _one_or_all(rep['num_examples'] for rep in reports)
  settings = _one_or_all(
    ', '.join(
      f'{r["attack"]} {_params_text(r["params"])}' for r in rep['rows'] if r['eps'] == rep['eps'][0]
    )
    for rep in reports
  )
  return make_table(
    'robust',
    f'Robust accuracy (%) under strong attacks, L-inf, the per-sample worst case over every '
    f'attack (a sample counts only if right clean and under all of them), on all of the first '
    f'{n} test images. Attacks: {settings}.',
    rows,
    columns,
    ['', EXPECTED_NOTE] if len(infs) > 1 else [],
  )


def _params_text(params):
  return '(' + ', '.join(f'{k} {v}' for k, v in params.items()) + ')'


def audit_table(columns):
  infs = _inferences(columns, 'audit')
  rows = []
  for inf in infs:
    s = _suffix(inf, infs)
    checks = {}
    for rep in _reports(columns, 'audit', inf):
      for name in rep['checks']:
        checks.setdefault(name)
    rows += [
      Row(f'{name}{s}', lambda r, i=inf, n=name: _verdict(r.report('audit', i), n), kind='verdict')
      for name in checks
    ]
    rows.append(
      Row(
        f'worst case over its attacks (%){s}',
        lambda r, i=inf: r.report('audit', i)['worst_case_accuracy'],
      )
    )
  reports = _reports(columns, 'audit')
  n = _one_or_all(rep['num_examples'] for rep in reports)
  eps = _one_or_all(f'{rep["eps"]:g}' for rep in reports)
  return make_table(
    'audit',
    f'Gradient-masking audit (lpd_jax.audit: Athalye et al. 2018, Carlini et al. 2019) at '
    f'L-inf eps {eps} on the first {n} test images: each check passed, FAILED (a sign of '
    'gradient masking or a too-weak attack) or not run.',
    rows,
    columns,
    ['', EXPECTED_NOTE] if len(infs) > 1 else [],
  )


def _verdict(report, name):
  return {True: 'passed', False: 'FAILED', None: 'not run'}[report['checks'][name]['passed']]


def certify_table(columns):
  reports = _reports(columns, 'certify')
  bounds = list(dict.fromkeys(m for rep in reports for m in rep['methods']))
  rows = [Row('samples', lambda r: r.report('certify')['num_examples'], lambda v: f'{v:.0f}')]
  for m in bounds:
    rows += [
      Row(
        f'certified (%), {m}',
        lambda r, m=m: r.report('certify')['methods'][m]['certified_fraction'],
      ),
      Row(
        f'median minimal lower bound, {m}',
        lambda r, m=m: r.report('certify')['methods'][m]['median_minimal_lower_bound'],
        lambda v: f'{v:.3g}',
      ),
    ]
  rows.append(
    Row(
      'median clean minimal margin',
      lambda r: float(np.median(r.report('certify')['clean_minimal_margin'])),
      lambda v: f'{v:.3g}',
    )
  )
  eps = _one_or_all(f'{rep["eps"]:g}' for rep in reports)
  return make_table(
    'certify',
    f'Certified robustness (section 4.4, Figure 2) at L-inf eps {eps}: the first test images '
    'every member classifies right; a sample is certified when the minimal lower bound of the '
    'margins of the mean member logits is > 0 (raw inference).',
    rows,
    columns,
  )


def sweep_table(columns):
  infs = _inferences(columns, 'sweep')
  rows = []
  for inf in infs:
    points = {}
    for rep in _reports(columns, 'sweep', inf):
      for norm, pts in rep['sweep'].items():
        for p in pts:
          points.setdefault((norm, p['eps']))
    rows += [
      Row(
        f'{"L-inf" if norm == "linf" else "L2"} {e:g}{_suffix(inf, infs)}',
        lambda r, i=inf, n=norm, e=e: _find(r.report('sweep', i)['sweep'][n], 'accuracy', eps=e),
      )
      for norm, e in points
    ]
  n = _one_or_all(rep['num_examples'] for rep in _reports(columns, 'sweep'))
  steps = _one_or_all(rep['steps'] for rep in _reports(columns, 'sweep'))
  return make_table(
    'figure3',
    f'Figure 3 as a table: accuracy (%) under PGD-{steps} as eps doubles, on the first {n} '
    'test images (plot: figure3.png).',
    rows,
    columns,
  )


def _colors(n):
  from matplotlib import colormaps

  cmap = colormaps['tab10']
  return [cmap(i % 10) for i in range(n)]


def plot_figure3(columns):
  """Accuracy (%) under PGD against eps (log2 axis), one axis per norm, a line per column
  (mean over seeds, error bars: sample std)."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import FixedLocator, NullLocator

  norms = list(dict.fromkeys(n for rep in _reports(columns, 'sweep') for n in rep['sweep']))
  if not norms:
    return None
  fig = Figure(figsize=(5.2 * len(norms), 4.2), layout='constrained')
  axes = fig.subplots(1, len(norms), squeeze=False)[0]
  for ax, norm in zip(axes, norms):
    ticks = set()
    for col, color in zip(columns, _colors(len(columns))):
      curves = [r.report('sweep')['sweep'].get(norm) for r in col.runs if r.report('sweep')]
      curves = [c for c in curves if c]
      if not curves:
        continue
      eps = [p['eps'] for p in curves[0]]
      acc = np.array([[100 * p['accuracy'] for p in c] for c in curves if len(c) == len(eps)])
      ticks.update(eps)
      std = acc.std(axis=0, ddof=1) if len(acc) > 1 else None
      ax.errorbar(
        eps, acc.mean(axis=0), yerr=std, fmt='o-', color=color, label=col.label, capsize=3
      )
    ax.set_xscale('log', base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f'{e:g}' for e in sorted(ticks)], rotation=45)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    label = r'$L_\infty$' if norm == 'linf' else r'$L_2$'
    ax.set_xlabel(rf'$\epsilon$ ({label}, log$_2$ scale)')
    ax.set_ylabel('accuracy (%)')
    ax.set_title(f'PGD, {label}')
    ax.legend(fontsize='small')
  return fig


def plot_figure2(columns):
  """The certification scatter of each workdir with a certify report, one panel each."""
  from matplotlib.figure import Figure

  panels = [(col, r) for col in columns for r in col.runs if r.report('certify')]
  if not panels:
    return None
  ncols = min(3, len(panels))
  nrows = -(-len(panels) // ncols)
  fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout='constrained')
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, (col, run) in zip(axes, panels):
    rep = run.report('certify')
    for m, r in rep['methods'].items():
      lower = r['minimal_lower_bound']
      ax.scatter(range(len(lower)), lower, s=10, label=f'{m} ({pct(r["certified_fraction"])}%)')
    ax.axhline(0, color='black', lw=1)
    ax.set_yscale('symlog', linthresh=1e-2)
    ax.set_title(f'{col.label}\n{run.name}, eps {rep["eps"]:g}', fontsize='medium')
    ax.set_xlabel('sample')
    ax.set_ylabel('minimal lower bound (symlog)')
    ax.legend(fontsize='x-small')
  for ax in axes[len(panels) :]:
    ax.set_visible(False)
  return fig


def plot_drift(columns):
  """Per epoch: the mean keep rate over active units, the median member logit margin on
  the test set (raw solid, expected dashed) and their ratio, a color per column."""
  from matplotlib.figure import Figure

  if not any(r.metrics for c in columns for r in c.runs):
    return None
  fig = Figure(figsize=(15, 4), layout='constrained')
  keep_ax, margin_ax, ratio_ax = fig.subplots(1, 3)
  for col, color in zip(columns, _colors(len(columns))):
    for i, run in enumerate(col.runs):
      label = col.label if i == 0 else None
      epochs = [m['epoch'] for m in run.metrics]
      keep = [m.get('train_mean_keep_rate') for m in run.metrics]
      if any(k is not None for k in keep):
        keep_ax.plot(epochs, [np.nan if k is None else k for k in keep], color=color, label=label)
      raw = np.array([m.get('test_median_logit_margin', np.nan) for m in run.metrics], float)
      margin_ax.plot(epochs, raw, color=color, label=label)
      if any('test_median_logit_margin_expected' in m for m in run.metrics):
        exp = np.array(
          [m.get('test_median_logit_margin_expected', np.nan) for m in run.metrics], float
        )
        margin_ax.plot(epochs, exp, color=color, ls='--')
        ratio_ax.plot(epochs, raw / exp, color=color, label=label)
  keep_ax.set_title('mean keep rate over active units (training)')
  margin_ax.set_title('median test logit margin (solid raw, dashed expected)')
  ratio_ax.set_title('margin drift: raw / expected')
  for ax in (keep_ax, margin_ax, ratio_ax):
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='x-small')
    else:  # no column logs it: a method without keep rates
      ax.text(0.5, 0.5, 'no dropout method among the columns', ha='center', transform=ax.transAxes)
  return fig


def compare(workdirs, *, run_missing_suites=False, suites=SUITES, expected_suites=()):
  """-> (result dict, Markdown, {file name: PNG bytes}) over `workdirs` (one dataset)."""
  if not workdirs:
    raise ConfigError('give at least one workdir')
  unknown = [s for s in (*suites, *expected_suites) if s not in SUITES]
  if unknown:
    raise ConfigError(f'unknown suites {unknown}; compare reads {", ".join(SUITES)}')
  runs = [read_run(w) for w in workdirs]
  dataset = check_one_dataset(runs)
  if run_missing_suites:
    runs = run_missing(runs, suites, expected_suites)
  columns = columns_of(runs)
  tables = [
    clean_table(columns),
    table1(columns),
    *probe_tables(columns),
    table4(columns),
    table5(columns),
    table6(columns),
    timing_table(columns),
    sweep_table(columns),
    robust_table(columns),
    audit_table(columns),
    certify_table(columns),
  ]
  tables = [t for t in tables if t is not None]
  figures = {
    'figure3.png': plot_figure3(columns),
    'figure2.png': plot_figure2(columns),
    'drift.png': plot_drift(columns),
  }
  files = {name: figure_png(fig) for name, fig in figures.items() if fig is not None}
  described = [
    dict(
      label=col.label,
      method=col.runs[0].config.method,
      adv_train=col.runs[0].config.adv_train.attack,
      num_members=col.runs[0].config.num_members,
      width=col.runs[0].config.width,
      model=col.runs[0].config.model,
      num_epochs=col.runs[0].config.num_epochs,
      seeds=[r.config.seed for r in col.runs],
      workdirs=[os.path.abspath(r.workdir) for r in col.runs],
    )
    for col in columns
  ]
  header = [
    f'# Comparison on {dataset}',
    '',
    'Columns (several seeds of one configuration: mean ± sample std over them; '
    "'-': no report in the workdir, never 0):",
    '',
    *(
      f'- {d["label"]}: {", ".join(d["workdirs"])} (seeds {", ".join(map(str, d["seeds"]))})'
      for d in described
    ),
  ]
  if not any(t['name'] == 'table6' for t in tables):
    header += ['', 'Table 6: no adversarially trained column.']
  markdown = '\n\n'.join(['\n'.join(header), *(t['markdown'] for t in tables)])
  if files:
    markdown += '\n\nPlots: ' + ', '.join(files)
  result = dict(dataset=dataset, columns=described, tables=tables, plots=sorted(files))
  return result, markdown, files


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


def main(argv):
  del argv
  if not _WORKDIRS.value or not _OUT.value:
    raise app.UsageError('give --workdirs=A,B,... and --out=DIR')
  workdirs = [w.strip() for w in _WORKDIRS.value.split(',') if w.strip()]
  split = lambda s: tuple(t.strip() for t in s.split(',') if t.strip())
  cli.run_reporting_user_errors(
    lambda: write(
      workdirs,
      _OUT.value,
      run_missing_suites=_RUN_MISSING.value,
      suites=split(_SUITES.value),
      expected_suites=split(_EXPECTED.value),
    )
  )


if __name__ == '__main__':
  app.run(main, argv=sys.argv)
