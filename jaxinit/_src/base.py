"""The initializer protocol and the base class every jaxinit initializer derives from.

Every public initializer is a frozen dataclass. Calling it runs
``init(key, shape, dtype=None, out_sharding=None)``: the arguments are checked
and canonicalized on the host (``checks``), then the draw itself runs as one
jit-compiled computation keyed on ``(initializer, shape, dtype)`` (``draw``).
Because the initializer is part of the compilation key, equal configurations
share one compilation, and because the draw is always compiled, an eager call
and a call inside a user's ``jax.jit`` produce bit-identical arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from jaxinit._src import draw, registry
from jaxinit._src.checks import (
  Array,
  DTypeLike,
  Shape,
  Sharding,
  canonical_dtype,
  canonical_key,
  canonical_shape,
  fail,
)
from jaxinit._src.layouts import FLAX, Layout, get_layout


@runtime_checkable
class InitializerProtocol(Protocol):
  """What Flax and ``jax.nn.initializers`` call: ``init(key, shape, dtype, out_sharding)``."""

  def __call__(
    self,
    key: Array,
    shape: Shape,
    dtype: DTypeLike | None = None,
    out_sharding: Sharding = None,
  ) -> Array: ...


@dataclasses.dataclass(frozen=True, repr=False)
class Initializer:
  """Base class of all jaxinit initializers.

  Subclasses are frozen dataclasses whose fields are exactly the keyword
  arguments of their public factory (``name``), so that
  ``factory(**init.config()) == init`` and the object reprs, compares, hashes,
  pickles and serializes as the factory call that made it.

  A subclass implements ``_sample(key, shape, dtype)`` (traced, returns an array
  of exactly ``shape`` and ``dtype``) and may implement ``_check(fn, shape,
  dtype)`` for call-time checks that need the shape (they run on the host,
  before any tracing, and name ``jaxinit.<fn>``). ``_delegate()`` lets a named
  specialization hand both to a more general initializer.
  """

  name: ClassVar[str] = "initializer"
  #: Whether complex dtypes are supported.
  supports_complex: ClassVar[bool] = True
  #: Whether the output ignores the key (zeros, ones, constant, identity, dirac).
  deterministic: ClassVar[bool] = False
  #: One-line formula shown by ``jaxinit list`` and the README table.
  formula: ClassVar[str] = ""

  #: The dtype drawn when a call gives none (as ``jax.nn.initializers``'
  #: ``dtype=``); ``None``: float32, or float64 under x64. Stored by name.
  dtype: str | None = dataclasses.field(default=None, kw_only=True)

  def __post_init__(self):
    """Validates the fields every initializer has; subclasses call it last."""
    if self.dtype is not None:
      d = canonical_dtype(self.name, self.dtype, allow_complex=self._supports_complex())
      object.__setattr__(self, "dtype", d.name)

  # -- the protocol --------------------------------------------------------

  def __call__(
    self,
    key: Array,
    shape: Shape,
    dtype: DTypeLike | None = None,
    out_sharding: Sharding = None,
  ) -> Array:
    """Draws an array of ``shape`` and ``dtype`` from ``key``.

    Args:
      key: a typed key (``jax.random.key``) or a legacy ``jax.random.PRNGKey``.
      shape: the shape of the parameter.
      dtype: the parameter dtype; ``None`` means the initializer's ``dtype``,
        else float32 (float64 under x64). 16-bit targets are drawn in float32
        and cast.
      out_sharding: a ``jax.sharding.Sharding`` (or a ``PartitionSpec`` inside a
        mesh context) the result is produced in. The values do not depend on it.

    Returns:
      The drawn array.
    """
    fn = self.name
    shape = canonical_shape(fn, shape)
    if dtype is None:
      dtype = self.dtype
    dtype = canonical_dtype(fn, dtype, allow_complex=self._supports_complex())
    key = canonical_key(fn, key)
    self._check(fn, shape, dtype)
    return draw.run(self, key, shape, dtype, out_sharding)

  def _sample(self, key: Array, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """Traced: the draw, of exactly ``shape`` and ``dtype`` (never zero-size)."""
    delegate = self._delegate()
    if delegate is None:
      raise NotImplementedError(f"{type(self).__name__} must implement _sample or _delegate")
    return delegate._sample(key, shape, dtype)

  def _check(self, fn: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Call-time checks that need the shape or dtype; errors name ``jaxinit.<fn>``."""
    delegate = self._delegate()
    if delegate is not None:
      delegate._check(fn, shape, dtype)

  def _delegate(self) -> Initializer | None:
    """A more general initializer that draws the same distribution, or None."""
    return None

  def _supports_complex(self) -> bool:
    delegate = self._delegate()
    if delegate is not None:
      return delegate._supports_complex()
    return self.supports_complex

  # -- layouts ------------------------------------------------------------

  #: ``(field, role)`` pairs, role ``"in"`` or ``"out"``: the fields naming kernel
  #: axes, which a layout rewrites. An initializer without such fields draws the
  #: same distribution in every layout (elementwise i.i.d. or constant).
  layout_fields: ClassVar[tuple[tuple[str, str], ...]] = ()

  def with_layout(self, layout: str | Layout) -> Initializer:
    """This initializer with its axes set for a kernel layout.

    ``layout`` is a preset name (``"flax"``, ``"torch"``, ``"equinox"``,
    ``"torch_transpose"``, ...; see ``jaxinit.LAYOUTS``) or a
    ``jaxinit.Layout``. Every axis argument takes the layout's axis of its
    role: the fans of the variance-scaling family (``in_axis``,
    ``out_axis``), the columns of :func:`orthogonal` (the output axis), the
    units of :func:`sparse` and :func:`normalized`, the channel axes of
    :func:`dirac`, :func:`delta_orthogonal` and :func:`identity`.
    Initializers with no axis argument (``normal``, ``constant``, ...) draw
    the same thing in every layout and are returned unchanged. The result is
    an ordinary initializer (it reprs, hashes and serializes as the factory
    call with those axes). A subclass may override this method; ``reinit``
    then calls it for leaves of rank >= 2.

    Raises:
      ValueError: an unknown layout, or one this initializer cannot follow
        (several output axes for an argument that takes one axis).

    Examples:
      >>> import jaxinit
      >>> jaxinit.he_normal().with_layout("torch")
      he_normal(in_axis=1, out_axis=0)
      >>> jaxinit.orthogonal().with_layout("torch")
      orthogonal(column_axis=0)
    """
    return self._relayout(get_layout(self.name, layout))

  def _relayout(self, layout: Layout, only_defaults: bool = False) -> Initializer:
    """This initializer with the axis fields of ``layout_fields`` set by ``layout``.

    With ``only_defaults``, an initializer whose axes were set explicitly (not
    on their Flax defaults) is returned unchanged.
    """
    if not self.layout_fields:
      return self
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    if only_defaults and any(getattr(self, f) != defaults[f] for f, _ in self.layout_fields):
      return self
    roles = {"in": layout.in_axis, "out": layout.out_axis}
    new: dict[str, Any] = {}
    for field, role in self.layout_fields:
      axes = roles[role]
      if isinstance(getattr(self, field), int) and isinstance(axes, tuple) and len(axes) == 1:
        axes = axes[0]
      new[field] = axes
    try:
      return dataclasses.replace(self, **new)
    except (TypeError, ValueError) as e:
      raise fail(
        self.name,
        f"cannot follow the layout {layout!r}: {str(e).removeprefix(f'jaxinit.{self.name}: ')} "
        "Set the axes on the initializer instead.",
      ) from None

  def for_layout(self, layout: Layout, shape: tuple[int, ...]) -> Initializer:
    """What ``reinit`` draws a leaf of ``shape`` with under ``layout``.

    Axis fields are rewritten only while on their defaults (the Flax layout),
    so axes set explicitly on an initializer win. Leaves of rank < 2 (biases,
    scales) keep the default rule for 0-D/1-D shapes.
    """
    if layout == FLAX or len(shape) < 2:
      return self
    if type(self).with_layout is not Initializer.with_layout:  # a subclass decides itself
      return self.with_layout(layout)
    return self._relayout(layout, only_defaults=True)

  # -- repr / serialization ------------------------------------------------

  @classmethod
  def arguments(cls) -> tuple[dataclasses.Field, ...]:
    """The factory's arguments as dataclass fields, in the factory's order (``dtype`` last)."""
    fields = dataclasses.fields(cls)
    return tuple(f for f in fields if not f.kw_only) + tuple(f for f in fields if f.kw_only)

  def config(self) -> dict[str, Any]:
    """The factory's keyword arguments that rebuild this initializer."""
    return {f.name: getattr(self, f.name) for f in self.arguments()}

  def __repr__(self) -> str:
    args = []
    for f in self.arguments():
      value = getattr(self, f.name)
      if f.default is not dataclasses.MISSING and _same(value, f.default):
        continue
      args.append(f"{f.name}={value!r}")
    return f"{self.name}({', '.join(args)})"

  def __reduce__(self):
    return (_rebuild, (self.name, self.config()))


def _same(a: Any, b: Any) -> bool:
  try:
    return type(a) is type(b) and bool(a == b)
  except Exception:
    return False


def _rebuild(name: str, config: dict[str, Any]) -> Initializer:
  return registry.lookup(name, "deserialize")(**config)
