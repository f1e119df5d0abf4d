"""Argument checking shared by every public entry point, and the canonical forms
of keys, shapes and dtypes.

Every message names the public function (``jaxinit.<fn>``), the argument, the
bad value and what is allowed. ``fn`` is the function's path under the
``jaxinit`` package (``"he_normal"``, ``"diagnostics.jacobian_spectrum"``);
``tests/test_error_prefixes.py`` checks that every one names a real public path.
This module imports nothing else of jaxinit: it is the floor of the house.
"""

from __future__ import annotations

import contextlib
import contextvars
import decimal
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

Array: TypeAlias = jax.Array
Shape: TypeAlias = Sequence[int]
DTypeLike: TypeAlias = Any
Sharding: TypeAlias = jax.sharding.Sharding | jax.sharding.PartitionSpec | None

#: The most elements a shape may hold: far beyond any device, and far enough below
#: 2**63 that XLA's byte counts cannot overflow (a (2**62,) shape aborted the process).
MAX_SIZE = 2**48


def fail(fn: str, message: str, exc: type[Exception] = ValueError) -> Exception:
  """Builds the exception for a bad argument of ``jaxinit.<fn>``."""
  return exc(f"jaxinit.{fn}: {message}")


def check_real(
  fn: str,
  arg: str,
  value: Any,
  *,
  positive: bool = False,
  nonnegative: bool = False,
) -> float:
  """Returns ``value`` as a finite Python float, or raises a clear error."""
  if isinstance(value, jax.core.Tracer):
    raise fail(
      fn,
      f"`{arg}` must be a concrete number known when the initializer is "
      "built, got a traced value; build initializers outside jit.",
      TypeError,
    )
  if isinstance(value, (bool, np.bool_)) or not _is_real_scalar(value):
    raise fail(fn, f"`{arg}` must be a real number, got {short_repr(value)}.", TypeError)
  try:
    x = float(value)
  except OverflowError:  # an int (or Fraction) beyond float64's range
    raise fail(fn, f"`{arg}` must fit a float64, got {short_repr(value)}.") from None
  if not math.isfinite(x):
    raise fail(fn, f"`{arg}` must be finite, got {short_repr(value)}.")
  if positive and not x > 0:
    raise fail(fn, f"`{arg}` must be > 0, got {x!r}.")
  if nonnegative and not x >= 0:
    raise fail(fn, f"`{arg}` must be >= 0, got {x!r}.")
  return x


