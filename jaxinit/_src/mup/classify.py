"""Which parameters scale with width, and how: the kind of every leaf from base and target shapes.

A dimension is *infinite* (scales with width) when its size differs between the base and
the target tree — or, when a ``delta`` tree is given, between the base and the delta
(microsoft/mup's ``zip_infshape`` in ``mup/shape.py``). Unlike mup, which takes a
parameter's *last* infinite dimension as its fan-in (right for torch's ``(out, in)``
only), the fan-in and fan-out axes come from a kernel layout (``jaxinit.Layout``): Flax
``(*receptive, in, out)``, torch/equinox ``(out, in, *receptive)``, and groups of axes
for multi-axis kernels (Flax attention ``(d_model, heads, head_dim)``), so
``m_in = fan_in(target) / fan_in(base)`` over any number of infinite axes.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxinit._src.checks import fail, normalize_axes
from jaxinit._src.framework_types import is_equinox_module, unbox
from jaxinit._src.layouts import FLAX, TORCH, Layout, get_layout
from jaxinit._src.paths import path_str
from jaxinit._src.tree import flatten

# Flax's MultiHeadDotProductAttention / nnx.MultiHeadAttention store DenseGeneral kernels:
# query/key/value (d_model, heads, head_dim), out (heads, head_dim, d_model).
QKV_KERNEL = re.compile(r"(.*/)?(query|key|value)/kernel")
_OUT_KERNEL = re.compile(r"(.*/)?out/kernel")
_QKV_BIAS = re.compile(r"(.*/)?(query|key|value)/bias")
_QKV = Layout("flax_attention_qkv", in_axis=0, out_axis=(1, 2))
_OUT = Layout("flax_attention_out", in_axis=(0, 1), out_axis=2)
_VECTOR = Layout("vector", in_axis=(), out_axis=(0, 1))
_TABLE = Layout("embedding_table", in_axis=0, out_axis=1)


@dataclasses.dataclass(frozen=True)
class WidthMult:
  """The width multipliers of one parameter: ``fan_in`` and ``fan_out`` at the target
  over those at the base width (1 for fans that do not scale).

  Examples:
    >>> from jaxinit import mup
    >>> mup.WidthMult(fan_in=4.0, fan_out=4.0)
    WidthMult(fan_in=4.0, fan_out=4.0)
  """

  fan_in: float
  fan_out: float


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One parameter as the parametrization sees it."""

  path: str
  shape: tuple[int, ...]
  base_shape: tuple[int, ...]
  infinite: tuple[bool, ...]
  in_axes: tuple[int, ...]
  out_axes: tuple[int, ...]
  layout: Layout
  kind: str
  tied: bool = False
  block: bool = False

  def _mult(self, axes: tuple[int, ...]) -> float:
    return math.prod(self.shape[a] / self.base_shape[a] for a in axes if self.infinite[a])

  @property
  def width_mult(self) -> WidthMult:
    return WidthMult(float(self._mult(self.in_axes)), float(self._mult(self.out_axes)))


@dataclasses.dataclass(frozen=True)
class Options:
  """What ``parametrize`` was told, validated (everything but the trees)."""

  layout: Any  # None | Layout | tuple of (pattern, Layout)
  readout: tuple[str, ...] | None
  fixed: tuple[str, ...]


def patterns(fn: str, arg: str, value: Any) -> tuple[str, ...] | None:
  """None, a regex, or a sequence of regexes, checked to compile."""
  if value is None:
    return None
  items = (value,) if isinstance(value, str) else value
  if not isinstance(items, Sequence) or not all(isinstance(p, str) for p in items):
    raise fail(
      fn, f"`{arg}` must be a regular expression or a sequence of them, got {value!r}.", TypeError
    )
  for p in items:
    try:
      re.compile(p)
    except re.error as e:
      raise fail(fn, f"`{arg}` pattern {p!r} is not a valid regular expression: {e}.") from None
  return tuple(items)


def layout_option(fn: str, layout: Any) -> Any:
  """None, one layout (preset name or Layout), or ``{pattern: layout}``."""
  if layout is None:
    return None
  if isinstance(layout, Mapping):
    out = []
    for pattern, lay in layout.items():
      pattern = (patterns(fn, "layout", pattern) or (pattern,))[0]
      out.append((pattern, get_layout(fn, lay)))
    return tuple(out)
  return get_layout(fn, layout)


