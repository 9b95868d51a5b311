"""Pieces shared by the white-box attacks: the attack loss, norms, keys, and `Attack`, the
registry's record of an attack with its parameters, grids and threat model.

Conventions (docs/methods.md, "Attacks"): `model(x) -> [B, C]` log-probabilities (for an
ensemble, log of the mean member softmax, eq. 1); x is float32 in [0, 1] with any
shape [B, ...]; y int labels [B]. Samples are independent (evaluation mode), so the
gradient of the batch-summed loss is each sample's own input gradient.

The gradient attacks (FGSM, BIM, PGD) also take `model(x) -> [K, B, C]` member logits
(e.g. `Ensemble.member_logits`): their predictions go through eq. 1, and the loss
'member_margin' attacks the members' logits directly, which an ensemble of saturated
members cannot mask (see `member_margin`).
"""

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import progress, sharding
from lpd_jax.ensemble import log_mean_softmax
from lpd_jax.pytrees import (
  PointKeys,
  as_partial,  # noqa: F401  (re-exported: the attacks' model wrapper)
)


def log_probs_of(out):
  """A model's output -> log-probabilities [B, C]: member logits [K, B, C] through eq. 1."""
  return log_mean_softmax(out) if out.ndim == 3 else out


def cross_entropy(log_probs, y):
  """Per-sample attack loss -log p_y [B] from log-probabilities [B, C] (or member logits)."""
  return -jnp.take_along_axis(log_probs_of(log_probs), y[:, None], axis=-1)[:, 0]


def member_margin(member_logits, y):
  """mean_k (max_{j != y} z_kj - z_ky) [B] from member logits [K, B, C]: the strong loss
  for ensembles.

  On the log mean softmax even the margin loss is masked when every member is
  saturated (members' logits x 1e3: the mean softmax is a vote, flat between votes). Each
  member's logit margin keeps its gradient direction at any scale, so sign-gradient
  attacks on it are as strong on the scaled ensemble as on the unscaled one.
  """
  if member_logits.ndim != 3:
    raise ValueError(
      "loss='member_margin' needs member logits [K, B, C] from the model function "
      f'(e.g. Ensemble.member_logits), got an output of shape {member_logits.shape}'
    )
  is_y = jax.nn.one_hot(y, member_logits.shape[-1], dtype=bool)
  z_y = jnp.max(jnp.where(is_y, member_logits, -jnp.inf), axis=-1)
  z_other = jnp.max(jnp.where(is_y, -jnp.inf, member_logits), axis=-1)
  return jnp.mean(z_other - z_y, axis=0)


def margin(log_probs, y):
  """Per-sample margin loss max_{j != y} log p_j - log p_y [B] from log-probabilities [B, C].

  docs/methods.md, "Strong attacks": a difference of log-probabilities, whose gradient
  does not underflow when the model is confident. The cross-entropy's float32 gradient is
  exactly 0 there (1 - p_y rounds to 0), which makes gradient attacks return their input.
  """
  log_probs = log_probs_of(log_probs)
  log_p_y = jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, log_probs.shape[-1], dtype=bool), -jnp.inf, log_probs)
  return jnp.max(others, axis=-1) - log_p_y


LOSSES = {'ce': cross_entropy, 'margin': margin, 'member_margin': member_margin}


def check_loss(loss):
  if loss not in LOSSES:
    raise ValueError(f'loss must be one of {tuple(LOSSES)}, got {loss!r}')


def loss_grad(model, x, y, loss='ce'):
  """d LOSSES[loss](model(x), y) / dx, shaped as x (grad of the batch-summed loss)."""
  return jax.grad(lambda x: LOSSES[loss](model(x), y).sum())(x)


def l2_norm(v):
  """L2 norm over all but the batch axis, shaped [B, 1, ..., 1] to broadcast against v."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def fold_keys(key, data):
  """fold_in(key, data) for one key or for `PointKeys` (folded into each batch key)."""
  if isinstance(key, PointKeys):
    return key.replace(batch_keys=jax.vmap(lambda k: jax.random.fold_in(k, data))(key.batch_keys))
  return jax.random.fold_in(key, data)


def sample_keys(key, n):
  """Key of sample i = fold_in(key, i): sample i gets the same randomness in any batch
  that holds it at index i, whatever the batch size; with `PointKeys` [n], each point's
  fold_in(batch key, index), the key it had in its own batch."""
  if isinstance(key, PointKeys):
    if key.index.shape != (n,):
      raise ValueError(f'PointKeys for {key.index.shape} points given to a batch of {n}')
    return jax.vmap(jax.random.fold_in)(key.batch_keys, key.index)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def batch_keys(key, n):
  """The key of the batch each of n points was drawn in, [n]: `key` for all n, or with
  `PointKeys` each point's batch key. What an attack draws once for a whole batch (AutoAttack's
  Square: one window per query) comes from it: the points of a batch share the draw, and a
  point packed into another batch keeps its own batch's."""
  if isinstance(key, PointKeys):
    if key.index.shape != (n,):
      raise ValueError(f'PointKeys for {key.index.shape} points given to a batch of {n}')
    return key.batch_keys
  return jnp.broadcast_to(key, (n,))


