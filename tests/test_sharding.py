"""Many devices: the ('member', 'data') mesh of lpd_jax.sharding, checked on 8
simulated CPU devices in a subprocess (tests/multidevice_check.py), against one device."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import lpd_jax
from lpd_jax import data, sharding, train
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


def small_npz(path):
  """The first 256 training and 16 test digits as an npz dataset: an epoch of 4 steps."""
  from conftest import tiny_config

  ds = data.load_dataset(tiny_config())
  np.savez(
    path,
    train_images=ds.train_images[:256],
    train_labels=ds.train_labels[:256],
    test_images=ds.test_images[:16],
    test_labels=ds.test_labels[:16],
  )
  return str(path)


def child_env(devices):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  flag = f'--xla_force_host_platform_device_count={devices}'
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + flag).strip()
  return env


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def two_processes(npz, workdir, suite_workdir):
  """multiprocess_check.py as processes 0 and 1 of a jax.distributed run on localhost."""
  script = os.path.join(os.path.dirname(__file__), 'multiprocess_check.py')
  port = str(free_port())
  procs = [
    subprocess.Popen(
      [sys.executable, script, npz, workdir, port, str(i), suite_workdir],
      env=child_env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in (0, 1)
  ]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i}:\n{out[-3000:]}'
  return outs


def saved_variables(workdir):
  return dict(np.load(os.path.join(workdir, 'trained_variables.npz')))


def assert_same_reports(one, other, what):
  """Two report folders of the same evaluations: per-sample arrays equal (bools exactly,
  floats to float32 rounding), and every metric's value (accuracies exactly)."""
  for name in sorted(f for f in os.listdir(one) if f.endswith('.npz')):
    a, b = np.load(os.path.join(one, name)), np.load(os.path.join(other, name))
    for key in a.files:
      if a[key].dtype.kind == 'f':
        np.testing.assert_allclose(
          a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=f'{what} {name} {key}'
        )
      else:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{what} {name} {key}')
  for name in sorted(f for f in os.listdir(one) if f.startswith('eval_') and f.endswith('.json')):
    with open(os.path.join(one, name)) as f, open(os.path.join(other, name)) as g:
      mine, theirs = json.load(f)['metrics'], json.load(g)['metrics']
    assert [m['key'] for m in mine] == [m['key'] for m in theirs], (what, name)
    for m, t in zip(mine, theirs):
      if isinstance(m['value'], float) and m['format'] != 'pct':
        assert np.isclose(m['value'], t['value'], rtol=1e-4, atol=1e-5), (what, name, m, t)
      else:
        assert m['value'] == t['value'], (what, name, m, t)


def test_sharded_and_multiprocess_runs_match_one_device_and_restore_on_one(
  tmp_path, trained_workdir
):
  """8 simulated devices in one process (tests/multidevice_check.py), then a real
  2-process run of 2 devices each (tests/multiprocess_check.py), against one device."""
  npz = small_npz(tmp_path / 'small.npz')
  workdir = str(tmp_path / 'one_process')
  script = os.path.join(os.path.dirname(__file__), 'multidevice_check.py')
  proc = subprocess.run(
    [sys.executable, script, workdir, npz, trained_workdir],
    env=child_env(8),
    capture_output=True,
    text=True,
    timeout=900,
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
  assert result['train_and_evaluate 2x2']['num_devices'] == 4
  # The checkpoint written in the 2 x 2 layout restores here, on one device.
  ens = lpd_jax.load(workdir)
  assert len(jax.tree.leaves(ens.variables)[0].sharding.device_set) == 1
  saved = saved_variables(workdir)
  for path, leaf in jax.tree_util.tree_leaves_with_path(ens.variables):
    np.testing.assert_array_equal(np.asarray(leaf), saved[jax.tree_util.keystr(path)])
  # Every suite split over 8 devices: the per-sample outcomes of one device.
  one, eight = (os.path.join(workdir, f'suites_{d}') for d in (1, 8))
  assert sorted(os.listdir(one)) == sorted(os.listdir(eight))
  assert {f'eval_{s}.json' for s in SUITES} <= set(os.listdir(one))
  assert_same_reports(one, eight, '1 vs 8 devices')

  # The same training on 2 processes of 2 devices: the one-process run's parameters (an
  # all-reduce over 2 shards adds two numbers, in either order the same), a checkpoint
  # that restores here, and the robust suite across both processes (on the trained digits
  # ensemble) = on one device.
  two = str(tmp_path / 'two_processes')
  outs = two_processes(npz, two, trained_workdir)
  assert 'each batch split over 4 devices of 2 process(es)' in outs[0]
  theirs = saved_variables(two)
  assert sorted(theirs) == sorted(saved)
  for key, value in saved.items():
    np.testing.assert_allclose(theirs[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  restored = lpd_jax.load(two)
  for path, leaf in jax.tree_util.tree_leaves_with_path(restored.variables):
    np.testing.assert_array_equal(np.asarray(leaf), theirs[jax.tree_util.keystr(path)])
  robust = np.load(os.path.join(two, 'suites_-1', 'robust_per_sample.npz'))
  for key, value in np.load(os.path.join(one, 'robust_per_sample.npz')).items():
    np.testing.assert_array_equal(robust[key], value, err_msg=key)


SUITES = ('clean', 'paper', 'sweep', 'robust', 'audit', 'transfer', 'probes', 'certify')
