"""Suite 'robust': robust accuracy under strong attacks, per-sample worst case (RobustBench style).

METHODS.md "Attacks", strong attacks: a sample counts as robust at eps only if it is
classified right on the clean input and on the examples of *every* attack run at that eps
(the per-sample worst case), on all evaluated points. The attacks (eval.robust.attacks) are
any registered L-inf attacks (`attacks.bounded_by_eps`), each with its parameters in
eval.robust.<attack>, run against the deployed ensemble in evaluation mode in the run's
inference mode; the default four:

  apgd-ce            APGD on the cross-entropy of eq. 1 (Croce & Hein 2020)
  apgd-t             targeted APGD on the DLR loss, `num_targets` target classes
  square             Square (gradient-free random search, `queries` queries)
  pgd-margin         PGD on the margin of eq. 1's log-probabilities, `restarts` restarts

and pgd-member-margin, PGD on the members' own logit margins (`Ensemble.member_logits`),
which an ensemble of saturated members cannot mask.

The eps grid is eval.robust.eps; () is the dataset's L-inf grid (`attacks.linf_grid`).
"""

import time

import numpy as np

from lpd_jax import attacks, predict
from lpd_jax.progress import StageBar
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  attack_key,
  attack_params,
  attack_settings,
  attacked_fn,
  describe,
  grid,
  markdown_table,
  names,
  npz_bytes,
  pct,
)


def defaults():
  """The attacks the worst case is over, the eps grid (() = the dataset's L-inf grid,
  `attacks.linf_grid`) and a group of parameters per registered L-inf attack (APGD and
  PGD: 100 steps, as the authors of APGD; Square: 1000 queries, RobustBench's standard
  attack uses 5000)."""
  return dict(
    attacks='apgd-ce,apgd-t,square,pgd-margin',
    eps=(),
    **attack_settings(attacks.bounded_by_eps, with_grid=False),
  )


def eps_grid(config, cfg):
  """The eps grid of a robust evaluation: its own, or the dataset's L-inf grid."""
  if len(cfg.eps):
    return grid(cfg, 'eps', 'robust', upper=1.0)
  return attacks.linf_grid(config.dataset)


def robust_attacks():
  return tuple(n for n, a in attacks.REGISTRY.items() if attacks.bounded_by_eps(a))


def attack_at(ens, ctx, name, eps, bar):
  """One attack of the robust suite at `eps` on the test prefix -> (correct [N], its row)."""
  config = ctx.config
  attack = attacks.REGISTRY[name]
  _, params = attack_params(attack, ctx.cfg[attacks.config_key(name)], config.dataset)
  start = time.perf_counter()
  (correct,) = predict.attack_correct(
    attack.fn,
    dict(eps=eps, **params),
    attacked_fn(ens, name)[0],
    ctx.images,
    ctx.labels,
    key=attack_key(config.seed, f'robust:{name}'),
    batch_size=ctx.batch_size,
    targets=[ens.log_predict],
    bar=bar,
  )
  row = dict(
    attack=name,
    eps=eps,
    params=params,
    accuracy=float(correct.mean()),
    seconds=time.perf_counter() - start,
  )
  return correct, row