@jax.jit
def ranked_classes(model, x):
  """Classes by decreasing model output on x: int [B, C] (column 0 the prediction)."""
  return jnp.argsort(-model(x), axis=-1)


def over_targets(model, x, y, key, num_targets, attack_target, keep_last, what='', steps=1):
  """The targeted runs of APGD-T and FAB-T: `attack_target(x, y, key, target) -> (x_t, fooled)`
  toward the classes ranked 2nd to (num_targets + 1)th by `model` on x (at most C - 1 of
  them) -> per sample the examples of the first run that fooled it; where none did, the last
  run's (`keep_last`) or x. The run of rank k gets fold_keys(key, k).

  As AutoAttack, each target runs only on the points no earlier target fooled, packed into a
  batch of their own (`pack_size` rows, padded with copies of the last: a few compiled
  sizes) with their per-point keys (`PointKeys`), so each point's examples are those of a run
  over the whole batch. Where the inputs are traced (inside jit or vmap) or several processes
  share the batch, every target runs on every point: the same examples, more work. Progress
  (`progress.units`): `steps` per target of `what`.
  """
  ranked = ranked_classes(model, x)
  targets = min(num_targets, ranked.shape[-1] - 1)
  n, expand = x.shape[0], lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))
  packed = packable(x, y, key)
  x_out, fooled = jnp.asarray(x), (np.zeros(n, bool) if packed else jnp.zeros(y.shape, bool))
  with progress.units(targets * steps, 'steps', what) as count:
    for rank in range(1, targets + 1):
      rank_key = None if key is None else fold_keys(key, rank)
      if not packed:
        x_t, fooled_t = attack_target(x, y, rank_key, ranked[:, rank])
        take = ~fooled if keep_last else fooled_t & ~fooled
        x_out = jnp.where(expand(take), x_t, x_out)
        fooled = fooled | fooled_t
      else:
        rows = np.flatnonzero(~fooled)
        if not len(rows):
          break
        idx = np.concatenate([rows, np.full(pack_size(len(rows), n) - len(rows), rows[-1])])
        x_t, fooled_t = attack_target(
          x[idx], y[idx], take_keys(rank_key, n, idx), ranked[idx, rank]
        )
        x_t, fooled_t = x_t[: len(rows)], np.asarray(fooled_t)[: len(rows)]
        take = np.ones(len(rows), bool) if keep_last else fooled_t
        x_out = x_out.at[rows[take]].set(x_t[take])
        fooled[rows] = fooled_t
      count.reach(rank * steps)  # a target's steps, where its loop did not count them
    count.reach(targets * steps)
  return x_out


def packable(*trees):
  """Whether `over_targets` may pack points on the host: no input traced, one process."""
  if sharding.process_count() > 1:
    return False
  return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(trees))


def pack_size(m, n):
  """Rows of the batch that packs m of a batch's n points: n where m > n / 2, else the
  smallest power of two >= m (at least 8, at most n): few sizes, so few compiles."""
  if 2 * m > n:
    return n
  return min(n, max(8, 1 << (m - 1).bit_length()))


def take_keys(key, n, idx):
  """The per-point keys of rows `idx` of a batch of n keyed by `key` (a key or `PointKeys`):
  `PointKeys` with which `sample_keys` gives each row the key it has in the whole batch."""
  if key is None:
    return None
  if not isinstance(key, PointKeys):
    key = PointKeys(jnp.broadcast_to(key, (n,)), jnp.arange(n, dtype=jnp.int32))
  return PointKeys(key.batch_keys[idx], key.index[idx])


def on_host(*trees):
  """Whether an attack's loop runs on the host in chunks (`host_loop`): progress is asked for
  (`progress.listened`), in one process (every process must run the same programs), and no
  input is traced (the attack is not inside jit, vmap or grad)."""
  return progress.listened() and packable(*trees)


@functools.partial(jax.jit, static_argnames=('make', 'static'))
def _loop_start(make, static, args):
  return make(*args, **dict(static))[0]()


