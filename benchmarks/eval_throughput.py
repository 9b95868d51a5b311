"""Evaluation throughput: each suite's images/s on 1 and on N devices, and the cascade's saving.

Runs every suite of SUITES through `evaluate.evaluate` on a trained workdir (default: the
quickstart, trained here into a temporary folder) in a child process per device count
(simulated CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=N), twice per
suite: the first run compiles, the second is timed (the steady images/s). Then the robust
suite with and without the cascade (eval.robust.cascade): seconds and attacked points.

  python benchmarks/eval_throughput.py                         # 1 and 8 simulated devices
  python benchmarks/eval_throughput.py --workdir DIR --devices 1 8 --num_examples 256
  python benchmarks/eval_throughput.py --suites= --robust_eps 0.2   # the cascade alone

Simulated devices share the machine's cores: on a 2-core CPU 8 devices cannot be faster
than 1 (the numbers show what splitting costs); on a machine with 8 accelerators they are
8 devices. Prints a table and writes benchmarks/out/eval_throughput_<backend>.json (or --out).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import _results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each suite at a budget that runs in seconds on the quickstart (digits, 8x8).
SUITES = dict(
  clean={},
  paper=dict(attacks='fgsm,pgd'),
  sweep=dict(norms='linf', linf_eps=(0.02, 0.08), steps=10),
  robust=dict(
    attacks='apgd-ce,apgd-t,square,pgd-margin',
    eps=(0.05,),
    apgd_ce=dict(steps=20),
    apgd_t=dict(steps=20, num_targets=3),
    square=dict(queries=200),
    pgd_margin=dict(steps=20),
  ),
  audit=dict(steps=5, strong_steps=20, restarts=1, square_queries=100),
  transfer=dict(attacks='fgsm,pgd'),
  probes=dict(num_examples=-1),
  certify=dict(methods='ibp,crown', num_examples=16, eps=0.001, curve_points=0, pgd_steps=10),
)


def suite_config(workdir, suite, settings, args, devices, reports):
  from lpd_jax import loading

  config = loading.read_config(workdir).config
  config.eval.suite = suite
  config.eval.num_examples = args.num_examples
  config.eval.batch_size = args.batch
  config.eval.data_devices = devices
  config.eval.reports_dir = reports
  config.eval[suite].update(settings)
  if suite == 'audit':
    config.eval.audit.num_examples = args.num_examples
  if suite == 'transfer':
    config.eval.transfer.workdir = workdir
  if suite == 'certify':
    config.eval.certify.batch_size = max(16, devices)
  return config


def timed(config, workdir):
  from lpd_jax import evaluate

  start = time.perf_counter()
  result = evaluate.evaluate(config, workdir)
  return time.perf_counter() - start, result


def child(args):
  """One device count: every suite twice (compile, then timed), the robust cascade on/off."""
  import jax

  from lpd_jax import sharding

  devices = jax.device_count()
  rows = []
  chosen = [s for s in args.suites.split(',') if s]
  robust = dict(SUITES['robust'], eps=(args.robust_eps,))
  with tempfile.TemporaryDirectory() as reports:
    for suite, settings in ((s, SUITES[s]) for s in chosen):
      settings = robust if suite == 'robust' else settings
      config = suite_config(args.workdir, suite, settings, args, devices, reports)
      first, _ = timed(config, args.workdir)
      seconds, result = timed(config, args.workdir)
      images = result[suite].get('num_examples') or result[suite]['test_examples']
      rows.append(
        dict(
          suite=suite,
          devices=devices,
          first_seconds=first,
          seconds=seconds,
          images=images,
          images_per_second=images / seconds,
        )
      )
    for cascade in (True, False):
      config = suite_config(args.workdir, 'robust', robust, args, devices, reports)
      config.eval.robust.cascade = cascade
      timed(config, args.workdir)
      seconds, result = timed(config, args.workdir)
      r = result['robust']
      rows.append(
        dict(
          suite='robust',
          devices=devices,
          cascade=cascade,
          seconds=seconds,
          attacked_points=sum(row['attacked'] for row in r['rows']),
          robust_accuracy=r['robust_accuracy'],
        )
      )
  print('ROWS ' + json.dumps(dict(rows=rows, device=sharding.describe())))


def run_child(args, devices):
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  if env['JAX_PLATFORMS'] == 'cpu':
    flag = f'--xla_force_host_platform_device_count={devices}'
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + flag).strip()
  command = [sys.executable, __file__, '--child', '--workdir', args.workdir]
  command += ['--num_examples', str(args.num_examples), '--batch', str(args.batch)]
  command += ['--suites', args.suites, '--robust_eps', str(args.robust_eps)]
  proc = subprocess.run(command, env=env, capture_output=True, text=True)
  if proc.returncode:
    sys.exit(f'the run on {devices} devices failed:\n{proc.stderr[-3000:]}')
  line = next(s for s in proc.stdout.splitlines() if s.startswith('ROWS '))
  return json.loads(line[len('ROWS ') :])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='', help='a trained workdir; default: the quickstart')
  parser.add_argument('--devices', type=int, nargs='+', default=[1, 8])
  parser.add_argument('--num_examples', type=int, default=256)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--suites', default=','.join(SUITES), help='comma-separated; empty: none')
  parser.add_argument('--robust_eps', type=float, default=0.05, help="the robust suite's eps")
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--out', default='', help='JSON path; default benchmarks/out/...')
  args = parser.parse_args()
  if args.child:
    return child(args)
  if not args.workdir:
    args.workdir = os.path.join(tempfile.mkdtemp(), 'quickstart')
    print(f'training the quickstart into {args.workdir} ...', flush=True)
    subprocess.run(
      [sys.executable, 'train.py', '--config=configs/quickstart.py', f'--workdir={args.workdir}'],
      cwd=REPO,
      check=True,
      capture_output=True,
    )
  runs = {d: run_child(args, d) for d in args.devices}
  base = {r['suite']: r for r in runs[args.devices[0]]['rows'] if 'cascade' not in r}
  print(f'{"suite":>9} {"devices":>7} {"img/s":>8} {"vs first":>8} {"compile+run s":>13}')
  rows = []
  for d, run in runs.items():
    for r in run['rows']:
      if 'cascade' in r:
        continue
      r['vs_first_device_count'] = base[r['suite']]['seconds'] / r['seconds']
      rows.append(r)
      print(
        f'{r["suite"]:>9} {d:>7} {r["images_per_second"]:>8.1f} '
        f'{r["vs_first_device_count"]:>7.2f}x {r["first_seconds"]:>13.1f}'
      )
  print('the robust suite with and without the cascade (same worst case):')
  cascade_rows = []
  for d, run in runs.items():
    on, off = (next(r for r in run['rows'] if r.get('cascade') is c) for c in (True, False))
    assert on['robust_accuracy'] == off['robust_accuracy'], (on, off)
    saving = dict(
      devices=d,
      seconds_cascade=on['seconds'],
      seconds_all_points=off['seconds'],
      speedup=off['seconds'] / on['seconds'],
      attacked_points_cascade=on['attacked_points'],
      attacked_points_all=off['attacked_points'],
      robust_accuracy=on['robust_accuracy'],
    )
    cascade_rows.append(saving)
    print(
      f'  {d} devices: {on["seconds"]:.1f} s vs {off["seconds"]:.1f} s all points '
      f'({saving["speedup"]:.2f}x), {on["attacked_points"]} vs {off["attacked_points"]} '
      f'attacked points, robust accuracy {on["robust_accuracy"]}'
    )
  device = runs[args.devices[0]]['device']
  out = dict(
    backend=device['backend'],
    device=device['device_kind'],
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    args={k: v for k, v in vars(args).items() if k != 'child'},
    suites=SUITES,
    results=rows,
    cascade=cascade_rows,
  )
  _results.write(out, 'eval_throughput', device['backend'], args.out)


if __name__ == '__main__':
  main()
