"""Mean-field theory of signal propagation in deep random networks.

A fully connected network of width -> infinity with i.i.d. weights of variance
``sigma_w^2 / fan_in`` and biases of variance ``sigma_b^2`` has Gaussian
pre-activations at every layer (Poole et al. 2016; Schoenholz et al. 2017). Their
variance q follows the *length map*

    q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2,     z ~ N(0, 1),

and the correlation c between two inputs follows the *correlation map*

    c_{l+1} = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*,

u1, u2 ~ N(0, q*) with correlation c_l. The slope of the correlation map at
c = 1 is

    chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2],

the mean squared singular value of one layer's Jacobian: chi_1 < 1 is the
ordered phase (inputs become alike, gradients vanish like chi_1^depth),
chi_1 > 1 the chaotic phase (nearby inputs decorrelate, gradients explode),
chi_1 = 1 the edge of chaos, where signals travel deepest. All expectations are
computed in float64 by Gauss quadrature split at 0 (exact for piecewise-linear
activations, geometrically convergent for the usual ones) — no Monte Carlo.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from jaxinit._src import activations
from jaxinit._src.checks import check_real, fail
from jaxinit._src.quadrature import bivariate_rule, composite_half_rule, full_line_rule

#: Beyond these, q* is reported as inf (the length grows without bound) or 0
#: (the signal dies out).
Q_MAX = 1e100
Q_MIN = 1e-100
# Where a limit q* -> 0 or inf is evaluated (sqrt(q) stays a normal float64).
_Q_EVAL_MIN = 1e-200
_Q_EVAL_MAX = 1e200
# |map(q) - q| below this fraction of q counts as a fixed point (the rounding level).
_REL_TOL = 4 * np.finfo(np.float64).eps
_BISECTIONS = 64
# Step of the walk that brackets q* (a wide bracket costs Illinois only a few steps).
_WALK = 1e5
# chi_1 or V'(q*) this close to 1 is critical (their depth scale is infinite).
_CRITICAL_TOL = 1e-12


@dataclasses.dataclass(frozen=True)
class Activation:
  """An activation phi and its derivative, both acting elementwise on float64 arrays.

  Build one with :func:`activation`; every function of this module accepts
  an Activation, a name or a callable.
  """

  name: str
  fn: Callable[[np.ndarray], np.ndarray] = dataclasses.field(repr=False)
  derivative: Callable[[np.ndarray], np.ndarray] = dataclasses.field(repr=False)

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return self.fn(x)


#: The named activations (those of ``jaxinit.calculate_gain`` beyond torch's table).
ACTIVATIONS: tuple[str, ...] = activations.NAMES


def _f64(x: Any) -> np.ndarray:
  """``x`` as a 0-d (or n-d) float64 array."""
  return np.asarray(x, np.float64)


def _float64(f: Callable) -> Callable[[np.ndarray], np.ndarray]:
  """``f`` evaluated in float64 (jax functions run with x64 enabled)."""

  def g(x):
    import jax

    with jax.enable_x64(True):
      y = f(x)
    return np.asarray(y, np.float64)

  return g


def _central_difference(f: Callable[[np.ndarray], np.ndarray]) -> Callable:
  def df(x):
    h = 6e-6 * (1.0 + np.abs(x))  # ~ eps**(1/3): truncation and rounding errors ~ 1e-11
    return (f(x + h) - f(x - h)) / (2.0 * h)

  return df


def activation(
  phi: str | Callable | Activation,
  param: float | None = None,
  derivative: Callable | None = None,
  *,
  fn: str = "mean_field.activation",
) -> Activation:
  """Resolves an activation for the mean-field functions.

  Args:
    phi: a name — ``'linear'``, ``'relu'``, ``'leaky_relu'`` (``param`` =
      negative slope, default 0.01), ``'tanh'``, ``'hard_tanh'``, ``'erf'``,
      ``'sigmoid'``, ``'gelu'`` (erf form), ``'silu'``/``'swish'``, ``'elu'``
      (``param`` = alpha, default 1), ``'selu'``, ``'softplus'``, ``'sin'`` —
      or a callable acting elementwise (numpy or jax; jax functions are run
      with 64-bit precision enabled), or an :class:`Activation`.
    param: the parameter of ``'leaky_relu'`` or ``'elu'``.
    derivative: phi' for a callable ``phi``; by default a central difference
      in float64 (relative error about 1e-11; give the derivative for exact
      values at kinks away from 0).
    fn: the public name used in error messages.

  Returns:
    An :class:`Activation`.

  Raises:
    ValueError: unknown name, or ``param`` for a name that takes none.
    TypeError: ``phi`` is neither a name nor a callable.

  Examples:
    >>> from jaxinit import mean_field
    >>> act = mean_field.activation("leaky_relu", 0.2)
    >>> act
    Activation(name='leaky_relu(0.2)')
    >>> float(act.derivative(-1.0))
    0.2
  """
  if isinstance(phi, Activation):
    if param is not None or derivative is not None:
      raise fail(
        fn, "`param` and `derivative` apply to a name or a callable, not to an Activation object."
      )
    return phi
  if isinstance(phi, str):
    if derivative is not None and phi in activations.TABLE:
      raise fail(fn, f"`derivative` applies only to a callable activation, not to {phi!r}.")
    _, p = activations.resolve(fn, phi, param)
    if p is not None and abs(p) > _MAX_PARAM:  # slope^2 q overflows: maps return inf or 1.0
      raise fail(fn, f"`param` must lie in [-{_MAX_PARAM:.0e}, {_MAX_PARAM:.0e}], got {p!r}.")
    f, df = activations.numpy_pair(phi, p)
    name = phi if param is None else f"{phi}({p:g})"
    return Activation(name, f, df)
  if callable(phi):
    if param is not None:
      raise fail(
        fn,
        "`param` applies only to named activations; bind parameters of a "
        "callable with functools.partial.",
      )
    f = _float64(phi)
    if derivative is None:
      df = _central_difference(f)
    elif callable(derivative):
      df = _float64(derivative)
    else:
      raise fail(fn, f"`derivative` must be a callable or None, got {derivative!r}.", TypeError)
    name = getattr(phi, "__name__", None) or repr(phi)
    return Activation(name, f, df)
  raise fail(fn, f"`activation` must be a name or a callable, got {phi!r}.", TypeError)


# ---------------------------------------------------------------------------
# Argument checks (vectorized arguments broadcast together).
# ---------------------------------------------------------------------------


#: The largest weight and bias scale, and the largest variance, an argument may have:
#: beyond them sigma_w^2 q overflows float64 and the maps would return inf or NaN.
_BOUNDS = {"sigma_w": 1e50, "sigma_b": 1e50, "q": 1e100, "q0": 1e100}
#: The largest |param| (leaky_relu's slope, elu's alpha), for the same reason.
_MAX_PARAM = 1e50
#: The most entries an array argument may have (each costs a quadrature of 160 nodes).
MAX_ENTRIES = 2**16


def _bounded(fn: str, arg: str, a: Any) -> None:
  bound = _BOUNDS.get(arg)
  if bound is not None and np.any(np.abs(a) > bound):
    big = float(np.max(np.abs(a)))
    raise fail(
      fn,
      f"`{arg}` must be <= {bound:.0e}, got {big!r}: beyond it sigma_w^2 q overflows "
      "float64 and the mean-field maps have no finite value.",
    )


def _real(fn: str, arg: str, value: Any, **kwargs: bool) -> float:
  """A scalar argument, finite and within its bound."""
  x = check_real(fn, arg, value, **kwargs)
  _bounded(fn, arg, x)
  return x


def _array(
  fn: str,
  arg: str,
  value: Any,
  *,
  positive: bool = False,
  nonnegative: bool = False,
  lo: float | None = None,
  hi: float | None = None,
) -> np.ndarray:
  if np.ndim(value) == 0:
    a = np.asarray(
      check_real(fn, arg, value, positive=positive, nonnegative=nonnegative), np.float64
    )
  else:
    if np.size(value) > MAX_ENTRIES:
      raise fail(fn, f"`{arg}` has {np.size(value)} entries; at most {MAX_ENTRIES} are allowed.")
    try:
      a = np.asarray(value, np.float64)
    except (TypeError, ValueError):
      raise fail(
        fn, f"`{arg}` must be a real number or an array of them, got {value!r:.80}.", TypeError
      ) from None
  bad = ~np.isfinite(a)
  if positive:
    bad |= ~(a > 0)
  if nonnegative:
    bad |= ~(a >= 0)
  if lo is not None:
    bad |= a < lo
  if hi is not None:
    bad |= a > hi
  if bad.any():
    want = "finite" + (" and > 0" if positive else "") + (" and >= 0" if nonnegative else "")
    if lo is not None:
      want += f" and in [{lo}, {hi}]"
    where = "" if a.ndim == 0 else " among its entries"
    raise fail(fn, f"`{arg}` must be {want}, got {float(a[bad].flat[0])!r}{where}.")
  _bounded(fn, arg, a)
  return a


def _out(x: np.ndarray, *inputs: Any) -> float | np.ndarray:
  """A Python float when every input was a scalar, else the array."""
  if all(np.ndim(i) == 0 for i in inputs):
    return float(x)
  return x


# ---------------------------------------------------------------------------
# The maps.
# ---------------------------------------------------------------------------


def _expect(f: Callable[[np.ndarray], np.ndarray], q: np.ndarray) -> np.ndarray:
  """E[f(sqrt(q) z)], vectorized over q.

  Half-range Gauss–Hermite (80 nodes) for q <= 1, where it is exact to rounding
  for the usual activations; the composite rule above, whose panels follow the
  scale, for q > 1 (Gauss–Hermite loses digits there: 1e-5 for tanh'^2 at q = 64).
  """
  q = np.asarray(q, np.float64)
  s = np.sqrt(np.clip(q, _Q_EVAL_MIN, _Q_EVAL_MAX))
  out = np.empty(q.shape)
  small = s <= 1.0
  with np.errstate(all="ignore"):
    if small.any():
      nodes, weights = full_line_rule()
      out[small] = np.asarray(f(s[small][:, None] * nodes), np.float64) @ weights
    if (~small).any():
      sl = s[~small][:, None]
      z, w = composite_half_rule(sl[:, 0])
      out[~small] = np.sum(
        w * (np.asarray(f(sl * z), np.float64) + np.asarray(f(-sl * z), np.float64)), axis=-1
      )
  return out


def _second_moment(act: Activation, q: np.ndarray) -> np.ndarray:
  return _expect(lambda x: act.fn(x) ** 2, q)


def _q_star(act: Activation, sw2: np.ndarray, sb2: np.ndarray, q0: np.ndarray) -> np.ndarray:
  """The fixed point the length map reaches from q0, vectorized (see :func:`q_star`)."""
  sw2, sb2, q0 = np.broadcast_arrays(sw2, sb2, q0)
  shape = q0.shape
  sw2, sb2, q0 = (np.array(x, np.float64).reshape(-1) for x in (sw2, sb2, q0))

  def excess(q, sw2, sb2):  # (V(q) - q) / q, zeroed at the rounding level
    image = sw2 * _second_moment(act, q) + sb2
    diff = image - q
    return np.where(np.abs(diff) <= _REL_TOL * np.maximum(image, q), 0.0, diff / q)

  def sign(q, sw2, sb2):
    return np.sign(excess(q, sw2, sb2))

  s0 = sign(q0, sw2, sb2)
  result = np.where(s0 == 0, q0, np.nan)
  # Walk from q0 by factors of _WALK (up where the map grows q, down where it shrinks it)
  # to a bracket [lo, hi] with map(q) - q > 0 at lo and < 0 at hi; the monotone length
  # map moves q monotonically towards the first fixed point in that direction.
  up = s0 > 0
  frontier = q0.copy()
  lo = np.full(q0.shape, np.nan)
  hi = np.full(q0.shape, np.nan)
  todo = s0 != 0
  while todo.any():
    idx = np.nonzero(todo)
    u = up[idx]
    q_old = frontier[idx]
    q_new = np.where(u, q_old * _WALK, q_old / _WALK)
    s = sign(q_new, sw2[idx], sb2[idx])
    found = np.where(u, s <= 0, s >= 0)
    over = ~found & np.where(u, q_new > Q_MAX, q_new < Q_MIN)
    res = result[idx]
    res = np.where(s == 0, q_new, res)
    res = np.where(over, np.where(u, np.inf, 0.0), res)
    result[idx] = res
    lo[idx] = np.where(u, q_old, q_new)
    hi[idx] = np.where(u, q_new, q_old)
    frontier[idx] = q_new
    todo[idx] = ~(found | over)
  # Refine the brackets in log q.
  b = np.isnan(result)
  if b.any():
    w2, b2 = sw2[b], sb2[b]
    result[b] = np.exp(
      _illinois(lambda t, m: excess(np.exp(t), w2[m], b2[m]), np.log(lo[b]), np.log(hi[b]))
    )
  return result.reshape(shape)


def _illinois(
  g: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray, iters: int = 100
) -> np.ndarray:
  """Vectorized Illinois (modified regula falsi) for g(a) and g(b) of opposite signs.

  ``g(t, mask)`` evaluates the entries ``mask`` at ``t``. Converges
  superlinearly; stops where the bracket is below float64 resolution or g is 0.
  """
  fa = g(a, np.ones(a.shape, bool))
  fb = g(b, np.ones(b.shape, bool))
  side = np.zeros(a.shape, np.int8)  # which end was kept last time: -1 a, +1 b
  done = (fa == 0) | (fb == 0)
  root = np.where(fa == 0, a, np.where(fb == 0, b, np.nan))
  for _ in range(iters):
    todo = ~done & (np.abs(b - a) > 4e-16 * np.maximum(np.abs(a), np.abs(b)) + 1e-300)
    if not todo.any():
      break
    aa, bb, fa_, fb_ = a[todo], b[todo], fa[todo], fb[todo]
    c = (aa * fb_ - bb * fa_) / (fb_ - fa_)
    c = np.where((c > np.minimum(aa, bb)) & (c < np.maximum(aa, bb)), c, 0.5 * (aa + bb))
    fc = g(c, todo)
    same_b = np.sign(fc) == np.sign(fb_)
    sd = side[todo]
    # Replace the end with fc's sign; halve the other end's value if it was kept twice.
    new_fa = np.where(same_b, np.where(sd == -1, 0.5 * fa_, fa_), fc)
    new_fb = np.where(same_b, fc, np.where(sd == 1, 0.5 * fb_, fb_))
    a[todo] = np.where(same_b, aa, c)
    b[todo] = np.where(same_b, c, bb)
    fa[todo], fb[todo] = new_fa, new_fb
    side[todo] = np.where(same_b, -1, 1)
    zero = fc == 0
    if zero.any():
      r = root[todo]
      root[todo] = np.where(zero, c, r)
      d = done[todo]
      done[todo] = d | zero
  return np.where(np.isnan(root), 0.5 * (a + b), root)


def _resolve(
  fn: str, act: Any, sigma_w: Any, sigma_b: Any
) -> tuple[Activation, np.ndarray, np.ndarray]:
  a = activation(act, fn=fn)
  sw = _array(fn, "sigma_w", sigma_w, positive=True)
  sb = _array(fn, "sigma_b", sigma_b, nonnegative=True)
  return a, sw, sb


def length_map(activation: Any, q: Any, sigma_w: Any, sigma_b: Any = 0.0) -> float | np.ndarray:
  r"""One step of the length map: the pre-activation variance of the next layer.

  .. math:: \mathcal{V}(q) = \sigma_w^2\, E[\phi(\sqrt{q} z)^2] + \sigma_b^2

  Args:
    activation: a name, callable or :class:`Activation` (see :func:`activation`).
    q: the variance of this layer's pre-activations (>= 0; scalar or array).
    sigma_w: weight scale: weights have variance ``sigma_w**2 / fan_in``.
    sigma_b: bias standard deviation.

  Returns:
    q_{l+1}, broadcast over the arguments (a float for scalar arguments).

  Examples:
    >>> from jaxinit import mean_field
    >>> round(mean_field.length_map("relu", 3.0, sigma_w=2 ** 0.5), 12)  # E[relu^2] = q/2
    3.0
  """
  fn = "mean_field.length_map"
  a, sw, sb = _resolve(fn, activation, sigma_w, sigma_b)
  qq = _array(fn, "q", q, nonnegative=True)
  with np.errstate(all="ignore"):
    out = sw**2 * _expect(lambda x: a.fn(x) ** 2, qq) + sb**2
  out = np.where(qq == 0, sw**2 * a.fn(np.zeros_like(qq)) ** 2 + sb**2, out)
  return _out(out, q, sigma_w, sigma_b)


def q_star(
  activation: Any,
  sigma_w: Any,
  sigma_b: Any = 0.0,
  *,
  q0: Any = 1.0,
) -> float | np.ndarray:
  r"""The fixed point q* of the length map reached from ``q0``.

  Iterating :func:`length_map` from ``q0`` converges, for the usual
  activations (whose map is increasing in q), to the first fixed point in the
  direction it moves; that point is found by bracketing and bisection in
  log q to float64 precision, not by iterating (which converges only
  algebraically at the edge of chaos). ``0.0`` means the signal dies out
  (q* < 1e-100), ``inf`` that it grows without bound (q* > 1e100: ReLU with
  sigma_w^2 > 2). Where every q is a fixed point (ReLU at sigma_w^2 = 2,
  sigma_b = 0) the answer is ``q0``.

  Args:
    activation: a name, callable or :class:`Activation`.
    sigma_w: weight scale (> 0; scalar or array).
    sigma_b: bias standard deviation (>= 0).
    q0: the input's variance (> 0).

  Returns:
    q*, broadcast over the arguments.

  Examples:
    >>> from jaxinit import mean_field
    >>> mean_field.q_star("tanh", 0.9)        # ordered, no bias: the signal dies out
    0.0
    >>> round(mean_field.q_star("tanh", 2.0, 0.3), 6)
    2.253753
    >>> mean_field.q_star("relu", 1.5)         # sigma_w^2 > 2: explodes
    inf
  """
  fn = "mean_field.q_star"
  a, sw, sb = _resolve(fn, activation, sigma_w, sigma_b)
  q = _array(fn, "q0", q0, positive=True)
  return _out(_q_star(a, sw**2, sb**2, q), sigma_w, sigma_b, q0)


def _chi1_at(a: Activation, sw2: np.ndarray, q: np.ndarray) -> np.ndarray:
  return sw2 * _expect(lambda x: a.derivative(x) ** 2, q)


def chi1(
  activation: Any,
  sigma_w: Any,
  sigma_b: Any = 0.0,
  *,
  q0: Any = 1.0,
) -> float | np.ndarray:
  r"""chi_1, the slope of the correlation map at c = 1: order (< 1), chaos (> 1).

  .. math:: \chi_1 = \sigma_w^2\, E[\phi'(\sqrt{q^*} z)^2]

  It is the factor by which a layer multiplies the mean squared singular
  value of the input–output Jacobian, so gradients scale like
  ``chi1 ** depth``. Evaluated at ``q* = q_star(activation, sigma_w, sigma_b,
  q0=q0)``; at q* = 0 or inf, the limit (tanh with sigma_b = 0 and sigma_w
  <= 1 gives sigma_w^2; ReLU always gives sigma_w^2 / 2).

  Args:
    activation: a name, callable or :class:`Activation`.
    sigma_w: weight scale (> 0; scalar or array).
    sigma_b: bias standard deviation (>= 0).
    q0: the input's variance, from which q* is reached.

  Returns:
    chi_1, broadcast over the arguments.

  Examples:
    >>> from jaxinit import mean_field
    >>> round(mean_field.chi1("tanh", 1.0), 12)    # the edge of chaos
    1.0
    >>> round(mean_field.chi1("relu", 2 ** 0.5), 12)   # He init
    1.0
    >>> round(mean_field.chi1("tanh", 2.5, 0.3), 4)    # chaotic
    1.5852
  """
  fn = "mean_field.chi1"
  a, sw, sb = _resolve(fn, activation, sigma_w, sigma_b)
  q = _array(fn, "q0", q0, positive=True)
  qs = _q_star(a, sw**2, sb**2, q)
  return _out(_chi1_at(a, sw**2, qs), sigma_w, sigma_b, q0)


class CriticalLine(NamedTuple):
  """Points (sigma_w, sigma_b) with chi_1 = 1, one per q* (NaN where none exists)."""

  sigma_w: float | np.ndarray
  sigma_b: float | np.ndarray


def critical_line(activation: Any, q_star: Any) -> CriticalLine:
  r"""The edge of chaos, parametrized by the fixed point q*.

  For each q* > 0, the unique (sigma_w, sigma_b) whose length map has fixed
  point q* and chi_1 = 1:

  .. math::
     \sigma_w^2 = 1 / E[\phi'(\sqrt{q^*} z)^2], \qquad
     \sigma_b^2 = q^* - \sigma_w^2\, E[\phi(\sqrt{q^*} z)^2].

  Where that sigma_b^2 is negative (no critical point has this q*; sigmoid at
  small q*), both entries are NaN.

  Args:
    activation: a name, callable or :class:`Activation`.
    q_star: fixed points (> 0; scalar or array).

  Returns:
    ``CriticalLine(sigma_w, sigma_b)``.

  Examples:
    >>> from jaxinit import mean_field
    >>> mean_field.critical_line("relu", [0.5, 1.0, 4.0]).sigma_w ** 2   # He's sigma_w^2 = 2
    array([2., 2., 2.])
    >>> line = mean_field.critical_line("tanh", 1e-8)   # -> (1, 0) as q* -> 0
    >>> round(line.sigma_w, 6), round(line.sigma_b, 6)
    (1.0, 0.0)
  """
  fn = "mean_field.critical_line"
  a = _resolve_only(fn, activation)
  q = _array(fn, "q_star", q_star, positive=True)
  with np.errstate(all="ignore"):
    sw2 = 1.0 / _expect(lambda x: a.derivative(x) ** 2, q)
    sb2 = q - sw2 * _second_moment(a, q)
  ok = sb2 >= -1e-12 * q
  sw = np.where(ok, np.sqrt(sw2), np.nan)
  sb = np.where(ok, np.sqrt(np.maximum(sb2, 0.0)), np.nan)
  return CriticalLine(_out(sw, q_star), _out(sb, q_star))


def _resolve_only(fn: str, act: Any) -> Activation:
  return activation(act, fn=fn)


def critical_sigma_w(
  activation: Any,
  sigma_b: Any = 0.0,
  *,
  q0: Any = 1.0,
) -> float | np.ndarray:
  """The weight scale sigma_w at which chi_1 = 1 for a given sigma_b.

  Found by bisection in log sigma_w on [1e-3, 1e3] (chi_1 grows with sigma_w
  for the usual activations) to float64 precision; NaN where chi_1 - 1 does
  not change sign on that range.

  Args:
    activation: a name, callable or :class:`Activation`.
    sigma_b: bias standard deviation (>= 0; scalar or array).
    q0: the input's variance (matters where q* depends on it).

  Returns:
    sigma_w, broadcast over ``sigma_b``.

  Examples:
    >>> from jaxinit import mean_field
    >>> round(mean_field.critical_sigma_w("tanh"), 6)
    1.0
    >>> round(mean_field.critical_sigma_w("relu") ** 2, 12)   # He init
    2.0
    >>> round(mean_field.critical_sigma_w("tanh", 0.3), 4)
    1.3956
  """
  fn = "mean_field.critical_sigma_w"
  a = _resolve_only(fn, activation)
  sb = _array(fn, "sigma_b", sigma_b, nonnegative=True)
  q = _array(fn, "q0", q0, positive=True)
  sb, q = np.broadcast_arrays(sb, q)
  shape = sb.shape
  sb2, q = (sb**2).reshape(-1), q.reshape(-1)

  def excess(log_sw, sb2, q):
    sw2 = np.exp(2.0 * log_sw)
    return _chi1_at(a, sw2, _q_star(a, sw2, sb2, q)) - 1.0

  lo = np.full(sb2.shape, math.log(1e-3))
  hi = np.full(sb2.shape, math.log(1e3))
  ok = (excess(lo, sb2, q) < 0) & (excess(hi, sb2, q) > 0)
  out: np.ndarray = np.full(sb2.shape, np.nan)
  if ok.any():
    b2, qq = sb2[ok], q[ok]
    out[ok] = np.exp(_illinois(lambda t, m: excess(t, b2[m], qq[m]), lo[ok], hi[ok]))
  return _out(out.reshape(shape), sigma_b, q0)


def correlation_map(
  activation: Any, c: Any, sigma_w: float, sigma_b: float = 0.0, *, q0: float = 1.0
) -> float | np.ndarray:
  r"""One step of the correlation map between two inputs, at the fixed point q*.

  .. math:: c_{l+1} = \frac{\sigma_w^2 E[\phi(u_1)\phi(u_2)] + \sigma_b^2}{q^*},
     \quad (u_1, u_2) \sim N\big(0, q^* \begin{pmatrix}1 & c_l\\ c_l & 1\end{pmatrix}\big)

  The 2-D expectation uses polar Gauss quadrature split where either
  pre-activation changes sign (exact for ReLU's arc-cosine kernel).

  Args:
    activation: a name, callable or :class:`Activation`.
    c: correlation(s) in [-1, 1] (scalar or array).
    sigma_w: weight scale (> 0, scalar).
    sigma_b: bias standard deviation (>= 0, scalar).
    q0: the input's variance, from which q* is reached.

  Returns:
    c_{l+1}, shaped like ``c``.

  Examples:
    >>> import math
    >>> from jaxinit import mean_field
    >>> c = mean_field.correlation_map("relu", 0.0, 2 ** 0.5)  # arc-cosine kernel: 1/pi
    >>> abs(c - 1 / math.pi) < 1e-14
    True
  """
  fn = "mean_field.correlation_map"
  a = _resolve_only(fn, activation)
  sw = _real(fn, "sigma_w", sigma_w, positive=True)
  sb = _real(fn, "sigma_b", sigma_b, nonnegative=True)
  cc = _array(fn, "c", c, lo=-1.0, hi=1.0)
  qs = float(
    _q_star(
      a,
      _f64(sw * sw),
      _f64(sb * sb),
      _f64(_real(fn, "q0", q0, positive=True)),
    )
  )
  return _out(_c_map(a, cc, sw * sw, sb * sb, qs), c)


def _q_eval(qs: float) -> float:
  return min(max(qs, _Q_EVAL_MIN), _Q_EVAL_MAX)


def _c_map(a: Activation, c: np.ndarray, sw2: float, sb2: float, qs: float) -> np.ndarray:
  q = _q_eval(qs)
  u1, u2, w = bivariate_rule(c, math.sqrt(q))
  with np.errstate(all="ignore"):
    e = np.sum(w * a.fn(u1) * a.fn(u2), axis=-1)
  return (sw2 * e + sb2) / q


def _chi_c(a: Activation, c: np.ndarray, sw2: float, qs: float) -> np.ndarray:
  u1, u2, w = bivariate_rule(c, math.sqrt(_q_eval(qs)))
  with np.errstate(all="ignore"):
    return sw2 * np.sum(w * a.derivative(u1) * a.derivative(u2), axis=-1)


class DepthScales(NamedTuple):
  """Mean-field summary of one (activation, sigma_w, sigma_b); see :func:`depth_scales`."""

  q_star: float
  chi1: float
  c_star: float
  xi_q: float
  xi_c: float


def _neg_inv_log(x: float) -> float:
  """-1 / log(x): the depth over which x**depth falls by e; inf at x = 1 (to 1e-12)."""
  if not (x > 0) or not math.isfinite(x):
    return math.nan
  if abs(x - 1.0) <= _CRITICAL_TOL:
    return math.inf
  return -1.0 / math.log(x)


def depth_scales(
  activation: Any,
  sigma_w: float,
  sigma_b: float = 0.0,
  *,
  q0: float = 1.0,
) -> DepthScales:
  r"""How many layers a signal survives: the depth scales of Schoenholz et al. (2017).

  * ``q_star``, ``chi1``: as :func:`q_star` and :func:`chi1`.
  * ``c_star``: the stable fixed point of the correlation map (1 in the ordered
    phase: all inputs end up alike; < 1 in the chaotic phase).
  * ``xi_q``: the length converges like ``exp(-l / xi_q)``, with
    ``xi_q = -1 / log V'(q*)`` (V the length map).
  * ``xi_c``: correlations converge like ``exp(-l / xi_c)``, with
    ``xi_c = -1 / log chi_c``, chi_c = sigma_w^2 E[phi'(u1) phi'(u2)] at c*
    (= chi_1 in the ordered phase). It diverges at the edge of chaos: a
    network can be trained to depths of a few ``xi_c``. ``chi1 ** -l`` is
    the matching gradient scale (vanishing for chi_1 < 1, exploding above).

  Undefined entries (q* infinite: the length does not converge) are NaN.

  Args:
    activation: a name, callable or :class:`Activation`.
    sigma_w: weight scale (> 0, scalar).
    sigma_b: bias standard deviation (>= 0, scalar).
    q0: the input's variance.

  Returns:
    ``DepthScales(q_star, chi1, c_star, xi_q, xi_c)``.

  Examples:
    >>> from jaxinit import mean_field
    >>> d = mean_field.depth_scales("tanh", 1.0, 0.05)     # ordered
    >>> round(d.chi1, 4), d.c_star, round(d.xi_c, 1)
    (0.9341, 1.0, 14.7)
    >>> d = mean_field.depth_scales("tanh", 1.15, 0.05)    # just past the edge: chaotic
    >>> round(d.chi1, 4), round(d.c_star, 4), round(d.xi_c)
    (1.009, 0.7117, 127)
    >>> mean_field.depth_scales("tanh", 1.0).xi_c          # exactly critical
    inf
  """
  fn = "mean_field.depth_scales"
  a = _resolve_only(fn, activation)
  sw = _real(fn, "sigma_w", sigma_w, positive=True)
  sb = _real(fn, "sigma_b", sigma_b, nonnegative=True)
  q = _real(fn, "q0", q0, positive=True)
  sw2, sb2 = sw * sw, sb * sb
  qs = float(_q_star(a, _f64(sw2), _f64(sb2), _f64(q)))
  c1 = float(_chi1_at(a, _f64(sw2), _f64(qs)))
  if not math.isfinite(qs):
    return DepthScales(qs, c1, math.nan, math.nan, math.nan)
  # V'(q) = sigma_w^2 E[phi(x) phi'(x) x] / q, x = sqrt(q) z (differentiating under E).
  qe = _q_eval(qs)
  slope = sw2 * float(_expect(lambda x: a.fn(x) * a.derivative(x) * x, _f64(qe))) / qe
  xi_q = _neg_inv_log(slope)
  if c1 <= 1.0 + _CRITICAL_TOL:
    c_star, chi_c = 1.0, c1
  else:
    c_star = _c_star(a, sw2, sb2, qs)
    chi_c = float(_chi_c(a, _f64(c_star), sw2, qs))
  return DepthScales(qs, c1, c_star, xi_q, _neg_inv_log(chi_c))


def _c_star(a: Activation, sw2: float, sb2: float, qs: float) -> float:
  """The stable fixed point c* < 1 of the correlation map in the chaotic phase."""

  def g(c):
    return float(_c_map(a, _f64(c), sw2, sb2, qs)) - c

  lo, hi = -1.0, 1.0 - 1e-6
  if g(hi) >= 0:  # numerically indistinguishable from c* = 1
    return 1.0
  if g(lo) <= 0:
    return -1.0
  for _ in range(_BISECTIONS):
    mid = 0.5 * (lo + hi)
    if g(mid) > 0:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def plot_phase_diagram(
  activation: Any,
  sigma_w: Any = None,
  sigma_b: Any = None,
  *,
  q0: float = 1.0,
  ax: Any = None,
  critical: bool = True,
) -> Any:
  """Draws the order-to-chaos phase diagram: log10 chi_1 over (sigma_w^2, sigma_b^2).

  Blue is ordered (chi_1 < 1: vanishing gradients), red chaotic (exploding);
  the black contour chi_1 = 1 is the edge of chaos. With ``critical=True`` the
  line from :func:`critical_line` (parametrized by q*) is overlaid dashed: it
  must lie on the contour.

  Args:
    activation: a name, callable or :class:`Activation`.
    sigma_w: grid of weight scales (default 120 points on [0.5, 4]).
    sigma_b: grid of bias scales (default 80 points on [0, 1]).
    q0: the input's variance.
    ax: a matplotlib Axes (default: a new figure).
    critical: overlay the parametric critical line.

  Returns:
    The matplotlib Axes.

  Raises:
    ImportError: matplotlib is not installed (``pip install 'jaxinit[notebooks]'``).

  Examples:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from jaxinit import mean_field
    >>> ax = mean_field.plot_phase_diagram("tanh", [0.5, 1.0, 2.0], [0.0, 0.5])
    >>> ax.get_xlabel()
    '$\\\\sigma_w^2$'
  """
  fn = "mean_field.plot_phase_diagram"
  plt = _pyplot(fn)
  a = _resolve_only(fn, activation)
  sw = _array(
    fn, "sigma_w", np.linspace(0.5, 4.0, 120) if sigma_w is None else sigma_w, positive=True
  ).reshape(-1)
  sb = _array(
    fn, "sigma_b", np.linspace(0.0, 1.0, 80) if sigma_b is None else sigma_b, nonnegative=True
  ).reshape(-1)
  q = _real(fn, "q0", q0, positive=True)
  grid = _chi1_at(a, sw[None, :] ** 2, _q_star(a, sw[None, :] ** 2, sb[:, None] ** 2, _f64(q)))
  if ax is None:
    _, ax = plt.subplots(figsize=(5, 4))
  with np.errstate(divide="ignore"):
    z = np.log10(grid)
  lim = max(float(np.nanmax(np.abs(z[np.isfinite(z)]), initial=0.0)), 1e-3)
  mesh = ax.pcolormesh(sw**2, sb**2, z, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
  ax.figure.colorbar(mesh, ax=ax, label=r"$\log_{10}\chi_1$")
  if len(sw) > 1 and len(sb) > 1:
    ax.contour(sw**2, sb**2, z, levels=[0.0], colors="k", linewidths=1.5)
  if critical:
    qs = np.geomspace(1e-4, 1e3, 200)
    line = critical_line(a, qs)
    lw, lb = np.asarray(line.sigma_w), np.asarray(line.sigma_b)
    keep = (lw**2 <= (sw**2).max()) & (lb**2 <= (sb**2).max())
    ax.plot(
      lw[keep] ** 2,
      lb[keep] ** 2,
      "--",
      color="gold",
      lw=1.5,
      label=r"$\chi_1 = 1$ from $q^*$",
    )
    if keep.any():
      ax.legend(loc="upper left", fontsize=8)
  ax.set_xlabel(r"$\sigma_w^2$")
  ax.set_ylabel(r"$\sigma_b^2$")
  ax.set_title(f"{a.name}: ordered (blue) / chaotic (red)")
  return ax


def _pyplot(fn: str):
  try:
    import matplotlib.pyplot as plt
  except ImportError:
    raise ImportError(
      f"jaxinit.{fn} needs matplotlib: pip install matplotlib "
      "(or pip install 'jaxinit[notebooks]')."
    ) from None
  return plt