@functools.partial(jax.jit, static_argnames=('make', 'static'))
def _loop_steps(make, static, args, state, start, stop):
  return jax.lax.fori_loop(start, stop, make(*args, **dict(static))[1], state)


@functools.partial(jax.jit, static_argnames=('make', 'static'))
def _loop_end(make, static, args, state):
  return make(*args, **dict(static))[2](state)


def host_loop(make, args, static, steps, unit='steps', what=''):
  """The loop an attack's jitted core runs in one program, split on the host to report it.

  `make(*args, **static) -> (start() -> state, body(i, state) -> state, end(state) -> out)`
  describes the loop; the core is `end(fori_loop(0, steps, body, start()))`. Here start, the
  steps in chunks and end are three jitted programs (the chunk bounds are traced: one compile
  for any chunk), each chunk ticks `progress` by its steps and the next is sized to take
  about `progress.CHUNK_S` (the first is one step: it holds the compile). The same operations
  on the same values: the result is the core's, bit for bit (tests/test_progress.py).
  """
  static = tuple(sorted(static.items()))
  with progress.units(steps, unit, what):
    state = _loop_start(make, static, args)
    done, chunk = 0, 1
    while done < steps:
      stop = min(steps, done + chunk)
      began = time.perf_counter()
      state = jax.block_until_ready(_loop_steps(make, static, args, state, done, stop))
      per_step = max((time.perf_counter() - began) / (stop - done), 1e-6)
      progress.tick(stop - done)
      chunk, done = max(1, int(progress.CHUNK_S / per_step)), stop
    return _loop_end(make, static, args, state)


# The paper's L-inf grid of BIM and PGD on CIFAR, and where a dataset's differs (Table 4).
LINF_GRID = (0.02, 0.04)
LINF_GRIDS = {'tiny_imagenet': (0.01, 0.02)}
THREATS = ('linf', 'l2', 'l0', 'minimal_l2')
TARGETS = ('ensemble', 'members')


class Attack(NamedTuple):
  """A registered attack, with its parameters as the paper (or RobustBench) ran it.

  Attributes:
    name: the config and report name ('pgd', 'apgd-t').
    label: the row label of the tables ('PGD').
    fn: `fn(model_fn, x, y, *, key=None, **params) -> x_adv`.
    param: the parameter a grid sweeps (the Para. column of Table 4): 'eps', 'gamma', 'c'.
    grid: its values as run on CIFAR; `grids` {dataset: values} where a dataset's differ.
    params: its other keyword arguments, as run; a suite's config group holds a copy
      (`config.eval.paper.<config_key(name)>`), so each is a setting.
    threat: what bounds the perturbation: 'linf' (an L-inf eps: the `robust` suite and
      its per-sample worst case take these), 'l2', 'l0' (JSMA's pixel budget) or
      'minimal_l2' (C&W: unbounded, minimal L2).
    target: what it attacks: 'ensemble' (`Ensemble.log_predict`, eq. 1) or 'members'
      (`Ensemble.member_logits`, [K, B, C]).
    grids: {dataset: grid} where a dataset's grid is not `grid`.
    point_keys: its randomness comes only through `sample_keys`, `batch_keys` and
      `fold_keys` (never `jax.random` on `key` itself), so it accepts `PointKeys`: the
      `robust` suite's cascade packs the points still robust from several batches into
      one. Otherwise (the default, for attacks written elsewhere) the cascade attacks whole
      batches of the run over all points, those holding a point still robust: the same
      result, less saved.
  """

  name: str
  label: str
  fn: Callable
  param: str = 'eps'
  grid: tuple = LINF_GRID
  params: dict = {}
  threat: str = 'linf'
  target: str = 'ensemble'
  grids: dict = {}
  point_keys: bool = False

  def grid_for(self, dataset: str) -> tuple:
    """The attack's own grid of `param` for `dataset`."""
    return tuple(self.grids.get(dataset, self.grid))

  def settings(self) -> dict:
    """Its config group: the grid of `param` (() = its own grid for the run's dataset)
    and `params`."""
    return {self.param: (), **self.params}


def config_key(name: str) -> str:
  """An attack's name as a config field: 'apgd-t' -> 'apgd_t'."""
  return name.replace('-', '_')


def linf_grid(dataset: str) -> tuple:
  """The dataset's L-inf eps grid (the paper's BIM / PGD grid): the default of the suites
  that evaluate at L-inf eps (`robust`, `audit`)."""
  return tuple(LINF_GRIDS.get(dataset, LINF_GRID))


def bounded_by_eps(attack: Attack) -> bool:
  """Whether `attack` is an L-inf attack at a given eps (what `robust` and the worst case
  over attacks need)."""
  return attack.threat == 'linf' and attack.param == 'eps'
