"""Where a CPU training step spends its time: ResNet-18's convolutions, and in loops.

Two tables, each convolution shape of a K-member ResNet-18 of --width at batch --batch_size
(3x3, stride 1, the shapes that hold nearly all of its FLOPs):

1. forward, input gradient and kernel gradient, one call each (milliseconds, GFLOP/s). With
   --torch_python (a Python with PyTorch, outside the project's environment) the same three
   through `torch.nn.functional.conv2d` and autograd on the same threads, and their ratio:
   the kernel-level speed that bounds any JAX step on this CPU.
2. the input gradient inside a `jax.lax.fori_loop` of 4 iterations (what every attack and
   TRS's smoothness PGD run) for lax's convolution and for `lpd_jax.models.conv`'s, against
   the same 4 unrolled: XLA:CPU runs lax's form 8-40x slower inside a loop.

  python benchmarks/conv_loop.py --width 16 --torch_python PATH/TO/VENV/bin/python

Writes JSON to benchmarks/out/conv_loop_<backend>.json (or --out).
"""

import argparse
import json
import os
import subprocess
import textwrap

import _results
import jax
import jax.numpy as jnp
from jax import lax

from lpd_jax import sharding
from lpd_jax.models.conv import conv_general_dilated

NHWC = ('NHWC', 'HWIO', 'NHWC')

TORCH_TIMER = textwrap.dedent(
  """
  import json, sys, time, torch
  torch.set_num_threads(int(sys.argv[1]))
  shapes, repeats = json.loads(sys.argv[2]), int(sys.argv[3])
  def best(f):
    f()
    times = []
    for _ in range(repeats):
      start = time.perf_counter(); f(); times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]
  out = []
  for b, hw, c in shapes:
    x = torch.randn(b, c, hw, hw, requires_grad=True)
    w = torch.randn(c, c, 3, 3, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, padding=1)
    g = torch.randn_like(y)
    def forward():
      with torch.no_grad():
        torch.nn.functional.conv2d(x, w, padding=1)
    def input_grad():
      torch.autograd.grad(y, x, g, retain_graph=True)
    def kernel_grad():
      torch.autograd.grad(y, w, g, retain_graph=True)
    out.append([best(forward), best(input_grad), best(kernel_grad)])
  print(json.dumps(out))
  """
)


