"""The provenance table: per column, the software and machine that trained its workdirs
(`lpd_jax.provenance`, provenance.json) and whether their reports were evaluated under the
same; a column trained under another provenance than the first column's is marked, since
across machines and versions a run moves like another seed."""

from lpd_jax import provenance
from lpd_jax.compare.tables import one_or_all
from lpd_jax.suites.common import markdown_table

NOT_RECORDED = 'not recorded'
MARK = '†'


def training_entries(column):
  """Every training provenance entry of the column's workdirs (all spans, all seeds)."""
  return [entry for run in column.runs for entry in run.provenance]


def evaluation_entries(column):
  """The provenance of every report of the column's workdirs that recorded one."""
  return [
    report['provenance']
    for run in column.runs
    for report in run.reports.values()
    if isinstance(report.get('provenance'), dict)
  ]


def differing_fields(column, reference):
  """The fields in which any training entry of `column` differs from `reference` (an entry),
  or from another entry of the same column; [] where nothing is recorded."""
  entries = training_entries(column)
  out = set()
  for entry in entries:
    out |= set(provenance.differing(reference, entry)) if reference else set()
    out |= set(provenance.differing(entries[0], entry))
  return [f for f in provenance.FIELDS if f in out]


def evaluated_under(column):
  """'same as trained' | 'differs: <fields>' | 'not recorded' for the column's reports."""
  trained, evaluated = training_entries(column), evaluation_entries(column)
  if not trained or not evaluated:
    return NOT_RECORDED
  fields = {f for e in evaluated for t in trained for f in provenance.differing(t, e)}
  ordered = [f for f in provenance.FIELDS if f in fields]
  return 'same as trained' if not ordered else 'differs: ' + ', '.join(ordered)


def provenance_table(columns):
  """-> (table dict as `tables.build` returns, {column label: differing fields}): rows are
  the FIELDS (one value per column, ' / ' between distinct ones), the cells in which a
  column differs from the first column marked †. A JSON cell: {'values' (per workdir, None
  where nothing was recorded), 'n', 'text', 'differs'}."""
  reference_entries = training_entries(columns[0]) if columns else []
  reference = reference_entries[0] if reference_entries else None
  differs = {col.label: differing_fields(col, reference) for col in columns}
  rows, json_rows = [], []
  for field in provenance.FIELDS:
    cells = []
    for col in columns:
      values = [one_or_all(e.get(field) for e in run.provenance) for run in col.runs]
      values = [v if v != '-' else None for v in values]
      entries = training_entries(col)
      text = one_or_all(e.get(field) for e in entries) if entries else NOT_RECORDED
      marked = field in differs[col.label]
      cells.append(
        dict(values=values, n=sum(v is not None for v in values), text=text, differs=marked)
      )
    rows.append((field, *(c['text'] + (f' {MARK}' if c['differs'] else '') for c in cells)))
    json_rows.append(dict(label=field, cells=cells))
  evaluated = [evaluated_under(col) for col in columns]
  rows.append(('evaluated under', *evaluated))
  json_rows.append(
    dict(
      label='evaluated under',
      cells=[
        dict(values=[text], n=int(text != NOT_RECORDED), text=text, differs=False)
        for text in evaluated
      ],
    )
  )
  caption = (
    'Provenance: the software and machine that trained each column (provenance.json of its '
    'workdirs) and whether its reports were evaluated under the same. Same config, seed and '
    'provenance reproduce bit for bit on CPU; across machines or versions a run moves like '
    'another seed (docs/results.md), so compare such columns within their seed spread.'
  )
  marked = [label for label, fields in differs.items() if fields]
  notes = []
  if marked:
    notes = [
      '',
      f'{MARK} differs from the first column ({columns[0].label}) or within the column: '
      + '; '.join(f'{label}: {", ".join(differs[label])}' for label in marked)
      + '.',
    ]
  markdown = [caption, '', markdown_table(('', *(c.label for c in columns)), rows), *notes]
  table = dict(
    name='provenance',
    caption=caption,
    columns=[c.label for c in columns],
    rows=json_rows,
    markdown='\n'.join(markdown),
  )
  return table, {label: fields for label, fields in differs.items() if fields}
