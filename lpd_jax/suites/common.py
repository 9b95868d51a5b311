"""What every evaluation suite shares: its registry entry, its context, its report and the
flat metric records it emits, and the formatting of tables and numbers (Markdown tables are
written here only)."""

import dataclasses
import functools
import io
import zlib
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np

from lpd_jax import attacks, methods, predict, progress
from lpd_jax.errors import ConfigError
from lpd_jax.names import split_names


@dataclasses.dataclass(frozen=True)
class Metric:
  """One number (or verdict) a suite measured: the unit `lpd_jax.compare` pivots.

  Attributes:
    key: unique within its report, '/'-separated from general to specific
      ('pgd/0.02/accuracy'); tables select rows by key patterns.
    label: the row label in a table ('PGD 0.02 (all)').
    value: float, a verdict string ('passed' | 'FAILED' | 'not run'), or None (not measured).
    format: 'pct' (a fraction shown as a percentage), 'verdict', or a `str.format` template
      ('{:.4f}').
    num_points: how many test points the value is computed over.
    measured: how it was measured, in words ('PGD-10, L-inf, CE on eq. 1, random start').
    coords: where it sits in its grid ({'attack': 'pgd', 'eps': 0.02}), for plots.
  """

  key: str
  label: str
  value: Any
  format: str = 'pct'
  num_points: int = 0
  measured: str = ''
  coords: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> 'Metric':
    return cls(**d)

  def text(self) -> str:
    """The value as a table cell: '-' when missing."""
    return format_value(self.value, self.format)


def format_value(value, fmt: str) -> str:
  """A metric value under its format ('pct', 'verdict' or a str.format template)."""
  if value is None:
    return '-'
  if fmt == 'pct':
    return pct(value)
  if fmt == 'verdict':
    return str(value)
  return fmt.format(value)


def verdict(passed) -> str:
  """A check's True / False / None -> 'passed' / 'FAILED' / 'not run'."""
  return {True: 'passed', False: 'FAILED', None: 'not run'}[passed]


class Suite(NamedTuple):
  """A registered evaluation type of `eval.py`.

  Attributes:
    name: the type's name; `config.eval.suite=<name>` runs its default instance, whose
      settings are the group `config.eval.<name>`.
    run: `run(ens, ctx: SuiteContext) -> Report`.
    defaults: the config group's defaults ({} for none), or a function returning them
      (read when a config is built: suites whose groups hold a group per registered attack).
    validate: (config, settings group) -> None, raising ConfigError for settings that
      cannot work.
    metrics: `metrics(json) -> [Metric]`, the flat records of a report's JSON; `run` returns
      them, and `lpd_jax.compare` calls it for reports written before records existed.
    per_sample: `per_sample(json, load) -> {record key: Samples}`, the per-sample values
      behind its records (`lpd_jax.suites.samples`), for compare's paired statistics.
  """

  name: str
  run: Callable
  defaults: Any
  validate: Optional[Callable] = None
  metrics: Callable = lambda result: []
  per_sample: Callable = lambda result, load: {}

  def default_settings(self) -> dict:
    """The settings group of the type's default instance, as a dict."""
    return dict(self.defaults() if callable(self.defaults) else self.defaults)


@dataclasses.dataclass(frozen=True)
class SuiteContext:
  """What a suite gets besides the ensemble.

  Attributes:
    config: the run's config (FrozenConfigDict).
    cfg: the evaluation's own settings group (config.eval.<name>).
    images: the evaluated test prefix [N, H, W, c], uint8 or float in [0, 1].
    labels: int [N].
    load: workdir -> Ensemble, another workdir's ensemble in this evaluation's inference mode
      and member strategy (transfer surrogates); given by the driver, so suites import no
      loader.
    batch_size: images per batch (config.eval.batch_size unless the evaluation sets its own),
      the global batch: split over `mesh`'s data axis.
    mesh: the evaluation mesh (`sharding.evaluation_mesh`: config.eval.data_devices devices
      of all processes), or None for one device. Every per-sample result is the one-device
      result (the attacks' keys depend on the test index and the global batch only).
  """

  config: Any
  cfg: Any
  images: np.ndarray
  labels: np.ndarray
  load: Callable
  batch_size: int = 256
  mesh: Any = None


