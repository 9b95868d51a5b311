"""Progress inside one long call (lpd_jax.progress: `listening`, `units`): the attacks' loops
split on the host give the same examples bit for bit, and a line with an ETA after the first
unit of work; CROWN's passes tick from inside the jitted bound. With progress.INTERVAL_S = 0
every unit prints (the default, 20 s, keeps a log at a line every ~20-30 s)."""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpd_jax import progress
from lpd_jax.attacks import apgd, fab, fgsm, pgd, square
from lpd_jax.certify import bounds, graph, passes
from lpd_jax.progress import StageBar

LINE = re.compile(r'^test \| (?P<what>[\w-]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+), \d+ s')


@pytest.fixture
def every_unit(monkeypatch):
  """A line at every unit, and chunks of a step or two (the tiny model's steps are fast)."""
  monkeypatch.setattr(progress, 'INTERVAL_S', 0.0)
  monkeypatch.setattr(progress, 'CHUNK_S', 1e-4)


def tiny_model():
  """A random 64-16-10 ReLU MLP on 8x8x1 images (log-probabilities), a batch of 8."""
  k1, k2, kx = jax.random.split(jax.random.key(0), 3)
  w1, w2 = jax.random.normal(k1, (64, 16)) / 8, jax.random.normal(k2, (16, 10)) / 4

  def log_probs(w1, w2, x):
    return jax.nn.log_softmax(jax.nn.relu(x.reshape(len(x), -1) @ w1) @ w2)

  x = jax.random.uniform(kx, (8, 8, 8, 1))
  return jax.tree_util.Partial(log_probs, w1, w2), x, jnp.arange(8) % 10


def heartbeats(text):
  return [m.groupdict() for line in text.splitlines() if (m := LINE.match(line))]


def test_counts_print_their_progress_and_an_eta_after_the_first_unit(every_unit, capsys):
  with progress.units(3, 'steps', 'unheard') as count:  # nobody listens: nothing counted
    count.tick()
  assert not progress.listened() and capsys.readouterr().out == ''
  with progress.listening('test'):
    assert progress.listened()
    with progress.units(4, 'steps', 'outer') as count:
      with progress.units(99, 'steps', 'inner'):  # nested: its units go to the outer count
        progress.tick(1)
      count.reach(3)
      count.reach(2)  # never backwards
      progress.tick(5)  # never past the total
  lines = capsys.readouterr().out.splitlines()
  assert [line.split(',')[0] for line in lines] == [
    'test | outer: 1/4 steps',
    'test | outer: 3/4 steps',
    'test | outer: 4/4 steps',
  ]
  assert all(re.search(r', ETA \d+ s$', line) for line in lines)


def test_the_watcher_speaks_while_the_first_unit_runs(monkeypatch, capsys):
  monkeypatch.setattr(progress, 'INTERVAL_S', 0.0)
  monkeypatch.setattr(progress, 'WATCH_S', 0.01)
  with progress.listening('test'), progress.units(10, 'steps', 'slow'):
    time.sleep(0.1)
  lines = capsys.readouterr().out.splitlines()
  assert lines and all(
    re.fullmatch(r'test \| slow: 0/10 steps, \d+ s \(compiling, or in its first unit\)', line)
    for line in lines
  )


def test_a_clock_speaks_for_a_call_that_counts_nothing_and_gives_way_to_one_that_does(
  monkeypatch, capsys
):
  """An attack row of the paper, sweep or transfer suites is watched with a clock (C&W and
  JSMA count nothing of their own); an attack that counts takes the clock's place."""
  monkeypatch.setattr(progress, 'INTERVAL_S', 0.0)
  monkeypatch.setattr(progress, 'WATCH_S', 0.01)
  with progress.listening('paper attacks'), progress.units(0, 'calls', 'C&W L2'):
    time.sleep(0.05)
    clock = capsys.readouterr().out.splitlines()
    with progress.units(2, 'steps', 'PGD') as count:
      count.tick()
      time.sleep(0.05)
    inner = capsys.readouterr().out.splitlines()
    time.sleep(0.05)
    after = capsys.readouterr().out.splitlines()
  assert clock and all(re.fullmatch(r'paper attacks \| C&W L2: running, \d+ s', x) for x in clock)
  assert inner and all(x.startswith('paper attacks | PGD: 1/2 steps') for x in inner)
  assert after and all(x.startswith('paper attacks | C&W L2: running') for x in after)


def test_a_silent_bar_hears_nothing_and_a_drawn_bar_shows_the_count(every_unit, capsys):
  with StageBar(total=1, desc='test', silent=True) as bar, progress.listening('test', bar):
    with progress.units(2, 'steps', 'quiet'):
      progress.tick(2)
  assert capsys.readouterr().out == ''
  with StageBar(total=1, desc='test', disable=False) as bar, progress.listening('test', bar):
    bar.stage('APGD-T 0.02')
    with progress.units(2, 'steps', 'APGD-T'):
      progress.tick(1)
      assert re.fullmatch(r'APGD-T 0\.02 \| APGD-T: 1/2 steps, \d+ s, ETA \d+ s', bar.postfix)
    assert bar.postfix == 'APGD-T 0.02'  # the stage again once the count closes


