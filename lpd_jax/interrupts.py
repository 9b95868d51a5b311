"""Ctrl-C that cannot be lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be.
Raised inside a finaliser (a tqdm bar's `__del__`, a weakref callback) it is printed as
'Exception ignored ...' and dropped, and the program runs on to the end. `install` (the
command-line entry points) records every SIGINT before raising; the long loops call `check`
at their boundaries (each training step, each evaluation), so a swallowed Ctrl-C still stops
the work there, through the same one-line report.
"""

import signal

_STATE = {'pending': False}


def _on_sigint(signum, frame):
  del signum, frame
  _STATE['pending'] = True
  raise KeyboardInterrupt


def install():
  """Routes SIGINT through the recorder (main thread only; `cli.run_reporting_user_errors`)."""
  _STATE['pending'] = False
  signal.signal(signal.SIGINT, _on_sigint)


def pending():
  """True once a SIGINT arrived since `install` (it stays so: the process is stopping)."""
  return _STATE['pending']


def check():
  """Raises KeyboardInterrupt where a Ctrl-C arrived that something swallowed; else nothing.
  Call it from the main thread only, at a point where stopping is safe."""
  if _STATE['pending']:
    raise KeyboardInterrupt
