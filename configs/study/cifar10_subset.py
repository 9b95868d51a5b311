"""The reproduction study of docs/results.md: the real CIFAR-10 subset of
configs/cifar10_subset.py (5,085 train / 500 test images; that file says how to build it),
K = 3 ResNet-18s of width 4, 10 epochs, on 2 CPU cores.

python -m lpd_jax.study --config=configs/study/cifar10_subset.py --root=workdirs/study_subset

Sized for 2 CPU cores: the whole study took 2 hours 8 minutes as three `--only=NAME` processes side
by side (21,134 s of steps, each beside two others; docs/results.md). Width 4 is the width the paper
certifies (section 4.4, "in_channels" 64 -> 4), and on 2 CPU cores it attacks 3x faster than width 8
(PGD-10: 366 vs 125 image-gradients/s) for a few points of clean accuracy (15 epochs: 44.8% vs 51.6%
for a Baseline). Adversarial training takes 2 PGD steps of eps/2 instead of 7 of 2/255 (a step costs
3x a Baseline step instead of 8x), for 6 epochs. The attack budgets are cut to fit (eval below): the
attack suites run on the first 100 test images (clean accuracy and the probes on all 500,
certification of Baseline and LPD on the first 8 every member gets right); the paper suite keeps the
paper's FGSM/BIM/PGD settings, runs JSMA at gamma 0.05 only and C&W for 30 steps x 2 binary searches
(the authors: 1000 x 5); the strong attacks run 10-step APGD, 1 APGD-T target and 100 Square queries
(RobustBench: 100 steps, 9 targets, 5000 queries), and so does AutoAttack's `standard` preset beside
them (FAB-T 10 steps, 1 target), so robust accuracy here is an upper bound that a stronger budget
may lower. Baseline and LPD have three seeds (clean accuracy and the probes: mean +- std; the attack
suites on seed 0), and seed 1 is seed 0's Type II surrogate. The Type I surrogate is a Baseline
VGG-16 of width 4. GAL, TRS (11x a Baseline step), GradDiv and DVERGE (started from the Baseline
run's members, as its reference code, for DVERGE_EPOCHS epochs) and the third seeds come last.
`--only=baseline,lpd` runs a part of it.
"""

from configs.study._lineup import expected, run, study

EXPECTED = expected('clean,probes,robust,audit')  # for the methods with keep rates
MAIN = 'clean,probes,paper,sweep,robust,robust_standard,audit,' + EXPECTED
# Baseline, ADP, PDD and LPD: the paper's Table 5 and Fig. 2
SUITES = 'clean,probes,paper,sweep,robust,robust_standard,audit,transfer,certify,' + EXPECTED
# PDD + DEG: every suite but certification and the expected-inference audit (time on 2 cores)
PDD_SUITES = MAIN.replace(',audit_expected', '') + ',transfer'
SEEDS = 'clean,probes'  # the extra seeds of Baseline and LPD
ADVT = 'clean,probes,paper,robust,robust_standard,audit'  # Table 6
TYPE_I = 'vgg16_baseline'
DVERGE_EPOCHS = 3
ADVT_RUN = dict(adv_train=dict(steps=2, step_size=0.5 * 8 / 255), num_epochs=6)


def get_config():
  runs = [  # surrogates first: each run is trained and evaluated in this order
    (TYPE_I, run('baseline', 'clean', compare=False, model='vgg16')),
    ('baseline_s1', run('baseline', SEEDS, seed=1)),  # also baseline's Type II surrogate
    ('baseline', run('baseline', SUITES, f'{TYPE_I},baseline_s1', TYPE_I)),
    ('lpd_s1', run('lpd', SEEDS + ',' + expected(SEEDS), seed=1)),  # lpd's Type II surrogate
    ('lpd', run('lpd', SUITES, f'{TYPE_I},lpd_s1', TYPE_I)),
    ('deg', run('deg', PDD_SUITES, TYPE_I, TYPE_I)),
    ('adp', run('adp', MAIN + ',transfer', TYPE_I, TYPE_I)),  # no time left to certify it
    ('advt_pgd', run('baseline,advt_pgd', ADVT, '', TYPE_I, **ADVT_RUN)),
    (
      'advt_pgd_lpd',
      run('lpd,advt_pgd', ADVT + ',' + expected('clean,probes,robust'), '', TYPE_I, **ADVT_RUN),
    ),
    # Last: GAL, TRS (11x a Baseline step), GradDiv, DVERGE and the third seeds.
    ('gal', run('gal', MAIN, '', TYPE_I)),
    ('trs', run('trs', MAIN, '', TYPE_I)),
    ('graddiv', run('graddiv', MAIN, '', TYPE_I)),
    # DVERGE from the Baseline run's members, as its reference code starts (10 feature-PGD
    # steps per member per batch: the epochs below are what the study could afford)
    ('dverge', run('dverge', MAIN, '', TYPE_I, start_from='baseline', num_epochs=DVERGE_EPOCHS)),
    ('baseline_s2', run('baseline', SEEDS, seed=2)),
    ('lpd_s2', run('lpd', SEEDS + ',' + expected(SEEDS), seed=2)),
  ]
  return study(
    dataset_config='configs/cifar10_subset.py',
    train=dict(width=4, num_epochs=10),
    eval_overrides=dict(
      batch_size=100,
      num_examples=100,
      paper=dict(cw=dict(steps=30, binary_search_steps=2), jsma=dict(gamma=(0.05,))),
      # clean accuracy and the probes on all 500 test images, in batches of 250
      clean=dict(test_examples=-1, batch_size=250),
      probes=dict(num_examples=-1, test_examples=-1, batch_size=250),
      robust=dict(
        apgd_ce=dict(steps=10),
        apgd_t=dict(steps=10, num_targets=1),
        square=dict(queries=100),
        pgd_margin=dict(steps=10),
      ),
      # AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square with AutoAttack's
      # schedule and windows) at the budgets of `robust` above: 10 steps, 1 target, 100 queries
      robust_standard=dict(
        type='robust',
        preset='standard',
        apgd_ce=dict(steps=10),
        apgd_t=dict(steps=10, num_targets=1),
        fab_t=dict(steps=10, num_targets=1),
        square=dict(queries=100),
      ),
      audit=dict(num_examples=100, strong_steps=20, restarts=1, square_queries=100),
      # IBP, CROWN-IBP, full CROWN and alpha-CROWN (last pass optimised: with its
      # intermediate bounds too it costs ~60x CROWN here) at eps 0.0005 / 64, and CROWN's
      # certified fraction from there up to the paper's 0.0005 in 7 doublings.
      certify=dict(
        num_examples=8,
        eps=0.0005 / 64,
        curve_points=7,
        curve_methods='crown',
        batch_size=8,
        alpha_intermediate=False,
      ),
    ),
    suites=MAIN,
    runs=runs,
  )
