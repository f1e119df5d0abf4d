"""Structured initializers: identity, dirac (identity convolution), zero_hadamard
(ZerO, Zhao et al. 2022), sparse (Martens 2010), normalized (unit-norm incoming
weights) and zero_rows (an embedding's padding row)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src import sampling, serialization
from jaxinit._src.base import Initializer
from jaxinit._src.basic import normal as _normal
from jaxinit._src.checks import (
  DTypeLike,
  as_tuple,
  check_axes,
  check_int,
  check_range,
  check_real,
  check_side,
  compute_dtype,
  fail,
  is_complex,
  normalize_axes,
)
from jaxinit._src.orthogonal import centre, sum_of_squares
from jaxinit._src.registry import register

Axes = int | tuple[int, ...]


def _iota(shape: tuple[int, ...], axis: int) -> jax.Array:
  return jax.lax.broadcasted_iota(np.int32, shape, axis)


# ---------------------------------------------------------------------------
# identity and dirac: deterministic, built from iota comparisons (no constants
# of the kernel's size are embedded in the program).
# ---------------------------------------------------------------------------


@register("identity")
@dataclasses.dataclass(frozen=True, repr=False)
class _Identity(Initializer):
  scale: float = 1.0
  in_axis: int = -2
  out_axis: int = -1

  name = "identity"
  deterministic = True
  layout_fields = (("in_axis", "in"), ("out_axis", "out"))
  formula = (
    "w[..., i, ..., j, ...] = scale if i == j else 0 between the in and out axes "
    "(non-square allowed; every other axis is a batch)"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "scale", check_real(fn, "scale", self.scale))
    _channel_axes_args(self)
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    _check_scale_range(fn, self.scale, dtype)
    _channel_axes(fn, self, shape)

  def _sample(self, key, shape, dtype):
    i, o = _channel_axes(self.name, self, shape)
    eye = _iota(shape, i) == _iota(shape, o)
    return jnp.where(eye, jnp.asarray(self.scale, dtype), jnp.zeros((), dtype))


def _check_scale_range(fn: str, scale: float, dtype) -> None:
  """The values of identity and dirac, ``0`` and ``scale``, fit ``dtype``."""
  check_range(fn, dtype, min(0.0, scale), max(0.0, scale), f"`scale`={scale!r}")


def _channel_axes_args(init: Any) -> None:
  """Checks the ``in_axis`` / ``out_axis`` fields of identity and dirac (one int each)."""
  for arg in ("in_axis", "out_axis"):
    object.__setattr__(init, arg, check_int(init.name, arg, getattr(init, arg)))
  if init.in_axis == init.out_axis:
    raise fail(init.name, f"`in_axis` and `out_axis` must differ, got {init.in_axis} for both.")


def _channel_axes(fn: str, init: Any, shape: tuple[int, ...]) -> tuple[int, int]:
  """The input and output axes of ``shape``, non-negative, or a clear error."""
  if len(shape) < 2:
    raise fail(
      fn, f"needs a shape with at least 2 dimensions (an input and an output axis), got {shape}."
    )
  i = normalize_axes(fn, "in_axis", init.in_axis, shape)[0]
  o = normalize_axes(fn, "out_axis", init.out_axis, shape)[0]
  if i == o:
    raise fail(
      fn,
      f"`in_axis`={init.in_axis} and `out_axis`={init.out_axis} name the same axis "
      f"of the shape {shape}.",
    )
  check_side(fn, shape, shape, "a kernel")
  return i, o


def identity(
  scale: float = 1.0,
  in_axis: int = -2,
  out_axis: int = -1,
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds an initializer of (scaled, possibly rectangular) identity matrices.

  The input and output axes (by default the last two, Flax's ``(in, out)``)
  hold ``scale * eye(m, n)``: ones on the main diagonal, zeros elsewhere; for
  ``m != n`` the leading ``min(m, n)`` diagonal. Every other axis is a batch
  (every matrix of a stack ``(layers, n, n)`` is the identity). A torch/equinox
  ``(out, in)`` weight gets the same map with ``in_axis=1, out_axis=0`` (what
  ``with_layout("torch")`` and ``reinit(layout=...)`` set). For a Flax
  ``Dense`` kernel ``(in, out)`` with ``in <= out`` the layer copies its input
  into the first ``in`` outputs. For convolution kernels use :func:`dirac`.
  (torch's ``eye_`` is 2-D only.)

  Args:
    scale: the diagonal value (any finite real).
    in_axis: the input axis.
    out_axis: the output axis.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer; the key is ignored.

  Raises:
    TypeError, ValueError: ``scale`` is not a finite real; at call time, a
      shape with fewer than 2 dimensions.

  Examples:
    >>> import jax, jaxinit
    >>> jaxinit.identity(2.0)(jax.random.key(0), (2, 3))
    Array([[2., 0., 0.],
           [0., 2., 0.]], dtype=float32)
  """
  return _Identity(scale, in_axis, out_axis, dtype=dtype)


