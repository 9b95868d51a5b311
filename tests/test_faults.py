"""Faults a user meets, built on a tiny trained workdir: damaged checkpoints, failed writes,
bad data, eval overrides without --config, and SIGKILL at random moments.

Each either ends in exit 1 with one `error:` line, or (a damaged checkpoint with an older
good one beside it) in one `warning:` line and the result of that older checkpoint.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import TINY_CLI, cli_env, lines, run_cli, start_cli, tiny_config
from test_tensorboard import assert_events_equal_metrics

import lpd_jax
from lpd_jax import checkpoint, data, predict, train
from lpd_jax import config as config_lib
from lpd_jax import workdir as workdir_lib
from lpd_jax.errors import CheckpointError, ConfigError, DataError


def files_under(path):
  return sorted(
    os.path.relpath(os.path.join(root, f), path) for root, _, names in os.walk(path) for f in names
  )


def largest_array_file(workdir, epoch):
  pattern = os.path.join(
    workdir, 'checkpoints', str(epoch), 'variables', 'ocdbt.process_0', 'd', '*'
  )
  return max(glob.glob(pattern), key=os.path.getsize)


def flip_bytes(workdir, epoch):
  path = largest_array_file(workdir, epoch)
  raw = bytearray(open(path, 'rb').read())
  for i in range(len(raw) // 2, len(raw) // 2 + 8):
    raw[i] ^= 0xFF
  open(path, 'wb').write(bytes(raw))


def truncate_array(workdir, epoch):
  path = largest_array_file(workdir, epoch)
  raw = open(path, 'rb').read()
  open(path, 'wb').write(raw[: len(raw) // 2])


def delete_array(workdir, epoch):
  os.remove(largest_array_file(workdir, epoch))


def metadata_path(workdir, epoch):
  return os.path.join(workdir, 'checkpoints', str(epoch), 'variables', '_METADATA')


def garble_metadata(workdir, epoch):
  open(metadata_path(workdir, epoch), 'w').write('{garbled')


def flip_bytes_and_delete_manifest(workdir, epoch):
  flip_bytes(workdir, epoch)
  os.remove(os.path.join(workdir, 'checkpoints', f'{epoch}.manifest.json'))


FAULTS = {
  'flipped_bytes': flip_bytes,
  'flipped_bytes_no_manifest': flip_bytes_and_delete_manifest,
  'truncated_array': truncate_array,
  'deleted_array': delete_array,
  'garbled_metadata': garble_metadata,
}


def same_variables(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_load_falls_back_to_the_newest_good_checkpoint_in_one_line(trained_copy, fault, capsys):
  epoch_2 = lpd_jax.load(trained_copy, epoch=2)
  FAULTS[fault](trained_copy, 3)
  before = files_under(trained_copy)
  ens = lpd_jax.load(trained_copy)
  err = capsys.readouterr().err
  warnings = lines(err, 'warning:')
  assert len(warnings) == 1 and 'Traceback' not in err, err
  assert 'epoch 3' in warnings[0] and 'using the checkpoint of epoch 2' in warnings[0]
  assert ens.meta['epoch'] == 2 and same_variables(ens.variables, epoch_2.variables)
  assert files_under(trained_copy) == before  # nothing deleted or moved by an evaluation
  with pytest.raises(CheckpointError, match='checkpoint of epoch 3'):
    lpd_jax.load(trained_copy, epoch=3)  # an explicit epoch never falls back


def test_a_checkpoint_without_its_metadata_file_restores_verified(trained_copy, trained_workdir):
  # Restore targets carry their shapes, dtypes and shardings (so a checkpoint of a sharded
  # run restores on one device): orbax then needs no _METADATA, and the manifest's digests
  # still verify every array.
  os.remove(metadata_path(trained_copy, 3))
  ens = lpd_jax.load(trained_copy)
  assert ens.meta['epoch'] == 3
  assert same_variables(ens.variables, lpd_jax.load(trained_workdir).variables)


def test_eval_command_warns_once_and_reports_the_older_checkpoint(trained_copy):
  flip_bytes(trained_copy, 3)
  result = run_cli('eval.py', f'--workdir={trained_copy}', '--config.eval.num_examples=100')
  assert result.returncode == 0, result.stderr
  assert len(lines(result.stderr, 'warning:')) == 1 and 'Traceback' not in result.stderr
  # The phase line was ended before the warning (on a terminal both share): its own line.
  assert f'loading the checkpoint of {trained_copy} ...' in result.stdout.splitlines()
  ens = lpd_jax.load(trained_copy, epoch=2)
  ds = data.load_dataset(ens.config)
  expected = predict.clean_accuracy(ens, ds.test_images[:100], ds.test_labels[:100], 100)
  assert f'| ensemble | {100 * expected["ensemble_accuracy"]:.2f} |' in result.stdout
  with open(os.path.join(trained_copy, 'eval_clean.json')) as f:
    assert json.load(f)['num_examples'] == 100


def test_no_verifying_checkpoint_is_one_error_line(trained_copy):
  flip_bytes(trained_copy, 3)
  garble_metadata(trained_copy, 2)
  result = run_cli('eval.py', f'--workdir={trained_copy}')
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  (error,) = lines(result.stderr, 'error:')
  assert 'no usable checkpoint' in error and 'epoch 3' in error and 'epoch 2' in error
  assert result.stderr.strip() == error


def test_resume_from_a_damaged_checkpoint_moves_it_aside_and_ends_bit_identical(
  trained_copy, trained_workdir, capsys
):
  flip_bytes(trained_copy, 3)
  resumed = train.train_and_evaluate(tiny_config(), trained_copy)
  err = capsys.readouterr().err
  assert 'checkpoint of epoch 3 is damaged' in err and 'moved the damaged checkpoint' in err
  assert os.path.isdir(os.path.join(trained_copy, workdir_lib.DAMAGED_DIR, '3'))  # kept
  assert same_variables(resumed.variables, lpd_jax.load(trained_workdir).variables)
  with open(os.path.join(trained_copy, 'metrics.jsonl')) as f:
    assert [json.loads(line)['epoch'] for line in f] == [1, 2, 3]


def test_a_failed_checkpoint_write_stops_training_and_keeps_the_previous(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'w')
  save = ocp.CheckpointManager.save

  def full_disk_at_epoch_2(self, step, *args, **kwargs):
    if step == 2:
      raise OSError(28, 'No space left on device')
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk_at_epoch_2)
  with pytest.raises(CheckpointError) as err:  # the fixture's config: its compiles are cached
    train.train_and_evaluate(tiny_config(), workdir)
  message = str(err.value)
  assert '\n' not in message and 'could not write the checkpoint of epoch 2' in message
  assert 'No space left on device' in message and 'epoch 1 is intact' in message
  monkeypatch.undo()
  assert checkpoint.manager(workdir).all_steps() == [1]
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', '2.manifest.json'))
  assert lpd_jax.load(workdir).meta['epoch'] == 1  # verifies


def write_npz(path, **changes):
  ds = data.load_dataset(tiny_config())
  arrays = dict(
    train_images=ds.train_images,
    train_labels=ds.train_labels,
    test_images=ds.test_images,
    test_labels=ds.test_labels,
  )
  for name, change in changes.items():
    arrays[name] = change(arrays[name].copy())
  np.savez(path, **arrays)
  return str(path)


def _set(index, value):
  def change(a):
    a[index] = value
    return a

  return change


@pytest.mark.parametrize(
  'changes, message',
  [
    (dict(train_labels=_set(7, 10)), r'train_labels\[7\] = 10 is outside 0..9'),
    (dict(test_labels=_set(3, -1)), r'test_labels\[3\] = -1 is outside'),
    (dict(train_labels=lambda a: a.astype(np.float32)), 'train_labels has dtype float32'),
    (
      dict(train_images=lambda a: a * 255),
      r'train_images\[0\] has values in .*Pixels look like '
      '0..255: divide by 255',
    ),
    (dict(test_images=_set(5, np.nan)), r'test_images\[5\] is not finite'),
    (dict(train_labels=lambda a: a[:-1]), 'train_labels has shape'),
    (dict(test_images=lambda a: a[:, :4]), 'train images are .* but test images are'),
  ],
)
def test_bad_npz_data_is_one_clear_error(tmp_path, changes, message):
  path = write_npz(tmp_path / 'bad.npz', **changes)
  config = tiny_config(dataset='npz', npz_path=path, num_classes=10)
  with pytest.raises(DataError, match=message) as err:
    data.load_dataset(config)
  assert str(err.value).startswith(path) and '\n' not in str(err.value)


def test_a_file_that_is_no_npz_archive_is_one_clear_error(tmp_path):
  path = tmp_path / 'random.npz'
  path.write_bytes(np.random.default_rng(0).bytes(3000))
  with pytest.raises(DataError, match='is not an .npz archive of arrays') as err:
    data.load_dataset(tiny_config(dataset='npz', npz_path=str(path)))
  assert str(err.value).startswith(str(path)) and '\n' not in str(err.value)
  assert 'not a zip archive at all' in str(err.value) and 'pickle' not in str(err.value)


def test_classes_come_from_the_data_or_the_config(tmp_path):
  path = write_npz(tmp_path / 'ok.npz')
  assert data.load_dataset(tiny_config(dataset='npz', npz_path=path)).num_classes == 10
  with pytest.raises(DataError, match=r'outside 0..4 \(5 classes\)'):
    data.load_dataset(tiny_config(dataset='npz', npz_path=path, num_classes=5))
  with_names = tmp_path / 'names.npz'
  np.savez(with_names, label_names=np.array([f'c{i}' for i in range(12)]), **dict(np.load(path)))
  assert data.load_dataset(tiny_config(dataset='npz', npz_path=str(with_names))).num_classes == 12


@pytest.mark.parametrize(
  'args, message',
  [
    (['--config.keep_checkpoints=0'], 'error: keep_checkpoints must be >= 1'),
    (['--config.dataset=npz', '--config.npz_path=BAD'], r'error: BAD: train_labels\[7\] = 10'),
  ],
)
def test_train_command_refuses_with_one_line(tmp_path, args, message):
  bad = write_npz(tmp_path / 'bad.npz', train_labels=_set(7, 10))
  args = [a.replace('BAD', bad) for a in args]
  message = message.replace('BAD', re.escape(bad))
  result = run_cli(
    'train.py', *TINY_CLI, f'--workdir={tmp_path / "w"}', '--config.num_classes=10', *args
  )
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().count('\n') == 0 and re.match(message, result.stderr), result.stderr
  assert not os.path.exists(os.path.join(tmp_path, 'w', 'checkpoints'))


def test_eval_overrides_apply_to_the_workdirs_own_config(trained_copy):
  result = run_cli(
    'eval.py',
    f'--workdir={trained_copy}',
    '--config.eval.num_examples=20',
    '--config.eval.inference=expected',
  )
  assert result.returncode == 0, result.stderr
  assert 'Clean accuracy on 20 test images of digits' in result.stdout
  assert 'inference expected' in result.stdout
  refused = run_cli('eval.py', f'--workdir={trained_copy}', '--config.width=8')
  assert refused.returncode == 1
  assert 'holds a checkpoint of another ensemble (width: workdir has 4, config says 8)' in (
    refused.stderr
  )
  missing = run_cli('eval.py', f'--workdir={trained_copy}/nothing')
  assert missing.returncode == 1 and lines(missing.stderr, 'error: no ensemble.json')


# Where each kill lands (the save's order: manifest, orbax's temporary folder, its rename to
# the epoch's folder, then the metrics line): a trigger is a new name in checkpoints/. A
# kill after a commit and before its metrics line: test_metrics_lines_lost_to_a_kill_...
KILLS = (
  (
    'after the manifest, before the commit',
    lambda new: any(n.endswith('.manifest.json') for n in new),
  ),
  ('during the orbax save', lambda new: any('tmp' in n for n in new)),
  ('mid-epoch', None),  # 0.3 s after the next commit: the following epoch's steps
)


def test_sigkill_at_each_moment_of_a_save_then_rerun_ends_bit_identical(trained_workdir, tmp_path):
  """Three SIGKILLs, at two moments of a save and mid-epoch, each followed by a rerun
  of the same command: the last rerun ends with the uninterrupted run's parameters,
  metrics.jsonl has exactly one line per epoch, and the event files equal it."""
  workdir = str(tmp_path / 'killed')
  ckpt = os.path.join(workdir, 'checkpoints')
  moments = []
  for moment, trigger in KILLS:
    seen = set(os.listdir(ckpt)) if os.path.isdir(ckpt) else set()
    proc = start_cli('train.py', *TINY_CLI, f'--workdir={workdir}', output=subprocess.DEVNULL)
    deadline, killed = time.monotonic() + 120, None
    while proc.poll() is None and killed is None:
      new = (set(os.listdir(ckpt)) if os.path.isdir(ckpt) else set()) - seen
      if trigger is None and any(n.isdigit() for n in new):
        time.sleep(0.3)
        killed = moment
      elif trigger is not None and trigger(new):
        killed = moment
      elif time.monotonic() > deadline:
        killed = 'at the deadline'
      if killed:
        proc.send_signal(signal.SIGKILL)
      time.sleep(0.002)
    proc.wait()
    moments.append(killed or 'not killed: finished')
  assert moments[0] == KILLS[0][0], moments
  final = run_cli('train.py', *TINY_CLI, f'--workdir={workdir}')
  assert final.returncode == 0, final.stderr
  assert same_variables(lpd_jax.load(workdir).variables, lpd_jax.load(trained_workdir).variables)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert [json.loads(line)['epoch'] for line in f] == [1, 2, 3], moments
  assert_events_equal_metrics(workdir)  # the event files too, after the purges of the reruns


def test_config_validation_of_new_fields():
  with pytest.raises(ConfigError, match='keep_checkpoints must be >= 1'):
    config_lib.validate(tiny_config(keep_checkpoints=0))
  with pytest.raises(ConfigError, match='num_classes must be >= 0'):
    config_lib.validate(tiny_config(num_classes=-1))


def test_metrics_lines_lost_to_a_kill_come_back_from_the_manifests(tmp_path):
  """A kill after a checkpoint's commit and before its metrics line, or one that tore the
  last line, or a checkpoint moved aside after its line was written: metrics.jsonl ends
  with exactly one line per kept epoch, a lost one taken from its manifest's record."""
  workdir = str(tmp_path)
  lines = [{'epoch': 1, 'loss': 1.0}, {'epoch': 2, 'loss': 0.9}, {'epoch': 1, 'loss': 0.8}]
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in lines) + '{"epoch": 4, "lo')  # torn
  saved = {2: {'epoch': 2, 'loss': 0.5}, 3: {'epoch': 3, 'loss': 0.7}}
  workdir_lib.reconcile_metrics(workdir, 3, saved)
  assert workdir_lib.read_metrics(workdir) == [
    {'epoch': 1, 'loss': 0.8},  # a repeated epoch keeps its last line
    {'epoch': 2, 'loss': 0.9},  # the file's own line wins over the manifest's
    {'epoch': 3, 'loss': 0.7},  # lost to the kill: from the manifest
  ]
  workdir_lib.reconcile_metrics(workdir, 2, saved)  # epoch 3's checkpoint moved aside
  assert [r['epoch'] for r in workdir_lib.read_metrics(workdir)] == [1, 2]


