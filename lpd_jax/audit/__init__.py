"""Gradient-masking audit: the checks of Athalye et al. 2018 and Carlini et al. 2019.

`run(model_fn, x, y, *, eps, key, ...)` attacks a model several ways and turns each
red flag of those papers into a verdict with the numbers behind it:

  iterative_beats_single_step   PGD is at least as strong as FGSM
  white_box_beats_transfer      white-box PGD beats PGD transferred from a surrogate
  large_eps_reaches_zero        accuracy at L-inf eps `large_eps` (0.5: half the pixel
                                range) is ~0 under margin PGD from random starts
  monotone_in_eps               accuracy does not rise with eps
  gradient_free_not_better      Square (no gradients) does not beat the gradient attacks
  more_steps_do_not_help_much   10x the steps and restarts lower accuracy only a little
  margin_not_much_better_than_ce  the margin loss does not beat the cross-entropy by much
  gradients_are_not_zero        few samples have an exactly-zero float32 gradient of the
                                attack loss (cross-entropy on eq. 1)
  raw_vs_expected               (with `expected_fn`) the head at its training scale is not
                                much less robust than raw inference reports

A failed check is evidence of gradient masking (or of a too-weak attack), not proof;
a passed audit is no proof of robustness. `worst_case_accuracy` is the per-sample worst
case over every attack run at `eps`: the number to report.

Pure: arrays and model functions in, a dict out (the 'audit' suite wraps it).
"""

import contextlib
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import attacks, sharding
from lpd_jax.attacks.common import as_partial, loss_grad
from lpd_jax.audit.checks import ALPHA, CHECKS, TOO_FEW, binomial_tail, fails_from, n_min, rule
from lpd_jax.audit.checks import verdict as verdict
from lpd_jax.progress import StageBar, listening

TOLERANCE = 0.05  # accuracy points a check may be off before it fails


@jax.jit
def _predicted_right(model, x, y):
  return jnp.argmax(model(x), -1) == y


def _correct(model, x, y):
  return sharding.to_host(_predicted_right(model, x, y))


def zero_gradient_share(model_fn, x, y):
  """Share of samples whose cross-entropy input gradient (on `model_fn`'s log-probabilities)
  is exactly 0 in every coordinate, in float32: where gradient attacks cannot move."""
  g = loss_grad(as_partial(model_fn), x, y, 'ce')  # the attacks' own gradient of their loss
  flat = sharding.to_host(g).reshape(len(x), -1)
  return float(np.mean(np.all(flat == 0, axis=1)))


@dataclasses.dataclass(frozen=True)
class Evidence:
  """What the checks read, measured once by `measure` (accuracies as fractions).

  Attributes:
    accuracies: {attack: accuracy at eps}, every attack of the worst case.
    correct: {attack: bool [B]} per-sample correctness under each of them.
    clean: bool [B] correctness on the clean inputs.
    eps, large_eps, steps, strong_steps, restarts, tolerance: the audit's settings.
    transfer: accuracy under PGD-CE made on the surrogate, or None without one.
    large_eps_accuracy: accuracy under strong margin PGD at `large_eps`.
    eps_curve: ([eps / 4, ..., 4 eps], accuracy under margin PGD at each).
    zero_gradient_share: share of samples whose CE input gradient is exactly 0.
    expected: accuracy of the expected-inference model under its own margin PGD, or None.
  """

  accuracies: dict
  correct: dict
  clean: np.ndarray
  eps: float
  large_eps: float
  steps: int
  strong_steps: int
  restarts: int
  tolerance: float
  transfer: Optional[float]
  large_eps_accuracy: float
  eps_curve: tuple
  zero_gradient_share: float
  expected: Optional[float]


