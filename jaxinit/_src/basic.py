"""Constant and simple random initializers: zeros, ones, constant, normal, uniform,
truncated_normal."""

from __future__ import annotations

import dataclasses
import decimal
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src import sampling
from jaxinit._src.base import Initializer
from jaxinit._src.checks import (
  DTypeLike,
  check_bool,
  check_range,
  check_real,
  compute_dtype,
  fail,
  is_complex,
  normal_reach,
  short_repr,
)
from jaxinit._src.frozen import FrozenArray
from jaxinit._src.registry import register

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------


@register("zeros")
@dataclasses.dataclass(frozen=True, repr=False)
class _Zeros(Initializer):
  name = "zeros"
  deterministic = True
  formula = "w = 0"

  def _check(self, fn, shape, dtype):
    check_range(fn, dtype, 0.0, 0.0, "zeros")

  def _sample(self, key, shape, dtype):
    return jnp.zeros(shape, dtype)


@register("ones")
@dataclasses.dataclass(frozen=True, repr=False)
class _Ones(Initializer):
  name = "ones"
  deterministic = True
  formula = "w = 1"

  def _check(self, fn, shape, dtype):
    check_range(fn, dtype, 1.0, 1.0, "ones")

  def _sample(self, key, shape, dtype):
    return jnp.ones(shape, dtype)


def _constant_value(value: Any) -> int | float | complex | FrozenArray:
  fn = "constant"
  if isinstance(value, jax.core.Tracer):
    raise fail(
      fn, "`value` must be concrete when the initializer is built, got a traced value.", TypeError
    )
  if isinstance(value, FrozenArray):
    value = value.array
  if isinstance(value, (bool, np.bool_)):
    raise fail(fn, f"`value` must be a number or an array of numbers, got {value!r}.", TypeError)
  if isinstance(value, numbers.Number | decimal.Decimal) and not isinstance(
    value, (np.ndarray, np.generic)
  ):
    if isinstance(value, numbers.Integral):
      check_real(fn, "value", value)  # representable as a float64
      return int(value)
    if isinstance(value, numbers.Real | decimal.Decimal):
      return check_real(fn, "value", value) + 0.0  # + 0.0: -0.0 is 0.0 (equal, one hash)
    x = complex(value)  # type: ignore[call-overload]  # a numbers.Complex
    if not (math.isfinite(x.real) and math.isfinite(x.imag)):
      raise fail(fn, f"`value` must be finite, got {x!r}.")
    return complex(x.real + 0.0, x.imag + 0.0)
  try:
    arr = np.asarray(value)
  except Exception:
    raise fail(
      fn, f"`value` must be a number or an array of numbers, got {value!r}.", TypeError
    ) from None
  if (
    arr.dtype == object
    or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == jnp.bfloat16)
    or arr.dtype == np.bool_
  ):
    raise fail(
      fn, f"`value` must be a number or an array of numbers, got dtype {arr.dtype}.", TypeError
    )
  if not np.all(np.isfinite(arr.astype(np.complex128))):
    raise fail(fn, "`value` must hold only finite numbers.")
  if arr.ndim == 0:
    return _constant_value(arr.item())
  if arr.dtype.kind in "fc" or arr.dtype == jnp.bfloat16:
    arr = np.where(arr == 0, np.zeros_like(arr), arr)  # -0.0 is 0.0: equal values, one hash
  return FrozenArray(arr)


@register("constant")
@dataclasses.dataclass(frozen=True, repr=False)
class _Constant(Initializer):
  value: Any

  name = "constant"
  deterministic = True
  formula = "w = value (scalar or array broadcast to the shape)"

  def __post_init__(self):
    object.__setattr__(self, "value", _constant_value(self.value))
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    v = self.value
    complex_value = isinstance(v, complex) or (
      isinstance(v, FrozenArray) and np.iscomplexobj(v.array)
    )
    if complex_value and not is_complex(dtype):
      raise fail(
        fn,
        f"`value` is complex but the requested dtype is {dtype.name}; "
        "pass a complex dtype (complex64 or complex128).",
        TypeError,
      )
    if isinstance(v, FrozenArray):
      try:
        out = np.broadcast_shapes(v.shape, shape)
      except ValueError:
        out = None
      if out != shape:
        raise fail(fn, f"`value` of shape {v.shape} does not broadcast to the shape {shape}.")
    a = np.asarray(v)
    if a.size:
      parts = np.concatenate([a.real.ravel(), a.imag.ravel()]).astype(np.float64)
      what = f"`value`={short_repr(v)}"
      nonzero = np.abs(parts[parts != 0])
      smallest = float(nonzero.min()) if nonzero.size else 0.0  # each must survive the cast
      check_range(fn, dtype, float(parts.min()), float(parts.max()), what, spread=smallest)

  def _sample(self, key, shape, dtype):
    wide = np.complex128 if is_complex(dtype) else np.float64
    host = np.asarray(np.asarray(self.value).astype(wide), dtype)  # rounds once, on the host
    return jnp.broadcast_to(jnp.asarray(host, dtype), shape)


