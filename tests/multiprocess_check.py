"""A real `jax.distributed` run of two processes on localhost, and the one-process run it
must equal (tests/test_sharding.py starts them; README "Several processes"):

    python multiprocess_check.py reference DATA.npz WORKDIR SUITE_WORKDIR          # 4 devices
    python multiprocess_check.py process DATA.npz WORKDIR SUITE_WORKDIR PORT ID    # 2 devices

Both train `config_of`'s ensemble (K = 4 Baseline members, one epoch of a few steps on DATA.npz)
on a ('member', 'data') = (2, 2) mesh with `train.train_and_evaluate` into WORKDIR: the
reference on 4 devices of one process, a process of the pair on its 2 devices and the
other's (CPU collectives over gloo between them; each writes its shards of the checkpoint,
process 0 the metrics). Process 0 saves the trained variables, gathered, to
WORKDIR/trained_variables.npz. Then the `robust` suite of SUITES runs on SUITE_WORKDIR (the
tests' trained digits ensemble): the reference's on one device, the pair's split over the 4
devices of both (eval.data_devices = -1); process 0 writes the report into
WORKDIR/suites_<devices>.
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_config  # noqa: E402

from lpd_jax import evaluate, loading, sharding, train  # noqa: E402

# Every suite, short, on the first 16 test images in batches of 8.
SUITES = dict(
  suite='clean,paper,sweep,robust,audit,transfer,probes,certify',
  num_examples=16,
  batch_size=8,
  paper=dict(attacks='fgsm,pgd', pgd=dict(steps=2)),
  sweep=dict(norms='linf', linf_eps=(0.05,), steps=2),
  robust=dict(attacks='apgd-ce', eps=(0.05,), apgd_ce=dict(steps=2)),
  audit=dict(num_examples=16, steps=2, strong_steps=2, restarts=1, square_queries=5),
  transfer=dict(attacks='fgsm'),
  probes=dict(num_examples=16),
  certify=dict(
    methods='crown', num_examples=4, batch_size=8, eps=0.001, curve_points=0, pgd_steps=2
  ),
)


def suites_config(config, devices, workdir, out, suite=SUITES['suite']):
  """`config` evaluating `suite` of SUITES on `workdir` on `devices` devices (-1: all) into
  out/suites_<devices>."""
  config = config.copy_and_resolve_references()
  config.eval.update(dict(SUITES, suite=suite))
  config.eval.transfer.workdir = workdir
  config.eval.data_devices = devices
  config.member_strategy = 'vmap'  # a third of unroll's compile time
  config.eval.reports_dir = os.path.join(out, f'suites_{devices}')
  os.makedirs(config.eval.reports_dir, exist_ok=True)
  return config


def config_of(npz_path, port=None, process_id=0):
  """K = 4 Baseline members of width 4 on a (2, 2) mesh, one epoch of DATA.npz; with a
  `port`, process `process_id` of 2. Baseline: the runs may differ in float32 rounding (a
  4-device reduction in another order), which LPD's masks turn into a flipped bin where a
  feature sits on an edge (tests/multidevice_check.py measures that sensitivity); Baseline
  keeps the comparison at rounding level."""
  config = tiny_config(
    dataset='npz',
    npz_path=npz_path,
    method='baseline',
    num_members=4,
    num_epochs=1,
    member_strategy='vmap',
  )
  config.sharding.member, config.sharding.data = 2, 2
  if port is not None:
    config.distributed = True
    config.coordinator_address = f'localhost:{port}'
    config.num_processes, config.process_id = 2, process_id
  return config


def train_and_save(config, workdir):
  """Trains into `workdir` and saves the trained variables (gathered) to
  trained_variables.npz from process 0. Returns the Ensemble."""
  ens = train.train_and_evaluate(config, workdir)
  final = jax.tree.map(sharding.to_host, ens.variables)
  if sharding.is_main_process():
    np.savez(
      os.path.join(workdir, 'trained_variables.npz'),
      **{jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_leaves_with_path(final)},
    )
  return ens


def main(mode, npz_path, workdir, suite_workdir, port=None, process_id=0):
  config = config_of(npz_path, port, int(process_id))
  if mode == 'process':
    sharding.initialize_distributed(config)
    assert jax.process_count() == 2, jax.process_count()
  assert jax.device_count() == 4, jax.devices()
  train_and_save(config, workdir)
  saved = loading.read_config(suite_workdir).config
  if mode == 'process':
    saved.update(dict(distributed=True, coordinator_address=config.coordinator_address))
    saved.update(dict(num_processes=2, process_id=int(process_id)))
  devices = -1 if mode == 'process' else 1
  saved = suites_config(saved, devices, suite_workdir, workdir, suite='robust')
  evaluate.evaluate(saved, suite_workdir)
  print(f'{mode} {process_id}: done', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
