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

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import attacks, sharding
from lpd_jax.attacks.common import as_partial, loss_grad
from lpd_jax.progress import StageBar

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
  line per attack where no terminal is attached) naming each attack as it starts; `mesh`:
  the batch split over its data axis (its size must divide the batch), the models
  replicated."""
  if mesh is not None:
    x, y = sharding.split_batch((np.asarray(x), np.asarray(y)), mesh)
    model_fn, surrogate_fn, expected_fn, member_logits_fn = (
      None if f is None else sharding.replicate(as_partial(f), mesh)
      for f in (model_fn, surrogate_fn, expected_fn, member_logits_fn)
    )
  model = as_partial(model_fn)
  keys = iter(jax.random.split(key, 16))
  acc, correct = {}, {}
  grid = [eps / 4, eps / 2, eps, 2 * eps, 4 * eps]
  optional = (member_logits_fn, surrogate_fn, expected_fn)
  total = 7 + len(grid) + sum(fn is not None for fn in optional)
  bar = StageBar(total=total, desc='audit', silent=not progress)

  def attack(name, make):
    bar.stage(name)
    out = make()
    bar.update(1)
    return out

  def record(name, make):
    correct[name] = _correct(model, attack(f'{name} {eps:g}', make), y)
    acc[name] = float(correct[name].mean())

  def pgd(fn=model, e=eps, n=steps, **kw):
    # Madry et al.'s step 2.5 * eps / steps: eps / steps would leave a random start unable
    # to reach the far corner, and PGD weaker than FGSM on a near-linear model.
    return attacks.pgd(fn, x, y, key=next(keys), eps=e, steps=n, step_size=2.5 * e / n, **kw)

  def accuracy(name, make, fn=model):
    return float(_correct(fn, attack(name, make), y).mean())

  with bar:
    record('fgsm', lambda: attacks.fgsm(model, x, y, eps=eps))
    record('pgd-ce', lambda: pgd(loss='ce'))
    record('pgd-margin', lambda: pgd(loss='margin'))
    record('pgd-margin-strong', lambda: pgd(n=strong_steps, restarts=restarts, loss='margin'))
    record(
      'square', lambda: attacks.square(model, x, y, key=next(keys), eps=eps, queries=square_queries)
    )
    if member_logits_fn is not None:
      record('pgd-member-margin', lambda: pgd(as_partial(member_logits_fn), loss='member_margin'))
    transfer = None
    if surrogate_fn is not None:
      transfer = accuracy(f'transfer {eps:g}', lambda: pgd(as_partial(surrogate_fn), loss='ce'))
    large = accuracy(
      f'pgd-margin-strong {large_eps:g}', lambda: pgd(e=large_eps, n=strong_steps, loss='margin')
    )
    curve = [
      accuracy(f'pgd-margin {e:g} (eps curve)', lambda e=e: pgd(e=e, loss='margin')) for e in grid
    ]
    share = attack('zero gradients', lambda: zero_gradient_share(model, x, y))
    expected = None
    if expected_fn is not None:
      exp = as_partial(expected_fn)
      expected = accuracy(f'expected pgd-margin {eps:g}', lambda: pgd(exp, loss='margin'), exp)
  return Evidence(
    acc,
    correct,
    _correct(model, x, y),
    float(eps),
    large_eps,
    steps,
    strong_steps,
    restarts,
    tolerance,
    transfer,
    large,
    (grid, curve),
    share,
    expected,
  )


# The checks: one small function each, Evidence -> {'passed': bool | None (not run), numbers}.


def iterative_beats_single_step(e):
  a = e.accuracies
  return dict(passed=a['pgd-ce'] <= a['fgsm'] + e.tolerance, fgsm=a['fgsm'], pgd=a['pgd-ce'])


def white_box_beats_transfer(e):
  if e.transfer is None:
    return dict(passed=None, note='no surrogate given')
  white_box = e.accuracies['pgd-ce']
  return dict(
    passed=white_box <= e.transfer + e.tolerance, white_box=white_box, transfer=e.transfer
  )


def large_eps_reaches_zero(e):
  return dict(
    passed=e.large_eps_accuracy <= e.tolerance, eps=e.large_eps, accuracy=e.large_eps_accuracy
  )


def monotone_in_eps(e):
  grid, curve = e.eps_curve
  rises = max(b - a for a, b in zip(curve, curve[1:]))
  return dict(passed=rises <= e.tolerance, eps=grid, accuracy=curve, largest_rise=rises)


def gradient_free_not_better(e):
  best = min(v for a, v in e.accuracies.items() if a != 'square')
  square = e.accuracies['square']
  return dict(passed=square >= best - e.tolerance, square=square, best_gradient_attack=best)


def more_steps_do_not_help_much(e):
  a = e.accuracies
  return dict(
    passed=a['pgd-margin'] - a['pgd-margin-strong'] <= e.tolerance,
    steps=e.steps,
    accuracy=a['pgd-margin'],
    strong_steps=e.strong_steps,
    restarts=e.restarts,
    strong_accuracy=a['pgd-margin-strong'],
  )


def margin_not_much_better_than_ce(e):
  a = e.accuracies
  return dict(
    passed=a['pgd-ce'] - a['pgd-margin'] <= e.tolerance, ce=a['pgd-ce'], margin=a['pgd-margin']
  )


def gradients_are_not_zero(e):
  share = e.zero_gradient_share
  return dict(passed=share <= e.tolerance, zero_gradient_share=share)


def raw_vs_expected(e):
  if e.expected is None:
    return dict(passed=None, note='no expected-inference model given')
  raw = e.accuracies['pgd-margin']
  return dict(passed=e.expected >= raw - e.tolerance, raw=raw, expected=e.expected)


CHECKS = (
  iterative_beats_single_step,
  white_box_beats_transfer,
  large_eps_reaches_zero,
  monotone_in_eps,
  gradient_free_not_better,
  more_steps_do_not_help_much,
  margin_not_much_better_than_ce,
  gradients_are_not_zero,
  raw_vs_expected,
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
     'checks' {name: {'passed': bool | None (not run), numbers...}},
     'worst_case_accuracy', 'attacks_in_worst_case', 'first_broken_by' {attack: points
     it broke that no attack before it (in the order run) broke}, 'passed' (all run checks),
     'verdict' (one paragraph)}.
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
  )
  result['verdict'] = verdict(result)
  return result


def verdict(result):
  """One paragraph: what failed, what it suggests, and the number to report."""
  failed = [n for n, c in result['checks'].items() if c['passed'] is False]
  worst = 100 * result['worst_case_accuracy']
  if not failed:
    return (
      f'No sign of gradient masking at eps {result["eps"]:g}: every check that ran passed. '
      f'Report the worst case over all {len(result["attacks_in_worst_case"])} attacks, '
      f"{worst:.2f}%, not a single attack's accuracy."
    )
  return (
    f'Signs of gradient masking at eps {result["eps"]:g}: {", ".join(failed)} failed. '
    'Gradient attacks on this model are not to be trusted; the worst case over all '
    f'{len(result["attacks_in_worst_case"])} attacks run is {worst:.2f}%, and the true '
    'robust accuracy may be lower still (try member-logit attacks, more queries, '
    "'expected' inference)."
  )