def zeros(*, dtype: DTypeLike | None = None) -> Initializer:
  """Builds an initializer that returns arrays of zeros.

  Args:
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer ``init(key, shape, dtype=None, out_sharding=None)``; the key
    is ignored.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> jaxinit.zeros()(jax.random.key(0), (2, 3), jnp.bfloat16)
    Array([[0, 0, 0],
           [0, 0, 0]], dtype=bfloat16)
  """
  return _Zeros(dtype=dtype)


def ones(*, dtype: DTypeLike | None = None) -> Initializer:
  """Builds an initializer that returns arrays of ones.

  Args:
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer; the key is ignored.

  Examples:
    >>> import jax, jaxinit
    >>> jaxinit.ones()(jax.random.key(0), (3,))
    Array([1., 1., 1.], dtype=float32)
  """
  return _Ones(dtype=dtype)


def constant(value: Any, *, dtype: DTypeLike | None = None) -> Initializer:
  """Builds an initializer that fills arrays with ``value``.

  Args:
    value: a real or complex scalar, or an array broadcastable to the requested
      shape. A complex value needs a complex dtype at call time. The value is
      rounded to the target dtype once, from float64/complex128.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer; the key is ignored.

  Raises:
    TypeError: ``value`` is not numeric.
    ValueError: ``value`` holds inf or NaN. At call time: it does not broadcast
      to the shape, or it is complex and the dtype is real.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> jaxinit.constant(-7)(jax.random.key(0), (2, 2))
    Array([[-7., -7.],
           [-7., -7.]], dtype=float32)
    >>> jaxinit.constant([1.0, 2.0])(jax.random.key(0), (2, 2))
    Array([[1., 2.],
           [1., 2.]], dtype=float32)
    >>> jaxinit.constant(1 + 2j)(jax.random.key(0), (2,), jnp.complex64)
    Array([1.+2.j, 1.+2.j], dtype=complex64)
  """
  return _Constant(value, dtype=dtype)


# ---------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------


@register("normal")
@dataclasses.dataclass(frozen=True, repr=False)
class _Normal(Initializer):
  stddev: float = 0.05
  mean: float = 0.0

  name = "normal"
  formula = "w ~ N(mean, stddev^2); complex: mean + stddev * z, E|z|^2 = 1"

  def __post_init__(self):
    object.__setattr__(
      self, "stddev", check_real(self.name, "stddev", self.stddev, nonnegative=True)
    )
    object.__setattr__(self, "mean", check_real(self.name, "mean", self.mean))
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    reach = self.stddev * normal_reach(dtype)
    what = f"`stddev`={self.stddev!r} and `mean`={self.mean!r}"
    lo, hi = min(self.mean, 0.0) - reach, max(self.mean, 0.0) + reach
    check_range(fn, dtype, lo, hi, what, spread=self.stddev)

  def _sample(self, key, shape, dtype):
    real = compute_dtype(dtype)
    if is_complex(dtype):
      z = sampling.complex_standard_normal(key, shape, real)
    else:
      z = sampling.standard_normal(key, shape, real)
    return sampling.affine(z, self.stddev, self.mean, dtype)


@register("uniform")
@dataclasses.dataclass(frozen=True, repr=False)
class _Uniform(Initializer):
  minval: float = -0.05
  maxval: float = 0.05

  name = "uniform"
  supports_complex = False
  formula = "w ~ U[minval, maxval)"

  def __post_init__(self):
    lo = check_real(self.name, "minval", self.minval)
    hi = check_real(self.name, "maxval", self.maxval)
    if not lo < hi:
      raise fail(self.name, f"`minval` must be < `maxval`, got minval={lo!r}, maxval={hi!r}.")
    object.__setattr__(self, "minval", lo)
    object.__setattr__(self, "maxval", hi)
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    what = f"`minval`={self.minval!r} and `maxval`={self.maxval!r}"
    check_range(fn, dtype, self.minval, self.maxval, what, spread=self.maxval - self.minval)
    real = compute_dtype(dtype)
    if not self.maxval - self.minval <= float(np.finfo(real).max):
      raise fail(
        fn,
        f"{what}: the width maxval - minval overflows {real.name}, the precision the draw "
        f"is computed in for {dtype.name}; narrow the interval.",
      )

  def _sample(self, key, shape, dtype):
    real = compute_dtype(dtype)
    return sampling.uniform(key, shape, real, self.minval, self.maxval).astype(dtype)


