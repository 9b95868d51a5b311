"""The probes report: `eval.py --config.eval.suite=probes` and notebooks/probes.ipynb."""

import json
import os

import numpy as np
import pytest
from conftest import cli_env, tiny_config

from lpd_jax import config as config_lib
from lpd_jax import data, evaluate, load, probes
from lpd_jax.suites import probes as probes_suite

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, 'notebooks', 'probes.ipynb')


def eval_config(**overrides):
  """tiny_config with every eval field the probes suite reads set: 'probes' on a short prefix."""
  group = dict(num_examples=50, float64=False)
  group.update(overrides)
  return tiny_config(eval=dict(suite='probes', batch_size=32, num_examples=100, probes=group))


def test_probes_suite_matches_direct_probes(module_copy, capsys):
  config = eval_config()
  assert set(config.eval) == set(config_lib.base_config().eval)  # the others keep defaults
  assert set(config.eval.probes) == set(config_lib.base_config().eval.probes)
  result = evaluate.evaluate(config, module_copy)['probes']
  # Without a terminal (the tests' capture): a line as the probes start.
  assert 'probes: L_d and L_s on 50 images in float32 (started after' in capsys.readouterr().out

  with open(os.path.join(module_copy, 'eval_probes.json')) as f:
    assert json.load(f) == result
  with open(os.path.join(module_copy, 'eval_probes.md')) as f:
    table = f.read()
  assert (result['num_members'], result['num_examples'], result['probe_examples']) == (3, 100, 50)
  assert result['float64'] is False

  # L_d, L_s: the first 50 test images (the batches of 32 pad the last one), recomputed
  # here in one call from the input gradients.
  ens = load(module_copy)
  ds = data.load_dataset(config)
  x, y = data.to_float(ds.test_images[:50]), ds.test_labels[:50]
  g = probes.input_gradients(ens, x, y)
  direct = {'gradient_cosine': probes.gradient_cosine(g), 'gradient_norm': probes.gradient_norm(g)}
  saved = np.load(os.path.join(module_copy, 'probes_per_sample.npz'))
  np.testing.assert_array_equal(saved['labels'], y)
  for probe, values in direct.items():
    values = np.asarray(values)
    np.testing.assert_allclose(
      saved[probe], values, rtol=1e-4, atol=1e-6
    )  # float32 sums of cosines: values near 0 differ by ~3e-7 across batchings
    assert list(result[probe]) == ['0.25', '0.5', '0.75']
    for q in (0.25, 0.5, 0.75):
      np.testing.assert_allclose(result[probe][str(q)], np.quantile(values, q), rtol=1e-4)
      assert f'| {q:.0%} | {result[probe][str(q)]:.2e} |' in table

  # E: the members' correctness on the whole evaluated prefix (100 images).
  logits = np.asarray(ens.member_logits(data.to_float(ds.test_images[:100])))
  correct = logits.argmax(-1) == ds.test_labels[None, :100]
  expected = float(probes.ambiguity_entropy(correct))
  assert 0 < expected < 1  # the tiny ensemble's members do disagree somewhere
  np.testing.assert_allclose(result['ambiguity_entropy'], expected, rtol=1e-6)
  assert f'| LPD | {expected:.4f} |' in table
  for caption in ('Table 1.', 'Table 2.', 'Table 3.'):
    assert caption in table
  assert '(float32)' in table


def test_probes_suite_float64(module_copy):
  result = evaluate.evaluate(eval_config(float64=True, num_examples=20), module_copy)
  result = result['probes']
  assert result['float64'] is True and result['probe_examples'] == 20
  saved = np.load(os.path.join(module_copy, 'probes_per_sample.npz'))
  for probe in ('gradient_cosine', 'gradient_norm'):
    assert saved[probe].dtype == np.float64 and saved[probe].shape == (20,)
    for q in (0.25, 0.5, 0.75):
      assert result[probe][str(q)] == np.quantile(saved[probe], q)
  with open(os.path.join(module_copy, 'eval_probes.md')) as f:
    assert 'first 20 test images (float64)' in f.read()


def test_probes_suite_rejects_zero_examples(module_copy):
  with pytest.raises(config_lib.ConfigError, match='eval.probes.num_examples'):
    evaluate.evaluate(eval_config(num_examples=0), module_copy)


def test_markdown_tables_side_by_side():
  def result(k, scale):
    quantiles = {0.25: -scale, 0.5: 0.0, 0.75: 2 * scale}
    return dict(
      num_members=k,
      num_examples=10,
      ambiguity_entropy=0.25 * k / 5,
      probe_examples=10,
      float64=False,
      gradient_cosine=quantiles,
      gradient_norm={q: abs(v) for q, v in quantiles.items()},
    )

  table = probes_suite.markdown_tables([('Baseline', result(3, 0.5)), ('LPD', result(5, 3e-9))])
  # Table 1: a column per ensemble size K; Tables 2-3: a column per ensemble.
  assert '| Ensemble method | K = 3 | K = 5 |' in table
  assert '| Baseline | 0.1500 |  |' in table
  assert '| LPD |  | 0.2500 |' in table
  assert table.count('| Q | Baseline | LPD |') == 2
  assert '| 25% | -5.00e-01 | -3.00e-09 |' in table
  assert '| 75% | 1.00e+00 | 6.00e-09 |' in table
  assert 'first 10 test images (float32)' in table


def test_notebook_is_saved_without_outputs():
  nbformat = pytest.importorskip('nbformat')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  assert 'WORKDIRS' in code[0].source and 'NUM_EXAMPLES' in code[0].source


def test_notebook_runs_on_two_workdirs_side_by_side(module_copy, tmp_path, monkeypatch):
  copies = 2  # a loop over LPD_WORKDIRS: one workdir is its first pass
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  png = tmp_path / 'probes.png'
  # The kernel is a subprocess: it inherits these, and finds the editable lpd_jax.
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  # The worker's persistent XLA cache (conftest.cli_env): the second run reuses the first's
  # compiles.
  for name, value in cli_env().items():
    if name.startswith('JAX_'):
      monkeypatch.setenv(name, value)
  monkeypatch.setenv('LPD_WORKDIRS', ':'.join([module_copy] * copies))
  monkeypatch.setenv('LPD_PROBE_EXAMPLES', '64')
  monkeypatch.setenv('LPD_PROBE_PNG', str(png))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(
    nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}
  ).execute()

  assert png.stat().st_size > 10_000
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert text.count('K = 3, N = 64') == copies
  tables = [o.data['text/markdown'] for o in outputs if 'text/markdown' in o.get('data', {})]
  assert len(tables) == 1 and tables[0].count('| 50% |') == 2
  assert tables[0].count(' (LPD) |') == 3 * copies  # Table 1's rows, Tables 2-3's headers
  assert any('image/png' in o.get('data', {}) for o in outputs)
