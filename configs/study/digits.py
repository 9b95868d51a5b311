"""A study in minutes on scikit-learn's digits (no download): Baseline and LPD, K = 3
ResNet-18s of width 4, 3 epochs, every suite at small attack budgets, then the comparison.

python -m lpd_jax.study --config=configs/study/digits.py --root=/tmp/lpd_study_digits

A Baseline of width 2 is both runs' Type I transfer surrogate and the audit's surrogate.
The same structure as configs/study/cifar10_subset.py at toy sizes, to see the whole
pipeline (tests/test_compare.py runs it).
"""

from configs.study._lineup import expected, run, study

SUITES = 'clean,probes,paper,sweep,robust,audit,transfer,certify,' + expected(
  'clean,probes,robust,audit'
)


def get_config():
  return study(
    dataset_config='configs/digits.py',
    train=dict(width=4, num_epochs=3),
    eval_overrides=dict(
      batch_size=128,
      num_examples=64,
      paper=dict(cw=dict(steps=20, binary_search_steps=2)),
      sweep=dict(linf_eps=(0.02, 0.08, 0.32), l2_eps=(0.4, 1.6), steps=5),
      robust=dict(
        apgd_ce=dict(steps=5),
        apgd_t=dict(steps=5, num_targets=2),
        square=dict(queries=50),
        pgd_margin=dict(steps=5),
      ),
      audit=dict(num_examples=32, strong_steps=10, restarts=1, square_queries=50),
      certify=dict(num_examples=8, methods='ibp,crown', curve_points=2, batch_size=8),
    ),
    suites=SUITES,
    runs=[
      ('surrogate', run('baseline', 'clean', compare=False, width=2)),
      ('baseline', run('baseline', surrogates='surrogate', audit_surrogate='surrogate')),
      ('lpd', run('lpd', surrogates='surrogate', audit_surrogate='surrogate')),
    ],
  )
