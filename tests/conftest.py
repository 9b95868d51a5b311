"""Shared fixtures and helpers of the test suite.

* `tiny_config()`: a K = 3 LPD ensemble of width-4 ResNet-18s on digits (compiles in seconds).
* `trained_workdir`: that ensemble trained for 3 epochs, built once per test run (the first
  pytest-xdist worker to ask trains it under a file lock, the others wait and read it) and
  read-only: a test that writes into a workdir (a report, a resumed run) takes
  `trained_copy`, its own copy. The session ends with an error if a test wrote into it.
* The CLI helpers (`run_cli`, `run_module`, `start_cli`, `TINY_CLI`, `lines`): how tests start
  `train.py`, `eval.py` and `python -m lpd_jax.*` children.
"""

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# XLA's CPU compiles are most of the suite's time (tiny shapes run in milliseconds): LLVM at
# optimisation level 1 compiles the tiny ensemble's training about a fifth faster than the
# default (2), and its code runs nearly as fast (level 0 is a little faster to compile, but
# its code made the CROWN tests 5x slower). Set before jax is imported and inherited by every
# child (CLI runs, the notebook kernel, the multi-device subprocess): all processes of the
# suite use one compiler setting, so their results compare bit for bit.
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=1'
  ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from lpd_jax import train  # noqa: E402
from lpd_jax import workdir as workdir_lib  # noqa: E402
from lpd_jax.config import base_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The CLI runs of the tiny fixture: configs/quickstart.py at width 4 for 3 epochs is
# tiny_config() (same seed, data, optimizer), so its parameters are the fixture's.
TINY_CLI = ['--config=configs/quickstart.py', '--config.width=4', '--config.num_epochs=3']


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent XLA cache per worker (its CLI children share it): identical steps compile
  once. Not shared between workers: JAX writes an entry in place, and a reader racing a
  writer warns on stderr; JAX's locked mode (a cache size limit) rescans every entry on each
  write, and with the suite's ~5,000 entries a shared locked cache made the run slower."""
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('xla_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


# Modules of quick tests (no compile to speak of), collected last. `--dist loadgroup` hands
# out the groups, largest first, then the other tests in collection order, and keeps up to
# three queued on each worker: when the queue runs dry, one worker may still have three
# tests to go while the other idles. Quick tests at the end keep that tail short.
RUN_LAST = ('test_configs.py', 'test_paired.py', 'test_house.py')


def pytest_collection_modifyitems(session, config, items):
  last = [item for item in items if item.path.name in RUN_LAST]
  if last:
    items[:] = [item for item in items if item.path.name not in RUN_LAST] + last


def tiny_config(**overrides):
  """A K = 3 LPD ensemble of width-4 ResNet-18s on digits: compiles in seconds on a CPU."""
  c = base_config()
  c.update(
    dict(
      dataset='digits',
      num_members=3,
      width=4,
      method='lpd',
      num_epochs=3,
      batch_size=64,
      learning_rate=0.05,
      log_every_steps=10,  # as configs/quickstart.py: 2 step scalars an epoch of 22 steps
      eval=dict(batch_size=128, suite='clean', num_examples=-1),
    )
  )
  c.update(overrides)
  return c


def run_root(tmp_path_factory):
  """The folder every pytest-xdist worker of this run shares (the base temp without xdist)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@contextlib.contextmanager
def file_lock(path):
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # the kernel drops it if the holder dies
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def built_once(tmp_path_factory, name, build):
  """`build(path)` run once per test run (across xdist workers) into <run root>/name."""
  root = run_root(tmp_path_factory)
  path = str(root / name)
  with file_lock(str(root / f'{name}.lock')):
    if not os.path.exists(os.path.join(path, '.built')):
      shutil.rmtree(path, ignore_errors=True)
      build(path)
      open(os.path.join(path, '.built'), 'w').close()
  return path


def snapshot(path):
  """{relative path: (size, mtime_ns)} of every file under `path` but the training lock
  (a trainer that finds the run finished takes the lock, and writes nothing else)."""
  out = {}
  for folder, _, names in os.walk(path):
    for n in names:
      if n == workdir_lib.LOCK_FILE:
        continue
      stat = os.stat(os.path.join(folder, n))
      out[os.path.relpath(os.path.join(folder, n), path)] = (stat.st_size, stat.st_mtime_ns)
  return out


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
  """Workdir of a tiny LPD ensemble trained for 3 epochs on digits (about 90% test accuracy).
  Read-only: tests that write into a workdir take `trained_copy`."""
  workdir = built_once(
    tmp_path_factory, 'trained', lambda path: train.train_and_evaluate(tiny_config(), path)
  )
  before = snapshot(workdir)
  yield workdir
  after = snapshot(workdir)
  changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
  assert not changed, f'tests wrote into the read-only trained_workdir: {changed}'


@pytest.fixture
def trained_copy(trained_workdir, tmp_path):
  """A fresh, writable copy of the trained workdir (checkpoints of epochs 2 and 3)."""
  workdir = str(tmp_path / 'trained_copy')
  shutil.copytree(trained_workdir, workdir)
  return workdir


@pytest.fixture(scope='module')
def module_copy(trained_workdir, tmp_path_factory):
  """A writable copy of the trained workdir that one test module's tests share (a module
  that runs suites once and reads their reports in several tests)."""
  workdir = str(tmp_path_factory.mktemp('module_copy') / 'trained_copy')
  shutil.copytree(trained_workdir, workdir)
  return workdir


# -- the command-line children ------------------------------------------------------------------


def cli_env():
  """The subprocess environment: CPU, and this worker's persistent XLA cache."""
  return dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or '',
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
  )


def _cli_options():
  """How tests start the CLI: from the repo, with cli_env(), and with the SIGINT disposition
  a terminal gives (pytest-xdist workers ignore SIGINT, and an ignored signal stays ignored
  in a child, so Ctrl-C would not reach it)."""
  return dict(
    cwd=REPO,
    env=cli_env(),
    text=True,
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
  )


def run_cli(script, *args, timeout=300):
  """`python script *args` (train.py, eval.py) -> CompletedProcess with stdout, stderr."""
  return subprocess.run(
    [sys.executable, os.path.join(REPO, script), *args],
    capture_output=True,
    timeout=timeout,
    **_cli_options(),
  )


def run_module(module, *args, timeout=300):
  """`python -m module *args`, as run_cli (the README's form of lpd_jax.study / .compare)."""
  return subprocess.run(
    [sys.executable, '-m', module, *args],
    capture_output=True,
    timeout=timeout,
    **_cli_options(),
  )


def start_cli(script, *args, output=subprocess.PIPE):
  """`python script *args` started in the background (stdout and stderr to `output`)."""
  return subprocess.Popen(
    [sys.executable, os.path.join(REPO, script), *args],
    stdout=output,
    stderr=output,
    **_cli_options(),
  )


def lines(stream, prefix):
  """The lines of `stream` that start with `prefix` ('error:', 'warning:')."""
  return [line for line in stream.splitlines() if line.startswith(prefix)]
