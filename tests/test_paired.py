"""Paired statistics (lpd_jax.compare.paired) against closed forms and brute force: McNemar's
exact p by enumerating every outcome, the paired bootstrap's interval against the exact
binomial quantiles it estimates, the bootstrap median against its exact distribution, the
seeds-and-points bootstrap on data whose points carry no variance, and the interval's
coverage on simulated pairs. Pure NumPy: no JAX, about a second."""

import itertools
import math

import numpy as np
import pytest

from lpd_jax.compare import paired


def brute_force_mcnemar(b, c):
  """Two-sided exact p by enumerating all 2^(b + c) sign patterns of the discordant pairs:
  the probability, under 1/2 each, of a split at least as uneven as min(b, c)."""
  m = b + c
  if m == 0:
    return 1.0
  low = sum(1 for signs in itertools.product((0, 1), repeat=m) if sum(signs) <= min(b, c))
  return min(1.0, 2 * low / 2**m)


def binomial_quantile(n, p, q):
  """The smallest k with P[Bin(n, p) <= k] >= q (exact, from math.comb)."""
  total = 0.0
  for k in range(n + 1):
    total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
    if total >= q - 1e-12:
      return k
  return n


def test_mcnemar_is_the_exact_binomial_test():
  assert paired.mcnemar_exact(0, 0) == 1.0
  assert paired.mcnemar_exact(5, 0) == pytest.approx(2 * 0.5**5)  # 0.0625
  for b, c in [(1, 0), (3, 3), (2, 7), (9, 3), (0, 12), (6, 5)]:
    assert paired.mcnemar_exact(b, c) == pytest.approx(brute_force_mcnemar(b, c), rel=1e-12)
    assert paired.mcnemar_exact(b, c) == paired.mcnemar_exact(c, b)
  # Large counts: the integer sum stays exact where 2^m overflows a float.
  assert paired.mcnemar_exact(600, 400) == pytest.approx(2.6e-10, rel=0.05)
  assert 0 <= paired.mcnemar_exact(6000, 4000) < 1e-80


def test_identical_columns_differ_by_exactly_zero():
  rng = np.random.default_rng(0)
  a = (rng.random(300) < 0.7).astype(float)
  same = paired.paired_difference(a, a.copy())
  assert (same.estimate, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
  assert same.discordant == (0, 0) and not same.excludes_zero
  seeds = np.stack([a, a, a])  # several seeds, each the same: nothing varies
  crossed = paired.paired_difference(seeds, seeds)
  assert crossed.p_value is None
  assert abs(crossed.low) < 1e-12 and abs(crossed.high) < 1e-12


def test_n_points_right_only_in_one_column_give_the_binomial_p_and_interval():
  """The first column is right on 5 points where the second is wrong, equal elsewhere (N =
  100): p = 2 / 2^5; each replicate's difference is Bin(N, 5/N) / N, so the interval's ends
  are that binomial's 2.5% and 97.5% quantiles (to one point of Monte Carlo error)."""
  n, flips = 100, 5
  second = np.zeros(n)
  second[50:] = 1
  first = second.copy()
  first[:flips] = 1
  got = paired.paired_difference(first, second, resamples=4000, seed=1)
  assert got.discordant == (flips, 0) and got.p_value == pytest.approx(0.0625)
  assert got.estimate == pytest.approx(flips / n)
  low, high = (binomial_quantile(n, flips / n, q) / n for q in (0.025, 0.975))
  assert abs(got.low - low) <= 1 / n and abs(got.high - high) <= 1 / n
  assert got.excludes_zero  # never below 0: no point goes the other way
  assert not got.told_apart  # but McNemar's exact p = 0.0625: five points are not enough
  eight = paired.paired_difference(np.r_[np.ones(8), second[8:]], second, resamples=400, seed=1)
  assert eight.p_value == pytest.approx(2 / 2**8) and eight.told_apart
  flipped = paired.paired_difference(second, first, resamples=4000, seed=1)
  assert flipped.discordant == (0, flips) and flipped.p_value == got.p_value


def test_the_same_seed_gives_the_same_interval():
  rng = np.random.default_rng(2)
  a, b = (rng.random((2, 80)) < 0.5).astype(float)
  assert paired.paired_difference(a, b, seed=7) == paired.paired_difference(a, b, seed=7)
  assert paired.paired_difference(a, b, seed=7) != paired.paired_difference(a, b, seed=8)
  v = rng.normal(size=(3, 50))
  assert paired.bootstrap_statistic(v, 0.5, seed=3) == paired.bootstrap_statistic(v, 0.5, seed=3)


def test_with_several_seeds_the_seeds_are_resampled_too():
  """Seeds constant over the points: resampling points changes nothing, so the difference is
  (seeds drawn of the first)/2 - 1 with Bin(2, 1/2) draws of its right seed: -1, -1/2, 0 with
  probabilities 1/4, 1/2, 1/4; its 95% interval is [-1, 0]."""
  first = np.array([np.ones(40), np.zeros(40)])
  second = np.ones((1, 40))
  got = paired.paired_difference(first, second, resamples=4000, seed=0)
  assert got.estimate == -0.5 and got.p_value is None
  assert got.low == pytest.approx(-1) and got.high == pytest.approx(0, abs=1e-12)


def test_the_bootstrap_median_matches_its_exact_distribution():
  """For n odd distinct values x_(1) < ... < x_(n), the resampled median is <= x_(k) exactly
  when at least (n + 1) / 2 draws are <= x_(k): P = P[Bin(n, k/n) >= (n + 1) / 2]."""
  n = 21
  values = np.arange(n, dtype=float) * 1.5
  cdf = [
    sum(math.comb(n, j) * (k / n) ** j * (1 - k / n) ** (n - j) for j in range((n + 1) // 2, n + 1))
    for k in range(1, n + 1)
  ]
  low = values[next(k for k, p in enumerate(cdf) if p >= 0.025)]
  high = values[next(k for k, p in enumerate(cdf) if p >= 0.975)]
  got = paired.bootstrap_statistic(values, 0.5, resamples=4000, seed=0)
  assert got.estimate == values[n // 2]
  assert abs(got.low - low) <= 1.5 and abs(got.high - high) <= 1.5  # one order statistic


def test_the_paired_interval_covers_the_true_difference_95_percent_of_the_time():
  """1,000 simulated pairs of columns on n = 200 points, each point's (first right, second
  right) drawn from a joint law with a true difference of 0.08 and correlated errors: the
  interval holds 0.08 in about 95% of them (binomial error of the rate ~0.7%)."""
  rng = np.random.default_rng(0)
  sims, n = 1000, 200
  law = np.array([0.50, 0.14, 0.06, 0.30])  # (1, 1), (1, 0), (0, 1), (0, 0)
  truth = law[1] - law[2]
  kind = rng.choice(4, size=(sims, n), p=law)
  first = np.isin(kind, (0, 1)).astype(float)
  second = np.isin(kind, (0, 2)).astype(float)
  covered = []
  for s in range(sims):
    interval = paired.paired_difference(first[s], second[s], resamples=1000, seed=s)
    covered.append(interval.low <= truth <= interval.high)
  assert 0.925 <= np.mean(covered) <= 0.97, np.mean(covered)
