"""What `compare --run_missing` will run, and for about how long, said before it runs anything.

An evaluation's cost is counted from its settings, in passes: one forward and backward pass
of the ensemble (its K members) on one test image, what a gradient attack's step costs. A
forward pass alone (a prediction, a Square query) counts `FORWARD` of one: a backward pass
costs about two forwards. `COUNTS` holds one counting function per suite type; `attack_passes`
counts one attack as its code runs it (APGD: a gradient at the start and at each of its steps;
APGD-T and FAB-T: a forward to rank the targets, then each target's run; FAB: a gradient and a
forward per iteration; Square: a forward per query and one at its start), plus the forward
that judges its examples.

Nothing is run to estimate: the seconds a pass costs come from the workdir's own training.
One training step is about one forward and backward of the K members per image (with
adversarial training, one more per step of its attack on its share of the batch), so a pass
costs about 1 / `images_per_second` of its metrics.jsonl (the median over its epochs) times
that. A rough rate: compilation comes on top, evaluation batches are not training batches,
and methods whose training loss differentiates input gradients (GAL, TRS, DEG) train slower
per image than they evaluate, which makes their estimate high. The cascade of `robust`
(each attack runs only on the points still robust), JSMA's early stop and the certify
selection make the real count lower: those say 'at most'. Certify's bounds are not counted
here (that suite prints their estimate when it starts).
"""

import dataclasses
import math

import numpy as np

from lpd_jax import attacks, data, methods
from lpd_jax.certify.cost import format_seconds
from lpd_jax.names import split_names
from lpd_jax.suites import paper, robust

FORWARD = 1 / 3  # a forward pass, in forward+backward passes


@dataclasses.dataclass(frozen=True)
class Cost:
  """passes: over all the evaluation's test images (None: an attack this module cannot
  count); at_most: the run may stop short of them; note: what is not counted."""

  passes: float = 0.0
  at_most: bool = False
  note: str = ''

  def __add__(self, other):
    if self.passes is None or other.passes is None:
      passes = None
    else:
      passes = self.passes + other.passes
    note = '; '.join(n for n in (self.note, other.note) if n)
    return Cost(passes, self.at_most or other.at_most, note)

  def times(self, k):
    return Cost(None if self.passes is None else self.passes * k, self.at_most, self.note)


def _pgd(p, run):
  restarts = int(p.get('restarts', 1))
  return restarts * int(p.get('steps', 10)) + (restarts * FORWARD if restarts > 1 else 0)


def _apgd(p, run):
  one = int(p.get('steps', 100)) + 1  # the start and each step: a gradient
  if not p.get('targeted', False):
    return one
  return FORWARD + _targets(p, run) * (one + FORWARD)


def _fab(p, run):
  per_target = int(p.get('restarts', 1)) * int(p.get('steps', 100)) * (1 + FORWARD) + 2 * FORWARD
  return FORWARD + _targets(p, run) * per_target


def _targets(p, run):
  return min(int(p.get('num_targets', 9)), run.num_classes - 1)


def _jsma(p, run):
  budget = round(float(p['gamma']) * int(np.prod(run.input_shape)), 6)
  iterations = int(budget / 2) if p.get('variant', 'once') == 'art' else math.ceil(int(budget) / 2)
  return iterations + 1  # the last finds none active


# Passes per image of each attack function (its registered params merged with the run's).
ATTACK_PASSES = {
  attacks.fgsm: lambda p, run: 1,
  attacks.bim: _pgd,
  attacks.pgd: _pgd,
  attacks.apgd: _apgd,
  attacks.fab: _fab,
  attacks.square: lambda p, run: (int(p.get('queries', 1000)) + 1) * FORWARD,
  attacks.cw_l2: lambda p, run: int(p.get('steps', 1000)) * int(p.get('binary_search_steps', 5)),
  attacks.jsma: _jsma,
}


def attack_passes(name, params, run, judges=1):
  """-> Cost per image of attack `name` with `params` through `predict.attack_correct`: its
  own passes plus a forward per model judging its examples."""
  attack = attacks.REGISTRY[name]
  count = ATTACK_PASSES.get(attack.fn)
  if count is None:
    return Cost(None, note=f'{name}: not counted')
  p = {**attack.params, **dict(params)}
  at_most = attack.fn is attacks.jsma
  return Cost(count(p, run) + judges * FORWARD, at_most)


def clean(run, cfg, n):
  return Cost(n * FORWARD)


def paper_rows(run, cfg, n, names, judges=1):
  rows = paper.attack_grid(cfg, names, run.config.dataset)
  return sum((attack_passes(r['attack'], r['params'], run, judges).times(n) for r in rows), Cost())


def paper_suite(run, cfg, n):
  names = split_names(cfg.attacks)
  return clean(run, cfg, n) + paper_rows(run, cfg, n, names)


def sweep(run, cfg, n):
  runs = sum(len(cfg[f'{norm}_eps']) for norm in split_names(cfg.norms))
  return Cost(n * (FORWARD + runs * (int(cfg.steps) + FORWARD)))


def transfer(run, cfg, n):
  """On each surrogate (its passes, at this workdir's rate): the paper grid of its attacks,
  each example judged by both models."""
  surrogates = len(split_names(cfg.workdir))
  judges = 3 if cfg.labels == 'surrogate' else 2  # and the surrogate's labels: a forward
  grid = paper_rows(run, run.config.eval.paper, n, split_names(cfg.attacks), judges)
  one = Cost(n * 2 * FORWARD) + grid
  return dataclasses.replace(one.times(surrogates), note='on its surrogates')


def probes(run, cfg, n):
  probed = n if cfg.num_examples is None or cfg.num_examples < 0 else min(cfg.num_examples, n)
  return Cost(n * FORWARD + probed)  # the members' input gradients: one pass


