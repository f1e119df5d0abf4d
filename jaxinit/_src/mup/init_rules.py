"""µP initialization: each leaf drawn with its base initializer's std at the base shape,
times the leaf's init multiplier.

The rule is microsoft/mup's (``mup/init.py``, 1.0.0): "identical to torch at base shapes,
the correct µP scaling otherwise" — the std a base initializer gives at the *base* shape,
times ``1/√m_in`` for hidden weights and ``1/m_in`` for an ``init_lr`` readout. It is
expressed here as an ordinary jaxinit initializer per leaf (a variance-scaling
initializer with its ``scale`` adjusted, a normal with its ``stddev`` adjusted, ...), so
the rules print, compare and serialize like any other.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from jaxinit._src import serialization
from jaxinit._src.base import Initializer
from jaxinit._src.basic import zeros
from jaxinit._src.checks import fail
from jaxinit._src.mup.classify import Leaf
from jaxinit._src.rules import SiblingRule

_SUPPORTED = (
  "variance_scaling and its specializations (lecun_*, he_*, glorot_*), normal, "
  "truncated_normal, uniform, zeros, ones/constant (for leaves whose std does not scale), "
  "orthogonal, torch_bias"
)


def _root(init: Initializer) -> Initializer:
  """The general initializer a named specialization draws with (he_normal -> variance_scaling)."""
  while (d := init._delegate()) is not None:
    init = d
  return init


def _orthogonal_var(init: Initializer, shape: tuple[int, ...]) -> float:
  """E w² of scale·Q: scale² / max(rows, cols) of the (prod(other axes), columns) matrix."""
  ndim = len(shape)
  col = init.column_axis % ndim
  batch = {a % ndim for a in init.batch_axis}
  rows = math.prod(d for a, d in enumerate(shape) if a != col and a not in batch)
  return init.scale**2 / max(rows, shape[col])


def _close(a: float, b: float) -> bool:
  return math.isclose(a, b, rel_tol=1e-12)


def _scaled(fn: str, path: str, init: Initializer, leaf: Leaf, factor: float) -> Initializer:
  """``init`` redrawn at ``leaf.shape`` with (std at ``leaf.base_shape``) × ``factor``."""
  init = init.for_layout(leaf.layout, leaf.shape)
  root = _root(init)
  base, shape = leaf.base_shape, leaf.shape
  name = root.name
  if factor == 0.0:
    return zeros()
  if base == shape and _close(factor, 1.0):  # nothing scales: any initializer stays as it is
    return init
  if name == "variance_scaling":
    ratio = factor**2 * root.variance(base) / root.variance(shape)
    return init if _close(ratio, 1.0) else dataclasses.replace(root, scale=root.scale * ratio)
  if name == "orthogonal":
    ratio = factor * math.sqrt(_orthogonal_var(root, base) / _orthogonal_var(root, shape))
    return init if _close(ratio, 1.0) else dataclasses.replace(root, scale=root.scale * ratio)
  if name == "zeros" or (_close(factor, 1.0) and name in ("normal", "truncated_normal", "uniform")):
    return init
  if name in ("normal", "truncated_normal") and root.mean == 0.0:
    return dataclasses.replace(root, stddev=root.stddev * factor)
  if name == "uniform" and root.minval == -root.maxval:
    return dataclasses.replace(root, minval=root.minval * factor, maxval=root.maxval * factor)
  if name in ("ones", "constant") and _close(factor, 1.0):
    return init
  if name in ("normal", "truncated_normal", "uniform", "ones", "constant"):
    raise fail(
      fn,
      f"{path!r} is a {leaf.kind} leaf whose std must be multiplied by {factor:.4g}, but its "
      f"initializer {init!r} has a nonzero mean; µP scales zero-mean draws only (TP V App. B: "
      "matrix-like parameters need zero-mean initialization).",
    )
  raise fail(
    fn,
    f"cannot width-scale {init!r} for {path!r}: µP needs the std an initializer gives at the "
    f"base shape, which is known for {_SUPPORTED}.",
    TypeError,
  )


def _as_init(fn: str, pattern: str, init: Any) -> Any:
  if init is None or isinstance(init, Initializer | SiblingRule):
    return init
  if isinstance(init, str | Mapping):
    return serialization.get(init)
  raise fail(
    fn,
    f"the base initializer {init!r} (for {pattern!r}) is not a jaxinit initializer: µP needs "
    "the std it gives at the base shape, which a jax.nn.initializers closure does not say. "
    f"Use a jaxinit initializer ({_SUPPORTED}), a name or config dict, or None to keep the "
    "leaf.",
    TypeError,
  )


def base_rules(fn: str, base_init: Any, leaves: dict[str, Leaf]) -> list[tuple[str, Any]]:
  """``base_init`` as ``[(pattern, init or None)]``; one initializer covers every weight."""
  if isinstance(base_init, Mapping) and "name" not in base_init and "class_name" not in base_init:
    items = list(base_init.items())
    if not items:
      raise fail(fn, "`base_init` is an empty mapping; give at least one pattern.")
    out = []
    for pattern, init in items:
      if not isinstance(pattern, str):
        raise fail(fn, f"a `base_init` pattern must be a string, got {pattern!r}.", TypeError)
      try:
        re.compile(pattern)
      except re.error as e:
        raise fail(fn, f"`base_init` pattern {pattern!r} is not a valid regex: {e}.") from None
      out.append((pattern, _as_init(fn, pattern, init)))
    return out
  init = _as_init(fn, "every weight", base_init)
  if init is None:
    raise fail(fn, "`base_init` must be an initializer or a mapping {pattern: initializer}.")
  weights = [re.escape(p) for p, leaf in leaves.items() if leaf.in_axes]
  return [(p, init) for p in weights]


def _sibling(fn: str, path: str, rule: SiblingRule, leaves: dict[str, Leaf]) -> Leaf:
  parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
  for name in rule.sibling:
    if parent + name in leaves:
      return leaves[parent + name]
  raise fail(
    fn,
    f"{rule!r} matched {path!r}, but none of its sibling kernels exists: tried "
    f"{', '.join(repr(parent + n) for n in rule.sibling)}. Pass sibling='<name>'.",
  )


def leaf_initializer(
  fn: str, path: str, init: Any, leaf: Leaf, leaves: dict[str, Leaf], factor: float
) -> Initializer:
  """The initializer that draws ``leaf`` under µP (``factor``: its init multiplier)."""
  if isinstance(init, SiblingRule):
    sib = _sibling(fn, path, init, leaves)
    init = init.resolve(sib.base_shape, sib.layout)  # torch's bias rule at the base width
  return _scaled(fn, path, init, leaf, factor)
