"""Evaluation records that cannot mislead (issue 38): each report says which checkpoint it
evaluated, a report is never replaced unseen, and compare averages only true seeds."""

import json
import os
import shutil

import pytest
from conftest import run_module, tiny_config
from test_faults import flip_bytes

from lpd_jax import checkpoint, compare, evaluate, loading, locks
from lpd_jax import workdir as workdir_lib

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden', 'digits_study')


def _evaluate(workdir, capsys=None, **eval_changes):
  config = loading.read_config(workdir).config
  config.eval.update(dict(dict(suite='clean', num_examples=-1), **eval_changes))
  results = evaluate.evaluate(config, workdir)
  out = capsys.readouterr().out if capsys else ''
  return results, out


def _report(workdir, name='clean'):
  with open(workdir_lib.report_path(workdir, name)) as f:
    return json.load(f)


def test_a_report_names_its_checkpoint_after_a_fallback_and_compare_marks_it(
  trained_copy, trained_workdir, tmp_path, capsys
):
  flip_bytes(trained_copy, 3)
  _, out = _evaluate(trained_copy, capsys, num_examples=64)
  assert 'note: evaluating the checkpoint of epoch 2, not the newest (epoch 3' in out
  recorded = _report(trained_copy)['checkpoint']
  assert recorded['epoch'] == 2 and recorded['newest_epoch'] == 3
  steps = {m['epoch']: m['step'] for m in workdir_lib.read_metrics(trained_workdir)}
  assert recorded['step'] == steps[2]
  # The digest names the weights: the same checkpoint read elsewhere has it, another not.
  mgr = checkpoint.manager(trained_workdir)
  for epoch, same in ((2, True), (3, False)):
    variables = loading.load(trained_workdir, epoch=epoch).variables
    assert (checkpoint.identity(mgr, epoch, variables)['digest'] == recorded['digest']) == same
  result, markdown, _ = compare.compare([trained_copy])
  assert 'trained 3 epochs, reports at epoch 2' in markdown
  clean = next(t for t in result['tables'] if t['name'] == 'clean')
  assert '[epoch 2 of 3]' in clean['markdown'] and 'rerun eval.py' in clean['markdown']


def test_an_evaluation_beside_training_says_so_first(trained_copy, capsys):
  lock = workdir_lib.path(trained_copy, workdir_lib.LOCK_FILE)
  with locks.exclusive(lock, busy=RuntimeError):  # as a running trainer holds it
    assert workdir_lib.training_holder(trained_copy).startswith(f'pid {os.getpid()} on ')
    _, out = _evaluate(trained_copy, capsys, num_examples=32)
  note = f'note: {trained_copy} is being trained right now (pid {os.getpid()}'
  assert note in out and 'this evaluates epoch 3 of 3' in out
  assert out.index(note) < out.index('| ensemble |')  # before the report
  assert workdir_lib.training_holder(trained_copy) is None


def test_a_report_on_fewer_points_keeps_the_earlier_one_and_says_what_replaced_what(
  trained_copy, capsys
):
  _evaluate(trained_copy, capsys)  # all 360 test images
  full = _report(trained_copy)
  _, out = _evaluate(trained_copy, capsys)  # the same evaluation again: replaced silently
  assert 'moved to' not in out and not os.path.exists(
    workdir_lib.path(trained_copy, workdir_lib.HISTORY_DIR)
  )
  _, out = _evaluate(trained_copy, capsys, num_examples=32)
  kept = f'reports_history/clean-{full["evaluation_key"]}-1'
  assert (
    f'eval_clean.json: the earlier report ({full["test_examples"]} test images, epoch 3, '
    f'settings {full["evaluation_key"]}) moved to {kept}; replaced by this one (32 test images'
  ) in out
  assert 'other test images\n' in out
  with open(os.path.join(trained_copy, kept, 'eval_clean.json')) as f:
    assert json.load(f) == full
  assert os.path.isfile(os.path.join(trained_copy, kept, 'eval_clean.md'))
  assert _report(trained_copy)['test_examples'] == 32  # compare reads the current one
  result, _, _ = compare.compare([trained_copy])
  clean = next(t for t in result['tables'] if t['name'] == 'clean')
  assert clean['rows'][0]['cells'][0]['n'] == 1
  _, out = _evaluate(trained_copy, capsys, num_examples=32, batch_size=64)
  assert 'other settings (batch_size)' in out
  history = workdir_lib.report_history(trained_copy)
  assert [h[1]['test_examples'] for h in history] == [full['test_examples'], 32]
  listed = run_module('lpd_jax.compare', f'--workdirs={trained_copy}', '--history')
  assert listed.returncode == 0, listed.stderr
  assert listed.stdout.splitlines()[:2] == [
    f'{trained_copy}: 2 earlier report(s) in reports_history/',
    f'  {kept}: clean on {full["test_examples"]} test images, epoch 3, settings '
    f'{full["evaluation_key"]}',
  ]