# The largest quantization error (relative) a truncated draw may have: an interval
# spanning fewer than ~1000 representable values is refused (see truncated_resolution).
_RESOLUTION = 1e-3


def _check_bound(fn: str, arg: str, value: Any) -> float:
  if isinstance(value, (float, np.floating)) and math.isinf(value):
    return float(value)
  return check_real(fn, arg, value)


@register("truncated_normal")
@dataclasses.dataclass(frozen=True, repr=False)
class _TruncatedNormal(Initializer):
  stddev: float = 0.05
  mean: float = 0.0
  lower: float = -2.0
  upper: float = 2.0
  exact_std: bool = False

  name = "truncated_normal"
  formula = (
    "w = mean + s * z, z ~ N(0,1) cut to [lower, upper]; s = stddev, or "
    "stddev / std(z) with exact_std=True"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "stddev", check_real(fn, "stddev", self.stddev, nonnegative=True))
    object.__setattr__(self, "mean", check_real(fn, "mean", self.mean))
    lo = _check_bound(fn, "lower", self.lower)
    hi = _check_bound(fn, "upper", self.upper)
    if not lo < hi:
      raise fail(fn, f"`lower` must be < `upper`, got lower={lo!r}, upper={hi!r}.")
    if not sampling.truncated_mass(lo, hi) > 1e-30:
      raise fail(
        fn,
        f"the interval [{lo!r}, {hi!r}] (in standard deviations) holds no "
        "probability mass in floating point; choose bounds within about 10.",
      )
    object.__setattr__(self, "lower", lo)
    object.__setattr__(self, "upper", hi)
    object.__setattr__(self, "exact_std", check_bool(fn, "exact_std", self.exact_std))
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    cplx = is_complex(dtype)
    if cplx and self.lower != -self.upper:
      raise fail(
        fn,
        "complex draws are truncated in modulus, |z - mean| <= upper * scale, and "
        f"need symmetric bounds (lower == -upper); got lower={self.lower!r}, "
        f"upper={self.upper!r}.",
      )
    reach = normal_reach(dtype)
    s = self.scale(cplx)
    lo, hi = (max(self.lower, -reach), min(self.upper, reach))
    what = f"`stddev`={self.stddev!r}, `mean`={self.mean!r} and the bounds"
    check_range(fn, dtype, self.mean + s * lo, self.mean + s * hi, what, spread=s)
    real = compute_dtype(dtype)
    if not cplx and sampling.truncated_resolution(self.lower, self.upper, real) > _RESOLUTION:
      raise fail(
        fn,
        f"the interval [{self.lower!r}, {self.upper!r}] is too narrow to sample in "
        f"{real.name} (the precision the draw is computed in for {dtype.name}): it spans "
        "too few representable numbers for the distribution's moments to hold. Widen it, "
        "or draw float64 with jax_enable_x64.",
      )

  def scale(self, complex_: bool = False) -> float:
    """The factor applied to the truncated standard draw."""
    if not self.exact_std:
      return self.stddev
    if complex_:
      return self.stddev / sampling.complex_truncated_std(self.upper)
    return self.stddev / sampling.truncated_moments(self.lower, self.upper)[1]

  def _sample(self, key, shape, dtype):
    real = compute_dtype(dtype)
    if is_complex(dtype):
      z = sampling.complex_truncated_standard_normal(key, shape, real, self.upper)
    else:
      z = sampling.truncated_standard_normal(key, shape, real, self.lower, self.upper)
    s = self.scale(is_complex(dtype))
    out = sampling.affine(z, s, self.mean, dtype)
    if is_complex(dtype):
      return out
    # the bounds, rounded inwards in the output dtype: no value lands an ulp outside
    lo = sampling.inward(self.mean + s * self.lower, dtype, up=True)
    hi = sampling.inward(self.mean + s * self.upper, dtype, up=False)
    return jnp.clip(out, lo, hi)