@dataclasses.dataclass
class Report:
  """A suite's output; the driver writes eval_<name>.json, eval_<name>.md and `files`.

  Attributes:
    json: JSON-able dict (the driver adds 'evaluation', 'suite', 'inference', 'files' and
      'metrics').
    markdown: the tables, printed and written to eval_<name>.md.
    files: {file name: bytes} written into the workdir (plots, per-sample arrays).
    metrics: the flat records of `json` (`Suite.metrics`).
  """

  json: dict
  markdown: str
  files: dict = dataclasses.field(default_factory=dict)
  metrics: list = dataclasses.field(default_factory=list)


def attack_settings(fits, with_grid=True):
  """{config_key(name): settings} of every registered attack for which `fits(attack)`: a
  suite's config groups of its attacks (`Attack.settings()`; without its grid where the
  suite sets the grid for all of them)."""
  return {
    attacks.config_key(a.name): a.settings() if with_grid else dict(a.params)
    for a in attacks.REGISTRY.values()
    if fits(a)
  }


def attack_params(attack, group, dataset):
  """An attack's settings group -> (its grid for `dataset`: the group's, or the attack's
  own where the group's is empty or absent; its other params cast to the types of
  `attack.params`, so one setting is one compile whether it came from Python or from a
  command-line override)."""
  own = tuple(group[attack.param]) if attack.param in group else ()
  grid = tuple(float(v) for v in own) or attack.grid_for(dataset)
  order = [*attack.params, *(k for k in group if k not in attack.params)]  # the attack's order
  params = {
    k: (type(attack.params[k])(group[k]) if k in attack.params else group[k])
    for k in order
    if k in group and k != attack.param
  }
  bad = {k: v for k, v in params.items() if k in COUNTS and not (isinstance(v, int) and v >= 1)}
  if bad:
    raise ConfigError(f'{attack.name}: {bad} must be >= 1')
  return grid, params


def names(cfg, field, allowed, group):
  """A comma-separated config field -> a tuple of names, each in `allowed`."""
  values = split_names(cfg[field])
  bad = [s for s in values if s not in allowed]
  if bad or not values:
    raise ConfigError(
      f'eval.{group}.{field}={cfg[field]!r}: give a comma-separated list of {", ".join(allowed)}'
    )
  return values


def grid(cfg, field, group, upper=None):
  """A config tuple of positive numbers (at most `upper`: 1 for an L-inf eps of images in
  [0, 1]) -> tuple of floats."""
  values = tuple(float(v) for v in cfg[field])
  check_grid(values, f'eval.{group}.{field}', upper)
  return values


def check_grid(values, where, upper=None):
  """ConfigError unless `values` is one or more numbers > 0 (and <= `upper`)."""
  if not values or min(values) <= 0 or (upper is not None and max(values) > upper):
    span = f'in (0, {upper:g}]' if upper is not None else '> 0'
    raise ConfigError(f'{where}={tuple(values)!r}: give one or more values {span}')


# Attack parameters that count something (iterations, queries, restarts, targets): >= 1.
COUNTS = ('steps', 'queries', 'restarts', 'binary_search_steps', 'num_targets', 'draws')


def attack_key(seed, name):
  """PRNG key of attack `name` (e.g. 'pgd', 'pgd_l2', 'jsma') for run seed `seed`.

  Both eps of one attack share the key. The 'pgd' key is also the sweep's L-inf key,
  so the sweep's eps 0.02 and 0.04 points repeat the paper suite's PGD rows exactly.
  The batch starting at test index s then gets fold_in(key, s) (`predict.attack_correct`).
  """
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(f'attack:{name}'.encode()) >> 1)


