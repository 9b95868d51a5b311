"""The compared methods (DEG, ADP, GAL, TRS, adversarial training): their regularizers against
NumPy, their second-order gradients against float64 finite differences, and what the terms do.

A tiny conv + BatchNorm member network keeps compile times low; the methods only need
`features` / `classify`, so they run on it exactly as on the ResNets.
"""

import itertools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpd_jax import config as config_lib
from lpd_jax import (
  ensemble,
  gradients,
  methods,
  pytrees,
  train,
)
from lpd_jax.methods import adp, deg, dverge, gal, graddiv, trs


class TinyNet(nn.Module):
  """conv 3x3 -> BatchNorm -> ReLU -> mean pool (h [B, width]) -> Dense."""

  num_classes: int = 4
  width: int = 3

  def setup(self):
    self.conv = nn.Conv(self.width, (3, 3), padding=1)
    self.bn = nn.BatchNorm(momentum=0.9)
    self.head = nn.Dense(self.num_classes)

  def features(self, x, train=False):
    return jnp.mean(nn.relu(self.bn(self.conv(x), use_running_average=not train)), axis=(1, 2))

  def classify(self, h):
    return self.head(h)

  def __call__(self, x, train=False):
    h = self.features(x, train)
    return self.classify(h), h

  # DVERGE's layers: 1 the BatchNorm output before its ReLU, 2 the logits.
  distillation_depth = 2

  def layer_features(self, x, train, layer):
    pre = self.bn(self.conv(x), use_running_average=not train)
    return pre if layer == 1 else self.classify(jnp.mean(nn.relu(pre), axis=(1, 2)))


def setup(method, k=3, batch=6, strategy='unroll', **groups):
  config = config_lib.base_config()
  config.method = method
  config.num_members = k
  config.batch_size = batch
  for group, values in groups.items():
    config[group].update(values)
  config_lib.validate(config)
  members = ensemble.Members(TinyNet(), strategy)
  variables = members.init(jax.random.key(0), k, (4, 4, 1))
  x = jax.random.uniform(jax.random.key(1), (batch, 4, 4, 1))
  y = jnp.arange(batch) % 4
  return config, members, variables, x, y


def loss_of(config, members, variables, x, y, progress=0.5, epoch=0):
  method = methods.get(config.method)
  return method.loss(
    members,
    variables['params'],
    variables['batch_stats'],
    x,
    y,
    jax.random.key(2),
    methods.Progress(jnp.float32(progress), jnp.int32(epoch)),
    config,
  )


# -- the regularizers against NumPy on fixed arrays -------------------------------------------


def np_cos(a, b):
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def np_pair_cosines(g):
  """[K, B, ...] -> {(i, j): [B]} by a plain loop."""
  k, b = g.shape[:2]
  flat = g.reshape(k, b, -1).astype(np.float64)
  return {
    (i, j): np.array([np_cos(flat[i, s], flat[j, s]) for s in range(b)])
    for i, j in itertools.combinations(range(k), 2)
  }


@pytest.fixture(scope='module')
def fixed_gradients():
  return np.random.default_rng(0).normal(size=(4, 5, 3, 3, 2)).astype(np.float32)


def test_deg_gal_and_trs_terms_equal_numpy_loops(fixed_gradients):
  g = fixed_gradients
  pairs = np_pair_cosines(g)
  k = g.shape[0]
  assert float(deg.cosine_term(g)) == pytest.approx(sum(c.mean() for c in pairs.values()), 1e-5)
  gal_ref = np.mean(np.log(sum(np.exp(c) for c in pairs.values()) + 1e-20))
  assert float(gal.alignment_term(g)) == pytest.approx(gal_ref, 1e-5)
  trs_cos_ref = np.mean([np.abs(c).mean() for c in pairs.values()])
  assert float(trs.cosine_term(g)) == pytest.approx(trs_cos_ref, 1e-5)
  flat = g.reshape(k, g.shape[1], -1).astype(np.float64)
  magnitude_ref = sum(2 * np.mean(np.sum(flat[m] ** 2, axis=-1)) for m in range(k)) / k
  assert float(trs.smoothness_term(g)) == pytest.approx(magnitude_ref, 1e-5)