def test_a_workdir_from_before_manifests_loads_its_checkpoints_unverified(trained_copy, capsys):
  """ensemble.json without `manifests` (an lpd-jax before them): a checkpoint without its
  manifest is read as orbax reads it, with no warning."""
  meta_path = os.path.join(trained_copy, 'ensemble.json')
  with open(meta_path) as f:
    meta = json.load(f)
  assert meta.pop('manifests') is True  # what training writes now
  with open(meta_path, 'w') as f:
    json.dump(meta, f)
  os.remove(os.path.join(trained_copy, 'checkpoints', '3.manifest.json'))
  assert lpd_jax.load(trained_copy).meta['epoch'] == 3
  assert 'warning' not in capsys.readouterr().err


def test_a_second_trainer_of_a_workdir_exits_at_once_naming_the_first(trained_workdir, tmp_path):
  """Two `train.py` of one workdir: the second exits with one line naming the first (its
  pid) while the first trains on and ends with the parameters of a run alone."""
  workdir = str(tmp_path / 'w')
  first = start_cli('train.py', *TINY_CLI, f'--workdir={workdir}')
  for line in first.stdout:  # its first line: it holds the lock, with all 3 epochs to go
    if line.startswith('loading'):
      break
  second = run_cli('train.py', *TINY_CLI, f'--workdir={workdir}', timeout=60)
  _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err
  assert second.returncode == 1 and 'Traceback' not in second.stderr
  (error,) = second.stderr.strip().splitlines()
  assert error.startswith(f'error: workdir {workdir} is being trained by another process')
  assert f'pid {first.pid} on ' in error
  assert same_variables(lpd_jax.load(workdir).variables, lpd_jax.load(trained_workdir).variables)


