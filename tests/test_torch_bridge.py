"""The PyTorch bridge without PyTorch: tiny PyTorch ensembles of each import layout and their
outputs, computed once by PyTorch (tests/golden/make_torch_goldens.py), against lpd-jax's
conversion and forward pass; the export's names, shapes and layouts against PyTorch's; the
README's export -> import -> eval round trip; one line for each thing that does not fit.

Where a Python with torch is named by LPD_JAX_TORCH_PYTHON, the exported module file is also
run there against lpd-jax's outputs."""

import importlib.util
import json
import os
import re
import shlex
import subprocess

import jax
import numpy as np
import pytest
from conftest import REPO, run_cli, run_module, tiny_config
from safetensors.numpy import load_file, save_file

import lpd_jax
from lpd_jax import ensemble, import_torch, models, torch_bridge
from lpd_jax.errors import CheckpointError, ConfigError
from lpd_jax.torch_bridge import convert, export, files

GOLDEN = os.path.join(REPO, 'tests', 'golden', 'torch_bridge')
OUTPUTS = dict(np.load(os.path.join(GOLDEN, 'outputs.npz')))
FILES = {
  'pdd': ['pdd.safetensors'],
  'kuangliu': ['kuangliu_1.safetensors', 'kuangliu_2.safetensors'],
  'lpd_jax': ['lpd_jax.safetensors'],
}


def golden(name):
  return os.path.join(GOLDEN, name)


def relative(ours, reference):
  """max |ours - reference| / max |reference| (the export check's measure)."""
  return float(np.abs(np.asarray(ours, np.float64) - reference).max() / np.abs(reference).max())


def lpd_jax_logits(model, variables, x_nchw):
  """lpd-jax's member logits [K, B, C] of stacked NumPy variables on NCHW inputs."""
  num_classes = variables['params']['head']['bias'].shape[-1]
  width = variables['params']['stem_conv']['kernel'].shape[-1]
  members = ensemble.Members(models.REGISTRY[model](num_classes=num_classes, width=int(width)))
  x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
  return np.asarray(jax.jit(members.logits)(jax.tree.map(np.asarray, variables), x))


@pytest.mark.parametrize('layout', sorted(FILES))
def test_each_layout_gives_pytorchs_logits(layout):
  """Each layout's golden PyTorch ensemble, imported, computes PyTorch's member logits and
  log mean softmax (eq. 1) to 1e-5 relative."""
  paths = [golden(name) for name in FILES[layout]]
  model, variables, sources = torch_bridge.read_members(paths, torch_bridge.get(layout))
  logits = lpd_jax_logits(model, variables, OUTPUTS[f'{layout}_x'])
  assert model == 'resnet18' and logits.shape == (2, 4, 10)
  assert relative(logits, OUTPUTS[f'{layout}_logits']) <= 1e-5
  log_probs = ensemble.log_mean_softmax(logits)
  assert relative(log_probs, OUTPUTS[f'{layout}_log_probs']) <= 1e-5
  assert [s['members'] for s in sources] == ([[0], [1]] if layout == 'kuangliu' else [[0, 1]])
  if layout == 'pdd':  # each member's own fc is unused: the `_fc` ensemble's heads are fc1, fc2
    unused = {f'model_{k}.fc.{p}' for k in (1, 2) for p in ('weight', 'bias')}
    assert set(sources[0]['unused_keys']) == unused


