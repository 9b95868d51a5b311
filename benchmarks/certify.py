"""Certification throughput: samples/s of IBP, CROWN-IBP and CROWN (`lpd_jax.certify`) on
the paper's certification model, K = 3 ResNet-18s of width 4 on CIFAR-shaped inputs.

Random members (`lpd_jax.ensemble.Members.init`) and uniform images by default; with
--workdir, a trained ensemble and its own test images (CROWN's cost grows with the number
of unstable ReLUs, so a trained model is the honest case). Each method gets one warm-up
call (its compile, reported), then --repeats timed calls with `block_until_ready`;
samples/s = batch / the median seconds per call. Beside it: the time and memory estimates
printed before a run (`certify.time_estimate`, `certify.memory_estimate`) and what XLA
assigns to the compiled program.
Prints a table and writes JSON to benchmarks/out/certify_<backend>.json (or --out; the
committed record is benchmarks/results/certify_cpu.json, from
  python benchmarks/certify.py --workdir=WORKDIR --batch=16 --repeats=2
on a width-4 ensemble trained by
  python train.py --config=configs/cifar10_subset.py:lpd --workdir=WORKDIR \\
      --config.width=4 --config.num_epochs=4).
"""

import argparse
import platform

import _results
import jax
import jax.numpy as jnp
import numpy as np

import lpd_jax
from lpd_jax import certify, sharding
from lpd_jax.certify.memory import compiled_bytes, format_bytes
from lpd_jax.data import load_dataset, to_float
from lpd_jax.ensemble import Ensemble, Members
from lpd_jax.models import ResNet18
from lpd_jax.names import split_names


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', default='', help='a trained ensemble (default: random members)')
  p.add_argument('--width', type=int, default=4, help='random members: ResNet-18 width')
  p.add_argument('--members', type=int, default=3, help='random members: K')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--eps', type=float, default=0.0005)
  p.add_argument('--methods', default='ibp,crown_ibp,crown')
  p.add_argument('--repeats', type=int, default=3, help='timed calls after the warm-up')
  p.add_argument('--out', default='', help='JSON path (default benchmarks/out/...)')
  return p.parse_args(argv)


def ensemble_and_inputs(args):
  if args.workdir:
    ens = lpd_jax.load(args.workdir)
    ds = load_dataset(ens.config)
    x = jnp.asarray(to_float(ds.test_images[: args.batch]))
    return ens, x, jnp.asarray(ds.test_labels[: args.batch]), f'trained ({args.workdir})'
  members = Members(ResNet18(num_classes=10, width=args.width))
  ens = Ensemble(members.init(jax.random.key(0), args.members, (32, 32, 3)), members)
  x = jax.random.uniform(jax.random.key(1), (args.batch, 32, 32, 3))
  return ens, x, jnp.arange(args.batch) % 10, 'random init'


def bench(ens, x, y, method, args, forward):
  estimate = certify.memory_estimate(ens, x.shape[1:], method, x.shape[0])
  seconds = certify.time_estimate(ens, x, args.eps, method, x.shape[0], forward)
  measured = compiled_bytes(certify.margins, ens, x, y, args.eps, method=method)
  call = lambda: certify.margins(ens, x, y, args.eps, method=method).block_until_ready()
  lower, first, _, median = _results.time_calls(call, args.repeats)
  return dict(
    method=method,
    samples_per_s=x.shape[0] / median,
    seconds_per_call=median,
    first_call_s=first,
    certified_fraction=float(np.mean(np.asarray(lower.min(axis=1)) > 0)),
    time_estimate_s=seconds,
    memory_estimate_bytes=int(estimate),
    xla_assigned_bytes=int(measured),
  )


def main(argv=None):
  args = parse_args(argv)
  ens, x, y, source = ensemble_and_inputs(args)
  forward = certify.forward_seconds(ens, x, y)
  rows = [bench(ens, x, y, m, args, forward) for m in split_names(args.methods)]
  width = jax.tree.leaves(ens.variables['params'])[0].shape[-1]
  print(
    f'\nCertification at L-inf eps {args.eps:g}: K = {ens.num_members}, ResNet-18 width '
    f'{width}, {x.shape[1:]} inputs, {source}, batch {x.shape[0]}, {jax.default_backend()}\n'
  )
  print(
    '| bound | samples/s | s per batch | estimate (s) | first call (s) | certified (%) '
    '| memory estimate | XLA assigned |'
  )
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for r in rows:
    print(
      f'| {r["method"]} | {r["samples_per_s"]:.2f} | {r["seconds_per_call"]:.2f} | '
      f'{r["time_estimate_s"]:.2f} | {r["first_call_s"]:.1f} | '
      f'{100 * r["certified_fraction"]:.1f} | '
      f'{format_bytes(r["memory_estimate_bytes"])} | {format_bytes(r["xla_assigned_bytes"])} |'
    )
  result = dict(
    benchmark='certify',
    backend=jax.default_backend(),
    device=sharding.describe()['device_kind'],
    machine=platform.machine(),
    jax=jax.__version__,
    source=source,
    num_members=ens.num_members,
    width=int(width),
    batch=int(x.shape[0]),
    eps=args.eps,
    rows=rows,
  )
  _results.write(result, 'certify', jax.default_backend(), args.out)


if __name__ == '__main__':
  main()
