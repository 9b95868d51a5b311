"""The config fields every config shares, assembled from the registries, and their validation.

Each file in `configs/` starts from `base_config()` and overrides what it needs. The
config groups of the methods (`config.<method>`) and of the eval suites
(`config.eval.<suite>`) come from the `defaults` of `methods.REGISTRY` and
`suites.REGISTRY`, so adding a method or a suite adds its group here without an edit.
That is why this module sits above methods and suites (docs/architecture.md, "Floors").
`validate` and `validate_eval` turn a bad config into one `ConfigError` that names the field.
"""

import ml_collections

from lpd_jax import data, ensemble, evaluations, methods, models, suites
from lpd_jax.errors import ConfigError, need

__all__ = ['ConfigError', 'base_config', 'validate', 'validate_eval']


def base_config():
  """The defaults of docs/methods.md (training: "Training defaults", the PDD authors' code)."""
  c = ml_collections.ConfigDict()
  c.dataset = 'digits'
  # cifar10 / cifar100 / tiny_imagenet: 'fetched' reads what `python -m lpd_jax.datasets fetch`
  # converted into data_dir ('' = $LPD_JAX_DATA_DIR or ~/lpd_jax_data); 'tfds' reads TFDS's
  # array_record data sources (cifar only; data_dir '' = ~/tensorflow_datasets).
  c.data_source = 'fetched'
  c.data_dir = ''
  c.npz_path = ''  # for dataset='npz': arrays train_images, train_labels, test_images, test_labels
  c.num_classes = (
    0  # C; 0 = from the data (TFDS, Tiny-ImageNet, an npz's label_names, max label + 1)
  )
  c.augment = False  # random 4-pixel-pad crop and horizontal flip (CIFAR-like data)
  c.model = 'resnet18'  # models.REGISTRY
  c.num_members = 3  # K
  c.width = 64  # base width w; the feature size is D = 8w (every model in models.REGISTRY)
  c.method = 'lpd'  # methods.REGISTRY
  c.num_epochs = 150
  c.batch_size = 64
  c.learning_rate = 0.02
  c.final_learning_rate = 1e-4  # cosine decay ends here
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.seed = 0
  c.split_seed = 0  # the digits train/test split; fixed so seeds compare on one test set
  c.member_strategy = 'auto'  # how the stacked K axis executes: unroll | vmap | map | auto
  # Activations and matmuls: float32 | bfloat16 (parameters, optimizer state, keep-rate
  # statistics, heads and losses stay float32).
  c.dtype = 'float32'
  c.log_every_steps = 50
  c.tensorboard = True  # event files in WORKDIR/tensorboard (tensorboard --logdir=WORKDIR)
  c.keep_checkpoints = 2
  # A workdir whose newest checkpoint the members start from (parameters and BatchNorm
  # statistics; fresh optimizer and step), e.g. a Baseline for DVERGE; '' = a fresh init.
  c.init_from = ''
  # Continue a finished run past its num_epochs with a new cosine schedule over the extra
  # epochs (from learning_rate); without it a larger num_epochs on a finished run is refused.
  c.continue_training = False
  # XLA compilation cache folder; '' = $LPD_JAX_COMPILATION_CACHE or ~/.cache/lpd-jax/xla;
  # 'off' disables it (lpd_jax/compilation_cache.py).
  c.compilation_cache = ''
  # Devices as a ('member', 'data') mesh (lpd_jax/sharding.py): member x data of them (the
  # first ones), -1 = the rest; the member axis must divide num_members, the data axis
  # batch_size; 1 x 1 is one device.
  c.sharding = ml_collections.ConfigDict(dict(member=1, data=1))
  # Several processes: call jax.distributed.initialize() before anything touches a device,
  # with the coordinator's host:port, the process count and this process's index where no
  # cluster (SLURM, Open MPI, k8s, Cloud TPU) tells JAX ('' / 0 / -1: auto-detect).
  c.distributed = False
  c.coordinator_address = ''
  c.num_processes = 0
  c.process_id = -1
  for method in methods.REGISTRY.values():
    if method.defaults:
      c[method.name] = ml_collections.ConfigDict(dict(method.defaults))
  # Adversarial training over any method (methods/adversarial.py): attack none | fgsm | pgd.
  c.adv_train = ml_collections.ConfigDict(dict(methods.adversarial.DEFAULTS))

  c.eval = ml_collections.ConfigDict()
  c.eval.suite = 'clean'  # comma-separated evaluation names (lpd_jax/evaluations.py)
  c.eval.batch_size = 256
  c.eval.num_examples = -1  # evaluate a prefix of the test set; -1 = all
  # raw | expected (docs/methods.md, "Evaluation of dropout-trained members")
  c.eval.inference = 'raw'
  c.eval.reports_dir = ''  # where reports go; '' = the workdir (a read-only one: another folder)
  # Devices every suite splits its batches over (data parallel, the ensemble replicated), of
  # all processes; -1 = all. eval.batch_size is the global batch: a multiple of them.
  c.eval.data_devices = -1
  for suite in suites.REGISTRY.values():
    c.eval[suite.name] = ml_collections.ConfigDict(suite.default_settings())
  return c


