"""What `train.py` and `eval.py` share: flags, and one clear line for a user's mistake.

`LPD_JAX_DEBUG=1` in the environment turns every one-line error back into the exception
with its full traceback (for a bug report).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lpd_jax import config as config_lib
from lpd_jax import interrupts, workdir_config
from lpd_jax.errors import USER_ERRORS, Interrupted


def define_flags(config_required):
  config = config_flags.DEFINE_config_file(
    'config', None, 'Path to an ml_collections config file (configs/*.py).', lock_config=True
  )
  workdir = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
  if config_required:
    flags.mark_flags_as_required(['config', 'workdir'])
  else:
    flags.mark_flags_as_required(['workdir'])
  return config, workdir


def with_workdir_config(argv):
  """argv with `--config=<workdir_config.py>:WORKDIR` added when it has no --config.

  The workdir's saved config becomes the base that `--config.*` overrides apply to.
  """
  if any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    return argv
  workdir = flag_value(argv, 'workdir')
  if not workdir:
    return argv  # absl reports the missing --workdir
  return [argv[0], f'--config={workdir_config.__file__}:{workdir}', *argv[1:]]


def debugging():
  """Whether LPD_JAX_DEBUG asks for full tracebacks instead of one-line errors."""
  return os.environ.get('LPD_JAX_DEBUG', '') not in ('', '0')


def _parse_flags(argv):
  """absl's parser, with a bad --config.* override reported in one line (absl lets it escape)."""
  missing = missing_config_file(argv)
  if missing:
    print(missing, file=sys.stderr)
    sys.exit(1)
  try:
    return flags.FLAGS(argv)
  except Exception:
    if debugging():
      raise
    _report_flag_error(argv)
  sys.exit(1)


def _report_flag_error(argv):
  """One `error:` line for the exception being handled while parsing `argv`."""
  try:
    raise
  except USER_ERRORS as e:
    print(f'error: {e}', file=sys.stderr)
  except flags.Error as e:
    cause = e.__cause__ or e.__context__
    if isinstance(cause, USER_ERRORS):  # raised while reading a config file
      print(f'error: {cause}', file=sys.stderr)
    elif cause is not None and str(e).startswith('flag --config='):
      print(f'error: {config_file_problem(argv, cause)}', file=sys.stderr)
    else:
      print(f'error: {e}\nPass --helpfull to see the flags.', file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e.args[0]) if e.args else str(e)
    text = text.strip('\'"').replace("\\'", "'").replace('\\n', ' ').replace('\n', ' ')
    print(f'error: bad --config override: {text}{moved_hint(argv)}', file=sys.stderr)


def flag_value(argv, name):
  """The value of --name in argv (`--name=value` or `--name value`; the last one given, as
  absl takes it), or None."""
  value = None
  for i, a in enumerate(argv[1:], 1):
    if a.startswith(f'--{name}='):
      value = a.split('=', 1)[1]
    elif a == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def missing_config_file(argv):
  """'error: ...' if --config names a file that does not exist (ml_collections would fail
  later, on first use, with a traceback), else None."""
  value = flag_value(argv, 'config')
  path = value.split(':', 1)[0] if value else None
  if path and not os.path.isfile(path):
    return f'error: --config={value}: no config file {path} (from {os.getcwd()}); see configs/'
  return None


def config_file_problem(argv, cause):
  """One line for a --config file whose get_config raised (an unknown variant, a typo in
  the file): the flag and the exception's own last line."""
  text = next((line for line in reversed(str(cause).splitlines()) if line.strip()), '')
  if not text.split(':', 1)[0].endswith(('Error', 'Exception')):
    text = f'{type(cause).__name__}: {text}'
  return f'--config={flag_value(argv, "config")}: {text.strip()}'


def moved_hint(argv):
  """' (eval.paper.cw_steps is now eval.paper.cw.steps)' where argv overrides an eval field
  of the layout before attacks carried their settings (config.MOVED_EVAL_FIELDS), else ''."""
  for arg in argv[1:]:
    path = arg.split('=', 1)[0].removeprefix('--config.').split('.')
    if len(path) == 3 and path[0] == 'eval':
      fields = config_lib.MOVED_EVAL_FIELDS.get(path[1], {})
      if path[2] in fields:
        new = ' and '.join(f'eval.{path[1]}.{p}' for p in fields[path[2]])
        return f' ({".".join(path)} is now {new})'
  return ''


def run(main):
  """app.run with one-line errors for bad flags."""
  app.run(main, flags_parser=_parse_flags)


def _drop_ctrl_c_leftovers(previous):
  """A `sys.unraisablehook` that drops what a Ctrl-C leaves behind in finalisers: the
  KeyboardInterrupt itself where it landed in one (`interrupts` recorded it, and the next
  `interrupts.check` stops the run), and what tqdm's `__del__` raises on a bar whose `__init__`
  it cut short (AttributeError: no 'pos' yet). The interrupt is reported in its one line;
  everything else goes to `previous` (lpd_jax.checkpoint's, then Python's)."""

  def hook(unraisable):
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and interrupts.pending():
      return
    where = getattr(unraisable.object, '__module__', '') or ''
    if isinstance(unraisable.exc_value, AttributeError) and where.startswith('tqdm'):
      return
    previous(unraisable)

  return hook


def run_reporting_user_errors(fn, *args):
  """Calls fn(*args); a user error becomes one line on stderr and exit status 1."""
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  sys.unraisablehook = _drop_ctrl_c_leftovers(sys.unraisablehook)
  try:
    with interrupts.recording():
      result = fn(*args)
      interrupts.check()  # a Ctrl-C swallowed after the last check: still reported as one
    return result
  except USER_ERRORS as e:
    if debugging():
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except Interrupted as e:
    print(f'interrupted: {e}', file=sys.stderr)
    sys.exit(130)
  except KeyboardInterrupt:
    print('interrupted: stopped by Ctrl-C', file=sys.stderr)
    sys.exit(130)
