"""README "Extending": the example method runs as written, registers with one line, and
trains; a suite registered the same way is run and written by eval.py's driver."""

import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import lpd_jax
from lpd_jax import (
  attacks,
  compare,
  data,
  ensemble,
  evaluate,
  evaluations,
  methods,
  provenance,
  suites,
  train,
)
from lpd_jax import config as config_lib
from lpd_jax.pytrees import as_partial
from lpd_jax.suites import common
from lpd_jax.suites.common import Metric, Report, Suite

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')


def readme_method_block():
  return readme_block('## Extending')


def test_the_readme_example_method_is_short_registers_and_trains(monkeypatch):
  code = readme_method_block()
  assert len([line for line in code.splitlines() if line.strip()]) <= 15  # a 15-line method
  module = {}
  exec(compile(code, 'README.md', 'exec'), module)
  monkeypatch.setitem(methods.REGISTRY, 'agree', module['METHOD'])  # the registry line

  config = tiny_config(method='agree', width=2)
  assert config.agree.weight == 0.1  # its group comes from the registry's defaults
  config_lib.validate(config)
  members = ensemble.create(config, num_classes=10)
  tx, _ = train.make_optimizer(config, steps_per_epoch=10)
  state = train.init_state(config, members, tx, (8, 8, 1))
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
  y = np.arange(16) % 10
  before = np.asarray(state.variables['params']['head']['kernel'])
  new_state, metrics = train.make_train_step(config, members, tx)(state, x, y, jax.random.key(1))
  terms = metrics['terms']
  assert set(terms) == {'ce', 'spread'}
  assert float(metrics['loss']) == pytest.approx(
    float(terms['ce'] + 0.1 * terms['spread']), rel=1e-6
  )
  assert float(terms['spread']) > 0  # independently initialised members disagree
  assert not np.allclose(new_state.variables['params']['head']['kernel'], before)


def test_a_registered_suite_gets_its_group_and_is_written(monkeypatch, module_copy):
  def run(ens, ctx):
    n = len(ctx.labels) if ctx.cfg.count < 0 else ctx.cfg.count
    result = dict(count=n, members=ens.num_members)
    return Report(
      result, f'| count |\n| --- |\n| {n} |', {'count.txt': str(n).encode()}, metrics(result)
    )

  def metrics(result):
    return [Metric('count', 'images counted', result['count'], '{:.0f}', result['count'])]

  def validate(config, cfg):
    if cfg.count == 0:
      raise config_lib.ConfigError('eval.count.count must not be 0')

  suite = Suite('count', run, {'count': -1}, validate, metrics)
  monkeypatch.setitem(suites.REGISTRY, 'count', suite)
  config = tiny_config(eval=dict(suite='count', num_examples=50))
  assert config.eval.count.count == -1
  result = evaluate.evaluate(config, module_copy)['count']
  record = dict(
    key='count',
    label='images counted',
    value=50,
    format='{:.0f}',
    num_points=50,
    measured='',
    coords={},
  )
  with open(os.path.join(module_copy, 'eval_count.json')) as f:
    assert json.load(f) == result
  # The software and machine that evaluated it (lpd_jax.provenance), the checkpoint and the
  # settings it evaluated (what compare groups and marks by), then the suite's own.
  assert result.pop('provenance') == provenance.collect('float32')
  assert result.pop('checkpoint')['epoch'] == 3
  settings = dict(type='count', inference='raw', settings=dict(count=-1))
  assert result.pop('settings') == dict(settings, test_examples=50, batch_size=128)
  assert result.pop('evaluation_key') == evaluations.settings_key(
    dict(settings, test_examples=50, batch_size=128)
  )
  assert result == dict(
    count=50,
    members=3,
    evaluation='count',
    suite='count',
    inference='raw',
    test_examples=50,
    files=['count.txt'],
    metrics=[record],
  )
  with open(os.path.join(module_copy, 'count.txt')) as f:
    assert f.read() == '50'
  with pytest.raises(config_lib.ConfigError, match='eval.count.count'):
    evaluate.evaluate(tiny_config(eval=dict(suite='count', count=dict(count=0))), module_copy)

  # Under 'expected' inference the same type is the instance count_expected, beside it.
  expected = tiny_config(eval=dict(suite='count_expected', num_examples=20))
  assert evaluate.evaluate(expected, module_copy)['count_expected']['inference'] == 'expected'
  with open(os.path.join(module_copy, 'count_expected.txt')) as f:
    assert f.read() == '20'
  with open(os.path.join(module_copy, 'eval_count.json')) as f:
    assert json.load(f)['count'] == 50  # not overwritten