def _choice(config, field, registry, where=''):
  value = config[field]
  need(value in registry, f'unknown {where}{field} {value!r}; choose one of {", ".join(registry)}')


def validate(config):
  """Raises ConfigError for training fields that cannot work. Returns the config."""
  _choice(config, 'dataset', data.LOADERS)
  _choice(config, 'method', methods.REGISTRY)
  _choice(config, 'model', models.REGISTRY)
  _choice(config, 'member_strategy', ensemble.MEMBER_STRATEGIES)
  _choice(config, 'dtype', ('float32', 'bfloat16'))
  need(
    isinstance(config.num_members, int) and config.num_members >= 1,
    f'num_members (K) must be an integer >= 1, got {config.num_members!r}',
  )
  need(config.width >= 1, f'width must be >= 1, got {config.width}')
  if config.get('coordinator_address'):
    need(
      config.num_processes >= 1 and 0 <= config.process_id < config.num_processes,
      f'coordinator_address {config.coordinator_address!r} needs num_processes >= 1 and '
      f'process_id in [0, num_processes), got {config.num_processes} and {config.process_id}',
    )
  need(config.num_epochs >= 1, f'num_epochs must be >= 1, got {config.num_epochs}')
  need(config.batch_size >= 1, f'batch_size must be >= 1, got {config.batch_size}')
  need(
    config.sharding.data == -1 or config.batch_size % max(config.sharding.data, 1) == 0,
    f'batch_size {config.batch_size} must be divisible by sharding.data '
    f'({config.sharding.data}): each device of the data axis gets an equal share',
  )
  need(config.learning_rate > 0, f'learning_rate must be > 0, got {config.learning_rate}')
  need(
    config.keep_checkpoints >= 1,
    f'keep_checkpoints must be >= 1 (checkpoints kept in the workdir), got '
    f'{config.keep_checkpoints}',
  )
  need(
    config.num_classes >= 0,
    f'num_classes must be >= 0 (0: from the data), got {config.num_classes}',
  )
  need(
    config.dataset != 'npz' or config.npz_path,
    "dataset='npz' needs --config.npz_path=PATH/TO/arrays.npz",
  )
  need(
    config.data_source in ('fetched', 'tfds'),
    f"data_source={config.data_source!r}: choose 'fetched' (python -m lpd_jax.datasets fetch) "
    "or 'tfds' (TFDS's prepared data)",
  )
  need(
    config.data_source != 'tfds' or config.dataset in ('cifar10', 'cifar100'),
    f"data_source='tfds' reads cifar10 and cifar100 only, not {config.dataset!r}",
  )
  method = methods.REGISTRY[config.method]
  if method.validate is not None:
    method.validate(config)
  methods.adversarial.validate(config)
  return config


