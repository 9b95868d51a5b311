"""Named evaluations: what `config.eval.suite` names, resolved into typed instances.

An evaluation is an instance of a suite type (`lpd_jax.suites.REGISTRY`) with its own
settings and inference mode; its report is named after the instance (`eval_<name>.json`).
`config.eval.suite` is a comma-separated list of instance names, each one of:

  <type>              the type's default instance: settings `config.eval.<type>`, inference
                      `config.eval.inference` (under 'expected' it is named
                      `<type>_expected`, so both modes' reports live side by side)
  <type>_<inference>  the same settings in that inference mode: `robust_expected`
  <name>              a group `config.eval.<name>` of a config file with a field `type`
                      (and the type's settings): e.g. `config.eval.robust_strong =
                      ConfigDict(dict(robust_defaults, type='robust', steps=1000))`

Any settings group may also hold `inference` (that instance's mode), `test_examples` (its
own test-set prefix instead of `config.eval.num_examples`) and `batch_size` (instead of
`config.eval.batch_size`); a study config sets them per instance.
"""

import dataclasses
import hashlib
import json
from typing import Any

import ml_collections

from lpd_jax import ensemble, suites
from lpd_jax.errors import ConfigError
from lpd_jax.names import split_names

# Fields any settings group may hold besides its type's own (see the module doc).
INSTANCE_FIELDS = ('type', 'inference', 'test_examples', 'batch_size')


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """One evaluation to run.

  Attributes:
    name: the instance name; its report is eval_<name>.json / .md.
    type: the suite type (a key of `suites.REGISTRY`).
    inference: 'raw' | 'expected' (`lpd_jax.ensemble.INFERENCE_MODES`).
    settings: its settings group (a ConfigDict of the type's fields).
    num_examples: the test-set prefix it runs on (-1: all).
    batch_size: images per attacked or evaluated batch.
  """

  name: str
  type: str
  inference: str
  settings: Any
  num_examples: int
  batch_size: int

  @property
  def variant(self) -> str:
    """How compare tells this instance from its type's others: the inference mode for the
    default instances (`robust`, `robust_expected`), else the instance's name."""
    canonical = self.name in (self.type, f'{self.type}_{self.inference}')
    return self.inference if canonical else self.name


def default_name(suite_type: str, inference: str) -> str:
  """The name of a type's default instance in `inference`: 'robust', 'robust_expected'."""
  return suite_type if inference == 'raw' else f'{suite_type}_{inference}'


def _get(group, field, default):
  return group[field] if field in group else default


def resolve_one(config, name: str) -> Evaluation:
  """The Evaluation an instance name stands for in `config` (see the module doc)."""
  e = config.eval
  if name in suites.REGISTRY:
    suite_type, settings = name, e[name]
    inference = _get(settings, 'inference', e.inference)
    name = default_name(name, inference)
  elif name in e and isinstance(e[name], ml_collections.ConfigDict) and 'type' in e[name]:
    settings = e[name]
    suite_type = settings.type
    if suite_type not in suites.REGISTRY:
      raise ConfigError(
        f'eval.{name}.type={suite_type!r}: choose one of {", ".join(suites.REGISTRY)}'
      )
    inference = _get(settings, 'inference', 'raw')
  else:
    suite_type, _, inference = name.rpartition('_')
    if suite_type not in suites.REGISTRY or inference not in ensemble.INFERENCE_MODES:
      raise ConfigError(
        f'unknown evaluation {name!r} in eval.suite; give a suite ('
        f'{", ".join(suites.REGISTRY)}), <suite>_<inference> (e.g. robust_expected) or a '
        'group eval.<name> with a field type (comma-separated)'
      )
    settings = e[suite_type]
  if inference not in ensemble.INFERENCE_MODES:
    raise ConfigError(
      f'unknown inference {inference!r} of evaluation {name!r}; choose one of '
      f'{", ".join(ensemble.INFERENCE_MODES)}'
    )
  return Evaluation(
    name=name,
    type=suite_type,
    inference=inference,
    settings=settings,
    num_examples=_get(settings, 'test_examples', e.num_examples),
    batch_size=_get(settings, 'batch_size', e.batch_size),
  )


def resolve(config) -> tuple:
  """config.eval.suite -> the tuple of its Evaluations, each name once."""
  names = split_names(config.eval.suite)
  if not names:
    raise ConfigError(
      f'eval.suite is empty; give one or more of {", ".join(suites.REGISTRY)} (comma-separated)'
    )
  out = {}
  for name in names:
    evaluation = resolve_one(config, name)
    out.setdefault(evaluation.name, evaluation)
  return tuple(out.values())


def validate(config, evaluation: Evaluation) -> None:
  """Raises ConfigError for an evaluation whose settings cannot work."""
  n, b = evaluation.num_examples, evaluation.batch_size
  where = f'evaluation {evaluation.name!r}'
  if not (n is None or n >= 1 or n == -1):
    raise ConfigError(f'{where}: the number of test images must be >= 1, or -1 for all, got {n}')
  if b < 1:
    raise ConfigError(f'{where}: batch_size must be >= 1, got {b}')
  suite = suites.REGISTRY[evaluation.type]
  if suite.validate is not None:
    suite.validate(config, evaluation.settings)


def settings_of(evaluation: Evaluation, test_examples: int) -> dict:
  """Everything that decides an evaluation's numbers on a given checkpoint: its type,
  inference mode, settings group, the test images it ran on and its batch size (the
  attacks' keys depend on it). Reports record it; compare averages only equal ones."""
  settings = evaluation.settings
  settings = settings.to_dict() if hasattr(settings, 'to_dict') else dict(settings)
  return dict(
    type=evaluation.type,
    inference=evaluation.inference,
    settings=settings,
    test_examples=int(test_examples),
    batch_size=int(evaluation.batch_size),
  )


def settings_key(settings: dict) -> str:
  """12 hex digits naming `settings_of(...)`: equal keys, equal evaluations."""
  text = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]
