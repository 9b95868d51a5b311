"""A convolution whose input gradient is an ordinary convolution: fast inside XLA:CPU loops.

`lax.conv_general_dilated`'s input gradient (its transpose w.r.t. the input) is a convolution
with the kernel's input and output feature axes swapped *in the dimension labels*
(`b01f_01oi->b01f`). Outside a loop XLA:CPU lays the kernel out for it; inside a `while`
body (every attack's `fori_loop`, TRS's smoothness PGD) it does not, and that convolution
runs slower (measured, jax 0.10, 2 CPU cores, `benchmarks/conv_loop.py`: four input
gradients of ResNet-18's 3x3 layers at batch 64 in a `fori_loop`, 7.8x at 32x32x16 and 10.2x
at 16x16x32, 1.8-2.3x at 8x8x64 and 4x4x128).

`conv_general_dilated` here has lax's signature and value; its custom VJP computes the
input gradient from an explicitly flipped and transposed kernel [kh, kw, O, I] laid out as
an ordinary HWIO kernel, by calling itself, so the input gradient of the input gradient
(TRS, GAL, DEG: double backprop) is one too. The kernel gradient is lax's. The models of
`models.REGISTRY` use it with `conv_impl='lpd_jax'` (flax `nn.Conv(conv_general_dilated=...)`,
what `ensemble.create` gives unrolled members); cases it does not cover (other layouts,
groups, kernel dilation, negative pads) go to lax unchanged.

Reverse mode only: `jax.jvp` through it raises (a `custom_vjp`); nothing in lpd-jax uses
forward mode through a model.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

__all__ = ['conv_general_dilated']

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _pads(padding, in_spatial, kernel, strides, lhs_dilation):
  """Explicit ((lo, hi), ...) pads for a padding string or sequence."""
  if isinstance(padding, str):
    dilated = [(n - 1) * d + 1 for n, d in zip(in_spatial, lhs_dilation)]
    return tuple(lax.padtype_to_pads(dilated, kernel, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _input_gradient_pads(in_spatial, kernel, strides, out_spatial, pads, lhs_dilation):
  """The pads of the transposed convolution that maps an output cotangent to the input's
  (the transpose of a strided, lhs-dilated convolution; kernel dilation 1)."""
  result = []
  for n, k, s, m, (lo, _), d in zip(in_spatial, kernel, strides, out_spatial, pads, lhs_dilation):
    before = k - lo - 1
    after = ((n - 1) * d + 1) + k - 1 - ((m - 1) * s + 1) - before
    result.append((before, after))
  return tuple(result)


def _lax_conv(x, w, strides, pads, lhs_dilation, precision):
  """x [B, H, W, I], w [kh, kw, I, O] -> [B, H', W', O]: lax's NHWC/HWIO convolution."""
  return lax.conv_general_dilated(
    x, w, strides, pads, lhs_dilation, None, _NHWC, precision=precision
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, pads, lhs_dilation, precision):
  """`_lax_conv` with the VJP below."""
  return _lax_conv(x, w, strides, pads, lhs_dilation, precision)


def _conv_fwd(x, w, strides, pads, lhs_dilation, precision):
  # Symbolic zeros: x and w come as CustomVJPPrimal (.value, .perturbed); which gradients
  # are wanted travels in the residuals' structure (() wanted, None not), so the backward
  # pass builds no gradient nobody asked for: input gradients of a model with constant
  # parameters (the attacks', the probes') never build the kernel's, which lax cannot
  # batch under vmap on a sharded batch.
  out = _conv(x.value, w.value, strides, pads, lhs_dilation, precision)
  wanted = (() if x.perturbed else None, () if w.perturbed else None)
  return out, (x.value, w.value, wanted)


def _conv_bwd(strides, pads, lhs_dilation, precision, residuals, g):
  x, w, (input_wanted, kernel_wanted) = residuals
  if isinstance(g, SymbolicZero):
    return None, None
  dx = dw = None
  if input_wanted is not None:
    # The transposed convolution: kernel flipped in space, its I and O axes swapped as
    # data (a copy in HWIO order), strides and lhs dilation exchanged.
    w_t = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)
    t_pads = _input_gradient_pads(
      x.shape[1:3], w.shape[:2], strides, g.shape[1:3], pads, lhs_dilation
    )
    dx = _conv(g, w_t, lhs_dilation, t_pads, strides, precision).astype(x.dtype)
  if kernel_wanted is not None:
    _, kernel_vjp = jax.vjp(lambda w: _lax_conv(x, w, strides, pads, lhs_dilation, precision), w)
    dw = kernel_vjp(g)[0]
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd, symbolic_zeros=True)


def _is_nhwc(dimension_numbers):
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  return tuple(dimension_numbers) == _NHWC


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """`lax.conv_general_dilated` (same arguments, same value) with the loop-fast VJP above
  for 2-D NHWC/HWIO convolutions without groups or kernel dilation; lax itself otherwise.

  lhs [B, H, W, I], rhs [kh, kw, I, O] -> [B, H', W', O].
  """
  ndim = lhs.ndim - 2
  lhs_dilation = tuple(lhs_dilation or (1,) * ndim)
  plain = (
    ndim == 2
    and _is_nhwc(dimension_numbers)
    and feature_group_count == 1
    and batch_group_count == 1
    and all(d == 1 for d in (rhs_dilation or (1,) * ndim))
    and preferred_element_type is None
    and lhs.dtype == rhs.dtype
  )
  if not plain:
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      batch_group_count,
      precision,
      preferred_element_type,
    )
  strides = tuple(int(s) for s in window_strides)
  pads = _pads(padding, lhs.shape[1:3], rhs.shape[:2], strides, lhs_dilation)
  if any(lo < 0 or hi < 0 for lo, hi in pads):  # negative pads (crops): lax's own rule
    return _lax_conv(lhs, rhs, strides, pads, lhs_dilation, precision)
  return _conv(lhs, rhs, strides, pads, tuple(int(d) for d in lhs_dilation), _hashable(precision))


def _hashable(precision):
  if isinstance(precision, (list, tuple)):
    return tuple(precision)
  return precision
