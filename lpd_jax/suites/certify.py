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

from lpd_jax import attacks, certify, predict, progress, sharding
from lpd_jax.certify.cost import format_seconds
from lpd_jax.certify.memory import format_bytes
from lpd_jax.data import to_float
from lpd_jax.errors import ConfigError
from lpd_jax.progress import StageBar
from lpd_jax.suites.certify_figures import plot_curve, plot_scatter
from lpd_jax.suites.certify_report import (  # noqa: F401 (cap_text: API)
  cap_text,
  metrics,
  per_sample,
  table,
)
from lpd_jax.suites.common import Report, Suite, attack_key, figure_png, names
from lpd_jax.suites.samples import per_sample_npz

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
  from the first batch) and their sum -> {(method, eps): estimated seconds}."""
  _, x, y, batch = next(predict.padded_batches(images, labels, int(cfg.batch_size)))
  n = len(labels)
  forward = certify.forward_seconds(ens, x, y)
  estimates = {}
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
    estimates[method, e] = seconds
    print(
      f'certify: {method} at eps {e:g} on {n} samples: {format_seconds(seconds)}, '
      f'{format_bytes(memory)} (estimate)'
    )
  print(
    f'certify: {format_seconds(sum(estimates.values()))} in all, plus compilation (estimated '
    f'from the unstable neurons under interval bounds of the first {batch} samples and a '
    f'forward pass timed here: {1e3 * forward:.2g} ms per sample and member)'
  )
  return estimates


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


def reports_passes(estimate, batch, n):
  """Whether a run estimated at `estimate` seconds for n samples reports the passes inside
  each batch call (`certify.margins_and_fallbacks(report=True)`): where progress is asked for
  and a call of `batch` samples would run past `progress.INTERVAL_S` (a shorter call moves
  the bar itself, and keeps its program in the persistent cache: no host callbacks)."""
  listened = progress.listened() and sharding.process_count() == 1
  return listened and estimate * min(batch, n) / n > progress.INTERVAL_S


def minimal_lower_bounds(ens, images, labels, eps, method, cfg, bar, mesh=None, report=False):
  """Per sample min_j of the lower bounds of F_y - F_j: [N] (numpy), and per ReLU layer the
  unstable neurons the cap left with interval bounds, summed over members and samples.
  Batches split over `mesh`'s data axis when given (`ens` replicated by the caller);
  `report`: the passes of each batch call as `progress` units."""
  out, fell_back = [], 0
  settings = dict(
    method=method,
    max_unstable=cap(cfg),
    chunk=int(cfg.chunk),
    alpha_steps=int(cfg.alpha_steps),
    alpha_intermediate=bool(cfg.alpha_intermediate),
  )
  for _, x, y, n in predict.padded_batches(images, labels, int(cfg.batch_size), mesh):
    units = 0  # no count: a clock
    if report:
      units = certify.progress_units(
        ens, x.shape[1:], len(x), method, cap(cfg), int(cfg.chunk), int(cfg.alpha_steps)
      )
    with progress.units(units, 'passes', f'{method} eps {eps:g}'):
      lower, fallbacks = certify.margins_and_fallbacks(ens, x, y, eps, report=report, **settings)
      lower = jax.block_until_ready(lower)
      jax.effects_barrier()  # every tick in before the count closes
    out.append(sharding.to_host(lower.min(axis=1))[:n])
    fell_back = fell_back + sharding.to_host(fallbacks)[:, :, :n].sum(axis=(0, 2))
    bar.update(n)
  return np.concatenate(out), [int(v) for v in np.atleast_1d(fell_back)]


def run(ens, ctx):
  """JSON: selected test indices, clean margins, per method the minimal lower bound of each
  sample, the certified fraction and seconds; the certified fraction against eps. Files:
  the plots and `certify_per_sample.npz` (test_index: the selected indices, labels, clean
  and PGD minimal margins, each method and eps's minimal lower bounds, `<method>_<eps>`)."""
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
  estimates = say_estimates(ens, images, labels, runs, cfg)
  per_method, lowers, fallbacks = {}, {}, {}
  pgd = None
  if cfg.pgd_steps:  # the clean point is in the ball too
    pgd = np.minimum(clean, pgd_minimal_margins(on_mesh, images, labels, eps, ctx, cfg))
  bar = StageBar(total=len(labels) * len(runs), desc='certify')
  with bar, progress.listening('certify', bar):
    for method, e in runs:
      bar.stage(f'{method} eps {e:g}')
      start = time.perf_counter()
      report = reports_passes(estimates[method, e], int(cfg.batch_size), len(labels))
      found = minimal_lower_bounds(on_mesh, images, labels, e, method, cfg, bar, ctx.mesh, report)
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
  files = {
    'eval_certify.png': figure_png(plot_scatter(result)),
    'certify_per_sample.npz': per_sample_npz(
      labels,
      chosen,
      clean_minimal_margin=clean,
      **({} if pgd is None else dict(pgd_minimal_margin=pgd)),
      **{f'{m}_{e:g}': lower for (m, e), lower in lowers.items()},
    ),
  }
  if curve:
    files['eval_certify_curve.png'] = figure_png(plot_curve(result))
  return Report(result, table(result, ens, ctx), files, metrics(result))


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


SUITE = Suite('certify', run, DEFAULTS, validate, metrics, per_sample)
