"""Training objectives as method objects, selected by `config.method`.

A `Method` owns its loss; `lpd_jax.train` only differentiates `method.loss` and applies
the optimizer. `REGISTRY` (name -> Method) is the one list of methods: config defaults,
validation, CLI errors and report labels all read it. Adding a method is one module in
this package plus one line in `REGISTRY` (README, "Extending").
"""

from lpd_jax.methods import adp, adversarial, baseline, deg, dverge, gal, graddiv, lpd, pdd, trs
from lpd_jax.methods.common import Method, Progress, progress_at

REGISTRY = {
  m.name: m
  for m in (
    baseline.METHOD,
    lpd.METHOD,
    pdd.METHOD,
    deg.METHOD,
    adp.METHOD,
    gal.METHOD,
    trs.METHOD,
    dverge.METHOD,
    graddiv.METHOD,
  )
}


def get(name):
  """The registered Method called `name`; KeyError naming the choices otherwise."""
  if name not in REGISTRY:
    raise KeyError(f'unknown method {name!r}; choose one of {", ".join(REGISTRY)}')
  return REGISTRY[name]


def display_name(name):
  """Config method name -> its column label ('lpd' -> 'LPD'); unknown names unchanged."""
  return REGISTRY[name].display if name in REGISTRY else name


def label(config):
  """A run's column label: the method's, prefixed by its adversarial training
  ('AdvT_PGD + LPD'); configs saved before adv_train existed have none."""
  name = display_name(config.method)
  return adversarial.label(config, name) if 'adv_train' in config else name


def config_for_epoch(config, epoch):
  """-> (config with the method's per-epoch settings fixed, {'group.field': value} of them):
  `Method.for_epoch`; config itself and {} for methods without per-epoch draws."""
  method = get(config.method)
  settings = method.for_epoch(config, epoch) if method.for_epoch else {}
  if not settings:
    return config, {}
  config = config.copy_and_resolve_references()
  for path, value in settings.items():
    group, field = path.split('.')
    config[group][field] = value
  return config, settings


def has_expected_inference(config):
  """Whether 'expected' inference differs from 'raw' for config's method: it has keep
  rates and was trained without 1/p rescaling (docs/methods.md, "Evaluation of
  dropout-trained members"). For the others an 'expected' report would repeat the raw one."""
  method = get(config.method)
  return method.keep_rates is not None and method.keep_rates(config) is not None


__all__ = [
  'REGISTRY',
  'Method',
  'Progress',
  'adversarial',
  'config_for_epoch',
  'display_name',
  'get',
  'has_expected_inference',
  'label',
  'progress_at',
]