class _Attacks:
  """The attacks of one audit on (x, y) at eps, each a stage of `bar`, with the keys they
  draw in order; `correct` and `accuracies` hold the attacks of the worst case."""

  def __init__(self, model, x, y, eps, steps, key, bar):
    self.model, self.x, self.y, self.eps, self.steps, self.bar = model, x, y, eps, steps, bar
    self.keys = iter(jax.random.split(key, 16))
    self.correct, self.accuracies = {}, {}

  def attack(self, name, make):
    self.bar.stage(name)
    out = make()
    self.bar.update(1)
    return out

  def record(self, name, make):
    """An attack of the worst case: its per-sample correctness and accuracy at eps."""
    self.correct[name] = _correct(self.model, self.attack(f'{name} {self.eps:g}', make), self.y)
    self.accuracies[name] = float(self.correct[name].mean())

  def accuracy(self, name, make, fn=None):
    fn = self.model if fn is None else fn
    return float(_correct(fn, self.attack(name, make), self.y).mean())

  def pgd(self, fn=None, e=None, n=None, **kw):
    # Madry et al.'s step 2.5 * eps / steps: eps / steps would leave a random start unable
    # to reach the far corner, and PGD weaker than FGSM on a near-linear model.
    fn, e, n = self.model if fn is None else fn, self.eps if e is None else e, n or self.steps
    key = next(self.keys)
    return attacks.pgd(fn, self.x, self.y, key=key, eps=e, steps=n, step_size=2.5 * e / n, **kw)


def measure(
  model_fn,
  x,
  y,
  *,
  eps,
  key,
  surrogate_fn=None,
  expected_fn=None,
  member_logits_fn=None,
  large_eps=0.5,
  steps=10,
  strong_steps=100,
  restarts=5,
  square_queries=1000,
  tolerance=TOLERANCE,
  progress=False,
  mesh=None,
) -> Evidence:
  """Runs every attack the checks need, once (arguments as `run`); `progress`: a bar (or a
  line per attack where no terminal is attached) naming each attack as it starts, and the
  steps inside each (`progress.listening`); `mesh`: the batch split over its data axis (its
  size must divide the batch), the models replicated."""
  if mesh is not None:
    x, y = sharding.split_batch((np.asarray(x), np.asarray(y)), mesh)
    model_fn, surrogate_fn, expected_fn, member_logits_fn = (
      None if f is None else sharding.replicate(as_partial(f), mesh)
      for f in (model_fn, surrogate_fn, expected_fn, member_logits_fn)
    )
  model = as_partial(model_fn)
  optional = (member_logits_fn, surrogate_fn, expected_fn)
  total = 7 + len(EPS_CURVE) + sum(fn is not None for fn in optional)
  bar = StageBar(total=total, desc='audit', silent=not progress)
  run = _Attacks(model, x, y, eps, steps, key, bar)
  with bar, listening('audit', bar) if progress else contextlib.nullcontext():
    found = _run_attacks(run, *optional, large_eps, strong_steps, restarts, square_queries)
  return Evidence(
    accuracies=run.accuracies,
    correct=run.correct,
    clean=_correct(model, x, y),
    eps=float(eps),
    large_eps=large_eps,
    steps=steps,
    strong_steps=strong_steps,
    restarts=restarts,
    tolerance=tolerance,
    **found,
  )


# The eps curve of `monotone_in_eps`, in multiples of the audit's eps.
EPS_CURVE = (0.25, 0.5, 1, 2, 4)