def test_the_export_has_pytorchs_names_shapes_and_layouts(tmp_path):
  """The golden export-layout file, imported and exported again, is the same state_dict bit
  for bit; its kernels are OIHW (w[o, i, h, w] = flax's kernel[h, w, i, o]), the head's
  weight [C, D], BatchNorm's running statistics flax's batch_stats, read with the safetensors
  NumPy API."""
  reference = load_file(golden('lpd_jax.safetensors'))
  model, variables, _ = torch_bridge.read_members(
    [golden('lpd_jax.safetensors')], torch_bridge.get('lpd_jax')
  )
  path = str(tmp_path / 'ensemble.safetensors')
  files.write_safetensors(path, export.to_state_dict(variables, model, steps=7), {'k': 'v'})
  written = load_file(path)
  assert sorted(written) == sorted(reference) and len(written) == 2 * 122
  for key, value in reference.items():
    assert written[key].dtype == value.dtype and np.array_equal(written[key], value), key
  params, stats = variables['params'], variables['batch_stats']
  kernel = params['blocks_2']['conv1']['kernel'][1]  # member 1, stage 2's first conv, stride 2
  weight = written['members.1.blocks.2.conv1.weight']
  assert kernel.shape == (3, 3, 2, 4) and weight.shape == (4, 2, 3, 3)
  o, i, h, w = 3, 1, 0, 2
  assert weight[o, i, h, w] == kernel[h, w, i, o]
  assert written['members.1.blocks.2.shortcut_conv.weight'].shape == (4, 2, 1, 1)
  assert written['members.0.head.weight'].shape == (10, 16)
  assert np.array_equal(written['members.0.head.weight'], params['head']['kernel'][0].T)
  var = stats['blocks_5']['bn2']['var'][0]
  assert np.array_equal(written['members.0.blocks.5.bn2.running_var'], var)
  steps = written['members.0.stem_bn.num_batches_tracked']
  assert steps.dtype == np.int64 and steps.shape == () and steps == 7
  assert files.safetensors_metadata(path) == {'k': 'v'}


@pytest.mark.parametrize('model', ['resnet18', 'resnet34'])
def test_every_layout_converts_both_ways_bit_for_bit(model):
  """Random variables of each ResNet (shapes from the model, no compile) -> each layout's
  state_dict -> back: the same arrays, and the architecture read back from the keys."""
  rng = np.random.default_rng(0)
  shapes = convert.flax_shapes(model, 2, 10, 3)
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  for layout in torch_bridge.REGISTRY.values():
    state_dict = convert.to_torch(variables, model, layout, steps=3)
    found, back = convert.from_torch(state_dict, layout, 'random')
    same = jax.tree.map(np.array_equal, back, variables)
    assert found == model and all(jax.tree.leaves(same)), layout.name
  names = convert.to_torch(variables, model, torch_bridge.get('kuangliu'))
  last = 'layer4.1.conv2.weight' if model == 'resnet18' else 'layer4.2.conv2.weight'
  assert names[last].shape == (16, 16, 3, 3) and names['linear.weight'].shape == (10, 16)


def _bad(tmp_path, change, base='kuangliu_1.safetensors'):
  state_dict = load_file(golden(base))
  change(state_dict)
  path = str(tmp_path / 'bad.safetensors')
  save_file(state_dict, path)
  return path


def _renamed(sd):
  sd['layer2.0.downsample.0.weight'] = sd.pop('layer2.0.shortcut.0.weight')


@pytest.mark.parametrize(
  'change, message',
  [
    (_renamed, r'bad\.safetensors: missing key layer2\.0\.shortcut\.0\.weight \(layout kuangliu\)'),
    (
      lambda sd: sd.update({'layer1.0.conv3.weight': np.zeros((2, 2, 1, 1), np.float32)}),
      r'bad\.safetensors: unexpected key layer1\.0\.conv3\.weight: not part of',
    ),
    (
      lambda sd: sd.update({'linear.weight': np.zeros((10, 32), np.float32)}),
      r'key linear\.weight has shape \[10, 32\], expected \[10, 16\] \(a resnet18 of width 2',
    ),
    (
      lambda sd: sd.update({'conv1.weight': np.zeros((2, 3, 7, 7), np.float32)}),
      r'key conv1\.weight has shape \[2, 3, 7, 7\], expected \[2, 3, 3, 3\]',
    ),
    (
      lambda sd: sd.update({'layer1.2.conv1.weight': np.zeros((2, 2, 3, 3), np.float32)}),
      r'\(3, 2, 2, 2\) BasicBlocks per stage .*lpd-jax has resnet18 \(2, 2, 2, 2\), resnet34',
    ),
  ],
  ids=['missing', 'extra', 'shape', 'stem', 'architecture'],
)
def test_a_key_that_does_not_fit_is_one_line_naming_it(tmp_path, change, message):
  with pytest.raises(CheckpointError, match=message) as e:
    torch_bridge.read_members([_bad(tmp_path, change)], torch_bridge.get('kuangliu'))
  assert '\n' not in str(e.value)


