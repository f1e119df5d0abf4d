"""LSUV's per-layer numerics: the output's moments in one reduction, and the scale.

The output of a layer for a weight ``s*W`` is ``s*(Wx) + b``, so its variance
is the quadratic ``var(s) = s^2 var(Wx) + 2 s cov(Wx, b) + var(b)``:
:func:`raw_moments` measures its three coefficients in one fused reduction over
the output, :func:`solve` finds the root of ``var(s) = target`` in closed form
and :func:`iterate` runs the paper's update ``s <- s * sqrt(target / var(s))``
on the scalars instead.

Outputs so large that their squares overflow the compute dtype (float32 entries
near 1e20) are measured after multiplying the deviations by a power of two
(:func:`output_norm`), and the quadratic is solved in those units: the scale is
the same, and no finite output is mistaken for NaN/inf.

The scalar arithmetic runs once per layer at trace time; it is written with
lax primitives, which bind directly, rather than jnp functions and operators,
which each stage a small jitted function (about ten times the tracing cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# An output whose variance is below this fraction of its mean square is constant up to
# float rounding; scaling it to unit variance would amplify rounding noise.
REL_TINY = 1e-10

add, sub, mul, div, vmax = lax.add, lax.sub, lax.mul, lax.div, lax.max
_and, _sel, _finite = lax.bitwise_and, lax.select, lax.is_finite


def compute_dtype(dtype) -> np.dtype:
  """float64 for 64-bit outputs, else float32 (half-precision outputs are measured in float32)."""
  return np.dtype(np.float64) if np.dtype(dtype).itemsize >= 8 else np.dtype(np.float32)


def zeros(x):
  return lax.full_like(x, 0)


def const(value, like):
  """``value`` as a scalar of ``like``'s dtype (lax primitives do not promote)."""
  return lax.full((), value, like.dtype)


def broadcast_to(x, shape):
  """``jnp.broadcast_to`` (numpy's rules) with lax primitives, which trace faster."""
  lead = len(shape) - x.ndim
  keep = tuple(lead + i for i, d in enumerate(x.shape) if d != 1)
  squeezed = lax.reshape(x, tuple(d for d in x.shape if d != 1))
  return lax.broadcast_in_dim(squeezed, tuple(shape), keep)


def _max_abs(x: jax.Array, y: jax.Array | None) -> jax.Array:
  """The largest magnitude in ``x`` and ``y`` (same shape), in one reduction."""
  if y is None:
    return lax.reduce(lax.abs(x), lax.full((), 0, x.dtype), lax.max, tuple(range(x.ndim)))
  zero = lax.full((), 0, x.dtype)
  mx, my = lax.reduce(
    (lax.abs(x), lax.abs(y)),
    (zero, zero),
    lambda a, b: (lax.max(a[0], b[0]), lax.max(a[1], b[1])),
    tuple(range(x.ndim)),
  )
  return lax.max(mx, my)


