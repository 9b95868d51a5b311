"""Start-up feedback: one line per phase with the time it took (before any progress bar)."""

import contextlib
import time


@contextlib.contextmanager
def phase(message):
  """Prints `message ...` and, when the block ends, the seconds it took, on one line.

  Yields a dict: a block that sets its 'outcome' ('compiled') gets it printed before the
  time ('... compiled, 8.9 s')."""
  print(f'{message} ...', end='', flush=True)
  start = time.perf_counter()
  said = {}
  try:
    yield said
  except BaseException:
    print(' failed', flush=True)
    raise
  outcome = f' {said["outcome"]},' if said.get('outcome') else ''
  print(f'{outcome} {time.perf_counter() - start:.1f} s', flush=True)
