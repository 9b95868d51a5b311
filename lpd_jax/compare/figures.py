"""The comparison's plots: Figure 3 (accuracy under PGD against eps, every column on one
axis per norm, error bars the 95% bootstrap intervals), Figure 2 (each workdir's
certification scatter), the keep-rate and margin drift over training, and the paired
differences to the reference column with their intervals (`differences.png`)."""

import numpy as np

from lpd_jax.compare import paired
from lpd_jax.compare.differences import column_samples
from lpd_jax.compare.summary import difference_rows_of
from lpd_jax.compare.workdirs import RAW
from lpd_jax.suites import certify_figures
from lpd_jax.suites.common import figure_png

NORM_LABELS = {'linf': r'$L_\infty$', 'l2': r'$L_2$'}


def _colors(n):
  from matplotlib import colormaps

  cmap = colormaps['tab10']
  return [cmap(i % 10) for i in range(n)]


def _sweep_curve(run, norm):
  """[(eps, accuracy)] of a run's raw sweep records for `norm`, in record order."""
  records = run.records.get(('sweep', RAW), {}).values()
  return [
    (m.coords['eps'], m.value)
    for m in records
    if m.coords.get('norm') == norm and m.key.endswith('/accuracy')
  ]


class _SweepRow:
  """What `differences.column_samples` reads of a row: a run's samples of one sweep record."""

  def __init__(self, key):
    self.key = key

  def value(self, run):
    return run.value('sweep', RAW, self.key)

  def samples(self, run):
    return run.samples('sweep', RAW, self.key)


def error_bars(column, norm, eps, mean, stats):
  """[2, len(eps)] distances (%) from `mean` to the ends of each point's 95% bootstrap
  interval (`paired.bootstrap_statistic`, points and seeds), or None where a point lacks
  per-sample values (then the sample std over seeds is drawn, as before per-sample files)."""
  bars = []
  for e, m in zip(eps, mean):
    values, _ = column_samples(column, _SweepRow(f'{norm}/{e:g}/accuracy'))
    if values is None:
      return None
    seed = stats.rng_seed('figure3', column.label, norm, e)
    interval = paired.bootstrap_statistic(values, resamples=stats.resamples, seed=seed)
    bars.append((m - 100 * interval.low, 100 * interval.high - m))
  return np.maximum(np.array(bars).T, 0)


def plot_figure3(columns, stats=None):
  """Accuracy (%) under PGD against eps (log2 axis), one axis per norm, a line per column
  (mean over seeds; error bars: the 95% bootstrap interval where the sweep's per-sample
  file is there and `stats` given, else the sample std over seeds)."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import FixedLocator, NullLocator

  runs = [r for c in columns for r in c.runs]
  norms = list(
    dict.fromkeys(
      m.coords['norm']
      for r in runs
      for m in r.records.get(('sweep', RAW), {}).values()
      if 'norm' in m.coords
    )
  )
  if not norms:
    return None
  fig = Figure(figsize=(5.2 * len(norms), 4.2), layout='constrained')
  axes = fig.subplots(1, len(norms), squeeze=False)[0]
  for ax, norm in zip(axes, norms):
    ticks, drawn = set(), set()
    for col, color in zip(columns, _colors(len(columns))):
      curves = [c for c in (_sweep_curve(r, norm) for r in col.runs) if c]
      if not curves:
        continue
      eps = [e for e, _ in curves[0]]
      acc = np.array([[100 * a for _, a in c] for c in curves if [e for e, _ in c] == eps])
      ticks.update(eps)
      bars = acc.std(axis=0, ddof=1) if len(acc) > 1 else None
      found = None
      if stats is not None and len(acc) == len(col.runs):
        found = error_bars(col, norm, eps, acc.mean(axis=0), stats)
      if found is not None or len(acc) > 1:
        drawn.add('95% bootstrap intervals' if found is not None else 'std over seeds')
      bars = bars if found is None else found
      ax.errorbar(
        eps, acc.mean(axis=0), yerr=bars, fmt='o-', color=color, label=col.label, capsize=3
      )
    ax.set_xscale('log', base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f'{e:g}' for e in sorted(ticks)], rotation=45)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    label = NORM_LABELS.get(norm, norm)
    ax.set_xlabel(rf'$\epsilon$ ({label}, log$_2$ scale)')
    ax.set_ylabel('accuracy (%)')
    ax.set_title(f'PGD, {label}' + (f'; bars: {" or ".join(sorted(drawn))}' if drawn else ''))
    ax.legend(fontsize='small')
  return fig


def plot_figure2(columns):
  """The certification scatter of each workdir with a certify report, one panel each."""
  from matplotlib.figure import Figure

  panels = [(col, r) for col in columns for r in col.runs if r.report('certify')]
  if not panels:
    return None
  ncols = min(3, len(panels))
  nrows = -(-len(panels) // ncols)
  fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout='constrained')
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, (col, run) in zip(axes, panels):
    report = run.report('certify')
    certify_figures.scatter(ax, report, size=10, legend='x-small')
    ax.set_title(f'{col.label}\n{run.name}, eps {report["eps"]:g}', fontsize='medium')
  for ax in axes[len(panels) :]:
    ax.set_visible(False)
  return fig


def plot_drift(columns):
  """Per epoch: the mean keep rate over active units, the median member logit margin on
  the test set (raw solid, expected dashed) and their ratio, a color per column."""
  from matplotlib.figure import Figure

  if not any(r.metrics for c in columns for r in c.runs):
    return None
  fig = Figure(figsize=(15, 4), layout='constrained')
  keep_ax, margin_ax, ratio_ax = fig.subplots(1, 3)
  for col, color in zip(columns, _colors(len(columns))):
    for i, run in enumerate(col.runs):
      label = col.label if i == 0 else None
      epochs = [m['epoch'] for m in run.metrics]
      keep = [m.get('train_mean_keep_rate') for m in run.metrics]
      if any(k is not None for k in keep):
        keep_ax.plot(epochs, [np.nan if k is None else k for k in keep], color=color, label=label)
      raw = np.array([m.get('test_median_logit_margin', np.nan) for m in run.metrics], float)
      margin_ax.plot(epochs, raw, color=color, label=label)
      if any('test_median_logit_margin_expected' in m for m in run.metrics):
        exp = np.array(
          [m.get('test_median_logit_margin_expected', np.nan) for m in run.metrics], float
        )
        margin_ax.plot(epochs, exp, color=color, ls='--')
        ratio_ax.plot(epochs, raw / exp, color=color, label=label)
  keep_ax.set_title('mean keep rate over active units (training)')
  margin_ax.set_title('median test logit margin (solid raw, dashed expected)')
  ratio_ax.set_title('margin drift: raw / expected')
  for ax in (keep_ax, margin_ax, ratio_ax):
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='x-small')
    else:  # no column logs it: a method without keep rates
      ax.text(0.5, 0.5, 'no dropout method among the columns', ha='center', transform=ax.transAxes)
  return fig


def difference_rows(tables):
  """[(table title, row label, reference, [(column, cell)])] of every 'Δ vs R' row of the
  built tables whose cells hold an interval (`differences.difference_row`), in table order;
  the robust table's per-attack cascade rows ('after apgd-ce ...') left to the table."""
  out = []
  for table, title, of, row in difference_rows_of(tables):
    cells = [(c, cell) for c, cell in zip(table['columns'], row['cells']) if 'low' in cell]
    if cells:
      out.append((title, of, row['reference'], cells))
  return out


