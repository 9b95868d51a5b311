"""Several workdirs side by side: the paper's Table 6 (adversarial training).

  python -m lpd_jax.compare --workdirs=A,B,C --out=DIR [--run_missing]

Table 6: one row per workdir, labelled by its method and adversarial training ("AdvT_PGD +
LPD"), with its accuracy (%) under FGSM and PGD at each eps of its `paper` report
(`eval_paper.json`; the adversarial-training configs of `configs/_variants.py` set the
paper's Table 6 grid, FGSM 0.04 and 0.08, PGD 0.02 and 0.04). With --run_missing, a
workdir without that report gets it first (eval.py's driver, suite 'paper', FGSM and PGD
only); otherwise it is shown as missing, never as 0. Writes table6.md and table6.json.
"""

import json
import os
import sys

from absl import app, flags

from lpd_jax import cli, evaluate, loading, methods
from lpd_jax.errors import ConfigError
from lpd_jax.suites.common import markdown_table, pct

_WORKDIRS = flags.DEFINE_string('workdirs', None, 'comma-separated workdirs')
_OUT = flags.DEFINE_string('out', None, 'folder for table6.md and table6.json')
_RUN_MISSING = flags.DEFINE_bool('run_missing', False, 'run the paper suite where it is missing')

ATTACKS = ('fgsm', 'pgd')


def read_paper_report(workdir, run_missing=False):
  """A workdir's eval_paper.json as a dict, or None when absent (after running the paper
  suite's FGSM and PGD rows first if `run_missing`)."""
  path = os.path.join(workdir, 'eval_paper.json')
  if not os.path.exists(path) and run_missing:
    config = loading.read_config(workdir)[0]
    config.eval.suite = 'paper'
    config.eval.paper.attacks = ','.join(ATTACKS)
    evaluate.evaluate(config, workdir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def table6(workdirs, run_missing=False):
  """-> (result dict, Markdown) of Table 6 over `workdirs` (all of one dataset)."""
  rows, datasets = [], set()
  for workdir in workdirs:
    saved = loading.read_config(workdir)
    if saved is None:
      raise ConfigError(f'{workdir} holds no trained ensemble (no ensemble.json)')
    config = saved[0]
    datasets.add(config.dataset)
    report = read_paper_report(workdir, run_missing)
    cells = {}
    if report is not None:
      for r in report['rows']:
        if r['attack'] in ATTACKS:
          cells[f'{r["attack"]} {r["param"]:g}'] = r['accuracy']
    rows.append(dict(workdir=os.path.abspath(workdir), label=methods.label(config), accuracy=cells))
  if len(datasets) > 1:
    raise ConfigError(f'the workdirs hold different datasets ({", ".join(sorted(datasets))})')
  columns = sorted(
    {c for r in rows for c in r['accuracy']}, key=lambda c: (ATTACKS.index(c.split()[0]), c)
  )
  header = ('Attacks', *(c.replace('fgsm', 'FGSM').replace('pgd', 'PGD') for c in columns))
  cells = [(r['label'], *(pct(r['accuracy'].get(c)) for c in columns)) for r in rows]
  markdown = '\n'.join(
    [
      f'Table 6: accuracy (%) of adversarially trained ensembles on {datasets.pop()} under '
      'FGSM and PGD (white-box, the paper suite, all evaluated points); - = no report.',
      '',
      markdown_table(header, cells),
    ]
  )
  return dict(columns=columns, rows=rows), markdown


def main(argv):
  del argv
  if not _WORKDIRS.value or not _OUT.value:
    raise app.UsageError('give --workdirs=A,B,... and --out=DIR')
  workdirs = [w.strip() for w in _WORKDIRS.value.split(',') if w.strip()]

  def write():
    result, markdown = table6(workdirs, _RUN_MISSING.value)
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, 'table6.json'), 'w') as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(_OUT.value, 'table6.md'), 'w') as f:
      f.write(markdown + '\n')
    print(markdown)

  cli.run_reporting_user_errors(write)


if __name__ == '__main__':
  app.run(main, argv=sys.argv)