def array_leaves(fn: str, tree: Any, what: str) -> dict[str, tuple[tuple[int, ...], Any]]:
  """``{path: (shape, dtype)}`` of the floating-point leaves (arrays or ShapeDtypeStructs)."""
  out = {}
  for path, leaf in flatten(tree, fn)[0]:
    v = unbox(leaf)
    if hasattr(v, "shape") and hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.inexact):
      out[path] = (tuple(int(d) for d in v.shape), v.dtype)
  if not out:
    raise fail(
      fn,
      f"`{what}` holds no floating-point arrays (or jax.ShapeDtypeStructs); pass the model's "
      f"parameter tree, e.g. jax.eval_shape(model.init, key, x), got {type(tree).__name__}.",
      TypeError,
    )
  return out


def _equinox_tables(tree: Any) -> set[str]:
  """Paths of ``eqx.nn.Embedding`` weights: stored ``(vocab, d)``, i.e. (in, out)."""
  eqx = sys.modules.get("equinox")
  if eqx is None or not is_equinox_module(tree):
    return set()
  is_table = lambda x: isinstance(x, eqx.nn.Embedding)
  found = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_table)[0]
  return {
    path_str(p) + "/weight" if p else "weight" for p, x in found if isinstance(x, eqx.nn.Embedding)
  }


def _layout_of(path: str, rank: int, opt: Any, default: Layout, tables: set[str]):
  """``(layout, source)``: source ``'path'`` (the user's for this path), ``'convention'``
  (Flax attention, equinox embedding), or ``'default'`` (the tree's or the user's one layout)."""
  if isinstance(opt, tuple):
    for pattern, lay in opt:
      if re.fullmatch(pattern, path):
        return lay, "path"
  elif isinstance(opt, Layout):
    return opt, "default"
  if path in tables:
    return _TABLE, "convention"
  if default == FLAX:
    if rank == 3 and QKV_KERNEL.fullmatch(path):
      return _QKV, "convention"
    if rank == 3 and _OUT_KERNEL.fullmatch(path):
      return _OUT, "convention"
    if rank == 2 and _QKV_BIAS.fullmatch(path):
      return _VECTOR, "convention"
  return default, "default"


def _axes(fn: str, path: str, shape: tuple[int, ...], lay: Layout):
  if len(shape) <= 1 or lay is _VECTOR:
    return (), tuple(range(len(shape)))
  try:
    ins = normalize_axes(fn, "in_axis", lay.in_axis, shape)
    outs = normalize_axes(fn, "out_axis", lay.out_axis, shape)
  except ValueError as e:
    raise fail(
      fn,
      f"the layout {lay!r} does not fit {path!r} of shape {shape}: "
      f"{str(e).split(': ', 1)[1]} Pass layout={{{path!r}: jaxinit.Layout(...)}}.",
    ) from None
  return ins, outs


def _shape_kind(fn, path, shape, base, inf, ins, outs, lay) -> str:
  receptive = [a for a in range(len(shape)) if a not in ins and a not in outs and inf[a]]
  if receptive:
    a = receptive[0]
    raise fail(
      fn,
      f"cannot tell the kind of {path!r} (shape {shape}, base {base}): its axis {a} scales "
      f"with width, but the layout {lay.name!r} (in_axis={lay.in_axis!r}, "
      f"out_axis={lay.out_axis!r}) makes it neither a fan-in nor a fan-out axis. Say which "
      f"axes are which with layout={{{re.escape(path)!r}: jaxinit.Layout('mine', in_axis=..., "
      f"out_axis=...)}}, or pass fixed={re.escape(path)!r} to keep it out of µP.",
    )
  i, o = any(inf[a] for a in ins), any(inf[a] for a in outs)
  return {(True, True): "hidden", (False, True): "input", (True, False): "output"}.get(
    (i, o), "fixed"
  )


def unmatched(fn: str, arg: str, pattern: str, paths: list[str]) -> Exception:
  close = difflib.get_close_matches(pattern, paths, n=3, cutoff=0.4)
  hint = f" Close paths: {', '.join(map(repr, close))}." if close else ""
  return fail(
    fn,
    f"the `{arg}` pattern {pattern!r} matches no parameter path (patterns must match the "
    f"whole path, as re.fullmatch).{hint} Paths: {', '.join(paths[:30])}"
    f"{' ...' if len(paths) > 30 else ''}.",
  )


def _match(fn, arg, pats, paths) -> set[str]:
  hit = set()
  for p in pats or ():
    m = {q for q in paths if re.fullmatch(p, q)}
    if not m:
      raise unmatched(fn, arg, p, paths)
    hit |= m
  return hit


