"""Suite 'probes': the paper's Tables 1-3 (section 4) for one checkpoint, and the tables
for several (`markdown_tables`, used by notebooks/probes.ipynb)."""

import numpy as np

from lpd_jax import methods, predict, probes
from lpd_jax.data import to_float
from lpd_jax.errors import ConfigError
from lpd_jax.suites.common import Metric, Report, Suite, markdown_table
from lpd_jax.suites.samples import array_samples, per_sample_npz, prefix_points

DEFAULTS = dict(
  num_examples=2000,  # L_d, L_s on the first N test images of the prefix; -1 = all
  float64=False,  # input gradients and probes in float64
)

QUANTILES = (0.25, 0.5, 0.75)  # the rows of the paper's Tables 2-3


def _one_or_all(values):
  """'a' if all values are equal, else 'a / b / ...' (captions of multi-column tables)."""
  values = list(dict.fromkeys(values))
  return ' / '.join(str(v) for v in values)


def markdown_tables(columns):
  """The paper's Tables 1-3 (section 4) for one or several ensembles, as Markdown.

  Args:
    columns: list of (name, result) pairs, one per ensemble, `result` a dict as
      `run` returns it: num_members (K), num_examples and ambiguity_entropy
      (Table 1), probe_examples (N), float64, and gradient_cosine / gradient_norm
      mapping the quantile level q (float, or its str) to the quantile (Tables 2-3);
      optionally dataset.

  Returns:
    Markdown: Table 1 with a row per ensemble and a column per K (the paper's layout),
    Tables 2-3 with a row per quantile and a column per ensemble, values in scientific
    notation like the paper (3.76e-01).
  """
  names = [name for name, _ in columns]
  results = [r for _, r in columns]
  ks = sorted({r['num_members'] for r in results})
  datasets = [r['dataset'] for r in results if r.get('dataset')]
  lines = [
    'Probes of the ensemble (paper section 4)'
    + (f' on {_one_or_all(datasets)}.' if datasets else '.'),
    '',
  ]

  n_e = _one_or_all(r['num_examples'] for r in results)
  inference = _one_or_all(r.get('inference', 'raw') for r in results)
  lines += [
    f"Table 1. Ambiguity entropy E (eq. 7) of the members' correctness on the first "
    f'{n_e} test images; 0 = members always agree, 1 = maximal disagreement. '
    f'Inference: {inference}.',
    '',
  ]
  rows = [
    [name] + [f'{r["ambiguity_entropy"]:.4f}' if r['num_members'] == k else '' for k in ks]
    for name, r in columns
  ]
  lines.append(markdown_table(['Ensemble method'] + [f'K = {k}' for k in ks], rows))

  n_p = _one_or_all(r['probe_examples'] for r in results)
  precision = _one_or_all('float64' if r['float64'] else 'float32' for r in results)
  captions = {
    'gradient_cosine': 'Table 2. Loss gradient diversity L_d = sum_{i<j} cos<g_i, g_j> '
    '(0 = orthogonal input gradients)',
    'gradient_norm': 'Table 3. Model smoothness L_s = sum_k ||g_k||_2 (smaller is smoother)',
  }
  for probe, caption in captions.items():
    lines += ['', f'{caption}, quantiles over the first {n_p} test images ({precision}).', '']
    levels = list(results[0][probe])
    rows = [
      [f'{float(level):.0%}'] + [f'{list(r[probe].values())[i]:.2e}' for r in results]
      for i, level in enumerate(levels)
    ]
    lines.append(markdown_table(['Q'] + names, rows))
  return '\n'.join(lines)


def run(ens, ctx):
  """Table 1: ambiguity entropy E (eq. 7) on the evaluated test prefix (eval.num_examples).
  Tables 2-3: 25/50/75% quantiles of L_d and L_s over the first eval.probes.num_examples
  images of that prefix (-1: all of it), in float64 if eval.probes.float64, batched by
  eval.batch_size, in the ensemble's inference mode. Files: `probes_per_sample.npz` (the
  per-sample L_d and L_s, the labels and test_index).

  JSON: dataset, method, num_members, num_examples, ensemble_accuracy, ambiguity_entropy,
  probe_examples, float64, quantiles, gradient_cosine and gradient_norm {str(q): value}.
  """
  config, images, labels = ctx.config, ctx.images, ctx.labels
  n = ctx.cfg.num_examples
  n = len(labels) if n is None or n < 0 else min(n, len(labels))
  clean = predict.clean_accuracy(ens, images, labels, ctx.batch_size, progress=True, mesh=ctx.mesh)
  float64 = bool(ctx.cfg.float64)
  x, y = to_float(images[:n]), np.asarray(labels[:n])
  probed = probes.probe_quantiles(
    ens,
    x,
    y,
    batch_size=ctx.batch_size,
    quantiles=QUANTILES,
    float64=float64,
    progress=True,
    mesh=ctx.mesh,
  )
  result = dict(
    dataset=config.dataset,
    method=config.method,
    num_members=ens.num_members,
    num_examples=len(labels),
    ensemble_accuracy=clean['ensemble_accuracy'],
    ambiguity_entropy=float(probes.ambiguity_entropy(clean['member_correct'])),
    probe_examples=n,
    float64=float64,
    inference=ens.inference,
    quantiles=list(QUANTILES),
    **{
      probe: {str(q): v for q, v in probed[probe].items()}
      for probe in ('gradient_cosine', 'gradient_norm')
    },
  )
  return Report(
    result,
    markdown_tables([(methods.label(config), result)]),
    {'probes_per_sample.npz': per_sample_npz(y, **probed['per_sample'])},
    metrics(result),
  )


PROBES = {'gradient_cosine': 'L_d', 'gradient_norm': 'L_s'}


def metrics(result):
  """E (eq. 7) on the evaluated prefix; the quantiles of L_d and L_s over the probed images."""
  n, m = result['num_examples'], result['probe_examples']
  precision = 'float64' if result['float64'] else 'float32'
  out = [
    Metric('ensemble_accuracy', 'ensemble', result['ensemble_accuracy'], 'pct', n),
    Metric('ambiguity_entropy', 'E', result['ambiguity_entropy'], '{:.4f}', n, 'eq. 7'),
  ]
  for probe, symbol in PROBES.items():
    out += [
      Metric(
        f'{probe}/{q}',
        f'{float(q):.0%}',
        value,
        '{:.2e}',
        m,
        precision,
        dict(probe=symbol, quantile=float(q)),
      )
      for q, value in result[probe].items()
    ]
  return out


def validate(config, cfg):
  if cfg.num_examples == 0:
    raise ConfigError('eval.probes.num_examples must be >= 1, or -1 for all, got 0')


def per_sample(result, load):
  """L_d and L_s per probed test image (probes_per_sample.npz); each record a quantile."""
  arrays = load('probes_per_sample.npz')
  if arrays is None:
    return {}
  points = prefix_points(result['probe_examples'])
  return {
    f'{probe}/{q}': found
    for probe in PROBES
    for q in result[probe]
    if (found := array_samples(arrays, probe, float(q), points)) is not None
  }


SUITE = Suite('probes', run, DEFAULTS, validate, metrics, per_sample)
