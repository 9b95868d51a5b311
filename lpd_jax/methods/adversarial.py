"""Adversarial training over any method (paper Table 6; docs/methods.md, "Adversarial training").

`config.adv_train.attack` = 'none' | 'fgsm' | 'pgd'. Each step, the first
round(mix * B) samples of the batch are replaced by examples made by that attack of the
attacks library against the current ensemble, and the method's own loss (Baseline, LPD,
PDD, DEG, ...) is taken on the result: mix = 1 replaces the whole batch (Madry et al. 2018),
mix = 0.5 is Goodfellow et al. 2015's half-and-half.

The attack sees the ensemble with the parameters of this step held constant and
maximises its loss on eq. 1 (`adv_train.loss`: 'ce', the paper's, or 'margin'), in
`adv_train.mode`: 'train' (the default) is the training-mode forward without dropout
(BatchNorm statistics of the batch being attacked, not kept: the network the loss trains);
'eval' the deployed model (BatchNorm running statistics, no dropout, raw features). The
paper does not give its training eps; the defaults are Madry et al.'s CIFAR ones: eps
8/255, 7 PGD steps of 2/255 from a random start.
"""

import functools

import jax
import jax.numpy as jnp

from lpd_jax import attacks, ensemble
from lpd_jax.methods.common import need

ATTACKS = ('none', 'fgsm', 'pgd')
MODES = ('train', 'eval')
DEFAULTS = dict(
  attack='none', eps=8 / 255, steps=7, step_size=2 / 255, mix=1.0, loss='ce', mode='train'
)


def _log_predict_train_mode(members, variables, x):
  """Training mode without dropout: BatchNorm statistics of the batch being attacked
  (not kept), so the attack sees the network the loss trains."""
  h, _ = members.features(variables, x, train=True)
  return ensemble.log_mean_softmax(members.heads(variables['params'], h))


def adversarial_batch(members, params, batch_stats, x, y, key, c):
  """x [B, ...] -> x' [B, ...]: its first round(c.mix * B) samples attacked (see module)."""
  variables = jax.lax.stop_gradient({'params': params, 'batch_stats': batch_stats})
  if c.mode == 'train':
    model_fn = jax.tree_util.Partial(functools.partial(_log_predict_train_mode, members), variables)
  else:  # evaluation mode: BatchNorm running statistics, raw features (the deployed model)
    model_fn = ensemble.Ensemble(variables, members).log_predict
  n = round(c.mix * x.shape[0])
  if n == 0:
    return x
  if c.attack == 'fgsm':
    part = attacks.fgsm(model_fn, x[:n], y[:n], eps=c.eps, loss=c.loss)
  else:
    part = attacks.pgd(
      model_fn, x[:n], y[:n], key=key, eps=c.eps, steps=c.steps, step_size=c.step_size, loss=c.loss
    )
  return jnp.concatenate([jax.lax.stop_gradient(part), x[n:]])


def wrap(loss, config):
  """The method loss `loss` trained on adversarial batches when config.adv_train.attack is
  set (unchanged for 'none'); same signature as `Method.loss`."""
  c = config.adv_train
  if c.attack == 'none':
    return loss

  def adversarial_loss(members, params, batch_stats, x, y, key, progress, config):
    attack_key, key = jax.random.split(key)
    x = adversarial_batch(members, params, batch_stats, x, y, attack_key, c)
    return loss(members, params, batch_stats, x, y, key, progress, config)

  return adversarial_loss


def label(config, display):
  """The report label: 'AdvT_PGD + LPD' with adversarial training, `display` without."""
  attack = config.adv_train.attack
  return display if attack == 'none' else f'AdvT_{attack.upper()} + {display}'


def validate(config):
  c = config.adv_train
  need(c.attack in ATTACKS, f'unknown adv_train.attack {c.attack!r}; choose one of {ATTACKS}')
  if c.attack == 'none':
    return
  need(0 < c.eps <= 1, f'adv_train.eps must be in (0, 1] (L-inf, images in [0, 1]), got {c.eps}')
  need(0 < c.mix <= 1, f'adv_train.mix must be in (0, 1], got {c.mix}')
  need(c.loss in ('ce', 'margin'), f"adv_train.loss must be 'ce' or 'margin', got {c.loss!r}")
  need(c.mode in MODES, f'adv_train.mode must be one of {MODES}, got {c.mode!r}')
  if c.attack == 'pgd':
    need(c.steps >= 1, f'adv_train.steps must be >= 1, got {c.steps}')
    need(c.step_size > 0, f'adv_train.step_size must be > 0, got {c.step_size}')
