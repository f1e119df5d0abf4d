"""A parametrization as a JSON-able dict, and back (untrusted input: every field checked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jaxinit._src.checks import fail
from jaxinit._src.layouts import Layout
from jaxinit._src.mup.classify import Leaf
from jaxinit._src.mup.tables import KINDS

FORMAT = "jaxinit.mup/1"


def _axes_json(axes: int | tuple[int, ...]) -> Any:
  return axes if isinstance(axes, int) else list(axes)


def _axes_back(axes: Any) -> int | tuple[int, ...]:
  return axes if isinstance(axes, int) else tuple(axes)


def leaf_to_dict(leaf: Leaf) -> dict[str, Any]:
  lay = leaf.layout
  return {
    "path": leaf.path,
    "shape": list(leaf.shape),
    "base_shape": list(leaf.base_shape),
    "infinite": list(leaf.infinite),
    "in_axes": list(leaf.in_axes),
    "out_axes": list(leaf.out_axes),
    "layout": [lay.name, _axes_json(lay.in_axis), _axes_json(lay.out_axis)],
    "kind": leaf.kind,
    "tied": leaf.tied,
    "block": leaf.block,
  }


def _ints(fn: str, d: Mapping, key: str, n: int | None = None) -> tuple[int, ...]:
  v = d.get(key)
  ok = isinstance(v, Sequence) and not isinstance(v, str)
  ok = ok and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
  if not ok or (n is not None and len(v) != n):
    raise fail(fn, f"leaf {d.get('path')!r}: {key!r} must be a list of ints >= 0, got {v!r}.")
  return tuple(v)


def leaf_from_dict(fn: str, d: Any) -> Leaf:
  if not isinstance(d, Mapping) or not isinstance(d.get("path"), str):
    raise fail(fn, f"each leaf must be a dict with a 'path' string, got {d!r:.100}.")
  shape = _ints(fn, d, "shape")
  base = _ints(fn, d, "base_shape", len(shape))
  inf = d.get("infinite")
  if not (
    isinstance(inf, Sequence) and len(inf) == len(shape) and all(x in (True, False) for x in inf)
  ):
    raise fail(fn, f"leaf {d['path']!r}: 'infinite' must be one bool per axis, got {inf!r}.")
  if d.get("kind") not in KINDS:
    raise fail(fn, f"leaf {d['path']!r}: 'kind' must be one of {KINDS}, got {d.get('kind')!r}.")
  lay = d.get("layout")
  try:
    layout = Layout(lay[0], _axes_back(lay[1]), _axes_back(lay[2]))
  except Exception as e:
    raise fail(fn, f"leaf {d['path']!r}: bad 'layout' {lay!r}: {e}") from None
  ins, outs = _ints(fn, d, "in_axes"), _ints(fn, d, "out_axes")
  if any(a >= len(shape) for a in ins + outs) or set(ins) & set(outs):
    raise fail(fn, f"leaf {d['path']!r}: 'in_axes' {ins} / 'out_axes' {outs} do not fit {shape}.")
  return Leaf(
    d["path"],
    shape,
    base,
    tuple(bool(x) for x in inf),
    ins,
    outs,
    layout,
    d["kind"],
    bool(d.get("tied", False)),
    bool(d.get("block", False)),
  )
