"""One script for a lent accelerator: everything lpd-jax has not yet measured on one, in minutes.

Sections, cheapest first, each recorded as it finishes (a section that would start after
--budget_s is listed as skipped, so a run that must end in 8 minutes ends with a record):
  input_path  the training input path alone (`input_path.measure`: before/after, images/s);
  apgd        APGD-CE throughput against a K = 3 ResNet-18 (`attack_pgd.bench`, images/s);
  crown       full CROWN on a K = 3 width-4 ResNet-18 (`certify.bench`, samples/s; IBP when
              --tiny);
  epoch       one CIFAR-10-sized epoch (50,000 random uint8 images, augmentation on) of LPD,
              K = 3, through `train.train_and_evaluate` (data, prefetch, step, checkpoint);
  steps       every method's training step (`train_step.make_runner`) for each member
              strategy and dtype, methods in order within each (strategy, dtype).

  python benchmarks/device.py                      # on the GPU: width 64, the paper's shapes
  python benchmarks/device.py --tiny --out X.json  # CPU check at tiny sizes (tests do this)

Prints each section's table; writes JSON to benchmarks/results/device_<backend>.json (or
--out). `ensemble.AUTO_STRATEGY` for the backend should follow the steps table's faster
strategy.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _results  # noqa: E402
import attack_pgd  # noqa: E402
import certify as certify_bench  # noqa: E402
import input_path  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import train_step  # noqa: E402

from lpd_jax import certify, ensemble, sharding, workdir  # noqa: E402
from lpd_jax.models import ResNet18  # noqa: E402
from lpd_jax.names import split_names  # noqa: E402

METHODS = 'baseline,lpd,pdd,deg,adp,gal,trs'

# Full sizes (the paper's) and the CPU check's.
SIZES = {
  'full': dict(
    width=64,
    size=32,
    members=3,
    batch=64,
    attack_batch=128,
    attack_steps=10,
    epoch_images=50_000,
    crown_batch=16,
    crown_method='crown',
    input_images=50_000,
    steps=10,
    rounds=3,
  ),
  'tiny': dict(
    width=4,
    size=8,
    members=2,
    batch=8,
    attack_batch=8,
    attack_steps=2,
    epoch_images=64,
    crown_batch=2,
    crown_method='ibp',
    input_images=512,
    steps=1,
    rounds=1,
  ),
}


def section_input_path(s):
  r = input_path.measure(s['input_images'], 128 if s['size'] == 32 else 16, s['size'], rounds=2)
  table = (
    f'input path: before {r["before_images_per_second"]:,.0f} images/s, after '
    f'{r["after_images_per_second"]:,.0f}, device crop/flip alone '
    f'{r["device_augment_images_per_second"]:,.0f}'
  )
  return r, table


def section_apgd(s):
  args = attack_pgd.parse_args(
    [
      f'--width={s["width"]}', f'--image_size={s["size"]}', f'--members={s["members"]}',
      f'--batch={s["attack_batch"]}', '--attack=apgd', f'--steps={s["attack_steps"]}',
      '--repeats=2',
    ]
  )  # fmt: skip
  model = ResNet18(num_classes=10, width=s['width'])
  shape = (s['size'], s['size'], 3)
  variables = ensemble.Members(model).init(jax.random.key(0), s['members'], shape)
  strategy = ensemble.resolve_strategy('auto')
  r = attack_pgd.bench(args, strategy, variables, model)
  table = f'APGD-CE-{s["attack_steps"]} ({strategy}): {r["images_per_s"]:.1f} images/s'
  return r, table


def section_crown(s):
  """Full CROWN's samples/s; at full size also its time and memory estimates against the
  measurement (`certify_bench.bench`: one more compile, skipped at tiny sizes)."""
  side = s['size']
  members = ensemble.Members(ResNet18(num_classes=10, width=4))
  ens = ensemble.Ensemble(members.init(jax.random.key(0), s['members'], (side, side, 3)), members)
  x = jax.random.uniform(jax.random.key(1), (s['crown_batch'], side, side, 3))
  y = jnp.arange(s['crown_batch']) % 10
  if s['size'] == 32:
    args = certify_bench.parse_args(
      ['--width=4', f'--members={s["members"]}', f'--batch={s["crown_batch"]}', '--repeats=2']
    )
    r = certify_bench.bench(ens, x, y, 'crown', args, certify.forward_seconds(ens, x, y))
  else:
    method = s['crown_method']  # IBP at tiny sizes: CROWN's CPU compile is 20 s
    call = lambda: certify.margins(ens, x, y, 0.0005, method=method).block_until_ready()
    lower, first, _, median = _results.time_calls(call, 1)
    r = dict(
      method=method,
      samples_per_s=x.shape[0] / median,
      seconds_per_call=median,
      first_call_s=first,
      certified_fraction=float(np.mean(np.asarray(lower.min(axis=1)) > 0)),
    )
  table = (
    f'{r["method"]}, width 4: {r["samples_per_s"]:.2f} samples/s ({r["seconds_per_call"]:.2f} s)'
  )
  return r, table


def section_epoch(s):
  from lpd_jax import train
  from lpd_jax.config import base_config

  n, side = s['epoch_images'], s['size']
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'synthetic.npz')
    np.savez(
      path,
      train_images=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
      train_labels=rng.integers(0, 10, n).astype(np.int32),
      test_images=rng.integers(0, 256, (1000 if n > 1000 else 16, side, side, 3), dtype=np.uint8),
      test_labels=rng.integers(0, 10, 1000 if n > 1000 else 16).astype(np.int32),
    )
    config = base_config()
    config.update(
      dict(
        dataset='npz', npz_path=path, num_classes=10, method='lpd', width=s['width'],
        num_members=s['members'], batch_size=s['batch'], num_epochs=1, augment=True,
        compilation_cache='off',
      )
    )  # fmt: skip
    config.eval.batch_size = s['batch']
    start = time.perf_counter()
    train.train_and_evaluate(config, os.path.join(tmp, 'workdir'))
    wall = time.perf_counter() - start
    record = workdir.read_metrics(os.path.join(tmp, 'workdir'))[-1]
  r = dict(
    images=n,
    batch=s['batch'],
    epoch_seconds=record['epoch_seconds'],
    images_per_second=record['images_per_second'],
    wall_seconds_with_compile_and_eval=wall,
  )
  table = (
    f'one {n:,}-image epoch of LPD (K = {s["members"]}, width {s["width"]}): '
    f'{r["epoch_seconds"]:.1f} s, {r["images_per_second"]:,.0f} images/s '
    f'({wall:.0f} s with compiles and the test evaluation)'
  )
  return r, table


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--tiny', action='store_true', help='CPU check sizes')
  p.add_argument('--methods', default=METHODS)
  p.add_argument('--strategies', default='vmap,unroll')
  p.add_argument('--dtypes', default='float32,bfloat16')
  p.add_argument('--sections', default='input_path,apgd,crown,epoch,steps')
  p.add_argument('--budget_s', type=float, default=450, help='start nothing after this')
  p.add_argument('--out', default='')
  args = p.parse_args(argv)
  s = SIZES['tiny' if args.tiny else 'full']
  begin = time.perf_counter()
  device = sharding.describe()
  result = _results.machine(args, sizes=s, sections={}, skipped=[])
  out = args.out or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'results', f'device_{device["backend"]}.json'
  )
  print(f'{device["backend"]}: {device["device_kind"]} x {device["num_devices"]}', flush=True)

  def in_budget(name):
    if time.perf_counter() - begin < args.budget_s:
      return True
    result['skipped'].append(name)
    print(f'skipped {name}: past --budget_s {args.budget_s:g}', flush=True)
    return False

  runners = dict(
    input_path=section_input_path, apgd=section_apgd, crown=section_crown, epoch=section_epoch
  )
  for name in split_names(args.sections):
    if name == 'steps' or not in_budget(name):
      continue
    started = time.perf_counter()
    r, table = runners[name](s)
    result['sections'][name] = dict(r, section_seconds=time.perf_counter() - started)
    print(table, flush=True)
    _results.write(result, 'device', device['backend'], out)
  if 'steps' in split_names(args.sections):
    rows = result['sections'].setdefault('steps', [])
    print('| method | strategy | dtype | step ms | images/s | compile s |', flush=True)
    print('| --- | --- | --- | ---: | ---: | ---: |', flush=True)
    for strategy in split_names(args.strategies):
      for dtype in split_names(args.dtypes):
        for method in split_names(args.methods):
          name = f'step {method} {strategy} {dtype}'
          if not in_budget(name):
            continue
          ns = argparse.Namespace(
            num_members=s['members'], width=s['width'], batch_size=s['batch'],
            strategy=strategy, dtype=dtype, num_classes=10, size=s['size'],
          )  # fmt: skip
          run, compile_s = train_step.make_runner(method, ns)
          seconds = min(run(s['steps']) for _ in range(s['rounds']))
          row = dict(
            method=method, strategy=strategy, dtype=dtype, step_ms=1e3 * seconds,
            images_per_second=s['batch'] / seconds, compile_seconds=compile_s,
          )  # fmt: skip
          rows.append(row)
          print(
            f'| {method} | {strategy} | {dtype} | {row["step_ms"]:.1f} | '
            f'{row["images_per_second"]:,.0f} | {compile_s:.1f} |',
            flush=True,
          )
          _results.write(result, 'device', device['backend'], out)
  result['elapsed_seconds'] = time.perf_counter() - begin
  _results.write(result, 'device', device['backend'], out)
  return result


if __name__ == '__main__':
  main()
