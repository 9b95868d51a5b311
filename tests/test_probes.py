"""Tests of lpd_jax.probes against NumPy references, finite differences and closed forms."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpd_jax import probes, pytrees

K, C, HIDDEN, SHAPE = 3, 3, 8, (4, 4, 1)
D = math.prod(SHAPE)
TRACES = []  # one entry per trace (or eager call) of TinyEnsemble.member_logits


@flax.struct.dataclass
class TinyEnsemble:
  """K stacked tanh MLPs [N, 4, 4, 1] -> [N, 3]; the probes' view of an ensemble."""

  variables: dict

  def member_logits(self, x):
    TRACES.append(None)

    def member(v):
      h = jnp.tanh(x.reshape(x.shape[0], -1) @ v['w1'] + v['b1'])
      return h @ v['w2'] + v['b2']

    return jax.vmap(member)(self.variables)


def make_ensemble(seed=0, confident_bias=0.0):
  """Random TinyEnsemble; member 0 gets bias `confident_bias` on class 0."""
  rng = np.random.default_rng(seed)
  v = {
    'w1': rng.normal(size=(K, D, HIDDEN)),
    'b1': rng.normal(size=(K, HIDDEN)) * 0.1,
    'w2': rng.normal(size=(K, HIDDEN, C)),
    'b2': rng.normal(size=(K, C)) * 0.1,
  }
  v['b2'][0, 0] += confident_bias
  return TinyEnsemble({name: jnp.asarray(a, jnp.float32) for name, a in v.items()})


def make_data(n, seed=1):
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(n, *SHAPE)).astype(np.float32), rng.integers(0, C, n)


def numpy_input_gradients(ensemble, x, y):
  """Analytic float64 CE input gradients of TinyEnsemble, [K, N, *SHAPE]."""
  v = {name: np.asarray(a, np.float64) for name, a in ensemble.variables.items()}
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  out = []
  for k in range(K):
    h = np.tanh(x @ v['w1'][k] + v['b1'][k])
    z = h @ v['w2'][k] + v['b2'][k]
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(C, dtype=bool)[y]
    # dCE/dz_y = p_y - 1 = -sum_{j != y} p_j, written so that it keeps its tiny value.
    delta = np.where(onehot, -np.where(onehot, 0, p).sum(-1, keepdims=True), p)
    out.append(((delta @ v['w2'][k].T) * (1 - h**2)) @ v['w1'][k].T)
  return np.stack(out).reshape(K, len(x), *SHAPE)


def numpy_cosine(g):
  g = g.reshape(g.shape[0], g.shape[1], -1).astype(np.float64)
  out = np.zeros(g.shape[1])
  for n in range(g.shape[1]):
    for i in range(g.shape[0]):
      for j in range(i + 1, g.shape[0]):
        a, b = g[i, n], g[j, n]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        out[n] += 0.0 if na == 0 or nb == 0 else a @ b / (na * nb)
  return out


def numpy_norm(g):
  g = g.reshape(g.shape[0], g.shape[1], -1).astype(np.float64)
  return np.linalg.norm(g, axis=-1).sum(axis=0)  # per-sample sum of the K member norms


def numpy_entropy(correct):
  k, n = correct.shape
  total = 0.0
  for i in range(n):
    num_right = int(correct[:, i].sum())
    total += min(num_right, k - num_right) / (k - math.ceil(k / 2))
  return total / n


# ---------------------------------------------------------------- ambiguity entropy (eq. 7)


@pytest.mark.parametrize('k', [3, 4, 5])
def test_ambiguity_entropy_matches_numpy(k):
  correct = np.random.default_rng(k).random((k, 50)) < 0.6
  e = jax.jit(probes.ambiguity_entropy)(correct)
  np.testing.assert_allclose(e, numpy_entropy(correct), rtol=1e-6)
  np.testing.assert_allclose(probes.ambiguity_entropy(correct.astype(np.int32)), e)


def test_ambiguity_entropy_extremes():
  agree = np.array([[1, 0, 1, 0]] * 3)  # all right on samples 0, 2; all wrong on 1, 3
  assert probes.ambiguity_entropy(agree) == 0.0
  split = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])  # l = 1, 2, 1 of K = 3
  np.testing.assert_allclose(probes.ambiguity_entropy(split), 1.0)
  assert probes.ambiguity_entropy(np.array([[1, 0, 1]])) == 0.0  # K = 1: defined as 0


# ------------------------------------------------------------- gradient cosine and norm


@pytest.mark.parametrize('k', [1, 3, 5])
def test_gradient_probes_match_numpy(k):
  g = np.random.default_rng(k).normal(size=(k, 6, 2, 3)).astype(np.float32)
  g[0, 1] = 0.0  # a zero gradient: its pairs count 0
  cos = jax.jit(probes.gradient_cosine)(g)
  np.testing.assert_allclose(cos, numpy_cosine(g), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(probes.gradient_norm)(g), numpy_norm(g), rtol=1e-5)


