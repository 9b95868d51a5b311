"""The gradient-masking audit (lpd_jax.audit) on digits: it passes an ordinary trained model
and flags two deliberately masked ones (logits x 1e3; gradients zeroed by a custom_vjp)."""

import jax
import pytest
from test_attacks import ScaledMLP, digits, no_gradient  # noqa: F401  (digits is a fixture)

from lpd_jax import audit

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
