"""LPD and PDD keep rates against plain NumPy loops of docs/methods.md, and mask sampling."""

import math

import jax
import numpy as np
import pytest

from lpd_jax import dropout

LPD = dict(s=0.1, eps=0.0, gamma=10.0, lam=0.5, alpha=0.85, beta=0.127, num_bins=64)
PDD = dict(num_bins=10, alpha=0.9, beta=0.1)


def lpd_reference(h, s, eps, gamma, lam, alpha, beta, num_bins):
  """Algorithm 1, one sample and one unit at a time."""
  num_members, batch, width = h.shape
  p = np.ones_like(h, dtype=np.float64)
  for b in range(batch):
    bin_of = {}
    counts = np.zeros((num_members, num_bins + 1))  # index m = 1..M
    for k in range(num_members):
      for j in range(width):
        v = float(h[k, b, j])
        if v > eps:
          m = min(max(math.ceil(v / s), 1), num_bins)
          bin_of[k, j] = m
          counts[k, m] += 1
    total = counts.sum(axis=0)
    ranked = sorted(range(1, num_bins + 1), key=lambda m: (-total[m], m))
    for k in range(num_members):
      c_k = counts[k].sum()
      r_k = ranked[k] * s - s / 2
      for j in range(width):
        if (k, j) not in bin_of:
          continue
        m = bin_of[k, j]
        mu = m * s - s / 2
        z = gamma * counts[k, m] / c_k * (r_k - mu) ** 2
        p[k, b, j] = min(max(alpha / (2 * lam) * math.exp(-z / lam) + beta, 0.0), 1.0)
  return p


def pdd_reference(h, num_bins, alpha, beta):
  num_members, batch, width = h.shape
  p = np.empty_like(h, dtype=np.float64)
  for b in range(batch):
    lo, hi = h[:, b].min(), h[:, b].max()
    if hi == lo:
      p[:, b] = alpha
      continue
    bins = np.zeros((num_members, width), int)
    for k in range(num_members):
      for j in range(width):
        bins[k, j] = min(int(math.floor((h[k, b, j] - lo) * num_bins / (hi - lo))), num_bins - 1)
    total = np.bincount(bins.ravel(), minlength=num_bins)
    ranked = sorted(range(num_bins), key=lambda m: (-total[m], m))
    for k in range(num_members):
      own = np.bincount(bins[k], minlength=num_bins)
      for j in range(width):
        m = bins[k, j]
        p[k, b, j] = alpha if m == ranked[k] else beta * (1 - own[m] / width)
  return p


def relu_features(key, num_members, batch, width, scale=1.0):
  return np.array(jax.nn.relu(scale * jax.random.normal(key, (num_members, batch, width))))


@pytest.mark.parametrize('num_members', [1, 3, 5])
def test_lpd_matches_numpy_on_random_features(num_members):
  h = relu_features(jax.random.key(num_members), num_members, 6, 48)
  np.testing.assert_allclose(dropout.lpd_keep_rates(h), lpd_reference(h, **LPD), atol=1e-6)


@pytest.mark.parametrize('num_members', [1, 3, 5])
def test_pdd_matches_numpy_on_random_features(num_members):
  h = relu_features(jax.random.key(10 + num_members), num_members, 6, 48)
  np.testing.assert_allclose(dropout.pdd_keep_rates(h), pdd_reference(h, **PDD), atol=1e-6)


def test_edge_cases_all_zero_ties_and_values_beyond_the_last_bin():
  h = np.zeros((3, 4, 16), np.float32)
  h[:, 1] = 0.15  # every unit in bin 2: one bin with all counts, the others tied at 0
  h[0, 2, :8] = 0.05  # ties between bins 1 and 2 for sample 2
  h[1, 2, :8] = 0.15
  h[:, 3] = np.linspace(0, 30, 16)  # far beyond num_bins * s = 6.4: clipped to the last bin
  lpd = dropout.lpd_keep_rates(h, num_bins=64)
  np.testing.assert_allclose(lpd, lpd_reference(h, **LPD), atol=1e-6)
  np.testing.assert_array_equal(lpd[:, 0], 1.0)  # all-zero features: nothing is dropped
  pdd = dropout.pdd_keep_rates(h)
  np.testing.assert_allclose(pdd, pdd_reference(h, **PDD), atol=1e-6)
  # max == min: every unit keeps alpha
  np.testing.assert_allclose(pdd[:, 0], PDD['alpha'], rtol=1e-6)
  lpd_few_bins = dropout.lpd_keep_rates(h, num_bins=5)
  np.testing.assert_allclose(lpd_few_bins, lpd_reference(h, **{**LPD, 'num_bins': 5}), atol=1e-6)


def test_lpd_keep_rate_is_high_at_the_priority_median_and_beta_far_from_it():
  # Member 0 has most units in bin 3 (mu = 0.25), so r_0 = 0.25; one unit sits far away.
  h = np.zeros((1, 1, 20), np.float32)
  h[0, 0, :19] = 0.25
  h[0, 0, 19] = 5.0
  p = np.asarray(dropout.lpd_keep_rates(h))[0, 0]
  np.testing.assert_allclose(p[0], 0.85 + 0.127, atol=1e-6)  # z = 0: alpha/(2 lam) + beta
  z_far = 10.0 * (1 / 19) * (0.25 - 4.95) ** 2
  np.testing.assert_allclose(p[19], 0.85 * math.exp(-z_far / 0.5) + 0.127, atol=1e-6)


def test_member_with_no_active_units_keeps_everything():
  h = relu_features(jax.random.key(3), 3, 2, 32)
  h[1] = 0.0
  p = np.asarray(dropout.lpd_keep_rates(h))
  np.testing.assert_array_equal(p[1], 1.0)
  assert (p[0][h[0] > 0] < 1).all()


def test_sampled_mask_frequencies_match_keep_rates():
  p = np.asarray(dropout.lpd_keep_rates(relu_features(jax.random.key(4), 3, 4, 64)))
  p_tiled = np.broadcast_to(p, (4000, *p.shape))
  masks = np.asarray(dropout.sample_mask(jax.random.key(5), p_tiled))
  frequency = masks.mean(axis=0)
  # 4000 draws: standard error <= 0.5 / sqrt(4000) ~ 0.008; 5 sigma
  np.testing.assert_allclose(frequency, p, atol=0.04)
  assert set(np.unique(masks)) <= {0.0, 1.0}


def test_rescaled_mask_is_unbiased_and_never_nan():
  p = np.array([[[0.5, 0.0, 1.0, 0.2]]], np.float32)
  masks = np.asarray(
    dropout.sample_mask(jax.random.key(6), np.broadcast_to(p, (20000, *p.shape)), rescale=True)
  )
  assert np.isfinite(masks).all()
  np.testing.assert_allclose(masks.mean(axis=0)[0, 0], [1.0, 0.0, 1.0, 1.0], atol=0.05)


def test_keep_rates_are_jitted_with_static_num_bins():
  h = relu_features(jax.random.key(7), 3, 2, 16)
  a = dropout.lpd_keep_rates(h, num_bins=8)
  b = dropout.lpd_keep_rates(h, num_bins=64)
  np.testing.assert_allclose(a, lpd_reference(h, **{**LPD, 'num_bins': 8}), atol=1e-6)
  np.testing.assert_allclose(b, lpd_reference(h, **LPD), atol=1e-6)
