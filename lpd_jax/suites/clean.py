"""Suite 'clean': clean accuracy per member and of the ensemble, and the ambiguity entropy."""

import dataclasses

import numpy as np

from lpd_jax import predict, probes
from lpd_jax.suites.common import Metric, Report, Suite, describe, markdown_table, pct
from lpd_jax.suites.samples import array_samples, per_sample_npz


def run(ens, ctx):
  """Clean accuracy of each member and of the ensemble (argmax of the mean softmax, eq. 1)
  and the ambiguity entropy E (eq. 7) on the test prefix, in the ensemble's inference mode.
  Files: `clean_per_sample.npz` (test_index, labels, the ensemble's correctness [N] and the
  members' [K, N])."""
  r = predict.clean_accuracy(
    ens, ctx.images, ctx.labels, ctx.batch_size, progress=True, mesh=ctx.mesh
  )
  result = dict(
    num_examples=len(ctx.labels),
    member_accuracy=[float(a) for a in r['member_accuracy']],
    ensemble_accuracy=r['ensemble_accuracy'],
    ambiguity_entropy=float(probes.ambiguity_entropy(r['member_correct'])),
  )
  rows = [(f'member {k + 1}', pct(a)) for k, a in enumerate(result['member_accuracy'])]
  rows.append(('ensemble', pct(result['ensemble_accuracy'])))
  markdown = '\n'.join(
    [
      f'Clean accuracy on {describe(ens, ctx)}',
      '',
      markdown_table(('model', 'accuracy (%)'), rows),
      '',
      f'Ambiguity entropy E (eq. 7): {result["ambiguity_entropy"]:.4f}',
    ]
  )
  ensemble, members = np.asarray(r['ensemble_correct']), np.asarray(r['member_correct'])
  files = {'clean_per_sample.npz': per_sample_npz(ctx.labels, ensemble=ensemble, members=members)}
  return Report(result, markdown, files, metrics(result))


def metrics(result):
  """Ensemble and mean member accuracy, each member's, and the ambiguity entropy E."""
  n, members = result['num_examples'], result['member_accuracy']
  return [
    Metric('ensemble_accuracy', 'ensemble', result['ensemble_accuracy'], 'pct', n, 'eq. 1 argmax'),
    Metric('mean_member_accuracy', 'mean member', float(np.mean(members)), 'pct', n),
    *(
      Metric(f'member/{k}/accuracy', f'member {k + 1}', a, 'pct', n) for k, a in enumerate(members)
    ),
    Metric('ambiguity_entropy', 'E', result['ambiguity_entropy'], '{:.4f}', n, 'eq. 7'),
  ]


def per_sample(result, load):
  """The ensemble's and each member's correctness per test image (clean_per_sample.npz);
  the mean member accuracy is the mean of the members' fraction right per image."""
  arrays = load('clean_per_sample.npz')
  if arrays is None or 'ensemble' not in arrays:
    return {}
  members = np.asarray(arrays['members'], dtype=np.float64)
  ensemble = array_samples(arrays, 'ensemble')
  out = {'ensemble_accuracy': ensemble}
  out['mean_member_accuracy'] = dataclasses.replace(ensemble, values=members.mean(0))
  for k, correct in enumerate(members):
    out[f'member/{k}/accuracy'] = dataclasses.replace(ensemble, values=correct)
  return out


SUITE = Suite('clean', run, {}, metrics=metrics, per_sample=per_sample)
