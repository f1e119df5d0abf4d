"""Fans, variance scaling, and its named specializations (Glorot, He, LeCun)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxinit._src import sampling
from jaxinit._src.base import Initializer
from jaxinit._src.checks import (
  DTypeLike,
  Shape,
  check_axes,
  check_bool,
  check_choice,
  check_range,
  check_real,
  compute_dtype,
  fail,
  is_complex,
  normal_reach,
)
from jaxinit._src.fans import Axes, batch_axes, fans
from jaxinit._src.gain import gain as _gain
from jaxinit._src.registry import register

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")

# Standard normal truncated to (-2, 2): its standard deviation, 0.87962566103423978.
_TRUNC2_STD = sampling.truncated_moments(-2.0, 2.0)[1]
# Standard complex normal truncated to |z| <= 2: sqrt(E|z|^2) = 0.9619618...
_COMPLEX_TRUNC2_STD = sampling.complex_truncated_std(2.0)


@register("variance_scaling")
@dataclasses.dataclass(frozen=True, repr=False)
class _VarianceScaling(Initializer):
  scale: float = 1.0
  mode: str = "fan_in"
  distribution: str = "truncated_normal"
  in_axis: Axes = -2
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "variance_scaling"
  layout_fields = (("in_axis", "in"), ("out_axis", "out"))
  formula = (
    "Var[w] = scale / n, n = fan_in | fan_out | (fan_in+fan_out)/2 | "
    "sqrt(fan_in*fan_out); truncated_normal (cut at 2 sigma, std-corrected), "
    "normal or uniform"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "scale", check_real(fn, "scale", self.scale, positive=True))
    check_choice(fn, "mode", self.mode, MODES)
    check_choice(fn, "distribution", self.distribution, DISTRIBUTIONS)
    object.__setattr__(self, "in_axis", check_axes(fn, "in_axis", self.in_axis))
    object.__setattr__(self, "out_axis", check_axes(fn, "out_axis", self.out_axis))
    object.__setattr__(self, "batch_axis", batch_axes(fn, self.batch_axis))
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    fans(fn, shape, self.in_axis, self.out_axis, self.batch_axis)
    if math.prod(shape):
      std = math.sqrt(self.variance(shape))
      reach = {
        "truncated_normal": 2.0 / _TRUNC2_STD,
        "normal": normal_reach(dtype),
        "uniform": math.sqrt(3.0),
      }[self.distribution]
      what = f"the standard deviation {std:.4g} (`scale` / fan for the shape {shape})"
      check_range(fn, dtype, -std * reach, std * reach, what, spread=std)

  def variance(self, shape: Shape) -> float:
    """The target variance E|w - E w|^2 for ``shape``, in float64."""
    fan_in, fan_out = fans(self.name, tuple(shape), self.in_axis, self.out_axis, self.batch_axis)
    n = {
      "fan_in": fan_in,
      "fan_out": fan_out,
      "fan_avg": (fan_in + fan_out) / 2.0,
      "fan_geo_avg": math.sqrt(fan_in * fan_out),
    }[self.mode]
    return self.scale / n

  def _sample(self, key, shape, dtype):
    real = compute_dtype(dtype)
    std = math.sqrt(self.variance(shape))
    cplx = is_complex(dtype)
    if self.distribution == "truncated_normal":
      if cplx:
        z = sampling.complex_truncated_standard_normal(key, shape, real, 2.0)
        std /= _COMPLEX_TRUNC2_STD
      else:
        z = sampling.truncated_standard_normal(key, shape, real, -2.0, 2.0)
        std /= _TRUNC2_STD
    elif self.distribution == "normal":
      z = (sampling.complex_standard_normal if cplx else sampling.standard_normal)(key, shape, real)
    else:  # uniform: unit-variance interval or disk
      if cplx:
        z = sampling.complex_unit_disk(key, shape, real)
      else:
        z = sampling.uniform(key, shape, real, -math.sqrt(3.0), math.sqrt(3.0))
    return sampling.affine(z, std, 0.0, dtype)


def variance_scaling(
  scale: float = 1.0,
  mode: str = "fan_in",
  distribution: str = "truncated_normal",
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  r"""Builds an initializer whose variance adapts to the weight's fans.

  Draws ``w`` with zero mean and variance ``scale / n`` where ``n`` is, by
  ``mode``: ``fan_in``; ``fan_out``; ``fan_avg = (fan_in + fan_out) / 2``;
  ``fan_geo_avg = sqrt(fan_in * fan_out)`` (fans as in :func:`compute_fans`).

  Distributions:

  * ``"truncated_normal"``: a normal cut at +-2 of its own standard deviation,
    rescaled (by 1 / 0.8796256610) so the variance is exactly ``scale / n``;
    complex: truncated in modulus at 2, rescaled by 1 / 0.9619618 so
    ``E|w|^2 = scale / n`` exactly (jax's complex constant is off by 1.87%);
  * ``"normal"``: untruncated; complex with independent parts, ``E|w|^2 = scale / n``;
  * ``"uniform"``: ``U(-sqrt(3 scale / n), sqrt(3 scale / n))``; complex: uniform
    on the disk of radius ``sqrt(2 scale / n)``.

  The standard deviation is computed in float64 and the draw in float32
  (float64 for 64-bit dtypes), then cast: bfloat16 results keep float32
  resolution before rounding. Arguments are validated here, not when the
  initializer is first called.

  Args:
    scale: positive scaling factor (a gain squared).
    mode: ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` or ``"fan_geo_avg"``.
    distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.
    in_axis: input axis or axes (Flax layout by default; ``1`` for torch OIHW).
    out_axis: output axis or axes (``0`` for torch OIHW).
    batch_axis: axes of a stack of independent weights, ignored by the fans.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    ValueError: bad ``mode``/``distribution`` or ``scale <= 0``; at call time,
      axes out of range for the shape or shared between roles.

  Examples:
    >>> import jax, jaxinit
    >>> init = jaxinit.variance_scaling(2.0, "fan_in", "normal")
    >>> w = init(jax.random.key(0), (512, 1024))
    >>> print(f"{w.var() * 512:.2f}")
    2.00
    >>> # a torch-layout conv kernel (out, in, kh, kw)
    >>> torch_init = jaxinit.variance_scaling(1.0, "fan_in", "uniform", in_axis=1, out_axis=0)
    >>> torch_init(jax.random.key(0), (64, 32, 3, 3)).shape
    (64, 32, 3, 3)
  """
  return _VarianceScaling(scale, mode, distribution, in_axis, out_axis, batch_axis, dtype=dtype)


# ---------------------------------------------------------------------------
# Named specializations: each holds its own arguments (so its repr reads like
# its factory call) and delegates the draw to a variance_scaling.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class _Specialization(Initializer):
  """Fields shared by Glorot/He/LeCun: the axes of the fan computation."""

  layout_fields = (("in_axis", "in"), ("out_axis", "out"))

  # ``self: Any``: the fields are declared by each subclass, in its factory's order.

  def _vs(self: Any, scale: float, mode: str, distribution: str) -> _VarianceScaling:
    return _VarianceScaling(scale, mode, distribution, self.in_axis, self.out_axis, self.batch_axis)

  def _check_axes(self: Any) -> None:
    object.__setattr__(self, "in_axis", check_axes(self.name, "in_axis", self.in_axis))
    object.__setattr__(self, "out_axis", check_axes(self.name, "out_axis", self.out_axis))
    object.__setattr__(self, "batch_axis", batch_axes(self.name, self.batch_axis))


def _normal_distribution(truncated: bool) -> str:
  return "truncated_normal" if truncated else "normal"


@register("glorot_normal", "xavier_normal")
@dataclasses.dataclass(frozen=True, repr=False)
class _GlorotNormal(_Specialization):
  gain: float = 1.0
  truncated: bool = True
  in_axis: Axes = -2
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "glorot_normal"
  formula = "Var[w] = gain^2 * 2 / (fan_in + fan_out); truncated at 2 sigma (std-corrected)"

  def __post_init__(self):
    object.__setattr__(self, "gain", check_real(self.name, "gain", self.gain, positive=True))
    _squared_gain(self.name, "gain", self.gain, self.gain)
    object.__setattr__(self, "truncated", check_bool(self.name, "truncated", self.truncated))
    self._check_axes()
    super().__post_init__()

  def _delegate(self):
    return self._vs(self.gain**2, "fan_avg", _normal_distribution(self.truncated))


@register("glorot_uniform", "xavier_uniform")
@dataclasses.dataclass(frozen=True, repr=False)
class _GlorotUniform(_Specialization):
  gain: float = 1.0
  in_axis: Axes = -2
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "glorot_uniform"
  formula = "w ~ U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))"

  def __post_init__(self):
    object.__setattr__(self, "gain", check_real(self.name, "gain", self.gain, positive=True))
    _squared_gain(self.name, "gain", self.gain, self.gain)
    self._check_axes()
    super().__post_init__()

  def _delegate(self):
    return self._vs(self.gain**2, "fan_avg", "uniform")


def _squared_gain(fn: str, arg: str, value: float, gain: float) -> float:
  """``gain ** 2``, which must be a positive float64: a factory's argument can push it out."""
  scale = gain * gain
  if not (math.isfinite(scale) and scale > 0):
    raise fail(
      fn,
      f"`{arg}`={value!r} gives the gain {gain!r}, whose square {scale!r} is not a positive "
      "float64 (a variance scale must be).",
    )
  return scale


def _he_scale(fn: str, negative_slope: float, nonlinearity: str) -> float:
  if nonlinearity == "leaky_relu":
    gain = _gain(fn, "leaky_relu", negative_slope)
    return _squared_gain(fn, "negative_slope", negative_slope, gain)
  if negative_slope != 0.0:
    raise fail(
      fn,
      f"`negative_slope`={negative_slope!r} applies only to "
      f"nonlinearity='leaky_relu', got nonlinearity={nonlinearity!r}.",
    )
  return _gain(fn, nonlinearity, None) ** 2


@dataclasses.dataclass(frozen=True, repr=False)
class _HeBase(_Specialization):
  def _check_he(self: Any):
    fn = self.name
    object.__setattr__(
      self, "negative_slope", check_real(fn, "negative_slope", self.negative_slope)
    )
    check_choice(fn, "mode", self.mode, MODES)
    if not isinstance(self.nonlinearity, str):
      raise fail(
        fn,
        "`nonlinearity` must be a name (see jaxinit.calculate_gain); for a "
        "callable use variance_scaling(calculate_gain(phi) ** 2, ...).",
        TypeError,
      )
    _he_scale(fn, self.negative_slope, self.nonlinearity)  # validates the name
    self._check_axes()

  @property
  def _scale(self: Any) -> float:
    return _he_scale(self.name, self.negative_slope, self.nonlinearity)


@register("he_normal", "kaiming_normal")
@dataclasses.dataclass(frozen=True, repr=False)
class _HeNormal(_HeBase):
  negative_slope: float = 0.0
  mode: str = "fan_in"
  nonlinearity: str = "leaky_relu"
  truncated: bool = True
  in_axis: Axes = -2
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "he_normal"
  formula = (
    "Var[w] = gain^2 / fan_mode, gain = calculate_gain(nonlinearity, negative_slope) "
    "(sqrt(2) for ReLU); truncated at 2 sigma (std-corrected)"
  )

  def __post_init__(self):
    object.__setattr__(self, "truncated", check_bool(self.name, "truncated", self.truncated))
    self._check_he()
    super().__post_init__()

  def _delegate(self):
    return self._vs(self._scale, self.mode, _normal_distribution(self.truncated))


@register("he_uniform", "kaiming_uniform")
@dataclasses.dataclass(frozen=True, repr=False)
class _HeUniform(_HeBase):
  negative_slope: float = 0.0
  mode: str = "fan_in"
  nonlinearity: str = "leaky_relu"
  in_axis: Axes = -2
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "he_uniform"
  formula = "w ~ U(-a, a), a = gain * sqrt(3 / fan_mode), gain as in he_normal"

  def __post_init__(self):
    self._check_he()
    super().__post_init__()

  def _delegate(self):
    return self._vs(self._scale, self.mode, "uniform")


@register("lecun_normal")
@dataclasses.dataclass(frozen=True, repr=False)
class _LecunNormal(_Specialization):
  truncated: bool = True
  in_axis: Axes = -2
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "lecun_normal"
  formula = "Var[w] = 1 / fan_in; truncated at 2 sigma (std-corrected)"

  def __post_init__(self):
    object.__setattr__(self, "truncated", check_bool(self.name, "truncated", self.truncated))
    self._check_axes()
    super().__post_init__()

  def _delegate(self):
    return self._vs(1.0, "fan_in", _normal_distribution(self.truncated))


@register("lecun_uniform")
@dataclasses.dataclass(frozen=True, repr=False)
class _LecunUniform(_Specialization):
  in_axis: Axes = -2
  out_axis: Axes = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple

  name = "lecun_uniform"
  formula = "w ~ U(-a, a), a = sqrt(3 / fan_in)"

  def __post_init__(self):
    self._check_axes()
    super().__post_init__()

  def _delegate(self):
    return self._vs(1.0, "fan_in", "uniform")


_AXES_DOC = """    in_axis: input axis or axes (default: Flax layout; ``1`` for torch OIHW).
    out_axis: output axis or axes (``0`` for torch OIHW).
    batch_axis: axes of a stack of independent weights, ignored by the fans."""


def _axes_doc(f):
  """Fills the shared description of the fan axes into a factory's docstring."""
  f.__doc__ = f.__doc__.replace("    <axes>", _AXES_DOC)
  return f


@_axes_doc
def glorot_normal(
  gain: float = 1.0,
  truncated: bool = True,
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds a Glorot (Xavier) normal initializer.

  Variance ``gain^2 * 2 / (fan_in + fan_out)`` (Glorot & Bengio 2010). By
  default the normal is truncated at +-2 sigma and rescaled so the variance is
  exact (jax/Keras convention); ``truncated=False`` draws the untruncated normal
  of ``torch.nn.init.xavier_normal_``. ``gain`` is torch's (absent in jax/Keras).
  Alias: ``xavier_normal``.

  Args:
    gain: positive multiplier of the standard deviation.
    truncated: truncate at 2 sigma (std-corrected) or not.
    <axes>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.glorot_normal()(jax.random.key(0), (300, 500))
    >>> print(f"{w.var() * (300 + 500) / 2:.2f}")
    1.00
    >>> jaxinit.xavier_normal is jaxinit.glorot_normal
    True
  """
  return _GlorotNormal(gain, truncated, in_axis, out_axis, batch_axis, dtype=dtype)


@_axes_doc
def glorot_uniform(
  gain: float = 1.0,
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds a Glorot (Xavier) uniform initializer.

  ``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))``, so the variance
  is ``gain^2 * 2 / (fan_in + fan_out)``. Flax's default Dense kernel is
  ``lecun_normal``; Keras's default is this. Alias: ``xavier_uniform``.

  Args:
    gain: positive multiplier (torch's ``gain``).
    <axes>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.glorot_uniform()(jax.random.key(0), (300, 500))
    >>> print(f"{abs(w).max():.4f} <= {(6 / 800) ** 0.5:.4f}")
    0.0866 <= 0.0866
  """
  return _GlorotUniform(gain, in_axis, out_axis, batch_axis, dtype=dtype)


@_axes_doc
def he_normal(
  negative_slope: float = 0.0,
  mode: str = "fan_in",
  nonlinearity: str = "leaky_relu",
  truncated: bool = True,
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds a He (Kaiming) normal initializer.

  Variance ``gain^2 / n`` with ``gain = calculate_gain(nonlinearity,
  negative_slope)`` and ``n`` the fan of ``mode`` (He et al. 2015). With the
  defaults (leaky_relu with slope 0, i.e. ReLU) the variance is ``2 / fan_in``.
  ``negative_slope`` and ``nonlinearity`` follow ``torch.nn.init.kaiming_normal_``
  (``a=``), which jax and Keras lack; any name of :func:`calculate_gain` works.
  By default the normal is truncated at +-2 sigma and rescaled so the variance is
  exact (jax/Keras); ``truncated=False`` gives torch's untruncated normal.
  Alias: ``kaiming_normal``.

  Args:
    negative_slope: slope of leaky ReLU for x < 0 (only with
      ``nonlinearity='leaky_relu'``).
    mode: ``"fan_in"`` (preserve forward variance), ``"fan_out"`` (backward),
      ``"fan_avg"`` or ``"fan_geo_avg"``.
    nonlinearity: a name accepted by :func:`calculate_gain`.
    truncated: truncate at 2 sigma (std-corrected) or not.
    <axes>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    ValueError: bad ``mode`` or ``nonlinearity``; ``negative_slope`` with a
      nonlinearity other than leaky_relu.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.he_normal()(jax.random.key(0), (512, 1024))
    >>> print(f"{w.var() * 512:.2f}")
    2.00
    >>> jaxinit.he_normal(negative_slope=0.2, mode="fan_out")
    he_normal(negative_slope=0.2, mode='fan_out')
  """
  return _HeNormal(
    negative_slope, mode, nonlinearity, truncated, in_axis, out_axis, batch_axis, dtype=dtype
  )


@_axes_doc
def he_uniform(
  negative_slope: float = 0.0,
  mode: str = "fan_in",
  nonlinearity: str = "leaky_relu",
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds a He (Kaiming) uniform initializer.

  ``U(-a, a)`` with ``a = gain * sqrt(3 / n)``, gain and ``n`` as in
  :func:`he_normal`. Alias: ``kaiming_uniform``. (torch's default *layer* init
  is ``kaiming_uniform_(a=sqrt(5))``, i.e. ``he_uniform(negative_slope=5 ** 0.5)``
  with torch-layout axes.)

  Args:
    negative_slope: slope of leaky ReLU for x < 0.
    mode: ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` or ``"fan_geo_avg"``.
    nonlinearity: a name accepted by :func:`calculate_gain`.
    <axes>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.he_uniform()(jax.random.key(0), (600, 100))
    >>> print(f"{abs(w).max():.4f} <= {(6 / 600) ** 0.5:.4f}")
    0.1000 <= 0.1000
  """
  return _HeUniform(negative_slope, mode, nonlinearity, in_axis, out_axis, batch_axis, dtype=dtype)


@_axes_doc
def lecun_normal(
  truncated: bool = True,
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds a LeCun normal initializer: variance ``1 / fan_in``.

  The right initializer for self-normalizing (SELU) networks (Klambauer et al.
  2017) and Flax's default Dense/Conv kernel init. Truncated at 2 sigma and
  std-corrected by default.

  Args:
    truncated: truncate at 2 sigma (std-corrected) or not.
    <axes>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.lecun_normal()(jax.random.key(0), (400, 800))
    >>> print(f"{w.var() * 400:.2f}")
    1.00
  """
  return _LecunNormal(truncated, in_axis, out_axis, batch_axis, dtype=dtype)


@_axes_doc
def lecun_uniform(
  in_axis: int | tuple[int, ...] = -2,
  out_axis: int | tuple[int, ...] = -1,
  batch_axis: int | tuple[int, ...] = (),
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  """Builds a LeCun uniform initializer: ``U(-a, a)``, ``a = sqrt(3 / fan_in)``.

  Args:
    <axes>
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Examples:
    >>> import jax, jaxinit
    >>> w = jaxinit.lecun_uniform()(jax.random.key(0), (300, 10))
    >>> print(f"{abs(w).max():.3f}")
    0.100
  """
  return _LecunUniform(in_axis, out_axis, batch_axis, dtype=dtype)


xavier_normal = glorot_normal
xavier_uniform = glorot_uniform
kaiming_normal = he_normal
kaiming_uniform = he_uniform
