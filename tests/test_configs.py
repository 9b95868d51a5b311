"""Every config file loads through the flags parser, validates, and runs its docstring command."""

import glob
import os
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from lpd_jax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(  # configs/_*.py are helpers (the variant grammar), not configs
  p for p in glob.glob(os.path.join(REPO, 'configs', '*.py')) if not os.path.basename(p)[0] == '_'
)


def parse(path, *overrides):
  if REPO not in sys.path:
    sys.path.insert(0, REPO)  # as for `python train.py`, whose directory is the repo root
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=fv, lock_config=True)
  fv(['prog', f'--config={path}', *overrides])
  return fv.config


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_is_valid_and_documents_its_command(path):
  config = parse(path)
  config_lib.validate(config)
  name = os.path.relpath(path, REPO)
  with open(path) as f:
    source = f.read()
  assert f'python train.py --config={name}' in source


def test_variants_differ_from_their_base_only_in_method():
  base = parse(os.path.join(REPO, 'configs', 'lpd_cifar100.py')).to_dict()
  pdd = parse(os.path.join(REPO, 'configs', 'pdd_cifar100.py')).to_dict()
  assert {k for k in base if base[k] != pdd[k]} == {'method'}


SPECS = ['baseline', 'deg', 'adp', 'gal', 'trs', 'deg,k5', 'lpd,advt_fgsm', 'pdd,advt_pgd']


@pytest.mark.parametrize(
  'dataset', ['cifar10', 'cifar100', 'tinyimagenet', 'cifar10_subset', 'digits']
)
@pytest.mark.parametrize('spec', SPECS)
def test_every_method_and_variant_has_a_valid_config_per_dataset(dataset, spec):
  config = parse(os.path.join(REPO, 'configs', f'{dataset}.py:{spec}'))
  config_lib.validate(config)
  method = spec.split(',')[0]
  assert config.method == method
  assert config.num_members == (5 if 'k5' in spec else 3)
  assert config.pdd.num_bins == (20 if 'k5' in spec else 10)  # the PDD authors' bins per K
  assert config.adv_train.attack == {'advt_fgsm': 'fgsm', 'advt_pgd': 'pgd'}.get(
    spec.split(',')[-1], 'none'
  )


def test_an_unknown_variant_is_refused_with_the_grammar():
  with pytest.raises(Exception, match='unknown config variant .k7.'):
    parse(os.path.join(REPO, 'configs', 'cifar10.py:lpd,k7'))


STUDIES = sorted(
  p
  for p in glob.glob(os.path.join(REPO, 'configs', 'study', '*.py'))
  if not os.path.basename(p)[0] == '_'
)


@pytest.mark.parametrize('path', STUDIES, ids=os.path.basename)
def test_study_config_is_valid_and_documents_its_command(path, tmp_path):
  from lpd_jax import study

  config = parse(path)
  name = os.path.relpath(path, REPO)
  with open(path) as f:
    assert f'python -m lpd_jax.study --config={name}' in f.read()
  runs = study.runs_of(config)
  assert sum(r.compare for _, r in runs) >= 2
  for run_name, run in runs:
    run_config = study.run_config(config, str(tmp_path), run_name, run)
    for evaluation in study.evaluations_of(config, run, run_config):
      run_config.eval.suite = evaluation.name
      config_lib.validate_eval(run_config)


def test_a_run_saves_its_own_method_group_and_loads_back_whole():
  from configs import cifar10

  lpd = cifar10.get_config('lpd')
  saved = config_lib.run_config(lpd).to_dict()
  groups = {k for k, v in saved.items() if isinstance(v, dict)}
  assert groups == {'lpd', 'adv_train', 'eval', 'sharding'}
  assert config_lib.from_saved(saved).to_dict() == lpd.to_dict()
  deg = config_lib.run_config(cifar10.get_config('deg')).to_dict()
  assert {'deg', 'pdd'} <= set(deg) and 'lpd' not in deg  # DEG's masks are PDD's


def test_a_saved_config_of_the_flat_eval_layout_loads_into_the_attack_groups():
  old = config_lib.base_config().to_dict()
  old['eval']['paper'] = dict(
    attacks='fgsm,pgd,cw', fgsm_eps=[0.03], pgd_eps=[0.01], steps=5, cw_c=0.2, cw_steps=20
  )
  old['eval']['robust'] = dict(
    attacks='apgd-t', eps=[], steps=7, num_targets=3, square_queries=11, restarts=2
  )
  config = config_lib.from_saved(old)
  paper, robust = config.eval.paper, config.eval.robust
  assert paper.attacks == 'fgsm,pgd,cw' and tuple(paper.fgsm.eps) == (0.03,)
  assert tuple(paper.pgd.eps) == tuple(paper.bim.eps) == (0.01,) and paper.pgd.steps == 5
  assert tuple(paper.cw.c) == (0.2,) and paper.cw.steps == 20
  assert paper.cw.binary_search_steps == 5  # not saved: today's default
  assert robust.apgd_t.steps == robust.pgd_margin.steps == 7 and robust.apgd_t.num_targets == 3
  assert robust.square.queries == 11 and robust.pgd_margin.restarts == 2
  assert tuple(robust.eps) == (0.01,)  # an empty robust grid meant the paper's PGD grid


def test_an_override_of_the_flat_eval_layout_names_its_new_place(tmp_path):
  from conftest import run_cli

  done = run_cli(
    'train.py',
    '--config=configs/quickstart.py',
    f'--workdir={tmp_path / "w"}',
    '--config.eval.paper.cw_steps=3',
    timeout=120,
  )
  assert done.returncode == 1 and 'Traceback' not in done.stderr
  assert done.stderr.strip() == (
    'error: bad --config override: cw_steps (eval.paper.cw_steps is now eval.paper.cw.steps)'
  )
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('eps', [1.5, -0.1])
def test_every_linf_eps_is_refused_outside_0_1(eps):
  """An L-inf eps of images in [0, 1] is in (0, 1]: in the paper suite's grids, the robust
  suite's grid, the sweep's L-inf grid, the audit and adversarial training."""
  from conftest import tiny_config

  places = {
    'eval.paper.pgd.eps': dict(eval=dict(suite='paper', paper=dict(pgd=dict(eps=(eps,))))),
    'eval.paper.fgsm.eps': dict(eval=dict(suite='paper', paper=dict(fgsm=dict(eps=(eps,))))),
    'eval.robust.eps': dict(eval=dict(suite='robust', robust=dict(eps=(eps,)))),
    'eval.sweep.linf_eps': dict(eval=dict(suite='sweep', sweep=dict(linf_eps=(eps,)))),
    'eval.audit': dict(eval=dict(suite='audit', audit=dict(eps=eps))),
  }
  for where, overrides in places.items():
    with pytest.raises(config_lib.ConfigError, match=where.replace('.', r'\.')):
      config_lib.validate_eval(tiny_config(**overrides))
  with pytest.raises(config_lib.ConfigError, match='adv_train.eps'):
    config_lib.validate(tiny_config(adv_train=dict(attack='fgsm', eps=eps)))
  # A count of an attack's parameters is >= 1.
  with pytest.raises(config_lib.ConfigError, match='steps'):
    config_lib.validate_eval(
      tiny_config(eval=dict(suite='robust', robust=dict(apgd_ce=dict(steps=0))))
    )
