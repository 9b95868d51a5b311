"""DVERGE, Diversifying Vulnerabilities for Enhanced Robust Generation of Ensembles (Yang et al.
2020, the paper's [34]), as the official code (zjysteven/DVERGE) trains it, for any K >= 2.

docs/methods.md, "DVERGE". Per step, with (x, y) the batch and x_t a target batch:

  x~_k = argmin over ||x' - x||_inf <= eps of MSE(f_l(k, x'), f_l(k, x_t))   (`distill`)
  loss = (1 / K) sum_i l_i / (K - 1),
  l_i  = coeff * sum_{j != i} CE(member i (x~_j), y) [+ CE(member i (x_adv_i), y) with plus_adv]

f_l(k, .) member k's pre-ReLU activation at layer l (`layer_features`, DVERGE's numbering:
l = L is the logits), in training mode as the reference's `Linf_distillation` runs it; the
distillation is L-inf PGD from x (no random start) with `steps` sign steps of `step_size` on
the momentum g <- g + grad / ||grad||_1 (per sample), projected on the eps ball and [0, 1]
(`distillation.py`). x_adv_i: member i's own L-inf PGD on its cross-entropy (8/255, 10 steps
of 2/255 from a uniform start; `Linf_PGD`). The reference sums each member's K - 1
cross-entropies and steps each member with its own SGD; dividing by K (the house's member
mean) and K - 1 puts the loss on mean_k CE_k's scale and keeps the balance inside l_i.

l is `layer` when fixed (> 0), else drawn uniformly from 1..L once per epoch from the seed
(the reference's `random.randint(1, depth)` per epoch), so a resumed run draws the same.
x_t: the reference draws it from a second, independently shuffled loader; here it is the
batch itself under a random cyclic derangement (every sample's target is another image of
the batch, never itself). The K distillations (and the K adversarial examples) are one
program: each member's input gradient from one backward pass over per-member inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax import ensemble, gradients, models
from lpd_jax.methods.common import Method, need, result

DEFAULTS = dict(
  eps=0.07,  # the reference's distill_eps
  step_size=0.007,  # distill_alpha
  steps=10,  # distill_steps
  momentum=True,  # distill_momentum (L1-normalised gradient accumulated, mu = 1)
  random_start=False,  # distill_rand_start
  layer=0,  # 0: drawn from 1..L each epoch; > 0: fixed (the reference's distill_layer)
  plus_adv=False,  # the reference's --plus-adv
  coeff=1.0,  # dverge_coeff, the distillation term's weight with plus_adv
  adv_eps=8 / 255,
  adv_step_size=2 / 255,
  adv_steps=10,
)
# folded into the seed's key for the per-epoch layer draw (no other draw uses it)
_LAYER_STREAM = 0x44564552


def distillation_layer(seed, epoch, depth):
  """The layer of `epoch` (int32 [] or int): uniform on 1..depth from the seed and the epoch."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _LAYER_STREAM), epoch)
  return jax.random.randint(key, (), 1, depth + 1)


def target_permutation(key, batch):
  """-> t [B] with t[b] != b: a random cyclic derangement (b's target is x[t[b]])."""
  order = jax.random.permutation(key, batch)
  return jnp.zeros(batch, jnp.int32).at[order].set(jnp.roll(order, -1).astype(jnp.int32))


def linf_pgd(objective, x_nat, start, eps, step_size, steps, *, descend, momentum):
  """L-inf PGD of K members at once: xs [K, B, ...] where member k moves xs[k] only.

  `objective(xs)` is a sum of per-member terms, so its gradient is each member's own.
  Each step: (with `momentum`) g <- g + grad / max(||grad||_1, 1e-12) per (k, b), else
  g = grad; xs <- xs -/+ step_size * sign(g) (- when `descend`); clipped to x_nat +- eps
  and [0, 1] (the reference's `Linf_distillation` and `Linf_PGD`).

  Returns:
    xs [K, B, ...] after `steps` steps (no gradient flows out).
  """
  sign = -1.0 if descend else 1.0

  def step(_, carry):
    xs, g = carry
    grad = jax.grad(objective)(xs)
    if momentum:
      l1 = jnp.sum(jnp.abs(grad), axis=tuple(range(2, grad.ndim)), keepdims=True)
      grad = g + grad / jnp.maximum(l1, 1e-12)
    xs = xs + sign * step_size * jnp.sign(grad)
    xs = jnp.clip(jnp.clip(xs, x_nat - eps, x_nat + eps), 0.0, 1.0)
    return xs, grad

  xs, _ = jax.lax.fori_loop(0, steps, step, (start, jnp.zeros_like(start)))
  return jax.lax.stop_gradient(xs)