@register("dirac")
@dataclasses.dataclass(frozen=True, repr=False)
class _Dirac(Initializer):
  groups: int = 1
  scale: float = 1.0
  in_axis: int = -2
  out_axis: int = -1

  name = "dirac"
  deterministic = True
  layout_fields = (("in_axis", "in"), ("out_axis", "out"))
  formula = (
    "conv kernel (in_per_group and out channel axes, the rest spatial): w[centre, i, o] = "
    "scale if i == o mod (out / groups); centre = (k-1)//2 per spatial axis"
  )

  def __post_init__(self):
    object.__setattr__(self, "groups", check_int(self.name, "groups", self.groups, minimum=1))
    object.__setattr__(self, "scale", check_real(self.name, "scale", self.scale))
    _channel_axes_args(self)
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    _check_scale_range(fn, self.scale, dtype)
    _, o = _channel_axes(fn, self, shape)
    if shape[o] % self.groups:
      raise fail(
        fn,
        f"the output channels ({shape[o]}, axis {o} of {shape}) are not "
        f"divisible by `groups`={self.groups}.",
      )

  def _sample(self, key, shape, dtype):
    i, o = _channel_axes(self.name, self, shape)
    per_group = shape[o] // self.groups
    hit = _iota(shape, i) == _iota(shape, o) % per_group
    spatial = [a for a in range(len(shape)) if a not in (i, o)]
    for axis, c in zip(spatial, centre(tuple(shape[a] for a in spatial)), strict=True):
      hit = hit & (_iota(shape, axis) == c)
    return jnp.where(hit, jnp.asarray(self.scale, dtype), jnp.zeros((), dtype))


