"""Sharding: the one home of how jaxinit reads, checks and lays out shardings.

* where a leaf is born: :func:`resolve_sharding` (an explicit table, a Flax
  partitioning annotation under a known mesh, the sharding a leaf already has);
* whether a sharding can hold a shape: :func:`check_sharding`;
* how random bits are laid out so each device draws only its shard:
  :func:`sharded_axes` and :func:`grouped_shape` (used by ``draw``);
* the mesh context: :func:`context_mesh`, :func:`explicit_context`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax

from jaxinit._src.checks import Sharding, fail
from jaxinit._src.framework_types import annotation, is_box, unbox
from jaxinit._src.paths import path_str


def sharded_axes(shape: tuple[int, ...], sharding: Any) -> tuple[Any, ...]:
  """Per axis of ``shape``: None if unsharded, else its mesh axes (True if unknown)."""
  spec = None
  if isinstance(sharding, jax.sharding.NamedSharding):
    spec = sharding.spec
  elif isinstance(sharding, jax.sharding.PartitionSpec):
    spec = sharding
  if spec is not None:
    entries = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
    out = []
    for e, d in zip(entries, shape, strict=False):
      unsharded = e is None or e == () or d <= 1
      out.append(None if unsharded else (e if isinstance(e, str) else tuple(e)))
    if isinstance(sharding, jax.sharding.Sharding):  # trust the real shard shape
      shard = sharding.shard_shape(shape)
      out = [e if s != d else None for e, s, d in zip(out, shard, shape, strict=True)]
    return tuple(out)
  shard = sharding.shard_shape(shape)
  return tuple(True if s != d else None for s, d in zip(shard, shape, strict=True))


def grouped_shape(shape: tuple[int, ...], sharded: Sequence[Any]) -> tuple[int, ...]:
  """``shape`` with each run of consecutive unsharded axes merged into one axis.

  ``sharded[i]`` is falsy for an unsharded axis.

  >>> grouped_shape((3, 3, 256, 512), (None, None, None, "model"))
  (2304, 512)
  >>> grouped_shape((3, 3, 256, 512), (None, None, "model", None))
  (9, 256, 512)
  """
  return tuple(math.prod(shape[i] for i in g) for g in _groups(sharded))


def _groups(sharded: Sequence[Any]) -> list[list[int]]:
  groups: list[list[int]] = []
  run = False  # whether groups[-1] is a run of unsharded axes that may grow
  for i, s in enumerate(sharded):
    if s:
      groups.append([i])
      run = False
    elif run:
      groups[-1].append(i)
    else:
      groups.append([i])
      run = True
  return groups


def explicit_context() -> Any:
  """The context's abstract mesh if it has Explicit axes (``jax.set_mesh``), else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
    return None
  return mesh


def check_sharding(fn: str, sharding: Sharding, shape: tuple[int, ...]) -> None:
  """Raises a clear error when ``sharding`` cannot hold an array of ``shape``."""
  spec = getattr(sharding, "spec", sharding)
  if isinstance(spec, jax.sharding.PartitionSpec) and len(spec) > len(shape):
    raise fail(
      fn,
      f"`out_sharding` {spec} has {len(spec)} entries, more than the "
      f"{len(shape)} axes of the shape {shape}.",
    )
  if isinstance(sharding, jax.sharding.PartitionSpec):
    if len(sharding) > len(shape):
      raise fail(
        fn,
        f"`out_sharding` {sharding} has {len(sharding)} entries, more than the "
        f"{len(shape)} axes of the shape {shape}.",
      )
    return
  try:
    sharding.shard_shape(shape)  # type: ignore[union-attr]
  except Exception as e:
    raise fail(fn, f"`out_sharding` {sharding} cannot shard the shape {shape}: {e}") from None


def context_mesh() -> Any:
  """The mesh set by ``jax.set_mesh``: concrete outside jit, abstract inside; or None."""
  mesh: Any
  try:
    mesh = jax.sharding.get_mesh()
  except ValueError:  # inside jit only the abstract mesh is known
    mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def named(fn: str, path: str, spec: Any, mesh: Any) -> Any:
  """A Sharding from a Sharding, or a PartitionSpec with a mesh; None stays None."""
  if spec is None or isinstance(spec, jax.sharding.Sharding):
    return spec
  if isinstance(spec, jax.sharding.PartitionSpec):
    mesh = mesh if mesh is not None else context_mesh()
    if mesh is None:
      raise fail(
        fn,
        f"the leaf {path!r} is to be sharded as {spec} but no mesh is known: "
        "pass mesh=... or call inside `with jax.set_mesh(mesh):`.",
      )
    if isinstance(mesh, jax.sharding.AbstractMesh):
      return spec  # under jit inside jax.set_mesh: the spec resolves against the context
    return jax.sharding.NamedSharding(mesh, spec)
  raise fail(
    fn,
    f"the sharding for {path!r} must be a jax.sharding.Sharding, a "
    f"PartitionSpec or None, got {spec!r}.",
    TypeError,
  )


def sharding_table(fn: str, shardings: Any) -> dict[str, Any] | Any:
  if shardings is None or isinstance(shardings, jax.sharding.Sharding):
    return shardings
  is_leaf = lambda x: (
    x is None or is_box(x) or isinstance(x, jax.sharding.Sharding | jax.sharding.PartitionSpec)
  )
  flat, _ = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=is_leaf)
  table = {}
  for p, s in flat:
    table[path_str(p)] = unbox(s) if is_box(s) else s
  return table


def own_sharding(leaf: Any, mesh: Any) -> Any:
  """The sharding an existing leaf carries, when it spans several devices."""
  s = getattr(leaf, "sharding", None)
  if isinstance(leaf, jax.core.Tracer) or s is None:
    return None
  if isinstance(s, jax.sharding.NamedSharding) and isinstance(
    s.mesh, jax.sharding.AbstractMesh
  ):  # from eval_shape under a mesh
    if s.mesh.size <= 1:
      return None
    if mesh is not None:
      return jax.sharding.NamedSharding(mesh, s.spec)
    return s.spec if context_mesh() is not None else None
  try:
    if len(s.device_set) > 1:
      return s
  except Exception:
    return None
  return None


def resolve_sharding(fn, path, box, leaf, table, mesh) -> Any:
  """The sharding a redrawn leaf is born with (see :func:`reinit`)."""
  if table is not None:
    if isinstance(table, jax.sharding.Sharding):
      return table
    if path not in table:
      raise fail(
        fn,
        f"`shardings` has no entry for the leaf {path!r}; give a tree with the "
        "same structure as the parameters (None entries leave a leaf unsharded).",
      )
    return named(fn, path, table[path], mesh)
  ann = annotation(box) if box is not None else None
  if ann is not None:
    spec, box_mesh = ann
    ann_mesh = box_mesh if box_mesh is not None else mesh
    if (
      ann_mesh is not None or context_mesh() is not None or isinstance(spec, jax.sharding.Sharding)
    ):
      return named(fn, path, spec, ann_mesh)
    # an annotated model used without a mesh: as Flax does, the annotation is ignored
  return named(fn, path, own_sharding(leaf, mesh), mesh)
