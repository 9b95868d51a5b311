"""The eval driver: loads a workdir's ensemble and its test data, runs the named
evaluations of `config.eval.suite` (`lpd_jax.evaluations`) and writes what they return.

For each evaluation `name`: `eval_<name>.json` (its JSON plus 'evaluation', 'suite' (its
type), 'inference', 'test_examples' (the test-set prefix it ran on), 'files', 'metrics',
the flat records `lpd_jax.compare` pivots, and 'provenance', the software and machine that
evaluated it, `lpd_jax.provenance`),
`eval_<name>.md` (its Markdown, also printed) and the files it returns (plots, per-sample
arrays), in the workdir. The default instances are named after their type, and `<type>_expected`
under 'expected' inference (`eval_robust_expected.json`, `eval_sweep_expected.png`), so the
reports of both modes live side by side.
"""

import json
import os
import shutil

import ml_collections

from lpd_jax import (
  compilation_cache,
  data,
  evaluations,
  interrupts,
  loading,
  provenance,
  sharding,
  suites,
)
from lpd_jax import config as config_lib
from lpd_jax import workdir as workdir_lib
from lpd_jax.errors import ConfigError
from lpd_jax.progress import phase


def report_file(file_name, evaluation_name, suite_type):
  """The name a suite's file `file_name` ('eval_sweep.png', 'paper_per_sample.npz') is
  written under for evaluation `evaluation_name` of type `suite_type`: unchanged for the
  type's raw default instance, else with the type's name replaced by the instance's
  ('eval_sweep_expected.png')."""
  if evaluation_name == suite_type:
    return file_name
  if suite_type in file_name:
    return file_name.replace(suite_type, evaluation_name, 1)
  return f'{evaluation_name}_{file_name}'


def report_path(workdir, suite, inference='raw'):
  """Path of the JSON report of evaluation `suite` in `workdir`; with a suite type and an
  `inference`, of that type's default instance in that mode (eval_robust_expected.json)."""
  return workdir_lib.report_path(workdir, evaluations.default_name(suite, inference))


def test_prefix(ds, num_examples):
  """The first `num_examples` test images and labels (all if -1 or None)."""
  n = len(ds.test_labels) if num_examples is None or num_examples < 0 else num_examples
  return ds.test_images[:n], ds.test_labels[:n]


def evaluate(config, workdir):
  """Runs the evaluations of config.eval.suite on the latest checkpoint of `workdir`.

  Returns {evaluation name: JSON dict}; writes eval_<name>.json, eval_<name>.md and the
  suites' files (named by `report_file`) into the workdir, or into config.eval.reports_dir
  when set (a workdir that is read-only, or shared): that folder also gets the workdir's
  ensemble.json and metrics.jsonl, so `lpd_jax.compare` reads it as a workdir.
  """
  config_lib.validate(config)
  config_lib.validate_eval(config)
  if config.distributed:
    sharding.initialize_distributed(config)
  chosen = evaluations.resolve(config)
  mesh = evaluation_mesh(config)
  compilation_cache.enable(config.compilation_cache)
  with phase(f'loading the checkpoint of {workdir}'):
    ens = loading.load(workdir, config)
    print(f' epoch {ens.meta["epoch"]};', end='')
  say_which_checkpoint(workdir, ens.meta['checkpoint'], ens.config.num_epochs)
  out = config.eval.reports_dir or workdir
  writer = sharding.is_main_process()  # one writer when several processes evaluate together
  if writer:
    workdir_lib.check_writable(out)
  if out != workdir and writer:
    for name in (workdir_lib.META_FILE, workdir_lib.METRICS_FILE):
      if os.path.isfile(workdir_lib.path(workdir, name)):
        shutil.copyfile(workdir_lib.path(workdir, name), workdir_lib.path(out, name))
  with phase(f'loading {config.dataset}'):
    ds = data.load_dataset(config)
  frozen = ml_collections.FrozenConfigDict(config)

  def loader(inference):
    def load_other(other):
      """Another workdir's ensemble for this data, in this evaluation's inference mode."""
      saved = loading.read_config(other)
      if saved is not None:
        theirs = (saved.config.dataset, tuple(saved.input_shape), saved.num_classes)
        ours = (config.dataset, tuple(ds.input_shape), ds.num_classes)
        if theirs != ours:
          raise ConfigError(
            f'workdir {other!r} holds an ensemble for another dataset (dataset, '
            f'input shape, classes) = {theirs}; this one is {ours}'
          )
      other_ens = loading.load(other, inference=inference)
      # How members execute is this run's choice, not the other training run's.
      return other_ens.replace(members=other_ens.members.with_strategy(ens.members.strategy))

    return load_other

  results = {}
  evaluated_under = provenance.collect(ens.config.dtype)
  for evaluation in chosen:
    interrupts.check()  # a Ctrl-C that a finaliser swallowed stops before the next one
    images, labels = test_prefix(ds, evaluation.num_examples)
    ctx = suites.SuiteContext(
      config=frozen,
      cfg=ml_collections.FrozenConfigDict(evaluation.settings),
      images=images,
      labels=labels,
      load=loader(evaluation.inference),
      batch_size=int(evaluation.batch_size),
      mesh=mesh,
    )
    report = suites.REGISTRY[evaluation.type].run(ens.with_inference(evaluation.inference), ctx)
    name_of = lambda file_name: report_file(file_name, evaluation.name, evaluation.type)
    settings = evaluations.settings_of(evaluation, len(labels))
    result = dict(
      report.json,
      evaluation=evaluation.name,
      suite=evaluation.type,
      inference=evaluation.inference,
      test_examples=len(labels),
      checkpoint=ens.meta['checkpoint'],
      settings=settings,
      evaluation_key=evaluations.settings_key(settings),
      files=sorted(map(name_of, report.files)),
      metrics=[m.to_json() for m in report.metrics],
      provenance=evaluated_under,
    )
    results[evaluation.name] = result
    if writer:
      write_report(out, evaluation.name, result, report, name_of)
  return results


