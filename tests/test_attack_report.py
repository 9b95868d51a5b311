"""Tests of the attack reports of eval.py (lpd_jax.suites): suites 'paper',
'sweep' and 'transfer' on the session's tiny trained ensemble (digits, K = 3, width 4).

The suites run once (module fixture) on the first N = 40 test images in batches of 16,
so the last batch holds 8 images and 8 rows of padding; C&W is cut to 20 steps and 2
binary-search steps. Every other setting is the production default (the paper's grid).
"""

import contextlib
import io
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import lpd_jax
from lpd_jax import data, evaluate, predict, progress
from lpd_jax.attacks import cw, fgsm, gradient, pgd, saliency_map, transfer_accuracy
from lpd_jax.config import ConfigError, base_config
from lpd_jax.suites import common, paper

# The module fixture runs the suites once: keep its tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('attack_report')

N, BATCH = 40, 16
PAPER_ROWS = [
  ('none', None),
  ('fgsm', 0.02),
  ('fgsm', 0.04),
  ('bim', 0.02),
  ('bim', 0.04),
  ('pgd', 0.02),
  ('pgd', 0.04),
  ('jsma', 0.05),
  ('jsma', 0.1),
  ('cw', 0.1),
]


# The robust suite cut short: every attack, one eps, few steps and queries.
ROBUST = dict(
  attacks='apgd-ce,apgd-t,square,pgd-margin,pgd-member-margin',
  eps=(0.04,),
  apgd_ce=dict(steps=3),
  apgd_t=dict(steps=3, num_targets=2),
  square=dict(queries=20),
  pgd_margin=dict(steps=3),
  pgd_member_margin=dict(steps=3),
)


# steps = strong_steps and one restart: the audit's PGD runs share compiles with robust's.
AUDIT = dict(num_examples=16, steps=3, strong_steps=3, restarts=1, square_queries=20)


def eval_config(suite, paper=None, **groups):
  # vmap: a third of unroll's compile time on CPU (one member traced, not three).
  paper = dict(cw=dict(steps=20, binary_search_steps=2), **(paper or {}))
  return tiny_config(
    member_strategy='vmap',
    eval=dict(suite=suite, num_examples=N, batch_size=BATCH, paper=paper, **groups),
  )


@pytest.fixture(scope='module')
def reports(module_copy):
  """Runs paper, sweep and transfer (surrogate = the target itself) through eval.py's driver.

  Returns (config, {suite: result}, {jitted attack core: compiles it added}, what the
  robust and audit suites printed).
  """
  cores = {
    'pgd': gradient._pgd,
    'cw': cw._cw_l2,
    'jsma': saliency_map._jsma,
    'correct': predict._correct,
  }
  before = {name: f._cache_size() for name, f in cores.items()}
  config = eval_config(
    'paper,sweep,transfer',
    transfer=dict(workdir=module_copy),
    robust=ROBUST,
    audit=dict(AUDIT, surrogate=module_copy),
  )
  results = evaluate.evaluate(config, module_copy)
  compiles = {name: f._cache_size() - before[name] for name, f in cores.items()}
  # The strong-attack suites, after the compile count; the robust suite twice: in its cascade
  # (the default) and every attack on every point.
  config.eval.robust_all = config.eval.robust.copy_and_resolve_references()
  config.eval.robust_all.update(dict(type='robust', cascade=False))
  config.eval.suite = 'robust,robust_all,audit'
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    results.update(evaluate.evaluate(config, module_copy))
  return config, results, compiles, printed.getvalue()


@pytest.fixture(scope='module')
def direct(reports, module_copy):
  """The ensemble and the suite's inputs: the first N test images, as float32.

  Loaded with the suite's config, so the Ensemble pytree (its static config included)
  matches the suite's and the compiled attacks are reused.
  """
  ens = lpd_jax.load(module_copy, reports[0])
  ds = data.load_dataset(tiny_config())
  return ens, data.to_float(ds.test_images[:N]), ds.test_labels[:N]


@jax.jit
def _predict(ens, x):
  return jnp.argmax(ens.log_predict(x), -1)


def batched(fn, x, y):
  """fn(x_batch, y_batch, start) over batches of BATCH, zero-padded as eval_batches pads."""
  out = []
  for start in range(0, len(y), BATCH):
    xb, yb = x[start : start + BATCH], y[start : start + BATCH]
    n = len(yb)
    xb = np.concatenate([xb, np.zeros((BATCH - n, *xb.shape[1:]), xb.dtype)])
    yb = np.concatenate([yb, np.zeros(BATCH - n, yb.dtype)])
    out.append(np.asarray(fn(xb, yb, start))[:n])
  return np.concatenate(out)