def test_adp_entropy_and_log_det_equal_numpy():
  rng = np.random.default_rng(1)
  k, b, c = 3, 6, 5
  logits = rng.normal(scale=2.0, size=(k, b, c)).astype(np.float32)
  y = rng.integers(0, c, size=b)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  mean_p = p.mean(0)
  entropy_ref = -np.sum(mean_p * np.log(mean_p + 1e-20), axis=-1)
  np.testing.assert_allclose(adp.ensemble_entropy(logits), entropy_ref, rtol=1e-5)
  log_det_ref = []
  for s in range(b):
    m = np.stack([np.delete(p[m_, s], y[s]) for m_ in range(k)])  # [K, C-1]
    m = m / np.linalg.norm(m, axis=1, keepdims=True)
    log_det_ref.append(np.linalg.slogdet(m @ m.T + 1e-6 * np.eye(k))[1])
  np.testing.assert_allclose(adp.log_det(logits, y), log_det_ref, rtol=1e-4, atol=1e-4)


def test_adp_log_det_stays_finite_when_the_true_class_takes_all_the_mass():
  logits = jnp.array([[[200.0, 0.0, 1.0]], [[300.0, 2.0, 0.0]]])  # p_y rounds to 1 in float32
  value = adp.log_det(logits, jnp.array([0]))
  assert np.isfinite(value).all()


def test_deg_is_one_per_pair_for_identical_members_and_zero_for_orthogonal_gradients():
  config, members, variables, x, y = setup('deg', k=2, deg={'pdd_masks': False})
  same = jax.tree.map(lambda a: jnp.stack([a[0], a[0]]), variables)
  _, aux = loss_of(config, members, same, x, y)
  assert float(aux['terms']['gradient_cosine']) == pytest.approx(1.0, abs=1e-5)
  eye = jnp.eye(6).reshape(6, 1, 6)  # six members, one sample, pairwise orthogonal gradients
  assert float(deg.cosine_term(eye)) == 0.0
  assert float(deg.cosine_term(jnp.stack([eye[0], -eye[0]]))) == pytest.approx(-1.0)


def test_pairwise_cosines_of_a_zero_gradient_are_zero_with_finite_derivatives():
  g = jnp.stack([jnp.zeros((2, 3)), jnp.ones((2, 3))])
  assert np.all(np.asarray(gradients.pairwise_cosines(g)) == 0)
  d = jax.grad(lambda g: jnp.sum(gradients.pairwise_cosines(g)))(g)
  assert np.isfinite(np.asarray(d)).all()


# -- the training-mode input gradients and the losses on a model --------------------------------


def test_member_loss_gradients_equal_each_members_own_gradient():
  _, members, variables, x, y = setup('baseline')

  def member_logits(xs):
    h, _ = members.features(variables, xs, train=True, per_member_inputs=True)
    return members.heads(variables['params'], h), None

  g, member_ce, _, _ = gradients.member_loss_gradients(member_logits, x, y, 3)
  for k in range(3):
    one = jax.tree.map(lambda a, k=k: a[k : k + 1], variables)

    def ce_k(x, one=one):
      h, _ = members.features(one, x, train=True)
      return gradients.cross_entropy(members.heads(one['params'], h)[0], y).mean()

    np.testing.assert_allclose(g[k], jax.grad(ce_k)(x), rtol=1e-5, atol=1e-8)
    assert float(member_ce[k]) == pytest.approx(float(ce_k(x)), rel=1e-6)


@pytest.mark.parametrize('name', ['gal', 'trs'])
@pytest.mark.parametrize('k', [2, 5])
def test_gal_and_trs_run_at_any_k_and_their_terms_match_numpy(name, k):
  config, members, variables, x, y = setup(name, k=k, strategy='vmap', trs={'pgd_steps': 1})
  (value, aux), grads = jax.value_and_grad(
    lambda p: loss_of(config, members, dict(variables, params=p), x, y), has_aux=True
  )(variables['params'])
  assert np.isfinite(float(value))
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(grads))
  assert any(np.abs(np.asarray(v)).max() > 0 for v in jax.tree.leaves(grads))

  def member_logits(xs):
    h, _ = members.features(variables, xs, train=True, per_member_inputs=True)
    return members.heads(variables['params'], h), None

  g = np.asarray(gradients.member_loss_gradients(member_logits, x, y, k)[0])
  pairs = np_pair_cosines(g)
  terms = aux['terms']
  if name == 'gal':
    ref = np.mean(np.log(sum(np.exp(c) for c in pairs.values()) + 1e-20))
    assert float(terms['gradient_alignment']) == pytest.approx(ref, rel=1e-4)
    assert float(value) == pytest.approx(float(terms['ce'] + 0.5 / k * ref), rel=1e-5)
  else:
    ref = np.mean([np.abs(c).mean() for c in pairs.values()])
    assert float(terms['gradient_cosine']) == pytest.approx(ref, rel=1e-4)
    expected = terms['ce'] + 40 / k * terms['gradient_cosine'] + 2.5 / k * terms['smoothness']
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    assert float(aux['stats']['pgd_eps']) == pytest.approx(0.02)  # halfway from 0.01 to 0.03


