"""K members as one pytree with a leading K axis on every leaf.

`map_members` is the one place that decides how the stacked axis executes:
  * 'unroll': index the stacked leaves member by member inside one jit (a loop
    unrolled at trace time). Fastest on CPU (benchmarks/member_strategy.py).
  * 'vmap':   `jax.vmap` over the K axis (one batched program).
  * 'map':    `jax.lax.map` over the K axis (a sequential loop in XLA).
  * 'auto':   'unroll' on CPU, 'vmap' on accelerators.
Callers never see the choice: they pass a per-member function and stacked inputs.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from lpd_jax.models import ResNet18


def resolve_strategy(strategy):
  """'auto' -> the strategy measured fastest on the default backend."""
  if strategy != 'auto':
    return strategy
  return 'unroll' if jax.default_backend() == 'cpu' else 'vmap'


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


def init_variables(model, key, num_members, input_shape):
  """Independent inits of K members -> {'params', 'batch_stats'} stacked [K, ...]."""
  dummy = jnp.zeros((1, *input_shape), jnp.float32)
  keys = jax.random.split(key, num_members)
  return jax.jit(jax.vmap(lambda k: model.init(k, dummy)))(keys)


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
  """A trained ensemble in evaluation mode (BatchNorm running statistics, no dropout).

  A pytree: `variables` are leaves, so an Ensemble can be passed into jitted
  functions (attacks, probes) without baking the parameters in as constants.

  Attributes:
    variables: {'params': ..., 'batch_stats': ...}, every leaf [K, ...].
    model: the member network (a ResNet18 module).
    strategy: member execution strategy (see `map_members`).
    run_config: the FrozenConfigDict the ensemble was trained with, read as `.config`;
      it does not enter jit cache keys.
  """

  variables: Any
  model: ResNet18 = flax.struct.field(pytree_node=False)
  strategy: str = flax.struct.field(pytree_node=False, default='auto')
  run_config: Any = flax.struct.field(pytree_node=False, default=None)

  def __post_init__(self):
    # The config describes the run but never changes the computation (model and
    # strategy do), so it is attached outside the jit cache key.
    object.__setattr__(self, 'run_config', _Attached(self.run_config))

  @property
  def config(self):
    """The FrozenConfigDict the ensemble was trained with (None if built by hand)."""
    return self.run_config.value

  @property
  def num_members(self):
    return jax.tree.leaves(self.variables)[0].shape[0]

  def member_logits(self, x):
    """x [B, H, W, c] in [0, 1] -> logits [K, B, C]."""
    return map_members(lambda v: self.model.apply(v, x)[0], self.variables, self.strategy)

  def log_predict(self, x):
    """x [B, H, W, c] -> log of the mean member softmax [B, C] (eq. 1): attacks' model_fn."""
    log_probs = jax.nn.log_softmax(self.member_logits(x), axis=-1)
    return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(log_probs.shape[0])

  def predict(self, x):
    """x [B, H, W, c] -> mean member softmax probabilities [B, C] (eq. 1)."""
    return jnp.exp(self.log_predict(x))
