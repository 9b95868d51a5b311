"""Differences with their intervals in compare's tables (lpd_jax.compare.differences): workdirs
built from the trained fixture's ensemble.json with reports and per-sample files written by
hand, so every difference has a closed form: the paired difference, McNemar's exact p, the
interval's ends (binomial quantiles), the refusal of columns on other points, the reference
column, the seeds, the summary sentences and the quantile rows' intervals. No JAX compile."""

import math
import os

import numpy as np
import pytest
from test_compare import cells, fake_workdir, paper_report, table

from lpd_jax import compare
from lpd_jax.compare import differences
from lpd_jax.compare.figures import difference_rows, plot_differences
from lpd_jax.errors import ConfigError

N = 100


def right(*spans, n=N):
  """1/0 correctness [n]: right on the index ranges `spans` ((start, stop) pairs)."""
  out = np.zeros(n, bool)
  for start, stop in spans:
    out[start:stop] = True
  return out


def paper_workdir(trained_workdir, path, clean, pgd, old_file=False, **config):
  """A workdir with a paper report (No Attack, PGD 0.02) and its paper_per_sample.npz; with
  `old_file`, the file as written before test_index (labels and arrays only)."""
  rows = [('none', None, clean.mean()), ('pgd', 0.02, pgd.mean())]
  report = dict(paper_report(rows, n=len(clean)), evaluation='paper', suite='paper')
  report['rows'][1]['accuracy_clean_correct'] = float(pgd[clean].mean())
  workdir = fake_workdir(trained_workdir, path, {('paper', 'raw'): report}, **config)
  arrays = {'labels': np.arange(len(clean)) % 10, 'none': clean, 'pgd_0.02': pgd}
  if not old_file:
    arrays['test_index'] = np.arange(len(clean))
  np.savez(os.path.join(workdir, 'paper_per_sample.npz'), **arrays)
  return workdir


def binomial_quantile(n, p, q):
  total = 0.0
  for k in range(n + 1):
    total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
    if total >= q - 1e-12:
      return k
  return n


