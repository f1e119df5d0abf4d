"""Fans: how many inputs and outputs a weight of a given shape connects.

``fan_in = prod(shape[in_axis]) * receptive_field`` and ``fan_out =
prod(shape[out_axis]) * receptive_field``; every axis that is not an input,
output or batch axis is a receptive-field axis. Used by the variance-scaling
family, torch's default bias rule and the µP and preset rules.
"""

from __future__ import annotations

import math

from jaxinit._src.checks import Shape, canonical_shape, check_axes, fail, normalize_axes

Axes = int | tuple[int, ...]


def fans(
  fn: str, shape: tuple[int, ...], in_axis: Axes, out_axis: Axes, batch_axis: Axes
) -> tuple[int, int]:
  if len(shape) < 2 and in_axis == -2 and out_axis == -1 and batch_axis == ():
    # The documented rule for biases and scalars (Keras's): fan_in = fan_out = size.
    n = shape[0] if shape else 1
    return n, n
  ins = normalize_axes(fn, "in_axis", in_axis, shape)
  outs = normalize_axes(fn, "out_axis", out_axis, shape)
  batch = normalize_axes(fn, "batch_axis", batch_axis, shape)
  for (a, xa), (b, xb) in [
    (("in_axis", ins), ("out_axis", outs)),
    (("in_axis", ins), ("batch_axis", batch)),
    (("out_axis", outs), ("batch_axis", batch)),
  ]:
    common = set(xa) & set(xb)
    if common:
      raise fail(
        fn,
        f"`{a}`={xa} and `{b}`={xb} share axis {sorted(common)} of shape {shape}; "
        "each axis is input, output, batch or receptive field, not two of them.",
      )
  receptive = math.prod(d for i, d in enumerate(shape) if i not in {*ins, *outs, *batch})
  fan_in = math.prod(shape[i] for i in ins) * receptive
  fan_out = math.prod(shape[i] for i in outs) * receptive
  return fan_in, fan_out


def compute_fans(
  shape: Shape,
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
) -> tuple[int, int]:
  """Returns ``(fan_in, fan_out)`` of a weight of ``shape``.

  ``fan_in = prod(shape[in_axis]) * receptive_field`` and
  ``fan_out = prod(shape[out_axis]) * receptive_field``, where the receptive
  field is the product of every axis that is not an input, output or batch axis
  (the spatial axes of a convolution kernel). Batch axes (a stack of layers)
  count in neither.

  The defaults fit Flax kernels: ``Dense`` ``(in, out)`` and ``Conv`` HWIO
  ``(*spatial, in, out)``. For torch / equinox OIHW kernels ``(out, in,
  *spatial)`` pass ``in_axis=1, out_axis=0``.

  Rule for 0-D and 1-D shapes (biases, scalars) with the default axes, taken
  from Keras: ``fan_in = fan_out = shape[0]`` for 1-D and 1 for 0-D. With
  explicit axes the general rule applies.

  Args:
    shape: the weight's shape.
    in_axis: input axis or axes.
    out_axis: output axis or axes.
    batch_axis: axes ignored by the fans.

  Returns:
    ``(fan_in, fan_out)`` as ints.

  Raises:
    ValueError: an axis is out of range or two roles share an axis.

  Examples:
    >>> import jaxinit
    >>> jaxinit.compute_fans((3, 3, 16, 32))                       # Flax Conv HWIO
    (144, 288)
    >>> jaxinit.compute_fans((32, 16, 3, 3), in_axis=1, out_axis=0)  # torch OIHW
    (144, 288)
    >>> jaxinit.compute_fans((12, 64, 256), batch_axis=0)           # 12 stacked layers
    (64, 256)
    >>> jaxinit.compute_fans((128,))                                # a bias
    (128, 128)
  """
  fn = "compute_fans"
  return fans(
    fn,
    canonical_shape(fn, shape),
    check_axes(fn, "in_axis", in_axis),
    check_axes(fn, "out_axis", out_axis),
    batch_axes(fn, batch_axis),
  )


def batch_axes(fn: str, value) -> tuple[int, ...]:
  axes = check_axes(fn, "batch_axis", value)
  return (axes,) if isinstance(axes, int) else axes
