"""Per-sample files and what each record was computed from, for paired statistics.

A suite's per-sample file (`<suite>_per_sample.npz`, renamed per evaluation by the driver)
holds `test_index` (int [n]: each row's index in the canonical test order), `labels` and the
per-sample arrays it measured (correctness 1/0, bounds, probes). `lpd_jax.compare` pairs two
columns' values by `test_index` (`lpd_jax.compare.differences`).

A suite's `per_sample(report, load) -> {record key: Samples}` (`Suite.per_sample`) says which
values each record of its report is the mean (an accuracy) or a quantile of; `load(file
name)` gives the arrays of one of its files ({name: array}) or None where the workdir lacks
it (reports from before per-sample files, or copies without them).

Files written before `test_index` existed are read as the test prefix 0..n-1: every suite
evaluated the first n test images (`evaluate.test_prefix`), and compare also checks the
labels where both files hold them.
"""

import dataclasses
import io
from typing import Any, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Samples:
  """The per-sample values behind one record.

  Attributes:
    indices: int [n], the test indices, ascending.
    values: float [n]: 1/0 (classified right) for an accuracy, else the measured number.
    statistic: 'mean' (the record is their mean: an accuracy) or a quantile q in [0, 1]
      (np.quantile's linear rule).
    points: which points, in words ('the first 100 test images').
    labels: int [n] or None (not recorded).
  """

  indices: np.ndarray
  values: np.ndarray
  statistic: Any = 'mean'
  points: str = ''
  labels: Optional[np.ndarray] = None

  def subset(self, keep, points):
    """The samples where `keep` (bool [n]) holds, described as `points`."""
    labels = None if self.labels is None else self.labels[keep]
    return Samples(self.indices[keep], self.values[keep], self.statistic, points, labels)


def per_sample_npz(labels, indices=None, **arrays):
  """The bytes of a per-sample file: `test_index` (`indices`; None: the evaluated test
  prefix 0..n-1), `labels` [n] and `arrays` (each [n] or [..., n])."""
  buffer = io.BytesIO()
  indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
  np.savez(buffer, test_index=indices, labels=np.asarray(labels), **arrays)
  return buffer.getvalue()


def prefix_points(n):
  return f'the first {n} test images'


def from_file(arrays, n=None, indices=None):
  """A per-sample file's arrays -> (indices [n], labels [n] or None): its `test_index`, or
  `indices` where given, else (files before test_index) the test prefix 0..n-1, n the length
  of its labels (or `n`)."""
  labels = arrays.get('labels')
  if 'test_index' in arrays:
    indices = arrays['test_index']
  elif indices is None:
    indices = np.arange(len(labels) if labels is not None else n)
  return np.asarray(indices, dtype=np.int64), None if labels is None else np.asarray(labels)


def array_samples(arrays, name, statistic='mean', points=None):
  """Samples of array `name` of a per-sample file ({} -> None where it lacks it)."""
  if name not in arrays:
    return None
  values = np.asarray(arrays[name], dtype=np.float64)
  indices, labels = from_file(arrays, n=values.shape[-1])
  return Samples(indices, values, statistic, points or prefix_points(len(indices)), labels)


def on_clean_correct(samples, clean):
  """The samples restricted to the points right clean (`clean`: the file's 'clean' array)."""
  keep = np.asarray(clean, dtype=bool)
  return samples.subset(keep, f'the {int(keep.sum())} clean-correct of {samples.points}')


def attack_rows(arrays, rows, clean):
  """{key/accuracy, key/accuracy_clean_correct: Samples} of an attack grid: `rows` are
  (record key prefix, array name) pairs, `clean` the name of the clean correctness array;
  rows whose array the file lacks are left out."""
  out = {}
  if arrays is None or clean not in arrays:
    return out
  for key, name in rows:
    found = array_samples(arrays, name)
    if found is not None:
      out[f'{key}/accuracy'] = found
      out[f'{key}/accuracy_clean_correct'] = on_clean_correct(found, arrays[clean])
  return out


def read_npz(path):
  """{name: array} of an .npz file, or None where it is missing or unreadable."""
  try:
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  except (OSError, ValueError):
    return None
