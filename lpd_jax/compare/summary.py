"""The comparison's summary sentences, generated from the paired differences and their
intervals (`differences`): 'LPD leads Baseline on Table 4, PGD 0.02 (all) by 12.0 points
(95% CI +5.0 to +19.0; McNemar p = 0.003).' Nothing here is written by hand: a difference
told apart from 0 (its interval excludes 0 and, between single seeds, McNemar's p < 0.05:
`paired.Interval.told_apart`) leads or trails, any other is not told apart from 0."""

# What a table is called in a sentence.
TITLES = {
  'clean': 'clean accuracy',
  'table4': 'Table 4',
  'table5': 'Table 5 (transfer)',
  'table6': 'Table 6',
  'figure3': 'the PGD sweep',
  'robust': 'robust accuracy',
  'certify': 'certification',
}


def _ci(cell, includes_zero=False):
  text = f'95% CI {100 * cell["low"]:+.1f} to {100 * cell["high"]:+.1f}'
  text += ', which includes 0' if includes_zero else ''
  if cell.get('p_value') is not None:
    text += f'; McNemar p = {cell["p_value"]:.2g}'
  return text


def sentence(column, reference, what, cell):
  """One difference (a JSON cell of `differences.difference_cell`: difference, low, high in
  [0, 1] units, excludes_zero, told_apart, p_value or None) as a sentence with its numbers."""
  d = 100 * cell['difference']
  if cell['told_apart']:
    verb = 'leads' if cell['low'] > 0 else 'trails'
    return f'{column} {verb} {reference} on {what} by {abs(d):.1f} points ({_ci(cell)}).'
  return (
    f'{column} and {reference} are not told apart on {what}: {d:+.1f} points '
    f'({_ci(cell, not cell["excludes_zero"])}).'
  )


def difference_rows_of(tables):
  """[(table, table title, row label, row)] of every 'Δ vs R' row of the built tables, in
  table order, but the robust table's per-attack cascade rows ('after apgd-ce ...'): what is
  left after each attack of the cascade is the table's detail, its worst case the headline."""
  out = []
  for table in tables:
    title = TITLES.get(table['name'], table['name'])
    for row in table['rows']:
      of = row.get('of', '').strip()
      if 'reference' in row and not of.startswith('after '):
        out.append((table, title, of, row))
  return out


def differences_of(tables):
  """[(column, reference, what, cell)] of every computed difference of `difference_rows_of`
  (the columns in the order of their table)."""
  out = []
  for table, title, of, row in difference_rows_of(tables):
    for column, cell in zip(table['columns'], row['cells']):
      if 'difference' in cell:
        out.append((column, row['reference'], f'{title}, {of}', cell))
  return out


def summary(tables):
  """The summary section (Markdown lines; [] where no difference was computed): per column
  the rows where it leads or trails its reference, then how many rows it is not told apart
  on, with the first of them as an example."""
  found = differences_of(tables)
  if not found:
    return []
  lines = [
    '## Summary',
    '',
    'Generated from the paired differences below (95% bootstrap intervals; docs/methods.md, '
    '"Differences and intervals"; the robust table\'s per-attack cascade rows are left to the '
    'table):',
    '',
  ]
  for column in dict.fromkeys(c for c, _, _, _ in found):
    mine = [f for f in found if f[0] == column]
    told = [f for f in mine if f[3]['told_apart']]
    lines += [f'- {sentence(*f)}' for f in told]
    rest = [f for f in mine if not f[3]['told_apart']]
    if rest:
      other = ' other' if told else ''
      lines.append(
        f'- {column} and {rest[0][1]} are not told apart on {len(rest)}{other} row(s), e.g. '
        + sentence(*rest[0]).split(' are not told apart on ', 1)[1]
      )
  return lines
