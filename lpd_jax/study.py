"""A whole study in one command: train every run of a study config, evaluate the suites
it asks for, and write the comparison tables (`lpd_jax.compare`).

  python -m lpd_jax.study --config=configs/study/cifar10_subset.py --root=DIR [--only=a,b]

A study config (`configs/study/*.py`) is an ml_collections ConfigDict:

  dataset_config   the dataset file every run's config comes from (`configs/cifar10.py`)
  order            comma-separated run names: the order of training, evaluation and of the
                   comparison's columns
  train            overrides applied to every run's config (width, num_epochs, ...)
  eval             overrides of every run's config.eval (nested: eval.robust.steps ...); an
                   evaluation's group may also set its own `test_examples`, `batch_size` and
                   `inference` (eval.clean.test_examples=-1: clean accuracy on all test
                   images), and a new group with a `type` is a named evaluation
                   (`lpd_jax.evaluations`)
  suites           the evaluations every run gets, by name: `robust`, `robust_expected`
                   (an `_expected` one is skipped for a method without keep rates, where
                   'expected' is 'raw')
  runs.<name>      spec (the dataset file's variant, `lpd`, `deg`, `lpd,advt_pgd`), overrides
                   (fields of that run's config: seed, model, width ...), suites (this run's
                   list instead of the study's; '' = the study's), surrogates (run names whose
                   workdirs are this run's transfer surrogates), audit_surrogate (a run name),
                   compare (False: a run trained only as someone's surrogate, not a column),
                   start_from (a run name: its members start from that run's checkpoint,
                   `config.init_from`; DVERGE from Baseline as its reference does)

Each run lives in DIR/<name>; runs are trained and evaluated one after the other in
`order` (a run's surrogates come before it), so the first reports are there early.
Everything resumes: a trained run is not trained again (`train_and_evaluate` returns at
once), and a suite whose report is in the workdir is not run again (delete the report, or
the workdir, to redo it). Wall times go to DIR/study_log.jsonl (one line per training and
per suite; summed up in DIR/compare/wall_times.md), the tables to DIR/compare.
"""

import json
import os
import sys
import time

import ml_collections
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from lpd_jax import compare, evaluate, evaluations, methods, suites, train
from lpd_jax import config as config_lib
from lpd_jax.errors import ConfigError
from lpd_jax.names import split_names
from lpd_jax.suites.common import markdown_table

RUN_DEFAULTS = dict(
  spec='',
  overrides={},
  suites='',
  surrogates='',
  audit_surrogate='',
  compare=True,
  start_from='',
)


def split(text):
  return list(split_names(text))


def overlay(config, overrides, where='config'):
  """Sets every (nested) field of `overrides` on the locked ConfigDict `config`; a field
  `config` does not have is a ConfigError naming it (ConfigDict's own update ignores it),
  except an evaluation's own fields (`evaluations.INSTANCE_FIELDS`) and a new evaluation
  group (one with a `type`) under config.eval."""
  for key, value in dict(overrides).items():
    if key not in config:
      group = isinstance(value, (dict, ml_collections.ConfigDict))
      new_group = where == 'config.eval' and group and 'type' in value
      if new_group:
        if value['type'] not in suites.REGISTRY:
          raise ConfigError(f'study {where}.{key}.type: unknown suite {value["type"]!r}')
        with config.unlocked():
          config[key] = ml_collections.ConfigDict(suites.REGISTRY[value['type']].default_settings())
      elif where.startswith('config.eval.') and key in evaluations.INSTANCE_FIELDS:
        with config.unlocked():
          config[key] = value
        continue
      else:
        raise ConfigError(f'study override {where}.{key}: {where} has no field {key!r}')
    if isinstance(config[key], ml_collections.ConfigDict):
      overlay(config[key], value, f'{where}.{key}')
    else:
      config[key] = tuple(value) if isinstance(value, list) else value
  return config


