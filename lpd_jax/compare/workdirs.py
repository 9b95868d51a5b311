"""Workdirs as compare sees them: a config, the flat metric records of every report, the
training log; and `run_missing`, which evaluates what a workdir lacks."""

import dataclasses
import json
import os

from lpd_jax import evaluate, evaluations, loading, methods, provenance, suites
from lpd_jax import workdir as workdir_lib
from lpd_jax.compare.estimates import evaluated_images, say_plan
from lpd_jax.errors import ConfigError
from lpd_jax.progress import StageBar
from lpd_jax.suites.common import Metric
from lpd_jax.suites.samples import read_npz

RAW, EXPECTED = 'raw', 'expected'


@dataclasses.dataclass
class Run:
  """One workdir.

  Attributes:
    workdir: its path.
    config: its saved config over today's defaults.
    num_classes, input_shape: what its ensemble was trained for.
    records: {(suite type, variant): {key: Metric}}; the variant is the inference mode for a
      type's default instances, else the instance's name (`Evaluation.variant`).
    reports: {(suite type, variant): the report's JSON} (plots of per-sample data).
    metrics: the lines of its metrics.jsonl (training).
    derived: the (type, variant) pairs filled from another variant: for a method without
      keep rates 'expected' inference is 'raw', so its raw records stand for both.
    provenance: its training provenance entries (`lpd_jax.provenance.read_training`).
  """

  workdir: str
  config: object
  num_classes: int
  input_shape: tuple
  records: dict
  reports: dict
  metrics: list
  derived: frozenset = frozenset()
  provenance: list = dataclasses.field(default_factory=list)
  _samples: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))

  def value(self, suite_type, variant, key):
    """The value of a record, or None where the workdir has no such record."""
    metric = self.records.get((suite_type, variant), {}).get(key)
    return None if metric is None else metric.value

  def test_images(self, suite_type, variant, key):
    """How many test images the evaluation behind a record ran on (its test-set prefix), or
    None where there is no record."""
    if key not in self.records.get((suite_type, variant), {}):
      return None
    return workdir_lib.report_test_images(self.reports[suite_type, variant])

  def samples(self, suite_type, variant, key):
    """The per-sample values behind a record (`lpd_jax.suites.samples.Samples`), or None
    where its report has no per-sample file (or the file lacks that record's array)."""
    if (suite_type, variant) not in self._samples:
      report = self.reports.get((suite_type, variant))
      found = {}
      if report is not None:
        found = suites.REGISTRY[suite_type].per_sample(report, self._loader(report, suite_type))
      self._samples[suite_type, variant] = found
    return self._samples[suite_type, variant].get(key)

  def _loader(self, report, suite_type):
    """file name as the suite names it -> its arrays in this workdir (the driver's name for
    the report's evaluation, `evaluate.report_file`), or None."""
    name = report.get('evaluation') or suite_type

    def load(file_name):
      return read_npz(os.path.join(self.workdir, evaluate.report_file(file_name, name, suite_type)))

    return load

  @property
  def trained_epochs(self):
    """The newest epoch of its metrics.jsonl (None: no line)."""
    return max((m.get('epoch', 0) for m in self.metrics), default=None)

  def evaluated_epoch(self, suite_type, variant):
    """The checkpoint epoch its report of this type and variant says it evaluated (None
    for a report from before reports recorded it)."""
    report = self.reports.get((suite_type, variant)) or {}
    return (report.get('checkpoint') or {}).get('epoch')

  def epochs(self, suite_type, variant, key):
    """(evaluated epoch, newest trained epoch) behind a record, or None without one."""
    if key not in self.records.get((suite_type, variant), {}):
      return None
    return self.evaluated_epoch(suite_type, variant), self.trained_epochs

  def evaluations(self):
    """{(suite type, variant): (evaluation_key, evaluated epoch)} of its own reports (keys
    None where a report predates them): what must agree for two seeds to share a cell."""
    return {
      (s, v): (report.get('evaluation_key'), self.evaluated_epoch(s, v))
      for (s, v), report in self.reports.items()
      if self.has_own(s, v)
    }

  def report(self, suite_type, variant=RAW):
    return self.reports.get((suite_type, variant))

  def has_own(self, suite_type, variant):
    """Whether the workdir holds a report of this type and variant itself (not derived)."""
    return (suite_type, variant) in self.records and (suite_type, variant) not in self.derived


