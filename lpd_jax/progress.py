"""Feedback on long work: one line per start-up phase with the time it took, and progress
bars whose stages (an attack at an eps) are also lines where no bar can be drawn."""

import contextlib
import sys
import time

from tqdm.auto import tqdm

_LINE = {'open': False}  # a `phase` line printed up to its '...' and not yet ended


def break_line():
  """Ends an open `phase` line, so that what is printed next (a warning) has a line of its
  own; the phase's time then follows on the next line."""
  if _LINE['open']:
    print(flush=True)
    _LINE['open'] = False


@contextlib.contextmanager
def phase(message):
  """Prints `message ...` and, when the block ends, the seconds it took, on one line.

  Yields a dict: a block that sets its 'outcome' ('compiled') gets it printed before the
  time ('... compiled, 8.9 s')."""
  print(f'{message} ...', end='', flush=True)
  _LINE['open'] = True
  start = time.perf_counter()
  said = {}
  try:
    yield said
  except BaseException:
    _LINE['open'] = False
    print(' failed', flush=True)
    raise
  _LINE['open'] = False
  outcome = f' {said["outcome"]},' if said.get('outcome') else ''
  print(f'{outcome} {time.perf_counter() - start:.1f} s', flush=True)


class StageBar(tqdm):
  """A tqdm bar (hidden where stderr is no terminal, as `disable=None` does) whose stages,
  named by `stage` ('PGD 0.02'), are also printed to stdout, one line each, where
  the bar is hidden: a log or a pipe shows '<desc>: <stage> (started after 12.3 s)' as each
  attack begins instead of minutes of silence. `silent=True`: neither bar nor lines (a
  library call whose caller asked for no progress)."""

  def __init__(self, *args, silent=False, **kwargs):
    self._stage_desc = kwargs.get('desc', '')
    self._stage_start = time.perf_counter()
    self._stage_lines = not silent
    kwargs['disable'] = True if silent else kwargs.get('disable')
    super().__init__(*args, **kwargs)

  def stage(self, s):
    """Names the stage now starting: the bar's postfix, or a line where no bar is drawn."""
    self.set_postfix_str(s)

  def set_postfix_str(self, s='', refresh=True):
    if self.disable:
      if not self._stage_lines:
        return None
      elapsed = time.perf_counter() - self._stage_start
      print(f'{self._stage_desc}: {s} (started after {elapsed:.1f} s)', file=sys.stdout, flush=True)
      return None
    return super().set_postfix_str(s, refresh)


class Heartbeat:
  """Where no bar is drawn (stderr is no terminal: a log, a pipe), a line every `every_s`
  seconds saying how far a long loop is, instead of a bar's carriage-return redraws."""

  def __init__(self, desc, total, every_s=30.0):
    self.desc, self.total, self.every_s = desc, total, every_s
    self.start = self.last = time.perf_counter()
    self.quiet = sys.stderr.isatty()  # a terminal has the bar

  def beat(self, done, text=''):
    """Prints '<desc>: <done>/<total> <text> (<elapsed> s)' if `every_s` passed since the last."""
    now = time.perf_counter()
    if self.quiet or now - self.last < self.every_s:
      return
    self.last = now
    print(f'{self.desc}: {done}/{self.total} {text} ({now - self.start:.0f} s)', flush=True)
