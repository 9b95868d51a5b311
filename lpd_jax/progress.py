"""Start-up feedback: one line per phase with the time it took (before any progress bar)."""

import contextlib
import time


@contextlib.contextmanager
def phase(message):
  """Prints `message ...` and, when the block ends, the seconds it took, on one line."""
  print(f'{message} ...', end='', flush=True)
  start = time.perf_counter()
  try:
    yield
  except BaseException:
    print(' failed', flush=True)
    raise
  print(f' {time.perf_counter() - start:.1f} s', flush=True)