def say_which_checkpoint(workdir, identity, num_epochs):
  """A line, before any evaluation runs, when the checkpoint evaluated is not the run's
  last word: an older one because the newest did not verify, or one of a run still
  training. (Each report records `identity`, and compare marks it.)"""
  epoch, newest = identity['epoch'], identity['newest_epoch']
  if epoch < newest:
    print(
      f'note: evaluating the checkpoint of epoch {epoch}, not the newest (epoch {newest}, '
      'which did not verify: the warning above); the reports say so',
      flush=True,
    )
  holder = workdir_lib.training_holder(workdir)
  if holder:
    print(
      f'note: {workdir} is being trained right now ({holder}): this evaluates epoch {epoch} '
      f'of {num_epochs}, its newest committed checkpoint; evaluate again when training ends',
      flush=True,
    )


def _differences(old, new):
  """What differs between two reports of one evaluation name (points, checkpoint,
  settings fields), or [] when they are the same evaluation of the same weights."""
  out = []
  if workdir_lib.report_test_images(old) != new['test_examples']:
    out.append('test images')
  if (old.get('checkpoint') or {}).get('digest') != new['checkpoint']['digest']:
    out.append('checkpoint')
  if old.get('evaluation_key') != new['evaluation_key']:
    before, after = old.get('settings') or {}, new['settings']
    fields = sorted(
      k
      for k in {*before.get('settings', {}), *after['settings']}
      if before.get('settings', {}).get(k) != after['settings'].get(k)
    )
    fields += [k for k in ('inference', 'batch_size') if before.get(k) != after.get(k)]
    if fields or not before:  # (other points alone are said above)
      out.append('settings' + (f' ({", ".join(fields)})' if fields else ''))
  return out


def write_report(out, name, result, report, name_of):
  """Writes eval_<name>.json / .md and the suite's files into `out`. An earlier report of
  `name` on other points, settings or weights is first moved, with its files, into
  reports_history/ (`workdir.keep_in_history`), and one line says what replaced what."""
  path = workdir_lib.report_path(out, name)
  if os.path.isfile(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError):
      old = {}
    changed = _differences(old, result) if isinstance(old, dict) else ['unreadable']
    if changed:
      files = [os.path.basename(path), f'eval_{name}.md', *old.get('files', [])]
      kept = workdir_lib.keep_in_history(out, name, old.get('evaluation_key', 'unrecorded'), files)
      before, after = workdir_lib.describe_report(old), workdir_lib.describe_report(result)
      print(
        f'eval_{name}.json: the earlier report ({before}) moved to {kept}; replaced by this one '
        f'({after}): other {", ".join(changed)}',
        flush=True,
      )
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(out, f'eval_{name}.md'), 'w') as f:
    f.write(report.markdown + '\n')
  for file_name, content in report.files.items():
    with open(os.path.join(out, name_of(file_name)), 'wb') as f:
      f.write(content)
  print(report.markdown, flush=True)


def evaluation_mesh(config):
  """config.eval.data_devices -> the mesh every suite splits its batches over (None: one
  device), said in one line when there is one."""
  try:
    mesh = sharding.evaluation_mesh(config.eval.data_devices)
  except ValueError as e:
    raise ConfigError(f'config.eval.data_devices={config.eval.data_devices}: {e}') from None
  if mesh is not None and sharding.is_main_process():
    print(
      f'evaluating data parallel: each batch split over {sharding.data_size(mesh)} devices '
      f'of {sharding.process_count()} process(es)'
    )
  return mesh
