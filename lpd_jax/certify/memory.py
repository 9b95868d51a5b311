"""How much memory a bound computation needs, said before it runs.

`bytes_per_sample` is an estimate from the graph's sizes alone (no compile), in float32:
the bounds (lo, hi) of one member's ReLU inputs (members are bounded one after another),
the K members' linear bounds on the input [C-1, *input] kept until they are summed, and
the coefficient tensors A [rows, n] of a backward pass, of which about four of the
largest node's size are alive at once (the one being rewritten, its transpose, the one
waiting at a residual connection, and in windowed passes the ReLU bounds of each row).
The rows are the C - 1 margins ('crown_ibp') or 2 * chunk for the intermediate bounds of
'crown'. 'alpha_crown' adds what its optimisation
keeps: each member's ReLU-input bounds, per margin the slopes with their gradient and Adam's
moments, and the coefficient tensors of every node for the gradient (or, while it optimises
an intermediate chunk, the same per coefficient row of the chunk, if that is more).
`lpd_jax.certify.memory_estimate` adds the variables and the inputs and outputs of a batch.
`compiled_bytes` is what XLA's buffer assignment of the compiled program says it allocates:
the measurement the estimate is checked against.
"""

import math

import jax

from lpd_jax.certify.graph import relu_inputs

FLOAT_BYTES = 4
# The coefficient tensor being rewritten, its transpose, the one waiting at a residual
# connection, and (windowed passes, `window.py`) the ReLU bounds gathered per row.
LIVE_COEFFICIENT_TENSORS = 4
ALPHA_COPIES = 4  # alpha-CROWN: the slopes, their gradient, Adam's two moments


def _size(node):
  return math.prod(node.shape)


def bytes_per_sample(graphs, method, num_members, chunk=64, alpha_intermediate=True):
  """Estimated peak bytes per sample bounded at once (see the module docstring).

  Args:
    graphs: the member graphs (one is enough: members share their shapes).
    method: 'ibp' | 'crown_ibp' | 'crown' | 'alpha_crown'.
    num_members: K (the members' linear bounds on the input are kept until summed).
    chunk: 'crown' only: neurons per backward pass (2 * chunk coefficient rows).
    alpha_intermediate: 'alpha_crown' optimises its intermediate bounds too: while it does,
      a chunk's 2 * chunk rows hold slopes of every earlier ReLU (with gradient and moments)
      and coefficient tensors of every earlier node.
  """
  graph = graphs[0]
  num_classes = graph[-1].shape[-1]
  largest = max(_size(node) for node in graph)
  intervals = 2 * sum(_size(graph[i]) for i in relu_inputs(graph))
  if method == 'ibp':
    return FLOAT_BYTES * intervals
  rows = num_classes - 1 if method == 'crown_ibp' else max(num_classes - 1, 2 * chunk)
  input_bounds = num_members * (num_classes - 1) * _size(graph[0])
  crown = intervals + input_bounds + LIVE_COEFFICIENT_TENSORS * rows * largest
  if method != 'alpha_crown':
    return FLOAT_BYTES * crown
  # alpha-CROWN keeps every member's ReLU-input bounds, the slopes with their gradient and
  # Adam's two moments (one per neuron and margin), and the margins' coefficient tensors
  # of every node of every member for the gradient of the last backward pass.
  relu = sum(_size(graph[i]) for i in relu_inputs(graph))
  every_node = sum(_size(node) for node in graph)
  kept = num_members * (2 * relu + (num_classes - 1) * (ALPHA_COPIES * relu + every_node))
  if alpha_intermediate:  # one chunk at a time, before the last pass's optimisation
    kept = max(kept, 2 * chunk * (ALPHA_COPIES * relu + every_node))
  return FLOAT_BYTES * (crown + kept)


def compiled_bytes(fn, *args, **kwargs):
  """Bytes XLA assigns to `jax.jit(fn)(*args)`: temporaries + arguments + outputs (its
  `memory_analysis()` of the compiled program; the peak of the program's own buffers). A
  function jitted already is lowered as it is (its compiled program is reused when these
  arguments were called before); keyword arguments are static otherwise."""
  jitted = fn if hasattr(fn, 'lower') else jax.jit(fn, static_argnames=tuple(kwargs))
  stats = jitted.lower(*args, **kwargs).compile()
  stats = stats.memory_analysis()
  return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def format_bytes(n):
  """1536 -> '1.5 KiB'."""
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if n < 1024 or unit == 'GiB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024
  return f'{n:.1f} GiB'
