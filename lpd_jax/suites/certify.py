"""Suite 'certify': certified robustness of the ensemble (paper section 4.4, Figure 2).

Selects, as the paper does, the first eval.certify.num_examples test images that every
member classifies correctly (raw inference), bounds the margins F_y - F_j of the mean
member logits over the L-inf ball of radius eval.certify.eps (intersected with [0, 1])
by each method of eval.certify.methods (`lpd_jax.certify`), and reports per sample the
minimal lower bound (> 0: certified). The certified fraction is also traced against eps
(eps * 2^i, i < curve_points) for the methods of curve_methods. Plots: the Figure 2
scatter (eval_certify.png) and the curve (eval_certify_curve.png).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import attacks, certify, predict, sharding
from lpd_jax.certify.cost import format_seconds
from lpd_jax.certify.memory import format_bytes
from lpd_jax.data import to_float
from lpd_jax.errors import ConfigError
from lpd_jax.progress import StageBar
from lpd_jax.suites.certify_figures import plot_curve, plot_scatter
from lpd_jax.suites.common import (
  Metric,
  Report,
  Suite,
  attack_key,
  describe,
  figure_png,
  markdown_table,
  names,
  pct,
)

DEFAULTS = dict(
  num_examples=200,  # the first test images every member classifies correctly
  eps=0.0005,  # L-inf radius (the paper's)
  methods='ibp,crown_ibp,crown,alpha_crown',  # lpd_jax.certify.METHODS; crown is the paper's
  curve_methods='crown,alpha_crown',  # certified fraction against eps * 2^i for these
  curve_points=5,
  batch_size=50,  # samples per call ('crown' bounds 8 at a time inside it)
  max_unstable=0,  # crown: 0 = every unstable neuron (full CROWN); N caps them per layer
  chunk=certify.CHUNK,  # crown: neurons per backward pass
  alpha_steps=certify.alpha.STEPS,  # alpha_crown: Adam steps on the slopes (the reference's 20)
  # alpha_crown: optimise the intermediate bounds' slopes too (the reference's default; about
  # 3 * alpha_steps times CROWN's work) or only the last pass's (CROWN's intermediate bounds)
  alpha_intermediate=True,
  pgd_steps=50,  # the margin a PGD reaches beside the bounds (an upper bound); 0: none
)


def select(ens, ctx, num_examples, batch_size):
  """Indices of the first `num_examples` test images all members classify correctly."""
  logits = predict.member_logits(ens.with_inference('raw'), ctx.images, batch_size, mesh=ctx.mesh)
  all_correct = np.all(np.argmax(logits, axis=-1) == np.asarray(ctx.labels)[None], axis=0)
  return np.flatnonzero(all_correct)[:num_examples], int(all_correct.size)


def say_estimates(ens, images, labels, runs, cfg):
  """Prints, before anything is bounded, each (method, eps) run's memory and time estimate
  on the selected images [N, H, W, c] (`certify.memory_estimate`, `certify.time_estimate`
  from the first batch) and their sum."""
  _, x, y, batch = next(predict.padded_batches(images, labels, int(cfg.batch_size)))
  n = len(labels)
  forward = certify.forward_seconds(ens, x, y)
  total = 0.0
  for method, e in runs:
    intermediate = bool(cfg.alpha_intermediate)
    memory = certify.memory_estimate(ens, x.shape[1:], method, len(x), int(cfg.chunk), intermediate)
    seconds = certify.time_estimate(
      ens,
      x,
      e,
      method,
      n,
      forward,
      cap(cfg),
      int(cfg.chunk),
      batch,
      int(cfg.alpha_steps),
      intermediate,
    )
    total += seconds
    print(
      f'certify: {method} at eps {e:g} on {n} samples: {format_seconds(seconds)}, '
      f'{format_bytes(memory)} (estimate)'
    )
  print(
    f'certify: {format_seconds(total)} in all, plus compilation (estimated from the '
    f'unstable neurons under interval bounds of the first {batch} samples and a forward pass '
    f'timed here: {1e3 * forward:.2g} ms per sample and member)'
  )


def _mean_logits(ens, x):
  return jnp.mean(ens.members.logits(ens.variables, x), axis=0)


def pgd_minimal_margins(ens, images, labels, eps, ctx, cfg):
  """Per sample the minimal margin min_j F_y - F_j of the mean member logits at the point a
  cfg.pgd_steps-step L-inf PGD on the margin (step eps / 4, random start) reaches in
  B_inf(x, eps) ∩ [0, 1]: [N] (`run` takes the smaller of it and the clean margin: an upper
  bound of the certifiable margin). Batches split over ctx.mesh's data axis when given
  (`ens` replicated by the caller)."""
  model = jax.tree_util.Partial(_mean_logits, ens)
  key = attack_key(ctx.config.seed, 'certify:pgd_margin')
  out = []
  for start, x, y, n in predict.padded_batches(images, labels, int(cfg.batch_size), ctx.mesh):
    x_adv = attacks.pgd(
      model,
      x,
      y,
      key=jax.random.fold_in(key, start),
      eps=eps,
      steps=int(cfg.pgd_steps),
      step_size=eps / 4,
      loss='margin',
    )
    out.append(sharding.to_host(certify.mean_logit_margins(ens, x_adv, y).min(axis=1))[:n])
  return np.concatenate(out)


def cap(cfg):
  """eval.certify.max_unstable as `certify.margins` takes it: None for 0 (full CROWN)."""
  return int(cfg.max_unstable) or None


def minimal_lower_bounds(ens, images, labels, eps, method, cfg, bar, mesh=None):
  """Per sample min_j of the lower bounds of F_y - F_j: [N] (numpy), and per ReLU layer the
  unstable neurons the cap left with interval bounds, summed over members and samples.
  Batches split over `mesh`'s data axis when given (`ens` replicated by the caller)."""
  out, fell_back = [], 0
  for _, x, y, n in predict.padded_batches(images, labels, int(cfg.batch_size), mesh):
    lower, fallbacks = certify.margins_and_fallbacks(
      ens,
      x,
      y,
      eps,
      method=method,
      max_unstable=cap(cfg),
      chunk=int(cfg.chunk),
      alpha_steps=int(cfg.alpha_steps),
      alpha_intermediate=bool(cfg.alpha_intermediate),
    )
    out.append(sharding.to_host(lower.min(axis=1))[:n])
    fell_back = fell_back + sharding.to_host(fallbacks)[:, :, :n].sum(axis=(0, 2))
    bar.update(n)
  return np.concatenate(out), [int(v) for v in np.atleast_1d(fell_back)]


