"""Kernel layouts: which axes of a weight are its inputs and outputs, per framework.

Fan-based initializers (the ``variance_scaling`` family) need to know which axis
of a kernel is the input and which the output. Flax, haiku and Keras store
``(*spatial, in, out)``; torch and equinox store ``(out, in, *spatial)``. A
:class:`Layout` names the axes; presets cover the frameworks; transposed
convolutions are documented case by case in :data:`LAYOUTS`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, ClassVar

from jaxinit._src.base import (
  Initializer,
  as_tuple,
  check_axes,
  check_real,
  fail,
)

Axes = int | tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
  """Which axes of a kernel are its input and output axes.

  Every other axis (apart from an initializer's own ``batch_axis``) is a
  receptive-field axis and counts in both fans. Build one directly for a custom
  layout, or use a preset name from :data:`LAYOUTS` wherever a layout is
  accepted.

  Attributes:
    name: a label (the preset name, or ``"custom"``).
    in_axis: input axis or axes.
    out_axis: output axis or axes.

  Examples:
    >>> import jaxinit
    >>> jaxinit.Layout("custom", in_axis=0, out_axis=1)
    Layout(name='custom', in_axis=0, out_axis=1)
  """

  name: str
  in_axis: Axes
  out_axis: Axes

  def __post_init__(self):
    fn = "Layout"
    if not isinstance(self.name, str):
      raise fail(fn, f"`name` must be a string, got {self.name!r}.", TypeError)
    object.__setattr__(self, "in_axis", check_axes(fn, "in_axis", self.in_axis))
    object.__setattr__(self, "out_axis", check_axes(fn, "out_axis", self.out_axis))
    common = set(as_tuple(self.in_axis)) & set(as_tuple(self.out_axis))
    if common:
      raise fail(
        fn,
        f"`in_axis`={self.in_axis!r} and `out_axis`={self.out_axis!r} share axis {sorted(common)}.",
      )


_FLAX = Layout("flax", -2, -1)
_TORCH = Layout("torch", 1, 0)

#: The preset layouts by name.
#:
#: ``"flax"`` (also ``"linen"``, ``"nnx"``, ``"haiku"``, ``"keras"``, ``"jax"``):
#: ``(*spatial, in, out)`` -- ``Dense`` ``(in, out)``, ``Conv`` HWIO. Flax's
#: ``ConvTranspose`` kernel is also ``(*spatial, in, out)`` with ``in`` the
#: channels of the transposed layer's input, so it needs no other preset.
#:
#: ``"torch"`` (also ``"equinox"``): ``(out, in, *spatial)`` -- ``nn.Linear``
#: ``(out, in)``, ``nn.Conv2d`` OIHW, equinox ``Linear``/``Conv``. Equinox's
#: ``ConvTranspose`` stores ``(out, in, *spatial)`` too.
#:
#: ``"torch_transpose"``: ``(in, out, *spatial)`` -- torch's ``ConvTransposeNd``
#: weight ``(in_channels, out_channels / groups, *k)``. These are the true fans of
#: a transposed convolution. torch's own default init reads this weight with the
#: ``"torch"`` layout (it takes axis 1 as the input), so to reproduce torch's
#: numbers exactly, use ``"torch"`` on those weights.
LAYOUTS: dict[str, Layout] = {
  "flax": _FLAX,
  "linen": _FLAX,
  "nnx": _FLAX,
  "haiku": _FLAX,
  "keras": _FLAX,
  "jax": _FLAX,
  "torch": _TORCH,
  "equinox": _TORCH,
  "torch_transpose": Layout("torch_transpose", 0, 1),
}


def get_layout(fn: str, layout: Any) -> Layout:
  """A :class:`Layout` from a preset name or a Layout; errors name ``jaxinit.<fn>``."""
  if isinstance(layout, Layout):
    return layout
  if isinstance(layout, str):
    if layout in LAYOUTS:
      return LAYOUTS[layout]
    close = difflib.get_close_matches(layout, list(LAYOUTS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise fail(
      fn,
      f"unknown layout {layout!r}.{hint} Presets: "
      f"{', '.join(map(repr, LAYOUTS))}, or a jaxinit.Layout(...).",
    )
  raise fail(fn, f"`layout` must be a preset name or a jaxinit.Layout, got {layout!r}.", TypeError)


def _has_fan_axes(init: Initializer) -> bool:
  return {"in_axis", "out_axis"} <= {f.name for f in dataclasses.fields(init)}


def _relayout(init: Initializer, layout: Layout) -> Initializer:
  if _has_fan_axes(init):
    return dataclasses.replace(init, in_axis=layout.in_axis, out_axis=layout.out_axis)
  return init


def with_layout(init: Initializer, layout: Any) -> Initializer:
  """``init`` with its fan axes set to ``layout``'s (see :meth:`Initializer.with_layout`)."""
  return _relayout(init, get_layout(init.name, layout))


def apply_layout(init: Any, layout: Layout, shape: tuple[int, ...]) -> Any:
  """What ``reinit`` draws a leaf of ``shape`` with under ``layout``.

  Fan-based initializers (``in_axis``/``out_axis`` fields) are rewritten only
  while on the default (Flax) axes, so axes set explicitly on an initializer
  win; an initializer of another kind that overrides
  :meth:`Initializer.with_layout` decides itself. Leaves of rank < 2 (biases,
  scales) keep the default rule for 0-D/1-D shapes.
  """
  if layout == _FLAX or len(shape) < 2 or not isinstance(init, Initializer):
    return init
  if _has_fan_axes(init):
    if (init.in_axis, init.out_axis) != (_FLAX.in_axis, _FLAX.out_axis):
      return init
    return _relayout(init, layout)
  if type(init).with_layout is not Initializer.with_layout:
    return init.with_layout(layout)
  return init


# ---------------------------------------------------------------------------
# A rule whose distribution depends on a sibling leaf: torch's default bias.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SiblingRule:
  """Base of reinit rules that need the shape of a sibling leaf (same parent path).

  Subclasses implement ``resolve(sibling_shape, layout) -> initializer``.
  ``reinit`` finds the sibling by trying the names in ``sibling`` in order under
  the matched leaf's parent. A sibling rule is not an initializer: it cannot be
  called as ``init(key, shape)`` on its own.
  """

  sibling: tuple[str, ...] = ("weight", "kernel", "w")

  name: ClassVar[str] = "sibling_rule"

  def resolve(self, sibling_shape: tuple[int, ...], layout: Layout) -> Initializer:
    raise NotImplementedError

  def __call__(self, *args, **kwargs):
    raise fail(
      self.name,
      "this rule takes its scale from a sibling kernel, so it can only be used "
      "as a rule of jaxinit.reinit (which knows the sibling), not called directly.",
      TypeError,
    )


@dataclasses.dataclass(frozen=True)
class _TorchBias(SiblingRule):
  scale: float = 1.0

  name: ClassVar[str] = "torch_bias"

  def __post_init__(self):
    sib = (self.sibling,) if isinstance(self.sibling, str) else self.sibling
    if (
      not isinstance(sib, tuple | list) or not sib or not all(isinstance(s, str) and s for s in sib)
    ):
      raise fail(
        "torch_bias",
        f"`sibling` must be a name or a sequence of names, got {self.sibling!r}.",
        TypeError,
      )
    object.__setattr__(self, "sibling", tuple(sib))
    object.__setattr__(self, "scale", check_real("torch_bias", "scale", self.scale, positive=True))

  def resolve(self, sibling_shape, layout):
    from jaxinit._src.basic import uniform
    from jaxinit._src.variance_scaling import _fans

    if len(sibling_shape) < 2:
      fan_in = sibling_shape[0] if sibling_shape else 1
    else:
      fan_in, _ = _fans("torch_bias", tuple(sibling_shape), layout.in_axis, layout.out_axis, ())
    bound = self.scale / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(-bound, bound)

  def __repr__(self):
    return f"torch_bias(sibling={self.sibling!r}, scale={self.scale!r})"


def torch_bias(
  sibling: str | tuple[str, ...] = ("weight", "kernel", "w"), scale: float = 1.0
) -> SiblingRule:
  r"""A ``reinit`` rule for torch's default bias: ``U(-b, b)``, ``b = scale / sqrt(fan_in)``.

  ``fan_in`` is that of the **sibling kernel** (the leaf named ``sibling`` under
  the same parent as the bias, e.g. ``"Dense_0/kernel"`` for
  ``"Dense_0/bias"``), computed with the layout given to :func:`reinit`. This is
  what ``torch.nn.Linear`` and ``torch.nn.ConvNd`` do for their bias and what
  ``jax.nn.initializers`` cannot express (an initializer only sees its own
  shape). torch's default *weight* init is
  ``jaxinit.he_uniform(negative_slope=5 ** 0.5)``, i.e. ``U(-1/sqrt(fan_in),
  1/sqrt(fan_in))`` as well.

  Args:
    sibling: the sibling's name, or names tried in order (default: ``"weight"``
      (torch, equinox), ``"kernel"`` (Flax), ``"w"`` (haiku)).
    scale: multiplies the bound.

  Returns:
    A rule for :func:`reinit` (not callable as an initializer on its own).

  Raises:
    TypeError: ``sibling`` is not a name or names; ``scale`` not a number.
    ValueError: ``scale <= 0``.

  Examples:
    >>> import jax, jaxinit
    >>> params = {"fc": {"weight": jax.numpy.zeros((8, 400)), "bias": jax.numpy.zeros(8)}}
    >>> rules = {".*weight": jaxinit.he_uniform(negative_slope=5 ** 0.5),
    ...          ".*bias": jaxinit.torch_bias()}
    >>> new = jaxinit.reinit(params, rules, jax.random.key(0), layout="torch")
    >>> bool(abs(new["fc"]["bias"]).max() <= 1 / 400 ** 0.5)
    True
  """
  return _TorchBias(sibling, scale)
