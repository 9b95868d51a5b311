"""One exclusive OS lock per resource: a workdir being trained, a dataset being fetched.

`flock` on a lock file: the kernel drops the lock when the holding process ends, however it
ends (SIGKILL included), so a lock is never stale. On a network filesystem without lock
support (some NFS setups) it does not exclude a process on another host.
"""

import contextlib
import os
import socket
import time

try:
  import fcntl
except ImportError:  # Windows: no flock
  fcntl = None


@contextlib.contextmanager
def exclusive(lock_path, busy):
  """Holds an exclusive, non-blocking lock on `lock_path` (created) while the block runs.

  Args:
    lock_path: the lock file; it holds the holder's 'pid P on HOST since TIME'.
    busy: holder description (str) -> the exception to raise when another process holds
      the lock; raised at once, never waited for.
  """
  if fcntl is None:  # no flock on this OS: unguarded
    yield
    return
  f = open(lock_path, 'a+')
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or 'a process that has not written its name yet'
    f.close()
    raise busy(holder) from None
  try:
    f.seek(0)
    f.truncate()
    f.write(
      f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n'
    )
    f.flush()
    yield
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def holder(lock_path):
  """Who holds the lock at `lock_path` ('pid P on HOST since TIME'), or None when nobody
  does (or there is no such file). Takes the lock for an instant when it is free."""
  if fcntl is None or not os.path.isfile(lock_path):
    return None
  with open(lock_path, 'r') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      return f.read().strip() or 'a process that has not written its name yet'
    fcntl.flock(f, fcntl.LOCK_UN)
  return None
