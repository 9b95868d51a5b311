"""Downloading one archive over HTTP(S) with Python's standard library: a progress bar,
resumption of a cut download (HTTP range requests), the published size and MD5 checked.

Every failure is one DataError that says what was kept and what to do: a cut connection
keeps `<archive>.part` (the next fetch resumes it), a checksum mismatch moves the file aside
(never deletes it), no network and HTTP errors name the URL and `--from`, a full disk names
the folder and the bytes still needed.
"""

import errno
import hashlib
import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.request

from tqdm.auto import tqdm

from lpd_jax.errors import DataError

CHUNK = 1 << 20  # bytes read per call
TIMEOUT_S = 60  # a connection silent this long counts as cut


def _mb(n):
  return f'{n / 1e6:,.1f} MB'


def md5(file_path):
  """Hex MD5 of a file, read in chunks."""
  digest = hashlib.md5()
  with open(file_path, 'rb') as f:
    for block in iter(lambda: f.read(CHUNK), b''):
      digest.update(block)
  return digest.hexdigest()


def verify(file_path, size, md5_hex, *, move_aside):
  """DataError unless the file has the published size and MD5.

  A wrong size is reported as a truncated (or overlong) file; a wrong MD5 with the same
  size as a damaged or substituted file. With `move_aside`, the file is renamed to
  `<file>.bad-<its md5 prefix>` (kept for inspection, out of the next fetch's way).
  """
  have = os.path.getsize(file_path)
  if size and have != size:
    what = 'truncated (an incomplete download?)' if have < size else 'longer than published'
    actual = None
  else:
    actual = md5(file_path)
    if actual == md5_hex:
      return
    what = f'damaged or not the published archive (MD5 {actual}, published {md5_hex})'
  kept = ''
  if move_aside:
    actual = actual or md5(file_path)
    aside = f'{file_path}.bad-{actual[:8]}'
    os.replace(file_path, aside)
    kept = f'; moved aside to {aside}, the next fetch downloads it again'
  raise DataError(f'{file_path} is {_mb(have)} of {_mb(size)}: {what}{kept}')


def free_bytes(folder):
  try:
    return shutil.disk_usage(folder).free
  except OSError:
    return None


def _open(url, start):
  request = urllib.request.Request(url, headers={'User-Agent': 'lpd-jax'})
  if start:
    request.add_header('Range', f'bytes={start}-')
  return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def fetch(url, dest, size, *, source_hint):
  """Downloads `url` to `dest`, resuming `dest + '.part'` if an earlier fetch was cut.

  Args:
    url: where the archive is published.
    dest: the finished file's path; the bytes arrive in `dest.part` and it is renamed when
      complete (its checksum is the caller's: `verify`).
    size: the published size in bytes (the bar's total, the disk-space check).
    source_hint: how to get the file by other means (`--from`), for the messages.
  """
  part = dest + '.part'
  have = os.path.getsize(part) if os.path.exists(part) else 0
  free = free_bytes(os.path.dirname(dest))
  if free is not None and size and free < size - have:
    raise DataError(
      f'not enough disk space in {os.path.dirname(dest)}: the download needs '
      f'{_mb(size - have)} more, {_mb(free)} free. Free space or pass another --data_dir'
    )
  try:
    response = _open(url, have)
  except urllib.error.HTTPError as e:
    if e.code == 416 and size and have == size:  # the part is already whole
      os.replace(part, dest)
      return
    raise DataError(
      f'{url} answered HTTP {e.code} {e.reason}. Download it by other means and pass {source_hint}'
    ) from None
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, 'reason', None) or e
    raise DataError(
      f'cannot reach {url} ({reason}). Without internet here, download that file on another '
      f'machine and pass {source_hint}'
    ) from None
  with response:
    if have and response.status != 206:  # the server ignored the range: start over
      have = 0
    total = have + int(response.headers.get('Content-Length') or 0) or size
    resumed = f' (resuming at {_mb(have)})' if have else ''
    print(f'downloading {url} to {dest}{resumed}', flush=True)
    _copy(response, part, have, total, url)
  got = os.path.getsize(part)
  if total and got < total:
    raise DataError(
      f'the download of {url} was cut at {_mb(got)} of {_mb(total)} (the connection closed '
      f'early); {part} is kept: rerun the same command to resume'
    )
  os.replace(part, dest)


def _copy(response, part, have, total, url):
  """Streams the response into `part` (appending from `have`), drawing a bar on a terminal
  and a line per tenth where none is drawn."""
  bar = tqdm(
    total=total or None,
    initial=have,
    unit='B',
    unit_scale=True,
    desc=os.path.basename(part[: -len('.part')]),
    disable=None,  # no bar in a log or a pipe: the lines below instead
  )
  first, next_line, started = have, have + (total or 0) / 10, time.perf_counter()
  try:
    with open(part, 'ab' if have else 'wb') as f:
      while True:
        try:
          block = response.read(CHUNK)
        except (http.client.IncompleteRead, OSError) as e:  # ConnectionError, timeouts
          f.flush()
          raise DataError(
            f'the download of {url} was cut at {_mb(f.tell())} of {_mb(total)} '
            f'({type(e).__name__}); {part} is kept: rerun the same command to resume'
          ) from None
        if not block:
          break
        f.write(block)
        have += len(block)
        bar.update(len(block))
        if bar.disable and total and have >= next_line:
          rate = (have - first) / max(time.perf_counter() - started, 1e-9)
          print(f'  {_mb(have)} of {_mb(total)} ({rate / 1e6:.1f} MB/s)', file=sys.stdout)
          next_line += total / 10
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    raise DataError(
      f'the disk holding {part} is full ({_mb(os.path.getsize(part))} written); the partial '
      'download is kept: free space and rerun the same command to resume'
    ) from None
  finally:
    bar.close()
