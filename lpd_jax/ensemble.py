"""K members as one pytree with a leading K axis on every leaf.

* `map_members` is the one place that decides how the stacked axis executes:
    'unroll': index the stacked leaves member by member inside one jit (a loop
              unrolled at trace time). Fastest on CPU (benchmarks/member_strategy.py).
    'vmap':   `jax.vmap` over the K axis (one batched program).
    'map':    `jax.lax.map` over the K axis (a sequential loop in XLA).
    'auto':   `AUTO_STRATEGY[backend]`: 'unroll' on CPU (measured), 'vmap' on accelerators.
* `Members` applies the member network to stacked variables: features, heads, logits,
  in training or evaluation mode. Training losses and `Ensemble` both go through it.
* `Ensemble` is a trained ensemble in evaluation mode, with its inference mode.
* `log_mean_softmax` is eq. 1 (the ensemble output), written once.
* `create(config, num_classes)` is the one model factory (`models.REGISTRY`).
"""

import dataclasses
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp

from lpd_jax import models
from lpd_jax.dropout import KeepRates

MEMBER_STRATEGIES = ('auto', 'unroll', 'vmap', 'map')
INFERENCE_MODES = ('raw', 'expected')


# What 'auto' means per backend, and the measurement behind it (one table, one place).
AUTO_STRATEGY = {
  # benchmarks/results/member_strategy_cpu.json (2 CPU cores, K = 3, batch 64, 32x32x3,
  # LPD training step): unroll 272 ms vs vmap 3547 ms vs map 5132 ms at width 8, and
  # 562 / 7402 / 20157 ms at width 16: unroll is 13x faster than vmap.
  'cpu': 'unroll',
  # Not measured yet (no accelerator has been lent to this project): vmap keeps one
  # batched program, the usual choice on accelerators. Run benchmarks/member_strategy.py
  # there and set it from the numbers.
  'gpu': 'vmap',
  'tpu': 'vmap',
}


def resolve_strategy(strategy):
  """'auto' -> AUTO_STRATEGY of the default backend ('vmap' for a backend not in it)."""
  if strategy != 'auto':
    return strategy
  return AUTO_STRATEGY.get(jax.default_backend(), 'vmap')


