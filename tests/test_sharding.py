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


def run_script(script, args, devices):
  """tests/<script> with `devices` simulated devices -> its stdout (asserting success)."""
  path = os.path.join(os.path.dirname(__file__), script)
  proc = subprocess.run(
    [sys.executable, path, *args],
    env=child_env(devices),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def two_processes(args):
  """multiprocess_check.py as processes 0 and 1 of a jax.distributed run on localhost."""
  script = os.path.join(os.path.dirname(__file__), 'multiprocess_check.py')
  port = str(free_port())
  procs = [
    subprocess.Popen(
      [sys.executable, script, 'process', *args, port, str(i)],
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


def assert_restores_here(workdir, saved):
  """The checkpoint in `workdir` restores in this process, on one device, as `saved`."""
  ens = lpd_jax.load(workdir)
  assert len(jax.tree.leaves(ens.variables)[0].sharding.device_set) == 1
  for path, leaf in jax.tree_util.tree_leaves_with_path(ens.variables):
    np.testing.assert_array_equal(np.asarray(leaf), saved[jax.tree_util.keystr(path)])


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


def test_sharded_training_matches_one_device():
  """K = 4 on 8 simulated devices (tests/multidevice_check.py steps) against one device."""
  out = run_script('multidevice_check.py', ['steps'], 8)
  line = next(s for s in out.splitlines() if s.startswith('RESULT '))
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


@pytest.mark.xdist_group('multidevice_suites')
def test_every_suite_split_over_8_devices_gives_the_one_device_outcomes(tmp_path, trained_workdir):
  """Every suite on the trained digits ensemble, on one device and with each batch split
  over 8 simulated devices (tests/multidevice_check.py suites): the same per-sample
  outcomes (attacks exactly: their keys depend on the test index and the global batch
  only; bounds and probes to float32 rounding) and the same metrics."""
  run_script('multidevice_check.py', ['suites', str(tmp_path), trained_workdir], 8)
  one, eight = (os.path.join(tmp_path, f'suites_{d}') for d in (1, 8))
  assert sorted(os.listdir(one)) == sorted(os.listdir(eight))
  assert {f'eval_{s}.json' for s in SUITES} <= set(os.listdir(one))
  with open(os.path.join(eight, 'eval_paper.json')) as f:
    assert json.load(f)['test_examples'] == 16
  assert_same_reports(one, eight, '1 vs 8 devices')


@pytest.mark.xdist_group('multiprocess')
def test_two_processes_train_as_one_and_evaluate_across_both(tmp_path, trained_workdir):
  """A real jax.distributed run: 2 processes of 2 simulated devices each (CPU collectives)
  train on a (2, 2) mesh as one process on 4 devices does; the checkpoint both wrote
  restores here on one device; the robust suite split over both gives one device's
  outcomes (tests/multiprocess_check.py)."""
  npz = small_npz(tmp_path / 'small.npz')
  one, two = str(tmp_path / 'one_process'), str(tmp_path / 'two_processes')
  run_script('multiprocess_check.py', ['reference', npz, one, trained_workdir], 4)
  outs = two_processes([npz, two, trained_workdir])
  assert 'each batch split over 4 devices of 2 process(es)' in outs[0]
  mine, theirs = saved_variables(one), saved_variables(two)
  assert sorted(theirs) == sorted(mine)
  # The same parameters: the data axis's all-reduce adds two shards, in either order the
  # same sum; float32 rounding elsewhere (gloo's reductions) is the tolerance.
  for key, value in mine.items():
    np.testing.assert_allclose(theirs[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert_restores_here(one, mine)
  assert_restores_here(two, theirs)
  robust = np.load(os.path.join(two, 'suites_-1', 'robust_per_sample.npz'))
  for key, value in np.load(os.path.join(one, 'suites_1', 'robust_per_sample.npz')).items():
    np.testing.assert_array_equal(robust[key], value, err_msg=key)


SUITES = ('clean', 'paper', 'sweep', 'robust', 'audit', 'transfer', 'probes', 'certify')
