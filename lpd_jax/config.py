"""The config fields every config shares, and their validation.

Each file in `configs/` starts from `base_config()` and overrides what it needs;
`validate` turns a bad config into one `ConfigError` that names the field.
"""

import ml_collections

DATASETS = ('digits', 'npz', 'cifar10', 'cifar100', 'tiny_imagenet')
METHODS = ('baseline', 'lpd', 'pdd')
MEMBER_STRATEGIES = ('auto', 'unroll', 'vmap', 'map')


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def base_config():
  """Defaults from METHODS.md (training defaults of the PDD authors' code)."""
  c = ml_collections.ConfigDict()
  c.dataset = 'digits'
  c.data_dir = ''  # TFDS data dir / folder holding tiny-imagenet-200; '' = the library default
  c.npz_path = ''  # for dataset='npz': arrays train_images, train_labels, test_images, test_labels
  c.augment = False  # random 4-pixel-pad crop and horizontal flip (CIFAR-like data)
  c.num_members = 3  # K
  c.width = 64  # ResNet-18 base width w; feature size D = 8w
  c.method = 'lpd'
  c.num_epochs = 150
  c.batch_size = 64
  c.learning_rate = 0.02
  c.final_learning_rate = 1e-4  # cosine decay ends here
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.seed = 0
  c.split_seed = 0  # the digits train/test split; fixed so seeds compare on one test set
  c.member_strategy = 'auto'  # how the stacked K axis executes: unroll | vmap | map | auto
  c.log_every_steps = 50
  c.keep_checkpoints = 2

  c.lpd = ml_collections.ConfigDict(dict(
      s=0.1, eps=0.0, gamma=10.0, lam=0.5, alpha=0.85, beta=0.127, num_bins=64, rescale=False))
  c.pdd = ml_collections.ConfigDict(dict(num_bins=10, alpha=0.9, beta=0.1, rescale=False))

  c.eval = ml_collections.ConfigDict()
  c.eval.suite = 'clean'  # comma-separated report names, see lpd_jax.evaluate.SUITES
  c.eval.batch_size = 256
  c.eval.num_examples = -1  # evaluate a prefix of the test set; -1 = all
  c.eval.probe_examples = 2000  # suite 'probes': L_d, L_s on the first N test images; -1 = all
  c.eval.probe_float64 = False  # suite 'probes': input gradients and probes in float64
  # Suites 'paper' (Table 4), 'sweep' (Figure 3), 'transfer' (Table 5): lpd_jax.attacks.report.
  # Defaults are the paper's (METHODS.md "Attacks"); tuples override as '(0.01,0.02)'.
  c.eval.attacks = 'fgsm,bim,pgd,jsma,cw'  # suite 'paper': the attack rows to run
  c.eval.fgsm_eps = (0.02, 0.04)  # FGSM L-inf eps
  c.eval.pgd_eps = ()  # BIM, PGD L-inf eps; () = paper's: 0.01, 0.02 tiny_imagenet, else 0.02, 0.04
  c.eval.attack_steps = 10  # BIM / PGD steps (L-inf step eps / 10; L2 step 2.5 eps / steps)
  c.eval.jsma_theta = 0.1  # JSMA: increase per changed feature
  c.eval.jsma_gamma = (0.05, 0.1)  # JSMA: max fraction of features changed, one row each
  c.eval.cw_c = 0.1  # C&W L2: initial trade-off constant c (then binary-searched per sample)
  c.eval.cw_confidence = 0.01  # C&W L2: required margin kappa
  c.eval.cw_steps = 1000  # C&W L2: Adam steps per binary-search round
  c.eval.cw_binary_search_steps = 5  # C&W L2: rounds of the search over c
  c.eval.cw_learning_rate = 0.01  # C&W L2: Adam step size in tanh space (ART's default)
  c.eval.sweep_norms = 'linf,l2'  # suite 'sweep': PGD norms, one plot panel each
  c.eval.sweep_linf_eps = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # 0.005 * 2^i
  c.eval.sweep_l2_eps = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)  # 0.1 * 2^i
  c.eval.transfer_workdir = ''  # suite 'transfer': workdir of the surrogate the attacks run on
  c.eval.transfer_attack = 'pgd'  # suite 'transfer': attacks at their grid (fgsm|bim|pgd|jsma)
  return c


def validate(config):
  """Raises ConfigError for values that cannot work. Returns the config."""

  def need(ok, msg):
    if not ok:
      raise ConfigError(msg)

  need(config.dataset in DATASETS,
       f'unknown dataset {config.dataset!r}; choose one of {", ".join(DATASETS)}')
  need(config.method in METHODS,
       f'unknown method {config.method!r}; choose one of {", ".join(METHODS)}')
  need(config.member_strategy in MEMBER_STRATEGIES,
       f'unknown member_strategy {config.member_strategy!r}; choose one of '
       f'{", ".join(MEMBER_STRATEGIES)}')
  need(isinstance(config.num_members, int) and config.num_members >= 1,
       f'num_members (K) must be an integer >= 1, got {config.num_members!r}')
  need(config.width >= 1, f'width must be >= 1, got {config.width}')
  need(config.num_epochs >= 1, f'num_epochs must be >= 1, got {config.num_epochs}')
  need(config.batch_size >= 1, f'batch_size must be >= 1, got {config.batch_size}')
  need(config.learning_rate > 0, f'learning_rate must be > 0, got {config.learning_rate}')
  for group in ('lpd', 'pdd'):
    bins = config[group].num_bins
    need(bins >= config.num_members,
         f'{group}.num_bins ({bins}) must be >= num_members ({config.num_members}): '
         'each member needs its own priority bin')
  need(config.lpd.s > 0 and config.lpd.lam > 0, 'lpd.s and lpd.lam must be > 0')
  need(config.dataset != 'npz' or config.npz_path,
       "dataset='npz' needs --config.npz_path=PATH/TO/arrays.npz")
  return config