def map_members(fn, stacked, strategy='auto'):
  """Applies fn to each member's slice of `stacked` (leading axis K); stacks outputs.

  Args:
    fn: member pytree -> output pytree.
    stacked: pytree whose leaves all have leading axis K.
    strategy: 'unroll' | 'vmap' | 'map' | 'auto'.

  Returns:
    fn's outputs stacked along a new leading axis K.
  """
  strategy = resolve_strategy(strategy)
  if strategy == 'vmap':
    return jax.vmap(fn)(stacked)
  if strategy == 'map':
    return jax.lax.map(fn, stacked)
  if strategy == 'unroll':
    num = jax.tree.leaves(stacked)[0].shape[0]
    outs = [fn(jax.tree.map(lambda a, k=k: a[k], stacked)) for k in range(num)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  raise ValueError(f'unknown member strategy {strategy!r}')


def log_mean_softmax(member_logits):
  """Eq. 1 in log space: member logits [K, B, C] -> log (1/K sum_k softmax_k) [B, C]."""
  log_probs = jax.nn.log_softmax(member_logits, axis=-1)
  return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(log_probs.shape[0])


@dataclasses.dataclass(frozen=True)
class Members:
  """How to apply one member network to K stacked members (hashable: static under jit).

  Attributes:
    model: the member network (a `models.REGISTRY` module with `features` / `classify`).
    strategy: member execution strategy (see `map_members`).
  """

  model: Any
  strategy: str = 'auto'

  def with_strategy(self, strategy):
    """These members run with `strategy`, their model's convolution the one that goes with
    it: the models' own (`models.conv`) when unrolled, lax's when vmapped or mapped."""
    unrolled = resolve_strategy(strategy) == 'unroll'
    return Members(self.model.clone(conv_impl='lpd_jax' if unrolled else 'lax'), strategy)

  def init(self, key, num_members, input_shape):
    """Independent inits of K members -> {'params', 'batch_stats'} stacked [K, ...]."""
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    keys = jax.random.split(key, num_members)
    # One member's init compiled once and called K times: the same values as a vmapped
    # init, in about 60% of its compile time (measured on CPU, width 8).
    init_one = jax.jit(self.model.init)
    members = [init_one(keys[k], dummy) for k in range(num_members)]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)

  def features(self, variables, x, *, train=False, per_member_inputs=False):
    """x [B, H, W, c] -> (h [K, B, D], new batch_stats [K, ...] or None in eval mode).

    In training mode BatchNorm uses (and updates) each member's batch statistics. With
    `per_member_inputs`, x is [K, B, H, W, c] and member k sees x[k] only: the gradient of
    a sum of member losses w.r.t. x is then each member's own input gradient, in one
    backward pass (`gradients.member_loss_gradients`).
    """

    def one(vx):
      v, inputs = vx
      if not train:
        return self.model.apply(v, inputs, train=False, method='features'), None
      h, updates = self.model.apply(
        v, inputs, train=True, method='features', mutable=['batch_stats']
      )
      return h, updates['batch_stats']

    if per_member_inputs:
      return map_members(one, (variables, x), self.strategy)
    return map_members(lambda v: one((v, x)), variables, self.strategy)

  def layer_features(self, variables, xs, layer, *, train=True):
    """xs [K, B, H, W, c] (member k sees xs[k]) -> each member's pre-ReLU activation at
    `layer` (a Python int; the model's `layer_features` numbering, DVERGE's), [K, B, ...].

    In training mode BatchNorm normalises with each member's statistics of its own batch
    and the updated running statistics are dropped (DVERGE's distillation only reads).
    """

    def one(vx):
      v, inputs = vx
      if not train:
        return self.model.apply(v, inputs, False, layer, method='layer_features')
      out, _ = self.model.apply(
        v, inputs, True, layer, method='layer_features', mutable=['batch_stats']
      )
      return out

    return map_members(one, (variables, xs), self.strategy)

  def heads(self, params, h):
    """h [K, B, D] -> logits [K, B, C], member k's head on member k's features."""
    return map_members(
      lambda m: self.model.apply({'params': m[0]}, m[1], method='classify'),
      (params, h),
      self.strategy,
    )

  def logits(self, variables, x):
    """x [B, H, W, c] -> logits [K, B, C] in evaluation mode, raw features (no mask)."""
    return map_members(lambda v: self.model.apply(v, x)[0], variables, self.strategy)


def create(config, num_classes):
  """The one model factory: config.model, width, dtype and member_strategy -> Members.

  Unrolled members use the models' own convolution (fast input gradients in XLA:CPU loops:
  `models.conv`), vmapped or mapped ones lax's (`models.common.CONVOLUTIONS`)."""
  model_cls = models.REGISTRY[config.model]
  model = model_cls(num_classes=num_classes, width=config.width, dtype=jnp.dtype(config.dtype))
  return Members(model).with_strategy(config.member_strategy)


class _Attached:
  """Carries a value beside a pytree's static data without entering jit cache keys.

  All instances compare equal, so two Ensembles that differ only in their config
  (a surrogate and its target, two runs of one architecture) share every compile.
  """

  def __init__(self, value):
    self.value = value.value if isinstance(value, _Attached) else value

  def __eq__(self, other):
    return isinstance(other, _Attached)

  def __hash__(self):
    return 0


