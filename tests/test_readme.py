"""The README as a newcomer reads it: its Python snippets run as written, and it keeps
exactly two set-up commands."""

import os
import re

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, 'README.md')).read()


def test_readme_python_snippets_run_as_written(trained_workdir):
  """Every ```python block, in order and in one namespace, with the quickstart workdir of
  the first set-up command replaced by the session's tiny trained one."""
  blocks = re.findall(r'```python\n(.*?)```', README, re.S)
  assert len(blocks) >= 3
  namespace = {}
  for i, block in enumerate(blocks):
    code = block.replace('/tmp/lpd_quickstart', trained_workdir)
    exec(compile(code, f'README.md python block {i + 1}', 'exec'), namespace)
  x, x_adv = namespace['x'], np.asarray(namespace['x_adv'])
  assert x_adv.shape == x.shape and np.abs(x_adv - x).max() <= 0.03 + 1e-6
  assert namespace['g'].shape == (3, *x.shape)
  assert namespace['p'].shape == namespace['h'].shape
  assert 0 < namespace['clean']['ensemble_accuracy'] <= 1


def test_readme_has_two_set_up_commands_and_they_use_the_quickstart():
  setup = README[README.index('## Set up') : README.index('\n## ', README.index('## Set up') + 1)]
  commands = re.findall(r'```bash\n(.*?)```', setup, re.S)
  assert len(commands) == 2
  assert 'configs/quickstart.py' in commands[0] and 'eval.py' in commands[0]
  assert "pip install -e '.[test]'" in commands[1] and 'pytest' in commands[1]