def validate_eval(config):
  """Raises ConfigError for eval fields that cannot work (the common ones and each named
  evaluation of config.eval.suite, `lpd_jax.evaluations`). Returns the config."""
  e = config.eval
  need(e.batch_size >= 1, f'eval.batch_size must be >= 1, got {e.batch_size}')
  need(
    e.data_devices == -1 or e.data_devices >= 1,
    f'eval.data_devices must be >= 1, or -1 for all, got {e.data_devices}',
  )
  need(
    e.num_examples is None or e.num_examples >= 1 or e.num_examples == -1,
    f'eval.num_examples must be >= 1, or -1 for all, got {e.num_examples}',
  )
  need(
    e.inference in ensemble.INFERENCE_MODES,
    f'unknown eval.inference {e.inference!r}; choose one of {", ".join(ensemble.INFERENCE_MODES)}',
  )
  for evaluation in evaluations.resolve(config):
    evaluations.validate(config, evaluation)
  return config


# Eval settings of the layout before attacks carried their own (flat, prefixed fields) ->
# where they live now; a saved config's old fields are moved there (`from_saved`).
MOVED_EVAL_FIELDS = {
  'paper': {
    'fgsm_eps': ('fgsm.eps',),
    'pgd_eps': ('bim.eps', 'pgd.eps'),
    'steps': ('bim.steps', 'pgd.steps'),
    'jsma_theta': ('jsma.theta',),
    'jsma_gamma': ('jsma.gamma',),
    'jsma_variant': ('jsma.variant',),
    'cw_c': ('cw.c',),
    'cw_confidence': ('cw.confidence',),
    'cw_steps': ('cw.steps',),
    'cw_binary_search_steps': ('cw.binary_search_steps',),
    'cw_learning_rate': ('cw.learning_rate',),
    'cw_margin': ('cw.margin',),
  },
  'robust': {
    'steps': ('apgd_ce.steps', 'apgd_t.steps', 'pgd_margin.steps', 'pgd_member_margin.steps'),
    'restarts': ('pgd_margin.restarts', 'pgd_member_margin.restarts'),
    'num_targets': ('apgd_t.num_targets',),
    'square_queries': ('square.queries',),
  },
}


def _moved(saved_eval):
  """A saved config's eval dict with the fields of MOVED_EVAL_FIELDS at their new places
  (an old scalar C&W c becomes the one-value grid (c,); an old empty robust eps took the
  paper's PGD grid, so it takes it again)."""
  out = {k: dict(v) if isinstance(v, dict) else v for k, v in saved_eval.items()}
  for suite, fields in MOVED_EVAL_FIELDS.items():
    group = out.get(suite)
    if not isinstance(group, dict):
      continue
    for old, paths in fields.items():
      if old not in group or isinstance(group[old], dict):
        continue
      value = group.pop(old)
      if old == 'cw_c':
        value = (value,)
      for path in paths:
        attack, field = path.split('.')
        group.setdefault(attack, {})[field] = value
      if old == 'pgd_eps' and not tuple(out.get('robust', {}).get('eps', (1,))):
        out['robust']['eps'] = value
  return out


def run_config(config):
  """What a workdir saves of `config` (ensemble.json): without the groups of the methods it
  does not train with (its own and those it `uses` stay). `from_saved` puts today's defaults
  back, so a saved config loads whatever groups it holds."""
  method = methods.REGISTRY[config.method]
  others = {m for m in methods.REGISTRY if m != method.name and m not in method.uses}
  return ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k not in others})


def from_saved(saved):
  """A workdir's saved config (dict or ConfigDict) over today's `base_config()`.

  Fields added since the workdir was trained keep their defaults; eval settings of the
  older flat layout move to their groups (MOVED_EVAL_FIELDS); other saved fields that no
  longer exist are dropped.
  """
  config = base_config()
  saved = saved.to_dict() if isinstance(saved, ml_collections.ConfigDict) else dict(saved)
  if isinstance(saved.get('eval'), dict):
    saved['eval'] = _moved(saved['eval'])

  def overlay(target, source):
    for key, value in source.items():
      if key not in target:
        continue
      if isinstance(target[key], ml_collections.ConfigDict):
        if isinstance(value, (dict, ml_collections.ConfigDict)):
          overlay(target[key], value)
      else:
        target[key] = value

  overlay(config, saved)
  return config