def run(ens, ctx):
  """Every attack of eval.robust.attacks at every eps of the grid on the test prefix.

  Files: `robust_per_sample.npz` (labels, clean correctness, per attack and eps).
  JSON (RobustBench-like): clean_accuracy, robust_accuracy {eps: accuracy of the
  per-sample worst case}, threat_model 'Linf', eps, attacks, per-attack accuracies
  [{attack, eps, params, accuracy, seconds}], num_examples, inference (added by the driver).
  """
  config, labels = ctx.config, ctx.labels
  chosen = names(ctx.cfg, 'attacks', robust_attacks(), 'robust')
  epsilons = eps_grid(config, ctx.cfg)
  per_row = predict.num_batches(len(labels), ctx.batch_size)
  per_sample = {'labels': np.asarray(labels)}
  rows, robust = [], {}
  with StageBar(total=per_row * (1 + len(chosen) * len(epsilons)), desc='robust') as bar:
    (clean,) = predict.attack_correct(
      None, {}, ens.log_predict, ctx.images, labels, batch_size=ctx.batch_size, bar=bar
    )
    per_sample['clean'] = clean
    for eps in epsilons:
      worst = clean.copy()
      for name in chosen:
        bar.stage(f'{name} {eps:g}')
        correct, row = attack_at(ens, ctx, name, eps, bar)
        worst &= correct
        per_sample[f'{name}_{eps:g}'] = correct
        rows.append(row)
      robust[f'{eps:g}'] = float(worst.mean())
      per_sample[f'worst_{eps:g}'] = worst
  result = dict(
    dataset=config.dataset,
    method=config.method,
    num_members=ens.num_members,
    num_examples=len(labels),
    threat_model='Linf',
    eps=list(epsilons),
    attacks=list(chosen),
    clean_accuracy=float(clean.mean()),
    robust_accuracy=robust,
    rows=rows,
  )
  return Report(
    result,
    robust_table(result, ens, ctx),
    {'robust_per_sample.npz': npz_bytes(**per_sample)},
    metrics(result),
  )


def params_text(params):
  return '(' + ', '.join(f'{k} {v}' for k, v in params.items()) + ')'


def metrics(result):
  """Clean accuracy, the per-sample worst case at each eps, and each attack's accuracy."""
  n = result['num_examples']
  first = result['eps'][0] if result['eps'] else None
  attacks_text = ', '.join(
    f'{r["attack"]} {params_text(r["params"])}' for r in result['rows'] if r['eps'] == first
  )
  out = [Metric('clean', 'clean', result['clean_accuracy'], 'pct', n, 'clean')]
  for eps in result['eps']:
    out.append(
      Metric(
        f'worst/{eps:g}',
        f'robust, eps {eps:g}',
        result['robust_accuracy'][f'{eps:g}'],
        'pct',
        n,
        f'worst case over {attacks_text}',
        dict(eps=eps),
      )
    )
  for r in result['rows']:
    out.append(
      Metric(
        f'{r["attack"]}/{r["eps"]:g}',
        f'  {r["attack"]}, eps {r["eps"]:g}',
        r['accuracy'],
        'pct',
        n,
        f'{r["attack"]} {params_text(r["params"])}',
        dict(attack=r['attack'], eps=r['eps']),
      )
    )
  return out


def robust_table(result, ens, ctx):
  header = ('L-inf eps', *result['attacks'], 'worst case (robust)')
  cells = []
  for eps in result['eps']:
    by_attack = {r['attack']: r['accuracy'] for r in result['rows'] if r['eps'] == eps}
    cells.append(
      (
        f'{eps:g}',
        *(pct(by_attack[a]) for a in result['attacks']),
        pct(result['robust_accuracy'][f'{eps:g}']),
      )
    )
  return '\n'.join(
    [
      f'Robust accuracy (%), strong attacks, per-sample worst case, on all {describe(ens, ctx)}; '
      f'clean {pct(result["clean_accuracy"])}',
      '',
      markdown_table(header, cells),
      '',
      'Attacks: '
      + ', '.join(
        f'{r["attack"]} {params_text(r["params"])}'
        for r in result['rows']
        if r['eps'] == result['eps'][0]
      )
      + '. A sample is robust when right clean and under every attack; accuracy is over all '
      'evaluated points.',
    ]
  )


def validate(config, cfg):
  for name in names(cfg, 'attacks', robust_attacks(), 'robust'):
    attack_params(attacks.REGISTRY[name], cfg[attacks.config_key(name)], config.dataset)
  eps_grid(config, cfg)


SUITE = Suite('robust', run, defaults, validate, metrics)
