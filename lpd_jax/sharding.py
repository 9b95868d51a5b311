"""The one place that names devices.

On one device everything here is a no-op or close to it. With several devices (or
hosts, after `jax.distributed.initialize()`), `make_mesh` lays them out as a
('member', 'data') mesh from config.sharding; training states are split over 'member'
and batches over 'data'. Nothing else in lpd-jax calls `jax.devices()`.
"""

import jax
import numpy as np


def default_device():
  """The device single-device work runs on: the first local device of the default backend."""
  return jax.local_devices()[0]


def put(tree):
  """Commits `tree`'s arrays to `default_device()`.

  Outputs of jitted functions are committed to a device; committing inputs too keeps
  clean and adversarial batches on one cache entry of the functions they are fed to.
  """
  return jax.device_put(tree, default_device())


def describe():
  """{'backend', 'device_kind', 'num_devices'} of this process, for benchmark records."""
  return dict(
    backend=jax.default_backend(),
    device_kind=default_device().device_kind,
    num_devices=jax.device_count(),
  )


# ---------------------------------------------------------------------------------------
# Many devices: a ('member', 'data') mesh (jax.sharding; XLA's SPMD partitioner inserts the
# collectives, so every computation keeps its one-device meaning: LPD's statistics over
# all members stay global when members live on different devices).

MESH_AXES = ('member', 'data')


def mesh_shape(member, data, num_members, num_devices=None):
  """(member, data) sizes of the mesh; -1 takes the devices left over. A mesh smaller
  than the machine uses its first member x data devices; (1, 1) is one device.

  Raises ValueError (the message names config.sharding) when the mesh needs more devices
  than there are or the member axis does not divide K.
  """
  num_devices = num_devices or jax.device_count()
  if member == -1 and data == -1:
    raise ValueError('config.sharding: at most one of member and data may be -1')
  if member == -1:
    member = num_devices // max(data, 1)
  if data == -1:
    data = num_devices // max(member, 1)
  if member < 1 or data < 1 or member * data > num_devices:
    raise ValueError(
      f'config.sharding: member x data = {member} x {data} needs more than the '
      f'{num_devices} devices there are (-1: the rest)'
    )
  if num_members % member:
    raise ValueError(
      f'config.sharding.member={member} must divide num_members (K = {num_members}): each '
      'device holds K / member whole members'
    )
  return member, data


def make_mesh(member=1, data=1, num_members=1):
  """A Mesh with axes ('member', 'data') over the devices of all processes, or None for
  one device (everything then runs as it always has)."""
  member, data = mesh_shape(member, data, num_members)
  if member * data == 1:
    return None
  devices = np.asarray(jax.devices()[: member * data]).reshape(member, data)
  return jax.sharding.Mesh(devices, MESH_AXES)


def state_shardings(tree, mesh):
  """Shardings for a training state: leaves with a leading K axis split over 'member'
  (P('member')), scalars (the step) replicated."""
  P = jax.sharding.PartitionSpec
  return jax.tree.map(
    lambda a: jax.sharding.NamedSharding(mesh, P('member') if np.ndim(a) else P()), tree
  )


def place_state(tree, mesh):
  """Commits a training state (or stacked variables) to the mesh; unchanged without one."""
  if mesh is None:
    return tree
  return jax.device_put(tree, state_shardings(tree, mesh))


def place_batch(batch, mesh):
  """Splits a batch's leading axis over 'data' (replicated over 'member').

  With several processes each passes its own share of the global batch
  (`jax.make_array_from_process_local_data`); with one, the whole batch.
  """
  if mesh is None:
    return batch
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  if jax.process_count() > 1:
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(spec, a), batch)
  return jax.device_put(batch, spec)


def initialize_distributed():
  """`jax.distributed.initialize()` (several hosts; auto-detects SLURM, Open MPI, k8s and
  Cloud TPU), once per process."""
  if not jax.distributed.is_initialized():
    jax.distributed.initialize()


def is_main_process():
  """True on the process that writes metrics and messages (process 0)."""
  return jax.process_index() == 0