def report_records(report, file_name):
  """A report's JSON (in `file_name`, eval_<name>.json) -> (suite type, variant, [Metric]),
  or None if no suite reads it.

  Reports carry their records ('metrics'); older ones get them from their suite's
  `metrics` function, which reads the layout it wrote itself. A report without its type
  and inference is named by its file (eval_robust_expected.json: robust, expected)."""
  name = report.get('evaluation') or os.path.basename(file_name)[len('eval_') : -len('.json')]
  suite_type, inference = report.get('suite'), report.get('inference')
  if suite_type is None:
    suite_type, inference = name, RAW
    if name not in suites.REGISTRY:
      suite_type, _, inference = name.rpartition('_')
  if suite_type not in suites.REGISTRY:
    return None
  inference = inference or RAW
  variant = inference if name in (suite_type, f'{suite_type}_{inference}') else name
  if 'metrics' in report:
    records = [Metric.from_json(m) for m in report['metrics']]
  else:
    records = suites.REGISTRY[suite_type].metrics(report)
  return suite_type, variant, records


def read_run(workdir):
  """A workdir's config, records and training log; ConfigError if it holds no ensemble."""
  saved = loading.read_config(workdir)
  if saved is None:
    raise ConfigError(f'{workdir} holds no trained ensemble (no ensemble.json)')
  records, reports = {}, {}
  for path in workdir_lib.report_paths(workdir):
    with open(path) as f:
      report = json.load(f)
    found = report_records(report, path) if isinstance(report, dict) else None
    if found is None:
      continue
    suite_type, variant, metrics = found
    records[suite_type, variant] = {m.key: m for m in metrics}
    reports[suite_type, variant] = report
  derived = set()
  if not methods.has_expected_inference(saved.config):  # 'expected' is 'raw' for this method
    for suite_type, variant in list(records):
      if variant == RAW and (suite_type, EXPECTED) not in records:
        records[suite_type, EXPECTED] = records[suite_type, RAW]
        reports[suite_type, EXPECTED] = reports[suite_type, RAW]
        derived.add((suite_type, EXPECTED))
  return Run(
    workdir,
    saved.config,
    saved.num_classes,
    tuple(saved.input_shape),
    records,
    reports,
    workdir_lib.read_metrics(workdir),
    frozenset(derived),
    provenance.read_training(workdir),
  )


def dataset_of(run):
  """What makes two workdirs' test sets the same: the dataset (and its npz file), classes
  and input shape, as a readable string."""
  c = run.config
  name = c.dataset + (f' ({os.path.basename(c.npz_path)})' if c.dataset == 'npz' else '')
  return f'{name}, {run.num_classes} classes, {"x".join(map(str, run.input_shape))} inputs'


def check_one_dataset(runs):
  datasets = {dataset_of(r) for r in runs}
  if len(datasets) > 1:
    held = '; '.join(f'{r.workdir}: {dataset_of(r)}' for r in runs)
    raise ConfigError(
      f'the workdirs hold different datasets and cannot share a table ({held}); compare '
      'workdirs of one dataset'
    )
  return datasets.pop()


def runnable(run, evaluation):
  """Whether `run_missing` can run `evaluation` on this workdir (and why not)."""
  c = run.config
  if evaluation.inference == EXPECTED and not methods.has_expected_inference(c):
    return False, "'expected' is 'raw' for this method"
  if evaluation.type == 'certify' and (
    evaluation.inference == EXPECTED or c.model not in ('resnet18', 'resnet34')
  ):
    return False, 'certification needs raw inference of a ResNet'
  if evaluation.type == 'transfer' and not evaluation.settings.workdir:
    return False, 'no eval.transfer.workdir in its config'
  return True, ''


def run_missing(runs, names):
  """Runs each evaluation of `names` a workdir lacks, on that workdir's own config, with a
  progress bar, after a line per evaluation with its time estimate (`estimates.say_plan`);
  returns the runs read again."""
  todo, planned, sizes = [], [], {}
  for run in runs:
    for name in names:
      config = loading.read_config(run.workdir).config
      config.eval.suite = name
      (evaluation,) = evaluations.resolve(config)
      if os.path.exists(workdir_lib.report_path(run.workdir, evaluation.name)):
        continue
      ok, why = runnable(run, evaluation)
      if ok:
        todo.append((run, config))
        planned.append((run, evaluation, evaluated_images(config, evaluation, sizes)))
      elif methods.has_expected_inference(run.config) or evaluation.inference == RAW:
        print(f'compare: not running {evaluation.name} on {run.workdir}: {why}')
  say_plan(planned)
  with StageBar(todo, desc='compare: missing reports') as bar:
    for run, config in bar:
      bar.stage(f'{run.name}: {config.eval.suite}')
      evaluate.evaluate(config, run.workdir)
  return [read_run(r.workdir) for r in runs]