def directional_derivative_check(name, k=3, **groups):
  """d loss / d params along a random direction, autodiff vs central differences (float64)."""
  config, members, variables, x, y = setup(name, k=k, **groups)
  with jax.enable_x64(True):
    variables = pytrees.cast_floating(variables, jnp.float64)
    x = jnp.asarray(x, jnp.float64)
    keys = jax.random.split(jax.random.key(3), len(jax.tree.leaves(variables['params'])))
    leaves, treedef = jax.tree.flatten(variables['params'])
    v = treedef.unflatten(
      [jax.random.normal(kk, a.shape, jnp.float64) for kk, a in zip(keys, leaves)]
    )

    def f(params):
      return loss_of(config, members, dict(variables, params=params), x, y)[0]

    grad = jax.grad(f)(variables['params'])
    analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(v)))
    h = 1e-5
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * h * d, variables['params'], v)
    numeric = (float(f(shifted(1))) - float(f(shifted(-1)))) / (2 * h)
  return analytic, numeric


@pytest.mark.parametrize(
  'name, groups',
  [
    ('deg', {'deg': {'beta': 1.0}}),  # the gradient term weighted up to be seen
    ('gal', {'gal': {'coefficient': 5.0}}),
    ('trs', {'trs': {'pgd_steps': 2}}),
    ('adp', {}),
    ('graddiv', {'k': 2}),
    ('graddiv', {'k': 5}),  # the dpp variant's term: against NumPy below
  ],
  ids=['deg', 'gal', 'trs', 'adp', 'graddiv_k2', 'graddiv_k5'],
)
def test_second_order_losses_match_finite_differences_in_float64(name, groups):
  analytic, numeric = directional_derivative_check(name, **groups)
  assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


# -- each method in the real training step --------------------------------------------------------
# (The methods' claimed effects, e.g. DEG lowering the gradient cosine: benchmarks/claims.py.
# The training loop around the step, its metrics lines and checkpoints: test_train.py on
# LPD, whose masks take the same path through the ResNet as PDD's.)

# The terms each method logs (metrics.jsonl: train_loss_<term>).
TERMS = {
  'baseline': {'ce'},
  'deg': {'ce', 'gradient_cosine'},
  'adp': {'ce', 'entropy', 'log_det'},
  'gal': {'ce', 'gradient_alignment'},
  'trs': {'ce', 'gradient_cosine', 'smoothness'},
  'graddiv': {'ce', 'gradient_concentration'},
  'dverge': {'distilled_ce'},
}


@pytest.mark.parametrize(
  'name, groups',
  [
    ('baseline', {}),
    ('deg', {}),  # with PDD's masks between the features and the head
    ('adp', {}),
    ('gal', {}),
    ('trs', {'trs': {'pgd_steps': 1}}),
    ('graddiv', {}),
    ('dverge', {'dverge': {'steps': 2}}),  # the layer drawn per epoch: lax.switch
    ('baseline', {'adv_train': {'attack': 'fgsm', 'eps': 0.1, 'mix': 0.5}}),
  ],
  ids=['baseline', 'deg', 'adp', 'gal', 'trs', 'graddiv', 'dverge', 'advt_fgsm'],
)
def test_each_method_lowers_its_loss_in_the_training_step(name, groups):
  """`train.make_train_step` (the optimizer, each member's BatchNorm state, the method's
  terms) with the method's loss on the tiny network: 15 steps on one batch lower the loss,
  the logged terms are the method's, and every parameter stays finite."""
  config, members, _, x, y = setup(name, batch=8, strategy='vmap', **groups)
  config.learning_rate = 0.05
  tx, _ = train.make_optimizer(config, 15)
  state = train.init_state(config, members, tx, x.shape[1:])
  step = train.make_train_step(config, members, tx, 15)
  losses = []
  for i in range(15):
    state, metrics = step(state, x, y, jax.random.key(i))
    losses.append(float(metrics['loss']))
  assert set(metrics['terms']) == TERMS[name]
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(state.variables))
  assert int(state.step) == 15
  adversarial = 'adv_train' in groups
  assert methods.label(config) == (
    'AdvT_FGSM + Baseline' if adversarial else methods.display_name(name)
  )


