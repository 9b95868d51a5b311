"""The `certify` suite's records and Markdown: the certified fractions and bounds per method,
the curve against eps, and what 'crown' was (full CROWN, or capped and where the cap bound)."""

import numpy as np

from lpd_jax.suites.common import Metric, describe, markdown_table, pct
from lpd_jax.suites.samples import Samples, from_file


def metrics(result):
  """The number of samples; per bound method its certified fraction and median minimal lower
  bound; the median clean minimal margin; the certified fraction against eps."""
  n, where = result['num_examples'], f'L-inf eps {result["eps"]:g}, {result["selection"]}'
  out = [Metric('num_examples', 'samples', n, '{:.0f}', n, where)]
  for m, r in result['methods'].items():
    out += [
      Metric(
        f'bound/{m}/certified_fraction',
        f'certified (%), {m}',
        r['certified_fraction'],
        'pct',
        n,
        where,
        dict(method=m),
      ),
      Metric(
        f'bound/{m}/median_minimal_lower_bound',
        f'median minimal lower bound, {m}',
        r['median_minimal_lower_bound'],
        '{:.3g}',
        n,
        where,
        dict(method=m),
      ),
    ]
  out.append(
    Metric(
      'clean_minimal_margin',
      'median clean minimal margin',
      float(np.median(result['clean_minimal_margin'])),
      '{:.3g}',
      n,
      where,
    )
  )
  if result.get('pgd_minimal_margin') is not None:
    out.append(
      Metric(
        'pgd_minimal_margin',
        f'median minimal margin a PGD-{result["pgd"]["steps"]} reaches (upper bound)',
        float(np.median(result['pgd_minimal_margin'])),
        '{:.3g}',
        n,
        where,
      )
    )
  for m, points in result['curve'].items():
    out += [
      Metric(
        f'curve/{m}/{p["eps"]:g}',
        f'certified (%), {m}, eps {p["eps"]:g}',
        p['certified_fraction'],
        'pct',
        n,
        result['selection'],
        dict(method=m, eps=p['eps']),
      )
      for p in points
    ]
  return out


def per_sample(result, load):
  """Per selected test image: certified or not (minimal lower bound > 0) and the minimal
  lower bound of each method, the clean and PGD minimal margins (medians: quantile 0.5).
  From certify_per_sample.npz (every curve point too), else from the report's own lists
  (reports before the file: its eps only)."""
  arrays = load('certify_per_sample.npz')
  if arrays is not None:
    indices, labels = from_file(arrays)
  else:
    arrays = {
      'clean_minimal_margin': result.get('clean_minimal_margin'),
      'pgd_minimal_margin': result.get('pgd_minimal_margin'),
      **{f'{m}_{result["eps"]:g}': r['minimal_lower_bound'] for m, r in result['methods'].items()},
    }
    indices, labels = np.asarray(result.get('indices', []), dtype=np.int64), None

  def samples(name, statistic, certified=False):
    if arrays.get(name) is None or len(arrays[name]) != len(indices) or not len(indices):
      return None
    values = np.asarray(arrays[name], dtype=np.float64)
    values = (values > 0).astype(np.float64) if certified else values
    return Samples(indices, values, statistic, result['selection'], labels)

  found = {
    'clean_minimal_margin': samples('clean_minimal_margin', 0.5),
    'pgd_minimal_margin': samples('pgd_minimal_margin', 0.5),
  }
  for m in result['methods']:
    name = f'{m}_{result["eps"]:g}'
    found[f'bound/{m}/certified_fraction'] = samples(name, 'mean', certified=True)
    found[f'bound/{m}/median_minimal_lower_bound'] = samples(name, 0.5)
  for m, points in result['curve'].items():
    for p in points:
      found[f'curve/{m}/{p["eps"]:g}'] = samples(f'{m}_{p["eps"]:g}', 'mean', certified=True)
  return {key: s for key, s in found.items() if s is not None}


def table(result, ens, ctx):
  rows = [
    (
      m,
      pct(r['certified_fraction']),
      f'{r["median_minimal_lower_bound"]:.4g}',
      f'{r["seconds"]:.1f}',
    )
    for m, r in result['methods'].items()
  ]
  lines = [
    f'Certified robustness (section 4.4) at L-inf eps {result["eps"]:g} on the '
    f'{result["selection"]}; {describe(ens, ctx)}. Bounds on the margins of the mean member '
    'logits; a sample is certified when its minimal lower bound is > 0. ' + cap_text(result),
    '',
    markdown_table(('bound', 'certified (%)', 'median minimal lower bound', 'seconds'), rows),
    '',
    f'Median clean minimal margin: {np.median(result["clean_minimal_margin"]):.4g}.',
  ]
  if result.get('pgd_minimal_margin') is not None:
    pgd = np.asarray(result['pgd_minimal_margin'])
    lines[-1] += (
      f' Median minimal margin a {result["pgd"]["steps"]}-step PGD on the margin reaches in '
      f'the same ball: {np.median(pgd):.4g} (an upper bound: the true minimal margin lies '
      f'between the best lower bound and it; {np.sum(pgd <= 0)} of {len(pgd)} samples '
      'broken, which no bound can certify).'
    )
  if 'alpha_crown' in result['methods'] or 'alpha_crown' in result['curve']:
    a = result.get('alpha', {})
    lines[-1] += f' alpha_crown: {a.get("steps")} Adam steps on the slopes, ' + (
      'intermediate bounds optimised too.'
      if a.get('intermediate')
      else "CROWN's intermediate bounds, the last pass optimised."
    )
  for method, points in result['curve'].items():
    cells = [(f'{p["eps"]:g}', pct(p['certified_fraction'])) for p in points]
    lines += ['', f'Certified (%) against eps, {method}:', '']
    lines.append(markdown_table(('eps', 'certified (%)'), cells))
  lines += ['', 'Plots: ' + ', '.join(result['plots'])]
  return '\n'.join(lines)


def cap_text(result):
  """What 'crown' and 'alpha_crown' were: full CROWN, or capped, with the neurons the cap
  left to intervals in each run where it bound."""
  cap = result['max_unstable']
  if not cap:
    return "'crown' is full CROWN: every unstable ReLU of every layer has its CROWN bound."
  bound = []  # (run, neurons that fell back, per layer or None)
  for method, r in result['methods'].items():
    per_layer = r.get('fallbacks_per_layer', [])
    if sum(per_layer):
      layers = ', '.join(f'layer {i + 1}: {n}' for i, n in enumerate(per_layer) if n)
      bound.append(f'{method} at eps {result["eps"]:g}: {sum(per_layer)} ({layers})')
  for method, points in result['curve'].items():
    for p in points:
      if p.get('fallbacks') and not (p['eps'] == result['eps'] and method in result['methods']):
        bound.append(f'{method} at eps {p["eps"]:g}: {p["fallbacks"]}')
  text = (
    f"'crown' was capped at {cap} unstable ReLUs per sample and layer (max_unstable; 0 is "
    'full CROWN): '
  )
  if not bound:
    return text + "the cap never bound, so every bound is CROWN's."
  return text + (
    'where it bound, unstable neurons beyond it kept their interval bounds and the bound is '
    "NOT CROWN's but looser. Neurons that fell back, summed over members and samples: "
    + '; '.join(bound)
    + '.'
  )
