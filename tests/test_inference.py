"""Inference modes of docs/methods.md, "Evaluation of dropout-trained members", the method
objects' keep rates behind them, and the train/test scale logged per epoch."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import lpd_jax
from lpd_jax import data, dropout, ensemble, evaluate, loading, methods, predict
from lpd_jax.config import ConfigError, validate
from lpd_jax.models import ResNet18


@pytest.fixture(scope='module')
def tiny():
  """K = 3 random width-2 ResNet-18s and inputs whose features spread over several bins."""
  model = ResNet18(num_classes=4, width=2)
  variables = ensemble.Members(model).init(jax.random.key(0), 3, (8, 8, 1))
  x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 1))
  return model, variables, x


def hand_expected_logits(model, variables, x, keep_rates):
  """classify_k(h_k * p_k(h)), member by member with plain applies (no map_members)."""
  member = lambda k: jax.tree.map(lambda a: a[k], variables)
  h = jnp.stack([model.apply(member(k), x, method=ResNet18.features) for k in range(3)])
  p = keep_rates(h)
  return (
    np.stack(
      [
        model.apply({'params': member(k)['params']}, h[k] * p[k], method=ResNet18.classify)
        for k in range(3)
      ]
    ),
    h,
    p,
  )


@pytest.mark.parametrize('method', ['lpd', 'pdd'])
def test_expected_inference_is_the_head_on_h_times_p(tiny, method):
  model, variables, x = tiny
  config = tiny_config(method=method, width=2)
  h = ensemble.Members(model).features(variables, x)[0]
  config.lpd.s = float(h.max()) / 12  # several occupied bins, so p varies across units
  config.lpd.gamma = 100.0  # and far bins are dropped hard
  keep_rates = methods.get(method).keep_rates(config)
  expected, h_hand, p = hand_expected_logits(model, variables, x, keep_rates)
  assert 0 < float(p.min()) < 0.5 < float(p.max())  # the masks really differ per unit
  ens = loading.assemble(variables, ensemble.Members(model, 'unroll'), config, inference='expected')
  np.testing.assert_allclose(ens.member_logits(x), expected, rtol=1e-5, atol=1e-6)
  raw = ens.with_inference('raw').member_logits(x)
  assert not np.allclose(raw, expected, atol=1e-3)
  # The keep rates are those of the dropout module over all K members' features at once.
  np.testing.assert_allclose(ens.expected_features(x)[1], p, rtol=1e-6)
  np.testing.assert_allclose(h_hand, ens.expected_features(x)[0], rtol=1e-5, atol=1e-7)


def test_baseline_expected_equals_raw_exactly(tiny):
  model, variables, x = tiny
  ens = loading.assemble(variables, ensemble.Members(model), tiny_config(method='baseline'))
  assert ens.keep_rates is None
  np.testing.assert_array_equal(
    ens.with_inference('expected').member_logits(x), ens.member_logits(x)
  )


def test_rescaled_training_makes_expected_equal_raw(tiny):
  model, variables, x = tiny
  config = tiny_config()
  config.lpd.rescale = True  # inverted dropout: the head trained on h * mask / p, mean h
  ens = loading.assemble(variables, ensemble.Members(model), config, inference='expected')
  np.testing.assert_array_equal(ens.member_logits(x), ens.with_inference('raw').member_logits(x))


def test_raw_inference_is_each_member_applied_alone_bit_for_bit(module_copy):
  """'raw' is the computation of the checkpoint before inference modes existed: the
  whole member network applied to x, member by member."""
  ens = lpd_jax.load(module_copy)
  assert ens.inference == 'raw'
  ds = data.load_dataset(ens.config)
  x = data.to_float(ds.test_images[:32])
  model = ens.members.model

  @jax.jit
  def by_hand(variables, x):
    return jnp.stack(
      [model.apply(jax.tree.map(lambda a, k=k: a[k], variables), x)[0] for k in range(3)]
    )

  np.testing.assert_array_equal(
    jax.jit(lambda e, x: e.member_logits(x))(ens, x), by_hand(ens.variables, x)
  )


def test_load_with_inference_and_every_suite_states_it(module_copy):
  ens = lpd_jax.load(module_copy, inference='expected')
  assert ens.inference == 'expected' and ens.keep_rates is not None
  assert lpd_jax.load(module_copy).with_inference('expected').keep_rates == ens.keep_rates
  config = tiny_config(eval=dict(suite='clean', inference='expected', num_examples=64))
  result = evaluate.evaluate(config, module_copy)['clean_expected']  # the instance's name
  assert result['inference'] == 'expected'
  with open(os.path.join(module_copy, 'eval_clean_expected.md')) as f:
    assert 'inference expected (heads see h * p(h)' in f.read()
  with open(evaluate.report_path(module_copy, 'clean', 'expected')) as f:
    assert json.load(f) == result  # beside the raw report, not over it
  raw = evaluate.evaluate(tiny_config(eval=dict(suite='clean', num_examples=64)), module_copy)
  with open(evaluate.report_path(module_copy, 'clean')) as f:
    assert json.load(f)['inference'] == 'raw' == raw['clean']['inference']
  assert os.path.isfile(evaluate.report_path(module_copy, 'clean', 'expected'))
  ds = data.load_dataset(config)
  direct = predict.clean_accuracy(ens, ds.test_images[:64], ds.test_labels[:64], 64)
  assert result['ensemble_accuracy'] == direct['ensemble_accuracy']
  with pytest.raises(ConfigError, match='unknown eval.inference'):
    evaluate.evaluate(tiny_config(eval=dict(inference='mean')), module_copy)
  with pytest.raises(ValueError, match='inference must be one of'):
    ens.with_inference('mean')


def test_metrics_log_keep_rate_terms_and_margins(module_copy):
  with open(os.path.join(module_copy, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  for r in records:
    assert r['train_loss_ce'] == pytest.approx(r['train_loss'])  # LPD: the data term only
    assert 0 < r['train_mean_keep_rate'] < 1
    assert len(r['train_member_ce']) == 3
  last = records[-1]
  ens = lpd_jax.load(module_copy)
  ds = data.load_dataset(ens.config)
  for mode, field in (
    ('raw', 'test_median_logit_margin'),
    ('expected', 'test_median_logit_margin_expected'),
  ):
    logits = predict.member_logits(ens.with_inference(mode), ds.test_images, 128)
    margins = [
      logits[k, i, y] - np.delete(logits[k, i], y).max()
      for k in range(3)
      for i, y in enumerate(ds.test_labels)
    ]
    assert last[field] == pytest.approx(float(np.median(margins)), rel=1e-5)
  # Raw features are larger than what the heads saw in training: larger margins.
  assert last['test_median_logit_margin'] > last['test_median_logit_margin_expected']


def test_mean_active_keep_rate_ignores_inactive_units():
  h = jnp.array([[[0.0, 1.0, 2.0, 0.0]]])
  p = jnp.array([[[1.0, 0.2, 0.4, 1.0]]])
  assert float(dropout.mean_active_keep_rate(h, p)) == pytest.approx(0.3)
  assert float(dropout.mean_active_keep_rate(jnp.zeros_like(h), p)) == 1.0


def test_pdd_rescale_is_refused_and_pdd_without_deg_is_labelled_so():
  with pytest.raises(ConfigError, match='pdd.rescale=True is refused'):
    validate(tiny_config(method='pdd', pdd=dict(rescale=True)))
  validate(tiny_config(method='lpd', lpd=dict(rescale=True)))  # LPD: p >= beta, allowed
  assert methods.display_name('pdd') == 'PDD (no DEG)'
  assert methods.display_name('lpd') == 'LPD' and methods.display_name('baseline') == 'Baseline'


def test_keep_rate_functions_are_hashable_values():
  """Equal settings give equal static data, so ensembles of one method share compiles."""
  a = methods.get('lpd').keep_rates(tiny_config())
  b = methods.get('lpd').keep_rates(tiny_config())
  assert a == b and hash(a) == hash(b)
  assert a != methods.get('lpd').keep_rates(tiny_config(lpd=dict(gamma=5.0)))
