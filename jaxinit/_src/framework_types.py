"""Recognizing framework objects without importing the frameworks.

* Flax metadata boxes: linen ``AxisMetadata`` (``nn.Partitioned``, ...) and nnx
  ``Variable``. Tree walks look through them: a boxed parameter's path is that
  of the box, its value what the box holds, and a redrawn value goes back into
  a box with the same metadata.
* Equinox modules: pytrees whose kernels are stored ``(out, in, *spatial)``, so
  ``reinit`` defaults to the torch layout for them.

A framework's module is looked up in ``sys.modules`` only: an object can only be
one of its types if the framework is already loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import jax


def _linen_box(x: Any) -> bool:
  meta = sys.modules.get("flax.core.meta")
  return meta is not None and isinstance(x, meta.AxisMetadata)


def _nnx_box(x: Any) -> bool:
  vl = sys.modules.get("flax.nnx.variablelib")
  return vl is not None and isinstance(x, vl.Variable)


def is_box(x: Any) -> bool:
  """Whether ``x`` is a Flax metadata box (kept whole as a leaf by tree walks)."""
  return _linen_box(x) or _nnx_box(x)


def unbox(x: Any) -> Any:
  """The value a box holds; anything else is returned as it is."""
  if _nnx_box(x):
    return x.get_value()
  if _linen_box(x):
    meta = sys.modules["flax.core.meta"]
    return x.value if isinstance(x, meta.Partitioned) else x.unbox()
  return x


def rebox(box: Any, value: Any) -> Any:
  """``value`` in a box with ``box``'s metadata (``value`` itself if ``box`` is no box)."""
  if _nnx_box(box):
    return box.replace(value)
  if _linen_box(box):
    return box.replace_boxed(value)
  return value


def annotation(box: Any) -> tuple[Any, Any] | None:
  """(PartitionSpec or Sharding, mesh or None) from a box's partitioning metadata."""
  P = jax.sharding.PartitionSpec
  if _linen_box(box):
    meta = sys.modules["flax.core.meta"]
    if not isinstance(box, meta.Partitioned):
      return None
    names = tuple(box.names)
    rules = getattr(box, "rules", None)
    if hasattr(box, "rules"):  # nn.LogicallyPartitioned: logical names -> mesh axes
      from flax.linen import spmd

      spec = spmd.logical_to_mesh_axes(names, rules)
    else:
      spec = P(*names)
    return spec, box.mesh
  if _nnx_box(box):
    md = box.get_metadata()
    names = md.get("out_sharding", md.get("sharding_names", md.get("sharding")))
    if not names:
      return None
    from flax.core import spmd as core_spmd

    spec = core_spmd.get_pspec(
      names if isinstance(names, jax.sharding.NamedSharding | P) else P(*names),
      md.get("sharding_rules"),
    )
    return spec, md.get("mesh")
  return None


def is_equinox_module(tree: Any) -> bool:
  """Whether ``tree`` is an ``equinox.Module``."""
  eqx = sys.modules.get("equinox")
  return eqx is not None and isinstance(tree, eqx.Module)
