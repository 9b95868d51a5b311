"""The eval driver: loads a workdir's ensemble and its test data, runs the suites of
`config.eval.suite` (`lpd_jax.suites.REGISTRY`) and writes what they return.

For each suite: `eval_<suite>.json` (its JSON plus 'suite', 'inference' and 'files'),
`eval_<suite>.md` (its Markdown, also printed) and the files it returns (plots,
per-sample arrays), all in the workdir. Under 'expected' inference every one of these
names takes an `_expected` suffix (`eval_robust_expected.json`, `eval_sweep_expected.png`),
so the reports of both modes live side by side (`report_file`).
"""

import dataclasses
import json
import os

import ml_collections

from lpd_jax import checkpoint, compilation_cache, data, loading, suites
from lpd_jax import config as config_lib
from lpd_jax.errors import ConfigError
from lpd_jax.progress import phase

SUITES = suites.REGISTRY


def report_file(name, inference='raw'):
  """The file name a report file `name` ('eval_paper.json', 'eval_sweep.png') is written
  under for `inference`: unchanged for 'raw', `<stem>_expected<ext>` for 'expected'."""
  if inference == 'raw':
    return name
  stem, ext = os.path.splitext(name)
  return f'{stem}_{inference}{ext}'


def report_path(workdir, suite, inference='raw'):
  """Path of the JSON report of `suite` in `inference` mode in `workdir`."""
  return os.path.join(workdir, report_file(f'eval_{suite}.json', inference))


def test_prefix(ds, config):
  """The first config.eval.num_examples test images and labels (all if -1)."""
  n = config.eval.num_examples
  n = len(ds.test_labels) if n is None or n < 0 else n
  return ds.test_images[:n], ds.test_labels[:n]


def evaluate(config, workdir):
  """Runs the suites in config.eval.suite on the latest checkpoint of `workdir`, in the
  inference mode config.eval.inference.

  Returns {suite: JSON dict}; writes eval_<suite>.json, eval_<suite>.md and the suites' files
  (named by `report_file`, with an `_expected` suffix under 'expected' inference).
  """
  names = config_lib.suite_names(config)
  config_lib.validate(config)
  config_lib.validate_eval(config)
  compilation_cache.enable(config.compilation_cache)
  with phase(f'loading the checkpoint of {workdir}'):
    ens = loading.load(workdir, config)
    print(f' epoch {ens.meta["epoch"]}, inference {ens.inference};', end='')
  checkpoint.check_writable(workdir)
  with phase(f'loading {config.dataset}'):
    ds = data.load_dataset(config)
  images, labels = test_prefix(ds, config)
  frozen = ml_collections.FrozenConfigDict(config)

  def load_other(other):
    """Another workdir's ensemble for this data, in this run's inference mode."""
    saved = loading.read_config(other)
    if saved is not None:
      theirs = (saved[0].dataset, tuple(saved[2]), saved[1])
      ours = (config.dataset, tuple(ds.input_shape), ds.num_classes)
      if theirs != ours:
        raise ConfigError(
          f'workdir {other!r} holds an ensemble for another dataset (dataset, '
          f'input shape, classes) = {theirs}; this one is {ours}'
        )
    other_ens = loading.load(other, inference=ens.inference)
    # How members execute is this run's choice, not the other training run's.
    return other_ens.replace(
      members=dataclasses.replace(other_ens.members, strategy=ens.members.strategy)
    )

  results = {}
  for name in names:
    ctx = suites.SuiteContext(
      config=frozen, cfg=frozen.eval[name], images=images, labels=labels, load=load_other
    )
    report = SUITES[name].run(ens, ctx)
    name_of = lambda file_name: report_file(file_name, ens.inference)
    result = dict(
      report.json, suite=name, inference=ens.inference, files=sorted(map(name_of, report.files))
    )
    with open(os.path.join(workdir, name_of(f'eval_{name}.json')), 'w') as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(workdir, name_of(f'eval_{name}.md')), 'w') as f:
      f.write(report.markdown + '\n')
    for file_name, content in report.files.items():
      with open(os.path.join(workdir, name_of(file_name)), 'wb') as f:
        f.write(content)
    print(report.markdown, flush=True)
    results[name] = result
  return results
