"""lpd_jax.certify: bound propagation against the network it bounds, exact minima,
linear programs (scipy) and attacks that look for the smallest margin."""

import itertools
import os
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from scipy.optimize import linprog

import lpd_jax
from lpd_jax import attacks, certify, ensemble, evaluate, models
from lpd_jax import config as config_lib
from lpd_jax.certify import bounds, cost, graph, memory, window
from lpd_jax.data import load_dataset, to_float
from lpd_jax.errors import ConfigError
from lpd_jax.suites import certify as certify_suite

pytestmark = pytest.mark.xdist_group('certify')

METHODS = ('ibp', 'crown_ibp', 'crown', 'alpha_crown')
# alpha-CROWN's Adam steps in these tests: the compiled program is the default's (a scan),
# its run a seventh of it. Every call passes it, so the tests share their compiles.
ALPHA_STEPS = 3


def bound(ens, x, y, eps, method, intermediate=True):
  """`certify.margins` as every test here calls it (one compile per method and shape);
  `intermediate`: alpha-CROWN optimises the intermediate bounds too (the default; on the
  random ResNets) or only the last pass (on the trained ensemble: a third of the compile)."""
  return certify.margins(
    ens, x, y, eps, method=method, alpha_steps=ALPHA_STEPS, alpha_intermediate=intermediate
  )


class ShortResNet(models.resnet.ResNet):
  """The CIFAR ResNet with 2, 1, 1 BasicBlocks: every kind of node of ResNet-18's graph
  (stem, identity and strided projection shortcuts, pooling, head) in half its depth, so
  alpha-CROWN with optimised intermediate bounds compiles in a fraction of ResNet-18's time.
  ResNet-18 itself is bounded below on the trained ensemble and in the suite."""

  blocks_per_stage = (2, 1, 1)


def random_resnet(num_members=2, width=2, input_shape=(8, 8, 1), num_classes=5, seed=0):
  """A ShortResNet ensemble with random weights and random BatchNorm statistics and affine
  parameters, so the folded convolutions are not the init's identity scaling."""
  members = ensemble.Members(ShortResNet(num_classes=num_classes, width=width))
  variables = members.init(jax.random.key(seed), num_members, input_shape)
  key = jax.random.key(seed + 1)

  def perturb(path, leaf):
    name = jax.tree_util.keystr(path)
    k = jax.random.fold_in(key, zlib.crc32(name.encode()) >> 1)  # hash() varies per process
    if name.endswith("['var']") or name.endswith("['scale']"):
      return jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5)
    if name.endswith("['mean']") or name.endswith("['bias']"):
      return 0.1 * jax.random.normal(k, leaf.shape)
    return leaf

  variables = jax.tree_util.tree_map_with_path(perturb, variables)
  return ensemble.Ensemble(variables, members)


@pytest.fixture(scope='module')
def small_ensemble():
  ens = random_resnet()
  x = jax.random.uniform(jax.random.key(5), (6, 8, 8, 1))
  return ens, x, jnp.arange(6) % 5


@pytest.fixture(scope='module')
def trained(module_copy):
  """The session's width-4 K = 3 LPD digits ensemble (raw inference) and 8 test images (the
  certify suite's batch below: one compile each)."""
  ens = lpd_jax.load(module_copy)
  ds = load_dataset(ens.config)
  return ens, jnp.asarray(to_float(ds.test_images[:8])), jnp.asarray(ds.test_labels[:8])


def mean_logits_fn(ens):
  return lambda x: jnp.mean(ens.members.logits(ens.variables, x), axis=0)


def smallest_margins(ens, x, y, eps, key):
  """Per sample and margin j, the smallest F_y - F_j found at 64 uniform points of the box,
  64 of its corners and a 20-step PGD on the margin: [B, C-1]."""
  lo, hi = bounds.box(x, eps)
  exact = lambda p: certify.mean_logit_margins(ens, p, y)
  found = exact(x)
  k_uniform, k_corner, k_pgd = jax.random.split(key, 3)
  for i in range(64):
    u = jax.random.uniform(jax.random.fold_in(k_uniform, i), x.shape)
    found = jnp.minimum(found, exact(lo + u * (hi - lo)))
    corner = jax.random.bernoulli(jax.random.fold_in(k_corner, i), 0.5, x.shape)
    found = jnp.minimum(found, exact(jnp.where(corner, hi, lo)))
  x_pgd = attacks.pgd(
    mean_logits_fn(ens), x, y, key=k_pgd, eps=eps, steps=20, step_size=eps / 4, loss='margin'
  )
  assert float(jnp.max(jnp.abs(x_pgd - x))) <= eps + 1e-6
  return jnp.minimum(found, exact(jnp.clip(x_pgd, lo, hi)))  # float rounding of x + delta


