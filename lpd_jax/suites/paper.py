"""Suite 'paper': accuracy under the white-box attacks of Table 4 (paper section 5).

FGSM, BIM and PGD (L-inf) at two eps, JSMA at two gamma, C&W L2 (docs/methods.md, "Attacks
as the paper ran them"), on all evaluated test points and on those the ensemble classifies
right clean. Any registered attack (`attacks.REGISTRY`) can be a row: each runs at its grid with the
parameters of its group eval.paper.<attack> (`Attack.settings`). The
ensemble is attacked as deployed, in evaluation mode through `Ensemble.log_predict`
(log of the mean member softmax, eq. 1) in the run's inference mode. Every attack runs
jitted on batches of one shape (`predict.padded_batches`), so each compiles once per
shape and static setting: eps and c are traced, so the two PGD rows share one compile
(JSMA's gamma sets a static feature budget).

Randomness (PGD starts, JSMA targets): the batch that starts at test index s gets key
fold_in(attack_key(seed, attack), s); the attacks fold in the index within the batch.
"""

import time

import numpy as np

from lpd_jax import attacks, predict
from lpd_jax.attacks import saliency_map
from lpd_jax.data import to_float
from lpd_jax.errors import ConfigError
from lpd_jax.progress import StageBar
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  accuracies,
  attack_params,
  attack_settings,
  attacked_fn,
  check_grid,
  describe,
  fmt_param,
  grid_table,
  names,
  pct,
  run_attack_row,
)
from lpd_jax.suites.samples import array_samples, attack_rows, per_sample_npz

DEFAULT_ATTACKS = 'fgsm,bim,pgd,jsma,cw'  # Table 4's rows


def defaults():
  """The rows to run, and a group per registered attack: its grid (() = the attack's own
  grid for the run's dataset, `Attack.grid_for`) and its parameters as the paper ran them
  (docs/methods.md, "Attacks"; C&W's margin 'probability' is the authors' cw.py on the mean
  softmax, 'log_probability' the Carlini-Wagner form; JSMA's variant 'art' is ART 1.1's,
  'once' changes each feature once)."""
  return dict(attacks=DEFAULT_ATTACKS, **attack_settings(lambda a: True))


def attack_grid(paper_cfg, attack_names, dataset):
  """Each attack of `attack_names` at its grid -> list of rows.

  Each row: {'attack', 'label', 'param_name' (the Para. column: `Attack.param`), 'param',
  'params' (keyword arguments of the attack: the param's value and the group's others)}.

  Args:
    paper_cfg: the settings group of a paper evaluation (config.eval.paper).
    attack_names: names from attacks.REGISTRY.
    dataset: the run's dataset (an empty grid is the attack's own for it).
  """
  rows = []
  for name in attack_names:
    attack = attacks.REGISTRY[name]
    grid_values, params = attack_params(attack, paper_cfg[attacks.config_key(name)], dataset)
    linf = attacks.bounded_by_eps(attack)  # an L-inf eps of images in [0, 1]
    upper = 1.0 if linf else None
    check_grid(grid_values, f'eval.paper.{attacks.config_key(name)}.{attack.param}', upper)
    for value in grid_values:
      rows.append(
        dict(
          attack=name,
          label=attack.label,
          param_name=attack.param,
          param=float(value),
          params={attack.param: float(value), **params},
        )
      )
  return rows


def run(ens, ctx):
  """Attacks eval.paper.attacks at the group's grid on the test prefix, in batches of
  eval.batch_size. Files: `paper_per_sample.npz` (labels, clean and per-row correctness).

  JSON: dataset, method, num_members, num_examples, num_clean_correct, batch_size, seed and
  rows [{attack, label, param_name, param, params, accuracy, accuracy_clean_correct,
  seconds}], the first row 'No Attack'.
  """
  config, images, labels = ctx.config, ctx.images, ctx.labels
  chosen = names(ctx.cfg, 'attacks', tuple(attacks.REGISTRY), 'paper')
  rows_to_run = attack_grid(ctx.cfg, chosen, config.dataset)
  batch_size = ctx.batch_size
  per_row = predict.num_batches(len(labels), batch_size)
  with StageBar(total=per_row * (1 + len(rows_to_run)), desc='paper attacks') as bar:
    bar.stage('clean')
    (clean,) = predict.attack_correct(
      None, {}, ens.log_predict, images, labels, batch_size=batch_size, bar=bar, mesh=ctx.mesh
    )
    rows = [
      dict(
        attack='none',
        label='No Attack',
        param_name=None,
        param=None,
        params={},
        accuracy=float(clean.mean()),
        accuracy_clean_correct=1.0 if clean.any() else None,
        seconds=0.0,
      )
    ]
    per_sample = {'labels': np.asarray(labels), 'none': clean}
    for row in rows_to_run:
      bar.stage(f'{row["label"]} {row["param"]:g}')
      start = time.perf_counter()
      source, judge = attacked_fn(ens, row['attack'])
      (correct,), x_adv = run_attack_row(
        row, source, ctx, targets=judge, bar=bar, keep_examples=True
      )
      acc, acc_clean = accuracies(correct, clean)
      rows.append(
        dict(
          row,
          accuracy=acc,
          accuracy_clean_correct=acc_clean,
          seconds=time.perf_counter() - start,
          **distortion(images, x_adv, clean & ~correct),
        )
      )
      per_sample[f'{row["attack"]}_{row["param"]:g}'] = correct
  result = dict(
    dataset=config.dataset,
    method=config.method,
    num_members=ens.num_members,
    num_examples=len(labels),
    num_clean_correct=int(clean.sum()),
    batch_size=min(batch_size, len(labels)),
    seed=config.seed,
    rows=rows,
  )
  return Report(
    result,
    paper_table(result, ens, ctx),
    {'paper_per_sample.npz': per_sample_npz(**per_sample)},
    metrics(result),
  )


