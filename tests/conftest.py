"""Shared fixtures: a tiny digits config and one ensemble trained once per session."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import pytest  # noqa: E402

from lpd_jax import train  # noqa: E402
from lpd_jax.config import base_config  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent XLA cache for the session: identical train steps compile once."""
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('xla_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


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
      eval=dict(batch_size=128, suite='clean', num_examples=-1),
    )
  )
  c.update(overrides)
  return c


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
  """Workdir of a tiny LPD ensemble trained for 3 epochs on digits (about 90% test accuracy)."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  train.train_and_evaluate(tiny_config(), workdir)
  return workdir
