"""What the benchmarks share: timing a call, and where their JSON goes."""

import json
import os
import platform
import statistics
import sys
import time


def write(result, name, backend, out=''):
  """Writes `result` as JSON to `out`, or to benchmarks/out/<name>_<backend>.json
  (git-ignored) when `out` is empty; prints and returns the path."""
  path = out or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'out', f'{name}_{backend}.json'
  )
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {path}')
  return path


def time_calls(call, repeats):
  """Times `call` (which must block until its result is ready): one warm-up call (the
  compile), then `repeats` timed calls. -> (first call's output, first call's seconds,
  the timed calls' seconds, their median)."""
  start = time.perf_counter()
  out = call()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return out, first, times, statistics.median(times)


def machine(args, **fields):
  """The record's header: what ran where (backend, device, cores, versions) and with which
  arguments, then `fields` (results, table, ...)."""
  import jax

  from lpd_jax import sharding

  device = sharding.describe()
  return dict(
    backend=device['backend'],
    device=device['device_kind'],
    num_devices=device['num_devices'],
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    python=sys.version.split()[0],
    jax=jax.__version__,
    args=vars(args),
    **fields,
  )
