"""How long a bound computation takes, said before it runs.

The work of a bound is counted in *forward equivalents*: the cost of one sample's forward
pass through one member. A backward pass of R coefficient rows from node l costs about R
forward passes of the prefix up to l (a transposed convolution does the multiply-adds of
the convolution), so with f_l the share of the member's multiply-adds up to node l (XLA's
cost analysis of each linear node, `prefix_shares`; a windowed pass, `window.py`, each node's
over its window only, `pass_shares`), and s = BACKWARD_SLOWDOWN:

  ibp        2                        (apply and apply_abs of every linear node)
  crown_ibp  2 + s (C - 1)            (the margins' rows from the logits)
  crown      2 + s ((C - 1) + sum over ReLU inputs l of passes_l * 2 * chunk_l * f_l)
  alpha_crown  crown's + s * 3 * steps * (C - 1)   (each step's pass and its gradient);
             with its intermediate bounds optimised too, the sum over l is (1 + 3 steps)
             times CROWN's

where passes_l = ceil(min(u_l, cap_l) / chunk_l) are the chunks that hold an unstable
neuron (`bounds._tighten` skips the others), cap_l = min(max_unstable, neurons of l)
(the neurons of l without a cap),
chunk_l = min(chunk, cap_l), and u_l the unstable neurons of layer l under interval bounds,
the most in any group of samples bounded together. Interval bounds are looser than CROWN's,
so u_l, and the estimate, err high. `seconds` multiplies by the samples, the members and
the time of one forward equivalent measured on this machine (a timed forward pass of the
ensemble); compilation comes on top.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from lpd_jax.certify import window
from lpd_jax.certify.graph import relu_inputs

# A multiply-add of a backward pass (transposed convolutions over many coefficient rows)
# costs about twice one of the batched forward pass on a CPU: without this factor the
# estimate read 0.48x (capped at 256 neurons a layer) and 0.75x (full CROWN) the measured
# time of CROWN on K = 3 width-4 ResNet-18s at 32x32x3 (`python benchmarks/certify.py
# --batch=8 --repeats=1 --methods=crown`), and 0.7x on the digits quickstart ensemble (the
# certify suite, 16 samples); with it, 0.97x, 1.5x and 1.6x.
BACKWARD_SLOWDOWN = 2.0
# alpha-CROWN: one optimisation step's margin pass with its gradient, in margin passes.
ALPHA_PASSES = 3


def _flops(fn, shape):
  analysis = jax.jit(fn).lower(jnp.zeros((1, *shape), jnp.float32)).cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
    analysis = analysis[0]
  return float((analysis or {}).get('flops', 0.0))


def node_flops(graph):
  """Per node, the flops of one sample through it (XLA's cost analysis; 0 but for linear
  nodes): [len(graph)]."""
  return np.array(
    [
      _flops(node.apply, graph[node.inputs[0]].shape) if node.op == 'linear' else 0.0
      for node in graph
    ]
  )


def prefix_shares(graph):
  """f_l: per node, the share of the member's multiply-adds done up to and including it
  (XLA's cost analysis of each linear node on one sample): [len(graph)] in [0, 1]."""
  flops = node_flops(graph)
  return np.cumsum(flops) / (flops.sum() or 1.0)


def pass_shares(graph):
  """f_l of a backward pass from each ReLU input l: {l: share}. A windowed pass
  (`window.plan`) does each linear node's multiply-adds over its window's share of the
  node's positions; a whole-image pass, the prefix share."""
  flops = node_flops(graph)
  total = flops.sum() or 1.0
  prefix = np.cumsum(flops) / total
  out = {}
  for index in relu_inputs(graph):
    if not window.supported(graph, index):
      out[index] = float(prefix[index])
      continue
    work = 0.0
    for i, w in window.plan(graph, index).items():
      if graph[i].op == 'linear':
        share = 1.0 if w is None else math.prod(w.size) / math.prod(graph[i].shape[:2])
        work += flops[i] * share
    out[index] = work / total
  return out


def forward_equivalents(graph, method, unstable, max_unstable, chunk, steps=20, intermediate=True):
  """Forward equivalents per sample and member of one bound (module docstring).

  Args:
    graph: a member `Graph`.
    method: 'ibp' | 'crown_ibp' | 'crown'.
    unstable: per ReLU input of the graph (in `relu_inputs` order), u_l; None: all neurons.
    max_unstable, chunk: 'crown's cap (None: none) and chunk (`bounds.node_bounds`).
    steps: 'alpha_crown's optimisation steps.
    intermediate: 'alpha_crown': its intermediate bounds are optimised too.
  """
  if method == 'ibp':
    return 2.0
  num_classes = graph[-1].shape[-1]
  rows = num_classes - 1.0
  if method == 'crown_ibp':
    return 2.0 + BACKWARD_SLOWDOWN * rows
  shares = pass_shares(graph)
  layers = relu_inputs(graph)
  unstable = [math.prod(graph[i].shape) for i in layers] if unstable is None else unstable
  optimised = method == 'alpha_crown' and intermediate
  for index, u in zip(layers, unstable):
    neurons = math.prod(graph[index].shape)
    cap = neurons if max_unstable is None else min(max_unstable, neurons)
    per_pass = min(chunk, cap)
    passes = (1 + ALPHA_PASSES * steps) if optimised and index > layers[0] else 1
    rows += passes * math.ceil(min(int(u), cap) / per_pass) * 2 * per_pass * shares[index]
  if method == 'alpha_crown':  # each step: the margins' pass and its gradient (about 3x)
    rows += ALPHA_PASSES * steps * (num_classes - 1)
  return 2.0 + BACKWARD_SLOWDOWN * rows


def group_maxima(counts, group):
  """Per layer, the mean over groups of `group` samples of the largest count in the group:
  counts [layers, B] -> [layers] (the chunks a group runs are its widest sample's)."""
  counts = np.asarray(counts)
  pad = -counts.shape[1] % group
  padded = np.concatenate([counts, np.zeros((counts.shape[0], pad), counts.dtype)], axis=1)
  maxima = padded.reshape(counts.shape[0], -1, group).max(axis=2)
  return maxima.mean(axis=1)


def seconds(work, num_samples, num_members, forward_seconds):
  """Estimated seconds: `work` forward equivalents per sample and member, times the
  samples and members, times `forward_seconds` (one sample through one member)."""
  return work * num_samples * num_members * forward_seconds


def format_seconds(s):
  """An estimate in words: 0.3 -> 'under 1 s', 75 -> 'about 75 s', 600 -> 'about 10.0 min'."""
  if s < 1:
    return 'under 1 s'
  return f'about {_duration(s)}'


def _duration(s):
  if s < 90:
    return f'{s:.0f} s'
  if s < 5400:
    return f'{s / 60:.1f} min'
  return f'{s / 3600:.1f} h'