def readme_block(after):
  text = open(README).read()
  section = text[text.index(after) :]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_the_readme_example_attack_runs_through_paper_robust_and_compare(
  monkeypatch, module_copy, tmp_path
):
  """One file (the README block) and one registry line: the attack gets its settings groups
  in eval.paper and eval.robust, its rows in both reports, and compare's tables show them."""
  module = {}
  exec(compile(readme_block('**An attack**'), 'README.md', 'exec'), module)
  attack = module['ATTACK']
  monkeypatch.setitem(attacks.REGISTRY, 'corners', attack)  # the registry line

  workdir = str(tmp_path / 'run')
  shutil.copytree(module_copy, workdir)
  for name in os.listdir(workdir):
    if name.startswith('eval_'):
      os.remove(os.path.join(workdir, name))
  config = tiny_config(
    member_strategy='vmap',
    eval=dict(
      suite='paper,robust',
      num_examples=24,
      batch_size=24,
      paper=dict(attacks='fgsm,corners'),
      robust=dict(attacks='corners', eps=(0.04,)),
    ),
  )
  assert config.eval.paper.corners.draws == 4 and config.eval.robust.corners.draws == 4
  results = evaluate.evaluate(config, workdir)
  paper_rows = {(r['attack'], r['param']): r for r in results['paper']['rows']}
  assert [k for k in paper_rows if k[0] == 'corners'] == [('corners', 0.02), ('corners', 0.04)]

  # The suite's number is the attack's own, called directly on the same batch and key.
  ens = lpd_jax.load(workdir, config)
  ds = data.load_dataset(config)
  x, y = data.to_float(ds.test_images[:24]), ds.test_labels[:24]
  key = jax.random.fold_in(common.attack_key(config.seed, 'corners'), 0)
  x_adv = attack.fn(as_partial(ens.log_predict), x, y, key=key, eps=0.04, draws=4)
  assert float(np.abs(np.asarray(x_adv) - x).max()) <= 0.04 + 1e-6
  correct = np.asarray(jnp.argmax(ens.log_predict(x_adv), -1) == y)
  assert paper_rows[('corners', 0.04)]['accuracy'] == correct.mean()

  robust = results['robust']
  assert robust['attacks'] == ['corners'] and robust['rows'][0]['params'] == {'draws': 4}
  key = jax.random.fold_in(common.attack_key(config.seed, 'robust:corners'), 0)
  x_adv = attack.fn(as_partial(ens.log_predict), x, y, key=key, eps=0.04, draws=4)
  robust_correct = np.asarray(jnp.argmax(ens.log_predict(x_adv), -1) == y)
  clean = np.asarray(jnp.argmax(ens.log_predict(x), -1) == y)
  assert robust['robust_accuracy']['0.04'] == (clean & robust_correct).mean()
  # Without `point_keys` the cascade attacks whole batches: the points still robust got the
  # examples of the run over all points (the check above), only those were attacked.
  assert not attack.point_keys and robust['rows'][0]['attacked'] == clean.sum()

  result, markdown, _ = compare.compare([workdir])
  labels = {t['name']: [r['label'] for r in t['rows']] for t in result['tables']}
  assert {'Corners 0.02 (all)', 'Corners 0.04 (clean-correct)'} <= set(labels['table4'])
  assert '  after corners (cascade), eps 0.04' in labels['robust']