def test_graph_evaluates_the_model_it_was_built_from(small_ensemble):
  ens, x, _ = small_ensemble
  graphs = certify.member_graphs(ens, x.shape[1:])
  ours = jnp.stack([graph.forward(g, x) for g in graphs])
  np.testing.assert_allclose(ours, ens.members.logits(ens.variables, x), rtol=1e-5, atol=1e-5)
  ops = [node.op for node in graphs[0]]
  assert ops.count('add') == 4 and ops.count('relu') == 9  # 4 blocks, stem + 2 per block


def test_a_model_without_a_relaxation_is_refused_clearly():
  with pytest.raises(NotImplementedError, match='max-pool'):
    graph.member_graph(models.VGG16(num_classes=3, width=4), None, (8, 8, 1))


@pytest.mark.parametrize('eps', [0.001, 0.01])
def test_bounds_are_sound_on_a_random_resnet(small_ensemble, eps):
  ens, x, y = small_ensemble
  found = smallest_margins(ens, x, y, eps, jax.random.key(1))
  lower = {m: bound(ens, x, y, eps, m) for m in METHODS}
  for method, lb in lower.items():
    assert bool(jnp.all(lb <= found + 1e-5)), method
  # alpha-CROWN >= CROWN >= IBP per margin (intersected with the interval bound).
  assert bool(jnp.all(lower['alpha_crown'] >= lower['crown'] - 1e-5))
  assert bool(jnp.all(lower['crown'] >= lower['ibp'] - 1e-5))
  assert bool(jnp.all(lower['crown_ibp'] >= lower['ibp'] - 1e-5))
  # Not vacuous: CROWN's bound is within a small multiple of the gap PGD leaves.
  clean = certify.mean_logit_margins(ens, x, y)
  assert float(jnp.mean(clean - lower['crown'])) < 20 * float(jnp.mean(clean - found))


def test_bounds_are_sound_and_useful_on_the_trained_digits_ensemble(trained):
  ens, x, y = trained
  clean = certify.mean_logit_margins(ens, x, y)
  for eps in (0.0005, 0.004):
    found = smallest_margins(ens, x, y, eps, jax.random.key(2))
    lower = {m: bound(ens, x, y, eps, m, intermediate=False) for m in METHODS}
    for method, lb in lower.items():
      assert bool(jnp.all(lb <= found + 1e-4)), (method, eps)
      assert bool(jnp.all(lb >= lower['ibp'] - 1e-4)), (method, eps)
    assert bool(jnp.all(lower['alpha_crown'] >= lower['crown'] - 1e-4)), eps
    # CROWN is tighter than IBP on average, by far on a 17-ReLU-layer network.
    assert float(jnp.mean(lower['crown'] - lower['ibp'])) > 0
    assert float(jnp.mean(clean - lower['crown'])) < 0.1 * float(jnp.mean(clean - lower['ibp']))
  # At the paper's eps most clean-correct samples are certified by CROWN.
  lb = bound(ens, x, y, 0.0005, 'crown', intermediate=False)
  correct = clean.min(axis=1) > 0
  assert float(jnp.mean(lb.min(axis=1)[correct] > 0)) > 0.5


def sparse_crown_by_hand(g, x_lo, x_hi):
  """Full sparse CROWN, layer by layer in one pass each: a ReLU input's neurons unstable
  under the interval step from the bounds so far get their CROWN bound (intersected with
  the interval one), the stable ones keep the interval bound."""
  b = {0: (x_lo, x_hi)}
  for i in range(1, len(g)):
    b[i] = bounds.interval_step(g, i, b)
    if i in graph.relu_inputs(g):
      lo, hi = b[i]
      n, m = lo.shape[0], lo[0].size
      unit = jnp.broadcast_to(jnp.eye(m, dtype=lo.dtype), (n, m, m))
      a = jnp.concatenate([unit, -unit], axis=1).reshape(n, 2 * m, *lo.shape[1:])
      a_in, const = bounds.backward(g, i, a, b)
      low = bounds.concretize(a_in, const, x_lo, x_hi)
      c_lo, c_hi = low[:, :m].reshape(lo.shape), -low[:, m:].reshape(hi.shape)
      unstable = (lo < 0) & (hi > 0)
      b[i] = (
        jnp.where(unstable, jnp.maximum(lo, c_lo), lo),
        jnp.where(unstable, jnp.minimum(hi, c_hi), hi),
      )
  return b