def _npz_of_golden(path, layout):
  """An npz dataset of the golden inputs of `layout` (NHWC), labelled with PyTorch's
  predictions: an imported ensemble that computes PyTorch's function is 100% accurate."""
  x = OUTPUTS[f'{layout}_x'].transpose(0, 2, 3, 1)
  y = OUTPUTS[f'{layout}_log_probs'].argmax(-1)
  np.savez(path, train_images=x, train_labels=y, test_images=x, test_labels=y)
  return tiny_config(dataset='npz', npz_path=str(path), num_classes=10)


def test_an_imported_pdd_ensemble_is_a_workdir_that_evaluates(tmp_path):
  """The golden PDD `_fc` ensemble imported into a workdir: its checkpoint verifies
  (`lpd_jax.load`) and holds the variables whose logits are PyTorch's, its clean accuracy on
  PyTorch's own predictions is 100%, and imported.json says where the weights came from.
  (eval.py on an imported workdir: the README round trip below.)"""
  config = _npz_of_golden(tmp_path / 'pdd.npz', 'pdd')
  workdir = str(tmp_path / 'pdd')
  lines = import_torch.import_workdir(config, workdir, [golden('pdd.safetensors')], 'pdd')
  assert lines[0].startswith('imported 2 members (resnet18, width 2, 10 classes) from 1 file')
  assert 'test accuracy 100.00% on the first 4 npz test images' in lines[1]
  ens = lpd_jax.load(workdir)
  assert ens.meta['epoch'] == 0 and ens.config.width == 2 and ens.num_members == 2
  _, variables, _ = torch_bridge.read_members([golden('pdd.safetensors')], torch_bridge.get('pdd'))
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), ens.variables, variables)
  assert all(jax.tree.leaves(same))  # the variables whose logits are PyTorch's (above)
  source = json.load(open(os.path.join(workdir, 'imported.json')))
  assert source['layout'] == 'pdd' and source['model'] == 'resnet18'
  assert source['files'][0]['sha256'] == files.sha256(golden('pdd.safetensors'))
  assert len(source['files'][0]['unused_keys']) == 4
  # kuangliu's avg_pool2d(4) is a global average on 32x32 inputs only: 8x8 is refused.
  with pytest.raises(CheckpointError, match='layout kuangliu computes .* on 32x32 images only'):
    paths = [golden(name) for name in FILES['kuangliu']]
    import_torch.import_workdir(config, str(tmp_path / 'k'), paths, 'kuangliu')
  assert not os.path.exists(tmp_path / 'k')


