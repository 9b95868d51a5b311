"""Suite 'paper': accuracy under the white-box attacks of Table 4 (paper section 5).

FGSM, BIM and PGD (L-inf) at two eps, JSMA at two gamma, C&W L2 (METHODS.md "Attacks"),
on all evaluated test points and on those the ensemble classifies right clean. The
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
from tqdm.auto import tqdm

from lpd_jax import attacks, predict
from lpd_jax.attacks import saliency_map
from lpd_jax.data import to_float
from lpd_jax.errors import ConfigError
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  accuracies,
  describe,
  fmt_param,
  grid,
  grid_table,
  names,
  npz_bytes,
  pct,
  run_attack_row,
)

# The attacks with a paper grid (`attack_grid`); each must be in attacks.REGISTRY.
ATTACKS = ('fgsm', 'bim', 'pgd', 'jsma', 'cw')

# METHODS.md "Attacks". pgd_eps is the CIFAR grid; configs/lpd_tinyimagenet.py sets its own.
DEFAULTS = dict(
  attacks='fgsm,bim,pgd,jsma,cw',  # the rows to run
  fgsm_eps=(0.02, 0.04),  # FGSM L-inf eps
  pgd_eps=(0.02, 0.04),  # BIM and PGD L-inf eps (Tiny-ImageNet: 0.01, 0.02)
  steps=10,  # BIM / PGD steps of eps / 10
  jsma_theta=0.1,  # JSMA: increase per changed feature
  jsma_gamma=(0.05, 0.1),  # JSMA: max fraction of features changed, one row each
  # JSMA as the paper ran it (ART 1.1: a pixel can be raised repeatedly, int(gamma * D / 2)
  # iterations); 'once': each feature changes once, at most gamma * D of them (weaker).
  jsma_variant='art',
  cw_c=0.1,  # C&W L2: initial trade-off constant c (then binary-searched per sample)
  cw_confidence=0.01,  # C&W L2: required margin kappa
  cw_steps=1000,  # C&W L2: Adam steps per binary-search round
  cw_binary_search_steps=5,  # C&W L2: rounds of the search over c
  cw_learning_rate=0.01,  # C&W L2: Adam step size in tanh space (ART's default)
  # C&W margin: 'probability', the authors' cw.py on the mean softmax (the paper's numbers),
  # or 'log_probability', the Carlini-Wagner form (strong; it does not vanish on saturation).
  cw_margin='probability',
)


def attack_grid(paper_cfg, attack_names):
  """The paper's settings of each attack in `attack_names` -> list of rows.

  Each row: {'attack', 'label', 'param_name' (the Para. column), 'param', 'params'
  (keyword arguments of the attack)}. eps for FGSM, BIM and PGD; gamma for JSMA; c for
  C&W. BIM and PGD take `steps` steps of eps / 10 (the attacks' default), PGD from a
  uniform random start.

  Args:
    paper_cfg: the group config.eval.paper.
    attack_names: names from ATTACKS.
  """
  c = paper_cfg
  rows = []

  def add(attack, param_name, param, **params):
    rows.append(
      dict(
        attack=attack,
        label=attacks.REGISTRY[attack].label,
        param_name=param_name,
        param=float(param),
        params=params,
      )
    )

  for attack in attack_names:
    if attack == 'fgsm':
      for eps in grid(c, 'fgsm_eps', 'paper'):
        add('fgsm', 'eps', eps, eps=eps)
    elif attack in ('bim', 'pgd'):
      for eps in grid(c, 'pgd_eps', 'paper'):
        add(attack, 'eps', eps, eps=eps, steps=int(c.steps))
    elif attack == 'jsma':
      for gamma in grid(c, 'jsma_gamma', 'paper'):
        add('jsma', 'gamma', gamma, theta=float(c.jsma_theta), gamma=gamma, variant=c.jsma_variant)
    elif attack == 'cw':
      add(
        'cw',
        'c',
        c.cw_c,
        c=float(c.cw_c),
        confidence=float(c.cw_confidence),
        steps=int(c.cw_steps),
        binary_search_steps=int(c.cw_binary_search_steps),
        learning_rate=float(c.cw_learning_rate),
        margin=c.cw_margin,
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
  rows_to_run = attack_grid(ctx.cfg, names(ctx.cfg, 'attacks', ATTACKS, 'paper'))
  batch_size = ctx.batch_size
  per_row = predict.num_batches(len(labels), batch_size)
  with tqdm(total=per_row * (1 + len(rows_to_run)), desc='paper attacks', disable=None) as bar:
    bar.set_postfix_str('clean')
    (clean,) = predict.attack_correct(
      None, {}, ens.log_predict, images, labels, batch_size=batch_size, bar=bar
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
      bar.set_postfix_str(f'{row["label"]} {row["param"]:g}')
      start = time.perf_counter()
      (correct,), x_adv = run_attack_row(row, ens.log_predict, ctx, bar=bar, keep_examples=True)
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
    {'paper_per_sample.npz': npz_bytes(**per_sample)},
    metrics(result),
  )


def settings_text(row):
  """How a row's attack ran, in words (from its params)."""
  p, attack = row['params'], row['attack']
  if attack == 'jsma':
    return f'JSMA {p.get("variant")} (theta {p.get("theta")})'
  if attack == 'cw':
    return (
      f'C&W {p.get("steps")} steps x {p.get("binary_search_steps")} searches, margin on '
      f'{p.get("margin")}'
    )
  if attack in ('bim', 'pgd'):
    start = ', random start' if attack == 'pgd' else ''
    return f'{row.get("label", attack)} {p.get("steps")} steps of eps / 10{start}, CE on eq. 1'
  return f'{row.get("label", attack)}, CE on eq. 1' if attack != 'none' else 'clean'


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
  c = ctx.cfg
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
      f'Para.: eps (L-inf) for FGSM, BIM and PGD ({c.steps} steps of eps / 10, PGD from a '
      f'random start); gamma for JSMA (theta {c.jsma_theta}, variant {c.jsma_variant}); c for '
      f'C&W L2 ({c.cw_steps} steps, {c.cw_binary_search_steps} binary-search steps, confidence '
      f'{c.cw_confidence}, margin on {CW_MARGINS[c.cw_margin]}). '
      'Attack loss of FGSM/BIM/PGD: cross-entropy on the log mean softmax (eq. 1). median L2: '
      'of the successful examples (clean-correct, then misclassified).',
    ]
  )


def validate(config, cfg):
  attack_grid(cfg, names(cfg, 'attacks', ATTACKS, 'paper'))
  for field, choices in (('jsma_variant', saliency_map.VARIANTS), ('cw_margin', tuple(CW_MARGINS))):
    if cfg[field] not in choices:
      raise ConfigError(f'eval.paper.{field} must be one of {choices}, got {cfg[field]!r}')


SUITE = Suite('paper', run, DEFAULTS, validate, metrics)