def _seed(workdir, seed):
  meta_path = workdir_lib.path(workdir, workdir_lib.META_FILE)
  with open(meta_path) as f:
    meta = json.load(f)
  meta['config']['seed'] = seed
  with open(meta_path, 'w') as f:
    json.dump(meta, f)


def test_copies_of_one_seed_are_never_averaged_as_seeds(trained_workdir, tmp_path, capsys):
  a, b = str(tmp_path / 'wd'), str(tmp_path / 'wd2')
  shutil.copytree(trained_workdir, a)
  _evaluate(a, capsys, num_examples=64)
  shutil.copytree(a, b)  # `cp -r wd wd2`
  result, markdown, _ = compare.compare([a, b])
  assert len(result['columns']) == 2 and '2 seeds' not in markdown
  assert 'Not averaged as seeds: wd2 and wd are both seed 0 (copies of one run' in markdown
  _seed(b, 1)  # a true second seed (here the same weights, which compare cannot know)
  result, markdown, _ = compare.compare([a, b])
  assert [c['seeds'] for c in result['columns']] == [[0, 1]] and 'Not averaged' not in markdown


@pytest.mark.parametrize('other', [dict(preset='standard'), dict(cascade=False)])
def test_seeds_evaluated_with_other_settings_share_no_cell(trained_workdir, tmp_path, other):
  """The robust suite run with the standard preset (or without the cascade) on one seed and
  the default on the other: two columns, never one averaged cell (reports from the golden
  digits study, their recorded settings as evaluate writes them)."""
  with open(os.path.join(GOLDEN, 'lpd', 'eval_robust.json')) as f:
    golden = json.load(f)
  config = tiny_config()
  runs = []
  for seed, changes in ((0, {}), (1, other)):
    workdir = str(tmp_path / f'seed{seed}')
    shutil.copytree(trained_workdir, workdir, ignore=shutil.ignore_patterns('eval_*'))
    _seed(workdir, seed)
    settings = dict(config.eval.robust.to_dict(), **changes)
    recorded = dict(type='robust', inference='raw', settings=settings, test_examples=64)
    report = dict(golden, settings=recorded, evaluation_key=str(sorted(changes.items())))
    report['checkpoint'] = dict(epoch=3, step=66, digest='0' * 16, newest_epoch=3)
    with open(workdir_lib.report_path(workdir, 'robust'), 'w') as f:
      json.dump(report, f)
    runs.append(workdir)
  result, markdown, _ = compare.compare(runs)
  assert [c['seeds'] for c in result['columns']] == [[0], [1]]
  assert 'seed1 and seed0 ran robust with other settings' in markdown
  robust = next(t for t in result['tables'] if 'robust' in t['name'])
  assert '±' not in robust['markdown']


def test_a_missing_manifest_says_how_to_recover_and_the_recovery_works(trained_copy, capsys):
  os.remove(os.path.join(trained_copy, 'checkpoints', '3.manifest.json'))
  assert loading.load(trained_copy).meta['epoch'] == 2
  warning = capsys.readouterr().err
  assert 'checkpoint of epoch 3 is damaged: its manifest is missing (' in warning
  assert 'set "manifests": false in ensemble.json' in warning
  meta_path = workdir_lib.path(trained_copy, workdir_lib.META_FILE)
  with open(meta_path) as f:
    meta = json.load(f)
  with open(meta_path, 'w') as f:
    json.dump(dict(meta, manifests=False), f)
  assert loading.load(trained_copy).meta['epoch'] == 3  # read unverified, as advised
  assert 'warning' not in capsys.readouterr().err
