"""Attack reports of eval.py: suites 'paper' (Table 4), 'sweep' (Figure 3), 'transfer' (Table 5).

Each suite has the `lpd_jax.evaluate.SUITES` signature `(ens, ds, config, workdir) ->
(result dict, Markdown)`; the driver writes `eval_<suite>.json` and `.md`.

* `paper_suite`: clean accuracy and accuracy under the paper's white-box grid (section
  5, METHODS.md "Attacks"): FGSM, BIM and PGD (L-inf) at two eps, JSMA at two gamma,
  C&W L2. Accuracy on all evaluated test points and on those the ensemble classifies
  right clean.
* `sweep_suite`: accuracy under PGD as eps doubles (L-inf 0.005 ... 0.64, L2 0.1 ...
  12.8), plotted on a log2 axis to `eval_sweep.png`.
* `transfer_suite`: black-box transfer. Examples made by an attack on a surrogate
  ensemble (`config.eval.transfer_workdir`) are evaluated on this one.

The ensemble is attacked as it is deployed: in evaluation mode (BatchNorm running
statistics, no dropout), through `Ensemble.log_predict` (log of the mean member
softmax, eq. 1). A prediction is the argmax of that output. Every attack runs jitted
on batches of one shape (`data.eval_batches` zero-pads the last batch), so each
attack compiles once per shape and static setting: eps and c are traced, so the two
PGD rows share one compile (JSMA's gamma sets a static feature budget).

Randomness (PGD starts, JSMA targets): the batch that starts at test index s gets
key fold_in(attack_key(config.seed, attack), s). The attacks then fold in the index
within the batch. Results depend on batch_size only through that split, and
`transfer_accuracy` with the same key and batch size gives the same examples.
"""

import os
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lpd_jax import checkpoint, data, methods
from lpd_jax import config as config_lib
from lpd_jax.attacks.common import as_partial
from lpd_jax.attacks.cw import cw_l2
from lpd_jax.attacks.gradient import bim, fgsm, pgd
from lpd_jax.attacks.saliency_map import jsma

PAPER_ATTACKS = ('fgsm', 'bim', 'pgd', 'jsma', 'cw')
TRANSFER_ATTACKS = ('fgsm', 'bim', 'pgd', 'jsma')
SWEEP_NORMS = ('linf', 'l2')
LABELS = {'none': 'No Attack', 'fgsm': 'FGSM', 'bim': 'BIM', 'pgd': 'PGD', 'jsma': 'JSMA',
          'cw': 'C&W'}
_ATTACK_FNS = {'fgsm': fgsm, 'bim': bim, 'pgd': pgd, 'jsma': jsma, 'cw': cw_l2}
_NORM_LABELS = {'linf': 'L-inf', 'l2': 'L2'}


def attack_key(seed, name):
  """PRNG key of attack `name` (e.g. 'pgd', 'pgd_l2', 'jsma') for run seed `seed`.

  Both eps of one attack share the key. The 'pgd' key is also the sweep's L-inf key,
  so the sweep's eps 0.02 and 0.04 points repeat the paper suite's PGD rows exactly.
  """
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(f'attack:{name}'.encode()) >> 1)


def _names(config, field, allowed):
  """A comma-separated config field -> a tuple of names, each in `allowed`."""
  names = tuple(s.strip() for s in str(config.eval[field]).split(',') if s.strip())
  bad = [s for s in names if s not in allowed]
  if bad or not names:
    raise config_lib.ConfigError(
        f'eval.{field}={config.eval[field]!r}: give a comma-separated list of {", ".join(allowed)}')
  return names


def _grid(config, field):
  values = tuple(float(v) for v in config.eval[field])
  if not values or min(values) <= 0:
    raise config_lib.ConfigError(
        f'eval.{field}={tuple(config.eval[field])!r}: give one or more values > 0')
  return values


def pgd_eps(config):
  """BIM and PGD (L-inf) eps: eval.pgd_eps, or the paper's for the dataset when empty."""
  if len(config.eval.pgd_eps):
    return _grid(config, 'pgd_eps')
  return (0.01, 0.02) if config.dataset == 'tiny_imagenet' else (0.02, 0.04)


