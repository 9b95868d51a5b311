"""Suite 'robust': robust accuracy under strong attacks, per-sample worst case (RobustBench style).

docs/methods.md, "Strong attacks": a sample counts as robust at eps only if it is
classified right on the clean input and on the examples of *every* attack run at that eps
(the per-sample worst case), on all evaluated points. The attacks are any registered L-inf
attacks (`attacks.bounded_by_eps`), run against the deployed ensemble in evaluation mode in
the run's inference mode, in one of three presets (eval.robust.preset):

  default   eval.robust.attacks, each with its parameters in eval.robust.<attack>: APGD-CE,
            APGD-T, Square (1,000 queries, schedule rescaled) and margin PGD (100 steps)
  standard  AutoAttack's standard version (Croce & Hein 2020): APGD-CE, APGD-T (9 targets),
            FAB-T (9 targets) and Square (5,000 queries, the schedule not rescaled, its
            windows drawn as AutoAttack draws them: `square(draw='autoattack')`), 100
            iterations and 1 restart each
  rand      AutoAttack's version for randomized defences: APGD-CE and APGD-DLR on the
            expectation over eval.robust.eot_draws (20) draws of the sampled ensemble
            (`Ensemble.sampled_log_predict`, `attacks.eot`), judged on one draw

Under a preset, a value of eval.robust.<attack> that differs from the attack's registered
default overrides the preset's (a test run's short budgets); the report lists the budgets run.

The cascade (eval.robust.cascade, AutoAttack's order): each attack runs only on the points
still robust after the ones before, so the worst case is the same as running every attack
on every point (each point keeps its keys, `attacks.common.PointKeys`) at a fraction of the
work; `robust_per_sample.npz` records which attack broke each point (`broken_by_<eps>`: 0
wrong clean, i the i-th attack of the order, -1 robust). cascade=False runs every attack on
every point and adds each attack's own accuracy.

The eps grid is eval.robust.eps; () is the dataset's L-inf grid (`attacks.linf_grid`).
"""

import time

import jax
import numpy as np

from lpd_jax import attacks, methods, predict, progress
from lpd_jax.errors import ConfigError
from lpd_jax.progress import StageBar
from lpd_jax.suites.common import (
  Report,
  Suite,
  attack_key,
  attack_params,
  attack_settings,
  attacked_fn,
  describe,
  grid,
  names,
)
from lpd_jax.suites.robust_report import metrics, per_sample, robust_table
from lpd_jax.suites.samples import per_sample_npz

# AutoAttack's versions (fra31/auto-attack, autoattack.py: version='standard' and 'rand'):
# the attacks in their order and the budgets they run with.
PRESETS = {
  'standard': {
    'apgd-ce': dict(steps=100),
    'apgd-t': dict(steps=100, num_targets=9),
    'fab-t': dict(steps=100, num_targets=9, restarts=1),
    'square': dict(queries=5000, schedule='absolute', draw='autoattack'),
  },
  'rand': {'apgd-ce': dict(steps=100), 'apgd-dlr': dict(steps=100)},
}
PRESET_NAMES = ('default', *PRESETS)


def defaults():
  """The preset, the attacks of the default preset, the cascade, the eps grid (() = the
  dataset's L-inf grid), the EOT draws of 'rand' and a group of parameters per registered
  L-inf attack (APGD and PGD: 100 steps, as the authors of APGD; Square: 1000 queries)."""
  return dict(
    preset='default',
    attacks='apgd-ce,apgd-t,square,pgd-margin',
    cascade=True,
    eps=(),
    eot_draws=20,
    **attack_settings(attacks.bounded_by_eps, with_grid=False),
  )


def eps_grid(config, cfg):
  """The eps grid of a robust evaluation: its own, or the dataset's L-inf grid."""
  if len(cfg.eps):
    return grid(cfg, 'eps', 'robust', upper=1.0)
  return attacks.linf_grid(config.dataset)


def robust_attacks():
  return tuple(n for n, a in attacks.REGISTRY.items() if attacks.bounded_by_eps(a))