def test_full_crown_is_sparse_and_a_cap_counts_what_fell_back():
  """Full CROWN (the default) bounds every neuron unstable under the bounds so far, `chunk`
  at a time, unstable first, skipping chunks without one: the bounds of a layer-by-layer
  reference that bounds them all in one pass. A cap leaves, per layer and sample,
  max(u - cap, 0) unstable neurons to intervals, u counted here from the interval step of
  the bounds it returns. (A dense toy: the chunking does not depend on the layer type.)"""
  rng = np.random.default_rng(3)
  dims = (10, 40, 40, 40, 5)
  layers = [
    (rng.normal(size=(a, b)) / np.sqrt(a), 0.1 * rng.normal(size=b)) for a, b in zip(dims, dims[1:])
  ]
  g = graph.dense_graph(layers, dims[0])
  x = jnp.asarray(rng.uniform(size=(6, dims[0])), jnp.float32)
  x_lo, x_hi = bounds.box(x, 0.1)
  run = jax.jit(
    lambda lo, hi, cap: bounds.node_bounds_and_fallbacks(g, lo, hi, 'crown', cap, 4),
    static_argnums=2,
  )
  relu_inputs = graph.relu_inputs(g)
  full, none_fell = run(x_lo, x_hi, None)  # chunks of 4, many without an unstable neuron
  assert not np.any(np.asarray(none_fell))
  by_hand = jax.jit(lambda lo, hi: sparse_crown_by_hand(g, lo, hi))(x_lo, x_hi)
  for i in relu_inputs:
    np.testing.assert_allclose(full[i][0], by_hand[i][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full[i][1], by_hand[i][1], rtol=1e-4, atol=1e-5)
  capped, fell = run(x_lo, x_hi, 3)
  unstable = []
  for i in relu_inputs:
    lo, hi = bounds.interval_step(g, i, capped)  # the bounds before layer i was tightened
    unstable.append(np.sum((np.asarray(lo) < 0) & (np.asarray(hi) > 0), axis=1))
  np.testing.assert_array_equal(fell, np.maximum(np.stack(unstable) - 3, 0))
  assert np.asarray(fell).sum() > 0  # the cap binds here


def test_windowed_passes_give_the_bounds_of_whole_image_passes(small_ensemble):
  """`window.py`: each neuron's backward pass on its receptive field only (here windows of
  1 x 1 to 5 x 5 of 8 x 8, the rest whole) gives the bounds of the
  layer-by-layer reference that bounds every neuron of a layer in one whole-image pass."""
  ens, x, _ = small_ensemble
  g = graph.member_graph(
    ens.members.model, jax.tree.map(lambda v: v[0], ens.variables), x.shape[1:]
  )
  layers = graph.relu_inputs(g)
  assert window.plan(g, layers[1])[0] is not None  # windowed down to the input
  mixed = window.plan(g, layers[5])  # windowed, then whole from node 7 on (`embed`)
  assert mixed[layers[5]] is not None and mixed[0] is None
  x_lo, x_hi = bounds.box(x[:2], 0.01)
  windowed = jax.jit(lambda lo, hi: bounds.node_bounds(g, lo, hi, 'crown'))(x_lo, x_hi)
  by_hand = jax.jit(lambda lo, hi: sparse_crown_by_hand(g, lo, hi))(x_lo, x_hi)
  for i in graph.relu_inputs(g):
    for side in range(2):
      np.testing.assert_allclose(windowed[i][side], by_hand[i][side], rtol=1e-4, atol=1e-5)


def test_the_certify_report_says_whether_the_bound_is_crowns():
  result = dict(eps=0.004, max_unstable=0, methods={}, curve={})
  assert 'full CROWN' in certify_suite.cap_text(result)
  never = dict(fallbacks_per_layer=[0, 0])
  result.update(max_unstable=256, methods=dict(crown=never))
  result['curve'] = dict(crown=[dict(eps=0.004, fallbacks=0), dict(eps=0.008, fallbacks=0)])
  assert "never bound, so every bound is CROWN's" in certify_suite.cap_text(result)
  result['methods']['crown'] = dict(fallbacks_per_layer=[0, 120, 0, 7])
  result['curve']['crown'][1]['fallbacks'] = 300
  text = certify_suite.cap_text(result)
  assert "NOT CROWN's" in text
  assert 'crown at eps 0.004: 127 (layer 2: 120, layer 4: 7); crown at eps 0.008: 300.' in text


def test_all_bounds_converge_to_the_clean_margins_as_eps_goes_to_zero(small_ensemble):
  ens, x, y = small_ensemble
  clean = certify.mean_logit_margins(ens, x, y)
  for method in METHODS:
    gaps = [
      float(jnp.max(clean - bound(ens, x, y, eps, method))) for eps in (1e-2, 1e-3, 1e-4, 1e-5, 0.0)
    ]
    assert all(a >= b - 1e-6 for a, b in zip(gaps, gaps[1:])), (method, gaps)
    assert gaps[-1] < 1e-5 and gaps[-2] < 1e-2 * gaps[0], (method, gaps)


def linear_network(key, input_shape=(6, 6, 2), num_classes=4):
  """conv+BN -> conv+BN with a residual addition -> average pool -> dense: no ReLU."""
  ks = jax.random.split(key, 8)
  b = graph.Builder(input_shape)
  c = input_shape[-1]

  def bn(k, n):
    k1, k2, k3, k4 = jax.random.split(k, 4)
    u = lambda kk: jax.random.uniform(kk, (n,), minval=0.5, maxval=1.5)
    return {'scale': u(k1), 'bias': jax.random.normal(k2, (n,))}, {
      'mean': jax.random.normal(k3, (n,)),
      'var': u(k4),
    }

  conv = lambda k, ci, co: {'kernel': 0.3 * jax.random.normal(k, (3, 3, ci, co))}
  p, s = bn(ks[0], 3)
  a = graph.conv_bn(b, 0, conv(ks[1], c, 3), p, s, 1, ((1, 1), (1, 1)))
  p, s = bn(ks[2], 3)
  main = graph.conv_bn(b, a, conv(ks[3], 3, 3), p, s, 2, ((1, 1), (1, 1)))
  p, s = bn(ks[4], 3)
  short = graph.conv_bn(b, a, {'kernel': jax.random.normal(ks[5], (1, 1, 3, 3))}, p, s, 2, 'VALID')
  pooled = graph.global_average_pool(b, b.add(main, short))
  head = {'kernel': jax.random.normal(ks[6], (3, num_classes)), 'bias': jnp.ones(num_classes)}
  graph.dense(b, pooled, head)
  return b.graph()


def test_without_relus_crown_is_the_exact_minimum_over_the_box():
  g = linear_network(jax.random.key(3))
  x = jax.random.uniform(jax.random.key(4), (3, 6, 6, 2))
  y = jnp.array([0, 2, 3])
  eps = 0.05
  # Each side in one program (op by op, their compiles took most of the test's time).
  margin_bounds = jax.jit(
    lambda x, method: bounds.ensemble_margin_bounds([g], x, y, eps, method), static_argnums=1
  )
  lower = margin_bounds(x, 'crown')

  # The margin is affine in x: its minimum over the box puts each pixel at the end its
  # gradient points away from.
  @jax.jit
  def exact_minimum(x):
    lo, hi = bounds.box(x, eps)
    spec, _ = bounds.margin_spec(y, 4)
    margin = lambda p: jnp.einsum('bsc,bc->bs', spec, graph.forward(g, p))
    grads = jax.jacobian(lambda p: margin(p).sum(0))(x)  # [C-1, B, ...]: samples independent
    grads = jnp.moveaxis(grads, 0, 1)
    step = jnp.where(grads > 0, (lo - x)[:, None], (hi - x)[:, None])
    return margin(x) + jnp.sum(step * grads, axis=(2, 3, 4))

  np.testing.assert_allclose(lower, exact_minimum(x), rtol=1e-4, atol=1e-4)
  ibp = margin_bounds(x, 'ibp')
  assert bool(jnp.all(ibp <= lower + 1e-4)) and float(jnp.mean(lower - ibp)) > 1e-3


def one_hidden_layer(seed, hidden=8, num_classes=3):
  rng = np.random.default_rng(seed)
  w1, b1 = rng.normal(size=(2, hidden)), rng.normal(size=hidden) * 0.3
  w2, b2 = rng.normal(size=(hidden, num_classes)), rng.normal(size=num_classes)
  return [(w1.astype(np.float32), b1.astype(np.float32)), (w2, b2)], (w1, b1, w2, b2)


def lp_minimum(w1, b1, c, const, x_lo, x_hi, relaxation):
  """min c·z + const over x in the box and z within a ReLU relaxation of y = w1^T x + b1
  (scipy's HiGHS); variables [x (2), z (H)]."""
  hidden = len(b1)
  lo = w1.T @ ((x_lo + x_hi) / 2) + b1 - np.abs(w1.T) @ ((x_hi - x_lo) / 2)
  hi = w1.T @ ((x_lo + x_hi) / 2) + b1 + np.abs(w1.T) @ ((x_hi - x_lo) / 2)
  a_ub, b_ub, a_eq, b_eq = [], [], [], []
  for i in range(hidden):
    row = lambda cx, cz: np.concatenate([cx, np.eye(hidden)[i] * cz])
    if lo[i] >= 0:  # z = y
      a_eq.append(row(-w1[:, i], 1.0))
      b_eq.append(b1[i])
    elif hi[i] <= 0:  # z = 0
      a_eq.append(row(np.zeros(2), 1.0))
      b_eq.append(0.0)
    else:
      s = hi[i] / (hi[i] - lo[i])  # z <= s (y - l)
      a_ub.append(row(-s * w1[:, i], 1.0))
      b_ub.append(s * (b1[i] - lo[i]))
      lower_lines = [0.0, 1.0] if relaxation == 'triangle' else [float(hi[i] > -lo[i])]
      for slope in lower_lines:  # z >= slope * y
        a_ub.append(row(slope * w1[:, i], -1.0))
        b_ub.append(-slope * b1[i])
  res = linprog(
    np.concatenate([np.zeros(2), c]),
    A_ub=np.array(a_ub) if a_ub else None,
    b_ub=np.array(b_ub) if b_ub else None,
    A_eq=np.array(a_eq) if a_eq else None,
    b_eq=np.array(b_eq) if b_eq else None,
    bounds=[(x_lo[0], x_hi[0]), (x_lo[1], x_hi[1])] + [(None, None)] * hidden,
    method='highs',
  )
  assert res.status == 0
  return res.fun + const, int(np.sum((lo < 0) & (hi > 0)))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_one_hidden_layer_crown_is_the_lp_of_its_relaxation(seed):
  layers, (w1, b1, w2, b2) = one_hidden_layer(seed)
  g = graph.dense_graph(layers, 2)
  x0, y = np.array([0.5, 0.45]), 0
  for eps in (0.3, 0.02):
    lower = bounds.ensemble_margin_bounds(
      [g], jnp.asarray(x0[None], jnp.float32), jnp.array([y]), eps, 'crown'
    )
    x_lo, x_hi = x0 - eps, x0 + eps
    grid = np.stack(np.meshgrid(*[np.linspace(a, b, 301) for a, b in zip(x_lo, x_hi)]), -1)
    hidden = np.maximum(grid.reshape(-1, 2) @ w1 + b1, 0)
    logits = hidden @ w2 + b2
    for s, j in enumerate(k for k in range(3) if k != y):
      c, const = w2[:, y] - w2[:, j], b2[y] - b2[j]
      crown_lp, unstable = lp_minimum(w1, b1, c, const, x_lo, x_hi, 'crown')
      triangle_lp, _ = lp_minimum(w1, b1, c, const, x_lo, x_hi, 'triangle')
      brute = float(np.min(logits[:, y] - logits[:, j]))
      if unstable:  # the LP over CROWN's own relaxation, or the interval bound if better
        interval = float(
          bounds.ensemble_margin_bounds(
            [g], jnp.asarray(x0[None], jnp.float32), jnp.array([y]), eps, 'ibp'
          )[0, s]
        )
        assert float(lower[0, s]) == pytest.approx(max(crown_lp, interval), abs=1e-4)
        assert float(lower[0, s]) <= triangle_lp + 1e-4 <= brute + 2e-4
      else:  # no unstable ReLU: the network is affine on the box, the bound exact
        corners = np.array(list(itertools.product(*zip(x_lo, x_hi))))
        h = np.maximum(corners @ w1 + b1, 0) @ w2 + b2
        assert float(lower[0, s]) == pytest.approx(float(np.min(h[:, y] - h[:, j])), abs=1e-4)


def test_expected_inference_of_a_dropout_ensemble_is_refused(module_copy):
  ens = lpd_jax.load(module_copy, inference='expected')
  assert ens.keep_rates is not None
  with pytest.raises(ConfigError, match='inference=raw'):
    certify.crown_margins(ens, jnp.zeros((1, 8, 8, 1)), jnp.zeros(1, jnp.int32), 0.01)


def test_the_memory_estimate_is_within_2x_of_what_xla_assigns(small_ensemble):
  """The estimate printed before a certification against the bytes XLA assigns to the
  compiled bound, per method (the shapes of the soundness tests: their compiles). The
  paper's 200 CIFAR-shaped samples on a CPU: benchmarks/certify.py."""
  ens, x, y = small_ensemble
  for method in METHODS:
    estimate = certify.memory_estimate(ens, x.shape[1:], method, len(x))
    measured = memory.compiled_bytes(  # certify.margins' call: its compiled program reused
      certify.margins_and_fallbacks,
      ens,
      x,
      y,
      0.001,
      method=method,
      max_unstable=certify.MAX_UNSTABLE,
      chunk=certify.CHUNK,
      alpha_steps=ALPHA_STEPS,
      alpha_intermediate=True,
    )
    assert estimate / 2 <= measured <= 2 * estimate, (method, estimate, measured)


def test_the_time_estimate_counts_the_backward_passes_crown_runs():
  """`cost`: prefix shares from XLA's cost analysis equal the dense layers' 2 * d_in * d_out
  multiply-adds; 'crown' adds, per ReLU input, its chunks holding an unstable neuron times
  2 * chunk rows through the prefix, counted here by hand."""
  rng = np.random.default_rng(0)
  dims = (6, 10, 20, 4)
  layers = [(rng.normal(size=(a, b)), np.zeros(b)) for a, b in zip(dims, dims[1:])]
  g = graph.dense_graph(layers, dims[0])  # input, linear, relu, linear, relu, linear
  flops = [2 * a * b for a, b in zip(dims, dims[1:])]
  np.testing.assert_allclose(
    cost.prefix_shares(g)[[1, 3, 5]], np.cumsum(flops) / sum(flops), rtol=1e-6
  )
  share1, share3 = flops[0] / sum(flops), (flops[0] + flops[1]) / sum(flops)
  # Layer 1: 10 neurons, cap 10, chunks of 4: 7 unstable -> 2 passes. Layer 3: 20 neurons,
  # cap 16: 20 unstable -> 4 passes. The logits' 3 margin rows, and IBP's 2 passes.
  slow = cost.BACKWARD_SLOWDOWN  # a backward multiply-add against a forward one
  by_hand = 2 + slow * (3 + 2 * 2 * 4 * share1 + 4 * 2 * 4 * share3)
  work = cost.forward_equivalents(g, 'crown', [7, 20], max_unstable=16, chunk=4)
  assert work == pytest.approx(by_hand, rel=1e-6)
  no_unstable = cost.forward_equivalents(g, 'crown', [0, 0], 16, 4)
  assert no_unstable == 2 + slow * 3 == cost.forward_equivalents(g, 'crown_ibp', None, 16, 4)
  # A windowed pass (`window.py`) counts each node over its window: the stem's output
  # neurons of a ResNet on 8 x 8 go back through 1 of the stem's 64 positions.
  resnet = graph.member_graph(
    ShortResNet(num_classes=5, width=2),
    jax.tree.map(lambda v: v[0], random_resnet(num_members=1).variables),
    (8, 8, 1),
  )
  flops, stem = cost.node_flops(resnet), graph.relu_inputs(resnet)[0]
  assert cost.pass_shares(resnet)[stem] == pytest.approx(flops[stem] / 64 / flops.sum())
  assert cost.prefix_shares(resnet)[stem] == pytest.approx(flops[stem] / flops.sum())
  assert cost.forward_equivalents(g, 'ibp', None, 16, 4) == 2
  counts = rng.integers(0, 50, size=(3, 11))
  brute = [np.mean([row[i : i + 4].max() for i in range(0, 11, 4)]) for row in counts]
  np.testing.assert_allclose(cost.group_maxima(counts, 4), brute)


def test_certify_suite_selects_as_the_paper_and_reports_what_it_bounded(module_copy, capsys):
  certify_group = dict(
    num_examples=8,
    batch_size=8,
    methods='ibp,alpha_crown',
    curve_methods='crown',
    curve_points=2,
    alpha_steps=ALPHA_STEPS,
    alpha_intermediate=False,
  )
  config = tiny_config(
    eval=dict(suite='certify', num_examples=-1, batch_size=128, certify=certify_group)
  )
  capsys.readouterr()
  result = evaluate.evaluate(config, module_copy)['certify']
  # Before anything is bounded, each run's time and memory estimate; then a line as it starts.
  out = [line for line in capsys.readouterr().out.splitlines() if line.startswith('certify: ')]
  runs = (
    'ibp at eps 0.0005',
    'alpha_crown at eps 0.0005',
    'crown at eps 0.0005',
    'crown at eps 0.001',
  )
  estimate = r'(about [\d.]+ (s|min|h)|under 1 s), [\d.]+ \w+ \(estimate\)'
  for line, run in zip(out, runs, strict=False):
    assert re.fullmatch(rf'certify: {run} on 8 samples: {estimate}', line), line
  assert re.match('certify: (about|under) .* in all, plus compilation', out[4])
  assert [line.split(' (started')[0] for line in out[5:]] == [
    'certify: ' + run.replace(' at ', ' ') for run in runs
  ]
  # The first 8 test images that all members classify correctly, found independently.
  ens = lpd_jax.load(module_copy)
  ds = load_dataset(ens.config)
  logits = ens.members.logits(ens.variables, jnp.asarray(to_float(ds.test_images)))
  all_correct = np.all(np.argmax(logits, -1) == ds.test_labels[None], axis=0)
  assert result['indices'] == list(np.flatnonzero(all_correct)[:8])
  x = jnp.asarray(to_float(ds.test_images[result['indices']]))
  y = jnp.asarray(ds.test_labels[result['indices']])
  alpha = bound(ens, x, y, 0.0005, 'alpha_crown', intermediate=False).min(axis=1)
  reported = result['methods']['alpha_crown']
  np.testing.assert_allclose(reported['minimal_lower_bound'], alpha, rtol=1e-5)
  assert reported['certified_fraction'] == float(np.mean(alpha > 0))
  assert result['methods']['ibp']['certified_fraction'] <= float(np.mean(alpha > 0))
  # The margin a PGD reaches is a point of the ball: never below a sound lower bound.
  assert np.all(np.asarray(result['pgd_minimal_margin']) >= np.asarray(alpha) - 1e-4)
  crown = [bound(ens, x, y, e, 'crown', intermediate=False).min(axis=1) for e in (0.0005, 0.001)]
  assert result['curve']['crown'] == [
    dict(eps=e, certified_fraction=float(np.mean(c > 0)), fallbacks=0)
    for e, c in zip((0.0005, 0.001), crown)
  ]
  for name in ('eval_certify.png', 'eval_certify_curve.png', 'eval_certify.md'):
    assert os.path.getsize(os.path.join(module_copy, name)) > 0
  assert 'raw' in result['output'] and 'first 8 of' in result['selection']
  with open(os.path.join(module_copy, 'eval_certify.md')) as f:
    assert "'crown' is full CROWN" in f.read()


def test_certify_suite_refuses_what_it_cannot_bound(module_copy):
  with pytest.raises(ConfigError, match='resnet18 and resnet34'):
    config_lib.validate_eval(tiny_config(model='vgg16', eval=dict(suite='certify')))
  config = tiny_config(eval=dict(suite='certify', inference='expected'))
  with pytest.raises(ConfigError, match='inference=raw'):
    evaluate.evaluate(config, module_copy)
