"""Checkpoints behind one module: orbax `CheckpointManager` and integrity manifests.

Pytrees in, pytrees out: this module knows no model or method (`lpd_jax.load` composes
them into an Ensemble).

A workdir holds `checkpoints/<epoch>/` with two items, `variables` (stacked params
and batch_stats: all an evaluation needs) and `optimizer` (stacked optimizer state
and step); beside each, `checkpoints/<epoch>.manifest.json` with every array's path,
shape, dtype and CRC-32, written (atomically) before orbax commits the checkpoint. The
workdir's other files (ensemble.json, metrics.jsonl) are `lpd_jax.workdir`'s.

Reading: `restore_newest` restores the newest checkpoint that orbax can read and whose
arrays match their manifest, and reports each newer damaged one in one line. In a
workdir written with manifests (ensemble.json says so: `workdir.Meta.manifests`) a
checkpoint whose manifest is missing or unreadable is damaged; in an older workdir a
checkpoint without one is accepted as orbax reads it.
"""

import contextlib
import hashlib
import json
import logging
import os
import sys
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from lpd_jax import progress, sharding
from lpd_jax import workdir as workdir_lib
from lpd_jax.errors import CheckpointError

MANIFEST_SUFFIX = '.manifest.json'


def manager(workdir, keep=2):
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR)), options=options
  )


def _items(state):
  """Training state (`train.TrainState`: variables, opt_state, step) -> the two saved
  items {'variables', 'optimizer'}."""
  return dict(
    variables=state.variables,
    optimizer={'opt_state': state.opt_state, 'step': state.step},
  )