def plan(config, cfg):
  """The attacks in their order with their parameters: [(name, params)], and what was
  overridden under a preset ({name: {param: value}})."""
  preset = cfg.preset if 'preset' in cfg else 'default'
  if preset not in PRESET_NAMES:
    raise ConfigError(f'eval.robust.preset={preset!r}: choose one of {", ".join(PRESET_NAMES)}')
  if preset == 'default':
    chosen = names(cfg, 'attacks', robust_attacks(), 'robust')
    return [(n, group_params(config, cfg, n)) for n in chosen], {}
  steps, overridden = [], {}
  for name, budget in PRESETS[preset].items():
    preset_params = {**attacks.REGISTRY[name].params, **budget}
    own = attacks.REGISTRY[name].params
    mine = group_params(config, cfg, name)
    params = {**preset_params, **{k: v for k, v in mine.items() if k in own and v != own[k]}}
    steps.append((name, params))
    changed = {k: v for k, v in params.items() if v != preset_params[k]}
    if changed:
      overridden[name] = changed
  return steps, overridden


def group_params(config, cfg, name):
  attack = attacks.REGISTRY[name]
  return attack_params(attack, cfg[attacks.config_key(name)], config.dataset)[1]


def _sampled(ens, key, x):
  return ens.sampled_log_predict(x, key)


def models(ens, ctx, name):
  """(the function attack `name` attacks, the functions its examples are judged on)."""
  if ctx.cfg.get('preset') != 'rand':
    source, judges = attacked_fn(ens, name)
    return source, judges or [ens.log_predict]
  base = attack_key(ctx.config.seed, 'robust:eot')
  source = attacks.eot(ens.sampled_log_predict, base, int(ctx.cfg.eot_draws))
  return source, [judge(ens, ctx)]


def judge(ens, ctx):
  """The model robust accuracy is judged on: the deployed one; under 'rand' one draw of the
  sampled ensemble (its own key, not one of the attack's draws)."""
  if ctx.cfg.get('preset') != 'rand':
    return ens.log_predict
  key = attack_key(ctx.config.seed, 'robust:judge')
  return jax.tree_util.Partial(_sampled, ens, key)


def sampled_ensemble(ens, ctx):
  """What the 'rand' preset attacked, for its report: the sampled ensemble (the method's
  dropout masks), the EOT draws of the attacked model and the draw it is judged on; None
  under the other presets."""
  if ctx.cfg.get('preset') != 'rand':
    return None
  draws, label = int(ctx.cfg.eot_draws), methods.label(ctx.config)
  summary = f"{label}'s dropout masks on at test time"
  if ens.keep_rates is None:
    summary = f'{label}, no dropout masks: every draw is the deterministic ensemble'
    masks = f'none: {label} has no keep rates, so every draw is the deterministic ensemble'
  else:
    masks = (
      f"{label}'s dropout masks left on at test time: each head sees h * mask, mask ~ "
      'Bernoulli(p(h)) per member, sample and feature, p the keep rates over all members as '
      'in training'
    )
  return dict(
    model='Ensemble.sampled_log_predict',
    summary=summary,
    masks=masks,
    eot_draws=draws,
    attacked=f'the log of the mean softmax over {draws} fixed draws (attacks.eot; the same '
    'draws for every batch and attack)',
    judged_on='one further draw (its own key): a point is robust when that draw classifies it '
    "right, clean and on every attack's example",
    inference='not used: the masks are drawn at the keep rates whatever eval.inference is',
  )


def attack_at(ens, ctx, name, params, eps, bar, points=None):
  """One attack at `eps` on the test prefix, or on the test indices `points` -> correct
  [N] (or [len(points)]) on the judged model."""
  source, judges = models(ens, ctx, name)
  (correct,) = predict.attack_correct(
    attacks.REGISTRY[name].fn,
    dict(eps=eps, **params),
    source,
    ctx.images,
    ctx.labels,
    key=attack_key(ctx.config.seed, f'robust:{name}'),
    batch_size=ctx.batch_size,
    targets=judges,
    bar=bar,
    points=points,
    pack=attacks.REGISTRY[name].point_keys,
    mesh=ctx.mesh,
  )
  return correct