def check_int(
  fn: str, arg: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
  """Returns ``value`` as a Python int, or raises a clear error."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
    raise fail(fn, f"`{arg}` must be an integer, got {short_repr(value)}.", TypeError)
  x = int(value)
  if minimum is not None and x < minimum:
    raise fail(fn, f"`{arg}` must be >= {minimum}, got {short_repr(x)}.")
  if maximum is not None and x > maximum:
    raise fail(fn, f"`{arg}` must be <= {maximum}, got {short_repr(x)}.")
  return x


def check_bool(fn: str, arg: str, value: Any) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise fail(fn, f"`{arg}` must be True or False, got {value!r}.", TypeError)
  return bool(value)


def check_choice(fn: str, arg: str, value: Any, choices: Sequence[str]) -> str:
  """Returns ``value`` if it is one of ``choices``, else raises naming them."""
  if not isinstance(value, str) or value not in choices:
    allowed = ", ".join(repr(c) for c in choices)
    raise fail(fn, f"`{arg}` must be one of {allowed}, got {value!r}.")
  return value


def check_axes(fn: str, arg: str, value: Any) -> int | tuple[int, ...]:
  """An axis argument: an int, or a sequence of distinct ints (kept as a tuple)."""
  bad = fail(fn, f"`{arg}` must be an int or a sequence of ints, got {value!r}.", TypeError)
  if isinstance(value, (bool, np.bool_)):
    raise bad
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise bad
  out = []
  for a in value:
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral):
      raise bad
    out.append(int(a))
  if len(set(out)) != len(out):
    raise fail(fn, f"`{arg}` has a repeated axis: {tuple(out)!r}.")
  return tuple(out)


def as_tuple(axes: int | tuple[int, ...]) -> tuple[int, ...]:
  return (axes,) if isinstance(axes, int) else tuple(axes)


def normalize_axes(
  fn: str, arg: str, axes: int | tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, ...]:
  """Axes as non-negative ints for ``shape``; out-of-range axes are an error."""
  ndim = len(shape)
  out = []
  for a in as_tuple(axes):
    if not -ndim <= a < ndim:
      raise fail(
        fn,
        f"`{arg}`={axes!r} is out of range for the {ndim}-D shape {shape}; "
        f"axes must lie in [{-ndim}, {ndim - 1}].",
      )
    out.append(a % ndim)
  if len(set(out)) != len(out):
    raise fail(fn, f"`{arg}`={axes!r} names the same axis twice for shape {shape}.")
  return tuple(out)


def short_repr(value: Any, width: int = 60) -> str:
  """``repr(value)``, cut to ``width`` characters (untrusted values can be huge)."""
  text = (
    repr(value)
    if not isinstance(value, int) or abs(value) < 10**40
    else f"an int of {value.bit_length()} bits"
  )
  return text if len(text) <= width else text[: width - 3] + "..."


def shape_repr(shape: Sequence[Any]) -> str:
  """A shape for a message, each dimension cut short (a 5000-digit int has no repr)."""
  dims = [short_repr(d, 24) for d in list(shape)[:8]]
  more = ", ..." if len(shape) > 8 else ""
  return f"({', '.join(dims)}{',' if len(dims) == 1 and not more else ''}{more})"


def _is_real_scalar(value: Any) -> bool:
  if isinstance(value, numbers.Real | decimal.Decimal):
    return True
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    dt = np.asarray(value).dtype
    return np.ndim(value) == 0 and (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating))
  return False


# ---------------------------------------------------------------------------
# Keys, shapes and dtypes at call time.
# ---------------------------------------------------------------------------


def canonical_key(fn: str, key: Any) -> Array:
  """A typed PRNG key from a typed key or a legacy ``PRNGKey`` array."""
  is_array = isinstance(key, (jax.Array, np.ndarray))
  if is_array and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise fail(
        fn,
        f"`key` must be a single PRNG key, got a key array of shape {key.shape}; "
        "use jax.vmap over keys to draw several.",
      )
    return key
  if is_array and key.dtype == np.uint32:
    if key.ndim > 1:
      raise fail(
        fn,
        f"`key` must be a single PRNG key, got a batch of legacy keys of shape {key.shape}; "
        "use jax.vmap over keys to draw several.",
      )
    try:
      return jax.random.wrap_key_data(key)
    except Exception:  # wrong trailing shape for the default PRNG implementation
      raise fail(
        fn,
        "`key` must be a jax.random.key(...) or a jax.random.PRNGKey(...) array, "
        f"got a uint32 array of shape {key.shape}; a single legacy key has shape (2,).",
        TypeError,
      ) from None
  raise fail(
    fn,
    "`key` must be a jax.random.key(...) or a jax.random.PRNGKey(...) array, "
    f"got {type(key).__name__} {key!r:.60}.",
    TypeError,
  )


def canonical_shape(fn: str, shape: Any) -> tuple[int, ...]:
  if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
    shape = (shape,)
  if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
    raise fail(fn, f"`shape` must be a sequence of ints, got {shape!r}.", TypeError)
  out = []
  for d in shape:
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
      raise fail(fn, f"`shape` must be a sequence of ints, got {tuple(shape)!r}.", TypeError)
    if d < 0:
      raise fail(fn, f"`shape` dimensions must be >= 0, got {shape_repr(shape)}.")
    out.append(int(d))
  size = math.prod(out)
  if size > MAX_SIZE or any(d > MAX_SIZE for d in out):
    count = f"{float(size):.3g}" if size < 10**300 else f"about 2**{size.bit_length() - 1}"
    raise fail(
      fn,
      f"`shape` {shape_repr(out)} holds {count} elements, more than any "
      f"device can hold (the limit is 2**{MAX_SIZE.bit_length() - 1}).",
    )
  return tuple(out)


#: The longest matrix side the structured initializers draw: their QR, gather and
#: scatter index with int32 (a (1, 2**47) orthogonal failed inside jax's indexing).
MAX_SIDE = 2**31 - 1


def check_side(fn: str, shape: tuple[int, ...], sides: Sequence[int], what: str) -> None:
  """Raises unless every one of ``sides`` (matrix sides drawn from ``shape``) is <= MAX_SIDE."""
  big = max(sides, default=0)
  if big > MAX_SIDE:
    raise fail(
      fn,
      f"the shape {shape_repr(shape)} makes {what} with a side of {big}; this initializer "
      f"indexes in int32, so a side is at most 2**31 - 1 = {MAX_SIDE}.",
    )


def default_float_dtype() -> np.dtype:
  """float32, or float64 when ``jax_enable_x64`` is on."""
  return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


#: The floating-point dtypes XLA computes with. numpy and ml_dtypes know more
#: (``float6_e2m3fn``, ``float6_e3m2fn``): XLA's CPU compiler rejects them, or aborts
#: the process, so they are refused by name here.
XLA_FLOATS = frozenset(
  {
    "float4_e2m1fn",
    "float8_e3m4",
    "float8_e4m3",
    "float8_e4m3b11fnuz",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
  }
)


def canonical_dtype(fn: str, dtype: Any, *, allow_complex: bool) -> np.dtype:
  """The output dtype: floating (any width) or, where allowed, complex."""
  if dtype is None:
    return default_float_dtype()
  if isinstance(dtype, (np.ndarray, np.generic, jax.Array, numbers.Number)):
    # numpy reads an array's or a scalar's dtype (np.dtype(np.float32(0.5)) is float32):
    # a value passed where a dtype belongs would silently pick the dtype of that value.
    raise fail(
      fn,
      f"`dtype` must be a dtype (jnp.float32, 'bfloat16', ...), got the value "
      f"{short_repr(dtype)}; pass `x.dtype` to use the dtype of an array.",
      TypeError,
    )
  try:
    d = np.dtype(dtype)
  except (TypeError, ValueError, SyntaxError):
    raise fail(
      fn, f"`dtype` must be a floating-point dtype, got {short_repr(dtype)}.", TypeError
    ) from None
  if d.byteorder not in "=|":  # '>f4' on a little-endian host: the same numbers, native order
    d = d.newbyteorder("=")
  if d.kind in "fc" and d.itemsize > (16 if d.kind == "c" else 8):
    raise fail(
      fn,
      f"`dtype` {d.name} (numpy's longdouble) is not a jax dtype; use float64 "
      "(with jax_enable_x64) or float32.",
      TypeError,
    )
  if jnp.issubdtype(d, jnp.complexfloating):
    if not allow_complex:
      raise fail(
        fn,
        f"`dtype` {d.name} is complex, which this initializer does not support; "
        "use a real floating-point dtype.",
        TypeError,
      )
  elif not jnp.issubdtype(d, jnp.floating):
    kinds = "a floating-point or complex" if allow_complex else "a floating-point"
    raise fail(
      fn,
      f"`dtype` must be {kinds} dtype (float32, bfloat16, ...), got {d.name}; "
      "integer and bool parameters cannot be initialized this way.",
      TypeError,
    )
  if d.name not in XLA_FLOATS:
    raise fail(
      fn,
      f"`dtype` {d.name} is not one XLA computes with; use one of {', '.join(sorted(XLA_FLOATS))}.",
      TypeError,
    )
  return np.dtype(jax.dtypes.canonicalize_dtype(d))


def compute_dtype(dtype: np.dtype) -> np.dtype:
  """The real dtype the draw is computed in: float64 for 64-bit targets, else float32.

  16-bit and 8-bit targets are drawn in float32 and cast at the end, so they keep
  float32 resolution before rounding (a bfloat16 normal draw then holds thousands
  of distinct values, where sampling in bfloat16 directly gives 128).
  """
  real = np.dtype(np.finfo(dtype).dtype) if is_complex(dtype) else dtype
  return np.dtype(np.float64) if real.itemsize >= 8 else np.dtype(np.float32)


def is_complex(dtype: np.dtype) -> bool:
  return bool(jnp.issubdtype(dtype, jnp.complexfloating))


def complex_of(real: np.dtype) -> np.dtype:
  return np.dtype(np.complex128) if real == np.float64 else np.dtype(np.complex64)


# The largest |z| jax's normal sampler returns in a real dtype: sqrt(2) erfinv(1 - eps/2)
# (5.42 in float32, 8.29 in float64), rounded up.
_NORMAL_REACH = {np.dtype(np.float32): 5.43, np.dtype(np.float64): 8.30}


def normal_reach(dtype: np.dtype) -> float:
  """How far (in standard deviations) a standard normal draw computed for ``dtype`` can go."""
  return _NORMAL_REACH[compute_dtype(dtype)]


_RANGE_FACTOR: contextvars.ContextVar[float] = contextvars.ContextVar(
  "jaxinit_range_factor", default=1.0
)


@contextlib.contextmanager
def scaled_range(factor: float | None) -> Iterator[None]:
  """Inside, :func:`check_range` checks draws multiplied by ``factor`` (a depth rule's
  ``scale(l)``): the product, not the initializer's own range, must fit the dtype."""
  token = _RANGE_FACTOR.set(1.0 if factor is None else float(factor))
  try:
    yield
  finally:
    _RANGE_FACTOR.reset(token)


def check_range(
  fn: str, dtype: np.dtype, lo: float, hi: float, what: str, *, spread: float | None = None
) -> None:
  """Raises unless ``dtype`` holds every value of ``[lo, hi]`` (the draws' range).

  ``what`` says where the range comes from (``"`stddev`=1e+300"``), for the
  message. The values must be finite in ``dtype`` (for a complex dtype, in its
  parts), and a dtype without zero or negative numbers (``float8_e8m0fnu``)
  cannot hold a range that reaches them. ``spread`` is the draws' typical size
  (a standard deviation; by default the largest magnitude in the range): a
  nonzero spread below the dtype's smallest positive number would round every
  draw to zero (``normal(1e-3)`` in ``float4_e2m1fn``, ``constant(1e-320)`` in float32).
  """
  real = np.dtype(np.finfo(dtype).dtype) if is_complex(dtype) else dtype
  size = max(abs(lo), abs(hi)) if spread is None else abs(spread)
  factor = _RANGE_FACTOR.get()
  if factor != 1.0:
    lo, hi = sorted((lo * factor, hi * factor))
    size *= abs(factor)
    what = f"{what}, multiplied by the depth rule's scale {factor:.4g}"
  tiny = float(jnp.finfo(real).smallest_subnormal)
  if 0 < size < tiny:
    raise fail(
      fn,
      f"with {what}, the draws' scale {size:.4g} is below {dtype.name}'s smallest "
      f"positive number {tiny:.4g}: the result would round to zeros. Use a larger "
      "scale or a wider dtype.",
    )
  top = float(jnp.finfo(real).max)
  reach = max(abs(lo), abs(hi))
  if not reach <= top:
    raise fail(
      fn,
      f"with {what}, the draws reach {reach:.4g} in magnitude, beyond {dtype.name}'s "
      f"largest finite value {top:.4g}: the result would hold inf or NaN. Use a smaller "
      "scale or a wider dtype.",
    )
  if (lo <= 0 and not _represents(real, 0.0)) or (lo < 0 and not _represents(real, -1.0)):
    raise fail(
      fn,
      f"`dtype` {dtype.name} cannot represent zero or negative numbers, which the draws "
      f"with {what} hold (values in [{lo:.4g}, {hi:.4g}]).",
      TypeError,
    )


def _represents(dtype: np.dtype, x: float) -> bool:
  y = np.array(x, np.float32).astype(dtype).astype(np.float32)
  return bool(y == x) and math.copysign(1.0, float(y)) == math.copysign(1.0, x)