def normal(
  stddev: float = 0.05, mean: float = 0.0, *, dtype: DTypeLike | None = None
) -> Initializer:
  r"""Builds an initializer drawing from a normal distribution.

  .. math:: w \sim \mathcal{N}(\text{mean}, \text{stddev}^2)

  For a complex dtype, ``w = mean + stddev * z`` with ``z`` a standard complex
  normal (independent real and imaginary parts of variance 1/2), so
  ``E|w - mean|^2 = stddev^2`` exactly.

  The default ``stddev=0.05`` is Keras's ``RandomNormal``; ``jax.nn.initializers.normal``
  defaults to 0.01 and has no mean; ``torch.nn.init.normal_`` defaults to 1.

  Args:
    stddev: standard deviation, >= 0.
    mean: mean (added to the real part for complex dtypes).
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    TypeError, ValueError: an argument is not a finite real number, or
      ``stddev < 0``.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.normal(stddev=2.0, mean=1.0)(jax.random.key(0), (1000, 1000))
    >>> print(f"{w.mean():.2f} {w.std():.2f}")
    1.00 2.00
  """
  return _Normal(stddev, mean, dtype=dtype)


def uniform(
  minval: float = -0.05, maxval: float = 0.05, *, dtype: DTypeLike | None = None
) -> Initializer:
  """Builds an initializer drawing uniformly from ``[minval, maxval)``.

  Unlike ``jax.nn.initializers.uniform(scale)``, which draws from ``[0, scale)``,
  the interval is given by both ends and defaults to Keras's ``[-0.05, 0.05)``.
  Real dtypes only (for a complex uniform disk use
  ``variance_scaling(..., distribution="uniform")``).

  Args:
    minval: lower end (inclusive).
    maxval: upper end (exclusive), > ``minval``.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    ValueError: ``minval >= maxval`` or a bound is not finite.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.uniform(-1.0, 3.0)(jax.random.key(0), (100_000,))
    >>> print(f"{w.min():.2f} {w.max():.2f} {w.mean():.1f}")
    -1.00 3.00 1.0
  """
  return _Uniform(minval, maxval, dtype=dtype)


def truncated_normal(
  stddev: float = 0.05,
  mean: float = 0.0,
  lower: float = -2.0,
  upper: float = 2.0,
  exact_std: bool = False,
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  r"""Builds an initializer drawing from a truncated normal distribution.

  ``w = mean + s * z`` where ``z`` is a standard normal conditioned on
  ``lower <= z <= upper``. The bounds are in units of ``s`` (as in
  ``jax.nn.initializers.truncated_normal``; ``torch.nn.init.trunc_normal_`` takes
  absolute bounds instead). With ``exact_std=False`` (the default, jax's
  convention) ``s = stddev`` is the standard deviation of the *untruncated*
  normal, so the result's std is smaller (0.8796 * stddev for +-2). With
  ``exact_std=True``, ``s = stddev / std(z)`` and the result's standard
  deviation is exactly ``stddev``.

  ``mean`` is the location of the untruncated normal: with asymmetric bounds the
  result's mean is ``mean + s * E[z]``.

  Complex dtypes are truncated in modulus: ``z`` is a standard complex normal
  (E|z|^2 = 1) conditioned on ``|z| <= upper``, which needs ``lower == -upper``.
  With ``exact_std=True``, ``E|w - mean|^2 = stddev^2`` exactly (the correction
  for radius 2 is 0.9619618; jax uses 0.9531116, 1.87% too much variance).

  Samples are drawn by inverting the normal CDF from whichever tail is nearer,
  in float32 (float64 for 64-bit targets), and cast.

  Args:
    stddev: scale, >= 0 (see above).
    mean: location of the untruncated normal.
    lower: lower bound in units of the scale; may be ``-inf``.
    upper: upper bound in units of the scale, > ``lower``; may be ``inf``.
    exact_std: make the standard deviation of the result exactly ``stddev``.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    ValueError: ``lower >= upper``, or the interval has no mass in floating
      point. At call time: complex dtype with asymmetric bounds.

  Examples:
    >>> import jax, jaxinit
    >>> init = jaxinit.truncated_normal(stddev=1.0, exact_std=True)
    >>> w = init(jax.random.key(0), (1000, 1000))
    >>> print(f"{w.std():.2f} {float(abs(w).max()) <= 2 / 0.8796256}")
    1.00 True
  """
  return _TruncatedNormal(stddev, mean, lower, upper, exact_std, dtype=dtype)
