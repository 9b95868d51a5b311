"""The runs of a study (`lpd_jax.study`) as ConfigDicts, shared by the study configs."""

import ml_collections

from lpd_jax.names import split_names


def run(
  spec, suites='', surrogates='', audit_surrogate='', compare=True, start_from='', **overrides
):
  """One run: the dataset file's variant `spec`, its own config `overrides`, its
  evaluations ('' = the study's), its transfer surrogates and audit surrogate (run names),
  and the run whose checkpoint its members start from (DVERGE: Baseline)."""
  return ml_collections.ConfigDict(
    dict(
      spec=spec,
      overrides=overrides,
      suites=suites,
      surrogates=surrogates,
      audit_surrogate=audit_surrogate,
      compare=compare,
      start_from=start_from,
    )
  )


def expected(suites):
  """'clean,probes' -> 'clean_expected,probes_expected': the same evaluations under
  'expected' inference (`lpd_jax.evaluations`)."""
  return ','.join(f'{s}_expected' for s in split_names(suites))


def study(dataset_config, train, eval_overrides, suites, runs):
  """A study ConfigDict; `runs` is a list of (name, run) in the order they are trained,
  evaluated and shown; `suites` the evaluations of every run by name."""
  s = ml_collections.ConfigDict()
  s.dataset_config = dataset_config
  s.order = ','.join(name for name, _ in runs)
  s.train = ml_collections.ConfigDict(train)
  s.eval = ml_collections.ConfigDict(eval_overrides)
  s.suites = suites
  s.runs = ml_collections.ConfigDict({name: r for name, r in runs})
  return s


# Every evaluation of the paper's main runs, and those also run under 'expected' inference.
MAIN = 'clean,probes,paper,sweep,robust,audit,transfer,' + expected('clean,probes,robust,audit')


def paper_runs():
  """Every run of the paper's tables at full size, for a dataset file of configs/:

  K = 3 width-64 ResNet-18s of Baseline, ADP, PDD (+ DEG), LPD, GAL and TRS (Tables 2-5,
  Figure 3, the timing table), and of GradDiv and DVERGE, which the paper cites (DVERGE
  starting from the Baseline run, as its reference code); the same at K = 5 (Table 1); the
  Type I surrogate (a Baseline VGG-16) and Type II surrogates (a ResNet-34 trained with the
  same defence, as the authors' code); the six adversarially trained ensembles of Table 6; and K = 3
  width-4 ResNet-18s of Baseline, ADP, PDD and LPD for certification (Figure 2, section
  4.4: "in_channels" 64 -> 4).
  """
  type_i = 'vgg16_baseline'
  runs = [(type_i, run('baseline', 'clean', compare=False, model='vgg16'))]
  for method in ('baseline', 'adp', 'deg', 'lpd'):
    surrogate_suites = 'clean,clean_expected'  # the Type II surrogates: clean accuracy
    runs.append(
      (f'{method}_resnet34', run(method, surrogate_suites, compare=False, model='resnet34'))
    )
  for method in ('baseline', 'adp', 'deg', 'lpd', 'gal', 'trs', 'graddiv', 'dverge'):
    type_ii = f'{method}_resnet34' if method in ('baseline', 'adp', 'deg', 'lpd') else ''
    surrogates = ','.join(s for s in (type_i, type_ii) if s)
    start = 'baseline' if method == 'dverge' else ''  # as DVERGE's reference code
    runs.append((method, run(method, MAIN, surrogates, type_i, start_from=start)))
  for method in ('baseline', 'adp', 'deg', 'lpd'):
    runs.append((f'{method}_k5', run(f'{method},k5', 'clean,probes,' + expected('clean,probes'))))
  for attack in ('fgsm', 'pgd'):
    for method in ('baseline', 'pdd', 'lpd'):
      suites = 'clean,paper,robust,audit,' + expected('clean,robust,audit')
      runs.append((f'advt_{attack}_{method}', run(f'{method},advt_{attack}', suites)))
  for method in ('baseline', 'adp', 'deg', 'lpd'):
    runs.append((f'{method}_w4', run(method, 'clean,certify,clean_expected', width=4)))
  return runs
