"""Paired statistics of two columns evaluated on the same test points (pure NumPy).

The data of a column is its per-sample values, one row per seed: `values` [s, n] (1/0 for
"classified right", or any number: a bound, a gradient norm), where point i of every seed
and of every column is the same test image (paired by test index, `lpd_jax.compare.
differences`).

The bootstrap (Efron & Tibshirani 1993, ch. 13: the percentile interval) resamples what
varies between repetitions of the experiment:

  single seed     the n test points, with replacement, the same points for both columns (the
                  paired bootstrap: what the two columns share cancels in each replicate).
  several seeds   seeds and points both: each replicate draws s seeds of the first column
                  and t of the second with replacement, and one set of n points with
                  replacement shared by every seed of both columns; a seed's value is its
                  statistic over those points, a column's the mean over its drawn seeds.
                  Seeds and points are crossed (every seed is evaluated on every point), and
                  resampling both factors independently is Owen's pigeonhole bootstrap
                  (Ann. Appl. Stat. 1(1), 2007), which is mildly conservative for crossed
                  designs; with 2-3 seeds the seed factor is crudely estimated (a 3-value
                  bootstrap), so read such intervals as approximate.

The interval is the 2.5% and 97.5% percentiles of the B replicates (RESAMPLES, the default
2,000). For one seed the mean of n resampled values is drawn exactly from a multinomial over
the distinct values (for 1/0 data at most 3 distinct differences: O(B), whatever n), the
same distribution as resampling the points one by one.

McNemar's exact test (McNemar 1947; the exact conditional form, Fagerland et al., BMC Med.
Res. Methodol. 13:91, 2013) for two single-seed 1/0 columns: with b the points only the
first gets right and c those only the second gets right, p = min(1, 2 P[Bin(b + c, 1/2) <=
min(b, c)]), two-sided; p = 1 when b = c = 0.

All randomness comes from `numpy.random.default_rng(seed)`: the same seed, the same interval.
"""

from typing import NamedTuple, Optional

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
# Replicates x points x seeds gathered at once where points are resampled one by one.
_CHUNK_ELEMENTS = 2**23


class Interval(NamedTuple):
  """A statistic with its bootstrap percentile interval.

  Attributes:
    estimate: the statistic on the data (a difference: first column minus second).
    low, high: the (1 - level) / 2 and (1 + level) / 2 percentiles of the replicates.
    resamples: B, the number of replicates.
    p_value: McNemar's exact p for single-seed 1/0 pairs, else None.
    discordant: (b, c) behind p_value, else None.
  """

  estimate: float
  low: float
  high: float
  resamples: int
  p_value: Optional[float] = None
  discordant: Optional[tuple] = None

  @property
  def excludes_zero(self) -> bool:
    return self.low > 0 or self.high < 0

  @property
  def told_apart(self) -> bool:
    """The difference is told apart from 0: the interval excludes 0 and, where McNemar's
    exact p was computed, p < 1 - LEVEL too. With few discordant points the percentile
    interval is narrower than the exact test (b = 5, c = 0 of 100: it excludes 0 while
    p = 2 / 2^5 = 0.0625), so a single-seed pair needs both."""
    return self.excludes_zero and (self.p_value is None or self.p_value < 1 - LEVEL)


def mcnemar_exact(b, c):
  """Two-sided exact McNemar p-value of b and c discordant pairs (see the module doc).

  The binomial tail is a sum of exact integers C(m, k), k <= min(b, c), each from the one
  before (C(m, k + 1) = C(m, k) (m - k) / (k + 1)), over 2^m, divided once: exact to float
  rounding for any m = b + c (a p below ~1e-308 reads 0).
  """
  b, c = int(b), int(c)
  if b < 0 or c < 0:
    raise ValueError(f'discordant counts must be >= 0, got {b}, {c}')
  m = b + c
  if m == 0:
    return 1.0
  term = tail = 1  # C(m, 0)
  for k in range(min(b, c)):
    term = term * (m - k) // (k + 1)
    tail += term
  return min(1.0, 2 * tail / 2**m)


def _as_seeds(values):
  """[n] or [s, n] -> float [s, n]."""
  v = np.asarray(values, dtype=np.float64)
  if v.ndim == 1:
    v = v[None]
  if v.ndim != 2 or v.shape[1] == 0:
    raise ValueError(f'per-sample values must be [n] or [seeds, n] with n >= 1, got {v.shape}')
  return v


def _binary(v):
  return bool(np.all((v == 0) | (v == 1)))


