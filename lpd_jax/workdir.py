"""A workdir's files in one place: where each lives, the metadata as a typed record,
metrics.jsonl, atomic writes, and the writability and compatibility checks.

  ensemble.json             `Meta`: the config, num_classes, input_shape and the epochs at
                            which a continuation restarted the learning-rate schedule
  metrics.jsonl             one line per trained epoch (`read_metrics`, `reconcile_metrics`)
  checkpoints/              orbax checkpoints and their manifests (`lpd_jax.checkpoint`)
  damaged_checkpoints/      checkpoints that failed verification, moved aside
  train.lock                the OS lock the training process holds (`training_lock`)
  tensorboard/              TensorBoard event files of the training curves
                            (`lpd_jax.metric_writers`)
  imported.json             where an imported ensemble's weights came from (files, SHA-256,
                            layout: `python -m lpd_jax.import_torch`)
  eval_<name>.json / .md    each evaluation's report (`report_path`, `report_paths`)
  reports_history/          earlier reports an evaluation on other points, settings or
                            weights replaced, with their files (`keep_in_history`)

Knows no model, method or suite: files, JSON and configs only.
"""

import contextlib
import dataclasses
import glob
import json
import os
from typing import Optional

import ml_collections

from lpd_jax import locks
from lpd_jax.errors import CheckpointError

META_FILE = 'ensemble.json'
METRICS_FILE = 'metrics.jsonl'
CHECKPOINTS_DIR = 'checkpoints'
LOCK_FILE = 'train.lock'  # held by the one process that trains the workdir (`training_lock`)
DAMAGED_DIR = 'damaged_checkpoints'  # where training moves damaged checkpoints (never deleted)
HISTORY_DIR = 'reports_history'  # earlier reports replaced by other evaluations (`keep_in_history`)
TENSORBOARD_DIR = 'tensorboard'  # training's event files (`lpd_jax.metric_writers`)
IMPORTED_FILE = 'imported.json'  # the source of imported weights (`lpd_jax.import_torch`)

# Fields that fix the shapes and meaning of the saved parameters, with the value a
# workdir saved before the field existed is taken to have.
MODEL_FIELDS = {
  'dataset': None,
  'model': 'resnet18',
  'num_members': None,
  'width': None,
  'method': None,
}


@dataclasses.dataclass(frozen=True)
class Meta:
  """ensemble.json: what rebuilds a workdir's ensemble without its data.

  Attributes:
    config: the training config, as saved (a ConfigDict of the layout it was written in).
    num_classes: C.
    input_shape: (H, W, c).
    schedule_restarts: epochs at which a continuation (config.continue_training)
      restarted the learning-rate schedule.
    manifests: whether every checkpoint of the workdir has its manifest (written since
      lpd-jax wrote manifests; False for older workdirs): then a checkpoint without a
      readable manifest is damaged, not unverified (`checkpoint.restore`).
  """

  config: ml_collections.ConfigDict
  num_classes: int
  input_shape: tuple
  schedule_restarts: tuple = ()
  manifests: bool = True


def path(workdir: str, name: str) -> str:
  """The path of file `name` of `workdir`."""
  return os.path.join(workdir, name)


def write_text_atomically(file_path: str, text: str) -> None:
  """Writes `text` so that a reader sees the old file or the whole new one."""
  tmp = f'{file_path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, file_path)


def write_json_atomically(file_path: str, value) -> None:
  """Writes JSON so that a reader sees the old file or the whole new one."""
  write_text_atomically(file_path, json.dumps(value))


def read_meta(workdir: str) -> Optional[Meta]:
  """The workdir's Meta, or None if it has no ensemble.json."""
  file_path = path(workdir, META_FILE)
  if not os.path.isfile(file_path):
    return None
  with open(file_path) as f:
    meta = json.load(f)
  return Meta(
    ml_collections.ConfigDict(meta['config']),
    meta['num_classes'],
    tuple(meta['input_shape']),
    tuple(meta.get('schedule_restarts', ())),
    bool(meta.get('manifests', False)),
  )


def write_meta(workdir: str, meta: Meta) -> None:
  """Writes ensemble.json (atomically)."""
  os.makedirs(workdir, exist_ok=True)
  write_json_atomically(
    path(workdir, META_FILE),
    dict(
      config=meta.config.to_dict(),
      num_classes=meta.num_classes,
      input_shape=list(meta.input_shape),
      schedule_restarts=list(meta.schedule_restarts),
      manifests=meta.manifests,
    ),
  )


