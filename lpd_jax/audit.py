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

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import attacks
from lpd_jax.attacks.common import as_partial, loss_grad

TOLERANCE = 0.05  # accuracy points a check may be off before it fails


def _correct(model, x, y):
  return np.asarray(jnp.argmax(model(x), -1) == y)


def zero_gradient_share(model_fn, x, y):
  """Share of samples whose cross-entropy input gradient (on `model_fn`'s log-probabilities)
  is exactly 0 in every coordinate, in float32: where gradient attacks cannot move."""
  g = loss_grad(as_partial(model_fn), x, y, 'ce')  # the attacks' own gradient of their loss
  flat = np.asarray(g).reshape(len(x), -1)
  return float(np.mean(np.all(flat == 0, axis=1)))


def run(
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
):
  """Audits `model_fn` on (x, y) at L-inf `eps`.

  Args:
    model_fn: x [B, ...] -> log-probabilities [B, C] (e.g. `Ensemble.log_predict`).
    x: inputs [B, ...] in [0, 1]; y: int labels [B]. One batch: pass what fits in memory.
    eps: the L-inf radius the robustness claim is made at.
    key: PRNG key (random starts, Square).
    surrogate_fn: optional independent model for the transfer check.
    expected_fn: optional same ensemble in 'expected' inference.
    member_logits_fn: optional x -> member logits [K, B, C]: adds member-margin PGD.
    large_eps: the eps at which accuracy must be ~0.
    steps: PGD steps (each 2.5 * eps / steps); strong_steps and restarts: the stronger PGD.
    square_queries: Square's query budget.
    tolerance: accuracy points (as a fraction) a check may be off.

  Returns:
    {'eps', 'num_examples', 'clean_accuracy', 'accuracies' {attack: accuracy at eps},
     'checks' {name: {'passed': bool | None (not run), numbers...}},
     'worst_case_accuracy', 'attacks_in_worst_case', 'passed' (all run checks),
     'verdict' (one paragraph)}.
  """
  model = as_partial(model_fn)
  keys = iter(jax.random.split(key, 16))
  clean = _correct(model, x, y)
  acc, correct = {}, {}

  def record(name, x_adv, on=model):
    correct[name] = _correct(on, x_adv, y)
    acc[name] = float(correct[name].mean())
    return acc[name]

  def pgd(fn=model, e=eps, n=steps, **kw):
    # Madry et al.'s step 2.5 * eps / steps: eps / steps would leave a random start unable
    # to reach the far corner, and PGD weaker than FGSM on a near-linear model.
    return attacks.pgd(fn, x, y, key=next(keys), eps=e, steps=n, step_size=2.5 * e / n, **kw)

  record('fgsm', attacks.fgsm(model, x, y, eps=eps))
  record('pgd-ce', pgd(loss='ce'))
  record('pgd-margin', pgd(loss='margin'))
  record(
    'pgd-margin-strong',
    pgd(n=strong_steps, restarts=restarts, loss='margin'),
  )
  record('square', attacks.square(model, x, y, key=next(keys), eps=eps, queries=square_queries))
  if member_logits_fn is not None:
    x_adv = pgd(as_partial(member_logits_fn), loss='member_margin')
    record('pgd-member-margin', x_adv)
  gradient_attacks = [a for a in acc if a not in ('square',)]
  best_gradient = min(acc[a] for a in gradient_attacks)

  checks = {}
  checks['iterative_beats_single_step'] = dict(
    passed=acc['pgd-ce'] <= acc['fgsm'] + tolerance, fgsm=acc['fgsm'], pgd=acc['pgd-ce']
  )
  if surrogate_fn is not None:
    sur = as_partial(surrogate_fn)
    x_transfer = pgd(sur, loss='ce')
    transfer = float(_correct(model, x_transfer, y).mean())
    checks['white_box_beats_transfer'] = dict(
      passed=acc['pgd-ce'] <= transfer + tolerance, white_box=acc['pgd-ce'], transfer=transfer
    )
  else:
    checks['white_box_beats_transfer'] = dict(passed=None, note='no surrogate given')
  large = pgd(e=large_eps, n=strong_steps, loss='margin')
  large_acc = float(_correct(model, large, y).mean())
  checks['large_eps_reaches_zero'] = dict(
    passed=large_acc <= tolerance, eps=large_eps, accuracy=large_acc
  )
  grid = [eps / 4, eps / 2, eps, 2 * eps, 4 * eps]
  curve = [float(_correct(model, pgd(e=e, loss='margin'), y).mean()) for e in grid]
  rises = max(b - a for a, b in zip(curve, curve[1:]))
  checks['monotone_in_eps'] = dict(
    passed=rises <= tolerance, eps=grid, accuracy=curve, largest_rise=rises
  )
  checks['gradient_free_not_better'] = dict(
    passed=acc['square'] >= best_gradient - tolerance,
    square=acc['square'],
    best_gradient_attack=best_gradient,
  )
  checks['more_steps_do_not_help_much'] = dict(
    passed=acc['pgd-margin'] - acc['pgd-margin-strong'] <= tolerance,
    steps=steps,
    accuracy=acc['pgd-margin'],
    strong_steps=strong_steps,
    restarts=restarts,
    strong_accuracy=acc['pgd-margin-strong'],
  )
  checks['margin_not_much_better_than_ce'] = dict(
    passed=acc['pgd-ce'] - acc['pgd-margin'] <= tolerance,
    ce=acc['pgd-ce'],
    margin=acc['pgd-margin'],
  )
  share = zero_gradient_share(model, x, y)
  checks['gradients_are_not_zero'] = dict(passed=share <= tolerance, zero_gradient_share=share)
  if expected_fn is not None:
    exp = as_partial(expected_fn)
    x_exp = pgd(exp, loss='margin')
    expected_acc = float(_correct(exp, x_exp, y).mean())
    checks['raw_vs_expected'] = dict(
      passed=expected_acc >= acc['pgd-margin'] - tolerance,
      raw=acc['pgd-margin'],
      expected=expected_acc,
    )
  else:
    checks['raw_vs_expected'] = dict(passed=None, note='no expected-inference model given')

  worst = clean.copy()
  for c in correct.values():
    worst &= c
  ran = [c['passed'] for c in checks.values() if c['passed'] is not None]
  result = dict(
    eps=float(eps),
    num_examples=int(len(y)),
    clean_accuracy=float(clean.mean()),
    accuracies=acc,
    checks=checks,
    worst_case_accuracy=float(worst.mean()),
    attacks_in_worst_case=sorted(correct),
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
      f'No sign of gradient masking at eps {result["eps"]:g}: every check ran passed. '
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
