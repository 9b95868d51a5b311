"""Mixed precision and compile-once: what the performance work promises, checked."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from lpd_jax import data, ensemble, predict, train


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_parameters_and_features():
  config = tiny_config(dtype='bfloat16')
  bf16 = ensemble.create(config, num_classes=10)
  f32 = ensemble.create(tiny_config(), num_classes=10)
  variables = f32.init(jax.random.key(0), 3, (8, 8, 1))
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype('float32')}
  x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
  jaxpr = str(jax.make_jaxpr(lambda v: bf16.features(v, x))(variables))
  assert 'bf16' in jaxpr and 'conv_general_dilated' in jaxpr
  h, _ = bf16.features(variables, x)
  h32, _ = f32.features(variables, x)
  assert h.dtype == jnp.float32  # the keep rates and the heads see float32 features
  gap = float(jnp.max(jnp.abs(h - h32)))
  assert 0 < gap < 0.05 * float(jnp.max(jnp.abs(h32)))  # bf16's 8-bit mantissa, not garbage


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_the_training_step_compiles_once_per_shape(dtype):
  config = tiny_config(dtype=dtype, num_members=2)
  ds = data.load_dataset(config)
  members = ensemble.create(config, ds.num_classes)
  tx, _ = train.make_optimizer(config, 10)
  state = train.init_state(config, members, tx, ds.input_shape)
  chex.clear_trace_counter()  # counted per function code: the other parameter's trace
  step = jax.jit(chex.assert_max_traces(train.train_step_fn(config, members, tx, 10), n=1))
  batches = data.train_batches(ds, config.batch_size, seed=0, epoch=0)
  for i in range(3):  # new values, new keys, a new step count: no new trace
    x, y = next(batches)
    state, metrics = step(state, x, y, jax.random.key(i))
  assert np.isfinite(float(metrics['loss']))
  assert {a.dtype for a in jax.tree.leaves(state.variables)} == {jnp.dtype('float32')}
  # Evaluation over a split whose last batch is partial: padded, so one compile too.
  ens = train.loading.assemble(state.variables, members, config)
  before = predict._member_logits._cache_size()
  predict.member_logits(ens, ds.test_images[:100], batch_size=64)
  predict.member_logits(ens, ds.test_images[100:190], batch_size=64)
  assert predict._member_logits._cache_size() - before == 1