def output_norm(pre: jax.Array, b: jax.Array | None) -> jax.Array:
  """A power of two ``c <= 1`` such that the sums of :func:`raw_moments` over
  ``c * (pre - shift)`` stay finite: 1 unless the output is huge.

  Deviations from the first entry are at most ``2 M`` (``M`` the largest
  magnitude; ``4 M`` after centering), and a sum of ``n`` products of two of them
  is at most ``16 n M^2``; ``c`` keeps that below a quarter of the largest finite
  value. Non-finite entries give non-finite sums.

  ``c`` is picked from a ladder of powers of two (steps of ``2^-16`` for
  float32) with compares and selects only: XLA computes operations it deems
  expensive (a log, an exp) in a kernel of their own per layer, and compile
  time grows with the number of kernels.
  """
  m = _max_abs(pre, b)
  fi = jnp.finfo(pre.dtype)
  bound = const(math.sqrt(float(fi.max) / (64.0 * pre.size)) / 4.0, m)  # c * M may be this
  step = const(2.0 ** -(fi.maxexp // 8), m)
  c = lax.full((), 1, m.dtype)
  for _ in range(7):  # down to 2^-112 (float32): enough for any finite M
    c = _sel(lax.gt(mul(m, c), bound), mul(c, step), c)
  return c


def raw_moments(pre: jax.Array, b: jax.Array | None, norm: jax.Array) -> tuple[jax.Array, ...]:
  """Shifted sums of ``pre`` (and ``b``) over all entries, one axis at a time.

  Returns ``(S1, S2, S3, S4, S5, K, Kb)`` with ``d = (pre - K) * norm``,
  ``e = (b - Kb) * norm`` (``K``, ``Kb`` the first entries): ``S1 = sum d``,
  ``S2 = sum d^2``, ``S3 = sum d e``, ``S4 = sum e``, ``S5 = sum e^2`` (zeros
  without a bias). Shifting by an entry (the "shifted data" algorithm) makes the
  rounding error of the variance scale with ``(mean - K)^2 / var`` — of order
  one — instead of ``mean^2 / var`` as in the naive ``E[x^2] - E[x]^2``; one
  pass over the output instead of two keeps the number of kernels per layer,
  which XLA's compile time grows with, low. ``norm`` (a power of two, see
  :func:`output_norm`) is exact: with ``norm = 1`` the sums are bit for bit
  those of the unscaled deviations.
  """
  first = (0,) * pre.ndim
  ones = (1,) * pre.ndim
  # lax primitives, not jnp operators: each of those stages a small jitted function
  # per new shape, which costs more to trace than the whole reduction
  k = lax.reshape(lax.slice(pre, first, ones), ())
  d = lax.mul(lax.sub(pre, lax.broadcast(k, pre.shape)), lax.broadcast(norm, pre.shape))
  zero = lax.full((), 0, pre.dtype)
  ops: tuple[jax.Array, ...]
  if b is None:
    ops = (d, lax.mul(d, d))
  else:
    kb = lax.reshape(lax.slice(b, first, ones), ())
    e = lax.mul(lax.sub(b, lax.broadcast(kb, b.shape)), lax.broadcast(norm, b.shape))
    ops = (d, lax.mul(d, d), lax.mul(d, e), e, lax.mul(e, e))
  # one axis at a time: a single float32 reduction over every entry of a large output
  # (65,536 and more) accumulated a relative error of ~1e-5 in the variance on the CPU,
  # enough for a batch sharded over devices (summed per shard, then across) to differ from
  # the one-device result by more than 1e-5; axis by axis each partial sum is short, and
  # sharded and unsharded agree to float rounding (tests/test_lsuv_sharded.py)
  sums = ops
  for _ in range(pre.ndim):
    sums = lax.reduce(
      sums,
      tuple(zero for _ in ops),
      lambda x, y: tuple(xi + yi for xi, yi in zip(x, y, strict=True)),
      (0,),
    )
  if b is None:
    return (*sums, zero, zero, zero, k, zero)
  return (*sums, k, kb)


def moments(n: int, raw: tuple[jax.Array, ...], norm: jax.Array) -> tuple[jax.Array, ...]:
  """Mean and variance of ``norm * output``, its covariance with ``norm`` times the bias
  term and the variance of that, from :func:`raw_moments` (scalars)."""
  s1, s2, s3, s4, s5, k, _ = raw  # the bias shift cancels in every central moment of b
  inv = np.asarray(1.0 / np.asarray(n, np.float64), s1.dtype)  # multiply, not divide
  md, me = mul(s1, inv), mul(s4, inv)
  mean = add(mul(k, norm), md)
  var = vmax(sub(mul(s2, inv), mul(md, md)), zeros(md))
  cov = sub(mul(s3, inv), mul(md, me))
  var_b = vmax(sub(mul(s5, inv), mul(me, me)), zeros(md))
  return mean, var, cov, var_b


def runnable(m, v0, c, vb, a, min_var):
  """A layer is scaled when its statistics are finite and the variance the scale acts on
  (``a``: var(Wx), or its part within bias entries when centering) is not ~0.

  ``min_var`` is in the units of the moments (times ``norm^2``)."""
  finite = _and(_and(_and(_finite(m), _finite(v0)), _and(_finite(c), _finite(vb))), _finite(a))
  big = _and(lax.gt(a, min_var), lax.gt(a, mul(add(v0, mul(m, m)), const(REL_TINY, a))))
  return _and(finite, big)


def solve(a, c, vb, runnable, t, tol):
  """The scale ``s > 0`` with ``a s^2 + 2 c s + vb = t``, in closed form.

  This is the fixed point the paper's update ``s <- s * sqrt(t / var(s))``
  converges to, reached in one step: the larger root of the quadratic (a second
  positive root exists only when the bias term alone has variance above ``t``).
  A layer already within ``tol`` of ``t``, one that must not be scaled, and one
  with no positive root (its bias alone has more variance than the target and
  no weight scale reaches it) keep ``s = 1``. ``t`` and ``tol`` are scalars of
  ``a``'s dtype. The second result is 1 when the weight is scaled, 0 when not,
  and -1 when the layer is not ``runnable``.

  It is written with a single square root and a single final division: XLA then
  computes the scale in one small kernel per layer and reads it from memory,
  instead of re-deriving parts of it inside every kernel that uses it (which
  is what XLA's CPU compile time grows with).
  """
  zero, one = zeros(a), lax.full_like(a, 1)
  v1 = add(add(a, mul(c, const(2, a))), vb)
  disc = add(mul(c, c), mul(a, sub(t, vb)))
  r = lax.sqrt(vmax(disc, zero))
  # root = num / den; each form avoids cancellation for its sign of c, and den > 0
  # whenever the layer is runnable (a > 0).
  c_pos = lax.gt(c, zero)
  num = _sel(c_pos, sub(t, vb), sub(r, c))
  den = _sel(c_pos, add(r, c), a)
  scale = _and(
    _and(runnable, lax.ge(disc, zero)), _and(lax.gt(num, zero), lax.ge(lax.abs(sub(v1, t)), tol))
  )
  s = div(_sel(scale, num, one), _sel(scale, den, one))
  minus_one = lax.full((), -1, jnp.int32)
  return s, _sel(runnable, lax.convert_element_type(scale, jnp.int32), minus_one)


def iterate(a, c, vb, runnable: Callable[[], jax.Array], t, tol, max_iters: int):
  """The paper's update ``s <- s * sqrt(t / var(s))`` until ``|var - t| < tol``.

  ``var(s) = a s^2 + 2 c s + vb`` is exact and costs a few scalar operations,
  so the loop runs on scalars. It runs in units of the target, on
  ``w = s * sqrt(a / t)``, for which the ratio of standard deviations is
  ``r(w) = sqrt(var / t) = sqrt(w^2 + 2 w c / sqrt(a t) + vb / t)`` and the
  update is ``w <- w / r(w)``: the scale of a layer with a huge output is tiny,
  and its square or ``t / var`` would underflow, while ``r`` is computed without
  overflow even where ``var / t`` is beyond the dtype's range (the first step).
  ``runnable()`` is evaluated inside the loop condition, so a layer that must
  not be scaled leaves the loop at once with ``s = 1``. The second result is
  the number of updates, or -1 when the layer is not ``runnable()``.
  """
  rt = jnp.sqrt(t)
  ra = jnp.where(a > 0, jnp.sqrt(a), rt)  # (a <= 0: not runnable, s stays 1)
  sigma, c_w, vb_w, tol_w = ra / rt, c / rt / ra, vb / t, tol / t
  one = jnp.ones_like(sigma)

  def ratio(w):
    big = jnp.abs(w) > 1  # factor w out of the square root
    u = 1 / jnp.where(big, w, one)
    r_big = jnp.abs(w) * jnp.sqrt(jnp.maximum(1 + 2 * c_w * u + vb_w * u * u, 0))
    return jnp.where(big, r_big, jnp.sqrt(jnp.maximum(w * w + 2 * w * c_w + vb_w, 0)))

  def cond(state):
    _, r, it = state
    return runnable() & (jnp.abs(r * r - 1) >= tol_w) & (it < max_iters) & (r > 0)

  def body(state):
    w, r, it = state
    w = w / r
    return w, ratio(w), it + 1

  w, _, iters = lax.while_loop(cond, body, (sigma, ratio(sigma), jnp.int32(0)))
  return w / sigma, jnp.where(runnable(), iters, -1)