def test_gradient_cosine_closed_forms():
  g = np.random.default_rng(0).normal(size=(1, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(probes.gradient_cosine(np.concatenate([g, g])), 1.0, rtol=1e-6)
  np.testing.assert_allclose(probes.gradient_cosine(np.concatenate([g, -g])), -1.0, rtol=1e-6)
  zero = probes.gradient_cosine(np.concatenate([g, 0 * g]))
  np.testing.assert_array_equal(zero, 0.0)  # not NaN
  np.testing.assert_array_equal(probes.gradient_norm(np.zeros((2, 4, 5), np.float32)), 0.0)


def test_gradient_probes_tiny_float32_values_do_not_underflow():
  g = np.random.default_rng(0).normal(size=(3, 4, 10))
  tiny = (g * 1e-30).astype(np.float32)  # squares (1e-60) underflow float32
  np.testing.assert_allclose(probes.gradient_norm(tiny), numpy_norm(g) * 1e-30, rtol=1e-5)
  np.testing.assert_allclose(probes.gradient_cosine(tiny), numpy_cosine(g), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- input gradients


def test_input_gradients_match_finite_differences():
  ensemble, (x, y) = make_ensemble(), make_data(2)
  g = probes.input_gradients(ensemble, x, y, float64=True)
  assert g.shape == (K, 2, *SHAPE) and g.dtype == jnp.float64

  with jax.enable_x64(True):
    ens64 = pytrees.cast_floating(ensemble, jnp.float64)
    x = x.astype(np.float64).reshape(2, D)
    h = 1e-5
    steps = h * np.eye(D)  # perturb each input coordinate of every sample
    xs = np.concatenate([x[:, None] + steps, x[:, None] - steps]).reshape(-1, *SHAPE)
    ys = np.tile(np.repeat(y, D), 2)
    logp = jax.nn.log_softmax(ens64.member_logits(jnp.asarray(xs)), axis=-1)
    loss = -np.take_along_axis(np.asarray(logp), ys[None, :, None], -1)[..., 0]
    plus, minus = loss.reshape(K, 2, 2, D)[:, 0], loss.reshape(K, 2, 2, D)[:, 1]
    fd = ((plus - minus) / (2 * h)).reshape(K, 2, *SHAPE)
  np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(g, numpy_input_gradients(ensemble, *make_data(2)), rtol=1e-9)
  # float32 path: same values to float32 accuracy, and jittable with the ensemble as input.
  g32 = jax.jit(probes.input_gradients)(ensemble, *make_data(2))
  assert g32.dtype == jnp.float32
  np.testing.assert_allclose(g32, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('bias', [30.0, 120.0])
def test_input_gradients_resolve_tiny_gradients(bias):
  # Member 0 is sure of class 0. At bias 30, 1 - p_0 ~ e^-30 is below float32 epsilon:
  # a CE gradient computed as p_0 - 1 would lose the class-0 term, ours keeps it. At bias
  # 120, p_j ~ e^-120 underflows float32 (the float32 gradient is 0) but not float64.
  ensemble = make_ensemble(confident_bias=bias)
  x, _ = make_data(4)
  y = np.zeros(4, np.int64)
  exact = numpy_input_gradients(ensemble, x, y)[0]
  assert 0 < np.abs(exact).max() < 1e-10
  g32 = np.asarray(probes.input_gradients(ensemble, x, y))[0]
  g64 = np.asarray(probes.input_gradients(ensemble, x, y, float64=True))[0]
  np.testing.assert_allclose(g64, exact, rtol=1e-9, atol=0)
  if bias == 120.0:
    np.testing.assert_array_equal(g32, 0.0)
  else:
    np.testing.assert_allclose(g32, exact, rtol=1e-3, atol=1e-4 * np.abs(exact).max())


def test_input_gradients_float64_needs_variables():
  class NoVariables:
    def member_logits(self, x):
      return jnp.zeros((K, x.shape[0], C))

  with pytest.raises(TypeError, match='variables'):
    probes.input_gradients(NoVariables(), *make_data(2), float64=True)


# ---------------------------------------------------------------------- probe_quantiles


def test_probe_quantiles_matches_unbatched():
  ensemble, (x, y) = make_ensemble(), make_data(10)
  qs = (0.1, 0.5, 0.9)
  TRACES.clear()
  out = probes.probe_quantiles(ensemble, x, y, batch_size=4, quantiles=qs)  # 4 + 4 + 2
  assert len(TRACES) == 1  # the padded last batch reuses the compiled function

  g = probes.input_gradients(ensemble, x, y)
  for name in ('gradient_cosine', 'gradient_norm'):
    fn = getattr(probes, name)
    ref = np.asarray(fn(g))
    assert isinstance(out['per_sample'][name], np.ndarray)
    np.testing.assert_allclose(out['per_sample'][name], ref, rtol=1e-5, atol=1e-6)
    assert set(out[name]) == set(qs)
    for q in qs:
      np.testing.assert_allclose(out[name][q], np.quantile(ref, q), rtol=1e-5, atol=1e-6)


def test_probe_quantiles_float64():
  ensemble = make_ensemble(confident_bias=120.0)
  x, _ = make_data(5)
  y = np.zeros(5, np.int64)
  out = probes.probe_quantiles(ensemble, x, y, batch_size=2, float64=True, progress=True)
  norm = out['per_sample']['gradient_norm']
  assert norm.dtype == np.float64
  np.testing.assert_allclose(norm, numpy_norm(numpy_input_gradients(ensemble, x, y)), rtol=1e-9)
  assert len(out['per_sample']['gradient_cosine']) == 5
