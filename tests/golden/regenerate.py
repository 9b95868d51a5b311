"""Regenerates tests/golden/digits_study: the reports of the digits study and the tables
`lpd_jax.compare` builds from them, which tests/test_compare.py checks the code against.

  python tests/golden/regenerate.py                 # runs the study (about 10 min, 2 cores)
  python tests/golden/regenerate.py --from_root=DIR # the reports of a study already run there
  python tests/golden/regenerate.py --tables_only   # only tables.json, from the checked-in
                                                    # reports (seconds): after a change to
                                                    # compare's tables that is meant

The study is `python -m lpd_jax.study --config=configs/study/digits.py --root=DIR`
(Baseline and LPD, K = 3 width-4 ResNet-18s, every suite at small budgets, and a width-2
Baseline surrogate). Kept of each run: ensemble.json, metrics.jsonl, provenance.json and
every eval_*.json and per-sample file (*_per_sample.npz: compare's differences and intervals
pair them by test index; no checkpoints or plots); kept of the study:
study_log.jsonl. The study's folder is written as `<root>` in every file, so the golden
files do not depend on where the study ran. tables.json is `compare.compare` over the
golden Baseline and LPD workdirs: its tables and plot names.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(HERE, 'digits_study')
ROOT = '<root>'  # the study's folder in the golden files
RUNS = ('surrogate', 'baseline', 'lpd')
COLUMNS = ('baseline', 'lpd')  # the comparison's columns (the surrogate is not one)


def kept(name):
  return (
    name in ('ensemble.json', 'metrics.jsonl', 'provenance.json')
    or (name.startswith('eval_') and name.endswith('.json'))
    or name.endswith('_per_sample.npz')
  )


def copy_reports(root, golden):
  """The kept files of the study in `root` into `golden`, with `root` written as <root>."""
  root = os.path.abspath(root)
  shutil.rmtree(golden, ignore_errors=True)
  for run in RUNS:
    os.makedirs(os.path.join(golden, run))
    for name in sorted(os.listdir(os.path.join(root, run))):
      if not kept(name):
        continue
      if name.endswith('.npz'):  # binary, and holds no path
        shutil.copy(os.path.join(root, run, name), os.path.join(golden, run, name))
        continue
      with open(os.path.join(root, run, name)) as f:
        text = f.read().replace(root, ROOT)
      with open(os.path.join(golden, run, name), 'w') as f:
        f.write(text)
  shutil.copy(os.path.join(root, 'study_log.jsonl'), os.path.join(golden, 'study_log.jsonl'))


def golden_tables(golden=GOLDEN):
  """{'tables': [...], 'plots': [...]} of `compare.compare` over the golden columns."""
  sys.path.insert(0, REPO)
  from lpd_jax import compare

  result, _, _ = compare.compare([os.path.join(golden, run) for run in COLUMNS])
  return json.loads(json.dumps(dict(tables=result['tables'], plots=result['plots'])))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--from_root', default='', help='a digits study already run there')
  parser.add_argument('--tables_only', action='store_true', help='only tables.json')
  args = parser.parse_args()
  if not args.tables_only:
    root = args.from_root
    if not root:
      root = tempfile.mkdtemp(prefix='lpd_digits_study_')
      subprocess.run(
        [
          sys.executable,
          '-m',
          'lpd_jax.study',
          '--config=configs/study/digits.py',
          f'--root={root}',
        ],
        cwd=REPO,
        check=True,
      )
    copy_reports(root, GOLDEN)
  with open(os.path.join(GOLDEN, 'tables.json'), 'w') as f:
    json.dump(golden_tables(), f, indent=1, sort_keys=True)
    f.write('\n')
  print(f'wrote {GOLDEN}')


if __name__ == '__main__':
  main()
