"""TensorBoard event files (`lpd_jax.metric_writers`) read back with TensorBoard's own
reader equal metrics.jsonl, in the trained fixture and after resumes that purge what a
killed run wrote (tests/test_faults.py checks a SIGKILLed CLI run with
`assert_events_equal_metrics`)."""

import glob
import os
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from lpd_jax import metric_writers
from lpd_jax import workdir as workdir_lib


def read_events(workdir):
  """{tag: [(step, value)]} of WORKDIR/tensorboard as TensorBoard's EventAccumulator reads
  it (every event kept, the purges of resumed runs applied)."""
  folder = os.path.join(workdir, workdir_lib.TENSORBOARD_DIR)
  acc = event_accumulator.EventAccumulator(folder, size_guidance={'scalars': 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def assert_events_equal_metrics(workdir):
  """Each tag's steps strictly increase (no duplicates), and the epoch/ tags are exactly
  the numbers of metrics.jsonl, each at its line's step (as float32) -> the events."""
  events = read_events(workdir)
  for tag, points in events.items():
    steps = [s for s, _ in points]
    assert steps == sorted(set(steps)), (tag, steps)
  expected = {}
  for record in workdir_lib.read_metrics(workdir):
    for field, value in record.items():
      if isinstance(value, list):
        for k, v in enumerate(value):
          expected.setdefault(f'epoch/{field}/member_{k}', []).append((record['step'], v))
      elif isinstance(value, (int, float)):
        expected.setdefault(f'epoch/{field}', []).append((record['step'], value))
  assert {t for t in events if t.startswith('epoch/')} == set(expected)
  for tag, points in expected.items():
    assert [s for s, _ in events[tag]] == [s for s, _ in points], tag
    got, want = (np.float32([v for _, v in p]) for p in (events[tag], points))
    np.testing.assert_array_equal(got, want, err_msg=tag)
  return events


def test_the_trained_workdirs_events_equal_its_metrics(trained_workdir):
  """The fixture (3 epochs of 22 steps, log_every_steps 10): epoch scalars at steps 22,
  44, 66 equal to metrics.jsonl, the loss and each named term at steps 9, 19, 31, ..."""
  events = assert_events_equal_metrics(trained_workdir)
  records = workdir_lib.read_metrics(trained_workdir)
  per_epoch = records[0]['step']
  assert [(s, v) for s, v in events['epoch/epoch']] == [(per_epoch * e, e) for e in (1, 2, 3)]
  assert 'epoch/test_member_accuracy/member_2' in events
  expected = [e * per_epoch + i for e in range(3) for i in range(9, per_epoch, 10)]
  terms = [k[len('train_loss_') :] for k in records[0] if k.startswith('train_loss_')]
  assert terms  # LPD's named terms
  for tag in ['train_step/loss'] + [f'train_step/loss_{t}' for t in terms]:
    assert [s for s, _ in events[tag]] == expected, tag
  assert {t for t in events if t.startswith('train_step/')} == {
    'train_step/loss',
    *(f'train_step/loss_{t}' for t in terms),
  }


def _record(epoch, loss, per_epoch=5):
  return dict(
    epoch=epoch,
    step=epoch * per_epoch,
    train_loss=loss,
    test_member_accuracy=[0.5, loss],
    ok=True,
    note='skipped',
    missing=None,
  )


def _epoch(writer, workdir, epoch, loss, write_events=True, per_epoch=5):
  """Steps of epoch `epoch` (1-based) with losses loss + i/10, then its line."""
  for i in range(per_epoch):
    writer.write_step((epoch - 1) * per_epoch + i, loss + i / 10, {'ce': np.float32(loss)})
  workdir_lib.append_metrics(workdir, _record(epoch, loss))
  if write_events:
    writer.write_epoch(_record(epoch, loss))


def test_a_resume_purges_what_a_killed_run_wrote_after_its_checkpoint(tmp_path):
  """Run A writes epochs 1-3 and half of 4, its file torn by the kill; run B resumes from
  epoch 2 (epoch 3's checkpoint moved aside) and is killed after epoch 3's metrics line,
  before its events; run C resumes from epoch 3. TensorBoard's reader sees one value per
  step and tag: epochs 1-2 of A, epoch 3's line of B (written by C from metrics.jsonl)."""
  workdir = str(tmp_path)
  with metric_writers.open_writer(workdir, 0, 0) as a:
    for epoch in (1, 2, 3):
      _epoch(a, workdir, epoch, float(epoch))
    a.write_step(15, 99.0, {'ce': 99.0})
  with open(glob.glob(os.path.join(workdir, 'tensorboard', '*'))[0], 'ab') as f:
    f.write(b'\x30\x00\x00\x00')  # a record the kill cut short
  workdir_lib.reconcile_metrics(workdir, 2, {})
  with metric_writers.open_writer(workdir, 10, 2) as b:
    _epoch(b, workdir, 3, 0.25, write_events=False)
  with metric_writers.open_writer(workdir, 15, 3):
    pass
  assert len(os.listdir(os.path.join(workdir, 'tensorboard'))) == 3
  events = assert_events_equal_metrics(workdir)
  assert events['epoch/train_loss'] == [(5, 1.0), (10, 2.0), (15, 0.25)]
  assert events['epoch/ok'] == [(5, 1.0), (10, 1.0), (15, 1.0)]
  assert not any('note' in t or 'missing' in t for t in events)
  expected = [(s, np.float32(s // 5 + 1 + s % 5 / 10)) for s in range(10)]
  expected += [(10 + i, np.float32(0.25 + i / 10)) for i in range(5)]
  assert events['train_step/loss'] == expected
  ce = [(s, s // 5 + 1.0) for s in range(10)] + [(10 + i, 0.25) for i in range(5)]
  assert events['train_step/loss_ce'] == ce


def test_a_writer_that_is_off_or_lacks_tensorboardx_writes_nothing(tmp_path, monkeypatch, capsys):
  """--config.tensorboard=False (or process > 0): no file, no line; without tensorboardX:
  one warning line, no file."""
  for enabled in (False, True):
    if enabled:
      monkeypatch.setitem(sys.modules, 'tensorboardX.event_file_writer', None)  # ImportError
    with metric_writers.open_writer(str(tmp_path), 0, 0, enabled=enabled) as w:
      w.write_step(0, 1.0, {'ce': 1.0})
      w.write_epoch(_record(1, 1.0))
    assert os.listdir(tmp_path) == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == enabled and all(e.startswith('warning: tensorboardX') for e in err)
