"""The one place that names devices.

On one device everything here is a no-op or close to it; the performance issue fills
in the ('member', 'data') mesh. Nothing else in lpd-jax calls `jax.devices()`.
"""

import jax


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