def plot_differences(tables):
  """A forest plot of the paired differences: per 'Δ vs R' row (y) each column's difference
  to the reference column in points, with its 95% bootstrap interval as a bar, filled
  where the difference is told apart from 0 (`paired.Interval.told_apart`); one panel per
  table, a color per column."""
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D

  rows = difference_rows(tables)
  if not rows:
    return None
  names = list(dict.fromkeys(name for name, _, _, _ in rows))
  columns = list(dict.fromkeys(c for _, _, _, cells in rows for c, _ in cells))
  references = ' or '.join(dict.fromkeys(ref for _, _, ref, _ in rows))
  colors = dict(zip(columns, _colors(len(columns))))
  counts = [sum(1 for n, _, _, _ in rows if n == name) for name in names]
  height = max(0.3, 0.09 * len(columns)) * sum(counts) + 1.0 * len(names)
  height += 0.2 * -(-len(columns) // 3)  # the legend's rows
  fig = Figure(figsize=(9, max(3.0, height)), layout='constrained')
  axes = fig.subplots(len(names), 1, squeeze=False, height_ratios=counts)[:, 0]
  offsets = np.linspace(-0.3, 0.3, len(columns)) if len(columns) > 1 else np.zeros(1)
  for ax, name in zip(axes, names):
    mine = [(label, cells) for n, label, _, cells in rows if n == name]
    for y, (_, cells) in enumerate(mine):
      for column, cell in cells:
        at = y + offsets[columns.index(column)]
        d, lo, hi = (100 * cell[k] for k in ('difference', 'low', 'high'))
        ax.errorbar(
          d,
          at,
          xerr=[[max(d - lo, 0)], [max(hi - d, 0)]],  # percentile ends may not straddle it
          fmt='o',
          color=colors[column],
          capsize=2,
          ms=4,
          mfc=colors[column] if cell.get('told_apart') else 'white',
        )
    ax.axvline(0, color='black', lw=0.8)
    ax.set_yticks(range(len(mine)), [label for label, _ in mine], fontsize='small')
    ax.set_ylim(len(mine) - 0.5, -0.5)
    ax.grid(axis='x', alpha=0.3)
    ax.set_title(name, fontsize='medium', loc='left')
  axes[-1].set_xlabel(f'difference to {references} (points; filled: told apart from 0)')
  handles = [Line2D([], [], marker='o', ls='', color=colors[c], label=c) for c in columns]
  # above the panels: inside one it hides the points it would sit on
  fig.legend(handles=handles, fontsize='x-small', loc='outside upper center', ncols=3)
  return fig


def figures(columns, stats=None, tables=()):
  """{file name: PNG bytes} of the plots that have data (`stats`: Figure 3's intervals;
  `tables`: the built tables, whose difference rows make differences.png)."""
  plots = {
    'figure3.png': plot_figure3(columns, stats),
    'figure2.png': plot_figure2(columns),
    'drift.png': plot_drift(columns),
    'differences.png': plot_differences(tables),
  }
  return {name: figure_png(fig) for name, fig in plots.items() if fig is not None}