def batches_of(points, n, batch_size, attack):
  """Batches an attack of the cascade runs on `points` (None: all n)."""
  if points is None:
    return predict.num_batches(n, batch_size)
  if not len(points):
    return 0
  if attack.point_keys:  # packed
    return -(-len(points) // min(batch_size, n))
  return len(np.unique(points // min(batch_size, n)))  # the batches holding them


def run_eps(ens, ctx, steps, eps, clean, cascade, bar):
  """Every attack of `steps` at `eps` -> (worst [N], broken_by int [N], rows, {name: correct
  [N]} (all points only))."""
  worst, broken_by = clean.copy(), np.where(clean, -1, 0)
  rows, own = [], {}
  for i, (name, params) in enumerate(steps, start=1):
    points = np.flatnonzero(worst) if cascade else None
    attacked = len(points) if cascade else len(worst)
    bar.total += batches_of(points, len(worst), ctx.batch_size, attacks.REGISTRY[name])
    bar.stage(f'{name} {eps:g}')
    start = time.perf_counter()
    row = dict(attack=name, eps=eps, params=params, attacked=int(attacked))
    if cascade:
      correct = (
        attack_at(ens, ctx, name, params, eps, bar, points) if attacked else np.ones(0, bool)
      )
      broken = points[~correct]
    else:  # all points, as the cascade passes them (one compiled program serves both)
      own[name] = attack_at(ens, ctx, name, params, eps, bar, np.arange(len(worst)))
      broken = np.flatnonzero(worst & ~own[name])
      row['accuracy'] = float(own[name].mean())
    worst[broken], broken_by[broken] = False, i
    row.update(
      broken=int(len(broken)),
      accuracy_after=float(worst.mean()),
      seconds=time.perf_counter() - start,
    )
    rows.append(row)
  return worst, broken_by, rows, own


def run(ens, ctx):
  """The attacks of the preset at every eps of the grid on the test prefix.

  Files: `robust_per_sample.npz` (labels, clean correctness, per eps the worst case and
  which attack broke each point; without the cascade each attack's correctness too).
  JSON (RobustBench-like): clean_accuracy, robust_accuracy {eps: accuracy of the per-sample
  worst case}, threat_model 'Linf', eps, preset, cascade, attacks, overridden, rows [{attack,
  eps, params, attacked, broken, accuracy_after, seconds (, accuracy)}], num_examples.
  """
  config, labels, cfg = ctx.config, ctx.labels, ctx.cfg
  steps, overridden = plan(config, cfg)
  epsilons = eps_grid(config, cfg)
  cascade = bool(cfg.get('cascade', True))
  per_sample = {'labels': np.asarray(labels)}
  rows, robust = [], {}
  bar = StageBar(total=predict.num_batches(len(labels), ctx.batch_size), desc='robust')
  with bar, progress.listening('robust', bar):  # each attack's steps, within its batch
    (clean,) = predict.attack_correct(
      None,
      {},
      judge(ens, ctx),
      ctx.images,
      labels,
      batch_size=ctx.batch_size,
      bar=bar,
      mesh=ctx.mesh,
    )
    per_sample['clean'] = clean
    for eps in epsilons:
      worst, broken_by, eps_rows, own = run_eps(ens, ctx, steps, eps, clean, cascade, bar)
      rows += eps_rows
      per_sample.update({f'{name}_{eps:g}': c for name, c in own.items()})
      robust[f'{eps:g}'] = float(worst.mean())
      per_sample[f'worst_{eps:g}'] = worst
      per_sample[f'broken_by_{eps:g}'] = broken_by
  result = dict(
    dataset=config.dataset,
    method=config.method,
    num_members=ens.num_members,
    num_examples=len(labels),
    threat_model='Linf',
    eps=list(epsilons),
    preset=cfg.get('preset', 'default'),
    cascade=cascade,
    attacks=[name for name, _ in steps],
    overridden=overridden,
    eot_draws=int(cfg.eot_draws) if cfg.get('preset') == 'rand' else None,
    sampled_ensemble=sampled_ensemble(ens, ctx),
    clean_accuracy=float(clean.mean()),
    robust_accuracy=robust,
    rows=rows,
  )
  return Report(
    result,
    robust_table(result, describe(ens, ctx)),
    {'robust_per_sample.npz': per_sample_npz(**per_sample)},
    metrics(result),
  )


def validate(config, cfg):
  plan(config, cfg)
  for name in names(cfg, 'attacks', robust_attacks(), 'robust'):
    group_params(config, cfg, name)
  eps_grid(config, cfg)
  if int(cfg.get('eot_draws', 1)) < 1:
    raise ConfigError(f'eval.robust.eot_draws must be >= 1, got {cfg.eot_draws}')


__all__ = ['PRESETS', 'SUITE']

SUITE = Suite('robust', run, defaults, validate, metrics, per_sample)
