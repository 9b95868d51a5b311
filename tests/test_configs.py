"""Every config file loads through the flags parser, validates, and runs its docstring command."""

import glob
import os
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from lpd_jax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  p for p in glob.glob(os.path.join(REPO, 'configs', '*.py')) if not p.endswith('__init__.py')
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