def attack_grid(config, attacks):
  """The paper's settings of each attack in `attacks` -> list of rows.

  Each row: {'attack', 'label', 'param_name' (the Para. column), 'param', 'params'
  (keyword arguments of the attack)}. eps for FGSM, BIM and PGD; gamma for JSMA; c for
  C&W. BIM and PGD take eval.attack_steps steps of eps / 10 (the attacks' default), PGD
  from a uniform random start.
  """
  e = config.eval
  steps = int(e.attack_steps)
  rows = []

  def add(attack, param_name, param, **params):
    rows.append(dict(attack=attack, label=LABELS[attack], param_name=param_name,
                     param=float(param), params=params))

  for attack in attacks:
    if attack == 'fgsm':
      for eps in _grid(config, 'fgsm_eps'):
        add('fgsm', 'eps', eps, eps=eps)
    elif attack in ('bim', 'pgd'):
      for eps in pgd_eps(config):
        add(attack, 'eps', eps, eps=eps, steps=steps)
    elif attack == 'jsma':
      for gamma in _grid(config, 'jsma_gamma'):
        add('jsma', 'gamma', gamma, theta=float(e.jsma_theta), gamma=gamma)
    elif attack == 'cw':
      add('cw', 'c', e.cw_c, c=float(e.cw_c), confidence=float(e.cw_confidence),
          steps=int(e.cw_steps), binary_search_steps=int(e.cw_binary_search_steps),
          learning_rate=float(e.cw_learning_rate))
  return rows


def model_fn(ens):
  """The attacks' model function of an ensemble: its `log_predict` as a `Partial`, so
  the stacked parameters are traced arguments (see `as_partial`)."""
  return as_partial(ens.log_predict)


@jax.jit
def _correct(model, x, y):
  return jnp.argmax(model(x), -1) == y


def attack_correct(attack, params, source, images, labels, *, key=None, batch_size=256,
                   targets=None, bar=None):
  """Which samples the target models classify right on `attack`'s examples against `source`.

  Args:
    attack: an attack of lpd_jax.attacks (e.g. `pgd`), or None for the clean inputs.
    params: the attack's keyword parameters, e.g. {'eps': 0.02}.
    source: the attacked model, an Ensemble (or any pytree with `log_predict`), see
      `model_fn`.
    images: [N, ...] uint8 or float in [0, 1]; labels: int [N].
    key: PRNG key; the batch starting at index s gets fold_in(key, s). None: no key.
    batch_size: samples per attack call (at most N); the last batch is zero-padded.
    targets: models evaluated on the examples; default (source,), i.e. white-box.
    bar: optional tqdm bar, advanced once per batch.

  Returns:
    list of bool arrays [N], one per target.
  """
  targets = (source,) if targets is None else tuple(targets)
  model = model_fn(source)
  evaluated = [model_fn(t) for t in targets]
  batch_size = min(batch_size, len(labels))
  out = [[] for _ in targets]
  device = jax.devices()[0]
  for i, (x, y, n) in enumerate(data.eval_batches(images, labels, batch_size)):
    # Committed like the attacks' outputs, so clean and adversarial batches share compiles.
    x, y = jax.device_put((x, y), device)
    if attack is not None:
      batch_key = None if key is None else jax.random.fold_in(key, i * batch_size)
      x = attack(model, x, y, key=batch_key, **params)
    for o, t in zip(out, evaluated):
      o.append(np.asarray(_correct(t, x, y))[:n])
    if bar is not None:
      bar.update()
  return [np.concatenate(o) for o in out]


def _accuracies(correct, clean_correct):
  """-> (accuracy on all, accuracy on the clean-correct samples or None if there are none)."""
  on_clean = float(correct[clean_correct].mean()) if clean_correct.any() else None
  return float(correct.mean()), on_clean


def _fmt_param(p):
  """0.02 -> '0.02', 0.1 -> '0.10' (the paper's two decimals), 0.005 -> '0.005'."""
  if p is None:
    return '-'
  s = f'{p:.2f}'
  return s if abs(float(s) - p) < 1e-9 else f'{p:g}'


def _pct(a):
  return '-' if a is None else f'{100 * a:.2f}'


def _describe(ens, config, n):
  return (f'{n} test images of {config.dataset}, K = {ens.num_members}, '
          f'method {methods.display_name(config.method)}')