def load_config_file(path, spec):
  """`get_config(spec)` of the config file at `path` (relative to the working directory or
  to the repository that holds `configs/`), as `--config=path:spec` would give it."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  full = path if os.path.isfile(path) else os.path.join(repo, path)
  if not os.path.isfile(full):
    raise ConfigError(f'study dataset_config {path!r} is not a file')
  for root in (os.path.dirname(os.path.dirname(os.path.abspath(full))), repo):
    if root not in sys.path:  # configs import `configs._variants`
      sys.path.insert(0, root)
  parser = ConfigFileFlagParser(name='config')
  return parser.parse(f'{full}:{spec}' if spec else full)


def runs_of(study):
  """-> ordered list of (name, run settings ConfigDict with RUN_DEFAULTS filled in)."""
  order = split(study.order)
  unknown = [n for n in order if n not in study.runs]
  missing = [n for n in study.runs if n not in order]
  if unknown or missing or len(set(order)) != len(order):
    raise ConfigError(
      f'study order {study.order!r} must name every run of study.runs once '
      f'(unknown: {unknown}, not in order: {missing})'
    )
  out = []
  for position, name in enumerate(order):
    run = ml_collections.ConfigDict(RUN_DEFAULTS)
    for key, value in study.runs[name].items():
      if key not in run:
        raise ConfigError(f'study.runs.{name}.{key}: a run has {", ".join(RUN_DEFAULTS)}')
      run[key] = value
    for other in split(run.surrogates) + split(run.audit_surrogate) + split(run.start_from):
      if other not in order[:position]:
        raise ConfigError(
          f'study.runs.{name}: {other!r} (a surrogate or start_from) must be a run of the '
          f'study that comes before it in study.order'
        )
    out.append((name, run))
  return out


def run_config(study, root, name, run):
  """The training and evaluation config of one run of the study."""
  config = load_config_file(study.dataset_config, run.spec)
  overlay(config, study.train)
  overlay(config.eval, study.eval, 'config.eval')
  overlay(config, run.overrides)
  surrogates = [os.path.join(root, s) for s in split(run.surrogates)]
  if surrogates:
    config.eval.transfer.workdir = ','.join(surrogates)
  if run.audit_surrogate:
    config.eval.audit.surrogate = os.path.join(root, run.audit_surrogate)
  if run.start_from:  # its members start from that run's checkpoint (DVERGE from Baseline)
    config.init_from = os.path.join(root, run.start_from)
  return config_lib.validate(config)


def evaluations_of(study, run, config):
  """-> the Evaluations this run gets: its (or the study's) list, without transfer for a run
  without surrogates and without 'expected' ones where 'expected' is 'raw'."""
  out = []
  for name in split(run.suites or study.suites):
    with config.unlocked():
      config.eval.suite = name
    (evaluation,) = evaluations.resolve(config)
    if evaluation.type == 'transfer' and not split(run.surrogates):
      continue
    if evaluation.inference == 'expected' and not methods.has_expected_inference(config):
      continue
    out.append(evaluation)
  return out


def log(root, **record):
  with open(os.path.join(root, 'study_log.jsonl'), 'a') as f:
    f.write(json.dumps(dict(record, when=time.strftime('%Y-%m-%dT%H:%M:%S'))) + '\n')


def chosen_runs(runs, only):
  """The runs named in `only` (all if empty), in study order; ConfigError for a name the
  study does not have."""
  unknown = sorted(set(only) - {name for name, _ in runs})
  if unknown:
    raise ConfigError(f'--only names runs the study does not have: {unknown}')
  return [(n, r) for n, r in runs if not only or n in only]


def run_study(study, root, only=(), train_only=False):
  """Trains, evaluates and compares the runs of `study` under `root` (see the module doc).

  Returns the comparison's result dict (None with `train_only`)."""
  runs = runs_of(study)
  chosen = chosen_runs(runs, only)
  configs = {name: run_config(study, root, name, run) for name, run in runs}
  os.makedirs(root, exist_ok=True)
  for name, run in chosen:
    workdir = os.path.join(root, name)
    print(f'== study: training {name} ({methods.label(configs[name])})', flush=True)
    start = time.perf_counter()
    train.train_and_evaluate(configs[name], workdir)
    log(root, run=name, step='train', seconds=round(time.perf_counter() - start, 1))
    if train_only:
      continue
    config = configs[name]
    for evaluation in evaluations_of(study, run, config):
      if os.path.exists(evaluate.report_path(workdir, evaluation.name)):
        continue
      print(f'== study: {name}: evaluation {evaluation.name}', flush=True)
      config.eval.suite = evaluation.name
      start = time.perf_counter()
      evaluate.evaluate(config, workdir)
      log(
        root,
        run=name,
        step='eval',
        evaluation=evaluation.name,
        suite=evaluation.type,
        inference=evaluation.inference,
        seconds=round(time.perf_counter() - start, 1),
      )
  if train_only:
    return None
  columns = [os.path.join(root, name) for name, run in runs if run.compare]
  result = compare.write(columns, os.path.join(root, 'compare'))
  write_wall_times(root, os.path.join(root, 'compare'))
  return result


def wall_times(root):
  """DIR/study_log.jsonl -> {run: {'train': s, '<evaluation>': s, 'total': s}} in the log's
  order of runs: training is the sum of the run's training lines (a run found trained adds
  its load time, under a second), an evaluation its last line (one found done is not
  logged again)."""
  times = {}
  with open(os.path.join(root, 'study_log.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      run = times.setdefault(record['run'], {'train': 0.0})
      if record['step'] == 'train':
        run['train'] += record['seconds']
      else:
        name = record.get('evaluation') or evaluations.default_name(
          record['suite'], record['inference']
        )
        run[name] = record['seconds']
  for run in times.values():
    run['total'] = sum(run.values())
  return times


def write_wall_times(root, out):
  """Writes wall_times.md and wall_times.json (`wall_times`) into `out`; returns the
  Markdown."""
  times = wall_times(root)
  steps = list(dict.fromkeys(k for run in times.values() for k in run if k != 'total'))
  steps.append('total')
  rows = [
    [name] + [f'{run[k]:.0f}' if k in run else '' for k in steps] for name, run in times.items()
  ]
  rows.append(
    ['all runs'] + ['' for _ in steps[:-1]] + [f'{sum(r["total"] for r in times.values()):.0f}']
  )
  text = (
    f'Wall seconds of each step of the study in {root} (from study_log.jsonl; blank: not run).'
    '\n\n' + markdown_table(['run', *steps], rows) + '\n'
  )
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'wall_times.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(out, 'wall_times.json'), 'w') as f:
    json.dump(times, f, indent=1)
  return text


def _flat(overrides, prefix):
  """Nested overrides -> ['--config.a.b=value', ...]."""
  out = []
  for key, value in dict(overrides).items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out += _flat(value, f'{prefix}{key}.')
    elif isinstance(value, (tuple, list)):
      out.append(f"--config.{prefix}{key}='({','.join(map(str, value))},)'")
    else:
      out.append(f'--config.{prefix}{key}={value}')
  return out


def once(flags):
  """Command-line flags with each field once: a later flag of a field replaces an earlier
  one (the run's overrides beat the study's, an evaluation's own prefix and batch beat the
  study's eval ones, as `run_config` and `evaluations.resolve` apply them) and takes its
  place at the end."""
  out = {}
  for flag in flags:
    field = flag.split('=', 1)[0]
    out.pop(field, None)
    out[field] = flag
  return list(out.values())


def own_fields(evaluation):
  """An evaluation's own fields that are not its type's settings (`INSTANCE_FIELDS`)."""
  defaults = suites.REGISTRY[evaluation.type].default_settings()
  return {
    k: evaluation.settings[k]
    for k in evaluations.INSTANCE_FIELDS
    if k in evaluation.settings and k not in defaults
  }


def _eval_flags(eval_overrides):
  """The study's eval overrides as flags of the dataset config's fields: the evaluations'
  own fields and new evaluation groups have no flag (`commands` handles them)."""
  shared = {}
  for key, value in dict(eval_overrides).items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      if 'type' in value:
        continue
      own = suites.REGISTRY[key].default_settings() if key in suites.REGISTRY else {}
      value = {
        k: v for k, v in dict(value).items() if k not in evaluations.INSTANCE_FIELDS or k in own
      }
    shared[key] = value
  return _flat(shared, 'eval.')


def commands(study, root, only=()):
  """The train.py and eval.py commands that do what `run_study` does for each run, with
  every override of the study on the command line, as shell lines. An evaluation's own
  test-set prefix and batch size become its eval.py call's `eval.num_examples` and
  `eval.batch_size`; a named evaluation group of the study has no command-line form and is
  printed as a comment."""
  lines = []
  for name, run in chosen_runs(runs_of(study), only):
    workdir = os.path.join(root, name)
    config = run_config(study, root, name, run)
    spec = f':{run.spec}' if run.spec else ''
    eval_flags = _eval_flags(study.eval)
    for field in ('transfer.workdir', 'audit.surrogate'):
      value = config.eval[field.split('.')[0]][field.split('.')[1]]
      if value:
        eval_flags.append(f'--config.eval.{field}={value}')
    train_flags = [*_flat(study.train, ''), *eval_flags, *_flat(run.overrides, '')]
    if config.init_from:
      train_flags.append(f'--config.init_from={config.init_from}')
    lines.append(
      f'python train.py --config={study.dataset_config}{spec} --workdir={workdir} '
      + ' '.join(once(train_flags))
    )
    for evaluation in evaluations_of(study, run, config):
      own = own_fields(evaluation)
      if 'type' in own:
        lines.append(f'# {name}: evaluation {evaluation.name} is defined in the study config')
        continue
      call = {
        'num_examples' if k == 'test_examples' else k: v
        for k, v in own.items()
        if k in ('test_examples', 'batch_size')
      }
      flags_ = [*eval_flags, *_flat(call, 'eval.')]
      lines.append(
        f'python eval.py --workdir={workdir} --config.eval.suite={evaluation.name} '
        + ' '.join(once(flags_))
      )
  return lines


def main(argv):
  """`python -m lpd_jax.study`: the flags are defined under __main__ only (a library module
  defines none)."""
  from absl import app, flags

  from lpd_jax import cli

  del argv
  FLAGS = flags.FLAGS
  if FLAGS.config is None or not FLAGS.root:
    raise app.UsageError('give --config=configs/study/<file>.py and --root=DIR')
  only = split(FLAGS.only)
  if FLAGS.print_commands:
    cli.run_reporting_user_errors(
      lambda: print('\n'.join(commands(FLAGS.config, FLAGS.root, only)))
    )
    return
  cli.run_reporting_user_errors(run_study, FLAGS.config, FLAGS.root, only, FLAGS.train_only)


if __name__ == '__main__':
  from absl import flags
  from ml_collections import config_flags

  from lpd_jax import cli

  # Study and dataset configs import `configs.*`: the repository root, as for train.py.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  config_flags.DEFINE_config_file('config', None, 'a study config (configs/study/*.py)')
  flags.DEFINE_string('root', None, 'folder of the study: one workdir per run')
  flags.DEFINE_string('only', '', 'comma-separated run names: train and evaluate only these')
  flags.DEFINE_bool('train_only', False, 'train the runs, evaluate nothing')
  flags.DEFINE_bool(
    'print_commands', False, 'print the train.py / eval.py commands of each run, run nothing'
  )
  cli.run(main)
