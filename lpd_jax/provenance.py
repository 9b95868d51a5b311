"""What a number depends on besides the config and the seed: the software and the machine.

Same config, same seed and same provenance give the same numbers bit for bit on CPU; on
another machine or another jax/XLA version, floating-point rounding (the order of the
reductions, the vector width XLA compiles for) sends training elsewhere, and a run then
moves like another seed (docs/results.md measures it). So every workdir records the
provenance of its training (`provenance.json`: one entry per span of epochs trained under
one provenance), every evaluation report its own, and `lpd_jax.compare` shows both per
column and marks columns trained under a different one.

  collect(dtype)     -> {field: str} for this process (FIELDS, in order)
  record_training(workdir, first_epoch, dtype)
  read_training(workdir) -> [{'from_epoch', field: value}] ([] for older workdirs)
  differing(a, b)    -> the fields in which two provenances differ
"""

import importlib.metadata
import json
import os
import platform

import jax

from lpd_jax import sharding
from lpd_jax.workdir import write_json_atomically

FILE = 'provenance.json'

# The fields, in the order reports show them.
FIELDS = (
  'lpd_jax',
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'numpy',
  'python',
  'backend',
  'devices',
  'processes',
  'cpu',
  'vector_extensions',
  'xla_flags',
  'jax_flags',
  'dtype',
)

# The CPU flags that change what XLA compiles (x86 and ARM): the vector extensions.
VECTOR_FLAGS = (
  'sse4_2',
  'avx',
  'avx2',
  'fma',
  'avx512f',
  'avx512_vnni',
  'avx512_bf16',
  'amx_tile',
  'asimd',
  'sve',
)


def _version(package):
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def _cpuinfo():
  """(model name, set of flags) from /proc/cpuinfo; (platform.processor(), set()) elsewhere."""
  try:
    with open('/proc/cpuinfo') as f:
      text = f.read()
  except OSError:
    return platform.processor() or platform.machine(), set()
  model, flags = '', set()
  for line in text.splitlines():
    key, _, value = line.partition(':')
    key = key.strip()
    if key in ('model name', 'Model', 'cpu model') and not model:
      model = value.strip()
    elif key in ('flags', 'Features') and not flags:
      flags = set(value.split())
  return model or platform.processor() or platform.machine(), flags


def collect(dtype: str = 'float32') -> dict:
  """This process's provenance: {field: str} over FIELDS (`dtype`: the run's config.dtype)."""
  model, flags = _cpuinfo()
  here = sharding.describe()
  jax_flags = {
    name: getattr(jax.config, name, None)
    for name in ('jax_enable_x64', 'jax_default_matmul_precision')
  }
  return dict(
    lpd_jax=_version('lpd-jax'),
    jax=jax.__version__,
    jaxlib=_version('jaxlib'),
    flax=_version('flax'),
    optax=_version('optax'),
    numpy=_version('numpy'),
    python=platform.python_version(),
    backend=here['backend'],
    devices=f'{here["num_devices"]} x {here["device_kind"]}',
    processes=str(jax.process_count()),
    cpu=f'{model} ({os.cpu_count()} cores)',
    vector_extensions=' '.join(f for f in VECTOR_FLAGS if f in flags) or 'unknown',
    xla_flags=os.environ.get('XLA_FLAGS', '') or '(none)',
    jax_flags=', '.join(f'{k}={v}' for k, v in jax_flags.items()),
    dtype=str(dtype),
  )


def differing(a: dict, b: dict) -> list:
  """The FIELDS whose values differ between provenances `a` and `b` (a field one of them
  lacks counts as differing)."""
  return [f for f in FIELDS if a.get(f) != b.get(f)]


def read_training(workdir: str) -> list:
  """The workdir's training provenance: [{'from_epoch': int, field: value}], one entry per
  span of epochs trained under one provenance; [] where none was recorded (older lpd-jax)
  or the file is unreadable."""
  try:
    with open(os.path.join(workdir, FILE)) as f:
      entries = json.load(f)['training']
  except (OSError, ValueError, KeyError, TypeError):
    return []
  return [e for e in entries if isinstance(e, dict)]


def record_training(workdir: str, first_epoch: int, dtype: str) -> dict:
  """Appends this process's provenance for the epochs from `first_epoch` (1-based) when it
  differs from the last recorded one (a resume on the same machine adds nothing); returns it.
  Entries from epochs a resume discards (`first_epoch` at or below theirs) are dropped."""
  now = collect(dtype)
  recorded = read_training(workdir)
  entries = [e for e in recorded if e.get('from_epoch', 0) < first_epoch]
  if not entries or differing(entries[-1], now):
    entries.append(dict(from_epoch=int(first_epoch), **now))
  if entries != recorded:
    write_json_atomically(os.path.join(workdir, FILE), dict(training=entries))
  return now
