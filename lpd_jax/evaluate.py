"""Evaluation of a trained ensemble: the reports `eval.py` writes.

`config.eval.suite` names the reports (comma-separated keys of SUITES). Each suite
gets the loaded Ensemble and the test split, returns a JSON-able dict, and the
driver writes `workdir/eval_<suite>.json` and prints its Markdown table.
"""

import json
import os

import jax
import numpy as np
from tqdm.auto import tqdm

from lpd_jax import checkpoint, data, probes
from lpd_jax import config as config_lib
from lpd_jax.attacks import report


@jax.jit
def _member_logits(ens, x):
  return ens.member_logits(x)


def member_logits(ens, images, labels, batch_size, progress=False):
  """Member logits [K, N, C] over a whole split, in evaluation mode."""
  out = []
  batches = data.eval_batches(images, labels, batch_size)
  total = -(-len(labels) // batch_size)
  bar = tqdm(batches, total=total, desc='logits', leave=False, disable=None if progress else True)
  for x, _, n in bar:
    out.append(np.asarray(_member_logits(ens, x))[:, :n])
  return np.concatenate(out, axis=1)


def clean_accuracy(ens, images, labels, batch_size, progress=False):
  """Clean accuracy of each member and of the ensemble (argmax of mean softmax, eq. 1).

  Returns:
    dict with member_accuracy [K], ensemble_accuracy, ambiguity_entropy (eq. 7),
    member_correct bool [K, N] and ensemble_correct bool [N].
  """
  logits = member_logits(ens, images, labels, batch_size, progress)
  member_correct = logits.argmax(-1) == labels[None]
  mean_probs = np.asarray(jax.nn.softmax(logits, axis=-1)).mean(axis=0)
  ensemble_correct = mean_probs.argmax(-1) == labels
  return dict(member_accuracy=member_correct.mean(axis=1),
              ensemble_accuracy=float(ensemble_correct.mean()),
              ambiguity_entropy=float(probes.ambiguity_entropy(member_correct)),
              member_correct=member_correct, ensemble_correct=ensemble_correct)


def clean_suite(ens, ds, config, workdir):
  """Clean accuracy per member and of the ensemble, and the ambiguity entropy (eq. 7)."""
  images, labels = test_prefix(ds, config)
  r = clean_accuracy(ens, images, labels, config.eval.batch_size, progress=True)
  result = dict(num_examples=len(labels),
                member_accuracy=[float(a) for a in r['member_accuracy']],
                ensemble_accuracy=r['ensemble_accuracy'],
                ambiguity_entropy=r['ambiguity_entropy'])
  rows = [f'| member {k + 1} | {100 * a:.2f} |' for k, a in enumerate(result['member_accuracy'])]
  table = '\n'.join([
      f'Clean accuracy on {len(labels)} test images ({config.dataset}, K = {ens.num_members}, '
      f'method {config.method})', '', '| model | accuracy (%) |', '| --- | --- |', *rows,
      f"| ensemble | {100 * result['ensemble_accuracy']:.2f} |", '',
      f"Ambiguity entropy E (eq. 7): {result['ambiguity_entropy']:.4f}"])
  return result, table


SUITES = {'clean': clean_suite, 'probes': probes.probes_suite, 'paper': report.paper_suite,
          'sweep': report.sweep_suite, 'transfer': report.transfer_suite}


def test_prefix(ds, config):
  """The first config.eval.num_examples test images and labels (all if -1)."""
  n = config.eval.num_examples
  n = len(ds.test_labels) if n is None or n < 0 else n
  return ds.test_images[:n], ds.test_labels[:n]


def evaluate(config, workdir):
  """Runs the suites in config.eval.suite on the latest checkpoint of `workdir`.

  Returns {suite: result dict}; writes eval_<suite>.json and eval_<suite>.md.
  """
  suites = [s.strip() for s in config.eval.suite.split(',') if s.strip()]
  unknown = [s for s in suites if s not in SUITES]
  if unknown:
    raise config_lib.ConfigError(f'unknown eval.suite {unknown}; choose from {sorted(SUITES)}')
  config_lib.validate(config)
  ens = checkpoint.load(workdir, config)
  ds = data.load_dataset(config)
  results = {}
  for name in suites:
    result, table = SUITES[name](ens, ds, config, workdir)
    with open(os.path.join(workdir, f'eval_{name}.json'), 'w') as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(workdir, f'eval_{name}.md'), 'w') as f:
      f.write(table + '\n')
    print(table, flush=True)
    results[name] = result
  return results
