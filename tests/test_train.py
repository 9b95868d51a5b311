"""End to end: train, resume, evaluate, and the one-line errors of the two commands."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import run_cli, tiny_config

from lpd_jax import checkpoint, data, evaluate, load, predict, train
from lpd_jax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_training_writes_metrics_and_learns(trained_workdir):
  with open(os.path.join(trained_workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['epoch'] for r in records] == [1, 2, 3]
  assert records[-1]['train_loss'] < records[0]['train_loss']
  assert len(records[-1]['test_member_accuracy']) == 3
  assert records[-1]['test_ensemble_accuracy'] >= 0.8
  assert all(r['images_per_second'] > 0 for r in records)


def test_load_restores_the_ensemble_that_reaches_the_logged_accuracy(trained_workdir):
  ens = load(trained_workdir)
  assert ens.num_members == 3 and ens.config.width == 4
  ds = data.load_dataset(ens.config)
  r = predict.clean_accuracy(ens, ds.test_images, ds.test_labels, batch_size=100)
  with open(os.path.join(trained_workdir, 'metrics.jsonl')) as f:
    last = json.loads(f.readlines()[-1])
  assert r['ensemble_accuracy'] == pytest.approx(last['test_ensemble_accuracy'])
  np.testing.assert_allclose(r['member_accuracy'], last['test_member_accuracy'], atol=1e-4)
  # Ensemble prediction is the argmax of the mean softmax, not a majority vote.
  probs = np.concatenate(
    [
      np.asarray(ens.predict(x))[:n]
      for _, x, _, n in predict.padded_batches(ds.test_images, ds.test_labels, 100)
    ]
  )
  assert r['ensemble_accuracy'] == pytest.approx((probs.argmax(-1) == ds.test_labels).mean())


def test_evaluation_compiles_once_for_all_batches_including_the_padded_last(trained_workdir):
  ens = load(trained_workdir)
  ds = data.load_dataset(ens.config)
  predict._member_logits.clear_cache()
  predict.clean_accuracy(ens, ds.test_images[:70], ds.test_labels[:70], batch_size=32)
  assert predict._member_logits._cache_size() == 1  # 3 batches, the last one padded


def test_evaluate_writes_the_clean_table_and_json(trained_copy, capsys):
  results = evaluate.evaluate(tiny_config(), trained_copy)
  printed = capsys.readouterr().out
  assert '| ensemble |' in printed and '| member 3 |' in printed and 'eq. 7' in printed
  with open(os.path.join(trained_copy, 'eval_clean.json')) as f:
    saved = json.load(f)
  assert saved == results['clean'] and saved['num_examples'] == 359
  assert 0 <= saved['ambiguity_entropy'] <= 1


def test_resuming_after_a_kill_ends_with_the_same_parameters(trained_workdir, trained_copy):
  """A run killed after epoch 2 leaves checkpoint 2 as its latest: resume and compare."""
  workdir = trained_copy
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '3'))
  assert checkpoint.manager(workdir).latest_step() == 2
  resumed = train.train_and_evaluate(tiny_config(), workdir)
  uninterrupted = load(trained_workdir)
  for a, b in zip(jax.tree.leaves(resumed.variables), jax.tree.leaves(uninterrupted.variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_finished_run_is_not_trained_again(trained_workdir, capsys):
  before = os.path.getmtime(os.path.join(trained_workdir, 'metrics.jsonl'))
  train.train_and_evaluate(tiny_config(), trained_workdir)
  assert 'already holds the checkpoint of epoch 3' in capsys.readouterr().out
  assert os.path.getmtime(os.path.join(trained_workdir, 'metrics.jsonl')) == before


def test_nan_loss_stops_training_with_a_clear_error(tmp_path, monkeypatch):
  """A diverging run stops with the step and the fact that no checkpoint was saved. (NaN
  images are refused by the data check, and a huge learning rate would compile another
  step: the fixture's config from parameters that are already NaN.)"""
  config = tiny_config()
  init_state = train.init_state

  def diverged(*args):
    state = init_state(*args)
    return state.replace(variables=jax.tree.map(lambda a: a * np.nan, state.variables))

  monkeypatch.setattr(train, 'init_state', diverged)
  with pytest.raises(
    train.TrainingError,
    match=r'loss is (nan|inf) at step .*no checkpoint was '
    'saved',
  ) as err:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'epoch 0' not in str(err.value)
  assert checkpoint.manager(str(tmp_path / 'run')).latest_step() is None


@pytest.mark.parametrize(
  'override, message',
  [
    (dict(method='dropconnect'), "unknown method 'dropconnect'"),
    (dict(dataset='mnist'), "unknown dataset 'mnist'"),
    (dict(num_members=0), 'num_members .K. must be an integer >= 1'),
    (dict(num_members=1100), r'lpd.num_bins \(1024\) must be >= num_members \(1100\)'),
    (dict(dataset='npz'), "dataset='npz' needs --config.npz_path"),
  ],
)
def test_bad_configs_are_rejected_before_any_work(override, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(tiny_config(**override))


def test_a_workdir_of_another_ensemble_is_refused(trained_workdir):
  with pytest.raises(checkpoint.CheckpointError, match='num_members: workdir has 3, config says 5'):
    train.train_and_evaluate(tiny_config(num_members=5), trained_workdir)
  with pytest.raises(checkpoint.CheckpointError, match='width: workdir has 4, config says 8'):
    load(trained_workdir, tiny_config(width=8))


def test_load_of_an_empty_workdir_says_train_first(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match='no checkpoint in workdir'):
    load(str(tmp_path))


@pytest.mark.parametrize(
  'args, message',
  [
    (['--config.method=dropconnect'], "error: unknown method 'dropconnect'"),
    (
      ['--config.dataset=cifar10', '--config.data_dir=/nonexistent'],
      "error: dataset 'cifar10' is not in data_dir /nonexistent (no cifar10/manifest.json); "
      'fetch it first: python -m lpd_jax.datasets fetch cifar10 --data_dir=/nonexistent',
    ),
    (['--config.num_members=0'], 'error: num_members (K) must be an integer >= 1, got 0'),
    (['--config.num_memberz=3'], 'Did you mean "num_members" instead of "num_memberz"?'),
  ],
)
def test_train_command_prints_one_error_line_and_no_traceback(tmp_path, args, message):
  workdir = tmp_path / 'new_workdir'
  result = run_cli('train.py', '--config=configs/quickstart.py', f'--workdir={workdir}', *args)
  assert result.returncode == 1
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert not workdir.exists()  # a run that failed before its first step leaves nothing behind


@pytest.mark.parametrize(
  'config, message',
  [
    ('configs/quickstrat.py', 'error: --config=configs/quickstrat.py: no config file'),
    (
      'configs/digits.py:lpdd',
      "error: --config=configs/digits.py:lpdd: ValueError: unknown config variant 'lpdd'",
    ),
  ],
  ids=['missing_file', 'variant_typo'],
)
def test_a_config_file_that_cannot_be_read_is_one_error_line(tmp_path, config, message):
  result = run_cli('train.py', f'--config={config}', f'--workdir={tmp_path}')
  assert result.returncode == 1 and result.stderr.startswith(message), result.stderr
  assert result.stderr.strip().count('\n') == 0


def test_eval_command_refuses_a_mismatched_checkpoint(trained_workdir):
  result = run_cli('eval.py', '--config=configs/quickstart.py', f'--workdir={trained_workdir}')
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  expected = 'holds a checkpoint of another ensemble (width: workdir has 4, config says 8)'
  assert expected in result.stderr


def test_eval_command_without_config_uses_the_workdirs_own(trained_copy):
  result = run_cli('eval.py', f'--workdir={trained_copy}')
  assert result.returncode == 0, result.stderr
  assert '| ensemble |' in result.stdout


def test_reports_of_a_workdir_that_must_not_change_go_to_another_folder(trained_workdir, tmp_path):
  """eval.reports_dir: the reports (and a copy of ensemble.json and metrics.jsonl) go there,
  the workdir is read and left as it was, and compare reads the folder as a workdir."""
  from conftest import snapshot

  from lpd_jax import compare

  reports = str(tmp_path / 'reports')
  before = snapshot(trained_workdir)
  config = tiny_config(eval=dict(suite='clean', num_examples=32, reports_dir=reports))
  result = evaluate.evaluate(config, trained_workdir)['clean']
  assert snapshot(trained_workdir) == before
  with open(os.path.join(reports, 'eval_clean.json')) as f:
    assert json.load(f) == result and result['test_examples'] == 32
  assert sorted(os.listdir(reports)) == [
    'clean_per_sample.npz',  # the suite's per-sample outcomes (compare pairs them)
    'ensemble.json',
    'eval_clean.json',
    'eval_clean.md',
    'metrics.jsonl',
  ]
  table, _, _ = compare.compare([reports])
  (row,) = [
    r
    for t in table['tables']
    if t['name'] == 'clean'
    for r in t['rows']
    if r['label'] == 'ensemble'
  ]
  assert row['cells'][0]['values'] == [result['ensemble_accuracy']]