def attacked_fn(ens, name):
  """-> (what attack `name` attacks (`Attack.target`): the ensemble's log mean softmax
  (eq. 1) or its member logits [K, B, C]; the models its examples are judged on: None for
  the attacked one itself, else the ensemble's eq. 1)."""
  if attacks.REGISTRY[name].target == 'members':
    return ens.member_logits, [ens.log_predict]
  return ens.log_predict, None


def run_attack_row(row, source_fn, ctx, *, targets=None, bar=None, keep_examples=False):
  """One row of an attack grid ({'attack', 'params', ...}) on the test prefix with the
  key of `attack_key(seed, attack)`: -> correctness [N] per target (`predict.attack_correct`;
  default: `source_fn` itself; with `keep_examples`, (that list, x_adv [N, ...])).

  With the suite's `bar`, the row is watched (`progress.listening`): an attack that loops on
  the host reports its steps, any other (C&W, JSMA) shows a clock, a line every
  `progress.INTERVAL_S` where no bar is drawn."""
  attack = attacks.REGISTRY[row['attack']]
  call = functools.partial(
    predict.attack_correct,
    attack.fn,
    row['params'],
    source_fn,
    ctx.images,
    ctx.labels,
    key=attack_key(ctx.config.seed, row['attack']),
    batch_size=ctx.batch_size,
    targets=targets,
    bar=bar,
    keep_examples=keep_examples,
    mesh=ctx.mesh,
  )
  if bar is None:
    return call()
  with progress.listening(getattr(bar, '_stage_desc', 'attacks'), bar):
    with progress.units(0, 'calls', attack.label):  # the clock, until an attack counts
      return call()


def grid_table(header, rows, value_columns):
  """An attack grid as Markdown, in the layout of the paper's Tables 4-5: the attack's
  label on its first row only, then Para., then `value_columns` (functions of the row)."""
  cells, previous = [], None
  for row in rows:
    label = row['label'] if row['attack'] != previous else ''
    cells.append((label, fmt_param(row['param']), *(f(row) for f in value_columns)))
    previous = row['attack']
  return markdown_table(header, cells)


def accuracies(correct, clean_correct):
  """-> (accuracy on all, accuracy on the clean-correct samples or None if there are none)."""
  on_clean = float(correct[clean_correct].mean()) if clean_correct.any() else None
  return float(correct.mean()), on_clean


def fmt_param(p):
  """0.02 -> '0.02', 0.1 -> '0.10' (the paper's two decimals), 0.005 -> '0.005'."""
  if p is None:
    return '-'
  s = f'{p:.2f}'
  return s if abs(float(s) - p) < 1e-9 else f'{p:g}'


def pct(a):
  """Accuracy in [0, 1] -> '12.34' (percent), None -> '-' (missing, never 0)."""
  return '-' if a is None else f'{100 * a:.2f}'


def describe(ens, ctx):
  """The line every report opens with: what was evaluated, and how."""
  config = ctx.config
  return (
    f'{len(ctx.labels)} test images of {config.dataset}, K = {ens.num_members}, '
    f'method {methods.label(config)}, inference {inference_note(ens)}'
  )


def inference_note(ens):
  """'raw' or 'expected' with what it means for this ensemble."""
  if ens.inference == 'raw':
    return 'raw (heads see unmasked features h)'
  if ens.keep_rates is None:
    return 'expected (= raw here: no keep rates, or trained with 1/p rescaling)'
  return 'expected (heads see h * p(h), the training scale)'


def markdown_table(header, rows):
  """Header cells and rows of cells -> a Markdown table (lines joined by newlines)."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def npz_bytes(**arrays):
  """Arrays -> the bytes of an .npz file (for `Report.files`)."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def figure_png(fig):
  """A matplotlib Figure -> PNG bytes (for `Report.files`)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=120)
  return buffer.getvalue()
