"""The gradient-masking audit (lpd_jax.audit) on digits: it passes an ordinary trained model
and flags two deliberately masked ones (logits x 1e3; gradients zeroed by a custom_vjp)."""

import json
import math
import os
import types

import jax
import numpy as np
import pytest
from conftest import tiny_config
from test_attacks import ScaledMLP, digits, no_gradient  # noqa: F401  (digits is a fixture)

from lpd_jax import audit
from lpd_jax.audit import checks
from lpd_jax.suites import audit as audit_suite

# A module fixture computes once: keep its tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('test_audit')

SMALL = dict(eps=0.1, steps=10, strong_steps=30, restarts=2, square_queries=300)


@pytest.fixture(scope='module')
def audits(digits):  # noqa: F811
  model, x, y = digits
  x, y = x[:120], y[:120]
  key = jax.random.key(0)
  scaled = ScaledMLP(model.params, 1e3)
  return {
    'ordinary': audit.run(model.log_predict, x, y, key=key, **SMALL),
    'scaled': audit.run(scaled.log_predict, x, y, key=key, **SMALL),
    'zero_gradient': audit.run(no_gradient(model.log_predict, 'zero'), x, y, key=key, **SMALL),
  }


def failed(result):
  return {name for name, c in result['checks'].items() if c['passed'] is False}


def test_an_ordinary_model_passes(audits):
  result = audits['ordinary']
  assert result['passed'], result['checks']
  assert result['checks']['white_box_beats_transfer']['passed'] is None  # not run, not failed
  assert result['worst_case_accuracy'] <= min(result['accuracies'].values())
  assert 'No sign of gradient masking' in result['verdict']


def test_scaled_logits_are_flagged(audits):
  result = audits['scaled']
  assert not result['passed']
  assert {'margin_not_much_better_than_ce', 'gradients_are_not_zero'} <= failed(result)
  share = result['checks']['gradients_are_not_zero']['zero_gradient_share']
  assert share > 0.3
  # The worst case still finds the real robustness: the margin attacks are in it.
  ordinary = audits['ordinary']['worst_case_accuracy']
  assert result['worst_case_accuracy'] <= ordinary + 0.05
  assert 'Signs of gradient masking' in result['verdict']


def test_zeroed_gradients_are_flagged(audits):
  result = audits['zero_gradient']
  assert not result['passed']
  assert {'gradient_free_not_better', 'gradients_are_not_zero'} <= failed(result)
  assert result['checks']['gradients_are_not_zero']['zero_gradient_share'] == 1.0
  assert result['accuracies']['square'] < result['accuracies']['pgd-ce']


def test_zero_gradient_share_counts_samples_with_all_zero_gradients(digits):  # noqa: F811
  model, x, y = digits
  assert audit.zero_gradient_share(model.log_predict, x[:50], y[:50]) == 0.0
  assert audit.zero_gradient_share(no_gradient(model.log_predict, 'zero'), x[:50], y[:50]) == 1.0


def evidence(n=16, **accuracies):
  """Evidence of an audit on n points that every check reads: the attacks' accuracies (the
  defaults pass every check), clean all right."""
  a = {'fgsm': 0.5, 'pgd-ce': 0.5, 'pgd-margin': 0.5, 'pgd-margin-strong': 0.5, 'square': 0.5}
  a.update(accuracies)
  return audit.Evidence(
    accuracies=a,
    correct={},
    clean=np.ones(n, bool),
    eps=0.1,
    large_eps=0.5,
    steps=10,
    strong_steps=30,
    restarts=2,
    tolerance=0.05,
    transfer=None,
    large_eps_accuracy=a.pop('large', 0.0),
    eps_curve=([0.025, 0.05, 0.1], [0.75, 0.625, 0.5]),
    zero_gradient_share=0.0,
    expected=None,
  )


def binomial_tail(n, p, k):
  """P(Binomial(n, p) >= k) in closed form."""
  return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize('n', [16, 32, 100, 256])
def test_a_check_fails_from_the_points_a_binomial_test_at_the_tolerance_rejects(n):
  """fails_from(n) is the smallest k with P(Binomial(n, 0.05) >= k) < 0.05 (closed form)."""
  k = checks.fails_from(n, 0.05)
  assert binomial_tail(n, 0.05, k) < 0.05 <= binomial_tail(n, 0.05, k - 1)
  assert checks.binomial_tail(n, 0.05, k) == pytest.approx(binomial_tail(n, 0.05, k), rel=1e-9)
  assert {16: 3, 32: 5, 100: 10, 256: 20}[n] == k
  # n_min: the fewest points on which twice the tolerance fails; fewer cannot tell it.
  fewest = checks.n_min(0.05)
  assert checks.fails_from(fewest, 0.05) <= 0.1 * fewest
  assert all((checks.fails_from(m, 0.05) or m + 1) > 0.1 * m for m in range(1, fewest))


def test_one_image_of_16_is_too_few_to_tell_and_many_still_fail():
  """The user's case: 1 image of 16 past a check's line against a tolerance of 0.05 is no
  verdict; 2 neither (P = 0.19), 3 fail (P = 0.043); so does 1 image of 16 at large eps."""
  for past, expected in [(0, 'passed'), (1, checks.TOO_FEW), (2, checks.TOO_FEW), (3, 'FAILED')]:
    e = evidence(**{'pgd-ce': 0.5 + past / 16})
    check = checks.iterative_beats_single_step(e)
    assert check['verdict'] == expected and check['n'] == 16 and check['points_past'] == past
    assert check['passed'] is {'passed': True, 'FAILED': False}.get(expected)
    assert check['fails_from'] == 3
  unclear = checks.large_eps_reaches_zero(evidence(large=1 / 16))
  assert unclear['verdict'] == checks.TOO_FEW
  assert unclear['p_value'] == pytest.approx(binomial_tail(16, 0.05, 1))
  assert checks.large_eps_reaches_zero(evidence(large=1.0))['verdict'] == 'FAILED'
  assert checks.large_eps_reaches_zero(evidence(n=1000, large=63 / 1000))['verdict'] == 'FAILED'
  assert checks.large_eps_reaches_zero(evidence(n=1000, large=62 / 1000))['verdict'] != 'FAILED'
  # The paragraph names the checks it could not tell, and the rule its n.
  result = dict(
    eps=0.1,
    num_examples=16,
    checks={'large_eps_reaches_zero': unclear},
    worst_case_accuracy=0.5,
    attacks_in_worst_case=['fgsm'],
  )
  assert 'large_eps_reaches_zero: past the tolerance by too few of the 16' in checks.verdict(result)
  assert 'On 16 points a check fails from 3 points past (18.75%)' in checks.rule(16, 0.05)


def test_the_suite_reads_reports_from_before_the_rule():
  """An audit report written before the rule (no verdict strings, no n per check; the
  digits study's LPD report as it was then, kept in tests/golden/old_reports): the same
  records and a table with '-' where the rule's fields are missing."""
  here = os.path.dirname(__file__)
  path = os.path.join(here, 'golden', 'old_reports', 'eval_audit_before_the_rule.json')
  with open(path) as f:
    report = json.load(f)
  records = [m.to_json() for m in audit_suite.metrics(report)]
  assert records == report['metrics']
  ens = types.SimpleNamespace(num_members=3, inference='raw', keep_rates=None)
  ctx = types.SimpleNamespace(config=tiny_config(), labels=[0] * 32)
  table = audit_suite.audit_table(report, ens, ctx)
  assert '| iterative_beats_single_step | passed | 32 | - | - | fgsm 0.7188, pgd 0.6875 |' in table
