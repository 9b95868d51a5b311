"""What a new user meets in the first minutes: start-up feedback, Ctrl-C, the compilation
cache, extending a finished run, and one-line errors instead of tracebacks."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import TINY_CLI, lines, run_cli, start_cli, tiny_config

from lpd_jax import checkpoint, compilation_cache, evaluate, train
from lpd_jax.errors import CheckpointError, ConfigError


def test_start_up_phases_are_printed_and_ctrl_c_is_one_line(tmp_path):
  """A fresh run prints one timed line per phase before the first epoch; SIGINT (Ctrl-C)
  after an epoch stops it with one line naming the last saved checkpoint, exit 130."""
  workdir = str(tmp_path / 'w')
  args = [a for a in TINY_CLI if 'num_epochs' not in a] + ['--config.num_epochs=40']
  proc = start_cli('train.py', *args, f'--workdir={workdir}')
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith('epoch   2'):
      proc.send_signal(signal.SIGINT)
      break
  rest, err = proc.communicate(timeout=120)
  out = ''.join(out) + rest
  assert proc.returncode == 130, err
  phases = [line for line in out.splitlines() if line.endswith(' s')]
  assert [p.split(' ...')[0] for p in phases][:4] == [
    'loading digits',
    'initialising 3 members (resnet18, width 4)',
    phases[2].split(' ...')[0],
    'the evaluation',
  ]
  assert phases[2].startswith('the training step (compilation cache ')
  for line in phases[2:4]:  # says which it was: a compile, or a read of the cache
    said = r' \.\.\. (compiled|read from the compilation cache|already compiled in this process), '
    assert re.search(said + r'[\d.]+ s$', line), line
  assert '1,438 train / 359 test images of 8x8x1, 10 classes' in phases[0]
  assert out.index(phases[-1]) < out.index('epoch   1')
  messages = [line for line in err.splitlines() if line.startswith('interrupted:')]
  assert len(messages) == 1 and 'Traceback' not in err, err
  saved = checkpoint.manager(workdir).latest_step()
  assert saved >= 2 and f'the last saved checkpoint is epoch {saved} in {workdir}' in messages[0]
  assert 'rerun the same command to resume' in messages[0]


def test_a_compile_read_from_the_cache_is_told_from_a_compile():
  """`compilation_cache.outcome`: a function compiled for the first time was 'compiled';
  called again, it was already compiled in this process; after the in-memory caches are
  cleared, it is read from the persistent cache (the session's, conftest)."""
  import jax
  import jax.numpy as jnp

  def f(x):
    return jnp.tanh(x) * 1.2345678  # a constant no other test compiles

  x = jnp.ones((3, 7))
  jitted = jax.jit(f)
  before = compilation_cache.counts()
  jitted(x)
  assert compilation_cache.outcome(before) == 'compiled'
  before = compilation_cache.counts()
  jitted(x)
  assert compilation_cache.outcome(before) == 'already compiled in this process'
  jax.clear_caches()
  before = compilation_cache.counts()
  jax.jit(f)(x)
  assert compilation_cache.outcome(before) == 'read from the compilation cache'


def test_compilation_cache_folder_choice(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compilation_cache.choose_dir() == str(tmp_path / 'lpd-jax' / 'xla')
  monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / 'env'))
  assert compilation_cache.choose_dir() == str(tmp_path / 'env')
  assert compilation_cache.choose_dir(str(tmp_path / 'config')) == str(tmp_path / 'config')
  assert compilation_cache.choose_dir('off') is None
  monkeypatch.setenv(compilation_cache.ENV, 'off')
  assert compilation_cache.choose_dir() is None


def test_a_finished_run_is_extended_only_when_asked(trained_workdir, tmp_path, capsys):
  workdir = str(tmp_path / 'w')
  shutil.copytree(trained_workdir, workdir)
  with pytest.raises(
    ConfigError,
    match='finished its run of num_epochs=3 .*to train epoch 4 .*continue_training=True',
  ):
    train.train_and_evaluate(tiny_config(num_epochs=4), workdir)
  train.train_and_evaluate(tiny_config(num_epochs=4, continue_training=True), workdir)
  assert 'continuing' in capsys.readouterr().out
  with open(os.path.join(workdir, 'ensemble.json')) as f:
    meta = json.load(f)
  assert meta['schedule_restarts'] == [3] and meta['config']['num_epochs'] == 4
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['epoch'] for r in records] == [1, 2, 3, 4]
  # Epoch 4 runs a new cosine from learning_rate over its 22 steps: its last step's rate
  # is the cosine at 21/22 of the way, far above the 1e-4 the first schedule ended at.
  _, schedule = train.make_optimizer(tiny_config(num_epochs=4), 22, restarts=[3])
  assert records[-1]['learning_rate'] == pytest.approx(float(schedule(87)))
  assert float(schedule(66)) == pytest.approx(0.05) and records[2]['learning_rate'] < 1e-3
  train.train_and_evaluate(tiny_config(num_epochs=4), workdir)  # finished: nothing to do
  assert 'nothing to do' in capsys.readouterr().out


def test_a_changed_num_epochs_mid_run_is_refused(trained_workdir, tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(trained_workdir, workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '3'))  # as if killed in epoch 3
  with pytest.raises(ConfigError, match='holds epoch 2 of a run of num_epochs=3.*mid-run'):
    train.train_and_evaluate(tiny_config(num_epochs=5, continue_training=True), workdir)