def test_each_accuracy_row_gets_its_paired_difference_and_other_points_are_refused(
  trained_workdir, tmp_path
):
  """LPD is right on 8 points more than Baseline under PGD (and equal elsewhere): +8 points,
  McNemar p = 2 / 2^8, the interval the binomial quantiles of Bin(100, 0.08) / 100; equal
  clean columns: +0 [0, 0], p = 1. LPD's file predates test_index (read as the prefix). ADP
  ran on 120 images: not paired, in one line naming both columns and their points."""
  clean = right((0, 60))
  base = paper_workdir(trained_workdir, tmp_path / 'b', clean, right((0, 30)), method='baseline')
  lpd = paper_workdir(trained_workdir, tmp_path / 'l', clean, right((0, 38)), old_file=True)
  adp = paper_workdir(
    trained_workdir, tmp_path / 'a', right((0, 70), n=120), right((0, 40), n=120), method='adp'
  )
  result, markdown, _ = compare.compare([base, lpd, adp])
  t4 = table(result, 'table4')
  assert t4['columns'] == ['Baseline', 'LPD', 'ADP']
  ref, pgd, refused = cells(result, 'table4', 'PGD 0.02 (all): Δ vs Baseline')
  assert ref['reference'] and pgd['difference'] == pytest.approx(0.08)
  assert pgd['discordant'] == [8, 0] and pgd['p_value'] == pytest.approx(2 / 2**8)
  low, high = (binomial_quantile(N, 0.08, q) / N for q in (0.025, 0.975))
  assert abs(pgd['low'] - low) <= 1 / N and abs(pgd['high'] - high) <= 1 / N
  assert pgd['told_apart'] and pgd['points'] == N
  text = f'+8.00 [{100 * pgd["low"]:+.2f}, {100 * pgd["high"]:+.2f}]* p=0.0078'
  assert f'| PGD 0.02 (all): Δ vs Baseline | reference | {text} | not paired |' in markdown
  same = cells(result, 'table4', 'No Attack: Δ vs Baseline')[1]
  assert (same['difference'], same['low'], same['high'], same['p_value']) == (0, 0, 0, 1)
  on_clean = cells(result, 'table4', 'PGD 0.02 (clean-correct): Δ vs Baseline')[1]
  assert on_clean['difference'] == pytest.approx(8 / 60) and on_clean['points'] == 60

  line = (
    'Not paired: Baseline and ADP were evaluated on other test points (Baseline: the first '
    '100 test images; ADP: the first 120 test images; 100 in common).'
  )
  assert refused['refused'] == line
  assert t4['markdown'].splitlines().count(line) == 1  # one line, however many rows
  assert differences.difference_note(differences.Stats()) in t4['markdown']
  assert (
    'LPD leads Baseline on Table 4, PGD 0.02 (all) by 8.0 points (95% CI '
    f'{100 * pgd["low"]:+.1f} to {100 * pgd["high"]:+.1f}; McNemar p = 0.0078).'
  ) in markdown
  assert result['statistics']['summary'][0] == '## Summary'
  assert (
    '- LPD and Baseline are not told apart on 1 other row(s), e.g. Table 4, No Attack: +0.0 '
    'points (95% CI +0.0 to +0.0, which includes 0; McNemar p = 1).'
  ) in markdown

  again, _, files = compare.compare([base, lpd, adp])
  assert again['tables'] == result['tables']  # seeded: same seed, same intervals

  # differences.png: a point and bar per paired cell at its difference and interval (ADP's
  # refused cells and the reference drawn nowhere), filled where the interval excludes 0.
  assert 'differences.png' in files
  (ax,) = plot_differences(result['tables']).axes
  labels = [t.get_text() for t in ax.get_yticklabels()]
  assert labels == ['No Attack', 'PGD 0.02 (all)', 'PGD 0.02 (clean-correct)']
  assert [row[1] for row in difference_rows(result['tables'])] == labels
  drawn = [line for line in ax.lines if line.get_marker() == 'o']
  assert len(drawn) == len(labels)  # one paired column (LPD) per row
  at_pgd = drawn[labels.index('PGD 0.02 (all)')]
  assert at_pgd.get_xdata()[0] == pytest.approx(8.0) and at_pgd.get_markerfacecolor() != 'white'
  ends = [seg[:, 0] for c in ax.collections for seg in c.get_segments()]
  assert any(np.allclose(e, [100 * pgd['low'], 100 * pgd['high']]) for e in ends)
  assert drawn[labels.index('No Attack')].get_markerfacecolor() == 'white'  # [0, 0]

  flipped, markdown, _ = compare.compare([base, lpd], reference='LPD')
  base_cell, _ = cells(flipped, 'table4', 'PGD 0.02 (all): Δ vs LPD')
  assert base_cell['difference'] == pytest.approx(-0.08) and base_cell['p_value'] == 2 / 2**8
  assert 'Baseline trails LPD on Table 4, PGD 0.02 (all) by 8.0 points' in markdown
  with pytest.raises(ConfigError, match=r"--reference='Nope': no such column.*'Baseline'"):
    compare.compare([base, lpd], reference='Nope')