def robust_suite(run, cfg, n):
  steps, _ = robust.plan(run.config, cfg)
  draws = int(cfg.eot_draws) if cfg.get('preset') == 'rand' else 1
  per_eps = sum(
    (attack_passes(name, p, run, judges=0).times(draws) + Cost(FORWARD) for name, p in steps),
    Cost(),
  )
  cost = Cost(FORWARD) + per_eps.times(len(robust.eps_grid(run.config, cfg)))
  return dataclasses.replace(cost.times(n), at_most=cost.at_most or bool(cfg.get('cascade', True)))


def audit(run, cfg, n):
  m = min(int(cfg.num_examples), n)
  pgd_runs = 3 + 5 + int(methods.has_expected_inference(run.config)) + int(bool(cfg.surrogate))
  restarts = int(cfg.restarts)
  strong = int(cfg.strong_steps) * (restarts + 1) + (restarts * FORWARD if restarts > 1 else 0)
  per_image = (
    1  # FGSM
    + pgd_runs * int(cfg.steps)  # CE, margin, member margin, the eps curve (5), ...
    + strong  # margin PGD with restarts, and at the large eps
    + (int(cfg.square_queries) + 1) * FORWARD
    + 1  # the zero-gradient share
    + (pgd_runs + 5) * FORWARD  # the examples judged, and the clean points
  )
  return Cost(m * per_image)


def certify(run, cfg, n):
  m = min(int(cfg.num_examples), n)
  return Cost(
    n * FORWARD + m * (2 * FORWARD + int(cfg.pgd_steps)),
    at_most=True,
    note='plus the bounds, which the certify suite estimates when it starts',
  )


# Suite type -> count(run, settings group, test images) -> Cost.
COUNTS = {
  'clean': clean,
  'paper': paper_suite,
  'sweep': sweep,
  'transfer': transfer,
  'probes': probes,
  'robust': robust_suite,
  'audit': audit,
  'certify': certify,
}


def cost(run, evaluation, n):
  """The Cost of `evaluation` (`lpd_jax.evaluations.Evaluation`) on the first `n` test images
  of `run` (a `workdirs.Run`: its config, classes and input shape)."""
  count = COUNTS.get(evaluation.type)
  if count is None:
    return Cost(None, note=f'{evaluation.type}: not counted')
  return count(run, evaluation.settings, n)


def training_passes(config):
  """Passes per image of one training step: 1, plus its adversarial attack's steps on the
  attacked share of the batch."""
  c = config.get('adv_train')
  if c is None or c.attack == 'none':
    return 1.0
  return 1.0 + float(c.mix) * (1 if c.attack == 'fgsm' else int(c.steps))


def images_per_second(run):
  """The median training throughput of its metrics.jsonl, or None without one."""
  rates = [m['images_per_second'] for m in run.metrics if m.get('images_per_second')]
  return float(np.median(rates)) if rates else None


def seconds(run, c):
  """The seconds of Cost `c` at `run`'s training rate, or None (no rate, or not counted)."""
  rate = images_per_second(run)
  if rate is None or c.passes is None:
    return None
  return c.passes * training_passes(run.config) / rate


def count_text(passes):
  """2_400_000 -> '2.4M', 5300 -> '5.3k', 12 -> '12'."""
  for unit, size in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if passes >= size:
      return f'{passes / size:.2g}{unit}' if passes < 10 * size else f'{passes / size:.0f}{unit}'
  return f'{passes:.0f}'


def plan_line(run, evaluation, n, c):
  """'compare: will run robust on lpd_s0 (359 test images): about 1.2 h (at most 2.4M
  passes at 190 images/s of its training)'."""
  rate, s = images_per_second(run), seconds(run, c)
  if c.passes is None:
    how = 'time unknown'
  elif s is None:
    how = f'time unknown ({count_text(c.passes)} passes; no training throughput in its metrics)'
  else:
    bound = 'at most ' if c.at_most else ''
    how = (
      f'{format_seconds(s)} ({bound}{count_text(c.passes)} passes at {rate:.0f} images/s '
      'of its training)'
    )
  note = f'; {c.note}' if c.note else ''
  return f'compare: will run {evaluation.name} on {run.name} ({n} test images): {how}{note}'


def say_plan(planned):
  """Prints a line per (run, evaluation, test images) of `planned` with its estimate, and
  their sum."""
  total, unknown, at_most = 0.0, 0, False
  for run, evaluation, n in planned:
    c = cost(run, evaluation, n)
    print(plan_line(run, evaluation, n, c), flush=True)
    s = seconds(run, c)
    total += s or 0.0
    unknown += s is None
    at_most |= c.at_most
  if not planned:
    return
  count = f'{len(planned)} evaluation{"s" * (len(planned) > 1)}'
  bound = ' at most' if at_most else ''
  rest = f' and {unknown} without an estimate' if unknown else ''
  print(
    f'compare: {count}, {format_seconds(total)} in all{bound}{rest}, plus compilation (a pass: '
    "one forward and backward of the K members on one image, at the workdir's training "
    'throughput: a rough rate)',
    flush=True,
  )


def evaluated_images(config, evaluation, sizes):
  """How many test images `evaluation` runs on under `config`: its prefix, at most the test
  set (loaded once per dataset into the memo `sizes`)."""
  key = (config.dataset, config.get('npz_path'), config.get('data_dir'), config.get('split_seed'))
  if key not in sizes:
    sizes[key] = len(data.load_dataset(config).test_labels)
  n = evaluation.num_examples
  return sizes[key] if n is None or n < 0 else min(int(n), sizes[key])