def rows_by_key(result):
  return {(r['attack'], r['param']): r for r in result['rows']}


def test_paper_suite_writes_table_4(reports, module_copy):
  _, results, _, _ = reports
  paper = results['paper']
  assert [(r['attack'], r['param']) for r in paper['rows']] == PAPER_ROWS
  assert paper['num_examples'] == N and paper['batch_size'] == BATCH
  with open(os.path.join(module_copy, 'eval_paper.json')) as f:
    assert json.load(f) == json.loads(json.dumps(paper))
  with open(os.path.join(module_copy, 'eval_paper.md')) as f:
    table = f.read()
  for line in [
    '| Attacks | Para. | Accuracy (%) | Accuracy on clean-correct (%) | median L2 |',
    '| No Attack | - |',
    '| FGSM | 0.02 |',
    '| BIM | 0.02 |',
    '| PGD | 0.02 |',
    '| JSMA | 0.05 |',
    '|  | 0.10 |',
    '| C&W | 0.10 |',
  ]:
    assert line in table
  assert table.count('|  | 0.04 |') == 3  # second rows of FGSM, BIM, PGD
  for r in paper['rows']:
    assert 0 <= r['accuracy'] <= 1 and 0 <= r['accuracy_clean_correct'] <= 1
  clean = paper['rows'][0]
  assert clean['accuracy'] > 0.7 and clean['accuracy_clean_correct'] == 1.0
  assert paper['num_clean_correct'] == round(clean['accuracy'] * N)
  per_sample = np.load(os.path.join(module_copy, 'paper_per_sample.npz'))
  assert per_sample['pgd_0.04'].shape == (N,)


def test_paper_numbers_equal_direct_attacks(reports, direct):
  """FGSM 0.04 called per batch and PGD 0.04 through transfer_accuracy (which pads with
  the last sample instead of zeros) give exactly the suite's accuracies."""
  config, results, _, _ = reports
  rows = rows_by_key(results['paper'])
  ens, x, y = direct
  clean = batched(lambda xb, yb, _: _predict(ens, xb) == yb, x, y)
  assert clean.mean() == rows[('none', None)]['accuracy']

  fgsm_correct = batched(
    lambda xb, yb, _: _predict(ens, fgsm(ens.log_predict, xb, yb, eps=0.04)) == yb, x, y
  )
  assert fgsm_correct.mean() == rows[('fgsm', 0.04)]['accuracy']
  assert fgsm_correct[clean].mean() == rows[('fgsm', 0.04)]['accuracy_clean_correct']

  key = common.attack_key(config.seed, 'pgd')
  out = transfer_accuracy(
    ens.log_predict, ens.log_predict, pgd, x, y, key=key, batch_size=BATCH, eps=0.04
  )
  pgd_correct = batched(lambda xb, yb, _: _predict(ens, xb) == yb, out['x_adv'], y)
  assert out['accuracy'] == pgd_correct.mean() == rows[('pgd', 0.04)]['accuracy']
  assert pgd_correct[clean].mean() == rows[('pgd', 0.04)]['accuracy_clean_correct']
  assert np.abs(out['x_adv'] - x).max() <= 0.04 + 1e-6


def test_pgd_stronger_at_larger_eps(reports):
  rows = rows_by_key(reports[1]['paper'])
  for field in ('accuracy', 'accuracy_clean_correct'):
    assert rows[('pgd', 0.04)][field] <= rows[('pgd', 0.02)][field]
    assert rows[('pgd', 0.02)][field] < rows[('none', None)][field]


def test_attacks_compile_once_per_setting(reports):
  """3 batches of one shape: one compile per static setting, never one per batch.

  _pgd: FGSM, BIM, PGD L-inf (both eps and the transfer suite's surrogate, which has
  the same architecture), PGD L2; _jsma: one per gamma (static feature budget). Fewer
  when an earlier test compiled the same setting.
  """
  compiles = reports[2]
  assert compiles['pgd'] <= 4 and compiles['cw'] <= 1 and compiles['jsma'] <= 2
  assert compiles['correct'] <= 1