def read_metrics(workdir: str) -> list:
  """The lines of metrics.jsonl as dicts ([] without the file; a line torn by a kill is
  skipped)."""
  file_path = path(workdir, METRICS_FILE)
  if not os.path.isfile(file_path):
    return []
  records = []
  with open(file_path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except ValueError:
        continue
  return records


def append_metrics(workdir: str, record: dict) -> None:
  """Appends one epoch's line to metrics.jsonl."""
  with open(path(workdir, METRICS_FILE), 'a') as f:
    f.write(json.dumps(record) + '\n')


def reconcile_metrics(workdir: str, last_epoch: int, saved_records: dict) -> None:
  """Rewrites metrics.jsonl with exactly one line per epoch 1..last_epoch that has one.

  Lines of epochs after `last_epoch` (a checkpoint that was moved aside) are dropped, a
  repeated epoch keeps its last line, a torn last line is dropped, and the line of an epoch
  that a kill kept from being written is taken from `saved_records` {epoch: line} (the
  checkpoints' manifests hold them: `checkpoint.save` writes the line there first).
  """
  records = {}
  for record in read_metrics(workdir):
    if record.get('epoch', 0) <= last_epoch:
      records[record['epoch']] = record
  for epoch, record in saved_records.items():
    if epoch <= last_epoch and epoch not in records and record:
      records[epoch] = record
  lines = ''.join(json.dumps(records[e]) + '\n' for e in sorted(records))
  file_path = path(workdir, METRICS_FILE)
  if not os.path.isfile(file_path) or open(file_path).read() != lines:
    write_text_atomically(file_path, lines)


def report_path(workdir: str, name: str) -> str:
  """The JSON report of evaluation `name`."""
  return path(workdir, f'eval_{name}.json')


def report_paths(workdir: str) -> list:
  """Every JSON report of the workdir, sorted."""
  return sorted(glob.glob(path(glob.escape(workdir), 'eval_*.json')))


def keep_in_history(workdir: str, name: str, key: str, files) -> str:
  """Moves the report files `files` of evaluation `name` into
  reports_history/<name>-<key>-<n>/ (n counts earlier ones) -> that folder, relative to
  the workdir. Files that are not there are skipped; nothing is deleted."""
  root = path(workdir, HISTORY_DIR)
  n = len(glob.glob(os.path.join(glob.escape(root), f'{glob.escape(name)}-*')))
  folder = os.path.join(root, f'{name}-{key}-{n + 1}')
  os.makedirs(folder, exist_ok=True)
  for file_name in files:
    if os.path.isfile(path(workdir, file_name)):
      os.replace(path(workdir, file_name), os.path.join(folder, file_name))
  return os.path.relpath(folder, workdir)


def report_test_images(report: dict):
  """How many test images a report's evaluation ran on (reports before 'test_examples' said
  'num_examples')."""
  return report.get('test_examples', report.get('num_examples'))


def describe_report(report: dict) -> str:
  """'359 test images, epoch 15, settings 3f2a...': what a report evaluated, for messages."""
  epoch = (report.get('checkpoint') or {}).get('epoch')
  where = f'epoch {epoch}' if epoch is not None else 'an unrecorded checkpoint'
  key = report.get('evaluation_key', 'unrecorded')
  return f'{report_test_images(report)} test images, {where}, settings {key}'


def report_history(workdir: str) -> list:
  """[(folder, its eval_*.json report as a dict)] of reports_history/, oldest first."""
  out = []
  for folder in sorted(glob.glob(path(glob.escape(workdir), os.path.join(HISTORY_DIR, '*')))):
    for file_path in glob.glob(os.path.join(glob.escape(folder), 'eval_*.json')):
      try:
        with open(file_path) as f:
          out.append((os.path.relpath(folder, workdir), json.load(f)))
      except (OSError, ValueError):
        continue
  return sorted(out, key=lambda item: os.path.getmtime(path(workdir, item[0])))


def check_writable(workdir: str) -> None:
  """CheckpointError in one line if `workdir` cannot be created or written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = path(workdir, f'.write-test-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise CheckpointError(
      f'cannot write to workdir {workdir}: {e.strerror or e}. Choose a --workdir you can write'
    ) from None


def check_compatible(workdir: str, config, saved_config) -> None:
  """Raises CheckpointError if the workdir was trained with a different model."""
  saved = {k: saved_config.get(k, old) for k, old in MODEL_FIELDS.items()}
  diffs = [
    f'{k}: workdir has {saved[k]!r}, config says {config[k]!r}'
    for k in MODEL_FIELDS
    if saved[k] != config[k]
  ]
  if diffs:
    raise CheckpointError(
      f'workdir {workdir} holds a checkpoint of another ensemble ({"; ".join(diffs)}). '
      'Use a new --workdir, or the config it was trained with.'
    )


def training_holder(workdir: str) -> Optional[str]:
  """Which process is training `workdir` right now ('pid P on HOST since TIME'), or None."""
  return locks.holder(path(workdir, LOCK_FILE))


def remove_if_only_lock(workdir: str) -> None:
  """Removes `workdir` if it holds nothing but the training lock (a run that stopped before
  writing anything), so that a failed first command leaves no half-made workdir."""
  try:
    if set(os.listdir(workdir)) <= {LOCK_FILE}:
      for name in os.listdir(workdir):
        os.remove(path(workdir, name))
      os.rmdir(workdir)
  except OSError:
    pass


@contextlib.contextmanager
def training_lock(workdir: str, hold: bool = True):
  """Holds an exclusive OS file lock (flock, `lpd_jax.locks`) on <workdir>/train.lock while a
  run trains.

  The kernel drops the lock when the holding process ends, however it ends (SIGKILL
  included), so a lock is never stale. A second trainer of the same workdir gets a
  one-line CheckpointError naming the holder (pid, host, since when) at once. `hold=False`
  (the processes other than 0 of a multi-host run) takes no lock. Creates the workdir;
  CheckpointError if it cannot be written (`check_writable`).
  """
  check_writable(workdir)
  if not hold:
    yield
    return

  def busy(holder):
    return CheckpointError(
      f'workdir {workdir} is being trained by another process ({holder}); wait for it to '
      'finish (rerun the command then: it resumes), or train into another --workdir'
    )

  with locks.exclusive(path(workdir, LOCK_FILE), busy):
    yield