def test_unwritable_workdir_and_zero_sizes_are_one_line(tmp_path, trained_workdir):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  with pytest.raises(CheckpointError, match='cannot write to workdir .*a_file/w: Not a directory'):
    train.train_and_evaluate(tiny_config(), str(blocker / 'w'))
  assert blocker.read_text() == 'not a folder'
  for field, message in (
    ('num_examples', 'eval.num_examples must be >= 1, or -1'),
    ('batch_size', 'eval.batch_size must be >= 1'),
  ):
    with pytest.raises(ConfigError, match=message):
      evaluate.evaluate(tiny_config(eval={field: 0}), trained_workdir)
  result = run_cli('train.py', *TINY_CLI, f'--workdir={blocker}/w', timeout=120)
  assert result.returncode == 1 and result.stderr.startswith('error: cannot write to workdir')
  assert result.stderr.strip().count('\n') == 0


def test_a_progress_bar_cut_short_by_ctrl_c_prints_nothing_on_its_deletion():
  """SIGINT inside a tqdm bar's __init__ leaves a bar without 'pos'; its __del__ then raises
  AttributeError, which Python prints as an 'Exception ignored' traceback. The CLI's hook
  drops exactly that (the Ctrl-C keeps its one line); other unraisable errors still print."""
  code = (
    'import sys\n'
    'from tqdm.auto import tqdm\n'
    'from lpd_jax import cli\n'
    "if sys.argv[1] == 'cli': cli.run_reporting_user_errors(lambda: None)\n"
    'bar = tqdm.__new__(tqdm)\n'  # what a Ctrl-C between __init__'s disable and pos leaves
    'bar.disable = False\n'
    'del bar\n'
    'class Other:\n'
    '  def __del__(self): raise AttributeError("not a bar")\n'
    'other = Other()\n'
    'del other\n'
  )
  plain = subprocess.run([sys.executable, '-c', code, 'plain'], capture_output=True, text=True)
  assert plain.stderr.count('Exception ignored') == 2  # the bar's and the other's
  quiet = subprocess.run([sys.executable, '-c', code, 'cli'], capture_output=True, text=True)
  assert quiet.stderr.count('Exception ignored') == 1 and 'not a bar' in quiet.stderr


class _SwallowsCtrlC:
  """A finaliser during which SIGINT arrives: Python raises the KeyboardInterrupt inside
  `__del__`, prints 'Exception ignored' and drops it (what a tqdm bar's `__del__` did to a
  Ctrl-C in CI, and the run trained on to exit 0)."""

  def __del__(self):
    signal.raise_signal(signal.SIGINT)
    sum(range(1000))  # the handler runs at the next bytecode: here, inside the finaliser


def test_a_ctrl_c_swallowed_by_a_finaliser_still_stops_training_in_one_line(
  tmp_path, monkeypatch, capsys
):
  """SIGINT landing in a finaliser mid-epoch 2 (the fixture's config: compiles are cached) stops
  the run at the next step, through the CLI's one line, exit 130, epoch 1 saved."""
  from lpd_jax import cli, interrupts

  workdir = str(tmp_path / 'w')
  tick, ticks = train.progress.tick, []

  def tick_then_swallow(k=1):
    tick(k)
    ticks.append(k)
    if len(ticks) == 22 + 5:  # the fixture's config: 22 steps an epoch
      _SwallowsCtrlC()  # dropped at once: its __del__ runs here and eats the interrupt

  monkeypatch.setattr(train.progress, 'tick', tick_then_swallow)
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)  # the CLI replaces it
  handler = signal.getsignal(signal.SIGINT)
  with pytest.raises(SystemExit) as stopped:
    cli.run_reporting_user_errors(train.train_and_evaluate, tiny_config(), workdir)
  # The recorder is scoped to the call: this process's own handler is back, nothing pending.
  assert signal.getsignal(signal.SIGINT) is handler and not interrupts.pending()
  err = capsys.readouterr().err
  assert stopped.value.code == 130 and len(ticks) == 22 + 5, err
  assert 'Exception ignored' not in err and 'Traceback' not in err, err
  (message,) = lines(err, 'interrupted:')
  assert f'in epoch 2; the last saved checkpoint is epoch 1 in {workdir}' in message
  assert checkpoint.manager(workdir).all_steps() == [1]

  # Without the recorder, the same finaliser loses the Ctrl-C: the test's premise.
  monkeypatch.setattr(sys, 'unraisablehook', lambda unraisable: ticks.append('lost'))
  _SwallowsCtrlC()
  assert ticks[-1] == 'lost'


def test_the_ctrl_c_recorder_runs_a_block_off_the_main_thread_as_it_is():
  """`signal.signal` works on the main thread only: a CLI function called from another thread
  (a notebook's worker) runs without the recorder instead of failing."""
  import threading

  from lpd_jax import interrupts

  handler, seen = signal.getsignal(signal.SIGINT), []

  def body():
    with interrupts.recording():
      seen.append(signal.getsignal(signal.SIGINT))

  thread = threading.Thread(target=body)
  thread.start()
  thread.join()
  assert seen == [handler] and signal.getsignal(signal.SIGINT) is handler