def _run_attacks(
  run, member_logits_fn, surrogate_fn, expected_fn, large_eps, strong_steps, restarts, queries
):
  """Every attack of the audit in its order (the stages of `run.bar`) -> the Evidence fields
  that are not the worst case's."""
  model, x, y, eps = run.model, run.x, run.y, run.eps
  run.record('fgsm', lambda: attacks.fgsm(model, x, y, eps=eps))
  run.record('pgd-ce', lambda: run.pgd(loss='ce'))
  run.record('pgd-margin', lambda: run.pgd(loss='margin'))
  run.record('pgd-margin-strong', lambda: run.pgd(n=strong_steps, restarts=restarts, loss='margin'))
  key = next(run.keys)
  run.record('square', lambda: attacks.square(model, x, y, key=key, eps=eps, queries=queries))
  if member_logits_fn is not None:
    member_logits = as_partial(member_logits_fn)
    run.record('pgd-member-margin', lambda: run.pgd(member_logits, loss='member_margin'))
  transfer = None
  if surrogate_fn is not None:
    surrogate = as_partial(surrogate_fn)
    transfer = run.accuracy(f'transfer {eps:g}', lambda: run.pgd(surrogate, loss='ce'))
  large = run.accuracy(
    f'pgd-margin-strong {large_eps:g}',
    lambda: run.pgd(e=large_eps, n=strong_steps, loss='margin'),
  )
  grid = [f * eps for f in EPS_CURVE]
  curve = [
    run.accuracy(f'pgd-margin {e:g} (eps curve)', lambda e=e: run.pgd(e=e, loss='margin'))
    for e in grid
  ]
  share = run.attack('zero gradients', lambda: zero_gradient_share(model, x, y))
  expected = None
  if expected_fn is not None:
    exp = as_partial(expected_fn)
    make = lambda: run.pgd(exp, loss='margin')
    expected = run.accuracy(f'expected pgd-margin {eps:g}', make, exp)
  return dict(
    transfer=transfer,
    large_eps_accuracy=large,
    eps_curve=(grid, curve),
    zero_gradient_share=share,
    expected=expected,
  )


def run(model_fn, x, y, *, eps: float, key, **settings) -> dict:
  """Audits `model_fn` on (x, y) at L-inf `eps`: `measure`, then every check of CHECKS.

  Args:
    model_fn: x [B, ...] -> log-probabilities [B, C] (e.g. `Ensemble.log_predict`).
    x: inputs [B, ...] in [0, 1]; y: int labels [B]. One batch: pass what fits in memory.
    eps: the L-inf radius the robustness claim is made at.
    key: PRNG key (random starts, Square).
    **settings: of `measure`: surrogate_fn (an independent model for the transfer check),
      expected_fn (the same ensemble in 'expected' inference), member_logits_fn (x ->
      member logits [K, B, C]: adds member-margin PGD), large_eps (where accuracy must be
      ~0), steps, strong_steps and restarts (PGD; each step 2.5 * eps / steps),
      square_queries, tolerance (accuracy, as a fraction, a check may be off), progress
      (a bar, or a line per attack where no terminal is attached), mesh (an evaluation
      mesh whose data axis divides the batch: data parallel).

  Returns:
    {'eps', 'num_examples', 'clean_accuracy', 'accuracies' {attack: accuracy at eps},
     'checks' {name: {'passed': True | False | None (not run, or too few points to tell),
     'verdict', numbers..., and what the verdict rests on: 'n', 'excess', 'points_past',
     'fails_from' (`checks.judged`)}}, 'tolerance', 'rule' (the verdicts' rule in words),
     'worst_case_accuracy', 'attacks_in_worst_case', 'first_broken_by' {attack: points
     it broke that no attack before it (in the order run) broke}, 'passed' (every check
     with a verdict passed), 'verdict' (one paragraph)}.
  """
  evidence = measure(model_fn, x, y, eps=eps, key=key, **settings)
  checks = {check.__name__: check(evidence) for check in CHECKS}
  worst = evidence.clean.copy()
  broken_by = {}  # the first attack (in the order run) under which each point fell
  for name, c in evidence.correct.items():
    broken_by[name] = int(np.sum(worst & ~c))
    worst &= c
  ran = [c['passed'] for c in checks.values() if c['passed'] is not None]
  result = dict(
    eps=evidence.eps,
    num_examples=int(len(y)),
    clean_accuracy=float(evidence.clean.mean()),
    accuracies=evidence.accuracies,
    checks=checks,
    worst_case_accuracy=float(worst.mean()),
    attacks_in_worst_case=sorted(evidence.correct),
    first_broken_by=broken_by,
    passed=all(ran),
    tolerance=evidence.tolerance,
    rule=rule(len(evidence.clean), evidence.tolerance),
  )
  result['verdict'] = verdict(result)
  return result


__all__ = [
  'ALPHA',
  'CHECKS',
  'TOLERANCE',
  'TOO_FEW',
  'Evidence',
  'binomial_tail',
  'fails_from',
  'measure',
  'n_min',
  'run',
  'verdict',
  'zero_gradient_share',
]