def run(ens, ctx):
  """JSON: selected test indices, clean margins, per method the minimal lower bound of each
  sample, the certified fraction and seconds; the certified fraction against eps."""
  cfg = ctx.cfg
  certify.check_certifiable(ens)
  methods = names(cfg, 'methods', certify.METHODS, 'certify')
  curve_methods = (
    names(cfg, 'curve_methods', certify.METHODS, 'certify') if cfg.curve_points else ()
  )
  chosen, scanned = select(ens, ctx, int(cfg.num_examples), int(cfg.batch_size))
  if not len(chosen):
    raise ConfigError('certify: no test image is classified correctly by every member')
  images = to_float(np.asarray(ctx.images)[chosen])
  labels = np.asarray(ctx.labels)[chosen]
  on_mesh = sharding.replicate(ens, ctx.mesh)
  clean = np.concatenate(
    [
      sharding.to_host(certify.mean_logit_margins(on_mesh, x, y).min(axis=1))[:n]
      for _, x, y, n in predict.padded_batches(images, labels, int(cfg.batch_size), ctx.mesh)
    ]
  )
  eps = float(cfg.eps)
  runs = [(m, eps) for m in methods]
  runs += [
    (m, eps * 2**i)
    for m in curve_methods
    for i in range(int(cfg.curve_points))
    if i or m not in methods
  ]
  say_estimates(ens, images, labels, runs, cfg)
  per_method, lowers, fallbacks = {}, {}, {}
  pgd = None
  if cfg.pgd_steps:  # the clean point is in the ball too
    pgd = np.minimum(clean, pgd_minimal_margins(on_mesh, images, labels, eps, ctx, cfg))
  with StageBar(total=len(labels) * len(runs), desc='certify') as bar:
    for method, e in runs:
      bar.stage(f'{method} eps {e:g}')
      start = time.perf_counter()
      found = minimal_lower_bounds(on_mesh, images, labels, e, method, cfg, bar, ctx.mesh)
      lowers[method, e], fallbacks[method, e] = found
      if e == eps and method in methods:
        lower = lowers[method, e]
        per_method[method] = dict(
          minimal_lower_bound=[float(v) for v in lower],
          certified_fraction=float(np.mean(lower > 0)),
          median_minimal_lower_bound=float(np.median(lower)),
          seconds=time.perf_counter() - start,
          fallbacks_per_layer=fallbacks[method, e],
        )
  curve = {
    m: [
      dict(
        eps=eps * 2**i,
        certified_fraction=float(np.mean(lowers[m, eps * 2**i] > 0)),
        fallbacks=sum(fallbacks[m, eps * 2**i]),
      )
      for i in range(int(cfg.curve_points))
    ]
    for m in curve_methods
  }
  result = dict(
    eps=eps,
    norm='linf',
    output='mean member logits (raw inference), margins F_y - F_j over B_inf(x, eps) ∩ [0,1]',
    selection=f'first {len(chosen)} of {scanned} test images classified correctly by every member',
    indices=[int(i) for i in chosen],
    num_examples=len(chosen),
    clean_minimal_margin=[float(v) for v in clean],
    pgd_minimal_margin=None if pgd is None else [float(v) for v in pgd],
    pgd=dict(steps=int(cfg.pgd_steps), step_size='eps / 4', loss='margin of the mean logits'),
    alpha=dict(steps=int(cfg.alpha_steps), intermediate=bool(cfg.alpha_intermediate)),
    max_unstable=int(cfg.max_unstable),
    methods=per_method,
    curve=curve,
    num_members=ens.num_members,
    method=ctx.config.method,
    dataset=ctx.config.dataset,
    plots=['eval_certify.png', 'eval_certify_curve.png'] if curve else ['eval_certify.png'],
  )
  files = {'eval_certify.png': figure_png(plot_scatter(result))}
  if curve:
    files['eval_certify_curve.png'] = figure_png(plot_curve(result))
  return Report(result, table(result, ens, ctx), files, metrics(result))


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


def validate(config, cfg):
  if config.model not in ('resnet18', 'resnet34'):
    raise ConfigError(
      f'eval.certify: bound propagation supports resnet18 and resnet34, not {config.model!r} '
      '(max-pool layers have no relaxation in lpd_jax.certify)'
    )
  names(cfg, 'methods', certify.METHODS, 'certify')
  if cfg.curve_points:
    names(cfg, 'curve_methods', certify.METHODS, 'certify')
  if cfg.eps <= 0 or cfg.num_examples < 1 or cfg.batch_size < 1 or cfg.curve_points < 0:
    raise ConfigError(
      'eval.certify: eps must be > 0, num_examples and batch_size >= 1, curve_points >= 0'
    )
  if cfg.max_unstable < 0 or cfg.chunk < 1 or cfg.alpha_steps < 0 or cfg.pgd_steps < 0:
    raise ConfigError(
      'eval.certify: max_unstable must be >= 0 (0: full CROWN), chunk >= 1, alpha_steps >= 0, '
      'pgd_steps >= 0 (0: no PGD margin)'
    )


SUITE = Suite('certify', run, DEFAULTS, validate, metrics)
