"""Many devices: the ('member', 'data') mesh of lpd_jax.sharding, checked on 8
simulated CPU devices in a subprocess (tests/multidevice_check.py), against one device."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import lpd_jax
from lpd_jax import sharding, train
from lpd_jax.errors import ConfigError

pytestmark = pytest.mark.xdist_group('sharding')


def test_mesh_shapes_and_their_errors():
  assert sharding.mesh_shape(-1, 2, num_members=4, num_devices=8) == (4, 2)
  assert sharding.mesh_shape(1, -1, num_members=3, num_devices=8) == (1, 8)
  assert sharding.mesh_shape(1, 4, num_members=3, num_devices=8) == (1, 4)  # a sub-mesh
  with pytest.raises(ValueError, match='divide num_members'):
    sharding.mesh_shape(2, 4, num_members=3, num_devices=8)
  with pytest.raises(ValueError, match='needs more than the 8 devices'):
    sharding.mesh_shape(4, 4, num_members=4, num_devices=8)
  assert sharding.make_mesh(1, 1, 3) is None  # one device: nothing changes


def test_a_mesh_this_machine_cannot_hold_is_a_config_error():
  from conftest import tiny_config

  config = tiny_config()
  config.sharding.member = 3 * jax.device_count()
  with pytest.raises(ConfigError, match='needs more than'):
    train.make_mesh(config)


def test_sharded_training_matches_one_device_and_restores_on_one(tmp_path):
  workdir = str(tmp_path / 'mesh_2x4')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
  ).strip()
  script = os.path.join(os.path.dirname(__file__), 'multidevice_check.py')
  proc = subprocess.run(
    [sys.executable, script, workdir], env=env, capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(s for s in proc.stdout.splitlines() if s.startswith('RESULT '))
  result = json.loads(line[len('RESULT ') :])
  assert result['keep rates 2x4'] == dict(max_abs_diff=0.0, num_devices=8)
  for name in ('lpd 2x4',):
    run = result[name]
    member, data = (int(v) for v in name.split()[1].split('x'))
    assert run['num_devices'] == member * data, name
    # Same parameters as one device up to float32 reduction order, after each step: within
    # a few times the difference a one-ulp change of the start (or another member strategy)
    # makes on one device, plus a few ulps of the largest parameter. Both scales come from
    # the computation on this machine: a feature within rounding of a bin edge flips an LPD
    # mask, and a CPU with other vector units rounds other sums differently. A mesh that
    # computed something else (batch statistics per shard, a gradient summed over one
    # shard, members mixed up) is off by lr * |gradient|, orders of magnitude more.
    for step, (diff, sensitivity) in enumerate(zip(run['max_abs_diff'], run['sensitivity'])):
      assert diff <= 4 * sensitivity + 8 * 2.0**-23 * run['scale'], (name, step, run)
    if member > 1:
      assert "P('member',)" in run['specs'], name
  assert result['train_and_evaluate 2x4']['num_devices'] == 8
  # The checkpoint written in the 2 x 4 layout restores here, on one device.
  ens = lpd_jax.load(workdir)
  assert len(jax.tree.leaves(ens.variables)[0].sharding.device_set) == 1
  saved = np.load(os.path.join(workdir, 'trained_variables.npz'))
  for path, leaf in jax.tree_util.tree_leaves_with_path(ens.variables):
    np.testing.assert_array_equal(np.asarray(leaf), saved[jax.tree_util.keystr(path)])
