"""JAX's persistent compilation cache, on by default, so a second run of the same shapes
skips XLA compilation (the quickstart's first start spends most of its time compiling).

Where: `config.compilation_cache` if set ('off' disables), else the environment
variable LPD_JAX_COMPILATION_CACHE (a folder, or 'off'), else
$XDG_CACHE_HOME/lpd-jax/xla (default ~/.cache/lpd-jax/xla). A cache folder the user
already gave JAX (JAX_COMPILATION_CACHE_DIR or jax.config) is left as it is.
"""

import os

import jax

ENV = 'LPD_JAX_COMPILATION_CACHE'
_CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'  # jax.monitoring's, one per hit
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'  # one per XLA compile or hit
_counts = {'hits': 0, 'compiles': 0}


def _count_hits(event, **kwargs):
  if event == _CACHE_HIT_EVENT:
    _counts['hits'] += 1


def _count_compiles(event, duration, **kwargs):
  if event == _COMPILE_EVENT:
    _counts['compiles'] += 1


jax.monitoring.register_event_listener(_count_hits)
jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def counts():
  """(XLA compiles requested, of them read from the persistent cache) so far, this process
  (a function found in jit's in-memory cache requests none)."""
  return _counts['compiles'], _counts['hits']


def outcome(before):
  """What happened since `counts()` was `before`: 'compiled', 'read from the compilation
  cache', or 'already compiled in this process'."""
  compiles, hits = (now - then for now, then in zip(counts(), before))
  if hits > 0 and hits >= compiles:
    return 'read from the compilation cache'
  return 'compiled' if compiles > 0 else 'already compiled in this process'


def default_dir():
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'lpd-jax', 'xla')


def choose_dir(setting=''):
  """The cache folder for `setting` (config.compilation_cache), or None for 'off'."""
  choice = setting or os.environ.get(ENV, '') or default_dir()
  return None if choice.lower() in ('off', 'none', 'false', '0') else choice


def enable(setting=''):
  """Turns the cache on (see the module docstring). Returns the folder used, or None."""
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  choice = choose_dir(setting)
  if choice is None:
    return None
  try:
    os.makedirs(choice, exist_ok=True)
  except OSError:
    return None  # an unwritable cache folder only costs compile time
  jax.config.update('jax_compilation_cache_dir', choice)
  return choice