def resampled_means(d, resamples, rng):
  """Means of `resamples` bootstrap resamples of the n values `d` [n] -> [resamples].

  Exact: a multinomial over the distinct values of `d` with their frequencies is the
  distribution of their counts in n draws with replacement."""
  d = np.asarray(d, dtype=np.float64)
  distinct, counts = np.unique(d, return_counts=True)
  drawn = rng.multinomial(len(d), counts / len(d), size=resamples)  # [B, u]
  return drawn @ distinct / len(d)


def _seed_draws(s, resamples, rng):
  """[B, s] weights: how often each of s seeds is drawn in s draws, divided by s."""
  return rng.multinomial(s, np.full(s, 1 / s), size=resamples) / s


def _replicates(columns, signs, q, resamples, rng):
  """B replicates of sum_c sign_c * (mean over drawn seeds of column c of the statistic `q`
  over drawn points): seeds per column and one shared set of points per replicate."""
  n = columns[0].shape[1]
  weights = [_seed_draws(len(v), resamples, rng) for v in columns]
  out = np.zeros(resamples)
  seeds = sum(len(v) for v in columns)
  chunk = max(1, _CHUNK_ELEMENTS // (n * seeds))
  for start in range(0, resamples, chunk):
    b = min(resamples, start + chunk) - start
    points = rng.integers(0, n, size=(b, n))  # [b, n]
    if q == 'mean':  # how often each point is drawn: per-seed means are one product
      counts = np.bincount((points + n * np.arange(b)[:, None]).ravel(), minlength=b * n)
      counts = counts.reshape(b, n) / n
    for v, w, sign in zip(columns, weights, signs):
      if q == 'mean':
        per_seed = counts @ v.T  # [b, s]
      else:
        per_seed = np.quantile(v[:, points], float(q), axis=-1).T  # [s, b, n] -> [b, s]
      out[start : start + b] += sign * np.sum(w[start : start + b] * per_seed, axis=1)
  return out


def _statistic(q):
  """'mean' or a quantile q -> a function of [..., n] over its last axis."""
  if q == 'mean':
    return lambda x: x.mean(axis=-1)
  return lambda x: np.quantile(x, float(q), axis=-1)


def _percentiles(draws, level):
  low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)


def paired_difference(first, second, *, resamples=RESAMPLES, seed=0, level=LEVEL):
  """The difference of two columns' mean values on the same points, with its interval.

  Args:
    first, second: per-sample values [n] or [seeds, n] (1/0 correctness for accuracies),
      point i of every row the same test image.
    resamples: B. seed: of the generator. level: of the interval.

  Returns:
    Interval of mean(first) - mean(second) (means over seeds of the means over points); the
    single-seed paired bootstrap or, where either has several seeds, the crossed one (module
    doc); McNemar's exact p where both are single-seed 1/0 columns.
  """
  a, b = _as_seeds(first), _as_seeds(second)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f'paired columns need the same points: {a.shape[1]} and {b.shape[1]}')
  rng = np.random.default_rng(seed)
  estimate = float(a.mean() - b.mean())
  p = discordant = None
  if len(a) == len(b) == 1:
    draws = resampled_means(a[0] - b[0], resamples, rng)
    if _binary(a) and _binary(b):
      discordant = (int(np.sum((a[0] == 1) & (b[0] == 0))), int(np.sum((a[0] == 0) & (b[0] == 1))))
      p = mcnemar_exact(*discordant)
  else:
    draws = _replicates([a, b], (1, -1), 'mean', resamples, rng)
  return Interval(estimate, *_percentiles(draws, level), resamples, p, discordant)


def bootstrap_statistic(values, statistic='mean', *, resamples=RESAMPLES, seed=0, level=LEVEL):
  """One column's statistic with its interval: 'mean' (an accuracy) or a quantile q in
  [0, 1] (np.quantile's linear rule, as the probes and certify suites compute theirs).

  Args:
    values: per-sample values [n] or [seeds, n].

  Returns:
    Interval of the mean over seeds of each seed's statistic; points (and seeds) resampled
    as in the module doc; no p-value.
  """
  v = _as_seeds(values)
  rng = np.random.default_rng(seed)
  stat = _statistic(statistic)
  estimate = float(np.mean(stat(v)))
  if len(v) == 1 and statistic == 'mean':
    draws = resampled_means(v[0], resamples, rng)
  else:
    draws = _replicates([v], (1,), statistic, resamples, rng)
  return Interval(estimate, *_percentiles(draws, level), resamples)