# -- GradDiv and DVERGE against direct re-computations ------------------------------------------


@pytest.mark.parametrize('k', [2, 5])
def test_graddiv_concentrations_equal_numpy(k):
  """The mean resultant length and the DPP term of GradDiv on fixed gradients, by NumPy."""
  g = np.random.default_rng(k).normal(size=(k, 5, 3, 3, 2)).astype(np.float32)
  flat = g.reshape(k, g.shape[1], -1).astype(np.float64)
  u = flat / np.linalg.norm(flat, axis=-1, keepdims=True)
  r = np.linalg.norm(u.mean(axis=0), axis=-1)
  dets = [np.linalg.slogdet(u[:, b] @ u[:, b].T + 1e-6 * np.eye(k))[1] for b in range(u.shape[1])]
  np.testing.assert_allclose(graddiv.mean_resultant_length(jnp.asarray(g)), r, rtol=1e-5)
  assert float(graddiv.concentration(jnp.asarray(g), 'dpp')) == pytest.approx(
    -np.mean(dets), rel=1e-4
  )
  # identical directions concentrate fully; a vector and its opposite cancel
  same = np.broadcast_to(g[:1], g.shape)
  np.testing.assert_allclose(graddiv.mean_resultant_length(jnp.asarray(same)), 1.0, rtol=1e-6)
  pair = np.stack([g[0], -g[0]])
  np.testing.assert_allclose(graddiv.mean_resultant_length(jnp.asarray(pair)), 0.0, atol=1e-7)


def dverge_reference(model, variables, x, x_target, y, layer, c):
  """DVERGE as the official code loops it, member by member (float64 arrays): each member's
  `Linf_distillation` step by step, then l_i = sum_{j != i} CE(member i (x~_j), y)."""
  k = jax.tree.leaves(variables)[0].shape[0]
  member = [jax.tree.map(lambda a, i=i: a[i], variables) for i in range(k)]

  def feature(v, z):
    out, _ = model.apply(v, z, True, layer, method='layer_features', mutable=['batch_stats'])
    return out

  distilled = []
  for v in member:
    target = feature(v, x_target)
    x_adv, g = np.clip(np.asarray(x), 0, 1), np.zeros(x.shape)
    for _ in range(c.steps):
      mse = lambda z, v=v, t=target: jnp.mean((feature(v, z) - t) ** 2)
      grad = np.asarray(jax.grad(mse)(x_adv))
      l1 = np.abs(grad).reshape(len(grad), -1).sum(axis=1).reshape(-1, 1, 1, 1)
      g = g + grad / np.maximum(l1, 1e-12)
      x_adv = x_adv - c.step_size * np.sign(g)
      x_adv = np.clip(np.clip(x_adv, x - c.eps, x + c.eps), 0, 1)
    distilled.append(x_adv)
  losses = []
  for i, v in enumerate(member):
    total = 0.0
    for j in range(k):
      if j != i:
        (logits, _), _ = model.apply(v, distilled[j], train=True, mutable=['batch_stats'])
        total += float(-np.mean(np.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)))
    losses.append(total)
  return np.stack(distilled), np.mean(losses) / (k - 1)


@pytest.mark.parametrize('layer', [1, 2])
def test_dverge_distillation_and_loss_equal_a_member_by_member_float64_loop(layer):
  """DVERGE's K distillations in one program and its loss equal the reference's loop over
  members in float64, for fixed keys; with the layer drawn per epoch (lax.switch) the loss
  is the fixed layer's at the layer the seed draws for that epoch."""
  config, members, variables, x, y = setup('dverge', k=3, dverge={'layer': layer, 'steps': 4})
  c = config.dverge
  with jax.enable_x64(True):
    variables = pytrees.cast_floating(variables, jnp.float64)
    x = jnp.asarray(x, jnp.float64)
    target_key = jax.random.split(jax.random.key(2), 3)[0]
    perm = np.asarray(dverge.target_permutation(target_key, x.shape[0]))
    assert (perm != np.arange(len(perm))).all() and sorted(perm) == list(range(len(perm)))
    x_target = x[perm]
    ref_images, ref_loss = dverge_reference(members.model, variables, x, x_target, y, layer, c)
    images = dverge.distill(members, variables, x, x_target, layer, None, c)
    np.testing.assert_allclose(images, ref_images, rtol=0, atol=1e-12)
    assert np.abs(np.asarray(images) - np.asarray(x)).max() <= c.eps + 1e-12
    value, aux = loss_of(config, members, variables, x, y)
    assert float(value) == pytest.approx(ref_loss, rel=1e-10)
    assert float(aux['stats']['distillation_layer']) == layer
    # the per-epoch draw: seed -> layer, the switch's loss equal to that layer fixed
    drawn_config = config.copy_and_resolve_references()
    drawn_config.dverge.layer = 0
    epoch = next(e for e in range(50) if int(dverge.distillation_layer(0, e, 2)) == layer)
    drawn_value, drawn_aux = loss_of(drawn_config, members, variables, x, y, epoch=epoch)
    assert float(drawn_aux['stats']['distillation_layer']) == layer
    assert float(drawn_value) == pytest.approx(float(value), rel=1e-10)


