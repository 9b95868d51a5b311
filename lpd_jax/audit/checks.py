"""The audit's checks and the rule of their verdicts (`lpd_jax.audit`).

Each check reduces what `measure` found to an excess: the share of the n audited points by
which its quantity is past its line (PGD's accuracy above FGSM's, accuracy at a large eps
above 0, ...). Up to the tolerance the check passes. Beyond it, a handful of points can be
chance: the check FAILS only where a model exactly at the tolerance would be k or more points
past with probability under ALPHA = 0.05, P(Binomial(n, tolerance) >= k) < 0.05 (a one-sided
exact binomial test), and otherwise says 'too few points to tell'. So on 16 points at
tolerance 0.05 one point past (6.25%) is too few; a check fails from 3 points (18.75%);
`n_min` (80 at 0.05) is the fewest points at which an excess of twice the tolerance fails.
"""

import math

# How sure a FAILED verdict is: a check fails where a model exactly at the tolerance would be
# as far past the check's line with probability under ALPHA (one-sided exact binomial test).
ALPHA = 0.05
TOO_FEW = 'too few points to tell'


def _cdf_to(n, p, stop):
  """The first (k, P(X <= k)), k = 0, 1, ..., n, for X ~ Binomial(n, p) at which
  `stop(k, cdf)` holds, else (n, 1) (0 < p < 1; log-space terms: no overflow at large n)."""
  k, cdf = 0, 0.0
  while k <= n:
    cdf += math.exp(
      math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
      + k * math.log(p) + (n - k) * math.log1p(-p)
    )  # fmt: skip
    if stop(k, cdf):
      return k, cdf
    k += 1
  return n, 1.0


def binomial_tail(n, p, k):
  """P(X >= k) for X ~ Binomial(n, p)."""
  if k <= 0 or p >= 1:
    return 1.0 if k <= n else 0.0
  if k > n or p <= 0:
    return 0.0
  return max(0.0, 1.0 - _cdf_to(n, p, lambda i, _: i == k - 1)[1])


def fails_from(n, tolerance, alpha=ALPHA):
  """The fewest points past a check's line that fail it on n points: the smallest k with
  P(Binomial(n, tolerance) >= k) < alpha; None where not even all n points would."""
  if tolerance <= 0:
    return 1
  if tolerance >= 1:
    return None
  k, _ = _cdf_to(n, tolerance, lambda i, cdf: 1.0 - cdf < alpha)
  return k + 1 if k < n else None


def n_min(tolerance, alpha=ALPHA, limit=100_000):
  """The fewest points on which a check fails at an excess of twice its tolerance:
  fails_from(n) <= 2 tolerance n (None past `limit`). Below it the audit sees only
  the grossest masking: on 16 points at tolerance 0.05 a check fails from 3 points (19%)."""
  return next(
    (n for n in range(1, limit) if (fails_from(n, tolerance, alpha) or n + 1) <= 2 * tolerance * n),
    None,
  )


def judged(e, excess, **numbers):
  """A check's record: its numbers, and its verdict on `excess`, the share of the n points
  by which its quantity is past its line (PGD's accuracy above FGSM's, ...): 'passed' up to
  the tolerance; beyond it 'FAILED' where P(Binomial(n, tolerance) >= k) < ALPHA for those k
  points, else 'too few points to tell' (passed None: no verdict, as a check not run)."""
  n, tolerance = len(e.clean), e.tolerance
  k = int(round(excess * n))
  record = dict(numbers, n=n, excess=excess, points_past=k, fails_from=fails_from(n, tolerance))
  if k <= tolerance * n + 1e-9:
    return dict(passed=True, verdict='passed', **record)
  p = binomial_tail(n, tolerance, k)
  failed = p < ALPHA
  return dict(
    passed=False if failed else None, verdict='FAILED' if failed else TOO_FEW, **record, p_value=p
  )


def not_run(note):
  return dict(passed=None, verdict='not run', note=note)


# The checks: one small function each, Evidence -> `judged` (or `not_run`).


