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


def truncated_moments(lower: float, upper: float) -> tuple[float, float]:
  """Mean and standard deviation of a standard normal truncated to [lower, upper]."""
  z = truncated_mass(lower, upper)
  pa, pb = norm_pdf(lower), norm_pdf(upper)
  mean = (pa - pb) / z
  a_pa = 0.0 if math.isinf(lower) else lower * pa
  b_pb = 0.0 if math.isinf(upper) else upper * pb
  var = 1.0 + (a_pa - b_pb) / z - mean * mean
  return mean, math.sqrt(var)


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
