"""Run by tests/test_sharding.py in a subprocess with 8 simulated CPU devices.

`python multidevice_check.py steps`: trains K = 4 members for two steps on digits on one
device and on ('member', 'data') meshes of 8 devices (`MESHES`: LPD, whose keep rates
couple the members and the batch, with the members split 2 ways and the batch 4), with
`train.make_train_step` and `sharding.place_*`. Prints one line `RESULT {json}`: per method
and mesh, the largest parameter difference from one device after each step, the
computation's own float sensitivity after each step (the largest difference a one-ulp
change of the initial parameters, or another member strategy, makes on one device), the
devices the state lives on and its partition specs.

`python multidevice_check.py suites OUT WORKDIR`: evaluates every suite of
multiprocess_check.SUITES on the trained WORKDIR on one device and split over all 8
(reports in OUT/suites_1 and OUT/suites_8).
"""

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import multiprocess_check  # noqa: E402
from conftest import tiny_config  # noqa: E402

from lpd_jax import data, dropout, ensemble, evaluate, loading, sharding, train  # noqa: E402

# (member, data) meshes per method: members split over 4 devices, the batch over 8, both.
MESHES = {'lpd': ((2, 4),)}


NUM_STEPS = 2  # the second step reads the optimizer state the first one wrote
ULP = 2.0**-23  # float32's relative spacing


def steps(config, mesh, ds, num_steps=NUM_STEPS, nudge=0.0, compiled=None):
  """The variables (numpy) after each of `num_steps` training steps, and the jitted step
  (pass it back as `compiled` to run the same computation again without a recompile);
  `nudge` scales the initial parameters by (1 + nudge): a float32-rounding-sized change
  of the start."""
  members = ensemble.create(config, ds.num_classes)
  tx, _ = train.make_optimizer(config, num_steps)
  state = train.init_state(config, members, tx, ds.input_shape)
  if nudge:
    state = state.replace(variables=jax.tree.map(lambda a: a * (1 + nudge), state.variables))
  state = sharding.place_state(state, mesh)
  step = compiled or train.make_train_step(config, members, tx, num_steps, mesh)
  batches = data.train_batches(ds, config.batch_size, seed=0, epoch=0)
  out = []
  for i in range(num_steps):
    x, y = sharding.place_batch(next(batches), mesh)
    state, _ = step(state, x, y, jax.random.key(i))
    out.append(jax.tree.map(np.asarray, state.variables))  # the state is donated
  return out, state, step


def max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda p, q: float(np.max(np.abs(p - q))), a, b)))


def main():
  assert jax.device_count() == 8, jax.device_count()
  result = {}
  for method in MESHES:
    settings = dict(method=method, num_members=4, batch_size=64)
    # vmap: one member traced (unroll's compile is twice as long); `map`, the members one by
    # one, is the other reduction order of the sensitivity.
    config = tiny_config(member_strategy='vmap', **settings)
    ds = data.load_dataset(config)
    base, _, compiled = steps(config, None, ds)
    # The computation's own float sensitivity, on this machine: the same steps on one device
    # from parameters moved by one ulp, and with the members mapped (another reduction
    # order). A mesh may differ from one device by about that much and no more.
    others = [
      steps(config, None, ds, nudge=ULP, compiled=compiled)[0],
      steps(tiny_config(member_strategy='map', **settings), None, ds)[0],
    ]
    sensitivity = [max(max_diff(b, o[t]) for o in others) for t, b in enumerate(base)]
    for member, size in MESHES[method]:
      mesh = sharding.make_mesh(member, size, config.num_members)
      variables, state, _ = steps(config, mesh, ds)
      leaves = jax.tree.leaves(state.variables)
      result[f'{method} {member}x{size}'] = dict(
        max_abs_diff=[max_diff(v, b) for v, b in zip(variables, base)],
        sensitivity=sensitivity,
        scale=max(float(np.max(np.abs(a))) for a in jax.tree.leaves(base[-1])),
        num_devices=len(leaves[0].sharding.device_set),
        specs=sorted({str(a.sharding.spec) for a in leaves}),
      )
  # LPD's keep rates (bin counts over all members and the batch) of features split over
  # both axes are those of one device, bit for bit.
  h = jax.random.exponential(jax.random.key(0), (4, 64, 32))
  one = dropout.lpd_keep_rates(h)
  mesh = sharding.make_mesh(2, 4, 4)
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('member', 'data'))
  split = dropout.lpd_keep_rates(jax.device_put(h, spec))
  result['keep rates 2x4'] = dict(
    max_abs_diff=float(np.max(np.abs(np.asarray(split) - np.asarray(one)))),
    num_devices=len(split.sharding.device_set),
  )
  print('RESULT ' + json.dumps(result))


def suites(out, workdir):
  """Every suite of multiprocess_check.SUITES on `workdir`, on 1 and on 8 devices."""
  assert jax.device_count() == 8, jax.device_count()
  saved = loading.read_config(workdir).config
  for devices in (1, 8):
    evaluate.evaluate(multiprocess_check.suites_config(saved, devices, workdir, out), workdir)


if __name__ == '__main__':
  main() if sys.argv[1] == 'steps' else suites(*sys.argv[2:4])
