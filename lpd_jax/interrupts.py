"""Ctrl-C that cannot be lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be.
Raised inside a finaliser (a tqdm bar's `__del__`, a weakref callback) it is printed as
'Exception ignored ...' and dropped, and the program runs on to the end. `recording` (the
command-line entry points) records every SIGINT before raising; the long loops call `check`
at their boundaries (each training step, each evaluation), so a swallowed Ctrl-C still stops
the work there, through the same one-line report.
"""

import contextlib
import signal
import threading

_STATE = {'pending': False}


def _on_sigint(signum, frame):
  del signum, frame
  _STATE['pending'] = True
  raise KeyboardInterrupt


@contextlib.contextmanager
def recording():
  """Within the block, SIGINT goes through the recorder; after it, the previous handler is back
  and nothing is pending (`cli.run_reporting_user_errors`). Off the main thread, where Python
  takes no signal handler, the block runs as it is."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGINT, _on_sigint)
  _STATE['pending'] = False
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    _STATE['pending'] = False


def pending():
  """True once a SIGINT arrived within `recording` (until the block ends)."""
  return _STATE['pending']


def check():
  """Raises KeyboardInterrupt where a Ctrl-C arrived that something swallowed; else nothing.
  Call it from the main thread only, at a point where stopping is safe."""
  if _STATE['pending']:
    raise KeyboardInterrupt
