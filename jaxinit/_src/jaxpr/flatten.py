"""Flattening a traced model into a straight-line list of steps, with dataflow facts.

:class:`Flattener` walks a jaxpr: calls (``jit``, ``closed_call``),
``custom_jvp``/``custom_vjp`` functions and ``remat``/``checkpoint`` are
inlined; a ``scan`` whose body contains a layer is unrolled (one step per
iteration, the stacked weight sliced per step); ``cond``, ``while`` and other
control flow that contains a layer raise an error naming it. Every value gets
an integer id; the flattener records which ids depend on the batch (``data``),
which on a parameter (``pdep``), the :class:`~.records.Origin` of values that
are a parameter seen through layout operations only, and the candidate layers:
``dot_general``/``conv`` steps that read such a value and the batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
from jax import lax

from jaxinit._src.jaxpr.index import index_suffix, kept_dims
from jaxinit._src.jaxpr.records import Const, Origin, Step

# Calls whose sub-jaxpr takes exactly the equation's inputs: inlined.
_INLINE = {
  "jit": "jaxpr",
  "pjit": "jaxpr",
  "closed_call": "call_jaxpr",
  "core_call": "call_jaxpr",
  "call": "call_jaxpr",
  "custom_jvp_call": "call_jaxpr",
  "custom_vjp_call": "call_jaxpr",
  "custom_vjp_call_jaxpr": "fun_jaxpr",
  "remat2": "jaxpr",
  "checkpoint": "jaxpr",
  "remat": "jaxpr",
}
LAYER_PRIMS = ("dot_general", "conv_general_dilated")


_LIBRARY_DIRS = ("/flax/", "/jaxinit/_src/", "/equinox/", "/haiku/")


def source_of(eqn) -> str:
  """``file:line (function)`` of the model code that emitted ``eqn`` (library frames skipped)."""
  try:
    from jax._src import source_info_util

    frames = list(source_info_util.user_frames(eqn.source_info.traceback))
    for frame in frames:
      if not any(d in frame.file_name for d in _LIBRARY_DIRS):
        return f"{frame.file_name}:{frame.start_line} ({frame.function_name})"
    return source_info_util.summarize(eqn.source_info)
  except Exception:  # private API; the location is only used in messages
    return ""


def bind_fn(prim, params, ctx=None) -> Callable[..., list]:
  def fn(*args):
    bound = prim.get_bind_params(params)
    subfuns, bind_params = bound if isinstance(bound, tuple) else ((), bound)
    if ctx is not None:
      with ctx.manager:
        out = prim.bind(*subfuns, *args, **bind_params)
    else:
      out = prim.bind(*subfuns, *args, **bind_params)
    return list(out) if prim.multiple_results else [out]

  return fn


def _index_fn(t: int) -> Callable[..., list]:
  return lambda x: [lax.index_in_dim(x, t, axis=0, keepdims=False)]


def _stack_fn(order: list[int]) -> Callable[..., list]:
  def fn(*ys):
    by_t = [None] * len(ys)
    for y, t in zip(ys, order, strict=True):
      by_t[t] = y
    return [jnp.stack(by_t)]

  return fn


def is_float(dtype) -> bool:
  return bool(jnp.issubdtype(dtype, jnp.floating))


class Flattener:
  """Walks a jaxpr, inlining calls, and records steps, avals and dataflow facts."""

  def __init__(self, leaf_paths: Sequence[str], leaf_shapes: Sequence[tuple[int, ...]], fn: str):
    self.leaf_paths = list(leaf_paths)
    self.leaf_shapes = list(leaf_shapes)
    self.fn = fn
    self.steps: list[Step] = []
    self.avals: dict[int, Any] = {}
    self.origin: dict[int, Origin] = {}
    self.data: set[int] = set()
    self.pdep: set[int] = set()  # ids that depend on a parameter through any operation
    self.candidates: list[tuple[int, int]] = []  # (step, weight operand position)
    self._next = 0

  # -- ids -------------------------------------------------------------------

  def new_id(self, aval) -> int:
    i = self._next
    self._next += 1
    self.avals[i] = aval
    return i

  def aval(self, atom):
    if isinstance(atom, Const):
      return jax.core.get_aval(atom.value)
    return self.avals[atom]

  def is_data(self, atom) -> bool:
    return not isinstance(atom, Const) and atom in self.data

  def origin_of(self, atom) -> Origin | None:
    return None if isinstance(atom, Const) else self.origin.get(atom)

  def describe(self, atom) -> str:
    o = self.origin_of(atom)
    if o is None:
      return "?"
    return self.leaf_paths[o.leaf] + index_suffix(o.index, self.leaf_shapes[o.leaf])

  # -- walking ---------------------------------------------------------------

  def walk(self, jaxpr, consts: Sequence[Any], ins: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}
    core = jax.extend.core

    def read(v):
      return Const(v.val) if isinstance(v, core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
      env[v] = Const(c)
    for v, a in zip(jaxpr.invars, ins, strict=True):
      env[v] = a
    for eqn in jaxpr.eqns:
      outs = self.eqn(eqn, [read(v) for v in eqn.invars])
      for v, a in zip(eqn.outvars, outs, strict=True):
        if not isinstance(v, core.DropVar):
          env[v] = a
    return [read(v) for v in jaxpr.outvars]

  def eqn(self, eqn, ins: list[Any]) -> list[Any]:
    name = eqn.primitive.name
    if name in _INLINE and _INLINE[name] in eqn.params:
      sub = eqn.params[_INLINE[name]]
      if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):  # ClosedJaxpr
        return self.walk(sub.jaxpr, sub.consts, ins)
      return self.walk(sub, [], ins)
    if name == "scan":
      return self.scan(eqn, ins)
    subs = list(jax.extend.core.jaxprs_in_params(eqn.params))
    if subs:
      self.check_opaque(eqn, ins)
    fn = bind_fn(eqn.primitive, eqn.params, getattr(eqn, "ctx", None))
    return self.emit(name, eqn.params, ins, [v.aval for v in eqn.outvars], fn, source_of(eqn))

  def emit(self, prim: str, params: dict, ins: list[Any], out_avals, fn, source="") -> list[int]:
    outs = tuple(self.new_id(a) for a in out_avals)
    step = len(self.steps)
    self.steps.append(Step(prim, params, tuple(ins), outs, fn, source))
    if any(self.is_data(a) for a in ins):
      self.data.update(outs)
    if any(not isinstance(a, Const) and a in self.pdep for a in ins):
      self.pdep.update(outs)
    if len(outs) == 1:
      o = self.derive(step, prim, params, ins, out_avals[0])
      if o is not None:
        self.origin[outs[0]] = o
    if prim in LAYER_PRIMS and len(ins) == 2 and is_float(out_avals[0].dtype):
      derived = [p for p in (0, 1) if self.origin_of(ins[p]) is not None]
      if (
        len(derived) == 1
        and self.is_data(ins[1 - derived[0]])
        and (prim == "dot_general" or derived[0] == 1)
      ):
        self.candidates.append((step, derived[0]))
    return list(outs)

  def derive(self, step: int, prim: str, params: dict, ins: list[Any], out_aval) -> Origin | None:
    """The origin of a step's output when it is a layout op of a parameter-derived value."""
    derived = [p for p, a in enumerate(ins) if self.origin_of(a) is not None]
    if len(derived) != 1 or any(self.is_data(a) for a in ins):
      return None
    if any(
      not isinstance(a, Const) and a in self.pdep for p, a in enumerate(ins) if p != derived[0]
    ):
      return None  # e.g. w / norm(w): the other operand depends on a parameter too
    pos = derived[0]
    o = self.origin_of(ins[pos])
    assert o is not None
    in_aval = self.aval(ins[pos])
    others = [a for p, a in enumerate(ins) if p != pos]
    ops = (*o.ops, (step, pos))
    if prim in ("convert_element_type", "copy", "copy_p", "neg") and not others:
      if not (is_float(in_aval.dtype) and is_float(out_aval.dtype)):
        return None
      return dataclasses.replace(o, ops=ops)
    if prim in ("mul", "div") and len(others) == 1 and (prim == "mul" or pos == 0):
      if self.aval(others[0]).shape != () or not is_float(out_aval.dtype):
        return None
      return dataclasses.replace(o, ops=ops, bijective=False)
    if prim in ("reshape", "transpose", "rev") and not others:
      if prim == "reshape" and params.get("dimensions") is not None:
        return None
      return dataclasses.replace(o, ops=ops, elementwise=False)
    if prim == "broadcast_in_dim" and not others:
      same = math.prod(in_aval.shape) == math.prod(out_aval.shape)
      return dataclasses.replace(o, ops=ops, elementwise=False, bijective=o.bijective and same)
    if prim == "squeeze" and not others:
      if o.elementwise:
        index = list(o.index)
        kept = kept_dims(o.index)
        if all(index[kept[d]][1] - index[kept[d]][0] == 1 for d in params["dimensions"]):
          for d in params["dimensions"]:
            index[kept[d]] = index[kept[d]][0]
          return dataclasses.replace(o, index=tuple(index))
      return dataclasses.replace(o, ops=ops, elementwise=False)
    if prim == "slice" and not others and o.elementwise:
      strides = params.get("strides")
      if strides is not None and any(s != 1 for s in strides):
        return None
      index = list(o.index)
      for d, (lo, hi) in enumerate(
        zip(params["start_indices"], params["limit_indices"], strict=True)
      ):
        k = kept_dims(o.index)[d]
        base = index[k][0]
        index[k] = (base + lo, base + hi)
      return dataclasses.replace(o, index=tuple(index))
    if prim == "_scan_index" and not others and o.elementwise:
      index = list(o.index)
      k = kept_dims(o.index)[0]
      index[k] = index[k][0] + params["t"]
      return dataclasses.replace(o, index=tuple(index))
    return None

  # -- control flow ----------------------------------------------------------

  def trial(self, jaxpr, consts, ins: list[Any]) -> list[str]:
    """Paths of the layers a sub-jaxpr would contain given these inputs."""
    sub = Flattener(self.leaf_paths, self.leaf_shapes, self.fn)
    sub_ins: list[Any] = []
    for a in ins:
      if isinstance(a, Const):
        sub_ins.append(a)
        continue
      i = sub.new_id(self.aval(a))
      if a in self.origin:
        sub.origin[i] = self.origin[a]
      if a in self.data:
        sub.data.add(i)
      if a in self.pdep:
        sub.pdep.add(i)
      sub_ins.append(i)
    try:
      sub.walk(jaxpr, consts, sub_ins)
    except NotImplementedError as e:  # a layer nested deeper: report it from here
      return [str(e)]
    return [sub.describe(sub.steps[s].ins[p]) for s, p in sub.candidates]

  def check_opaque(self, eqn, ins: list[Any]) -> None:
    """Control flow we do not unroll must not contain a layer."""
    name = eqn.primitive.name
    p = eqn.params
    found: list[str] = []
    if name == "cond":
      for br in p["branches"]:
        found += self.trial(br.jaxpr, br.consts, ins[1:])
    elif name == "while":
      nc, nb = p["cond_nconsts"], p["body_nconsts"]
      body = p["body_jaxpr"]
      found += self.trial(body.jaxpr, body.consts, ins[nc : nc + nb] + ins[nc + nb :])
    elif any(self.origin_of(a) is not None for a in ins):
      for sub in jax.extend.core.jaxprs_in_params(p):
        if any(e.primitive.name in LAYER_PRIMS for e in _all_eqns(sub)):
          found.append(
            f"a {name} that consumes "
            + ", ".join(sorted({self.describe(a) for a in ins if self.origin_of(a) is not None}))
          )
          break
    if found:
      where = {
        "cond": "a lax.cond / lax.switch (which branch runs is only known at run time)",
        "while": "a lax.while_loop / fori_loop with a dynamic trip count",
      }.get(name, f"a `{name}` primitive")
      raise NotImplementedError(
        f"jaxinit.{self.fn}: the layer(s) {', '.join(found)} run inside {where}, which "
        "layer discovery cannot unroll. Move the layer out of the control flow, use "
        "lax.scan / nn.scan / nnx.scan with a static length, or exclude the layer."
      )

  def scan(self, eqn, ins: list[Any]) -> list[Any]:
    p = eqn.params
    body, nconst, ncarry, length = p["jaxpr"], p["num_consts"], p["num_carry"], p["length"]
    consts, carry, xs = ins[:nconst], ins[nconst : nconst + ncarry], ins[nconst + ncarry :]
    # Does the body hold a layer, given the inputs of its first step?
    probe = [*consts, *carry]
    for a in xs:
      probe.append(a if isinstance(a, Const) else self.emit_index(a, 0, dry=True))
    found = self.trial(body.jaxpr, body.consts, probe) if length > 0 else []
    if not found:
      return self.emit(
        "scan", p, ins, [v.aval for v in eqn.outvars], bind_fn(eqn.primitive, p), source_of(eqn)
      )
    order = list(range(length))[::-1] if p["reverse"] else list(range(length))
    ys_by_step: list[list[Any]] = []
    for t in order:
      xs_t = [self.emit_index(a, t) for a in xs]
      outs = self.walk(body.jaxpr, body.consts, [*consts, *carry, *xs_t])
      carry, ys = outs[:ncarry], outs[ncarry:]
      ys_by_step.append(ys)
    stacked = []
    for j, v in enumerate(eqn.outvars[ncarry:]):
      parts = [ys[j] for ys in ys_by_step]
      stacked += self.emit("_scan_stack", {}, parts, [v.aval], _stack_fn(order))
    return [*carry, *stacked]

  def emit_index(self, atom, t: int, dry: bool = False):
    """``atom[t]`` along axis 0 (a scan's per-step slice)."""
    if isinstance(atom, Const):
      return Const(atom.value[t])
    aval = self.aval(atom)
    out_aval = jax.core.ShapedArray(aval.shape[1:], aval.dtype)
    if dry:  # a stand-in with the right facts, for the trial walk
      sub_id = self.new_id(out_aval)
      if atom in self.data:
        self.data.add(sub_id)
      if atom in self.pdep:
        self.pdep.add(sub_id)
      o = self.origin_of(atom)
      if o is not None:
        new = self.derive(-1, "_scan_index", {"t": t}, [atom], out_aval)
        if new is not None:
          self.origin[sub_id] = new
      return sub_id
    return self.emit("_scan_index", {"t": t}, [atom], [out_aval], _index_fn(t))[0]


def _all_eqns(jaxpr):
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _all_eqns(sub)