def digest(tree):
  """{path: {'shape', 'dtype', 'crc32'}} of every array of `tree` (read back to the host)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.ascontiguousarray(sharding.to_host(leaf))  # gathered where processes share it
    out[jax.tree_util.keystr(path)] = dict(
      shape=list(a.shape), dtype=str(a.dtype), crc32=zlib.crc32(a.tobytes())
    )
  return out


def identity(mgr, epoch, variables):
  """What a report says it evaluated: {'epoch', 'step' (the training steps behind it: its
  manifest's metrics line; None for a checkpoint from before manifests), 'digest' (16 hex
  digits of a SHA-256 over every variable's shape, dtype and CRC-32: equal digests, equal
  weights), 'newest_epoch' (the newest checkpoint in the workdir, damaged ones included)}."""
  manifest = read_manifest(mgr, epoch) or {}
  # `restore` verified the variables against their manifest entry: its table is theirs, so
  # the arrays are read and checksummed again only for a checkpoint without one.
  table = (manifest.get('items') or {}).get('variables') or digest(variables)
  table = json.dumps(table, sort_keys=True).encode()
  return dict(
    epoch=int(epoch),
    step=(manifest.get('record') or {}).get('step'),
    digest=hashlib.sha256(table).hexdigest()[:16],
    newest_epoch=max(mgr.all_steps(), default=epoch),
  )


def manifest_path(mgr, epoch):
  return os.path.join(str(mgr.directory), f'{epoch}{MANIFEST_SUFFIX}')


def read_manifest(mgr, epoch):
  """The manifest of `epoch` ({'epoch', 'items', 'record'}), or None if there is none."""
  path = manifest_path(mgr, epoch)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {'unreadable': True}


def save(mgr, epoch, state, record=None):
  """Saves state ({'variables', 'opt_state', 'step'}, stacked leaves) as checkpoint `epoch`.

  The manifest (and `record`, the epoch's metrics line) is written first, then orbax
  commits the checkpoint; a save that fails (read-only or full disk) raises
  CheckpointError and leaves the previous checkpoint as it was.
  """
  items = _items(state)
  os.makedirs(str(mgr.directory), exist_ok=True)
  path = manifest_path(mgr, epoch)
  try:
    workdir_lib.write_json_atomically(
      path, dict(epoch=epoch, items={k: digest(v) for k, v in items.items()}, record=record)
    )
    mgr.save(
      epoch,
      args=ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()}),
    )
    mgr.wait_until_finished()
  except (OSError, ValueError, RuntimeError) as e:
    previous = [s for s in mgr.all_steps() if s < epoch]
    if os.path.isfile(path) and epoch not in mgr.all_steps():
      os.remove(path)  # the manifest of a checkpoint that was never committed
    kept = f'the checkpoint of epoch {max(previous)} is intact' if previous else 'none kept'
    raise CheckpointError(
      f'could not write the checkpoint of epoch {epoch} to {mgr.directory}: '
      f'{_first_line(e)}; training stopped ({kept})'
    ) from None
  kept = set(mgr.all_steps())
  for name in os.listdir(str(mgr.directory)):
    stem = name[: -len(MANIFEST_SUFFIX)]
    if name.endswith(MANIFEST_SUFFIX) and stem.isdigit() and int(stem) not in kept:
      os.remove(os.path.join(str(mgr.directory), name))  # orbax removed that checkpoint


def _first_line(e, limit=160):
  """'Type: first line of the message', cut before TensorStore's spec dump and at `limit`."""
  text = str(e).strip().splitlines()
  text = text[0].split('. See full TensorStore details')[0] if text else ''
  text = text if len(text) <= limit else text[: limit - 3] + '...'
  return f'{type(e).__name__}: {text}'.rstrip(': ')


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs a traceback per unreadable array (absl ERROR); the caller reports one line.
  (The 'Exception ignored' tracebacks of the reads it leaves behind, whenever they are
  collected: `_drop_read_noise`.)"""
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.FATAL)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)


def _is_read_noise(unraisable):
  """What a failed orbax restore leaves behind, reported by Python as 'Exception ignored'
  with a traceback each: its read coroutines, collected with their error, and TensorStore
  callbacks into asyncio loops orbax has closed ('Event loop is closed'), up to a hundred
  per damaged checkpoint, during the restore and after it. `restore` reports the failure
  in one line."""
  code = getattr(unraisable.object, 'cr_code', None)
  if code is not None and 'orbax' in code.co_filename:
    return True
  exc = unraisable.exc_value
  return isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'


def _drop_read_noise(previous):
  """A `sys.unraisablehook` that drops `_is_read_noise` and passes the rest to `previous`."""

  def hook(unraisable):
    if not _is_read_noise(unraisable):
      previous(unraisable)

  hook.drops_read_noise = True
  return hook


class _DropUnretrievedReads(logging.Filter):
  """asyncio logs 'exception was never retrieved', with a traceback, for each array read of
  a failed orbax restore that nobody awaited; `restore` reports the failure in one line."""

  def filter(self, record):
    text = record.getMessage()
    return not ('exception was never retrieved' in text and 'TensorStore' in text)


if not getattr(sys.unraisablehook, 'drops_read_noise', False):
  sys.unraisablehook = _drop_read_noise(sys.unraisablehook)
  logging.getLogger('asyncio').addFilter(_DropUnretrievedReads())


def _abstract(tree):
  """Restore targets: each leaf's shape, dtype and sharding. A leaf without a sharding
  (`jax.eval_shape` output) goes to this process's default device, so a checkpoint
  written by a sharded run (lpd_jax.sharding) restores on one device."""
  one = jax.sharding.SingleDeviceSharding(sharding.default_device())

  def target(leaf):
    leaf_sharding = getattr(leaf, 'sharding', None)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf_sharding or one)

  return jax.tree.map(target, tree)


def _manifests_required(mgr):
  """Whether the workdir of `mgr` was written with a manifest beside every checkpoint
  (`workdir.Meta.manifests`): then a missing manifest is damage, not an older format."""
  meta = workdir_lib.read_meta(os.path.dirname(str(mgr.directory)))
  return meta is not None and meta.manifests


def _verify(restored, manifest, required=False):
  """-> None if every restored item matches its manifest entry, else what differs. A
  missing manifest passes unless `required`."""
  recover = (
    'its arrays cannot be verified without it; if you trust them, restore the manifest from '
    'a copy, or set "manifests": false in ensemble.json to read every checkpoint of the '
    'workdir unverified (as one from before manifests)'
  )
  if manifest is None:
    return f'its manifest is missing ({recover})' if required else None
  if manifest.get('unreadable') or 'items' not in manifest:
    return f'its manifest is unreadable ({recover})'
  for item, tree in restored.items():
    expected = manifest['items'].get(item)
    if expected is None:
      return f'its manifest lacks {item}'
    actual = digest(tree)
    for path, want in expected.items():
      got = actual.get(path)
      if got is None:
        return f'{item}{path} is missing'
      if got != want:
        what = (
          'checksum'
          if got['shape'] == want['shape'] and got['dtype'] == want['dtype']
          else ('shape or dtype')
        )
        return f'{item}{path}: {what} differs from its manifest'
  return None


def restore(mgr, epoch, like_state=None, like_variables=None):
  """Restores and verifies checkpoint `epoch` into the structure of `like_state` (whole
  state) or of `like_variables` (variables only). CheckpointError says what is wrong."""
  if like_state is not None:
    likes = _items(like_state)
  else:
    likes = dict(variables=like_variables)
  args = ocp.args.Composite(**{k: ocp.args.StandardRestore(_abstract(v)) for k, v in likes.items()})
  try:
    with _quiet_orbax():
      out = mgr.restore(epoch, args=args)
  except (ValueError, KeyError, TypeError) as e:
    if _looks_like_mismatch(e):
      raise CheckpointError(
        f'checkpoint {mgr.directory}/{epoch} does not match this model: {_first_line(e)}'
      ) from None
    raise CheckpointError(
      f'checkpoint of epoch {epoch} cannot be read ({_first_line(e)})'
    ) from None
  except Exception as e:  # noqa: BLE001  orbax / tensorstore raise many types for bad files
    raise CheckpointError(
      f'checkpoint of epoch {epoch} cannot be read ({_first_line(e)})'
    ) from None
  restored = {k: out[k] for k in likes}
  problem = _verify(restored, read_manifest(mgr, epoch), _manifests_required(mgr))
  if problem:
    raise CheckpointError(f'checkpoint of epoch {epoch} is damaged: {problem}')
  if like_state is None:
    return restored['variables']
  return like_state.replace(variables=restored['variables'], **restored['optimizer'])


def _looks_like_mismatch(e):
  return 'shape' in str(e).lower() or 'structure' in str(e).lower()


def warn(message):
  """One `warning:` line on stderr, on a line of its own (an open `progress.phase` line is
  ended first)."""
  progress.break_line()
  print(f'warning: {message}', file=sys.stderr, flush=True)


def restore_newest(mgr, like_state=None, like_variables=None, *, before=None):
  """The newest checkpoint that restores and verifies: (epoch, restored).

  Each newer one that does not is reported in one warning line naming the epoch and the
  problem. Raises CheckpointError (listing every problem) when none does.

  Args:
    mgr: the workdir's manager.
    like_state / like_variables: as in `restore`.
    before: only checkpoints of epochs < before (None: all).

  Returns:
    (epoch, restored state or variables, [epochs that failed, newest first]).
  """
  problems, failed = [], []
  for epoch in sorted(mgr.all_steps(), reverse=True):
    if before is not None and epoch >= before:
      continue
    try:
      restored = restore(mgr, epoch, like_state=like_state, like_variables=like_variables)
    except CheckpointError as e:
      problems.append(str(e))
      failed.append(epoch)
      continue
    for message in problems:
      warn(f'{message}; using the checkpoint of epoch {epoch} in {mgr.directory}')
    return epoch, restored, failed
  if not problems:
    raise CheckpointError(f'no checkpoint in {mgr.directory}')
  raise CheckpointError(f'no usable checkpoint in {mgr.directory}: ' + '; '.join(problems))


def move_aside(workdir, mgr, epochs):
  """Moves the checkpoints of `epochs` (and their manifests) to workdir/damaged_checkpoints/,
  so that training can write those epochs again; nothing is deleted."""
  target_root = os.path.join(workdir, workdir_lib.DAMAGED_DIR)
  os.makedirs(target_root, exist_ok=True)
  for epoch in epochs:
    for name in (str(epoch), f'{epoch}{MANIFEST_SUFFIX}'):
      source = os.path.join(str(mgr.directory), name)
      if os.path.exists(source):
        target, n = os.path.join(target_root, name), 1
        while os.path.exists(target):
          target, n = os.path.join(target_root, f'{name}.{n}'), n + 1
        os.replace(source, target)
    warn(f'moved the damaged checkpoint of epoch {epoch} to {target_root}')


def saved_records(mgr):
  """{epoch: its metrics line} from the manifests of the checkpoints of `mgr` (lines a kill
  kept from metrics.jsonl: `workdir.reconcile_metrics`)."""
  out = {}
  for epoch in mgr.all_steps():
    manifest = read_manifest(mgr, epoch)
    if manifest and manifest.get('record'):
      out[epoch] = manifest['record']
  return out
