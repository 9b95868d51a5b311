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
_hits = [0]


def _count_hits(event, **kwargs):
  if event == _CACHE_HIT_EVENT:
    _hits[0] += 1


jax.monitoring.register_event_listener(_count_hits)


def hits():
  """How many compiles this process has read from the persistent cache so far."""
  return _hits[0]


def outcome(hits_before):
  """'read from the compilation cache' if a compile since `hits()` was `hits_before` hit
  the cache, else 'compiled'."""
  return 'read from the compilation cache' if hits() > hits_before else 'compiled'


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
