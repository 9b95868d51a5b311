"""The ResNet-18, the stacked ensemble and its member execution strategies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from lpd_jax import ensemble, train
from lpd_jax.models import ResNet18


def count_params(model, input_shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape))))
  return sum(leaf.size for leaf in jax.tree.leaves(variables['params']))


def closed_form_count(width, num_classes, channels=3):
  """Parameters of the CIFAR ResNet-18 counted by hand: convs, BatchNorm scale+bias, head."""
  total = 9 * channels * width + 2 * width
  cin = width
  for out in (width, 2 * width, 4 * width, 8 * width):
    total += 9 * cin * out + 9 * out * out + 4 * out  # block 1
    if cin != out:
      total += cin * out + 2 * out  # 1x1 projection shortcut
    total += 2 * (9 * out * out + 2 * out)  # block 2
    cin = out
  return total + 8 * width * num_classes + num_classes


def test_resnet18_parameter_count_matches_the_paper_architecture():
  assert closed_form_count(64, 10) == 11_173_962  # the number for the paper's model
  assert count_params(ResNet18(num_classes=10, width=64), (32, 32, 3)) == 11_173_962
  for width, classes in ((4, 10), (16, 100), (8, 200)):  # certification model, other heads
    assert count_params(ResNet18(classes, width), (32, 32, 3)) == closed_form_count(width, classes)


def test_features_have_width_8w_and_the_mask_hook_multiplies_them():
  model = ResNet18(num_classes=5, width=2)
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
  variables = model.init(jax.random.key(1), x)
  logits, h = model.apply(variables, x)
  assert logits.shape == (3, 5) and h.shape == (3, 16)
  mask = jnp.zeros((3, 16)).at[:, :4].set(1.0)
  masked_logits, masked_h = model.apply(variables, x, feature_mask=mask)
  np.testing.assert_allclose(masked_h, h * mask)
  expected = model.apply(variables, h * mask, method=ResNet18.classify)
  np.testing.assert_allclose(masked_logits, expected, rtol=1e-6)


@pytest.fixture(scope='module')
def small_ensemble():
  model = ResNet18(num_classes=4, width=2)
  variables = ensemble.Members(model).init(jax.random.key(0), 3, (8, 8, 1))
  x = jax.random.uniform(jax.random.key(1), (5, 8, 8, 1))
  return model, variables, x


def test_members_are_initialised_independently(small_ensemble):
  _, variables, _ = small_ensemble
  kernel = variables['params']['head']['kernel']
  assert kernel.shape[0] == 3
  assert not np.allclose(kernel[0], kernel[1])


@pytest.mark.parametrize('strategy', ['unroll', 'vmap', 'map'])
def test_member_logits_equal_each_member_applied_alone(small_ensemble, strategy):
  model, variables, x = small_ensemble
  ens = ensemble.Ensemble(variables, ensemble.Members(model, strategy))
  logits = jax.jit(lambda e, x: e.member_logits(x))(ens, x)
  for k in range(3):
    member = jax.tree.map(lambda a, k=k: a[k], variables)
    np.testing.assert_allclose(logits[k], model.apply(member, x)[0], rtol=1e-5, atol=1e-6)


def test_predict_is_the_mean_member_softmax(small_ensemble):
  model, variables, x = small_ensemble
  ens = ensemble.Ensemble(variables, ensemble.Members(model, 'unroll'))
  probs = np.asarray(jax.nn.softmax(ens.member_logits(x), axis=-1)).mean(axis=0)
  np.testing.assert_allclose(ens.predict(x), probs, rtol=1e-5)
  np.testing.assert_allclose(np.exp(ens.log_predict(x)).sum(-1), 1.0, rtol=1e-5)


def test_auto_strategy_is_unroll_on_cpu():
  assert ensemble.resolve_strategy('auto') == 'unroll'


def test_auto_strategy_table_agrees_with_the_committed_measurement():
  """AUTO_STRATEGY['cpu'] is the fastest strategy at every width of the CPU benchmark."""
  import json
  import os

  path = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'benchmarks',
    'results',
    'member_strategy_cpu.json',
  )
  with open(path) as f:
    rows = json.load(f)['results']
  for width in {r['width'] for r in rows}:
    fastest = min((r for r in rows if r['width'] == width), key=lambda r: r['step_ms'])
    assert fastest['strategy'] == ensemble.AUTO_STRATEGY['cpu'], width


def _one_step(config, x, y):
  members = ensemble.create(config, num_classes=10)
  tx, _ = train.make_optimizer(config, steps_per_epoch=10)
  state = train.init_state(config, members, tx, x.shape[1:])
  step = train.make_train_step(config, members, tx)
  new_state, metrics = step(state, x, y, jax.random.key(3))
  jax.block_until_ready(step(jax.tree.map(jnp.copy, new_state), x, y, jax.random.key(4)))
  assert step._cache_size() == 1  # a new key and a new state do not recompile
  return new_state, metrics


def test_train_step_is_the_same_under_unroll_and_vmap():
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
  y = jnp.arange(16) % 10
  results = [_one_step(tiny_config(width=2, member_strategy=s), x, y) for s in ('unroll', 'vmap')]
  (a, ma), (b, mb) = results
  np.testing.assert_allclose(ma['stats']['member_ce'], mb['stats']['member_ce'], rtol=1e-5)
  # The loss convention of docs/methods.md: the data term is the mean of the members' CE.
  np.testing.assert_allclose(ma['loss'], np.mean(ma['stats']['member_ce']), rtol=1e-6)
  for leaf_a, leaf_b in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
    np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-4, atol=1e-6)


def test_baseline_members_train_independently():
  """With no coupling term, member k's gradient ignores the other members' parameters."""
  config = tiny_config(width=2, method='baseline')
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
  y = jnp.arange(16) % 10
  members = ensemble.create(config, num_classes=10)
  tx, _ = train.make_optimizer(config, 10)
  state = train.init_state(config, members, tx, x.shape[1:])
  step = train.make_train_step(config, members, tx)
  after, _ = step(jax.tree.map(jnp.copy, state), x, y, jax.random.key(0))
  # Perturb member 2 only: members 0 and 1 must end the step exactly as before.
  perturbed = jax.tree.map(jnp.copy, state)
  params = jax.tree.map(lambda a: a.at[2].multiply(1.5), perturbed.variables['params'])
  perturbed = perturbed.replace(variables=dict(perturbed.variables, params=params))
  after_perturbed, _ = step(perturbed, x, y, jax.random.key(0))
  pairs = zip(jax.tree.leaves(after.variables), jax.tree.leaves(after_perturbed.variables))
  for u, v in pairs:
    np.testing.assert_allclose(u[:2], v[:2], rtol=1e-6, atol=1e-7)
    assert u.ndim == 0 or not np.allclose(u[2], v[2]) or np.allclose(u[2], 0)


def test_optimizer_is_sgd_momentum_with_weight_decay_and_cosine_decay():
  config = tiny_config(num_epochs=2, learning_rate=0.02, final_learning_rate=1e-4)
  _, schedule = train.make_optimizer(config, steps_per_epoch=50)
  assert np.isclose(schedule(0), 0.02) and np.isclose(schedule(100), 1e-4)
  np.testing.assert_allclose(schedule(50), 1e-4 + (0.02 - 1e-4) / 2, rtol=1e-5)
  tx, _ = train.make_optimizer(config, steps_per_epoch=50)
  params = {'w': jnp.array([1.0, -2.0])}
  grads = {'w': jnp.array([0.5, 0.5])}
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = -0.02 * (np.array([0.5, 0.5]) + 5e-4 * np.array([1.0, -2.0]))
  np.testing.assert_allclose(updates['w'], expected, rtol=1e-6)


def test_ensembles_differing_only_in_config_share_compiles(small_ensemble):
  import ml_collections

  model, variables, x = small_ensemble
  members = ensemble.Members(model, 'unroll')
  a = ensemble.Ensemble(variables, members, run_config=ml_collections.FrozenConfigDict({'seed': 0}))
  b = ensemble.Ensemble(variables, members, run_config=ml_collections.FrozenConfigDict({'seed': 1}))
  assert a.config.seed == 0 and b.config.seed == 1
  predict = jax.jit(lambda e, x: e.log_predict(x))
  predict(a, x), predict(b, x)
  assert predict._cache_size() == 1
  assert jax.tree.map(lambda v: v, b).config.seed == 1  # survives flatten/unflatten