FAULT_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import lpd_jax
from conftest import tiny_config
from lpd_jax import train
for workdir in sys.argv[3:]:
  print(f'== load {workdir}', file=sys.stderr, flush=True)
  lpd_jax.load(workdir)
print(f'== resume {sys.argv[2]}', file=sys.stderr, flush=True)
train.train_and_evaluate(tiny_config(), sys.argv[2])
"""


def test_fault_paths_print_a_few_lines_of_their_own_and_no_traceback(trained_workdir, tmp_path):
  """Every fault of FAULTS loaded, then a resume after a truncated array, in one child
  process: whatever orbax, tensorstore and asyncio do underneath (at exit too), stderr has
  no traceback and at most 3 lines per case besides its progress bars."""
  workdirs = {}
  for fault in sorted(FAULTS):
    workdirs[fault] = str(tmp_path / fault)
    shutil.copytree(trained_workdir, workdirs[fault])
    FAULTS[fault](workdirs[fault], 3)
  resumed = workdirs['truncated_array'] + '_resumed'
  shutil.copytree(workdirs['truncated_array'], resumed)
  done = subprocess.run(
    [sys.executable, '-c', FAULT_SCRIPT, os.path.dirname(__file__), resumed, *workdirs.values()],
    capture_output=True,
    text=True,
    timeout=300,
    env=cli_env(),
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Traceback' not in done.stderr and 'Exception ignored' not in done.stderr, done.stderr
  cases = done.stderr.split('== ')[1:]
  assert len(cases) == len(FAULTS) + 1
  for case in cases:
    own = [line for line in case.splitlines()[1:] if line.strip() and not line.startswith('epoch ')]
    assert len(own) <= 3, case
  assert same_variables(lpd_jax.load(resumed).variables, lpd_jax.load(trained_workdir).variables)
