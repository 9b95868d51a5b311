"""The paper's whole study on CIFAR-10 or CIFAR-100 (a GPU and the fetched data: README, "Data").

python -m lpd_jax.study --config=configs/study/paper.py:cifar10 --root=workdirs/study_cifar10
python -m lpd_jax.study --config=configs/study/paper.py:cifar100 --root=workdirs/study_cifar100

Every run of `configs/study/_lineup.paper_runs` (Tables 1-6, Figures 2-3, the timing
table) at the paper's settings: K = 3 (and 5) ResNet-18s of width 64, 150 epochs, the
attacks at the paper's budgets and the strong attacks at RobustBench-like ones, on the
whole test set (certification: the first 200 images every member gets right). Part of it:
--only=baseline,lpd (a run's surrogates must be trained first, or listed too).
"""

from configs.study._lineup import MAIN, paper_runs, study

DATASETS = ('cifar10', 'cifar100')


def get_config(dataset='cifar10'):
  if dataset not in DATASETS:
    raise ValueError(f'unknown study dataset {dataset!r}: give one of {", ".join(DATASETS)}')
  return study(
    dataset_config=f'configs/{dataset}.py',
    train=dict(width=64, num_epochs=150),
    eval_overrides=dict(batch_size=500, probes=dict(num_examples=2000)),
    suites=MAIN,
    runs=paper_runs(),
  )