def resnet_shapes(width, batch):
  """(batch, side, channels) of ResNet-18's 3x3 stride-1 convolutions on 32x32, with their
  count per member (stem excluded: 3 input channels)."""
  return [((batch, 32 // 2**i, width * 2**i), 4 if i == 0 else 3) for i in range(4)]


def time_ms(fn, *args, repeats):
  fn = jax.jit(fn)
  _, _, _, median = _results.time_calls(lambda: jax.block_until_ready(fn(*args)), repeats)
  return 1e3 * median


def one_shape(b, hw, c, repeats):
  x = jax.random.normal(jax.random.key(0), (b, hw, hw, c))
  w = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, c, c))
  g = jax.random.normal(jax.random.key(2), (b, hw, hw, c))

  def conv_with(impl):
    return lambda x, w: impl(x, w, (1, 1), ((1, 1), (1, 1)), None, None, NHWC)

  plain = conv_with(lax.conv_general_dilated)
  row = dict(
    forward_ms=time_ms(plain, x, w, repeats=repeats),
    input_grad_ms=time_ms(
      lambda x, w, g: jax.vjp(lambda x: plain(x, w), x)[1](g)[0], x, w, g, repeats=repeats
    ),
    kernel_grad_ms=time_ms(
      lambda x, w, g: jax.vjp(lambda w: plain(x, w), w)[1](g)[0], x, w, g, repeats=repeats
    ),
  )
  row['gflop'] = 2 * b * hw * hw * c * c * 9 / 1e9
  for name, impl in (('lax', lax.conv_general_dilated), ('lpd_jax', conv_general_dilated)):
    conv = conv_with(impl)

    def body(x, w):  # one input gradient of a smooth loss, as an attack step takes it
      return x + 0.1 * jnp.sign(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w)) ** 2))(x))

    looped = lambda x, w: lax.fori_loop(0, 4, lambda i, x: body(x, w), x)
    unrolled = lambda x, w: lax.fori_loop(0, 4, lambda i, x: body(x, w), x, unroll=True)
    row[f'{name}_loop_ms'] = time_ms(looped, x, w, repeats=repeats)
    row[f'{name}_unrolled_ms'] = time_ms(unrolled, x, w, repeats=repeats)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--torch_python', default='', help='a python with torch (optional)')
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--out', default='', help='JSON path (default benchmarks/out/...)')
  args = parser.parse_args()
  device = sharding.describe()
  shapes = resnet_shapes(args.width, args.batch_size)
  rows = []
  for (b, hw, c), count in shapes:
    row = dict(batch=b, side=hw, channels=c, per_member=count, **one_shape(b, hw, c, args.repeats))
    rows.append(row)
    print(f'{b}x{hw}x{hw}x{c}: done', flush=True)
  if args.torch_python:
    env = dict(os.environ, OMP_WAIT_POLICY='PASSIVE')
    shape_list = json.dumps([list(s) for s, _ in shapes])
    done = subprocess.run(
      [args.torch_python, '-c', TORCH_TIMER, str(args.threads), shape_list, str(args.repeats)],
      capture_output=True,
      text=True,
      env=env,
      check=True,
    )
    for row, (fwd, dx, dw) in zip(rows, json.loads(done.stdout.strip().splitlines()[-1])):
      row.update(torch_forward_ms=fwd, torch_input_grad_ms=dx, torch_kernel_grad_ms=dw)
  lines = [
    '| shape (B, side, C) | per member | forward ms | input grad ms | kernel grad ms '
    '| GFLOP/s (fwd) |'
    + (' PyTorch fwd / dx / dw ms | JAX / PyTorch (fwd+dx+dw) |' if args.torch_python else ''),
    '| --- | ---: | ---: | ---: | ---: | ---: |' + (' ---: | ---: |' if args.torch_python else ''),
  ]
  for r in rows:
    jax_total = r['forward_ms'] + r['input_grad_ms'] + r['kernel_grad_ms']
    line = (
      f'| {r["batch"]}, {r["side"]}, {r["channels"]} | {r["per_member"]} | {r["forward_ms"]:.2f} | '
      f'{r["input_grad_ms"]:.2f} | {r["kernel_grad_ms"]:.2f} | '
      f'{r["gflop"] / r["forward_ms"] * 1e3:.0f} |'
    )
    if args.torch_python:
      torch_total = r['torch_forward_ms'] + r['torch_input_grad_ms'] + r['torch_kernel_grad_ms']
      r['jax_over_torch'] = jax_total / torch_total
      line += (
        f' {r["torch_forward_ms"]:.2f} / {r["torch_input_grad_ms"]:.2f} / '
        f'{r["torch_kernel_grad_ms"]:.2f} | {r["jax_over_torch"]:.2f}x |'
      )
    lines.append(line)
  lines += [
    '',
    '| shape (B, side, C) | lax: 4 in a fori_loop ms | lax: unrolled ms '
    '| lpd_jax: fori_loop ms | lpd_jax: unrolled ms | lax loop / lpd_jax loop |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ]
  for r in rows:
    r['loop_speedup'] = r['lax_loop_ms'] / r['lpd_jax_loop_ms']
    lines.append(
      f'| {r["batch"]}, {r["side"]}, {r["channels"]} | {r["lax_loop_ms"]:.1f} | '
      f'{r["lax_unrolled_ms"]:.1f} | {r["lpd_jax_loop_ms"]:.1f} | {r["lpd_jax_unrolled_ms"]:.1f} | '
      f'{r["loop_speedup"]:.1f}x |'
    )
  print('\n'.join(lines))
  out = _results.machine(args, results=rows, table='\n'.join(lines))
  _results.write(out, 'conv_loop', device['backend'], args.out)


if __name__ == '__main__':
  main()