def test_layouts_files_and_inference_that_cannot_work_are_one_line(tmp_path, trained_workdir):
  with pytest.raises(ConfigError, match="unknown layout 'torchvision'; choose one of lpd_jax,"):
    torch_bridge.get('torchvision')
  # In a file of several members the key is named as the file spells it.
  shortcut = 'model_2.conv3_x.0.shortcut.0.weight'
  path = _bad(
    tmp_path,
    lambda sd: sd.update({shortcut: np.zeros((4, 2, 3, 3), np.float32)}),
    'pdd.safetensors',
  )
  with pytest.raises(
    CheckpointError, match=rf'key {shortcut} has shape \[4, 2, 3, 3\], expected \[4, 2, 1, 1\]'
  ):
    torch_bridge.read_members([path], torch_bridge.get('pdd'))
  if importlib.util.find_spec('torch') is None:
    (tmp_path / 'm.pt').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'm\.pt: reading a \.pt file needs PyTorch; pip'):
      files.read_state_dict(str(tmp_path / 'm.pt'))
  # 'expected' inference of LPD scales by keep rates the PyTorch module does not compute.
  with pytest.raises(ConfigError, match="inference 'expected' of method 'lpd' .* --inference=raw"):
    export.export(trained_workdir, str(tmp_path / 'out'), inference='expected')
  bad = run_module(
    'lpd_jax.import_torch',
    '--checkpoints=a.safetensors',
    '--layout=torchvision',
    '--config=configs/quickstart.py',
    f'--workdir={tmp_path / "w"}',
  )
  assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
    "error: unknown layout 'torchvision'; choose one of lpd_jax, pdd, kuangliu"
  ]


def _readme_commands():
  readme = open(os.path.join(REPO, 'README.md')).read()
  start = readme.index('## PyTorch: export and import\n')
  section = readme[start : readme.index('\n## ', start + 1)]
  block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_the_readme_round_trip_gives_the_same_parameters_and_logits(trained_workdir, tmp_path):
  """The README's export, import and eval commands as written (the quickstart workdir the
  session's tiny trained one): the imported workdir holds the trained parameters bit for bit,
  computes the same logits, and its clean report is the trained run's test accuracy."""
  commands = _readme_commands()
  assert [c.split(' --')[0] for c in commands] == [
    'python -m lpd_jax.export',
    'python -m lpd_jax.import_torch',
    'python eval.py',
  ]
  out, imported = str(tmp_path / 'torch'), str(tmp_path / 'imported')
  swap = dict(
    [('/tmp/lpd_quickstart_torch', out), ('/tmp/lpd_imported', imported)]
    + [('/tmp/lpd_quickstart', trained_workdir)]
  )
  results = []
  for command in commands:
    for old, new in swap.items():
      command = command.replace(old, new)
    args = shlex.split(command)
    run = run_module(*args[2:]) if args[1] == '-m' else run_cli(args[1], *args[2:])
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith('error')]
    results.append(run.stdout)
  assert (
    'check skipped: PyTorch is not importable here' in results[0]
    or 'check: PyTorch matches' in results[0]
  )
  assert re.search(r'imported 3 members \(resnet18, width 4, 10 classes\) from 1 file', results[1])
  original, copy = lpd_jax.load(trained_workdir), lpd_jax.load(imported)
  same = jax.tree.map(
    lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), original.variables, copy.variables
  )
  assert all(jax.tree.leaves(same))
  assert copy.meta['checkpoint']['digest'] == original.meta['checkpoint']['digest']
  x = np.load(os.path.join(out, 'check.npz'))['x'].transpose(0, 2, 3, 1)
  logits = jax.jit(lambda e, x: e.member_logits(x))  # one compile: the same structure
  assert np.array_equal(logits(copy, x), logits(original, x))
  source = json.load(open(os.path.join(imported, 'imported.json')))
  assert source['layout'] == 'lpd_jax' and len(source['files'][0]['sha256']) == 64
  assert source['files'][0]['sha256'] == files.sha256(os.path.join(out, 'ensemble.safetensors'))
  report = json.load(open(os.path.join(imported, 'eval_clean.json')))
  trained = [json.loads(line) for line in open(os.path.join(trained_workdir, 'metrics.jsonl'))]
  assert report['ensemble_accuracy'] == pytest.approx(trained[-1]['test_ensemble_accuracy'])
  torch_python = os.environ.get('LPD_JAX_TORCH_PYTHON')
  if torch_python:  # the exported module in a PyTorch environment, against lpd-jax's outputs
    checked = subprocess.run(
      [torch_python, os.path.join(out, 'lpd_ensemble.py')], capture_output=True, text=True
    )
    assert checked.returncode == 0 and checked.stdout.startswith('ok: '), checked.stdout
