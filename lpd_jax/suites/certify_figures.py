"""The figures of the `certify` report: Figure 2's scatter of each sample's minimal lower
bound per bound method (with the margin a PGD reaches), and the certified fraction against
eps."""

from lpd_jax.suites.common import pct


def scatter(ax, result, size=8, legend='small'):
  """Figure 2 on `ax`: each sample's minimal lower bound, one series per bound method, and
  the minimal margin a PGD reaches (an upper bound; also `lpd_jax.compare`'s panels)."""
  for method, r in result['methods'].items():
    lower = r['minimal_lower_bound']
    label = f'{method} ({pct(r["certified_fraction"])}%)'
    ax.scatter(range(len(lower)), lower, s=size, label=label)
  if result.get('pgd_minimal_margin') is not None:  # the upper bound beside the lower ones
    reached = result['pgd_minimal_margin']
    ax.scatter(
      range(len(reached)),
      reached,
      s=size,
      marker='_',
      color='black',
      label=f'PGD-{result["pgd"]["steps"]} margin (upper bound)',
    )
  ax.axhline(0, color='black', lw=1)
  ax.set_yscale('symlog', linthresh=1e-2)
  ax.set_xlabel('sample')
  ax.set_ylabel('minimal lower bound (symlog)')
  ax.legend(fontsize=legend)


def plot_scatter(result):
  """Figure 2: each sample's minimal lower bound, one series per bound method."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6.4, 4), layout='constrained')
  ax = fig.subplots()
  scatter(ax, result)
  ax.set_title(
    f'{result["dataset"]} {result["method"]} (K = {result["num_members"]}): certified '
    f'robustness at eps {result["eps"]:g}'
  )
  return fig


def plot_curve(result):
  """Certified fraction (%) against eps (log2 axis), one line per bound method."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(5, 3.8), layout='constrained')
  ax = fig.subplots()
  for method, points in result['curve'].items():
    ax.plot(
      [p['eps'] for p in points],
      [100 * p['certified_fraction'] for p in points],
      'o-',
      label=method,
    )
  ax.set_xscale('log', base=2)
  ax.set_ylim(-3, 103)
  ax.set_xlabel(r'$\epsilon$ ($L_\infty$)')
  ax.set_ylabel('certified (%)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize='small')
  ax.set_title(f'{result["dataset"]} {result["method"]}: {result["num_examples"]} samples')
  return fig
