"""DVERGE's training step: lpd-jax beside the official PyTorch code, same CPU, one run.

The official side is benchmarks/dverge_torch_worker.py run by a Python with PyTorch (never the
project's environment; `--torch_python`), importing `distillation.py` from a checkout of
zjysteven/DVERGE (`--dverge_repo`). The lpd-jax side is `train.make_train_step` of
`method='dverge'` with the layer fixed (what the training loop compiles for an epoch). Same
K = 3 ResNet-18s of width w, batch 64 of random 32x32x3 images, the official defaults (eps
0.07, 10 steps of 0.007 with momentum, no random start); each side warmed up, then timed
alternately for --rounds rounds of --steps steps (the order swapped every round), per layer.
The layer sets the cost (the distillation runs the network up to it): the default times a
shallow, a middle and the last layer (the logits, the official code's fixed-layer default).

  python benchmarks/dverge_peer.py --dverge_repo=PATH/TO/DVERGE \
    --torch_python=PATH/TO/VENV/bin/python

Prints a Markdown table and writes JSON (benchmarks/results/dverge_peer_cpu.json with --out).
Set OMP_WAIT_POLICY=PASSIVE for PyTorch on shared cores: with busy-waiting OpenMP threads
PyTorch ran 4-8x slower on 2 shared cores.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _results
import jax
import jax.numpy as jnp
import train_step

from lpd_jax import ensemble, gradients
from lpd_jax.config import base_config, validate
from lpd_jax.methods import dverge

HERE = os.path.dirname(os.path.abspath(__file__))
PHASE_HEAD = ' distill: official s | lpd-jax s | train: official s | lpd-jax s |'


class TorchWorker:
  """The official step in a child process with PyTorch; 'run N' -> seconds per step."""

  def __init__(self, args, layer):
    cmd = [
      args.torch_python, os.path.join(HERE, 'dverge_torch_worker.py'),
      '--dverge_repo', args.dverge_repo, '--width', str(args.width),
      '--batch_size', str(args.batch_size), '--layer', str(layer),
      '--threads', str(args.threads),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    self.p = subprocess.Popen(cmd, text=True, env=env, **pipes)
    self.info = self._read()

  def _read(self):
    for line in self.p.stdout:
      if line.startswith('@@'):
        return json.loads(line[2:])
    raise RuntimeError('the PyTorch worker stopped (its stderr is above)')

  def run(self, steps, phase='step'):
    self.p.stdin.write(f'run {steps} {phase}\n')
    self.p.stdin.flush()
    return self._read()['s']

  def close(self):
    self.p.stdin.write('quit\n')
    self.p.stdin.flush()
    self.p.wait(timeout=60)


def jax_phases(args, layer):
  """{'distill', 'train'} -> run(steps) -> seconds per call: a step's K distillations
  (`dverge.distill`) and its training value_and_grad on fixed distilled images, each jitted
  alone (the profile of where a step's time goes), on freshly initialised members."""
  config = base_config()
  config.update(dict(method='dverge', num_members=3, width=args.width, batch_size=args.batch_size))
  config.dverge.layer = layer
  validate(config)
  members = ensemble.create(config, num_classes=10)
  variables = members.init(jax.random.key(0), config.num_members, (32, 32, 3))
  x = jax.random.uniform(jax.random.key(0), (args.batch_size, 32, 32, 3))
  y = jnp.arange(args.batch_size) % 10
  c = config.dverge
  x_target = x[dverge.target_permutation(jax.random.key(0), x.shape[0])]
  distill = jax.jit(lambda v: dverge.distill(members, v, x, x_target, c.layer, None, c))
  fixed = distill(variables)[dverge.others(config.num_members)]

  def train_loss(params):
    logits, _ = dverge.cross_member_logits(members, params, variables['batch_stats'], fixed)
    return jnp.mean(gradients.cross_entropy(logits, jnp.broadcast_to(y, logits.shape[:-1])))

  grad = jax.jit(jax.value_and_grad(train_loss))
  calls = {'distill': lambda: distill(variables), 'train': lambda: grad(variables['params'])}

  def runner(name):
    call = calls[name]
    jax.block_until_ready(call())

    def run(steps):
      start = time.perf_counter()
      for _ in range(steps):
        out = call()
      jax.block_until_ready(out)
      return (time.perf_counter() - start) / steps

    return run

  return {name: runner(name) for name in calls}


def jax_runner(args, layer):
  """lpd-jax's DVERGE step at `layer` (`train_step.make_runner`, the step benchmark's runner)
  -> (run(steps) -> seconds per step, compile seconds, the phases' runners (`jax_phases`) or
  None without --phases)."""
  step_args = argparse.Namespace(
    num_members=3, width=args.width, batch_size=args.batch_size, strategy='auto',
    dtype='float32', num_classes=10, size=32, dverge_layer=layer,
  )  # fmt: skip
  run, compile_s = train_step.make_runner('dverge', step_args)
  return run, compile_s, jax_phases(args, layer) if args.phases else None


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dverge_repo', required=True, help='a checkout of zjysteven/DVERGE')
  parser.add_argument('--torch_python', default=sys.executable, help='a Python with torch')
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--layers', default='1,9,18', help='DVERGE layers of the ResNet-18')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=2)
  parser.add_argument('--threads', type=int, default=2, help='PyTorch threads')
  parser.add_argument(
    '--phases', action='store_true', help='also time the distillation and the training alone'
  )
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  if not os.path.exists(os.path.join(args.dverge_repo, 'distillation.py')):
    sys.exit(f'no distillation.py in {args.dverge_repo}: pass a checkout of zjysteven/DVERGE')
  rows = []
  for layer in [int(v) for v in args.layers.split(',')]:
    torch_side = TorchWorker(args, layer)
    run_jax, compile_s, jax_phase = jax_runner(args, layer)
    sides = {'official': torch_side.run, 'lpd_jax': run_jax}
    if jax_phase:
      for phase in ('distill', 'train'):
        sides[f'official_{phase}'] = lambda n, p=phase: torch_side.run(n, p)
        sides[f'lpd_jax_{phase}'] = jax_phase[phase]
    times = {name: [] for name in sides}
    for r in range(args.rounds):
      order = list(sides.items())
      for name, run in order if r % 2 == 0 else order[::-1]:
        times[name].append(run(args.steps))
    torch_side.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    rows.append(
      dict(layer=layer, official_s=med['official'], lpd_jax_s=med['lpd_jax'],
           official_over_lpd_jax=med['official'] / med['lpd_jax'], times=times, medians=med,
           lpd_jax_compile_s=compile_s, torch=torch_side.info.get('torch'))
    )  # fmt: skip
    print(f'layer {layer}: official {med["official"]:.3f} s, lpd-jax {med["lpd_jax"]:.3f} s')
  print(
    f'\nDVERGE step, K = 3 ResNet-18 width {args.width}, batch {args.batch_size}, 32x32x3, '
    f'10 distillation steps; median of {args.rounds} alternating rounds of {args.steps} steps\n'
  )
  print(
    '| layer | official PyTorch s | lpd-jax s | official / lpd-jax |' + PHASE_HEAD * args.phases
  )
  print('| ---: | ---: | ---: | ---: |' + ' ---: |' * (4 * args.phases))
  for row in rows:
    m = row['medians']
    phases = ''.join(
      f' {m[f"{side}_{phase}"]:.3f} |' for phase in ('distill', 'train')
      for side in ('official', 'lpd_jax')
    ) if args.phases else ''  # fmt: skip
    print(
      f'| {row["layer"]} | {row["official_s"]:.3f} | {row["lpd_jax_s"]:.3f} | '
      f'{row["official_over_lpd_jax"]:.2f}x |{phases}'
    )
  result = _results.machine(args, rows=rows)
  _results.write(result, 'dverge_peer', jax.default_backend(), args.out)


if __name__ == '__main__':
  main()
