"""Suite 'sweep': accuracy under PGD as eps doubles (Figure 3), with its plot."""

from lpd_jax import attacks, methods, predict
from lpd_jax.errors import ConfigError
from lpd_jax.progress import StageBar
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  accuracies,
  attack_key,
  describe,
  figure_png,
  grid,
  markdown_table,
  names,
  pct,
)
from lpd_jax.suites.samples import array_samples, attack_rows, per_sample_npz

NORMS = ('linf', 'l2')
_NORM_LABELS = {'linf': 'L-inf', 'l2': 'L2'}

DEFAULTS = dict(
  norms='linf,l2',  # PGD norms, one plot panel each
  linf_eps=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64),  # 0.005 * 2^i
  l2_eps=(0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8),  # 0.1 * 2^i
  steps=10,  # PGD steps (L-inf step eps / 10; L2 step 2.5 eps / steps)
)


def run(ens, ctx):
  """For each norm of eval.sweep.norms, PGD (eval.sweep.steps steps, random start) at each
  eps of eval.sweep.<norm>_eps. Files: `eval_sweep.png`, one panel per norm, accuracy (%)
  against eps on a log2 axis, clean accuracy dashed; `sweep_per_sample.npz` (test_index,
  labels, clean and per norm and eps the correctness, `<norm>_<eps>`).

  JSON: dataset, method, num_members, num_examples, clean_accuracy, steps and sweep
  {norm: [{eps, accuracy, accuracy_clean_correct}]} (the driver adds 'files', the plot's name).
  """
  config, cfg, images, labels = ctx.config, ctx.cfg, ctx.images, ctx.labels
  norms = names(cfg, 'norms', NORMS, 'sweep')
  grids = {norm: grid(cfg, f'{norm}_eps', 'sweep') for norm in norms}
  steps = int(cfg.steps)
  batch_size = ctx.batch_size
  per_row = predict.num_batches(len(labels), batch_size)
  pgd = attacks.REGISTRY['pgd'].fn
  sweep, per_sample = {}, {}
  with StageBar(total=per_row * (1 + sum(len(g) for g in grids.values())), desc='PGD sweep') as bar:
    (clean,) = predict.attack_correct(
      None, {}, ens.log_predict, images, labels, batch_size=batch_size, bar=bar, mesh=ctx.mesh
    )
    for norm in norms:
      key = attack_key(config.seed, 'pgd' if norm == 'linf' else f'pgd_{norm}')
      sweep[norm] = []
      for eps in grids[norm]:
        bar.stage(f'{norm} {eps:g}')
        (correct,) = predict.attack_correct(
          pgd,
          dict(eps=eps, steps=steps, norm=norm),
          ens.log_predict,
          images,
          labels,
          key=key,
          batch_size=batch_size,
          bar=bar,
          mesh=ctx.mesh,
        )
        acc, acc_clean = accuracies(correct, clean)
        per_sample[f'{norm}_{eps:g}'] = correct
        sweep[norm].append(dict(eps=eps, accuracy=acc, accuracy_clean_correct=acc_clean))
  result = dict(
    dataset=config.dataset,
    method=config.method,
    num_members=ens.num_members,
    num_examples=len(labels),
    clean_accuracy=float(clean.mean()),
    steps=steps,
    sweep=sweep,
  )
  lines = [
    f'PGD-{steps} eps sweep (Figure 3), accuracy (%) on {describe(ens, ctx)}; '
    f'clean {pct(result["clean_accuracy"])}'
  ]
  for norm in norms:
    rows = [
      (f'{r["eps"]:g}', pct(r['accuracy']), pct(r['accuracy_clean_correct'])) for r in sweep[norm]
    ]
    lines += [
      '',
      markdown_table(
        (f'eps ({_NORM_LABELS[norm]})', 'Accuracy (%)', 'Accuracy on clean-correct (%)'), rows
      ),
    ]
  lines += ['', 'Plot: eval_sweep.png']
  return Report(
    result,
    '\n'.join(lines),
    {
      'eval_sweep.png': figure_png(plot_sweep(result)),
      'sweep_per_sample.npz': per_sample_npz(labels, clean=clean, **per_sample),
    },
    metrics(result),
  )


def metrics(result):
  """Clean accuracy, and accuracy (all points, clean-correct) at each norm and eps."""
  n, steps = result['num_examples'], result['steps']
  n_clean = round(result['clean_accuracy'] * n)
  out = [Metric('clean', 'clean', result['clean_accuracy'], 'pct', n, 'clean')]
  for norm, points in result['sweep'].items():
    how = f'PGD-{steps} (random start, CE on eq. 1)'
    for p in points:
      name, coords = f'{_NORM_LABELS.get(norm, norm)} {p["eps"]:g}', dict(norm=norm, eps=p['eps'])
      out += [
        Metric(f'{norm}/{p["eps"]:g}/accuracy', name, p['accuracy'], 'pct', n, how, coords),
        Metric(
          f'{norm}/{p["eps"]:g}/accuracy_clean_correct',
          f'{name} (clean-correct)',
          p['accuracy_clean_correct'],
          'pct',
          n_clean,
          how,
          coords,
        ),
      ]
  return out


def plot_sweep(result):
  """Figure 3 for one model: accuracy (%) against eps (log2 axis), one panel per norm."""
  from matplotlib.figure import Figure  # no pyplot: no global backend state
  from matplotlib.ticker import FixedLocator, NullLocator

  norms = list(result['sweep'])
  fig = Figure(figsize=(4.6 * len(norms), 3.8), layout='constrained')
  axes = fig.subplots(1, len(norms), squeeze=False)[0]
  name = f'{methods.display_name(result["method"])} (K = {result["num_members"]})'
  for ax, norm in zip(axes, norms):
    eps = [r['eps'] for r in result['sweep'][norm]]
    acc = [100 * r['accuracy'] for r in result['sweep'][norm]]
    ax.plot(eps, acc, 'o-', label=name)
    ax.axhline(100 * result['clean_accuracy'], color='gray', ls='--', lw=1, label='clean')
    ax.set_xscale('log', base=2)
    ax.xaxis.set_major_locator(FixedLocator(eps))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f'{e:g}' for e in eps], rotation=45)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    label = r'$L_\infty$' if norm == 'linf' else r'$L_2$'
    ax.set_title(f'PGD-{result["steps"]}, {label}')
    ax.set_xlabel(rf'$\epsilon$ ({label}, log$_2$ scale)')
    ax.set_ylabel('accuracy (%)')
    ax.legend(loc='lower left', fontsize='small')
  fig.suptitle(f'{result["dataset"]}: accuracy under PGD, {result["num_examples"]} test images')
  return fig


def validate(config, cfg):
  for norm in names(cfg, 'norms', NORMS, 'sweep'):
    grid(cfg, f'{norm}_eps', 'sweep', upper=1.0 if norm == 'linf' else None)
  if cfg.steps < 1:
    raise ConfigError(f'eval.sweep.steps must be >= 1, got {cfg.steps}')


def per_sample(result, load):
  """Clean and each norm and eps's correctness per test image (sweep_per_sample.npz), on all
  points and on the clean-correct ones."""
  rows = [
    (f'{norm}/{p["eps"]:g}', f'{norm}_{p["eps"]:g}')
    for norm, points in result['sweep'].items()
    for p in points
  ]
  arrays = load('sweep_per_sample.npz')
  out = attack_rows(arrays, rows, 'clean')
  if out:
    out['clean'] = array_samples(arrays, 'clean')
  return out


SUITE = Suite('sweep', run, DEFAULTS, validate, metrics, per_sample)
