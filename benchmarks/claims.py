"""Research claims the docs quote, measured on scikit-learn's digits (no download): what
each training method does, checked by training it. Not unit tests (they test code); these
are results, and a result can change with a seed or a machine (docs/results.md: across
machines a run moves like another seed).

  quickstart   configs/quickstart.py as shipped reaches >= 90% ensemble test accuracy
  alignment    DEG, GAL and TRS end with a lower median gradient cosine L_d than Baseline
               (test set, raw inference; the probes of Tables 2-3), same seed and budget
  entropy      ADP ends with a higher ambiguity entropy E (eq. 7) than Baseline
  advt_fgsm    FGSM adversarial training (eps 0.1, half of each batch) raises accuracy
               under FGSM at eps 0.1 by more than 3 points over Baseline, 15 epochs each

Runs: K = 3 ResNet-18s of width 4, `configs/digits.py:<method>`, 2 epochs (15 for the
adversarial pair), the second-order methods with vmapped members, TRS with one PGD step.
Prints a table (claim, measured, holds) and writes JSON to benchmarks/out/claims_cpu.json
(or --out); exits 1 if a claim does not hold. The committed record is
benchmarks/results/claims_cpu.json, from

  python benchmarks/claims.py --out=benchmarks/results/claims_cpu.json
"""

import argparse
import os
import platform
import tempfile
import time

import _results
import jax
import numpy as np

import lpd_jax
from lpd_jax import attacks, data, predict, probes, train
from lpd_jax.study import load_config_file

SHORT = dict(width=4, num_epochs=2)
LONG = dict(width=4, num_epochs=15)
RUNS = {  # name: (configs/digits.py variant, overrides)
  'baseline': ('baseline', SHORT),
  'deg': ('deg', dict(SHORT, member_strategy='vmap')),
  'adp': ('adp', SHORT),
  'gal': ('gal', dict(SHORT, member_strategy='vmap')),
  'trs': ('trs', dict(SHORT, member_strategy='vmap')),
  'baseline-15': ('baseline', LONG),
  'advt_fgsm-15': ('baseline,advt_fgsm', LONG),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--root', default='', help='where the runs are trained (default: a temp dir)')
  p.add_argument('--out', default='', help='JSON path (default benchmarks/out/claims_cpu.json)')
  return p.parse_args(argv)


def trained(root, name, spec, overrides, seconds):
  """The workdir of one run, trained (or found trained) under `root`."""
  config = load_config_file('configs/digits.py', spec)
  with config.unlocked():
    config.update(overrides)
    if spec == 'trs':
      config.trs.pgd_steps = 1
  workdir = os.path.join(root, name)
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  seconds[name] = round(time.perf_counter() - start, 1)
  return lpd_jax.load(workdir)


def quickstart_accuracy(root, seconds):
  config = load_config_file('configs/quickstart.py', '')
  workdir = os.path.join(root, 'quickstart')
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  seconds['quickstart'] = round(time.perf_counter() - start, 1)
  ens = lpd_jax.load(workdir)
  ds = data.load_dataset(ens.config)
  return predict.clean_accuracy(ens, ds.test_images, ds.test_labels, 256)['ensemble_accuracy']


def main(argv=None):
  args = parse_args(argv)
  root = args.root or tempfile.mkdtemp(prefix='lpd_claims_')
  seconds = {}
  ens = {name: trained(root, name, *spec, seconds) for name, spec in RUNS.items()}
  ds = data.load_dataset(ens['baseline'].config)
  x, y = data.to_float(ds.test_images), ds.test_labels

  median_cos = {
    name: float(probes.probe_quantiles(ens[name], x, y)['gradient_cosine'][0.5])
    for name in ('baseline', 'deg', 'gal', 'trs')
  }

  def entropy(name):
    logits = predict.member_logits(ens[name], x, 256)
    return float(probes.ambiguity_entropy(logits.argmax(-1) == y[None]))

  entropies = {name: entropy(name) for name in ('baseline', 'adp')}
  fgsm = {}
  for name in ('baseline-15', 'advt_fgsm-15'):
    x_adv = attacks.fgsm(ens[name].log_predict, x, y, eps=0.1)
    fgsm[name] = float(np.mean(np.asarray(ens[name].predict(x_adv)).argmax(-1) == y))
  quickstart = quickstart_accuracy(root, seconds)

  claims = [
    dict(
      claim='quickstart reaches >= 90% ensemble test accuracy',
      measured=f'{100 * quickstart:.1f}%',
      holds=quickstart >= 0.90,
    ),
    *(
      dict(
        claim=f'{m.upper()} lowers the median gradient cosine below Baseline',
        measured=f'{median_cos[m]:.3f} vs {median_cos["baseline"]:.3f}',
        holds=median_cos[m] < median_cos['baseline'],
      )
      for m in ('deg', 'gal', 'trs')
    ),
    dict(
      claim='ADP raises the ambiguity entropy above Baseline',
      measured=f'{entropies["adp"]:.3f} vs {entropies["baseline"]:.3f}',
      holds=entropies['adp'] > entropies['baseline'],
    ),
    dict(
      claim='FGSM adversarial training raises FGSM (eps 0.1) accuracy by > 3 points',
      measured=f'{100 * fgsm["advt_fgsm-15"]:.1f}% vs {100 * fgsm["baseline-15"]:.1f}%',
      holds=fgsm['advt_fgsm-15'] > fgsm['baseline-15'] + 0.03,
    ),
  ]
  print(f'\nClaims on digits ({len(y)} test images), runs in {root}\n')
  print('| claim | measured | holds |\n| --- | --- | --- |')
  for c in claims:
    print(f'| {c["claim"]} | {c["measured"]} | {"yes" if c["holds"] else "NO"} |')
  result = dict(
    benchmark='claims',
    backend=jax.default_backend(),
    machine=platform.machine(),
    processor=platform.processor(),
    jax=jax.__version__,
    claims=claims,
    median_gradient_cosine=median_cos,
    ambiguity_entropy=entropies,
    fgsm_accuracy=fgsm,
    quickstart_accuracy=quickstart,
    train_seconds=seconds,
  )
  _results.write(result, 'claims', jax.default_backend(), args.out)
  if not all(c['holds'] for c in claims):
    raise SystemExit(1)


if __name__ == '__main__':
  main()
