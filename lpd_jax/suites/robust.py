"""Suite 'robust': robust accuracy under strong attacks, per-sample worst case (RobustBench style).

METHODS.md "Attacks", strong attacks: a sample counts as robust at eps only if it is
classified right on the clean input and on the examples of *every* attack run at that eps
(the per-sample worst case), on all evaluated points. The attacks (`ATTACKS`, chosen with
eval.robust.attacks) are L-inf and run against the deployed ensemble in evaluation mode in
the run's inference mode:

  apgd-ce            APGD on the cross-entropy of eq. 1 (Croce & Hein 2020)
  apgd-t             targeted APGD on the DLR loss, `num_targets` target classes
  square             Square (gradient-free random search, `square_queries` queries)
  pgd-margin         PGD on the margin of eq. 1's log-probabilities, `restarts` restarts
  pgd-member-margin  PGD on the members' own logit margins (`Ensemble.member_logits`):
                     an ensemble of saturated members cannot mask it

The eps grid is eval.robust.eps, or eval.paper.pgd_eps (the dataset's grid) when empty.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lpd_jax import attacks, predict
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  attack_key,
  describe,
  grid,
  markdown_table,
  names,
  npz_bytes,
  pct,
)

ATTACKS = ('apgd-ce', 'apgd-t', 'square', 'pgd-margin', 'pgd-member-margin')

DEFAULTS = dict(
  attacks='apgd-ce,apgd-t,square,pgd-margin',  # the worst case is over these
  eps=(),  # L-inf eps grid; () = eval.paper.pgd_eps, the dataset's grid
  steps=100,  # APGD and PGD iterations (the authors of APGD: 100)
  restarts=1,  # PGD restarts (per-sample worst case kept)
  num_targets=9,  # APGD-T target classes (at most C - 1)
  square_queries=1000,  # Square queries (RobustBench's standard attack uses 5000)
)


def attack_spec(name, cfg, eps, num_classes):
  """-> (attack function, params, whether it attacks the member logits)."""
  steps = int(cfg.steps)
  if name == 'apgd-ce':
    return attacks.apgd, dict(eps=eps, steps=steps, loss='ce'), False
  if name == 'apgd-t':
    targets = min(int(cfg.num_targets), num_classes - 1)
    return (
      attacks.apgd,
      dict(eps=eps, steps=steps, loss='dlr', targeted=True, num_targets=targets),
      False,
    )
  if name == 'square':
    return attacks.square, dict(eps=eps, queries=int(cfg.square_queries)), False
  restarts = int(cfg.restarts)
  if name == 'pgd-margin':
    return attacks.pgd, dict(eps=eps, steps=steps, restarts=restarts, loss='margin'), False
  if name == 'pgd-member-margin':
    return attacks.pgd, dict(eps=eps, steps=steps, restarts=restarts, loss='member_margin'), True
  raise ValueError(f'unknown robust attack {name!r}')


def eps_grid(config, cfg):
  if len(cfg.eps):
    return grid(cfg, 'eps', 'robust')
  return grid(config.eval.paper, 'pgd_eps', 'paper')


def run(ens, ctx):
  """Every attack of eval.robust.attacks at every eps of the grid on the test prefix.

  Files: `robust_per_sample.npz` (labels, clean correctness, per attack and eps).
  JSON (RobustBench-like): clean_accuracy, robust_accuracy {eps: accuracy of the
  per-sample worst case}, threat_model 'Linf', eps, attacks, per-attack accuracies
  [{attack, eps, accuracy, seconds}], num_examples, inference (added by the driver).
  """
  config, cfg, images, labels = ctx.config, ctx.cfg, ctx.images, ctx.labels
  chosen = names(cfg, 'attacks', ATTACKS, 'robust')
  epsilons = eps_grid(config, cfg)
  batch_size = ctx.batch_size
  per_row = predict.num_batches(len(labels), batch_size)
  num_classes = jax.eval_shape(ens.log_predict, jnp.zeros((1, *images.shape[1:]))).shape[-1]
  per_sample = {'labels': np.asarray(labels)}
  rows, robust = [], {}
  total = per_row * (1 + len(chosen) * len(epsilons))
  with tqdm(total=total, desc='robust', disable=None) as bar:
    (clean,) = predict.attack_correct(
      None, {}, ens.log_predict, images, labels, batch_size=batch_size, bar=bar
    )
    per_sample['clean'] = clean
    for eps in epsilons:
      worst = clean.copy()
      for name in chosen:
        bar.set_postfix_str(f'{name} {eps:g}')
        fn, params, on_members = attack_spec(name, cfg, eps, num_classes)
        start = time.perf_counter()
        (correct,) = predict.attack_correct(
          fn,
          params,
          ens.member_logits if on_members else ens.log_predict,
          images,
          labels,
          key=attack_key(config.seed, f'robust:{name}'),
          batch_size=batch_size,
          targets=[ens.log_predict],
          bar=bar,
        )
        worst &= correct
        per_sample[f'{name}_{eps:g}'] = correct
        rows.append(
          dict(
            attack=name,
            eps=eps,
            params={k: v for k, v in params.items() if k != 'eps'},
            accuracy=float(correct.mean()),
            seconds=time.perf_counter() - start,
          )
        )
      robust[eps] = float(worst.mean())
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
    robust_accuracy={f'{eps:g}': acc for eps, acc in robust.items()},
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
  c = ctx.cfg
  return '\n'.join(
    [
      f'Robust accuracy (%), strong attacks, per-sample worst case, on all {describe(ens, ctx)}; '
      f'clean {pct(result["clean_accuracy"])}',
      '',
      markdown_table(header, cells),
      '',
      f'APGD / PGD {c.steps} steps, PGD restarts {c.restarts}, APGD-T {c.num_targets} targets, '
      f'Square {c.square_queries} queries. A sample is robust when right clean and under '
      'every attack; accuracy is over all evaluated points.',
    ]
  )


def validate(config, cfg):
  names(cfg, 'attacks', ATTACKS, 'robust')
  eps_grid(config, cfg)


SUITE = Suite('robust', run, DEFAULTS, validate, metrics)