def distill(members, variables, x, x_target, layer, key, c):
  """Each member's feature distillation of x toward x_target at `layer` (a Python int).

  Args:
    variables: {'params', 'batch_stats'} stacked [K, ...] (held constant).
    x, x_target: [B, H, W, c] in [0, 1].
    c: the `dverge` config group.

  Returns:
    x~ [K, B, H, W, c]: member k's distilled images (within eps of x).
  """
  k = jax.tree.leaves(variables)[0].shape[0]
  stacked = lambda a: jnp.broadcast_to(a, (k, *a.shape))
  target = jax.lax.stop_gradient(members.layer_features(variables, stacked(x_target), layer))
  x_nat = stacked(x)

  def objective(xs):  # sum_k MSE_k, each the mean over the member's batch and features
    out = members.layer_features(variables, xs, layer)
    return jnp.sum(jnp.mean(jnp.square(out - target), axis=tuple(range(1, out.ndim))))

  start = x_nat
  if c.random_start:
    start = x_nat + jax.random.uniform(key, x_nat.shape, x.dtype, -c.eps, c.eps)
  start = jnp.clip(start, 0.0, 1.0)
  return linf_pgd(
    objective, x_nat, start, c.eps, c.step_size, c.steps, descend=True, momentum=c.momentum
  )


def member_adversarial(members, variables, x, y, key, c):
  """x [B, ...], y [B] -> [K, B, ...]: member k's own L-inf PGD on its cross-entropy
  (training mode, uniform start; the reference's `Linf_PGD` with --plus-adv's settings)."""
  k = jax.tree.leaves(variables)[0].shape[0]
  x_nat = jnp.broadcast_to(x, (k, *x.shape))

  def objective(xs):
    h, _ = members.features(variables, xs, train=True, per_member_inputs=True)
    logits = members.heads(variables['params'], h)
    return jnp.sum(_member_ce(logits, y).mean(axis=-1))

  start = x_nat + jax.random.uniform(key, x_nat.shape, x.dtype, -c.adv_eps, c.adv_eps)
  start = jnp.clip(start, 0.0, 1.0)
  return linf_pgd(
    objective,
    x_nat,
    start,
    c.adv_eps,
    c.adv_step_size,
    c.adv_steps,
    descend=False,
    momentum=False,
  )


def _member_ce(logits, y):
  """logits [..., B, C], y [B] -> [..., B]: `gradients.cross_entropy` with y broadcast."""
  return gradients.cross_entropy(logits, jnp.broadcast_to(y, logits.shape[:-1]))


def others(k):
  """[K, K-1] int: row i lists the members j != i in order."""
  return np.array([[j for j in range(k) if j != i] for i in range(k)], np.int32)


def cross_member_logits(members, params, batch_stats, xs):
  """xs [K, J, B, ...] (member i sees its J batches xs[i]) -> (logits [K, J, B, C], new
  batch_stats [K, ...]): training mode, BatchNorm statistics per batch as the reference's
  separate forwards have them; the running statistics kept move by the mean of the J
  batches' statistics (the reference moves them J times in a row, and also during its PGD).

  The J forwards of a member are unrolled: vmapped over J (weights shared) the kernel
  gradients of the models' convolutions ran 2.5x slower on XLA:CPU, `lax.map` 30x
  (benchmarks/dverge_peer.py --phases); the compile time is the same.
  """

  def one(vx):
    v, inputs = vx
    outs = []
    for j in range(inputs.shape[0]):
      (logits, _), updates = members.model.apply(v, inputs[j], train=True, mutable=['batch_stats'])
      outs.append((logits, updates['batch_stats']))
    logits = jnp.stack([o[0] for o in outs])
    stats = jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), axis=0), *[o[1] for o in outs])
    return logits, stats

  variables = {'params': params, 'batch_stats': batch_stats}
  return ensemble.map_members(one, (variables, xs), members.strategy)