def test_dverge_layers_are_drawn_from_the_seed_per_epoch():
  """Each epoch's layer is uniform on 1..L from (seed, epoch) alone: the same seed draws the
  same sequence (a resumed run, another process), another seed another one, every layer is
  met, and `methods.config_for_epoch` fixes exactly that layer in the step it compiles."""
  draws = lambda seed: [int(dverge.distillation_layer(seed, e, 18)) for e in range(300)]
  first, again, other = draws(0), draws(0), draws(1)
  assert first == again and first != other
  assert set(first) == set(range(1, 19))
  counts = np.bincount(first, minlength=19)[1:]
  assert counts.min() >= 5  # 300 draws of 18 values: about 17 each
  config = config_lib.base_config()
  config.method = 'dverge'
  for epoch in (0, 7):
    fixed, settings = methods.config_for_epoch(config, epoch)
    assert settings == {'dverge.layer': first[epoch]} and fixed.dverge.layer == first[epoch]
    assert config.dverge.layer == 0  # the run's own config keeps drawing
  config.dverge.layer = 5
  assert methods.config_for_epoch(config, 3) == (config, {})


# -- from the command line --------------------------------------------------------------------


# Two narrow members: compile time is the cost here.
FAMILY_CLI = ['--config=configs/quickstart.py', '--config.width=2', '--config.num_members=2']


def test_dverge_resumes_with_the_seeds_layers_from_the_command_line(tmp_path):
  """The quickstart with DVERGE: epoch 1, then a second process that resumes from its
  checkpoint for epoch 2; each epoch distils at the layer its seed draws for it. (GradDiv's
  and every method's command line is the same generic path, checked on LPD in test_train.py
  and test_faults.py; their terms in test_each_method_lowers_its_loss_in_the_training_step.)"""
  from conftest import run_cli

  workdir = str(tmp_path / 'dverge')
  # seed 45 draws layers 1 and 4 for epochs 1 and 2: short programs to compile
  args = [*FAMILY_CLI, '--config.method=dverge', '--config.seed=45', f'--workdir={workdir}']
  first = run_cli('train.py', *args, '--config.num_epochs=1')
  assert first.returncode == 0, first.stderr
  assert 'the training step of epoch 1 (dverge.layer = 1;' in first.stdout
  second = run_cli('train.py', *args, '--config.num_epochs=2', '--config.continue_training=True')
  assert second.returncode == 0, second.stderr
  assert 'resuming from the checkpoint of epoch 1' in second.stdout
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  drawn = [int(dverge.distillation_layer(45, e, 18)) for e in range(2)]
  assert [r['train_distillation_layer'] for r in records] == drawn == [1, 4]


def test_a_run_starts_from_another_workdirs_checkpoint_or_says_what_differs(trained_workdir):
  """config.init_from (DVERGE's start from Baseline): the source's newest verified variables
  and its identity; another ensemble is one ConfigError naming the fields."""
  from conftest import tiny_config

  from lpd_jax import load, loading
  from lpd_jax.errors import ConfigError

  config = tiny_config(method='dverge', init_from=trained_workdir)
  source = load(trained_workdir)
  like = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), source.variables)
  variables, identity = loading.starting_point(config, 10, like)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(source.variables)):
    np.testing.assert_array_equal(a, b)
  assert identity == dict(source.meta['checkpoint'], workdir=trained_workdir, method='lpd')
  with pytest.raises(
    ConfigError,
    match=r'holds another ensemble \(num_members: 3 there, 2 here; '
    r'width: 4 there, 2 here\)',
  ):
    loading.starting_point(tiny_config(num_members=2, width=2, init_from=trained_workdir), 10, like)
