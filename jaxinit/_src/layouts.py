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
from typing import Any

from jaxinit._src.checks import as_tuple, check_axes, fail

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


FLAX = Layout("flax", -2, -1)
TORCH = Layout("torch", 1, 0)

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
  "flax": FLAX,
  "linen": FLAX,
  "nnx": FLAX,
  "haiku": FLAX,
  "keras": FLAX,
  "jax": FLAX,
  "torch": TORCH,
  "equinox": TORCH,
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