@flax.struct.dataclass
class Ensemble:
  """A trained ensemble in evaluation mode (BatchNorm running statistics, no sampled masks).

  A pytree: `variables` are leaves, so an Ensemble can be passed into jitted functions
  (attacks, probes) without baking the parameters in as constants.

  Inference modes (docs/methods.md, "Evaluation of dropout-trained members"):
    'raw': each head sees its raw features h (the authors' convention, the default);
    'expected': each head sees h * p(h), p the method's keep rates computed over all
      members' features of this input as in training (the dropout weight-scaling rule):
      the scale the head was trained on. Equal to 'raw' for a method without keep rates
      (Baseline) and for one trained with 1/p rescaling.

  Attributes:
    variables: {'params': ..., 'batch_stats': ...}, every leaf [K, ...].
    members: `Members` (the network and how the K axis executes).
    inference: 'raw' | 'expected'.
    keep_rates: the method's `KeepRates` for 'expected' inference, or None.
    run_config: the FrozenConfigDict the ensemble was trained with, read as `.config`;
      it does not enter jit cache keys.
    run_meta: what `lpd_jax.load` knows of the checkpoint ({'workdir', 'epoch',
      'num_classes', 'input_shape'}), read as `.meta`; outside jit cache keys too.
  """

  variables: Any
  members: Members = flax.struct.field(pytree_node=False)
  inference: str = flax.struct.field(pytree_node=False, default='raw')
  keep_rates: Optional[KeepRates] = flax.struct.field(pytree_node=False, default=None)
  run_config: Any = flax.struct.field(pytree_node=False, default=None)
  run_meta: Any = flax.struct.field(pytree_node=False, default=None)

  def __post_init__(self):
    if self.inference not in INFERENCE_MODES:
      raise ValueError(f'inference must be one of {INFERENCE_MODES}, got {self.inference!r}')
    # The config describes the run but never changes the computation, so it is
    # attached outside the jit cache key.
    object.__setattr__(self, 'run_config', _Attached(self.run_config))
    object.__setattr__(self, 'run_meta', _Attached(self.run_meta or {}))

  @property
  def config(self):
    """The FrozenConfigDict the ensemble was trained with (None if built by hand)."""
    return self.run_config.value

  @property
  def meta(self):
    """{'workdir', 'epoch', 'num_classes', 'input_shape'} of a loaded ensemble, else {}."""
    return self.run_meta.value

  @property
  def num_members(self) -> int:
    return jax.tree.leaves(self.variables)[0].shape[0]

  def with_inference(self, mode: str) -> 'Ensemble':
    """The same ensemble in inference mode `mode` ('raw' or 'expected')."""
    return self.replace(inference=mode)

  def expected_features(self, x):
    """x [B, H, W, c] -> (h [K, B, D], p [K, B, D]): features and their keep rates.

    p is held constant under differentiation: the keep rates are piecewise constant
    in h (binned statistics), so their derivative is 0 almost everywhere anyway.
    """
    h, _ = self.members.features(self.variables, x)
    if self.keep_rates is None:
      return h, jnp.ones_like(h)
    return h, jax.lax.stop_gradient(self.keep_rates(jax.lax.stop_gradient(h)))

  def member_logits(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, c] in [0, 1] -> logits [K, B, C] in this ensemble's inference mode."""
    if self.inference == 'raw' or self.keep_rates is None:
      return self.members.logits(self.variables, x)
    h, p = self.expected_features(x)
    return self.members.heads(self.variables['params'], h * p)

  def log_predict(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, c] -> log of the mean member softmax [B, C] (eq. 1): attacks' model_fn."""
    return log_mean_softmax(self.member_logits(x))

  def sampled_log_predict(self, x: jax.Array, key: jax.Array) -> jax.Array:
    """Eq. 1 of the stochastic model (dropout left on at test time): x [B, H, W, c], key ->
    [B, C]. Each head sees h * mask, mask ~ Bernoulli(p(h)) per (k, b, j) with the method's
    keep rates over all members as in training (0/1 masks), BatchNorm running statistics.
    Without keep rates it is `log_predict`. Attack it with `attacks.eot`."""
    if self.keep_rates is None:
      return self.log_predict(x)
    h, p = self.expected_features(x)
    mask = jax.random.bernoulli(key, p).astype(h.dtype)
    return log_mean_softmax(self.members.heads(self.variables['params'], h * mask))

  def predict(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, c] -> mean member softmax probabilities [B, C] (eq. 1)."""
    return jnp.exp(self.log_predict(x))
