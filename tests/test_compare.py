"""The comparison command (lpd_jax.compare) and the study driver (lpd_jax.study).

The unit tests build workdirs from the trained fixture's ensemble.json with reports written
by hand, so every cell has a known value. The end-to-end test runs the digits study
(configs/study/digits.py: Baseline and LPD, every suite at small budgets) and the
`python -m lpd_jax.compare` command on its two workdirs.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_faults import run_cli, run_module

from lpd_jax import compare, evaluate, study
from lpd_jax.compare.tables import MIXED_NOTE
from lpd_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_workdir(trained_workdir, path, reports=(), **config_changes):
  """A workdir holding the fixture's ensemble.json with `config_changes`, and the given
  {(suite, inference): JSON} reports."""
  os.makedirs(path)
  with open(os.path.join(trained_workdir, 'ensemble.json')) as f:
    meta = json.load(f)
  meta['config'].update(config_changes)
  with open(os.path.join(path, 'ensemble.json'), 'w') as f:
    json.dump(meta, f)
  for (suite, inference), report in dict(reports).items():
    with open(evaluate.report_path(str(path), suite, inference), 'w') as f:
      json.dump(report, f)
  return str(path)


def clean_report(accuracy, entropy, n=100):
  return dict(
    num_examples=n,
    member_accuracy=[accuracy - 0.1] * 3,
    ensemble_accuracy=accuracy,
    ambiguity_entropy=entropy,
  )


def paper_report(rows, n=100):
  return dict(
    num_examples=n,
    rows=[
      dict(
        attack=a,
        label=a.upper(),
        param=p,
        params={},
        accuracy=acc,
        accuracy_clean_correct=acc,
      )
      for a, p, acc in rows
    ],
  )


def table(result, name):
  return next(t for t in result['tables'] if t['name'] == name)


def cells(result, name, row_label):
  row = next(r for r in table(result, name)['rows'] if r['label'] == row_label)
  return row['cells']


def test_seeds_become_one_column_of_mean_and_sample_std(trained_workdir, tmp_path):
  accs, entropies = [0.81, 0.86, 0.78], [0.2, 0.25, 0.3]
  lpd = [
    fake_workdir(
      trained_workdir,
      tmp_path / f'lpd{seed}',
      {('clean', 'raw'): clean_report(accs[seed], entropies[seed])},
      seed=seed,
      eval=dict(batch_size=7 + seed),  # eval settings do not make another configuration
    )
    for seed in range(3)
  ]
  base = fake_workdir(
    trained_workdir,
    tmp_path / 'base',
    {('clean', 'raw'): clean_report(0.9, 0.1)},
    method='baseline',
  )
  result, markdown, _ = compare.compare([*lpd, base])
  assert [c['label'] for c in result['columns']] == ['LPD (3 seeds)', 'Baseline (seed 0)']
  assert result['columns'][0]['seeds'] == [0, 1, 2]
  lpd_cell, base_cell = cells(result, 'clean', 'ensemble')
  assert lpd_cell['values'] == accs
  assert lpd_cell['mean'] == pytest.approx(np.mean(accs))
  assert lpd_cell['std'] == pytest.approx(np.std(accs, ddof=1))
  assert base_cell['values'] == [0.9] and base_cell['std'] == 0
  text = f'{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}'
  assert f'| ensemble | {text} | 90.00 |' in markdown
  e = cells(result, 'table1', 'E')[0]
  assert e['mean'] == pytest.approx(0.25) and e['std'] == pytest.approx(0.05)


def test_missing_reports_are_shown_missing_and_partial_groups_say_so(trained_workdir, tmp_path):
  a = fake_workdir(
    trained_workdir,
    tmp_path / 'a',
    {('paper', 'raw'): paper_report([('none', None, 0.9), ('pgd', 0.02, 0.25)])},
  )
  a1 = fake_workdir(trained_workdir, tmp_path / 'a1', seed=1)  # no report at all
  b = fake_workdir(trained_workdir, tmp_path / 'b', method='adp')
  result, markdown, _ = compare.compare([a, a1, b])
  pgd = cells(result, 'table4', 'PGD 0.02 (all)')
  assert pgd[0]['values'] == [0.25, None] and pgd[0]['n'] == 1
  assert pgd[1]['values'] == [None] and pgd[1]['n'] == 0
  assert '| PGD 0.02 (all) | 25.00 (1 of 2) | - |' in markdown  # missing, never 0
  assert [c['label'] for c in result['columns']] == ['LPD (2 seeds)', 'ADP (seed 0)']
  for t in result['tables']:  # no report of b anywhere: every cell of its column missing
    for r in t['rows']:
      if r['label'] != 'paper, V100: relative to Baseline':  # the paper's constant
        assert r['cells'][1]['n'] == 0, (t['name'], r['label'])


def test_expected_inference_of_a_method_without_keep_rates_is_its_raw_report(
  trained_workdir, tmp_path
):
  lpd = fake_workdir(
    trained_workdir,
    tmp_path / 'lpd',
    {
      ('clean', 'raw'): clean_report(0.8, 0.3),
      ('clean', 'expected'): clean_report(0.7, 0.35),
    },
  )
  base = fake_workdir(
    trained_workdir,
    tmp_path / 'base',
    {('clean', 'raw'): clean_report(0.9, 0.1)},
    method='baseline',
  )
  result, _, _ = compare.compare([lpd, base])
  assert [c['values'] for c in cells(result, 'clean', 'ensemble, expected')] == [[0.7], [0.9]]
  assert [c['values'] for c in cells(result, 'clean', 'ensemble, raw')] == [[0.8], [0.9]]


def test_columns_are_labelled_by_what_differs_and_datasets_must_agree(trained_workdir, tmp_path):
  a = fake_workdir(trained_workdir, tmp_path / 'a')
  b = fake_workdir(trained_workdir, tmp_path / 'b', num_members=5, width=8)
  result, _, _ = compare.compare([a, b])
  assert [c['label'] for c in result['columns']] == ['LPD (K = 3, width 4)', 'LPD (K = 5, width 8)']
  c = fake_workdir(trained_workdir, tmp_path / 'c', dataset='npz', npz_path='x/cifar.npz')
  with pytest.raises(ConfigError, match='different datasets.*npz \\(cifar.npz\\)'):
    compare.compare([a, c])
  with pytest.raises(ConfigError, match='holds no trained ensemble'):
    compare.compare([a, str(tmp_path)])


def test_cells_from_different_test_prefixes_are_marked(trained_workdir, tmp_path):
  """A Baseline evaluated on 32 images beside an LPD on 359: each cell of such a row says its
  number of images, and a note says why; rows of one prefix stay unmarked."""
  base = fake_workdir(
    trained_workdir,
    tmp_path / 'base',
    {('clean', 'raw'): dict(clean_report(1.0, 0.0, n=32), test_examples=32)},
    method='baseline',
  )
  lpd = fake_workdir(
    trained_workdir,
    tmp_path / 'lpd',
    {('clean', 'raw'): clean_report(0.9972, 0.1, n=359)},  # an older report: num_examples
  )
  result, markdown, _ = compare.compare([base, lpd])
  assert '| ensemble | 100.00 [n=32] | 99.72 [n=359] |' in markdown
  assert cells(result, 'clean', 'ensemble')[0]['test_images'] == [32]
  assert MIXED_NOTE in table(result, 'clean')['markdown']
  same = fake_workdir(
    trained_workdir, tmp_path / 'same', {('clean', 'raw'): clean_report(0.9, 0.1, n=359)}, seed=1
  )
  result, markdown, _ = compare.compare([lpd, same])
  assert '[n=' not in markdown and MIXED_NOTE not in markdown


def test_table6_holds_the_adversarially_trained_columns(trained_workdir, tmp_path):
  adv = dict(attack='pgd', eps=0.03, steps=7, step_size=0.01, mix=1.0, loss='ce', mode='train')
  rows = [('none', None, 0.9), ('fgsm', 0.04, 0.5), ('fgsm', 0.08, 0.3), ('pgd', 0.02, 0.25)]
  a = fake_workdir(
    trained_workdir, tmp_path / 'a', {('paper', 'raw'): paper_report(rows)}, adv_train=adv
  )
  b = fake_workdir(trained_workdir, tmp_path / 'b', method='baseline')
  result, markdown, _ = compare.compare([a, b])
  t6 = table(result, 'table6')
  assert t6['columns'] == ['AdvT_PGD + LPD']
  assert [r['label'] for r in t6['rows']] == [
    'FGSM 0.04 (all)',
    'FGSM 0.08 (all)',
    'PGD 0.02 (all)',
  ]
  assert [r['cells'][0]['values'] for r in t6['rows']] == [[0.5], [0.3], [0.25]]
  result, markdown, _ = compare.compare([b])
  assert 'Table 6: no adversarially trained column.' in markdown


@pytest.fixture(scope='module')
def digits_study(trained_workdir, tmp_path_factory):
  """`python -m lpd_jax.study --config=configs/study/digits.py` in a child process. Its LPD
  run is the session's trained fixture (same config: the driver finds it trained); Baseline
  and the surrogate are trained by the command."""
  root = str(tmp_path_factory.mktemp('study'))
  shutil.copytree(trained_workdir, os.path.join(root, 'lpd'))
  for name in os.listdir(os.path.join(root, 'lpd')):
    if name.startswith('eval_') or name.endswith(('.png', '.npz')):  # other tests' reports
      os.remove(os.path.join(root, 'lpd', name))
  done = run_study_cli(root)
  assert done.returncode == 0, done.stderr[-3000:]
  sys.path.insert(0, REPO)
  from configs.study import digits

  with open(os.path.join(root, 'compare', 'comparison.json')) as f:
    return digits.get_config(), root, json.load(f)


def run_study_cli(root):
  """The README's command, from the repository (the tests' CLI environment)."""
  return run_module(
    'lpd_jax.study', '--config=configs/study/digits.py', f'--root={root}', timeout=1200
  )


@pytest.mark.xdist_group('digits_study')
def test_the_study_writes_every_table_with_one_column_per_workdir(digits_study):
  config, root, result = digits_study
  assert [c['label'] for c in result['columns']] == ['Baseline', 'LPD']
  names = [t['name'] for t in result['tables']]
  expected_tables = ['clean', 'table1', 'table2', 'table3', 'table4', 'table5', 'timing']
  assert names == expected_tables + ['figure3', 'robust', 'audit', 'certify']  # no AdvT column
  for t in result['tables']:
    assert t['columns'] == ['Baseline', 'LPD'], t['name']
    for r in t['rows']:
      assert all(c['n'] == 1 for c in r['cells']), (t['name'], r['label'])
  assert set(result['plots']) == {'figure2.png', 'figure3.png', 'drift.png'}
  out = os.path.join(root, 'compare')
  for name in ('comparison.md', 'comparison.json', *result['plots']):
    assert os.path.getsize(os.path.join(out, name)) > 0

  # Cells are the reports' own numbers.
  with open(os.path.join(root, 'lpd', 'eval_robust_expected.json')) as f:
    robust = json.load(f)
  row = f'robust, eps {robust["eps"][0]:g}, expected'
  assert cells(result, 'robust', row)[1]['values'] == [
    robust['robust_accuracy'][f'{robust["eps"][0]:g}']
  ]
  with open(os.path.join(root, 'baseline', 'eval_paper.json')) as f:
    paper = json.load(f)
  pgd = next(r for r in paper['rows'] if r['attack'] == 'pgd')
  assert cells(result, 'table4', f'PGD {pgd["param"]:.2f} (all)')[0]['values'] == [pgd['accuracy']]
  base_raw = cells(result, 'audit', 'worst case over its attacks (%), raw')[0]['values']
  assert (
    cells(result, 'audit', 'worst case over its attacks (%), expected')[0]['values'] == base_raw
  )
  with open(os.path.join(root, 'lpd', 'metrics.jsonl')) as f:
    seconds = [json.loads(line)['epoch_seconds'] for line in f]
  assert cells(result, 'timing', 'seconds per epoch (median)')[1]['values'] == [np.median(seconds)]
  with open(os.path.join(root, 'baseline', 'eval_transfer.json')) as f:
    transfer = json.load(f)
  assert transfer['surrogates'][0]['type'] == 'Type I'  # a Baseline of width 2

  # Wall times of every step, and a rerun does nothing new.
  with open(os.path.join(root, 'study_log.jsonl')) as f:
    log = [json.loads(line) for line in f]
  names = config.suites.split(',')
  assert {(r['run'], r['evaluation'], r['inference']) for r in log if r['step'] == 'eval'} == {
    *(('baseline', s, 'raw') for s in names if not s.endswith('_expected')),
    *(('lpd', s, 'expected' if s.endswith('_expected') else 'raw') for s in names),
    ('surrogate', 'clean', 'raw'),
  }
  assert run_study_cli(root).returncode == 0
  with open(os.path.join(root, 'study_log.jsonl')) as f:
    again = [json.loads(line) for line in f]
  assert [r['step'] for r in again[len(log) :]] == ['train'] * 3

  # wall_times.md sums each run's training lines and keeps each suite's last line.
  times = study.wall_times(root)
  lpd = [r for r in again if r['run'] == 'lpd']
  assert times['lpd']['train'] == pytest.approx(
    sum(r['seconds'] for r in lpd if r['step'] == 'train')
  )
  robust = [r['seconds'] for r in lpd if r.get('suite') == 'robust']  # raw, then expected
  assert (times['lpd']['robust'], times['lpd']['robust_expected']) == tuple(robust)
  assert times['lpd']['total'] == pytest.approx(sum(r['seconds'] for r in lpd))
  with open(os.path.join(root, 'compare', 'wall_times.md')) as f:
    text = f.read()
  assert f'| lpd | {times["lpd"]["train"]:.0f} | {times["lpd"]["clean"]:.0f} |' in text


@pytest.mark.xdist_group('digits_study')
def test_the_compare_command_shows_a_missing_suite_and_refuses_another_dataset(
  digits_study, tmp_path
):
  _, root, _ = digits_study
  partial = str(tmp_path / 'baseline')
  shutil.copytree(os.path.join(root, 'baseline'), partial)
  os.remove(os.path.join(partial, 'eval_robust.json'))
  out = str(tmp_path / 'tables')
  done = run_module(
    'lpd_jax.compare', f'--workdirs={partial},{root}/lpd', f'--out={out}', timeout=600
  )
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(out, 'comparison.json')) as f:
    result = json.load(f)
  for row in table(result, 'robust')['rows']:
    if row['label'].endswith(', raw'):
      assert row['cells'][0]['n'] == 0 and row['cells'][1]['n'] == 1, row['label']
  with open(os.path.join(out, 'comparison.md')) as f:
    assert '| clean, raw | - |' in f.read()

  # --run_missing runs a missing suite on the workdir's own config: the same report again.
  with open(os.path.join(partial, 'eval_clean.json')) as f:
    clean = json.load(f)
  os.remove(os.path.join(partial, 'eval_clean.json'))
  result, _, _ = compare.compare([partial], run_missing_evaluations=('clean',))
  with open(os.path.join(partial, 'eval_clean.json')) as f:
    assert json.load(f) == clean
  assert cells(result, 'clean', 'ensemble')[0]['values'] == [clean['ensemble_accuracy']]
  assert not os.path.exists(os.path.join(partial, 'eval_robust.json'))  # not asked for

  other = str(tmp_path / 'npz')
  shutil.copytree(os.path.join(root, 'baseline'), other)
  with open(os.path.join(other, 'ensemble.json')) as f:
    meta = json.load(f)
  meta['config'].update(dataset='npz', npz_path='/data/cifar10_subset.npz')
  with open(os.path.join(other, 'ensemble.json'), 'w') as f:
    json.dump(meta, f)
  refused = run_module('lpd_jax.compare', f'--workdirs={root}/lpd,{other}', f'--out={out}')
  assert refused.returncode == 1 and 'Traceback' not in refused.stderr
  assert [line for line in refused.stderr.splitlines() if line.startswith('error:')] == [
    line for line in refused.stderr.splitlines() if 'the workdirs hold different datasets' in line
  ]


def test_a_study_refuses_unknown_fields_and_surrogates_trained_after_their_user(tmp_path):
  sys.path.insert(0, REPO)
  from configs.study import digits

  config = digits.get_config()
  with config.unlocked():
    config.train.widht = 4
  with pytest.raises(ConfigError, match="config has no field 'widht'"):
    study.run_study(config, str(tmp_path))
  config = digits.get_config()
  config.order = 'baseline,surrogate,lpd'
  with pytest.raises(ConfigError, match="surrogate 'surrogate' must be a run of the study that"):
    study.run_study(config, str(tmp_path))
  config = digits.get_config()
  config.order = 'surrogate,baseline'
  with pytest.raises(ConfigError, match="not in order: \\['lpd'\\]"):
    study.run_study(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing written before the study's configs passed


@pytest.mark.xdist_group('digits_study')
def test_the_printed_commands_are_what_the_study_ran(digits_study):
  import shlex

  config, root, _ = digits_study
  lines = study.commands(config, root)
  train_lines = [line for line in lines if line.startswith('python train.py')]
  assert len(train_lines) == 3 and len(lines) == 3 + 1 + 2 * 8 + 4  # surrogate: clean only
  args = shlex.split(train_lines[1])[2:]  # baseline's: --config=... --workdir=... --config.*
  parse = (  # the flags as train.py parses them
    'import sys; from absl import flags; from ml_collections import config_flags; '
    "c = config_flags.DEFINE_config_file('config', lock_config=True); flags.FLAGS(sys.argv); "
    'print(c.value.to_json())'
  )
  args = [a for a in args if not a.startswith('--workdir')]
  parsed = subprocess.run(
    [sys.executable, '-c', parse, *args], cwd=REPO, capture_output=True, text=True, check=True
  )
  runs = dict(study.runs_of(config))
  by_study = study.run_config(config, root, 'baseline', runs['baseline'])
  assert json.loads(parsed.stdout) == json.loads(by_study.to_json())

  line = next(x for x in lines if 'baseline --config.eval.suite=clean' in x)
  with open(evaluate.report_path(os.path.join(root, 'baseline'), 'clean')) as f:
    by_study = json.load(f)
  done = run_cli('eval.py', *shlex.split(line)[2:])
  assert done.returncode == 0, done.stderr[-2000:]
  with open(evaluate.report_path(os.path.join(root, 'baseline'), 'clean')) as f:
    assert json.load(f) == by_study


def test_an_evaluations_own_prefix_and_batch_stay_with_that_evaluation(tmp_path, monkeypatch):
  """eval.clean.test_examples=-1 in a study config is the clean evaluations' own prefix (raw
  and expected); the run's other evaluations keep the study's eval.num_examples."""
  sys.path.insert(0, REPO)
  from configs.study import digits

  config = digits.get_config()
  with config.unlocked():
    config.eval.clean = {'test_examples': -1, 'batch_size': 250}
  seen = []

  def record(cfg, workdir):
    (evaluation,) = study.evaluations.resolve(cfg)
    seen.append((evaluation.name, evaluation.num_examples, evaluation.batch_size))

  monkeypatch.setattr(study.train, 'train_and_evaluate', lambda cfg, workdir: None)
  monkeypatch.setattr(study.evaluate, 'evaluate', record)
  monkeypatch.setattr(study.compare, 'write', lambda workdirs, out: None)
  study.run_study(config, str(tmp_path), only=('lpd',))
  assert [s[0] for s in seen][:3] == ['clean', 'probes', 'paper']
  assert 'clean_expected' in [s[0] for s in seen]
  for name, num_examples, batch_size in seen:
    if name == 'certify':  # its batch_size is a setting of its own (samples per bound call)
      continue
    expected = (-1, 250) if name.startswith('clean') else (64, 128)
    assert (num_examples, batch_size) == expected, name
  printed = [
    line for line in study.commands(config, str(tmp_path), only=('lpd',)) if 'eval.py' in line
  ]
  clean = next(line for line in printed if '--config.eval.suite=clean ' in line)
  assert clean.endswith('--config.eval.num_examples=-1 --config.eval.batch_size=250')


def test_only_refuses_an_unknown_run_when_printing_commands_too(tmp_path):
  sys.path.insert(0, REPO)
  from configs.study import digits

  with pytest.raises(ConfigError, match=r"--only names runs the study does not have: \['lpdd'\]"):
    study.commands(digits.get_config(), str(tmp_path), only=('lpdd',))
  assert len(study.commands(digits.get_config(), str(tmp_path), only=('surrogate',))) == 2
