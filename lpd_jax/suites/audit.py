"""Suite 'audit': the gradient-masking checks of `lpd_jax.audit` on the ensemble.

Runs `audit.run` on the first eval.audit.num_examples test images (one batch) at L-inf
eval.audit.eps (0: the largest eps of the dataset's L-inf grid, `attacks.linf_grid`), with the
ensemble's member logits (member-margin PGD), its 'expected' inference when it has keep
rates, and a surrogate workdir for the transfer check when eval.audit.surrogate is set.
"""

import math

import jax
import numpy as np

from lpd_jax import attacks, audit, sharding
from lpd_jax.data import to_float
from lpd_jax.errors import ConfigError
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  describe,
  markdown_table,
  pct,
  verdict,
)

DEFAULTS = dict(
  eps=0.0,  # L-inf eps of the audit; 0 = the largest of the dataset's L-inf grid
  num_examples=256,  # first test images, attacked as one batch
  surrogate='',  # optional workdir of an independent ensemble (white-box vs transfer)
  large_eps=0.5,  # accuracy must be ~0 here
  steps=10,
  strong_steps=100,
  restarts=5,
  square_queries=1000,
  tolerance=0.05,
)


def audit_eps(config, cfg):
  """eval.audit.eps, or (0) the largest eps of the dataset's L-inf grid."""
  if cfg.eps > 0:
    return float(cfg.eps)
  return max(attacks.linf_grid(config.dataset))


def audit_mesh(mesh, n):
  """The evaluation mesh, or the sub-mesh of as many of its devices as divide the audit's
  one batch of n points (gcd(n, devices); None for one)."""
  devices = math.gcd(n, sharding.data_size(mesh))
  return mesh if devices == sharding.data_size(mesh) else sharding.evaluation_mesh(devices)


def run(ens, ctx):
  """JSON: `audit.run`'s dict (checks with their numbers, worst_case_accuracy, verdict)."""
  config, cfg = ctx.config, ctx.cfg
  n = min(int(cfg.num_examples), len(ctx.labels))
  x = to_float(np.asarray(ctx.images[:n]))
  y = np.asarray(ctx.labels[:n])
  expected = ens.with_inference('expected') if ens.keep_rates is not None else None
  surrogate = ctx.load(cfg.surrogate) if cfg.surrogate else None
  result = audit.run(
    ens.log_predict,
    x,
    y,
    eps=audit_eps(config, cfg),
    key=jax.random.fold_in(jax.random.key(config.seed), 0xA0D17),
    surrogate_fn=None if surrogate is None else surrogate.log_predict,
    expected_fn=None if expected is None else expected.log_predict,
    member_logits_fn=ens.member_logits,
    large_eps=float(cfg.large_eps),
    steps=int(cfg.steps),
    strong_steps=int(cfg.strong_steps),
    restarts=int(cfg.restarts),
    square_queries=int(cfg.square_queries),
    tolerance=float(cfg.tolerance),
    progress=True,
    mesh=audit_mesh(ctx.mesh, n),
  )
  result.update(dataset=config.dataset, method=config.method, num_members=ens.num_members)
  return Report(result, audit_table(result, ens, ctx), metrics=metrics(result))


def check_verdict(check):
  """A check's verdict: 'passed', 'FAILED', 'too few points to tell' or 'not run' (reports
  before the sample-size rule: from its 'passed')."""
  return check.get('verdict') or verdict(check['passed'])


def metrics(result):
  """Each check's verdict, the per-sample worst case and each attack's accuracy."""
  n, where = result['num_examples'], f'L-inf eps {result["eps"]:g}'
  judged = where
  if 'rule' in result:  # the sample-size rule (one text for every check: one caption)
    judged += (
      f', tolerance {result["tolerance"]:g}: FAILED only where the excess is past it '
      f'by more than chance (one-sided exact binomial test at {audit.ALPHA:g})'
    )
  out = [
    Metric(f'check/{name}', name, check_verdict(c), 'verdict', n, judged)
    for name, c in result['checks'].items()
  ]
  out.append(
    Metric(
      'worst_case',
      'worst case over its attacks (%)',
      result['worst_case_accuracy'],
      'pct',
      n,
      f'{where}, per-sample worst case over {", ".join(result["attacks_in_worst_case"])}',
    )
  )
  out += [
    Metric(f'attack/{a}', f'  {a}', v, 'pct', n, where, dict(attack=a))
    for a, v in result['accuracies'].items()
  ]
  return out


# A check's record fields shown in columns of their own (or not at all), not as numbers.
RULE_FIELDS = ('passed', 'verdict', 'n', 'excess', 'points_past', 'fails_from', 'p_value')


def audit_table(result, ens, ctx):
  """The checks (each verdict with its n, the points past its line and from how many it
  fails), the rule, the accuracies and the paragraph."""
  rows = []
  for name, check in result['checks'].items():
    numbers = ', '.join(
      f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}'
      for k, v in check.items()
      if k not in RULE_FIELDS and not isinstance(v, list)
    )
    past = (
      '-' if 'points_past' not in check else f'{check["points_past"]} ({pct(check["excess"])}%)'
    )
    fails = check.get('fails_from')
    n = check.get('n', result['num_examples'] if check['passed'] is not None else '-')
    said = check_verdict(check)
    if check.get('p_value') is not None:  # past the tolerance: how likely at the tolerance
      said += f' (P = {check["p_value"]:.2g})'
    rows.append((name, said, n, past, '-' if fails is None else fails, numbers))
  accuracies = ', '.join(f'{a} {pct(v)}' for a, v in result['accuracies'].items())
  header = ('check', 'verdict', 'n', 'points past its line', 'fails from (points)', 'numbers')
  return '\n'.join(
    [
      f'Gradient-masking audit at L-inf eps {result["eps"]:g} on the first '
      f'{result["num_examples"]} of {describe(ens, ctx)}; clean {pct(result["clean_accuracy"])}',
      '',
      markdown_table(header, rows),
      '',
      *([result['rule'], ''] if 'rule' in result else []),  # reports before the rule: none
      f'Accuracy (%) per attack at eps {result["eps"]:g}: {accuracies}. Worst case over all '
      f'of them (per sample): {pct(result["worst_case_accuracy"])}.{first_broken(result)}',
      '',
      result['verdict'],
    ]
  )


def first_broken(result):
  """' Points first broken by: fgsm 12, pgd-ce 3, ...' (attacks that broke none left out)."""
  counts = {a: v for a, v in result.get('first_broken_by', {}).items() if v}
  if not counts:
    return ''
  return (
    ' Points first broken by (in the order run): '
    + ', '.join(f'{a} {v}' for a, v in counts.items())
    + '.'
  )


def validate(config, cfg):
  if not (0 <= cfg.eps <= 1 and 0 < cfg.large_eps <= 1) or cfg.num_examples < 1:
    raise ConfigError(
      "eval.audit: eps must be in [0, 1] (0: the dataset grid's largest), large_eps in (0, 1] "
      f'and num_examples >= 1; got eps {cfg.eps}, large_eps {cfg.large_eps}, num_examples '
      f'{cfg.num_examples}'
    )
  if min(cfg.steps, cfg.strong_steps, cfg.restarts, cfg.square_queries) < 1:
    raise ConfigError('eval.audit: steps, strong_steps, restarts and square_queries must be >= 1')
  audit_eps(config, cfg)


SUITE = Suite('audit', run, DEFAULTS, validate, metrics)
