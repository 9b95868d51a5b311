"""Marks on cells that must not be read like their neighbours: a cell computed over another
number of test images than the rest of its row ([n=...]), and one evaluated on another
checkpoint than its workdir's newest ([epoch 14 of 15]: a fallback past a damaged
checkpoint, or an evaluation made while training went on)."""

MIXED_NOTE = (
  'A cell marked [n=...] is computed over another number of test images than other cells of '
  'its row: compare such cells with care (rerun the evaluations on one prefix of the test set).'
)
EPOCH_NOTE = (
  'A cell marked [epoch e of E] comes from a report on the checkpoint of epoch e while its '
  'workdir has trained E epochs (the newest did not verify, or training went on after the '
  'evaluation): rerun eval.py on the workdir for its final numbers.'
)


def _mark_mixed(row, columns, pairs):
  """Appends [n=...] to the cells of a row whose evaluations ran on different numbers of
  test images (a Baseline on 32 images beside an LPD on 359); -> whether it did."""
  if row.test_images is None:
    return False
  per_column = [[row.test_images(r) for r in col.runs] for col in columns]
  if len({n for ns in per_column for n in ns if n is not None}) < 2:
    return False
  for (json_cell, _), ns, i in zip(pairs, per_column, range(len(pairs))):
    json_cell['test_images'] = ns
    present = [n for n in dict.fromkeys(ns) if n is not None]
    if present:
      pairs[i] = (json_cell, f'{pairs[i][1]} [n={"/".join(map(str, present))}]')
  return True


def _mark_epochs(row, columns, pairs):
  """Appends [epoch e of E] to each cell whose report was evaluated on an older checkpoint
  than its workdir's newest; -> whether it did."""
  if row.epochs is None:
    return False
  marked = False
  for i, col in enumerate(columns):
    behind = [row.epochs(r) for r in col.runs]
    behind = [(e, n) for e, n in filter(None, behind) if e is not None and n and e != n]
    if behind:
      pairs[i][0]['evaluated_epochs'] = [list(b) for b in behind]
      text = ', '.join(f'epoch {e} of {n}' for e, n in dict.fromkeys(behind))
      pairs[i] = (pairs[i][0], f'{pairs[i][1]} [{text}]')
      marked = True
  return marked


def mark_cells(row, columns, pairs):
  """Marks the cells (json, text) `pairs` of `row` in place -> the notes the marks need."""
  out = set()
  if _mark_mixed(row, columns, pairs):
    out.add(MIXED_NOTE)
  if _mark_epochs(row, columns, pairs):
    out.add(EPOCH_NOTE)
  return out


def notes(marked):
  """The notes under a table for the marks used in it, in a fixed order."""
  return [line for note in (MIXED_NOTE, EPOCH_NOTE) if note in marked for line in ('', note)]
