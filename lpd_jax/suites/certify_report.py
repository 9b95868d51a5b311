"""The `certify` suite's records and Markdown: the certified fractions and bounds per method,
the curve against eps, and what 'crown' was (full CROWN, or capped and where the cap bound)."""

import numpy as np

from lpd_jax.suites.common import Metric, describe, markdown_table, pct


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