def dirac(
  groups: int = 1,
  scale: float = 1.0,
  in_axis: int = -2,
  out_axis: int = -1,
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds an identity-preserving convolution kernel initializer (torch's ``dirac_``).

  For a Flax kernel ``(*spatial, in_per_group, out)`` (Flax stores grouped
  kernels with ``in_features // feature_group_count`` input channels) the
  kernel is zero except at the centre tap, where output channel ``o`` of group
  ``g = o // (out / groups)`` reads input channel ``o mod (out / groups)`` of
  its group with weight ``scale``. A convolution with ``padding="SAME"``,
  stride 1 and ``feature_group_count=groups`` then returns ``scale * x`` when
  ``in == out``; with fewer outputs per group it keeps the first channels of
  each group, with more it zero-pads them.

  The centre is ``(k - 1) // 2`` along each spatial axis: the tap Flax/lax
  ``padding="SAME"`` aligns with the output, so even kernel sizes preserve the
  input too (torch uses ``k // 2``, which shifts even kernels by one under
  Flax's padding). A 2-D shape ``(in, out)`` gets the grouped identity matrix.

  Args:
    groups: the convolution's ``feature_group_count``; it must divide ``out``.
    scale: the value of the centre taps.
    in_axis: the input-channel axis (``-2`` for Flax ``(*spatial, in, out)``,
      ``1`` for torch/equinox ``(out, in, *spatial)``: what
      ``with_layout("torch")`` and ``reinit(layout=...)`` set).
    out_axis: the output-channel axis (``-1`` for Flax, ``0`` for torch); every
      other axis is spatial.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer; the key is ignored.

  Raises:
    ValueError: ``groups < 1``; at call time, ``out`` not divisible by
      ``groups`` or fewer than 2 dimensions.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> import flax.linen as nn
    >>> conv = nn.Conv(8, (3, 3), padding="SAME", kernel_init=jaxinit.dirac())
    >>> x = jax.random.normal(jax.random.key(1), (1, 5, 5, 8))
    >>> y, _ = conv.init_with_output(jax.random.key(0), x)
    >>> bool(jnp.allclose(y, x))
    True
  """
  return _Dirac(groups, scale, in_axis, out_axis, dtype=dtype)


# ---------------------------------------------------------------------------
# zero_hadamard (ZerO): deterministic, from iota comparisons and bit counts.
# ---------------------------------------------------------------------------


def _matrix_axes(fn: str, shape: tuple[int, ...], in_axis: int, out_axis: int, batch_axis):
  """(in, out, spatial axes) of ``shape`` as non-negative ints, or a clear error."""
  if len(shape) < 2:
    raise fail(fn, f"needs a shape with at least 2 dimensions (a matrix or a kernel), got {shape}.")
  i = normalize_axes(fn, "in_axis", in_axis, shape)[0]
  o = normalize_axes(fn, "out_axis", out_axis, shape)[0]
  batch = normalize_axes(fn, "batch_axis", batch_axis, shape)
  if i == o or i in batch or o in batch:
    raise fail(
      fn,
      f"`in_axis`={in_axis}, `out_axis`={out_axis} and `batch_axis`={batch_axis} must name "
      f"different axes of the shape {shape}.",
    )
  return i, o, tuple(a for a in range(len(shape)) if a not in (i, o, *batch))


@register("zero_hadamard")
@dataclasses.dataclass(frozen=True, repr=False)
class _ZeroHadamard(Initializer):
  in_axis: int = -2
  out_axis: int = -1
  batch_axis: int | tuple[int, ...] = ()

  name = "zero_hadamard"
  deterministic = True
  layout_fields = (("in_axis", "in"), ("out_axis", "out"))
  formula = (
    "ZerO: the (out x in) map W = I (partial identity) if out <= in, else the top-left "
    "block of H_p / sqrt(p), H_p the Sylvester Hadamard matrix, p = 2^ceil(log2 out); "
    "spatial axes: W at the centre tap ((k-1)//2), zeros elsewhere"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "in_axis", check_int(fn, "in_axis", self.in_axis))
    object.__setattr__(self, "out_axis", check_int(fn, "out_axis", self.out_axis))
    object.__setattr__(self, "batch_axis", _batch(fn, self.batch_axis))
    if self.in_axis == self.out_axis:
      raise fail(fn, f"`in_axis` and `out_axis` must differ, both are {self.in_axis}.")
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    _matrix_axes(fn, shape, self.in_axis, self.out_axis, self.batch_axis)

  def _sample(self, key, shape, dtype):
    i_ax, o_ax, spatial = _matrix_axes(
      self.name, shape, self.in_axis, self.out_axis, self.batch_axis
    )
    m, n = shape[o_ax], shape[i_ax]
    o, i = _iota(shape, o_ax), _iota(shape, i_ax)
    real = compute_dtype(dtype)
    if m <= n:  # partial identity
      value = jnp.where(o == i, jnp.ones((), real), jnp.zeros((), real))
    else:  # H_p[o, i] = (-1)^popcount(o & i) (Sylvester), scaled by 1/sqrt(p)
      p = 1 << (m - 1).bit_length()
      odd = jax.lax.population_count(o & i) & 1
      h = np.asarray(1 / math.sqrt(p), real)
      value = jnp.where(odd == 1, -h, h)
    centre_taps = centre(tuple(shape[a] for a in spatial))
    hit = functools.reduce(
      jnp.logical_and,
      [_iota(shape, a) == c for a, c in zip(spatial, centre_taps, strict=True)],
      jnp.ones(shape, bool),
    )
    return jnp.where(hit, value, jnp.zeros((), real)).astype(dtype)


def zero_hadamard(
  in_axis: int = -2,
  out_axis: int = -1,
  batch_axis: int | tuple[int, ...] = (),
  dtype: DTypeLike | None = None,
) -> Initializer:
  r"""Builds ZerO's deterministic initializer: partial identity, Hadamard when widening.

  The weight is the linear map ``W`` from ``n = shape[in_axis]`` inputs to
  ``m = shape[out_axis]`` outputs (in torch's orientation, ``(m, n)``):

  * ``m <= n``: ``W = I_{m x n}``, the partial identity (output ``i`` copies input ``i``);
  * ``m > n``: ``W = I_{m x p} (H_p / sqrt(p)) I_{p x n}``, the top-left ``m x n``
    block of the Sylvester Hadamard matrix ``H_p`` (``H_1 = [1]``, ``H_{2k} =
    [[H, H], [H, -H]]``, so ``H_p[o, i] = (-1)^{popcount(o & i)}``) divided by
    ``sqrt(p)``, ``p = 2^ceil(log2 m)``: every entry is ``+-1/sqrt(p)``. The
    normalization is by ``sqrt(p)``, not ``sqrt(m)``, as in the reference code, so
    the columns are orthonormal only when ``m`` is a power of two.

  The key is ignored. For the default axes a Flax ``Dense`` kernel ``(in, out)``
  holds ``W^T`` (``layout="torch"`` in :func:`jaxinit.reinit`, or ``in_axis=1,
  out_axis=0``, reads a torch ``(out, in)`` weight). Any other axis is a spatial
  axis of a convolution kernel: ``W`` sits at the centre tap (``(k - 1) // 2``,
  as :func:`dirac` and :func:`delta_orthogonal`), zeros elsewhere, so the
  convolution applies ``W`` to each position's channels. (The released ZerO
  code initializes linear layers only; the centre-tap placement is jaxinit's
  extension.) Each index of ``batch_axis`` holds the same ``W``.

  Args:
    in_axis: the input axis (an int).
    out_axis: the output axis (an int).
    batch_axis: axes of a stack of weights (each gets the same matrix).
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer; the key is ignored.

  Raises:
    TypeError: an axis is not an int (``batch_axis``: ints).
    ValueError: ``in_axis == out_axis``; at call time, fewer than 2 dimensions,
      an axis out of range, or two roles on one axis.

  Examples:
    >>> import jax, jaxinit
    >>> jaxinit.zero_hadamard(in_axis=1, out_axis=0)(jax.random.key(0), (3, 2))  # torch (out, in)
    Array([[ 0.5,  0.5],
           [ 0.5, -0.5],
           [ 0.5,  0.5]], dtype=float32)
    >>> jaxinit.zero_hadamard()(jax.random.key(0), (3, 2))   # Flax (in, out): narrowing
    Array([[1., 0.],
           [0., 1.],
           [0., 0.]], dtype=float32)

  References:
    J. Zhao, F. Schaefer, A. Anandkumar, "ZerO initialization: initializing
    neural networks with only zeros and ones", TMLR 2022; the reference code
    jiaweizzhao/ZerO-initialization ``example_mnist.ipynb`` at cf2bf5d.
  """
  return _ZeroHadamard(in_axis, out_axis, batch_axis, dtype=dtype)


# ---------------------------------------------------------------------------
# Unit layout shared by sparse and normalized: each index of the output and
# batch axes is a unit; all other axes (inputs x receptive field) hold its
# incoming weights.
# ---------------------------------------------------------------------------


def _unit_axes(fn: str, out_axis: Axes, batch_axis: Axes, shape: tuple[int, ...]):
  """(unit axes, fan-in axes) of ``shape`` as non-negative ints, or a clear error."""
  outs = normalize_axes(fn, "out_axis", out_axis, shape)
  batch = normalize_axes(fn, "batch_axis", batch_axis, shape)
  common = set(outs) & set(batch)
  if common:
    raise fail(
      fn,
      f"`out_axis`={out_axis!r} and `batch_axis`={batch_axis!r} share axis "
      f"{sorted(common)} of shape {shape}.",
    )
  fan = tuple(a for a in range(len(shape)) if a not in outs and a not in batch)
  if not fan:
    raise fail(
      fn,
      f"the shape {shape} has no fan-in axis: every axis is an output or batch "
      "axis, so the units have no incoming weights (a bias? use zeros or normal).",
    )
  return (*batch, *outs), fan


def _batch(fn: str, value: Any) -> tuple[int, ...]:
  return as_tuple(check_axes(fn, "batch_axis", value))


@register("normalized")
@dataclasses.dataclass(frozen=True, repr=False)
class _Normalized(Initializer):
  scale: float = 1.0
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "normalized"
  layout_fields = (("out_axis", "out"),)
  formula = (
    "w = scale * z / ||z||, z ~ N(0, I) over each output unit's incoming weights: "
    "uniform direction, norm exactly scale"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "scale", check_real(fn, "scale", self.scale, positive=True))
    object.__setattr__(self, "out_axis", check_axes(fn, "out_axis", self.out_axis))
    object.__setattr__(self, "batch_axis", _batch(fn, self.batch_axis))
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    check_range(fn, dtype, -self.scale, self.scale, f"`scale`={self.scale!r}")
    _unit_axes(fn, self.out_axis, self.batch_axis, shape)

  def _sample(self, key, shape, dtype):
    _, fan = _unit_axes(self.name, self.out_axis, self.batch_axis, shape)
    real = compute_dtype(dtype)
    if is_complex(dtype):
      z = sampling.complex_standard_normal(key, shape, real)
    else:
      z = sampling.standard_normal(key, shape, real)
    nrm2 = sum_of_squares(z, fan)
    # A unit whose draw is exactly zero (probability ~0) gets e_1, so the norm is exact.
    first = functools.reduce(jnp.logical_and, [_iota(shape, a) == 0 for a in fan])
    zero = nrm2 == 0
    z = jnp.where(zero & first, jnp.ones((), z.dtype), z)
    nrm = jnp.sqrt(jnp.where(zero, jnp.ones((), real), nrm2))
    return (z * (np.asarray(self.scale, real) / nrm).astype(z.dtype)).astype(dtype)


_UNITS_DOC = """    out_axis: the axis or axes of the output units (``-1`` for Flax kernels,
      ``0`` for torch ``(out, in, ...)``); every axis that is neither an output
      nor a batch axis holds incoming weights (inputs and receptive field).
    batch_axis: axes of a stack of independent weights (each index is a
      separate set of units)."""


def _units_doc(f):
  f.__doc__ = f.__doc__.replace("    <units>", _UNITS_DOC)
  return f


@_units_doc
def normalized(
  scale: float = 1.0,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  r"""Builds an initializer whose units' incoming weight vectors have norm ``scale``.

  For each output unit ``o`` (each index of ``out_axis`` and ``batch_axis``)
  the incoming weights ``w_o`` (all other axes: for a Flax conv kernel
  ``(kh, kw, in, out)`` the ``kh * kw * in`` taps) are ``scale * z / ||z||``
  with ``z`` standard Gaussian, i.e. uniformly distributed on the sphere of
  radius ``scale`` (weight-normalization's initial state, Salimans & Kingma
  2016). Complex dtypes draw a uniform direction in complex space.

  Unlike :func:`orthogonal`, units are normalized independently: a depthwise
  kernel ``(3, 3, 1, C)`` gets unit-norm 9-tap filters for any ``C``.

  Args:
    scale: the norm of every unit's incoming weights, > 0.
    <units>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    ValueError: ``scale <= 0``; at call time, axes out of range or a shape
      with no fan-in axis.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> w = jaxinit.normalized(2.0)(jax.random.key(0), (3, 3, 8, 16))
    >>> jnp.linalg.norm(w.reshape(-1, 16), axis=0).round(4)
    Array([2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2.], dtype=float32)
  """
  return _Normalized(scale, out_axis, batch_axis, dtype=dtype)


# ---------------------------------------------------------------------------
# sparse
# ---------------------------------------------------------------------------

MARTENS_K = 15
_DEFAULT_VALUES = _normal(stddev=1.0)  # Martens: unit Gaussian


def _values(fn: str, values: Any, arg: str = "values") -> Initializer:
  if values is None:
    return _DEFAULT_VALUES
  if isinstance(values, Initializer):
    return values
  if isinstance(values, (str, Mapping)):
    try:
      return serialization.get(values)
    except ValueError as e:
      raise fail(fn, f"`{arg}`={values!r} is not a usable initializer: {e}") from None
  raise fail(
    fn,
    f"`{arg}` must be a jaxinit initializer (e.g. jaxinit.normal(1.0)), a "
    f"registered name or a config dict, got {values!r}; the draw must be "
    "hashable and serializable, which closures are not.",
    TypeError,
  )


def _count_zeros(sparsity: float, fan_in: int) -> int:
  """``ceil(sparsity * fan_in)`` without float artefacts (0.3 * 10 is 3, not 4)."""
  x = sparsity * fan_in
  r = round(x)
  return r if abs(x - r) <= 1e-9 * max(1.0, x) else math.ceil(x)


@register("sparse")
@dataclasses.dataclass(frozen=True, repr=False)
class _Sparse(Initializer):
  num_nonzero: int | None = None
  sparsity: float | None = None
  values: Any = _DEFAULT_VALUES  # an initializer, a name or a config; stored as an initializer
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "sparse"
  layout_fields = (("out_axis", "out"),)
  formula = (
    "each output unit keeps exactly num_nonzero (default 15) incoming weights, or a "
    "fraction 1 - sparsity of them, at uniformly random positions; values from "
    "`values` (default N(0, 1)), zeros elsewhere"
  )

  def __post_init__(self):
    fn = self.name
    if self.num_nonzero is not None and self.sparsity is not None:
      raise fail(
        fn,
        f"give `num_nonzero` or `sparsity`, not both (got num_nonzero="
        f"{self.num_nonzero!r}, sparsity={self.sparsity!r}).",
      )
    if self.num_nonzero is None and self.sparsity is None:
      object.__setattr__(self, "num_nonzero", MARTENS_K)
    if self.num_nonzero is not None:
      object.__setattr__(
        self, "num_nonzero", check_int(fn, "num_nonzero", self.num_nonzero, minimum=1)
      )
    else:
      s = check_real(fn, "sparsity", self.sparsity, nonnegative=True)
      if not s < 1:
        raise fail(
          fn, f"`sparsity` is the fraction of zeros per unit and must be in [0, 1), got {s!r}."
        )
      object.__setattr__(self, "sparsity", s)
    object.__setattr__(self, "values", _values(fn, self.values))
    object.__setattr__(self, "out_axis", check_axes(fn, "out_axis", self.out_axis))
    object.__setattr__(self, "batch_axis", _batch(fn, self.batch_axis))
    super().__post_init__()

  def nonzero(self, fn: str, shape: tuple[int, ...]) -> int:
    """The number of nonzero incoming weights per unit for ``shape``."""
    _, fan = _unit_axes(fn, self.out_axis, self.batch_axis, shape)
    fan_in = math.prod(shape[a] for a in fan)
    if self.num_nonzero is not None:
      if self.num_nonzero > fan_in:
        raise fail(
          fn, f"`num_nonzero`={self.num_nonzero} exceeds the fan-in {fan_in} of shape {shape}."
        )
      return self.num_nonzero
    assert self.sparsity is not None  # __post_init__ sets one of the two
    k = fan_in - _count_zeros(self.sparsity, fan_in)
    if k < 1 and fan_in > 0:
      raise fail(
        fn,
        f"`sparsity`={self.sparsity!r} zeroes all {fan_in} incoming weights of "
        f"each unit for shape {shape}; lower it below {(fan_in - 1) / fan_in:.4g}.",
      )
    return k

  def _supports_complex(self):
    return self.values._supports_complex()

  def _relayout(self, layout, only_defaults=False):
    new = super()._relayout(layout, only_defaults)
    values = self.values._relayout(layout, only_defaults)
    return new if values is self.values else dataclasses.replace(new, values=values)

  def _check(self, fn, shape, dtype):
    if math.prod(shape):  # an empty array has no units to fill
      self.nonzero(fn, shape)
    else:
      _unit_axes(fn, self.out_axis, self.batch_axis, shape)
    check_range(fn, dtype, 0.0, 0.0, "the zeros of a sparse matrix")
    self.values._check(fn, shape, dtype)

  def _sample(self, key, shape, dtype):
    units, fan = _unit_axes(self.name, self.out_axis, self.batch_axis, shape)
    k = self.nonzero(self.name, shape)
    kmask, kval = jax.random.split(key)
    n_units = math.prod(shape[a] for a in units)
    fan_in = math.prod(shape[a] for a in fan)
    mask = _random_mask(kmask, n_units, fan_in, k)
    order = (*units, *fan)
    mask = mask.reshape(tuple(shape[a] for a in order))
    mask = jnp.transpose(mask, tuple(int(i) for i in np.argsort(order)))
    w = self.values._sample(kval, shape, dtype)
    return jnp.where(mask, w, jnp.zeros((), dtype))


def _random_mask(key: jax.Array, n_units: int, fan_in: int, k: int) -> jax.Array:
  """``(n_units, fan_in)`` bools, each row with exactly ``k`` Trues at uniformly random places.

  Each row of ``[True] * k + [False] * (fan_in - k)`` is sorted by i.i.d. random
  64-bit keys (two 32-bit words: ties, which would favour the original order,
  have probability ~fan_in^2 / 2^65), which applies a uniformly random
  permutation. The bits are drawn flat (fast to compile, also under vmap).
  """
  bits = jax.random.bits(key, (2 * n_units * fan_in,), np.uint32).reshape(2, n_units, fan_in)
  base = jnp.broadcast_to(jnp.arange(fan_in, dtype=np.int32) < k, (n_units, fan_in))
  return jax.lax.sort((bits[0], bits[1], base), dimension=1, num_keys=2)[2]


@_units_doc
def sparse(
  num_nonzero: int | None = None,
  sparsity: float | None = None,
  values: Initializer | str | Mapping[str, Any] | None = None,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds a sparse initializer (Martens 2010, "sparse initialization").

  Every output unit gets exactly ``num_nonzero`` nonzero incoming weights at
  positions drawn uniformly at random (without replacement) among its fan-in,
  the rest zero. Martens used 15 connections per unit with unit-Gaussian
  weights, the defaults here. Alternatively ``sparsity`` gives the fraction of
  zeros per unit: ``ceil(sparsity * fan_in)`` weights are zero.

  The incoming weights of a unit are all entries sharing its output (and batch)
  index: for a Flax kernel ``(kh, kw, in, out)``, ``kh * kw * in`` of them. (The
  mask of ``torch.nn.init.sparse_`` instead zeroes a fraction of each *column*
  of its 2-D ``(out, in)`` tensor, i.e. of each input's outgoing weights, and
  ignores the generator.) The mask comes from the key, so the same key gives
  the same mask and values.

  Nonzero values are those of ``values`` at the kept positions. An initializer
  that scales with the fans (``he_normal``...) sees the full fan-in; for a
  pre-activation variance of ``s^2`` use ``normal(stddev=s / sqrt(k))``.

  Args:
    num_nonzero: nonzero incoming weights per unit (default 15 when
      ``sparsity`` is not given); at most the fan-in.
    sparsity: fraction of zero incoming weights per unit, in [0, 1).
    values: a jaxinit initializer, name or config dict drawing the nonzero
      values; default ``normal(stddev=1.0)``.
    <units>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    ValueError: both ``num_nonzero`` and ``sparsity``, ``num_nonzero < 1``,
      ``sparsity`` outside [0, 1); at call time, ``num_nonzero`` above the
      fan-in or a ``sparsity`` that leaves no nonzero weight.
    TypeError: ``values`` is not a jaxinit initializer, name or dict.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.sparse(num_nonzero=3)(jax.random.key(0), (100, 8))
    >>> (w != 0).sum(axis=0)
    Array([3, 3, 3, 3, 3, 3, 3, 3], dtype=int32)
    >>> w = jaxinit.sparse(sparsity=0.9, values=jaxinit.normal(0.01))(jax.random.key(0), (50, 4))
    >>> (w == 0).sum(axis=0)
    Array([45, 45, 45, 45], dtype=int32)

  References:
    J. Martens, "Deep learning via Hessian-free optimization", ICML 2010.
  """
  return _Sparse(num_nonzero, sparsity, values, out_axis, batch_axis, dtype=dtype)


# ---------------------------------------------------------------------------
# zero_rows
# ---------------------------------------------------------------------------


def _rows(fn: str, rows: Any) -> tuple[int, ...]:
  try:
    out = as_tuple(check_axes(fn, "rows", rows))
  except (TypeError, ValueError):
    raise fail(
      fn, f"`rows` must be an index or a sequence of distinct indices, got {rows!r}.", TypeError
    ) from None
  if not out:
    raise fail(fn, "`rows` is empty; give at least one index (an embedding's padding index).")
  return out


@register("zero_rows")
@dataclasses.dataclass(frozen=True, repr=False)
class _ZeroRows(Initializer):
  init: Any = _DEFAULT_VALUES  # an initializer, name or config (decoded when built)
  rows: int | tuple[int, ...] = (0,)
  axis: int = 0

  name = "zero_rows"
  formula = (
    "w = init's draw with the indices `rows` along `axis` set to 0 (an embedding's "
    "padding row: torch's padding_idx)"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "init", _values(fn, self.init, "init"))
    object.__setattr__(self, "rows", _rows(fn, self.rows))
    object.__setattr__(self, "axis", check_int(fn, "axis", self.axis))
    super().__post_init__()

  def _supports_complex(self):
    return self.init._supports_complex()

  def with_layout(self, layout):
    return dataclasses.replace(self, init=self.init.with_layout(layout))

  def for_layout(self, layout, shape):
    return dataclasses.replace(self, init=self.init.for_layout(layout, shape))

  def _index(self, fn: str, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    axis = normalize_axes(fn, "axis", self.axis, shape)[0]
    n, rows = shape[axis], as_tuple(self.rows)
    if n and any(not -n <= r < n for r in rows):
      raise fail(
        fn,
        f"`rows`={self.rows} are not all indices of axis {self.axis} (of size {n}) "
        f"of the shape {shape}.",
      )
    return axis, tuple(r % n for r in rows) if n else ()

  def _check(self, fn, shape, dtype):
    self._index(fn, shape)
    self.init._check(fn, shape, dtype)

  def _sample(self, key, shape, dtype):
    axis, rows = self._index(self.name, shape)
    w = self.init._sample(key, shape, dtype)
    idx = _iota(shape, axis)
    hit = functools.reduce(jnp.logical_or, [idx == r for r in rows])
    return jnp.where(hit, jnp.zeros((), dtype), w)


def zero_rows(
  init: Initializer | str | Mapping[str, Any] | None = None,
  rows: int | tuple[int, ...] = 0,
  axis: int = 0,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds an initializer that draws ``init`` and zeroes some rows: an embedding's padding row.

  ``w = init(key, shape, dtype)`` with the indices ``rows`` along ``axis`` set to
  0. This is ``torch.nn.Embedding(..., padding_idx=p)``, Hugging Face's
  embedding init (the ``pad_token_id`` row of BERT's word embeddings is zero)
  and fairseq/metaseq's (row 1): the embedding matrix ``(vocab, d)`` has its
  rows on axis 0 in torch and in Flax (``nn.Embed``) alike.

  Args:
    init: the initializer of every other entry: a jaxinit initializer, a
      registered name or a config dict (default ``normal(stddev=1.0)``, torch's
      ``nn.Embedding`` init).
    rows: the index or indices to zero (negative indices count from the end).
    axis: the axis ``rows`` index.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    TypeError: ``init`` is not a jaxinit initializer, name or dict; ``rows`` is
      not an index or indices; ``axis`` is not an int.
    ValueError: ``rows`` is empty or repeats an index; at call time, an index or
      ``axis`` out of range for the shape.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.zero_rows(jaxinit.normal(0.02), rows=0)(jax.random.key(0), (100, 16))
    >>> bool((w[0] == 0).all()), bool((w[1:] != 0).all())
    (True, True)
  """
  return _ZeroRows(_DEFAULT_VALUES if init is None else init, rows, axis, dtype=dtype)