def _num_batches(n, batch_size):
  return -(-n // min(batch_size, n))


def paper_suite(ens, ds, config, workdir):
  """Suite 'paper': accuracy under the white-box attacks of Table 4 (paper section 5).

  Attacks eval.attacks (default all of FGSM, BIM, PGD, JSMA, C&W) at the grid of the
  config (defaults: METHODS.md "Attacks") on the test prefix of eval.num_examples, in
  batches of eval.batch_size. Writes `paper_per_sample.npz` (labels, clean and per-row
  correctness) beside the JSON.

  Returns:
    (dict with dataset, method, num_members, num_examples, num_clean_correct,
     batch_size, seed and rows: [{attack, label, param_name, param, params, accuracy,
     accuracy_clean_correct, seconds}], the first row 'No Attack';
     Markdown in the layout of Table 4).
  """
  from lpd_jax import evaluate  # evaluate imports this module

  images, labels = evaluate.test_prefix(ds, config)
  grid = attack_grid(config, _names(config, 'attacks', PAPER_ATTACKS))
  batch_size = config.eval.batch_size
  per_row = _num_batches(len(labels), batch_size)
  with tqdm(total=per_row * (1 + len(grid)), desc='paper attacks', disable=None) as bar:
    bar.set_postfix_str('clean')
    (clean,) = attack_correct(None, {}, ens, images, labels, batch_size=batch_size, bar=bar)
    rows = [dict(attack='none', label=LABELS['none'], param_name=None, param=None, params={},
                 accuracy=float(clean.mean()),
                 accuracy_clean_correct=1.0 if clean.any() else None, seconds=0.0)]
    per_sample = {'labels': np.asarray(labels), 'none': clean}
    for row in grid:
      bar.set_postfix_str(f"{row['label']} {row['param']:g}")
      start = time.perf_counter()
      (correct,) = attack_correct(_ATTACK_FNS[row['attack']], row['params'], ens, images, labels,
                                  key=attack_key(config.seed, row['attack']),
                                  batch_size=batch_size, bar=bar)
      acc, acc_clean = _accuracies(correct, clean)
      rows.append(dict(row, accuracy=acc, accuracy_clean_correct=acc_clean,
                       seconds=time.perf_counter() - start))
      per_sample[f"{row['attack']}_{row['param']:g}"] = correct
  np.savez(os.path.join(workdir, 'paper_per_sample.npz'), **per_sample)
  result = dict(dataset=config.dataset, method=config.method, num_members=ens.num_members,
                num_examples=len(labels), num_clean_correct=int(clean.sum()),
                batch_size=min(batch_size, len(labels)), seed=config.seed, rows=rows)
  return result, paper_table(result, config)


def paper_table(result, config):
  """Markdown of a paper-suite result in the layout of Table 4."""
  e = config.eval
  lines = [
      f"White-box attacks, accuracy (%) on {result['num_examples']} test images of "
      f"{result['dataset']} (K = {result['num_members']}, method "
      f"{methods.display_name(result['method'])}), {result['num_clean_correct']} of them "
      'classified right clean', '',
      '| Attacks | Para. | Accuracy (%) | Accuracy on clean-correct (%) |',
      '| --- | --- | --- | --- |']
  previous = None
  for row in result['rows']:
    name = row['label'] if row['attack'] != previous else ''
    previous = row['attack']
    lines.append(f"| {name} | {_fmt_param(row['param'])} | {_pct(row['accuracy'])} | "
                 f"{_pct(row['accuracy_clean_correct'])} |")
  lines += ['', f'Para.: eps (L-inf) for FGSM, BIM and PGD ({e.attack_steps} steps of eps / 10, '
            f'PGD from a random start); gamma for JSMA (theta {e.jsma_theta}); c for C&W L2 '
            f'({e.cw_steps} steps, {e.cw_binary_search_steps} binary-search steps, confidence '
            f'{e.cw_confidence}).']
  return '\n'.join(lines)


def sweep_suite(ens, ds, config, workdir):
  """Suite 'sweep': accuracy under PGD as eps doubles (Figure 3).

  For each norm of eval.sweep_norms, PGD (eval.attack_steps steps, random start) at
  each eps of eval.sweep_linf_eps / eval.sweep_l2_eps. Writes `eval_sweep.png`: one
  panel per norm, accuracy (%) against eps on a log2 axis, clean accuracy dashed.

  Returns:
    (dict with dataset, method, num_members, num_examples, clean_accuracy, steps,
     plot (file name) and sweep {norm: [{eps, accuracy, accuracy_clean_correct}]};
     Markdown tables).
  """
  from lpd_jax import evaluate  # evaluate imports this module

  images, labels = evaluate.test_prefix(ds, config)
  norms = _names(config, 'sweep_norms', SWEEP_NORMS)
  grids = {norm: _grid(config, f'sweep_{norm}_eps') for norm in norms}
  steps = int(config.eval.attack_steps)
  batch_size = config.eval.batch_size
  per_row = _num_batches(len(labels), batch_size)
  total = per_row * (1 + sum(len(g) for g in grids.values()))
  sweep = {}
  with tqdm(total=total, desc='PGD sweep', disable=None) as bar:
    (clean,) = attack_correct(None, {}, ens, images, labels, batch_size=batch_size, bar=bar)
    for norm in norms:
      key = attack_key(config.seed, 'pgd' if norm == 'linf' else f'pgd_{norm}')
      sweep[norm] = []
      for eps in grids[norm]:
        bar.set_postfix_str(f'{norm} {eps:g}')
        (correct,) = attack_correct(pgd, dict(eps=eps, steps=steps, norm=norm), ens, images,
                                    labels, key=key, batch_size=batch_size, bar=bar)
        acc, acc_clean = _accuracies(correct, clean)
        sweep[norm].append(dict(eps=eps, accuracy=acc, accuracy_clean_correct=acc_clean))
  result = dict(dataset=config.dataset, method=config.method, num_members=ens.num_members,
                num_examples=len(labels), clean_accuracy=float(clean.mean()), steps=steps,
                plot='eval_sweep.png', sweep=sweep)
  plot_sweep(result, os.path.join(workdir, 'eval_sweep.png'))
  lines = [f'PGD-{steps} eps sweep (Figure 3), accuracy (%) on '
           f"{_describe(ens, config, len(labels))}; clean {_pct(result['clean_accuracy'])}"]
  for norm in norms:
    lines += ['', f'| eps ({_NORM_LABELS[norm]}) | Accuracy (%) | Accuracy on clean-correct (%) |',
              '| --- | --- | --- |']
    lines += [f"| {r['eps']:g} | {_pct(r['accuracy'])} | "
              f"{_pct(r['accuracy_clean_correct'])} |" for r in sweep[norm]]
  lines += ['', f'Plot: {os.path.join(workdir, "eval_sweep.png")}']
  return result, '\n'.join(lines)


def plot_sweep(result, path):
  """Figure 3 for one model: accuracy (%) against eps (log2 axis), one panel per norm."""
  from matplotlib.figure import Figure  # no pyplot: no global backend state
  from matplotlib.ticker import FixedLocator, NullLocator

  norms = list(result['sweep'])
  fig = Figure(figsize=(4.6 * len(norms), 3.8), layout='constrained')
  axes = fig.subplots(1, len(norms), squeeze=False)[0]
  name = f"{methods.display_name(result['method'])} (K = {result['num_members']})"
  for ax, norm in zip(axes, norms):
    eps = [r['eps'] for r in result['sweep'][norm]]
    acc = [100 * r['accuracy'] for r in result['sweep'][norm]]
    ax.plot(eps, acc, 'o-', label=name)
    ax.axhline(100 * result['clean_accuracy'], color='gray', ls='--', lw=1, label='clean')
    ax.set_xscale('log', base=2)
    ax.xaxis.set_major_locator(FixedLocator(eps))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f'{e:g}' for e in eps], rotation=45)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    label = r'$L_\infty$' if norm == 'linf' else r'$L_2$'
    ax.set_title(f'PGD-{result["steps"]}, {label}')
    ax.set_xlabel(rf'$\epsilon$ ({label}, log$_2$ scale)')
    ax.set_ylabel('accuracy (%)')
    ax.legend(loc='lower left', fontsize='small')
  fig.suptitle(f"{result['dataset']}: accuracy under PGD, {result['num_examples']} test images")
  fig.savefig(path, dpi=120)


