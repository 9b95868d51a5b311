"""The one place that names devices.

On one device everything here is a no-op or close to it. With several devices (or
hosts, after `jax.distributed.initialize()`), `make_mesh` lays them out as a
('member', 'data') mesh from config.sharding; training states are split over 'member'
and batches over 'data'. Nothing else in lpd-jax calls `jax.devices()`.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils


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

  Every process passes the whole global batch (each loads the same data in the same seeded
  order) and gives its own devices their rows.
  """
  return batch if mesh is None else split_batch(batch, mesh)


# ---------------------------------------------------------------------------------------
# Evaluation: data parallel. The ensemble is replicated on every device of a ('member',
# 'data') mesh of shape (1, devices) and each global batch split over 'data'; every process
# holds the whole test prefix and gives its devices their rows, so every process computes
# the same Python loop and reads the same gathered results.


def evaluation_mesh(data=-1):
  """The mesh evaluation batches are split over: `data` devices of all processes (-1: all),
  members replicated; None on one device."""
  return make_mesh(1, data, 1)


def data_size(mesh):
  """Devices a batch is split over: the mesh's 'data' axis, 1 without a mesh."""
  return 1 if mesh is None else mesh.shape['data']


def _global(a, mesh, spec):
  """One array (numpy, jax, or PRNG keys) laid out over `mesh` by `spec`, from the same
  global value on every process."""
  if not isinstance(a, (jax.Array, np.ndarray)):
    return a
  named = jax.sharding.NamedSharding(mesh, spec)
  if jax.process_count() == 1:
    return jax.device_put(a, named)
  if isinstance(a, jax.Array) and not a.is_fully_addressable:  # held by several processes
    a = to_host(a) if not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a
  if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
    data = _global(jax.random.key_data(a), mesh, spec)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
  a = np.asarray(a)
  return jax.make_array_from_callback(a.shape, named, lambda index: a[index])


def replicate(tree, mesh):
  """Every array leaf of `tree` (an ensemble, a model function's Partial) on every device
  of `mesh`; unchanged without one. Each process passes the same values (a loaded
  checkpoint)."""
  if mesh is None:
    return tree
  return jax.tree.map(lambda a: _global(a, mesh, jax.sharding.PartitionSpec()), tree)


def split_batch(tree, mesh):
  """A global batch (the same numpy arrays on every process) split over the mesh's 'data'
  axis along its leading axis; committed to `default_device()` without a mesh."""
  if mesh is None:
    return put(tree)
  return jax.tree.map(lambda a: _global(a, mesh, jax.sharding.PartitionSpec('data')), tree)


def to_host(a):
  """A (possibly split) array -> numpy, the global value on every process (gathered from
  the other processes where this one does not hold all of it)."""
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(a)


def initialize_distributed(config=None):
  """`jax.distributed.initialize()`, once per process: with config.coordinator_address,
  num_processes and process_id where set (several processes on one machine:
  coordinator 'localhost:PORT'), else auto-detected (SLURM, Open MPI, k8s, Cloud TPU)."""
  if jax.distributed.is_initialized():
    return
  given = {}
  if config is not None and config.get('coordinator_address'):
    given = dict(
      coordinator_address=config.coordinator_address,
      num_processes=int(config.num_processes),
      process_id=int(config.process_id),
    )
  jax.distributed.initialize(**given)


def process_count():
  """Processes of this run (1 without `jax.distributed`)."""
  return jax.process_count()


def is_main_process():
  """True on the process that writes metrics and messages (process 0)."""
  return jax.process_index() == 0
