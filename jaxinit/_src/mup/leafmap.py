"""Applying per-path values of a parametrization to a tree: alignment of paths, checked shapes.

A parametrization built from linen ``variables`` (paths ``params/Dense_0/kernel``) also
applies to ``variables["params"]`` (paths ``Dense_0/kernel``), and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxinit._src.checks import fail
from jaxinit._src.framework_types import is_box, rebox, unbox
from jaxinit._src.tree import flatten


def align(known: Mapping[str, Any], path: str) -> str | None:
  """The parametrization's path for a tree path, or None."""
  if path in known:
    return path
  if "params/" + path in known:
    return "params/" + path
  if path.startswith("params/") and path[len("params/") :] in known:
    return path[len("params/") :]
  return None


def is_float(v: Any) -> bool:
  return hasattr(v, "shape") and hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.inexact)


def check_shape(fn: str, path: str, value: Any, shape: tuple[int, ...], what: str) -> None:
  if tuple(value.shape) != shape:
    raise fail(
      fn,
      f"{what} {path!r} has shape {tuple(value.shape)}, but the parametrization's target has "
      f"{shape}: build the parametrization with this model's width as `target`.",
    )


def map_leaves(
  fn: str,
  tree: Any,
  known: Mapping[str, Any],
  f: Callable[[str, Any, Any], Any],
  what: str,
) -> Any:
  """``tree`` with each floating leaf ``v`` at a known path replaced by ``f(path, v, known[path])``.

  A floating leaf the parametrization does not know is an error (its multiplier would
  silently be 1); boxes (Flax ``nn.Partitioned``, nnx ``Variable``) are looked through.
  """
  flat, treedef = flatten(tree, fn)
  out = []
  for path, leaf in flat:
    v = unbox(leaf)
    if not is_float(v):
      out.append(leaf)
      continue
    key = align(known, path)
    if key is None:
      shown = ", ".join(list(known)[:8])
      raise fail(
        fn,
        f"the {what} tree has a parameter {path!r} that the parametrization does not know "
        f"(it knows {shown}{', ...' if len(known) > 8 else ''}); build it from the same "
        "model's parameter tree.",
      )
    new = f(key, v, known[key])
    out.append(rebox(leaf, new) if is_box(leaf) else new)
  return jax.tree_util.tree_unflatten(treedef, out)