ATTACKS = {
  'APGD-T': lambda m, x, y, k: apgd(
    m, x, y, key=k, eps=0.1, steps=4, loss='dlr', targeted=True, num_targets=3
  ),
  'PGD-margin': lambda m, x, y, k: pgd(m, x, y, key=k, eps=0.1, steps=4, restarts=2, loss='margin'),
  'PGD': lambda m, x, y, k: pgd(m, x, y, eps=0.5, steps=3, norm='l2', random_start=False),
  'Square': lambda m, x, y, k: square(m, x, y, key=k, eps=0.1, queries=12),
  'FAB-T': lambda m, x, y, k: fab(m, x, y, key=k, eps=0.1, steps=3, num_targets=2, restarts=2),
}


def test_attacks_split_on_the_host_report_their_steps_and_give_the_same_examples(
  every_unit, capsys
):
  """Listened to, each attack runs its loop in chunks on the host (`common.host_loop`) and
  prints its steps with an ETA after the first; its examples are the one-program ones, bit
  for bit; inside jit (traced inputs) it stays one program."""
  model, x, y = tiny_model()
  key = jax.random.key(1)
  quiet = {name: attack(model, x, y, key) for name, attack in ATTACKS.items()}
  assert capsys.readouterr().out == ''
  with progress.listening('test'):
    heard = {name: attack(model, x, y, key) for name, attack in ATTACKS.items()}
    inside_jit = jax.jit(lambda x: fgsm(model, x, y, eps=0.1))(x)
  for name in ATTACKS:
    np.testing.assert_array_equal(np.asarray(heard[name]), np.asarray(quiet[name]), err_msg=name)
  np.testing.assert_array_equal(inside_jit, fgsm(model, x, y, eps=0.1))
  beats = heartbeats(capsys.readouterr().out)
  totals = {b['what']: int(b['total']) for b in beats}
  # Per call: steps x targets (APGD-T: 3 of the 9 ranked classes), x restarts; queries.
  assert totals == {
    'APGD-T': 12,
    'PGD-margin': 8,
    'PGD': 3,
    'Square': 12,
    'FAB-T': 12,
  }
  for name in ATTACKS:
    done = [int(b['done']) for b in beats if b['what'] == name]
    assert done == sorted(done) and done[-1] == totals[name] and len(done) >= 2, (name, done)


def dense_toy(seed=0, dims=(6, 24, 24, 4)):
  rng = np.random.default_rng(seed)
  layers = [
    (rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.1) for a, b in zip(dims, dims[1:])
  ]
  return graph.dense_graph(layers, dims[0])


def test_a_crown_pass_ticks_each_chunk_from_inside_jit(every_unit, capsys):
  """CROWN on a dense toy with chunks of 8 neurons: a tick per chunk of each ReLU input and
  one for the last pass (`passes.progress_units`), lines with an ETA after the first, and
  the bounds of the program without callbacks."""
  g = dense_toy()
  x = jax.random.uniform(jax.random.key(2), (3, 6))
  x_lo, x_hi = bounds.box(x, 0.05)
  spec, _ = bounds.margin_spec(jnp.arange(3), 4)

  @jax.jit
  def terms(x_lo, x_hi):
    return bounds.member_margin_terms(g, x_lo, x_hi, spec, 'crown', chunk=8)

  @jax.jit
  def reported(x_lo, x_hi):
    return bounds.member_margin_terms(g, x_lo, x_hi, spec, 'crown', chunk=8, report=True)

  quiet = terms(x_lo, x_hi)
  total = passes.progress_units(g, 'crown', 3, 1, None, 8, 0)
  assert total == 3 + 3 + 1  # 24 neurons in chunks of 8, twice, and the last pass
  with progress.listening('test'), progress.units(total, 'passes', 'crown') as count:
    heard = jax.block_until_ready(reported(x_lo, x_hi))
    jax.effects_barrier()
    assert count.done == total
  jax.tree.map(np.testing.assert_array_equal, heard, quiet)
  done = [int(b['done']) for b in heartbeats(capsys.readouterr().out)]  # the watcher's 0s too
  assert done == sorted(done) and sorted(set(done) - {0}) == list(range(1, total + 1))


def test_the_certify_suite_reports_the_passes_of_calls_estimated_past_the_interval():
  """A batch call estimated under INTERVAL_S keeps its program without host callbacks (and
  in the persistent cache); a longer one reports its passes, where progress is asked for."""
  from lpd_jax.suites import certify as certify_suite

  assert progress.INTERVAL_S == 20.0
  assert not certify_suite.reports_passes(1e6, 50, 200)  # nobody listens
  with progress.listening('test'):
    assert certify_suite.reports_passes(100.0, 50, 200)  # 25 s a call of 50 samples
    assert not certify_suite.reports_passes(60.0, 50, 200)  # 15 s
    assert certify_suite.reports_passes(30.0, 50, 2)  # one call of 2 samples: 30 s
