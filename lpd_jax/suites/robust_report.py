"""The `robust` suite's records and table: what was run (preset, budgets, cascade) beside
the numbers. Reads reports of every version (those before presets and the cascade ran every
attack on every point)."""

import dataclasses

import numpy as np

from lpd_jax.suites.common import Metric, markdown_table, pct
from lpd_jax.suites.samples import array_samples


def params_text(params):
  return '(' + ', '.join(f'{k} {v}' for k, v in params.items()) + ')'


def how(result):
  """One phrase: the preset, the attacks with their budgets, the cascade or not."""
  first = result['eps'][0] if result['eps'] else None
  budgets = ', '.join(
    f'{r["attack"]} {params_text(r["params"])}' for r in result['rows'] if r['eps'] == first
  )
  if 'cascade' not in result:  # reports written before presets and the cascade
    return budgets
  preset = result.get('preset', 'default')
  text = {
    'default': '',
    'standard': "AutoAttack's standard version: ",
    'rand': f"AutoAttack's rand version (EOT over {result.get('eot_draws')} draws): ",
  }[preset]
  if result.get('sampled_ensemble'):  # reports before it said no more
    text = (
      f"AutoAttack's rand version on the sampled ensemble ({result['sampled_ensemble']['summary']};"
      f' EOT over {result["eot_draws"]} draws, judged on one further draw): '
    )
  if result.get('overridden'):
    text += f'budgets changed from the preset {result["overridden"]}: '
  order = 'in a cascade (each on the points still robust)' if cascade(result) else 'on all points'
  return f'{text}{budgets}, {order}'


def cascade(result):
  return bool(result.get('cascade', False))


def metrics(result):
  """Clean accuracy, the per-sample worst case at each eps, and per attack either its own
  accuracy (all points) or the robust accuracy left after it in the cascade."""
  n = result['num_examples']
  out = [Metric('clean', 'clean', result['clean_accuracy'], 'pct', n, 'clean')]
  for eps in result['eps']:
    out.append(
      Metric(
        f'worst/{eps:g}',
        f'robust, eps {eps:g}',
        result['robust_accuracy'][f'{eps:g}'],
        'pct',
        n,
        f'worst case over {how(result)}',
        dict(eps=eps),
      )
    )
  for r in result['rows']:
    budget = f'{r["attack"]} {params_text(r["params"])}'
    coords = dict(attack=r['attack'], eps=r['eps'])
    if 'accuracy' in r:
      label = f'  {r["attack"]}, eps {r["eps"]:g}'
      out.append(
        Metric(f'{r["attack"]}/{r["eps"]:g}', label, r['accuracy'], 'pct', n, budget, coords)
      )
    if cascade(result):
      label = f'  after {r["attack"]} (cascade), eps {r["eps"]:g}'
      out.append(
        Metric(
          f'after/{r["attack"]}/{r["eps"]:g}',
          label,
          r['accuracy_after'],
          'pct',
          n,
          f'robust after {budget} on the {r["attacked"]} points still robust',
          coords,
        )
      )
  return out


def per_sample(result, load):
  """Clean, the worst case at each eps and each attack's correctness per test image
  (robust_per_sample.npz); in a cascade, what is robust after the i-th attack of an eps is
  `broken_by` -1 (robust) or past i."""
  arrays = load('robust_per_sample.npz')
  if arrays is None or 'clean' not in arrays:
    return {}
  out = {'clean': array_samples(arrays, 'clean')}
  for eps in result['eps']:
    worst = array_samples(arrays, f'worst_{eps:g}')
    if worst is not None:
      out[f'worst/{eps:g}'] = worst
  position = {}
  for r in result['rows']:
    eps, name = r['eps'], r['attack']
    position[eps] = i = position.get(eps, 0) + 1
    own = array_samples(arrays, f'{name}_{eps:g}')
    if own is not None:
      out[f'{name}/{eps:g}'] = own
    broken_by = arrays.get(f'broken_by_{eps:g}')
    if cascade(result) and broken_by is not None:
      after = ((broken_by == -1) | (broken_by > i)).astype(np.float64)
      out[f'after/{name}/{eps:g}'] = dataclasses.replace(out['clean'], values=after)
  return out


def robust_table(result, described):
  """The report's Markdown: per eps each attack's column and the worst case; in a cascade
  each column is the robust accuracy left after that attack, with the points it attacked
  and broke."""
  header = ('L-inf eps', *result['attacks'], 'worst case (robust)')
  cells = []
  for eps in result['eps']:
    rows = {r['attack']: r for r in result['rows'] if r['eps'] == eps}
    if cascade(result):
      values = [
        f'{pct(r["accuracy_after"])} ({r["broken"]}/{r["attacked"]})'
        for r in (rows[a] for a in result['attacks'])
      ]
    else:
      values = [pct(rows[a]['accuracy']) for a in result['attacks']]
    cells.append((f'{eps:g}', *values, pct(result['robust_accuracy'][f'{eps:g}'])))
  what = (
    'Each column: the robust accuracy left after that attack (broken / attacked points).'
    if cascade(result)
    else 'Each column: that attack alone on all points.'
  )
  return '\n'.join(
    [
      f'Robust accuracy (%), strong attacks, per-sample worst case, on all {described}; '
      f'clean {pct(result["clean_accuracy"])}',
      *sampled_text(result.get('sampled_ensemble')),
      '',
      markdown_table(header, cells),
      '',
      f'Attacks: {how(result)}. {what} A sample is robust when right clean and under every '
      'attack; accuracy is over all evaluated points.',
    ]
  )


def sampled_text(sampled):
  """The header's lines on what the 'rand' preset attacked ([] for the other presets)."""
  if not sampled:
    return []
  return [
    '',
    f'Attacked: the sampled ensemble ({sampled["model"]}), {sampled["masks"]}. APGD follows '
    f'{sampled["attacked"]}; judged on {sampled["judged_on"]}. Inference mode '
    f'{sampled["inference"]}.',
  ]
