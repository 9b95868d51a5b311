"""Suite 'clean': clean accuracy per member and of the ensemble, and the ambiguity entropy."""

import numpy as np

from lpd_jax import predict, probes
from lpd_jax.suites.common import Metric, Report, Suite, describe, markdown_table, pct


def run(ens, ctx):
  """Clean accuracy of each member and of the ensemble (argmax of the mean softmax, eq. 1)
  and the ambiguity entropy E (eq. 7) on the test prefix, in the ensemble's inference mode."""
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
  return Report(result, markdown, metrics=metrics(result))


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


SUITE = Suite('clean', run, {}, metrics=metrics)
