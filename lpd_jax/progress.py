"""Feedback on long work: one line per start-up phase with the time it took, and progress
bars whose stages (an attack at an eps) are also lines where no bar can be drawn.

Inside one long call (an attack's steps, a certification's backward passes) a suite that
asks for it (`listening`) gets the call's own count (`units`, `tick`): on the bar's postfix,
or a line every INTERVAL_S with an ETA after the first unit; a library call stays quiet."""

import contextlib
import sys
import threading
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


# -- Progress inside one long call: an attack's steps, a certification's backward passes ------

# Seconds between two progress lines (or bar redraws) inside a long call; tests set it to 0
# (a line at every unit of work).
INTERVAL_S = 20.0
# Seconds a chunk of a loop split on the host aims at (`attacks.common.host_loop`): the units
# a line can report move at least this often once the first chunk (with its compile) is done.
CHUNK_S = 5.0
# Seconds between the watcher's looks at an open count: where one unit runs long (a compile),
# it still prints the elapsed time every INTERVAL_S.
WATCH_S = 1.0

_OPEN = {'listener': None, 'count': None}
_LOCK = threading.RLock()  # the count is advanced from host callbacks' threads too


class Count:
  """The units of work of one long call (`units`) and how far it is: '<what>: <done>/<total>
  <unit>, <elapsed> s, ETA <s> s'. The ETA comes after the first unit, from the units after it
  where there are some (the first one holds the compile)."""

  def __init__(self, total, unit, what):
    self.total, self.unit, self.what = int(total), unit, what
    self.done, self.first = 0, None  # first: (time, done) when the first unit ended
    self.start = time.perf_counter()

  def eta(self, now):
    """Seconds left, or None before the first unit is done."""
    if self.first is None:
      return None
    at, done = self.first
    rate = (now - at) / (self.done - done) if self.done > done else (at - self.start) / done
    return rate * max(self.total - self.done, 0)

  def text(self, now):
    elapsed = f'{now - self.start:.0f} s'
    if not self.total:  # a call that counts nothing: its clock
      return f'{self.what}: running, {elapsed}'
    eta = self.eta(now)
    tail = f', ETA {eta:.0f} s' if eta is not None else ' (compiling, or in its first unit)'
    return f'{self.what}: {self.done}/{self.total} {self.unit}, {elapsed}{tail}'

  def tick(self, k=1):
    """`k` more units done."""
    self.reach(self.done + k)

  def reach(self, done):
    """At least `done` units done (a loop over targets marks each target's end)."""
    with _LOCK:
      if done <= self.done or _OPEN['count'] is not self:
        return
      self.done = min(int(done), self.total)
      if self.first is None:
        self.first = (time.perf_counter(), self.done)
      _OPEN['listener'].show(self)


class _Uncounted:
  """The count a nested or unheard `units` block yields: its ticks go nowhere."""

  def tick(self, k=1):
    pass

  def reach(self, done):
    pass


class _Listener:
  """Where a count's progress goes: the bar's postfix on a terminal ('<stage> | <count>'), else
  a line '<desc> | <count>' to stdout, at most every INTERVAL_S; a silent StageBar, nowhere."""

  def __init__(self, desc, bar):
    self.desc, self.bar = desc, bar
    self.lines = bar is None or bar.disable
    self.silent = bar is not None and bar.disable and not getattr(bar, '_stage_lines', True)
    self.last, self.base, self.shown = time.perf_counter(), '', None
    self.stop = threading.Event()

  def show(self, count, force=False):
    now = time.perf_counter()
    if self.silent or (not force and now - self.last < INTERVAL_S):
      return
    self.last = now
    if self.lines:
      print(f'{self.desc} | {count.text(now)}', flush=True)
      return
    postfix = self.bar.postfix or ''
    if postfix != self.shown:  # the stage changed since the last redraw
      self.base = postfix
    self.shown = f'{self.base} | {count.text(now)}' if self.base else count.text(now)
    tqdm.set_postfix_str(self.bar, self.shown)  # tqdm's own: no StageBar line

  def close(self, count):
    if not self.lines and self.bar.postfix == self.shown:
      tqdm.set_postfix_str(self.bar, self.base)

  def watch(self):
    while not self.stop.wait(WATCH_S):
      with _LOCK:
        if _OPEN['count'] is not None:
          self.show(_OPEN['count'])


@contextlib.contextmanager
def listening(desc, bar=None):
  """Within the block, long library calls report how far they are (`units`): on `bar`'s
  postfix where it is drawn, else as lines '<desc> | APGD-T: 300/900 steps, 21 s, ETA 40 s'
  every INTERVAL_S (a silent StageBar: nowhere). Outside it the library stays quiet and runs
  its loops in one program (`listened`)."""
  outer = _OPEN['listener']
  listener = _OPEN['listener'] = _Listener(desc, bar)
  watcher = threading.Thread(target=listener.watch, daemon=True)
  watcher.start()
  try:
    yield listener
  finally:
    listener.stop.set()
    watcher.join()
    _OPEN['listener'] = outer


def listened():
  """Whether progress is asked for (inside `listening`): library calls may then split their
  loops on the host to report them."""
  return _OPEN['listener'] is not None


@contextlib.contextmanager
def units(total, unit, what):
  """A long call's count of its work, `total` `unit`s ('steps') of `what` ('APGD-T'): yields a
  `Count` to `tick` or `reach`. Inside another count (an attack's loop inside its loop over
  targets), or where nobody listens, it yields one that counts nothing: module-level `tick`
  advances the outermost count. A count of `total` 0 is a clock ('<what>: running, 21 s'): a
  count opened inside it takes its place until it ends."""
  outer = _OPEN['count']
  if _OPEN['listener'] is None or (outer is not None and outer.total):
    yield _Uncounted()
    return
  count = Count(total, unit, what)  # (an outer clock, total 0, gives way to it)
  with _LOCK:
    _OPEN['count'] = count
  try:
    yield count
  finally:
    with _LOCK:
      _OPEN['count'] = outer
      _OPEN['listener'].close(count)


def tick(k=1):
  """`k` more units of the open count done; nothing without one. Safe from a host callback's
  thread (`jax.debug.callback`)."""
  with _LOCK:
    count = _OPEN['count']
  if count is not None:
    count.tick(k)
