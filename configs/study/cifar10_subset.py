"""The reproduction study of docs/results.md: the real CIFAR-10 subset of ../shared/data
(5,085 train / 500 test images), K = 3 ResNet-18s of width 4, 15 epochs, on 2 CPU cores.

python -m lpd_jax.study --config=configs/study/cifar10_subset.py --root=workdirs/study_subset

Width 4 is the width the paper certifies (section 4.4, "in_channels" 64 -> 4), and on 2 CPU
cores it attacks 3x faster than width 8 (PGD-10: 366 vs 125 image-gradients/s) for a few
points of clean accuracy; 15 epochs keep TRS (15x a Baseline step) and PGD adversarial
training under an hour each. The attack budgets are cut to fit (eval below): the attack
suites run on the first 250 test images (clean accuracy and the probes on all 500, the
audit on 200, certification on the first 20 every member gets right); the paper suite
keeps the paper's FGSM/BIM/PGD/JSMA settings but runs C&W for 100 steps x 3 binary
searches (the authors: 1000 x 5); the strong attacks run 20-step APGD, 3 APGD-T targets and
300 Square queries (RobustBench: 100 steps, 9 targets, 5000 queries). Baseline and LPD have
three seeds each (one column of mean +- std over clean, probes, paper and robust; the other
suites on seed 0), and seed 1 is seed 0's Type II surrogate; DEG and ADP get a second seed
for that alone. The Type I surrogate is a Baseline VGG-16 of width 8.
`--only=baseline,lpd` runs a part of it.
"""

from configs.study._lineup import run, study

MAIN = 'clean,probes,paper,sweep,robust,audit'
SUITES = MAIN + ',transfer,certify'  # Baseline, ADP, PDD and LPD: the paper's Table 5 and Fig. 2
SEEDS = 'clean,probes,paper,robust'  # the extra seeds of Baseline and LPD
TYPE_I = 'vgg16_baseline'


def get_config():
  runs = [  # surrogates first: each run is trained and evaluated in this order
    (TYPE_I, run('baseline', 'clean', compare=False, model='vgg16', width=8)),
    ('baseline_s1', run('baseline', SEEDS, seed=1)),  # also baseline's Type II surrogate
    ('baseline', run('baseline', SUITES, f'{TYPE_I},baseline_s1', TYPE_I)),
    ('adp_s1', run('adp', 'clean', compare=False, seed=1)),
    ('adp', run('adp', SUITES, f'{TYPE_I},adp_s1', TYPE_I)),
    ('deg_s1', run('deg', 'clean', compare=False, seed=1)),
    ('deg', run('deg', SUITES, f'{TYPE_I},deg_s1', TYPE_I)),
    ('lpd_s1', run('lpd', SEEDS, expected_suites='clean,probes', seed=1)),
    ('lpd', run('lpd', SUITES, f'{TYPE_I},lpd_s1', TYPE_I)),
    ('advt_pgd', run('baseline,advt_pgd', MAIN, audit_surrogate=TYPE_I)),
    ('advt_pgd_lpd', run('lpd,advt_pgd', MAIN, audit_surrogate=TYPE_I)),
    # Last, as time allows on 2 cores: GAL, TRS (15x a Baseline step) and third seeds.
    ('gal', run('gal', MAIN, audit_surrogate=TYPE_I)),
    ('trs', run('trs', MAIN, audit_surrogate=TYPE_I)),
    ('baseline_s2', run('baseline', SEEDS, seed=2)),
    ('lpd_s2', run('lpd', SEEDS, expected_suites='clean,probes', seed=2)),
  ]
  return study(
    dataset_config='configs/cifar10_subset.py',
    train=dict(width=4, num_epochs=15),
    eval_overrides=dict(
      batch_size=250,
      num_examples=250,
      paper=dict(cw_steps=100, cw_binary_search_steps=3),
      probes=dict(num_examples=-1),
      robust=dict(steps=20, num_targets=3, square_queries=300),
      audit=dict(num_examples=200, strong_steps=50, restarts=2, square_queries=300),
      certify=dict(num_examples=20, methods='ibp,crown', curve_points=3, batch_size=10),
    ),
    suites=MAIN,
    expected_suites='clean,probes,robust,audit',
    runs=runs,
    suite_eval=dict(clean=dict(num_examples=-1), probes=dict(num_examples=-1)),
  )