def iterative_beats_single_step(e):
  a = e.accuracies
  return judged(e, a['pgd-ce'] - a['fgsm'], fgsm=a['fgsm'], pgd=a['pgd-ce'])


def white_box_beats_transfer(e):
  if e.transfer is None:
    return not_run('no surrogate given')
  white_box = e.accuracies['pgd-ce']
  return judged(e, white_box - e.transfer, white_box=white_box, transfer=e.transfer)


def large_eps_reaches_zero(e):
  return judged(e, e.large_eps_accuracy, eps=e.large_eps, accuracy=e.large_eps_accuracy)


def monotone_in_eps(e):
  grid, curve = e.eps_curve
  rises = max(b - a for a, b in zip(curve, curve[1:]))
  return judged(e, rises, eps=grid, accuracy=curve, largest_rise=rises)


def gradient_free_not_better(e):
  best = min(v for a, v in e.accuracies.items() if a != 'square')
  square = e.accuracies['square']
  return judged(e, best - square, square=square, best_gradient_attack=best)


def more_steps_do_not_help_much(e):
  a = e.accuracies
  return judged(
    e,
    a['pgd-margin'] - a['pgd-margin-strong'],
    steps=e.steps,
    accuracy=a['pgd-margin'],
    strong_steps=e.strong_steps,
    restarts=e.restarts,
    strong_accuracy=a['pgd-margin-strong'],
  )


def margin_not_much_better_than_ce(e):
  a = e.accuracies
  return judged(e, a['pgd-ce'] - a['pgd-margin'], ce=a['pgd-ce'], margin=a['pgd-margin'])


def gradients_are_not_zero(e):
  share = e.zero_gradient_share
  return judged(e, share, zero_gradient_share=share)


def raw_vs_expected(e):
  if e.expected is None:
    return not_run('no expected-inference model given')
  raw = e.accuracies['pgd-margin']
  return judged(e, raw - e.expected, raw=raw, expected=e.expected)


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


def rule(n, tolerance, alpha=ALPHA):
  """The verdicts' rule in words, with what it means on these n points."""
  k, fewest = fails_from(n, tolerance, alpha), n_min(tolerance, alpha)
  at_n = f'from {k} points past ({100 * k / n:.2f}%)' if k else 'never (too few points)'
  return (
    f'A check passes while its excess (the share of the {n} points by which its quantity is '
    f'past its line) is at most the tolerance {tolerance:g}; beyond it, it FAILS where a model '
    f'exactly at the tolerance would be k or more points past with probability under {alpha:g}'
    f' (one-sided exact binomial test, P(Binomial({n}, {tolerance:g}) >= k) < {alpha:g}), else '
    f"it is '{TOO_FEW}'. On {n} points a check fails {at_n}; {fewest} points are the fewest "
    'on which an excess of twice the tolerance fails.'
  )


def verdict(result):
  """One paragraph: what failed (or was too close to call), what it suggests, and the
  number to report."""
  checks = result['checks'].items()
  failed = [n for n, c in checks if c['passed'] is False]
  unclear = [n for n, c in checks if c.get('verdict') == TOO_FEW]
  worst = 100 * result['worst_case_accuracy']
  few = ''
  if unclear:
    few = (
      f' {", ".join(unclear)}: past the tolerance by too few of the {result["num_examples"]} '
      'points to tell (audit more points).'
    )
  if not failed:
    return (
      f'No sign of gradient masking at eps {result["eps"]:g}: every check with a verdict '
      f'passed.{few} Report the worst case over all {len(result["attacks_in_worst_case"])} '
      f"attacks, {worst:.2f}%, not a single attack's accuracy."
    )
  return (
    f'Signs of gradient masking at eps {result["eps"]:g}: {", ".join(failed)} failed.{few} '
    'Gradient attacks on this model are not to be trusted; the worst case over all '
    f'{len(result["attacks_in_worst_case"])} attacks run is {worst:.2f}%, and the true '
    'robust accuracy may be lower still (try member-logit attacks, more queries, '
    "'expected' inference)."
  )