def test_several_seeds_are_resampled_and_a_column_without_files_says_so(trained_workdir, tmp_path):
  clean = right((0, 60))
  base = paper_workdir(trained_workdir, tmp_path / 'b', clean, right((0, 30)), method='baseline')
  seeds = [
    paper_workdir(trained_workdir, tmp_path / f'l{s}', clean, right((0, 30 + 5 * s)), seed=s)
    for s in (1, 2)
  ]
  result, markdown, _ = compare.compare([base, *seeds])
  assert [c['label'] for c in result['columns']] == ['Baseline (seed 0)', 'LPD (2 seeds)']
  row = 'PGD 0.02 (all): Δ vs Baseline (seed 0)'
  _, pgd = cells(result, 'table4', row)
  assert pgd['n'] == 2 and pgd['p_value'] is None  # seeds: no McNemar
  assert pgd['difference'] == pytest.approx(0.075)  # (5 + 10) / 2 points
  assert pgd['low'] <= 0.05 and pgd['high'] >= 0.1  # at least the seed spread

  os.remove(os.path.join(seeds[1], 'paper_per_sample.npz'))
  result, markdown, _ = compare.compare([base, *seeds])
  _, pgd = cells(result, 'table4', row)
  assert pgd['missing'] and differences.MISSING_NOTE in markdown
  assert f'| {row} | reference | n/a |' in markdown

  # A seed with no report at all (a study attacking seed 0 only): the cell is '(1 of 2)' and
  # its difference pairs the seed that has one, with McNemar's p as for one seed.
  os.remove(os.path.join(seeds[1], 'eval_paper.json'))
  result, markdown, _ = compare.compare([base, *seeds])
  assert cells(result, 'table4', 'PGD 0.02 (all)')[1]['n'] == 1
  _, pgd = cells(result, 'table4', row)
  assert pgd['n'] == 1 and pgd['difference'] == pytest.approx(0.05)
  assert pgd['discordant'] == [5, 0] and pgd['p_value'] == pytest.approx(0.0625)
  # Its interval excludes 0 (no point goes the other way) but McNemar's p does not: no mark.
  assert pgd['excludes_zero'] and not pgd['told_apart']
  line = next(x for x in markdown.splitlines() if x.startswith(f'| {row} |'))
  assert '*' not in line and 'LPD (2 seeds) leads' not in markdown
  # A column without the report at all: '-' as its value, and no 'n/a' note.
  adp = fake_workdir(trained_workdir, tmp_path / 'a', {}, method='adp')
  result, markdown, _ = compare.compare([base, *seeds, adp])
  assert 'difference' not in cells(result, 'table4', row)[2]
  assert f'| {row} | reference | +5.00 [' in markdown and differences.MISSING_NOTE not in markdown
  assert next(line for line in markdown.splitlines() if line.startswith(f'| {row} |')).endswith(
    '| - |'
  )


def test_quantile_rows_get_each_columns_interval(trained_workdir, tmp_path):
  """Tables 2-3: each quantile cell is followed by its bootstrap interval, which holds it."""
  rng = np.random.default_rng(0)
  workdirs = []
  for name, method in (('b', 'baseline'), ('l', 'lpd')):
    cosine, norm = rng.normal(0.3, 0.1, 40), rng.lognormal(0, 1, 40)
    quantiles = {str(q): float(np.quantile(cosine, q)) for q in (0.25, 0.5, 0.75)}
    report = dict(
      num_examples=40,
      probe_examples=40,
      ensemble_accuracy=0.9,
      ambiguity_entropy=0.1,
      float64=False,
      gradient_cosine=quantiles,
      gradient_norm={q: float(np.quantile(norm, float(q))) for q in quantiles},
    )
    workdir = fake_workdir(
      trained_workdir, tmp_path / name, {('probes', 'raw'): report}, method=method
    )
    np.savez(
      os.path.join(workdir, 'probes_per_sample.npz'),
      test_index=np.arange(40),
      labels=np.zeros(40, int),
      gradient_cosine=cosine,
      gradient_norm=norm,
    )
    workdirs.append(workdir)
  result, markdown, _ = compare.compare(workdirs)
  for row in table(result, 'table2')['rows'] + table(result, 'table3')['rows']:
    for c in row['cells']:
      assert c['interval'][0] <= c['mean'] <= c['interval'][1], row['label']
  assert differences.quantile_note(differences.Stats()) in table(result, 'table2')['markdown']
  assert not any(r['label'].endswith('Δ vs Baseline') for r in table(result, 'table2')['rows'])
