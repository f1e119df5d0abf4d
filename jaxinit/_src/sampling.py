"""Standardized random draws, real and complex, and the exact moments they need.

Every sampler takes the *real* compute dtype (float32 or float64) and returns a
real or complex array in that precision; callers scale, shift and cast. The
host-side constants (normal CDF values, truncated moments) are computed in
Python floats (float64) and never in the target dtype.

Conventions for complex draws: a "standard" complex variable has E|z|^2 = 1
(real and imaginary parts each of variance 1/2), so multiplying by ``sigma``
gives E|w|^2 = sigma^2 exactly.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from jaxinit._src.checks import Array
from jaxinit._src.draw import bits_shape

_SQRT2 = math.sqrt(2.0)


def norm_cdf(x: float) -> float:
  """Phi(x) in float64, accurate in both tails."""
  return 0.5 * math.erfc(-x / _SQRT2)


def norm_pdf(x: float) -> float:
  if math.isinf(x):
    return 0.0
  return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def truncated_mass(lower: float, upper: float) -> float:
  """P(lower < Z < upper) for a standard normal Z, without cancellation."""
  if lower >= 0:
    return norm_cdf(-lower) - norm_cdf(-upper)
  if upper <= 0:
    return norm_cdf(upper) - norm_cdf(lower)
  return 1.0 - norm_cdf(lower) - norm_cdf(-upper)


def inward(x: float, dtype: np.dtype, up: bool) -> np.ndarray:
  """``x`` rounded into ``dtype`` towards the inside of a bound: the smallest value
  >= ``x`` (``up``, for a lower bound) or the largest <= ``x`` (an upper bound).

  Clipping to these keeps every draw within bounds that the dtype cannot
  represent exactly (round-to-nearest can step one ulp outside).
  """
  v = np.asarray(x, dtype)
  if (float(v) >= x) if up else (float(v) <= x):
    return v
  if dtype.itemsize >= 4:
    return np.nextafter(v, np.asarray(np.inf if up else -np.inf, dtype))
  values = _sorted_values(dtype)  # 16 bits or fewer: search the table of every value
  i = np.searchsorted(values, x, side="left" if up else "right")
  return np.asarray(values[i] if up else values[i - 1], dtype)


@functools.lru_cache(maxsize=16)
def _sorted_values(dtype: np.dtype) -> np.ndarray:
  bits = np.arange(2 ** (8 * dtype.itemsize), dtype=np.uint32).astype(f"u{dtype.itemsize}")
  with np.errstate(invalid="ignore"):  # 4-bit types leave bit patterns unused
    values = bits.view(dtype).astype(np.float64)
  return np.unique(values[np.isfinite(values)])


def truncated_moments(lower: float, upper: float) -> tuple[float, float]:
  """Mean and standard deviation of a standard normal truncated to [lower, upper].

  Accurate for any interval. Wide intervals (width >= 1) use the closed form
  ``m = (phi(a) - phi(b)) / Z``, ``var = 1 + (a phi(a) - b phi(b)) / Z - m^2``,
  whose cancellation is harmless there. On a narrow interval that form cancels
  catastrophically (width 1e-5: std 0.51x the truth), so the moments are
  integrated directly: with ``c`` the end nearer to 0 and ``t = c + s u``
  (``s`` pointing into the interval, ``u`` in ``[0, w]``), the density is
  proportional to ``exp(-(s c u + u^2 / 2))``, a smooth, well-scaled function of
  ``u``; composite Gauss–Legendre quadrature gives its mean and its *central*
  second moment to float64 precision (``t``'s variance is ``u``'s).
  """
  width = upper - lower
  if not width < 1.0:
    z = truncated_mass(lower, upper)
    pa, pb = norm_pdf(lower), norm_pdf(upper)
    mean = (pa - pb) / z
    a_pa = 0.0 if math.isinf(lower) else lower * pa
    b_pb = 0.0 if math.isinf(upper) else upper * pb
    var = 1.0 + (a_pa - b_pb) / z - mean * mean
    return mean, math.sqrt(var)
  c, s = (lower, 1.0) if abs(lower) <= abs(upper) else (upper, -1.0)
  beta = s * c
  panels = max(1, math.ceil(2.0 * width * max(1.0, abs(beta))))
  x, w = np.polynomial.legendre.leggauss(16)
  edges = np.linspace(0.0, width, panels + 1)
  half = 0.5 * np.diff(edges)[:, None]
  u = (edges[:-1, None] + half * (x + 1.0)).ravel()
  weight = (half * w).ravel() * np.exp(-(beta * u + 0.5 * u * u))
  total = weight.sum()
  mean_u = float((weight * u).sum() / total)
  var_u = float((weight * (u - mean_u) ** 2).sum() / total)
  return c + s * mean_u, math.sqrt(var_u)


def truncated_resolution(lower: float, upper: float, real: np.dtype) -> float:
  """The relative quantization error of :func:`truncated_standard_normal` in ``real``.

  The draw inverts the CDF from ``Phi(lower)`` (mass below 0) and ``Phi(-upper)``
  (mass above 0): a branch whose probabilities span few representable numbers,
  or an interval spanning few representable values, can only produce a handful
  of distinct values, and its moments drift from the exact ones (about 2% with
  36 values). The result is ``1 / (values across the interval)`` plus, per
  branch, its share of the mass over the probabilities it can resolve.
  """
  eps = float(np.finfo(real).eps)
  top = max(abs(lower), abs(upper))
  err = 0.0 if math.isinf(top) else eps * max(top, float(np.finfo(real).tiny)) / (upper - lower)
  z = truncated_mass(lower, upper)
  if lower < 0:  # left branch: p in [Phi(lower), Phi(min(0, upper))]
    mass = truncated_mass(lower, min(0.0, upper))
    err += (mass / z) * eps * norm_cdf(min(0.0, upper)) / mass if mass > 0 else 0.0
  if upper > 0:  # right branch: p in [Phi(-upper), Phi(-max(0, lower))]
    mass = truncated_mass(max(0.0, lower), upper)
    err += (mass / z) * eps * norm_cdf(-max(0.0, lower)) / mass if mass > 0 else 0.0
  return err


def complex_truncated_std(radius: float) -> float:
  """sqrt(E|z|^2) of a standard complex normal (E|z|^2 = 1) with |z| <= radius.

  |z|^2 ~ Exp(1), so E[|z|^2 | |z|^2 <= c^2] = 1 - c^2 e^{-c^2} / (1 - e^{-c^2}).
  For radius 2 this is 0.9619618..., where jax uses 0.95311164 (1.87% too much
  variance).
  """
  c2 = radius * radius
  if math.isinf(c2):
    return 1.0
  return math.sqrt(1.0 - c2 * math.exp(-c2) / -math.expm1(-c2))


# XLA may fold a constant we multiply by into the constants inside jax's samplers
# (x * c1 * c2 -> x * (c1 * c2)) or fuse a product into an add, and whether it
# does depends on the surrounding program: a mesh context (jax.set_mesh) blocks
# the rewrite and changed 8% of a normal(0.3, 1.0) draw by 1 ulp. An optimization
# barrier after each raw draw and after products that feed an addition pins the
# rounding, so the values are the same in every compilation context
# (tests/test_sharding.py checks every initializer inside and outside a mesh). Each
# barrier makes XLA store and reload the whole array, so the truncated normal, the
# default of the variance-scaling family, is written to need none past the raw draw.
_pin = jax.lax.optimization_barrier


def _normal(key: Array, shape: tuple[int, ...], real: np.dtype) -> Array:
  return _pin(jax.random.normal(key, bits_shape(shape), real)).reshape(shape)


def _uniform01(key: Array, shape: tuple[int, ...], real: np.dtype) -> Array:
  return _pin(jax.random.uniform(key, bits_shape(shape), real)).reshape(shape)


def standard_normal(key: Array, shape: tuple[int, ...], real: np.dtype) -> Array:
  return _normal(key, shape, real)


def complex_standard_normal(key: Array, shape: tuple[int, ...], real: np.dtype) -> Array:
  kr, ki = jax.random.split(key)
  re = _normal(kr, shape, real)
  im = _normal(ki, shape, real)
  c = np.asarray(1.0 / _SQRT2, real)
  return _pin(jax.lax.complex(re * c, im * c))


def uniform(key: Array, shape: tuple[int, ...], real: np.dtype, lo: float, hi: float) -> Array:
  """U[lo, hi) drawn in ``real``; ``lo`` and ``hi`` are host floats."""
  u = _uniform01(key, shape, real)
  out = np.asarray(lo, real) + _pin(u * np.asarray(hi - lo, real))
  return _pin(jnp.clip(out, np.asarray(lo, real), np.asarray(hi, real)))


def complex_unit_disk(key: Array, shape: tuple[int, ...], real: np.dtype) -> Array:
  """Uniform on the disk of radius sqrt(2), so E|z|^2 = 1."""
  kr, kt = jax.random.split(key)
  r = jnp.sqrt(np.asarray(2.0, real) * _uniform01(kr, shape, real))
  theta = np.asarray(2.0 * math.pi, real) * _uniform01(kt, shape, real)
  return _pin(jax.lax.complex(r * jnp.cos(theta), r * jnp.sin(theta)))


def truncated_standard_normal(
  key: Array, shape: tuple[int, ...], real: np.dtype, lower: float, upper: float
) -> Array:
  """A standard normal truncated to [lower, upper] by inverting the CDF.

  The mass below 0 is inverted from the left (``ndtri(Phi(lower) + m)``) and
  the mass above 0 from the right (``-ndtri(Phi(-upper) + Z - m)``), so both
  tails are resolved with the relative precision of small probabilities rather
  than of probabilities near 1 (``jax.random.truncated_normal`` inverts ``erf``
  near +-1 and loses the upper tail first).
  """
  z = truncated_mass(lower, upper)
  left_mass = min(max(0.5 - norm_cdf(lower), 0.0), z) if lower < 0 else 0.0
  u = _uniform01(key, shape, real)
  mass = np.asarray(z, real)
  m = u * mass  # the mass to the left of the draw
  on_left = m < np.asarray(left_mass, real)
  # The mass to its right is (1 - u) Z. 1 - u is exact (jax's u is f - 1 with f in
  # [1, 2), so 1 - u = 2 - f is representable), so every value has one rounding per
  # product and per sum whatever XLA reassociates; Z - m, by contrast, XLA may
  # regroup with the constant it is added to, depending on the surrounding program.
  p = jnp.where(
    on_left,
    np.asarray(norm_cdf(lower), real) + m,
    np.asarray(norm_cdf(-upper), real) + (np.asarray(1, real) - u) * mass,
  )
  y = ndtri(p)
  x = jnp.where(on_left, y, -y)
  return jnp.clip(x, np.asarray(lower, real), np.asarray(upper, real))


def complex_truncated_standard_normal(
  key: Array, shape: tuple[int, ...], real: np.dtype, radius: float
) -> Array:
  """A standard complex normal (E|z|^2 = 1 before truncation) with |z| <= radius."""
  kr, kt = jax.random.split(key)
  u = _uniform01(kr, shape, real)
  # |z|^2 ~ Exp(1) truncated to [0, radius^2]: invert its CDF 1 - e^{-t}.
  mass = -math.expm1(-radius * radius) if math.isfinite(radius) else 1.0
  r = jnp.sqrt(-jnp.log1p(-u * np.asarray(mass, real)))
  theta = np.asarray(2.0 * math.pi, real) * _uniform01(kt, shape, real)
  return _pin(jax.lax.complex(r * jnp.cos(theta), r * jnp.sin(theta)))


def affine(z: Array, scale: float, shift: float, dtype: np.dtype) -> Array:
  """``shift + scale * z`` with host-float constants in ``z``'s precision, cast to ``dtype``.

  16-bit targets round once, at the end.
  """
  out = z * np.asarray(scale, z.dtype)
  if shift != 0.0:
    out = _pin(out) + np.asarray(shift, z.dtype)
  return out.astype(dtype)
