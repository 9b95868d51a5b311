"""Training curves as TensorBoard event files in WORKDIR/tensorboard (`tensorboard
--logdir=WORKDIR`), written with tensorboardX (no TensorFlow). metrics.jsonl stays the
source of truth: each epoch's line is written here too, and a resumed run rewrites the line
of the epoch it resumes from.

Tags and their x axis (the global training step):
  epoch/<field>             every numeric field of an epoch's metrics.jsonl line, at the
                            line's `step` (steps taken by the end of the epoch); a list
                            field as epoch/<field>/member_<k>
  train_step/loss           the loss of the step with 0-based index s, at x = s, every
  train_step/loss_<term>    config.log_every_steps steps (the method's named terms)

A step scalar of epoch E lies below epoch E's line (s < its `step`), so a (re)start from
the checkpoint of epoch E that purges every event at steps >= that line's step (the
SessionLog START of `open_writer`) keeps all of epochs <= E and drops what a killed run
wrote after them; TensorBoard's data server drops a tag's points at and after a step that
is written again, which the rewritten line of epoch E does for every epoch tag.
"""

import os
import sys
import time

from lpd_jax import workdir as workdir_lib

FLUSH_SECONDS = 30  # step scalars reach the disk at least this often (epochs at once)


class MetricWriter:
  """Writes scalars to one new event file; does nothing when made with `events=None`
  (tensorboard off, tensorboardX missing, or not process 0)."""

  def __init__(self, events=None):
    self.events = events  # a tensorboardX EventsWriter (synchronous: no queue, no thread)
    self._flushed = time.monotonic()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def _write(self, step, scalars):
    """One event at `step` holding {tag: float} `scalars` (stored as float32)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
    self.events.write_event(
      Event(wall_time=time.time(), step=int(step), summary=Summary(value=values))
    )

  def write_step(self, step, loss, terms):
    """train_step/loss (a float) and train_step/loss_<name> for `terms` {name: scalar array,
    read to the host here} at x = `step`, the 0-based index of the step just taken.
    Buffered: on disk at the next epoch or within FLUSH_SECONDS."""
    if self.events is None:
      return
    scalars = {'train_step/loss': float(loss)}
    scalars.update({f'train_step/loss_{name}': float(v) for name, v in terms.items()})
    self._write(step, scalars)
    if time.monotonic() - self._flushed > FLUSH_SECONDS:
      self.flush()

  def write_epoch(self, record):
    """The scalars of one metrics.jsonl line (`epoch_scalars`) at x = record['step'], on
    disk when this returns (fsync)."""
    if self.events is None:
      return
    self._write(record['step'], epoch_scalars(record))
    self.flush()

  def flush(self):
    """Writes what is buffered to the event file and fsyncs it."""
    if self.events is not None:
      self.events.flush()
      self._flushed = time.monotonic()

  def close(self):
    """Flushes and closes the event file; the writer writes nothing after."""
    if self.events is not None:
      self.events.close()
      self.events = None


def epoch_scalars(record):
  """{tag: float} of a metrics.jsonl line: epoch/<field> for each number (bools count),
  epoch/<field>/member_<k> for each number of a list field; strings and None are skipped."""
  out = {}
  for field, value in record.items():
    values = value if isinstance(value, list) else [value]
    for k, v in enumerate(values):
      if isinstance(v, (int, float)):
        out[f'epoch/{field}/member_{k}' if isinstance(value, list) else f'epoch/{field}'] = v
  return {tag: float(v) for tag, v in out.items()}


def open_writer(workdir, step, epoch, enabled=True):
  """-> the MetricWriter of a run (re)starting at global step `step` after `epoch` epochs
  (0, 0 for a fresh run): a new event file in WORKDIR/tensorboard that starts with a purge
  of every earlier event at steps >= `step` and then rewrites epoch `epoch`'s metrics.jsonl
  line (if it has one). Not `enabled` -> a writer that writes nothing; without tensorboardX
  one `warning:` line on stderr and the same."""
  if not enabled:
    return MetricWriter()
  try:
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
  except ImportError:
    print(
      'warning: tensorboardX is not installed: no TensorBoard event files '
      '(pip install tensorboardX, or --config.tensorboard=False to silence this)',
      file=sys.stderr,
      flush=True,
    )
    return MetricWriter()
  folder = workdir_lib.path(workdir, workdir_lib.TENSORBOARD_DIR)
  os.makedirs(folder, exist_ok=True)
  # Files are read in name order: events.out.tfevents.<seconds>.<host>.<ns> keeps a restart
  # within the same second after (and apart from) the file before it.
  events = EventsWriter(os.path.join(folder, 'events'), f'.{time.time_ns()}')
  writer = MetricWriter(events)
  start = SessionLog(status=SessionLog.START)  # readers drop earlier events at >= step
  events.write_event(Event(wall_time=time.time(), step=int(step), session_log=start))
  records = [r for r in workdir_lib.read_metrics(workdir) if r.get('epoch') == epoch]
  if epoch and records:
    writer.write_epoch(records[-1])
  writer.flush()
  return writer