def settings_text(row):
  """How a row's attack ran, in words (from its params)."""
  p, attack = row['params'], row['attack']
  label = row.get('label', attack.upper())
  if attack == 'jsma':
    return f'JSMA {p.get("variant")} (theta {p.get("theta")})'
  if attack == 'cw':
    return (
      f'C&W {p.get("steps")} steps x {p.get("binary_search_steps")} searches, margin on '
      f'{p.get("margin")}'
    )
  if attack in ('bim', 'pgd'):
    start = ', random start' if attack == 'pgd' else ''
    return f'{label} {p.get("steps")} steps of eps / 10{start}, CE on eq. 1'
  if attack == 'fgsm':
    return f'{label}, CE on eq. 1'
  if attack == 'none':
    return 'clean'
  others = ', '.join(f'{k} {v}' for k, v in p.items() if k != row.get('param_name'))
  return f'{label} ({others})' if others else label


def metrics(result):
  """Per row: accuracy on all points and on the clean-correct ones, and the median L2 of the
  successful examples; 'none/accuracy' is the clean row."""
  n, n_clean = result['num_examples'], result.get('num_clean_correct', 0)
  out = []
  for r in result['rows']:
    attack = r['attack']
    if attack == 'none':
      out.append(Metric('none/accuracy', 'No Attack', r['accuracy'], 'pct', n, 'clean'))
      continue
    name = f'{r.get("label", attack.upper())} {fmt_param(r["param"])}'
    key, how = f'{attack}/{r["param"]:g}', settings_text(r)
    coords = dict(attack=attack, param=r['param'])
    out += [
      Metric(f'{key}/accuracy', f'{name} (all)', r['accuracy'], 'pct', n, how, coords),
      Metric(
        f'{key}/accuracy_clean_correct',
        f'{name} (clean-correct)',
        r['accuracy_clean_correct'],
        'pct',
        n_clean,
        how,
        coords,
      ),
    ]
    if 'median_l2_successful' in r:
      out.append(
        Metric(
          f'{key}/median_l2_successful',
          f'{name}: median L2 of successes',
          r['median_l2_successful'],
          '{:.3f}',
          r.get('num_successful', 0),
          how,
          coords,
        )
      )
  return out


CW_MARGINS = {
  'probability': "the mean softmax probabilities, the authors' cw.py",
  'log_probability': 'log-probabilities, Carlini-Wagner',
}


def distortion(images, x_adv, successful):
  """Median L2 distance ||x_adv - x||_2 over the successful examples (clean-correct ones the
  attack turned wrong): how far an unbounded attack (C&W) had to go. None if none."""
  x = to_float(np.asarray(images)).reshape(len(images), -1)
  d = np.linalg.norm(np.asarray(x_adv, np.float32).reshape(len(x), -1) - x, axis=1)
  return dict(
    median_l2_successful=float(np.median(d[successful])) if successful.any() else None,
    num_successful=int(successful.sum()),
  )


def paper_table(result, ens, ctx):
  """Markdown of a paper-suite result in the layout of Table 4."""
  first = {}
  for r in result['rows'][1:]:
    first.setdefault(r['attack'], r)
  how = '; '.join(f'{r["param_name"]} for {settings_text(r)}' for r in first.values())
  return '\n'.join(
    [
      f'White-box attacks, accuracy (%) on {describe(ens, ctx)}; '
      f'{result["num_clean_correct"]} of them classified right clean',
      '',
      grid_table(
        ('Attacks', 'Para.', 'Accuracy (%)', 'Accuracy on clean-correct (%)', 'median L2'),
        result['rows'],
        (
          lambda r: pct(r['accuracy']),
          lambda r: pct(r['accuracy_clean_correct']),
          lambda r: (
            '-' if r.get('median_l2_successful') is None else f'{r["median_l2_successful"]:.3f}'
          ),
        ),
      ),
      '',
      f'Para.: {how}. median L2: of the successful examples (clean-correct, then misclassified).',
    ]
  )


CHOICES = {('jsma', 'variant'): saliency_map.VARIANTS, ('cw', 'margin'): tuple(CW_MARGINS)}


def validate(config, cfg):
  chosen = names(cfg, 'attacks', tuple(attacks.REGISTRY), 'paper')
  attack_grid(cfg, chosen, config.dataset)
  for (attack, field), choices in CHOICES.items():
    value = cfg[attacks.config_key(attack)][field]
    if attack in chosen and value not in choices:
      raise ConfigError(f'eval.paper.{attack}.{field} must be one of {choices}, got {value!r}')


def per_sample(result, load):
  """Each row's correctness per test image (paper_per_sample.npz), on all points and on
  the clean-correct ones."""
  rows = [
    (f'{r["attack"]}/{r["param"]:g}', f'{r["attack"]}_{r["param"]:g}')
    for r in result['rows']
    if r['attack'] != 'none'
  ]
  arrays = load('paper_per_sample.npz')
  out = attack_rows(arrays, rows, 'none')
  if out or (arrays and 'none' in arrays):
    out['none/accuracy'] = array_samples(arrays, 'none')
  return out


SUITE = Suite('paper', run, defaults, validate, metrics, per_sample)