def load_surrogate(config, ds):
  """The surrogate Ensemble of eval.transfer_workdir; ConfigError if it cannot serve `ds`."""
  workdir = config.eval.transfer_workdir
  if not workdir:
    raise config_lib.ConfigError(
        "suite 'transfer' needs --config.eval.transfer_workdir=DIR: the workdir of the "
        'surrogate ensemble the adversarial examples are made on')
  meta = checkpoint.read_meta(workdir)
  if meta is not None:
    saved, num_classes, input_shape = meta
    theirs = (saved.dataset, tuple(input_shape), num_classes)
    ours = (config.dataset, tuple(ds.input_shape), ds.num_classes)
    if theirs != ours:
      raise config_lib.ConfigError(
          f'eval.transfer_workdir={workdir!r} holds an ensemble for another dataset (dataset, '
          f'input shape, classes) = {theirs}; this one is {ours}')
  try:
    surrogate = checkpoint.load(workdir)
  except checkpoint.CheckpointError as e:
    raise config_lib.ConfigError(f'eval.transfer_workdir={workdir!r}: {e}') from None
  # How members execute is this run's choice, not the surrogate's training run's.
  return surrogate.replace(strategy=config.member_strategy)


def transfer_suite(ens, ds, config, workdir):
  """Suite 'transfer': black-box transfer (Table 5) from the surrogate of eval.transfer_workdir.

  Each attack of eval.transfer_attack (default PGD) runs on the surrogate at its paper
  grid (`attack_grid`), with the keys of the paper suite; this ensemble (the target)
  is evaluated on the examples. With the target's own workdir as surrogate the result
  is the paper suite's white-box accuracy.

  Returns:
    (dict with dataset, method, num_members, surrogate {workdir, method, num_members},
     num_examples, num_clean_correct (target), clean_accuracy (target),
     surrogate_clean_accuracy and rows: [{attack, label, param_name, param, params,
     accuracy, accuracy_clean_correct, surrogate_accuracy}]; Markdown).
  """
  from lpd_jax import evaluate  # evaluate imports this module

  surrogate = load_surrogate(config, ds)
  images, labels = evaluate.test_prefix(ds, config)
  grid = attack_grid(config, _names(config, 'transfer_attack', TRANSFER_ATTACKS))
  batch_size = config.eval.batch_size
  per_row = _num_batches(len(labels), batch_size)
  rows = []
  with tqdm(total=per_row * (1 + len(grid)), desc='transfer', disable=None) as bar:
    clean, surrogate_clean = attack_correct(None, {}, surrogate, images, labels,
                                            batch_size=batch_size, targets=(ens, surrogate),
                                            bar=bar)
    for row in grid:
      bar.set_postfix_str(f"{row['label']} {row['param']:g}")
      correct, surrogate_correct = attack_correct(
          _ATTACK_FNS[row['attack']], row['params'], surrogate, images, labels,
          key=attack_key(config.seed, row['attack']), batch_size=batch_size,
          targets=(ens, surrogate), bar=bar)
      acc, acc_clean = _accuracies(correct, clean)
      rows.append(dict(row, accuracy=acc, accuracy_clean_correct=acc_clean,
                       surrogate_accuracy=float(surrogate_correct.mean())))
  sur_config = surrogate.config
  result = dict(
      dataset=config.dataset, method=config.method, num_members=ens.num_members,
      surrogate=dict(workdir=os.path.abspath(config.eval.transfer_workdir),
                     method=sur_config.method, num_members=surrogate.num_members,
                     width=sur_config.width),
      num_examples=len(labels), num_clean_correct=int(clean.sum()),
      clean_accuracy=float(clean.mean()), surrogate_clean_accuracy=float(surrogate_clean.mean()),
      rows=rows)
  lines = [
      f'Transfer attacks (Table 5 layout): examples made on the surrogate '
      f"{result['surrogate']['workdir']} ({methods.display_name(sur_config.method)}, K = "
      f'{surrogate.num_members}, width {sur_config.width}), evaluated on this ensemble: '
      f"{_describe(ens, config, len(labels))}; clean {_pct(result['clean_accuracy'])}", '',
      '| Attacks | Para. | Accuracy (%) | Accuracy on clean-correct (%) | '
      'Surrogate accuracy, white-box (%) |', '| --- | --- | --- | --- | --- |']
  previous = None
  for row in rows:
    lines.append(f"| {row['label'] if row['attack'] != previous else ''} | "
                 f"{_fmt_param(row['param'])} | {_pct(row['accuracy'])} | "
                 f"{_pct(row['accuracy_clean_correct'])} | {_pct(row['surrogate_accuracy'])} |")
    previous = row['attack']
  return result, '\n'.join(lines)
