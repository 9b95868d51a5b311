"""The device script (`benchmarks/device.py`), run on the CPU at its tiny sizes: every
section measures and is recorded, and nothing starts after its time budget."""

import json
import math
import os
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks')


def _device_script():
  if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
  import device

  return device


def test_device_script_records_every_section_at_tiny_sizes(tmp_path):
  device = _device_script()
  out = tmp_path / 'device.json'
  argv = ['--tiny', '--methods=baseline', '--strategies=unroll', '--dtypes=float32']
  device.main([*argv, f'--out={out}'])
  saved = json.loads(out.read_text())
  sections = saved['sections']
  assert set(sections) == {'input_path', 'apgd', 'crown', 'epoch', 'steps'}
  assert saved['skipped'] == [] and saved['backend'] == 'cpu'
  rates = [
    sections['input_path']['before_images_per_second'],
    sections['input_path']['after_images_per_second'],
    sections['input_path']['device_augment_images_per_second'],
    sections['apgd']['images_per_s'],
    sections['crown']['samples_per_s'],
    sections['epoch']['images_per_second'],
  ]
  assert all(math.isfinite(r) and r > 0 for r in rates), rates
  assert 0 <= sections['crown']['certified_fraction'] <= 1
  assert sections['epoch']['images'] == 64 and sections['epoch']['batch'] == 8
  (step,) = sections['steps']
  assert (step['method'], step['strategy'], step['dtype']) == ('baseline', 'unroll', 'float32')
  assert step['step_ms'] > 0 and math.isclose(step['images_per_second'], 8e3 / step['step_ms'])


def test_device_script_starts_nothing_after_its_budget(tmp_path):
  device = _device_script()
  out = tmp_path / 'device.json'
  result = device.main(['--tiny', '--methods=baseline,trs', '--budget_s=0', f'--out={out}'])
  assert result['sections'] == {'steps': []}
  assert result['skipped'][:4] == ['input_path', 'apgd', 'crown', 'epoch']
  assert len(result['skipped']) == 4 + 2 * 2 * 2  # methods x strategies x dtypes
  assert json.loads(out.read_text())['skipped'] == result['skipped']