def _distill_at_drawn_layer(members, variables, x, x_target, key, progress, config):
  """`distill` at the fixed layer, or at the epoch's drawn layer through `lax.switch` (one
  branch per layer compiled, the drawn one run: a step built outside the training loop,
  which fixes the epoch's layer instead, `for_epoch`). -> (x~ [K, B, ...], layer int32 [])."""
  c = config.dverge
  depth = members.model.distillation_depth
  if c.layer > 0:
    return distill(members, variables, x, x_target, c.layer, key, c), jnp.int32(c.layer)
  layer = distillation_layer(config.seed, progress.epoch, depth)
  branches = [
    lambda ops, at=at: distill(members, variables, ops[0], ops[1], at, ops[2], c)
    for at in range(1, depth + 1)
  ]
  return jax.lax.switch(layer - 1, branches, (x, x_target, key)), layer


def loss(members, params, batch_stats, x, y, key, progress, config):
  """DVERGE's loss; see the module docstring and `Method.loss` for the signature."""
  c = config.dverge
  k = config.num_members
  target_key, start_key, adv_key = jax.random.split(key, 3)
  fixed = jax.lax.stop_gradient({'params': params, 'batch_stats': batch_stats})
  x_target = x[target_permutation(target_key, x.shape[0])]
  distilled, layer = _distill_at_drawn_layer(
    members, fixed, x, x_target, start_key, progress, config
  )
  logits, new_batch_stats = cross_member_logits(
    members, params, batch_stats, distilled[others(k)]
  )  # [K, K-1, B, C]: member i on x~_j, j != i
  ce = _member_ce(logits, y).mean(axis=-1)  # [K, K-1]
  member_loss = c.coeff * ce.sum(axis=1) if c.plus_adv else ce.sum(axis=1)
  terms = {'distilled_ce': ce.mean()}
  if c.plus_adv:
    adversarial = member_adversarial(members, fixed, x, y, adv_key, c)
    h, _ = members.features(
      {'params': params, 'batch_stats': batch_stats},
      adversarial,
      train=True,
      per_member_inputs=True,
    )
    adv_ce = _member_ce(members.heads(params, h), y).mean(axis=-1)  # [K]
    member_loss = member_loss + adv_ce
    terms['adversarial_ce'] = adv_ce.mean()
  return result(
    jnp.mean(member_loss) / (k - 1),
    logits[:, 0],  # member i on x~ of the next member: the accuracy the step reports
    new_batch_stats,
    terms=terms,
    stats={'member_ce': ce.mean(axis=1), 'distillation_layer': layer.astype(jnp.float32)},
  )


def for_epoch(config, epoch):
  """{'dverge.layer': the layer drawn for `epoch`} when the layer is drawn (layer 0): the
  training loop compiles one step per layer met instead of switching over all of them."""
  if config.dverge.layer > 0:
    return {}
  depth = models.REGISTRY[config.model](num_classes=1).distillation_depth
  return {'dverge.layer': int(distillation_layer(config.seed, epoch, depth))}


def validate(config):
  c = config.dverge
  need(config.num_members >= 2, 'dverge needs num_members >= 2 (members train on the others)')
  need(config.batch_size >= 2, 'dverge needs batch_size >= 2 (targets are other images)')
  need(0 < c.eps <= 1, f'dverge.eps must be in (0, 1], got {c.eps}')
  need(c.step_size > 0 and c.steps >= 1, 'dverge.step_size must be > 0 and dverge.steps >= 1')
  model = models.REGISTRY.get(config.model)
  need(
    model is not None and hasattr(model, 'layer_features'),
    f'dverge distills at the layers of a ResNet; model {config.model!r} has no layer_features',
  )
  depth = model(num_classes=1).distillation_depth
  need(
    0 <= c.layer <= depth,
    f'dverge.layer must be 0 (drawn each epoch) or a layer in 1..{depth} of {config.model}, '
    f'got {c.layer}',
  )
  if c.plus_adv:
    need(0 < c.adv_eps <= 1, f'dverge.adv_eps must be in (0, 1], got {c.adv_eps}')
    need(c.adv_steps >= 1, f'dverge.adv_steps must be >= 1, got {c.adv_steps}')


METHOD = Method('dverge', 'DVERGE', DEFAULTS, loss, None, validate, for_epoch=for_epoch)