def _pair(fn: str, target: dict, base: dict, what: str) -> None:
  missing, extra = sorted(set(target) - set(base)), sorted(set(base) - set(target))
  if missing or extra:
    raise fail(
      fn,
      f"`{what}` and `target` must be the same model at two widths (the same parameter "
      f"paths); only in target: {missing[:10]}, only in {what}: {extra[:10]}.",
    )
  for p, (shape, _) in target.items():
    if len(base[p][0]) != len(shape):
      raise fail(
        fn,
        f"{p!r} has shape {shape} in target but {base[p][0]} in `{what}`: a width change "
        "never changes a parameter's rank.",
      )
    for a, b in zip(shape, base[p][0], strict=True):
      if (a == 0) != (b == 0):  # a ratio to or from zero is no width multiplier
        raise fail(
          fn,
          f"{p!r} has shape {shape} in target but {base[p][0]} in `{what}`: a dimension "
          "that is 0 in one and not in the other has no width ratio; give both models "
          "a nonzero width.",
        )


def classify(fn: str, base: Any, target: Any, delta: Any, opt: Options) -> dict[str, Leaf]:
  """Every floating-point leaf of ``target`` with its kind (see :mod:`tables`)."""
  tgt = array_leaves(fn, target, "target")
  bas = array_leaves(fn, base, "base")
  _pair(fn, tgt, bas, "base")
  ref = tgt  # a dimension scales iff base and target (or base and delta) differ
  if delta is not None:
    ref = array_leaves(fn, delta, "delta")
    _pair(fn, tgt, ref, "delta")
  paths = list(tgt)
  default = TORCH if is_equinox_module(target) else FLAX
  tables = _equinox_tables(target)
  leaves, sources = {}, {}
  for p in paths:
    shape, base_shape = tgt[p][0], bas[p][0]
    inf = tuple(b != r for b, r in zip(base_shape, ref[p][0], strict=True))
    lay, sources[p] = _layout_of(p, len(shape), opt.layout, default, tables)
    ins, outs = _axes(fn, p, shape, lay)
    kind = _shape_kind(fn, p, shape, base_shape, inf, ins, outs, lay)
    leaves[p] = Leaf(p, shape, base_shape, inf, ins, outs, lay, kind)
  if not any(any(leaf.infinite) for leaf in leaves.values()):
    other = "delta" if delta is not None else "base"
    raise fail(
      fn,
      f"no dimension differs between `{other}` and `target`, so nothing scales with width "
      "(microsoft/mup silently falls back to the standard parametrization here). Pass a base "
      "at another width; to parametrize the base model itself, also pass delta=<the model at "
      "a third width> to mark which dimensions are widths.",
    )
  fixed = _match(fn, "fixed", opt.fixed, paths)
  readout = _match(fn, "readout", opt.readout, paths)
  both = sorted(fixed & readout)
  if both:
    raise fail(fn, f"{both[0]!r} is matched by both `readout` and `fixed`; narrow one of them.")
  for p in fixed:
    leaves[p] = dataclasses.replace(leaves[p], kind="fixed")
  for p in readout:
    leaves[p] = _as_readout(fn, leaves[p])
  _check_readouts(fn, leaves, opt, sources)
  return leaves


def _as_readout(fn: str, leaf: Leaf) -> Leaf:
  if leaf.kind == "hidden":
    raise fail(
      fn,
      f"{leaf.path!r} (shape {leaf.shape}, base {leaf.base_shape}) is matched by `readout`, "
      "but both its fan-in and its fan-out scale with width (a hidden weight); a readout maps "
      "the width to a fixed number of outputs. Narrow the `readout` pattern.",
    )
  if leaf.kind == "input" and len(leaf.shape) >= 2:
    # read as an input (only its fan-out scales) and used as the readout: a tied embedding
    return dataclasses.replace(leaf, tied=True)
  return leaf


def _check_readouts(fn: str, leaves: dict[str, Leaf], opt: Options, sources: dict) -> None:
  outputs = [p for p, leaf in leaves.items() if leaf.kind == "output"]
  if opt.readout is None and not outputs:
    raise fail(
      fn,
      "found no readout: no parameter has a fan-in that scales with width and a fan-out that "
      "does not. If the output layer is tied to the embedding (Flax Embed.attend), pass "
      "readout='<embedding path>' with formulation='mup_package'; if the fan axes are not the "
      "layout's, pass layout=; if the model really has no readout weight, pass readout=().",
    )
  ambiguous = [
    p
    for p in outputs
    if sources[p] == "default" and len(leaves[p].shape) == 2 and leaves[p].in_axes == (1,)
  ]
  if opt.readout is None and len(ambiguous) > 1:
    raise fail(
      fn,
      f"{', '.join(map(repr, ambiguous))} are all shaped like readouts in the torch layout "
      "(out, in): an embedding table stored (vocab, d) looks the same as a readout weight. "
      "Pass readout='<regex of the readout weights>', and give embedding tables the layout "
      "they are read with: layout={'<table path>': 'flax'} (equinox's nn.Embedding is "
      "recognized by its type).",
    )