def test_sweep_writes_plot_and_decreases(reports, module_copy):
  """Accuracy is non-increasing in eps up to one sample (1 / N): random starts differ in
  scale only (one key for all eps), but PGD-10 is not guaranteed monotone; it reaches 0
  at L-inf eps 0.64 and repeats the paper suite's PGD rows at eps 0.02 and 0.04."""
  _, results, _, _ = reports
  sweep = results['sweep']['sweep']
  with open(os.path.join(module_copy, 'eval_sweep.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert os.path.isfile(os.path.join(module_copy, 'eval_sweep.json'))
  defaults = base_config().eval
  for norm, grid in (('linf', defaults.sweep.linf_eps), ('l2', defaults.sweep.l2_eps)):
    assert [r['eps'] for r in sweep[norm]] == list(grid)
    acc = [results['sweep']['clean_accuracy']] + [r['accuracy'] for r in sweep[norm]]
    assert all(b <= a + 1 / N for a, b in zip(acc, acc[1:])), (norm, acc)
  assert sweep['linf'][-1]['accuracy'] == 0.0
  paper = rows_by_key(results['paper'])
  linf = {r['eps']: r['accuracy'] for r in sweep['linf']}
  assert linf[0.02] == paper[('pgd', 0.02)]['accuracy']
  assert linf[0.04] == paper[('pgd', 0.04)]['accuracy']


def test_transfer_from_itself_is_white_box(reports):
  """Table 5's attacks (PGD and JSMA) made on the target itself with the true labels and the
  paper suite's keys are the white-box attacks: the same numbers. It is Type II (same
  defence)."""
  _, results, _, _ = reports
  transfer, paper = results['transfer'], rows_by_key(results['paper'])
  assert [(r['attack'], r['param']) for r in transfer['rows']] == [
    ('pgd', 0.02),
    ('pgd', 0.04),
    ('jsma', 0.05),
    ('jsma', 0.1),
  ]
  (surrogate,) = transfer['surrogates']
  assert surrogate['type'] == 'Type II' and transfer['labels'] == 'true'
  assert transfer['clean_accuracy'] == surrogate['clean_accuracy']
  assert transfer['clean_accuracy'] == paper[('none', None)]['accuracy']
  for r in transfer['rows']:
    white_box = paper[(r['attack'], r['param'])]
    assert r['accuracy'] == r['surrogate_accuracy'] == white_box['accuracy']
    assert r['accuracy_clean_correct'] == white_box['accuracy_clean_correct']


def test_transfer_with_the_surrogates_labels_and_two_surrogates(reports, module_copy):
  """Labels from the surrogate's predictions equal the true ones on the clean-correct
  samples, so there the examples, and the accuracy, are the white-box ones."""
  config, results, _, _ = reports
  config = eval_config(
    'transfer',
    transfer=dict(workdir=f'{module_copy},{module_copy}', attacks='pgd', labels='surrogate'),
  )
  transfer = evaluate.evaluate(config, module_copy)['transfer']
  assert transfer['labels'] == 'surrogate' and len(transfer['surrogates']) == 2
  paper = rows_by_key(results['paper'])
  for r in transfer['rows']:
    white_box = paper[(r['attack'], r['param'])]
    assert r['accuracy_clean_correct'] == white_box['accuracy_clean_correct']
  first = [r['accuracy'] for r in transfer['rows'] if r['surrogate'] == 0]
  assert first == [r['accuracy'] for r in transfer['rows'] if r['surrogate'] == 1]
  with pytest.raises(ConfigError, match='eval.transfer.labels'):
    config.eval.transfer.labels = 'guess'
    evaluate.evaluate(config, module_copy)


def test_transfer_needs_a_surrogate_of_the_same_data(module_copy, tmp_path):
  with pytest.raises(ConfigError, match='transfer.workdir'):
    evaluate.evaluate(eval_config('transfer'), module_copy)
  with pytest.raises(ConfigError, match='no checkpoint'):
    evaluate.evaluate(
      eval_config('transfer', transfer=dict(workdir=str(tmp_path / 'none'))), module_copy
    )
  other = tmp_path / 'other'
  shutil.copytree(module_copy, other)
  with open(other / 'ensemble.json') as f:
    meta = json.load(f)
  meta['config']['dataset'], meta['input_shape'] = 'npz', [8, 8, 3]
  with open(other / 'ensemble.json', 'w') as f:
    json.dump(meta, f)
  with pytest.raises(ConfigError, match='another dataset'):
    evaluate.evaluate(eval_config('transfer', transfer=dict(workdir=str(other))), module_copy)


def test_config_grid_and_errors(module_copy):
  import sys

  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import lpd_tinyimagenet

  config = base_config()
  pgd_rows = paper.attack_grid(config.eval.paper, ('pgd',), 'cifar10')
  assert [r['param'] for r in pgd_rows] == [0.02, 0.04]  # the CIFAR grid: PGD's own
  tiny = lpd_tinyimagenet.get_config()
  tiny_rows = paper.attack_grid(tiny.eval.paper, ('fgsm', 'bim', 'pgd'), tiny.dataset)
  assert [(r['attack'], r['param']) for r in tiny_rows] == [
    ('fgsm', 0.02),
    ('fgsm', 0.04),
    ('bim', 0.01),  # the paper's Tiny-ImageNet grid of BIM and PGD: theirs for the dataset
    ('bim', 0.02),
    ('pgd', 0.01),
    ('pgd', 0.02),
  ]
  config.eval.paper.bim.eps = (0.03,)
  assert [r['params'] for r in paper.attack_grid(config.eval.paper, ('bim', 'cw'), 'digits')] == [
    dict(eps=0.03, steps=10),
    dict(
      c=0.1,
      confidence=0.01,
      steps=1000,
      binary_search_steps=5,
      learning_rate=0.01,
      margin='probability',  # the authors' cw.py: the paper suite's default
    ),
  ]
  jsma_rows = paper.attack_grid(config.eval.paper, ('jsma',), 'digits')
  assert {r['params']['variant'] for r in jsma_rows} == {'art'}  # ART 1.1, as the paper ran it
  with pytest.raises(ConfigError, match='eval.paper.attacks'):
    evaluate.evaluate(eval_config('paper', paper=dict(attacks='fgsm,deepfool')), module_copy)
  with pytest.raises(ConfigError, match='eval.sweep.norms'):
    evaluate.evaluate(eval_config('sweep', sweep=dict(norms='l1')), module_copy)


def test_paper_cw_row_reports_the_median_distortion_of_its_successes(reports, direct):
  rows = rows_by_key(reports[1]['paper'])
  cw_row = rows[('cw', 0.1)]
  ens, x, y = direct
  per_sample = np.load(os.path.join(ens.meta['workdir'], 'paper_per_sample.npz'))
  successful = per_sample['none'] & ~per_sample['cw_0.1']
  assert cw_row['num_successful'] == int(successful.sum())
  if successful.any():
    assert cw_row['median_l2_successful'] > 0
  else:
    assert cw_row['median_l2_successful'] is None
  assert rows[('fgsm', 0.04)]['median_l2_successful'] <= 0.04 * np.sqrt(x[0].size) + 1e-5


def test_robust_suite_is_the_per_sample_worst_case_and_its_cascade_the_same(
  reports, direct, module_copy
):
  config, results, _, _ = reports
  robust, every = results['robust'], results['robust_all']
  assert robust['cascade'] and not every['cascade'] and robust['preset'] == 'default'
  assert robust['attacks'] == ROBUST['attacks'].split(',') and robust['eps'] == [0.04]
  assert robust['threat_model'] == 'Linf' and robust['num_examples'] == N
  assert robust['inference'] == 'raw'
  # Every attack on every point: the worst case is the clean-correct points no attack broke.
  per_sample = np.load(os.path.join(module_copy, 'robust_all_per_sample.npz'))
  worst = per_sample['clean'].copy()
  left = []  # points still robust before each attack
  for name in every['attacks']:
    left.append(int(worst.sum()))
    worst &= per_sample[f'{name}_0.04']
  np.testing.assert_array_equal(per_sample['worst_0.04'], worst)
  accuracy = every['robust_accuracy']['0.04']
  assert accuracy == worst.mean()
  assert accuracy <= min(r['accuracy'] for r in every['rows'])
  # The cascade: each attack only on the points still robust, the same worst case per
  # sample, the same attack breaking each point, a fraction of the points attacked.
  cascade = np.load(os.path.join(module_copy, 'robust_per_sample.npz'))
  np.testing.assert_array_equal(cascade['worst_0.04'], worst)
  np.testing.assert_array_equal(cascade['broken_by_0.04'], per_sample['broken_by_0.04'])
  assert robust['robust_accuracy'] == every['robust_accuracy']
  assert [r['attacked'] for r in robust['rows']] == left
  assert [r['attacked'] for r in every['rows']] == [N] * len(left)
  assert sum(left) < N * len(left)
  # One row repeated by hand: margin PGD with the suite's key, batches and padding.
  ens, x, y = direct
  (direct_correct,) = predict.attack_correct(
    pgd,
    dict(eps=0.04, steps=3, restarts=1, loss='margin'),
    ens.log_predict,
    x,
    y,
    key=common.attack_key(config.seed, 'robust:pgd-margin'),
    batch_size=BATCH,
  )
  np.testing.assert_array_equal(direct_correct, per_sample['pgd-margin_0.04'])
  with open(os.path.join(module_copy, 'eval_robust.md')) as f:
    table = f.read()
  assert '| L-inf eps | apgd-ce | apgd-t | square | pgd-margin | pgd-member-margin |' in table
  assert 'in a cascade' in table


def test_audit_suite_runs_every_check_on_the_ensemble(reports, module_copy):
  result = reports[1]['audit']
  assert set(result['checks']) == {
    'iterative_beats_single_step',
    'white_box_beats_transfer',
    'large_eps_reaches_zero',
    'monotone_in_eps',
    'gradient_free_not_better',
    'more_steps_do_not_help_much',
    'margin_not_much_better_than_ce',
    'gradients_are_not_zero',
    'raw_vs_expected',
  }
  # Every check ran: a surrogate was given, and LPD has an 'expected' inference. Each
  # verdict with its n and what it rests on (16 points: a check fails from 3 past its line).
  verdicts = ('passed', 'FAILED', 'too few points to tell')
  assert all(c['verdict'] in verdicts and c['n'] == 16 for c in result['checks'].values())
  assert all(c['fails_from'] == 3 for c in result['checks'].values())
  assert result['eps'] == 0.04 and result['num_examples'] == 16  # the paper grid's largest
  assert 'pgd-member-margin' in result['accuracies']
  assert result['worst_case_accuracy'] <= min(result['accuracies'].values())
  with open(os.path.join(module_copy, 'eval_audit.md')) as f:
    table = f.read()
  header = '| check | verdict | n | points past its line | fails from (points) | numbers |'
  assert header in table and result['verdict'] in table and result['rule'] in table
  assert 'On 16 points a check fails from 3 points past (18.75%)' in result['rule']
  # Without a terminal (the tests' capture), a line per attack as it starts.
  stages = [line.split(' (started')[0] for line in reports[3].splitlines() if 'audit: ' in line]
  first = ('fgsm', 'pgd-ce', 'pgd-margin', 'pgd-margin-strong', 'square', 'pgd-member-margin')
  assert stages == [
    *[f'audit: {a} 0.04' for a in first],
    'audit: transfer 0.04',
    'audit: pgd-margin-strong 0.5',
    *[f'audit: pgd-margin {e:g} (eps curve)' for e in (0.01, 0.02, 0.04, 0.08, 0.16)],
    'audit: zero gradients',
    'audit: expected pgd-margin 0.04',
  ]


def test_without_a_terminal_each_attack_prints_a_line_as_it_starts(
  reports, trained_copy, capsys, monkeypatch
):
  """Where no bar can be drawn (a log, a pipe: the tests' capture), the paper suite prints
  one line per attack and eps as it starts, and the robust suite one per attack and eps, and
  inside each attack its steps with an ETA (every INTERVAL_S: here at every chunk)."""
  config = eval_config('paper,robust', paper=dict(attacks='fgsm,pgd'), robust=ROBUST)
  monkeypatch.setattr(progress, 'INTERVAL_S', 0.0)
  capsys.readouterr()
  evaluate.evaluate(config, trained_copy)
  out = capsys.readouterr().out.splitlines()
  paper_lines = [line for line in out if line.startswith('paper attacks: ')]
  assert [line.split(' (started')[0] for line in paper_lines] == [
    'paper attacks: clean',
    'paper attacks: FGSM 0.02',
    'paper attacks: FGSM 0.04',
    'paper attacks: PGD 0.02',
    'paper attacks: PGD 0.04',
  ]
  assert all(re.search(r'\(started after [\d.]+ s\)$', line) for line in paper_lines)
  robust_lines = [line for line in out if line.startswith('robust: ')]
  attacks = ROBUST['attacks'].split(',')
  assert [line.split(' (started')[0] for line in robust_lines] == [
    f'robust: {a} 0.04' for a in attacks
  ]
  beats = [
    re.match(r'robust \| ([\w-]+): \d+/\d+ (steps|queries), \d+ s, ETA', line) for line in out
  ]
  labels = {lpd_jax.attacks.REGISTRY[a].label for a in attacks}
  assert {m.group(1) for m in beats if m} == labels  # PGD-margin, APGD-T, Square, ...


def test_robust_presets_are_autoattacks_versions_with_their_budgets():
  """The presets' attacks, order and budgets (fra31/auto-attack, autoattack.py), and the
  settings of eval.robust.<attack> that differ from the attack's defaults overriding them."""
  from lpd_jax.suites import robust as robust_suite

  config = tiny_config()
  config.eval.robust.preset = 'standard'
  steps, overridden = robust_suite.plan(config, config.eval.robust)
  assert [name for name, _ in steps] == ['apgd-ce', 'apgd-t', 'fab-t', 'square']
  params = dict(steps)
  assert params['apgd-ce']['steps'] == 100 and params['apgd-t']['num_targets'] == 9
  assert params['fab-t'] == dict(steps=100, num_targets=9, restarts=1)
  square = dict(queries=5000, schedule='absolute', draw='autoattack')  # AutoAttack's windows
  assert params['square'] == square and overridden == {}
  config.eval.robust.square.queries = 20  # a short test run: said in the report
  steps, overridden = robust_suite.plan(config, config.eval.robust)
  assert dict(steps)['square'] == dict(square, queries=20)
  assert overridden == {'square': {'queries': 20}}
  config.eval.robust.preset = 'rand'
  steps, _ = robust_suite.plan(config, config.eval.robust)
  assert [(n, p['loss']) for n, p in steps] == [('apgd-ce', 'ce'), ('apgd-dlr', 'dlr')]
  config.eval.robust.preset = 'strongest'
  with pytest.raises(ConfigError, match='preset'):
    robust_suite.plan(config, config.eval.robust)


def test_the_rand_preset_names_the_sampled_ensemble_it_attacked(trained_workdir):
  """The 'rand' report's JSON and header say what was attacked: the sampled ensemble (the
  method's dropout masks, or none), the EOT draws, judged on one further draw."""
  import types

  from lpd_jax.suites import robust as robust_suite
  from lpd_jax.suites.robust_report import how, robust_table

  config = tiny_config()
  config.eval.robust.preset = 'rand'
  config.eval.robust.eot_draws = 7
  ctx = types.SimpleNamespace(config=config, cfg=config.eval.robust)
  ens = lpd_jax.load(trained_workdir)
  sampled = robust_suite.sampled_ensemble(ens, ctx)
  assert sampled['eot_draws'] == 7 and sampled['model'] == 'Ensemble.sampled_log_predict'
  assert sampled['summary'] == "LPD's dropout masks on at test time"
  assert 'Bernoulli(p(h))' in sampled['masks'] and 'one further draw' in sampled['judged_on']
  no_masks = robust_suite.sampled_ensemble(types.SimpleNamespace(keep_rates=None), ctx)
  assert 'every draw is the deterministic ensemble' in no_masks['summary']
  config.eval.robust.preset = 'default'
  assert robust_suite.sampled_ensemble(ens, ctx) is None
  rows = [
    dict(attack=a, eps=0.04, params=dict(steps=2), attacked=4, broken=1, accuracy_after=0.5)
    for a in ('apgd-ce', 'apgd-dlr')
  ]
  result = dict(
    eps=[0.04],
    preset='rand',
    cascade=True,
    attacks=['apgd-ce', 'apgd-dlr'],
    overridden={},
    eot_draws=7,
    sampled_ensemble=sampled,
    clean_accuracy=0.75,
    robust_accuracy={'0.04': 0.5},
    rows=rows,
  )
  header = robust_table(result, '8 test images').split('| L-inf eps')[0]
  assert "Attacked: the sampled ensemble (Ensemble.sampled_log_predict), LPD's dropout" in header
  assert (
    'the log of the mean softmax over 7 fixed draws' in header and 'Inference mode not' in header
  )
  assert how(result).startswith(
    "AutoAttack's rand version on the sampled ensemble (LPD's dropout masks on at test time; "
    'EOT over 7 draws, judged on one further draw): apgd-ce'
  )
