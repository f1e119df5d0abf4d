"""Finding the linear layers of any JAX model, in execution order, from its jaxpr.

A *layer* is a ``dot_general`` or ``conv_general_dilated`` (any number of
spatial dimensions, grouped or depthwise) one of whose operands is a parameter
leaf seen through layout operations only, and whose other operand depends on
the model's inputs. This covers ``Dense``, ``DenseGeneral``/``LinearGeneral``,
``Einsum``, ``Conv`` of every rank, attention projections, equinox's ``W @ x``
and hand-written ``x @ w``, in Flax linen, Flax nnx and pure functions alike,
because all of them reach XLA as those two primitives. Not layers: embedding
lookups (gathers), normalization scales and PReLU slopes (elementwise
multiplies), and products between activations (``q @ k.T``).

"Layout operations" are the ones that move or cast entries without mixing
them: ``reshape``, ``transpose``, ``rev`` (a flipped kernel), ``squeeze``, ``broadcast_in_dim``,
``convert_element_type`` (between floating types), ``copy``, ``neg``, a
multiply or divide by a scalar constant, and static slices (``w[3]``,
the per-step slice of ``nn.scan``/``nnx.scan`` over stacked layers). All of
them are linear, so scaling the parameter entries a layer reads by ``s``
scales the layer's output by exactly ``s`` — the fact LSUV relies on. A weight
computed by anything else (weight normalization, spectral normalization,
masking by another array) is not a layer: scaling its parameter would not
scale the output.

How it works: the model ``f(params, *args)`` is traced once with
``jax.make_jaxpr`` and flattened into a straight-line *program*: calls
(``jit``, ``closed_call``), ``custom_jvp``/``custom_vjp`` functions and
``remat``/``checkpoint`` are inlined; a ``scan`` whose body contains a layer is
unrolled (one layer per step and slice of the stacked weight); ``cond``,
``while`` and other control flow that contains a layer raise an error naming
it (which branch runs, or how often, is only known at run time). Execution
order is the order of the equations, which is the order in which the model's
Python code called the layers — not the order in which the parameters are
named or registered, so residual and branched networks come out right.

The output of a layer: the ``dot_general``/``conv`` result plus its bias when
the very next operation (after layout operations only) adds a parameter whose
size equals the layer's number of output features — what a Flax or PyTorch
layer returns, and what PyTorch's forward hooks see. ``Layer.post`` is the end
of the elementwise chain that follows (the activation: ReLU, GELU, tanh, ...).

Tied weights: a layer whose weight entries overlap those of an earlier layer
(the same ``Dense`` called twice) is reported with ``tied_to`` set to the first
such layer, and a layer whose weight was already read earlier by something
that is not a layer (the lookup of an embedding reused as the output
projection) with ``read_earlier``. LSUV scales a weight once, at its first use
in execution order, and only when that first use is a layer: later uses see
the scaled weight, and a weight read earlier by a non-layer is left alone,
since scaling it would change everything computed after that read.

:meth:`Program.evaluate` is an interpreter over the flattened program: run
under ``jax.jit`` it costs one forward pass (the Python loop is unrolled at
trace time, so compile time is linear in depth), and a hook called at each
layer's output can read that output and replace the layer's weight, bias and
output before the forward pass continues. LSUV and the diagnostics use it.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinit._src.paths import path_str

Index = tuple  # per leaf dimension: an int (dimension dropped) or a (start, stop) slice

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
_LAYER_PRIMS = ("dot_general", "conv_general_dilated")
# Single-input layout operations that may sit between a layer's dot/conv and its bias add.
_OUT_LAYOUT = {"reshape", "transpose", "squeeze", "convert_element_type", "copy", "copy_p"}
# Shape-preserving elementwise operations that make up an activation after a layer.
_ELEMENTWISE = {
  "abs",
  "add",
  "and",
  "atan2",
  "cbrt",
  "clamp",
  "convert_element_type",
  "copy",
  "copy_p",
  "cos",
  "cosh",
  "div",
  "eq",
  "erf",
  "erf_inv",
  "erfc",
  "exp",
  "exp2",
  "expm1",
  "ge",
  "gt",
  "integer_pow",
  "is_finite",
  "le",
  "log",
  "log1p",
  "logistic",
  "lt",
  "max",
  "min",
  "mul",
  "ne",
  "neg",
  "nextafter",
  "not",
  "or",
  "pow",
  "rem",
  "round",
  "rsqrt",
  "select_n",
  "sign",
  "sin",
  "sinh",
  "sqrt",
  "square",
  "stop_gradient",
  "sub",
  "tan",
  "tanh",
  "xor",
}


@dataclasses.dataclass(frozen=True, eq=False)
class _Const:
  """A literal or closed-over constant of the traced program."""

  value: Any


@dataclasses.dataclass(eq=False)
class Step:
  """One operation of the flattened program: ``outs = fn(*ins)``."""

  prim: str
  params: dict
  ins: tuple  # int ids or _Const
  outs: tuple[int, ...]
  fn: Callable[..., list]
  source: str = ""


@dataclasses.dataclass(frozen=True)
class Origin:
  """How a value derives from a parameter leaf: ``ops(leaf[index])``.

  ``ops`` are ``(step, position)`` pairs applied in order, each a layout
  operation whose input at ``position`` is the running value (its other
  inputs are constants). ``elementwise`` says all ops so far commute with
  indexing (casts, scalar multiplies), so a later static slice can be folded
  into ``index``; ``bijective`` says they only permute and cast entries.
  """

  leaf: int
  index: Index
  ops: tuple[tuple[int, int], ...] = ()
  elementwise: bool = True
  bijective: bool = True


@dataclasses.dataclass(frozen=True)
class Bias:
  """The bias add that follows a layer."""

  path: str
  leaf: int
  index: Index
  atom: int  # the id of the bias operand of the add
  step: int  # the add
  act_pos: int  # which operand of the add is the layer's output


@dataclasses.dataclass(frozen=True)
class Layer:
  """A linear layer found in a model, in execution order.

  Attributes:
    index: position in execution order (0 for the first layer called).
    path: the weight's parameter path, '/'-joined (``'Dense_0/kernel'``); a
      static slice of a stacked weight (``nn.scan``) is appended as ``'[3]'``.
    kind: ``'dot'`` (dot_general: dense, einsum, attention projections) or
      ``'conv'``.
    weight_shape: shape of the weight entries the layer reads.
    fan_in: number of weight entries each output entry sums over.
    fan_out: number of output features.
    output_shape: shape of the layer's output (after its bias).
    bias_path: path of the bias added to the output, or None.
    tied_to: index of an earlier layer whose weight entries this layer also
      reads (a tied weight), or None.
    read_earlier: the weight entries are read before this layer by an
      operation that is not a layer — the lookup of an embedding that is tied
      to an output projection. LSUV leaves such a weight alone: scaling it
      would change everything computed after that earlier read.
    read_later: the weight entries are read again after this layer (by a
      layer tied to it, or by any other operation).
    source: where the model's code called it (``file:line (function)``).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> params = {"b_second": jnp.ones((16, 4)), "a_first": jnp.ones((8, 16))}
    >>> apply_fn = lambda p, x: jnp.tanh(x @ p["a_first"]) @ p["b_second"]
    >>> [(l.index, l.path, l.kind, l.fan_in, l.fan_out)
    ...  for l in jaxinit.find_layers(apply_fn, params, jnp.ones((2, 8)))]
    [(0, 'a_first', 'dot', 8, 16), (1, 'b_second', 'dot', 16, 4)]
  """

  index: int
  path: str
  kind: str
  weight_shape: tuple[int, ...]
  fan_in: int
  fan_out: int
  output_shape: tuple[int, ...]
  bias_path: str | None
  tied_to: int | None
  read_earlier: bool
  read_later: bool
  source: str
  # -- internals used by Program.evaluate --
  leaf: int = dataclasses.field(repr=False)
  weight_index: Index = dataclasses.field(repr=False)
  weight_atom: int = dataclasses.field(repr=False)
  step: int = dataclasses.field(repr=False)
  in_axes: tuple[int, ...] = dataclasses.field(repr=False)
  out_axes: tuple[int, ...] = dataclasses.field(repr=False)
  batch_axes: tuple[int, ...] = dataclasses.field(repr=False)
  output_step: int = dataclasses.field(repr=False)
  output: int = dataclasses.field(repr=False)
  chain: tuple[int, ...] = dataclasses.field(repr=False)
  post: int = dataclasses.field(repr=False)
  bias: Bias | None = dataclasses.field(repr=False)
  bias_shared: bool = dataclasses.field(repr=False, default=False)


@dataclasses.dataclass
class LayerIO:
  """What a hook sees at a layer's output during :meth:`Program.evaluate`.

  ``pre`` is the layer's output without its bias, computed with the current
  weight; ``bias_term`` is the bias operand as added (it broadcasts against
  ``pre``), or None; ``weight`` and ``bias`` are the current parameter entries
  the layer reads. ``bias_fn(b)`` gives the bias operand for bias entries ``b``.
  """

  layer: Layer
  pre: jax.Array
  bias_term: jax.Array | None
  weight: jax.Array
  bias: jax.Array | None
  bias_fn: Callable[[jax.Array], jax.Array] | None


@dataclasses.dataclass
class LayerUpdate:
  """A hook's answer: new weight entries, new bias entries, and the output
  the forward pass continues with (recomputed from the new parameters when
  None)."""

  weight: jax.Array | None = None
  bias: jax.Array | None = None
  output: jax.Array | None = None


# ---------------------------------------------------------------------------
# Index arithmetic (static basic indices into a leaf).
# ---------------------------------------------------------------------------


def full_index(shape: Sequence[int]) -> Index:
  return tuple((0, int(d)) for d in shape)


def _index_shape(index: Index) -> tuple[int, ...]:
  return tuple(e[1] - e[0] for e in index if isinstance(e, tuple))


def _kept_dims(index: Index) -> list[int]:
  return [i for i, e in enumerate(index) if isinstance(e, tuple)]


def apply_index(x: jax.Array, index: Index) -> jax.Array:
  """``x[index]`` with static ints and (start, stop) slices."""
  if all(isinstance(e, tuple) and e == (0, d) for e, d in zip(index, x.shape, strict=True)):
    return x
  starts = [e if isinstance(e, int) else e[0] for e in index]
  stops = [e + 1 if isinstance(e, int) else e[1] for e in index]
  y = lax.slice(x, starts, stops)
  drop = tuple(i for i, e in enumerate(index) if isinstance(e, int))
  return lax.squeeze(y, drop) if drop else y


def set_index(x: jax.Array, index: Index, value: jax.Array) -> jax.Array:
  """``x.at[index].set(value)`` for a static index (a plain replacement when full)."""
  value = value.astype(x.dtype)
  if all(isinstance(e, tuple) and e == (0, d) for e, d in zip(index, x.shape, strict=True)):
    return value
  drop = tuple(i for i, e in enumerate(index) if isinstance(e, int))
  if drop:
    value = lax.expand_dims(value, drop)
  starts = [e if isinstance(e, int) else e[0] for e in index]
  return lax.dynamic_update_slice(x, value, starts)


def _overlaps(a: Index, b: Index) -> bool:
  for x, y in zip(a, b, strict=True):
    lo1, hi1 = (x, x + 1) if isinstance(x, int) else x
    lo2, hi2 = (y, y + 1) if isinstance(y, int) else y
    if hi1 <= lo2 or hi2 <= lo1:
      return False
  return True


def index_suffix(index: Index, shape: Sequence[int]) -> str:
  parts = []
  for e, d in zip(index, shape, strict=True):
    if isinstance(e, int):
      parts.append(str(e))
    elif e == (0, d):
      parts.append(":")
    else:
      parts.append(f"{e[0]}:{e[1]}")
  while parts and parts[-1] == ":":
    parts.pop()
  return f"[{','.join(parts)}]" if parts else ""


# ---------------------------------------------------------------------------
# Flattening a jaxpr into a straight-line program, with dataflow facts.
# ---------------------------------------------------------------------------


_LIBRARY_DIRS = ("/flax/", "/jaxinit/_src/", "/equinox/", "/haiku/")


def _source(eqn) -> str:
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


def _bind_fn(prim, params, ctx=None) -> Callable[..., list]:
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


def _is_float(dtype) -> bool:
  return bool(jnp.issubdtype(dtype, jnp.floating))


class _Flattener:
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
    if isinstance(atom, _Const):
      return jax.core.get_aval(atom.value)
    return self.avals[atom]

  def is_data(self, atom) -> bool:
    return not isinstance(atom, _Const) and atom in self.data

  def origin_of(self, atom) -> Origin | None:
    return None if isinstance(atom, _Const) else self.origin.get(atom)

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
      return _Const(v.val) if isinstance(v, core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
      env[v] = _Const(c)
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
    fn = _bind_fn(eqn.primitive, eqn.params, getattr(eqn, "ctx", None))
    return self.emit(name, eqn.params, ins, [v.aval for v in eqn.outvars], fn, _source(eqn))

  def emit(self, prim: str, params: dict, ins: list[Any], out_avals, fn, source="") -> list[int]:
    outs = tuple(self.new_id(a) for a in out_avals)
    step = len(self.steps)
    self.steps.append(Step(prim, params, tuple(ins), outs, fn, source))
    if any(self.is_data(a) for a in ins):
      self.data.update(outs)
    if any(not isinstance(a, _Const) and a in self.pdep for a in ins):
      self.pdep.update(outs)
    if len(outs) == 1:
      o = self.derive(step, prim, params, ins, out_avals[0])
      if o is not None:
        self.origin[outs[0]] = o
    if prim in _LAYER_PRIMS and len(ins) == 2 and _is_float(out_avals[0].dtype):
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
      not isinstance(a, _Const) and a in self.pdep for p, a in enumerate(ins) if p != derived[0]
    ):
      return None  # e.g. w / norm(w): the other operand depends on a parameter too
    pos = derived[0]
    o = self.origin_of(ins[pos])
    in_aval = self.aval(ins[pos])
    others = [a for p, a in enumerate(ins) if p != pos]
    ops = (*o.ops, (step, pos))
    if prim in ("convert_element_type", "copy", "copy_p", "neg") and not others:
      if not (_is_float(in_aval.dtype) and _is_float(out_aval.dtype)):
        return None
      return dataclasses.replace(o, ops=ops)
    if prim in ("mul", "div") and len(others) == 1 and (prim == "mul" or pos == 0):
      if self.aval(others[0]).shape != () or not _is_float(out_aval.dtype):
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
        kept = _kept_dims(o.index)
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
        k = _kept_dims(o.index)[d]
        base = index[k][0]
        index[k] = (base + lo, base + hi)
      return dataclasses.replace(o, index=tuple(index))
    if prim == "_scan_index" and not others and o.elementwise:
      index = list(o.index)
      k = _kept_dims(o.index)[0]
      index[k] = index[k][0] + params["t"]
      return dataclasses.replace(o, index=tuple(index))
    return None

  # -- control flow ----------------------------------------------------------

  def trial(self, jaxpr, consts, ins: list[Any]) -> list[str]:
    """Paths of the layers a sub-jaxpr would contain given these inputs."""
    sub = _Flattener(self.leaf_paths, self.leaf_shapes, self.fn)
    sub_ins = []
    for a in ins:
      if isinstance(a, _Const):
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
        if any(e.primitive.name in _LAYER_PRIMS for e in _all_eqns(sub)):
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
      probe.append(a if isinstance(a, _Const) else self.emit_index(a, 0, dry=True))
    found = self.trial(body.jaxpr, body.consts, probe) if length > 0 else []
    if not found:
      return self.emit(
        "scan", p, ins, [v.aval for v in eqn.outvars], _bind_fn(eqn.primitive, p), _source(eqn)
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
    if isinstance(atom, _Const):
      return _Const(atom.value[t])
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


# ---------------------------------------------------------------------------
# The program.
# ---------------------------------------------------------------------------


class Program:
  """A model flattened to straight-line steps, with its layers in execution order.

  Build one with :func:`trace`. ``layers`` lists the layers; :meth:`evaluate`
  runs the model (traceable; costs one forward pass under jit) and can observe
  or rewrite each layer as the forward pass reaches it.
  """

  def __init__(self, flat: _Flattener, param_ids, arg_ids, out_atoms, treedefs):
    self.steps = flat.steps
    self.origin = flat.origin
    self.data = flat.data
    self.avals = flat.avals
    self.leaf_paths = flat.leaf_paths
    self.leaf_shapes = flat.leaf_shapes
    self.param_ids = param_ids
    self.arg_ids = arg_ids
    self.out_atoms = out_atoms
    self.params_treedef, self.args_treedef = treedefs
    self.layers: tuple[Layer, ...] = self._find_layers(flat)

  # -- discovery -------------------------------------------------------------

  def _find_layers(self, flat: _Flattener) -> tuple[Layer, ...]:
    steps = self.steps
    consumers: dict[int, list[tuple[int, int]]] = {}
    for si, s in enumerate(steps):
      for p, a in enumerate(s.ins):
        if not isinstance(a, _Const):
          consumers.setdefault(a, []).append((si, p))
    outputs = {a for a in self.out_atoms if not isinstance(a, _Const)}
    weight_reads = set(flat.candidates)
    reads = [
      (si, self.origin[a])
      for si, s in enumerate(steps)
      if not (len(s.outs) == 1 and s.outs[0] in self.origin)
      for p, a in enumerate(s.ins)
      if not isinstance(a, _Const) and a in self.origin and (si, p) not in weight_reads
    ]
    all_reads = reads + [(ci, self.origin[steps[ci].ins[p]]) for ci, p in flat.candidates]
    layers: list[Layer] = []
    for si, wpos in flat.candidates:
      s = steps[si]
      w_atom = s.ins[wpos]
      o = self.origin[w_atom]
      w_aval = self.avals[w_atom]
      in_axes, out_axes, batch_axes = _weight_axes(s, wpos, len(w_aval.shape))
      fan_in = math.prod(w_aval.shape[a] for a in in_axes)
      fan_out = math.prod(w_aval.shape[a] for a in out_axes)
      bias, output, output_step, chain = self._bias(si, o.leaf, fan_out, consumers, outputs)
      tied = next(
        (
          lay.index for lay in layers if lay.leaf == o.leaf and _overlaps(lay.weight_index, o.index)
        ),
        None,
      )
      earlier = any(
        ri < si and ro.leaf == o.leaf and _overlaps(ro.index, o.index) for ri, ro in reads
      )
      later = any(
        ri > si and ro.leaf == o.leaf and _overlaps(ro.index, o.index) for ri, ro in all_reads
      )
      shared = bias is not None and any(
        lay.bias is not None
        and lay.bias.leaf == bias.leaf
        and _overlaps(lay.bias.index, bias.index)
        for lay in layers
      )
      layers.append(
        Layer(
          index=len(layers),
          path=self._path(o.leaf, o.index),
          kind="dot" if s.prim == "dot_general" else "conv",
          weight_shape=_index_shape(o.index),
          fan_in=int(fan_in),
          fan_out=int(fan_out),
          output_shape=tuple(self.avals[output].shape),
          bias_path=None if bias is None else bias.path,
          tied_to=tied,
          read_earlier=earlier,
          read_later=later,
          source=s.source,
          leaf=o.leaf,
          weight_index=o.index,
          weight_atom=w_atom,
          step=si,
          in_axes=in_axes,
          out_axes=out_axes,
          batch_axes=batch_axes,
          output_step=output_step,
          output=output,
          chain=chain,
          post=self._post(output, output_step, consumers, outputs),
          bias=bias,
          bias_shared=shared,
        )
      )
    return tuple(layers)

  def _path(self, leaf: int, index: Index) -> str:
    return self.leaf_paths[leaf] + index_suffix(index, self.leaf_shapes[leaf])

  def _bias(self, si, w_leaf, fan_out, consumers, outputs):
    """Follows a dot/conv output through layout ops to a bias add, if any."""
    y = self.steps[si].outs[0]
    chain: list[int] = []
    while y not in outputs and len(consumers.get(y, ())) == 1:
      ci, pos = consumers[y][0]
      c = self.steps[ci]
      if c.prim in _OUT_LAYOUT and len(c.ins) == 1:
        y = c.outs[0]
        chain.append(ci)
        continue
      if c.prim in ("add", "add_any") and len(c.ins) == 2:
        other = c.ins[1 - pos]
        o = None if isinstance(other, _Const) else self.origin.get(other)
        if (
          o is not None
          and o.leaf != w_leaf
          and math.prod(_index_shape(o.index)) == fan_out
          and tuple(self.avals[c.outs[0]].shape) == tuple(self.avals[y].shape)
        ):
          bias = Bias(self._path(o.leaf, o.index), o.leaf, o.index, other, ci, pos)
          return bias, c.outs[0], ci, (*chain, ci)
      break
    return None, self.steps[si].outs[0], si, ()

  def _post(self, output: int, output_step: int, consumers, outputs) -> int:
    """The end of the elementwise chain (activation) that follows a layer's output."""
    shape = tuple(self.avals[output].shape)
    members = {output}
    heap = sorted({ci for ci, _ in consumers.get(output, ())})
    seen = set(heap)
    joined: list[int] = []
    member_steps = {output_step}
    while heap:
      ci = heapq.heappop(heap)
      c = self.steps[ci]
      if (
        c.prim in _ELEMENTWISE
        and len(c.outs) == 1
        and tuple(self.avals[c.outs[0]].shape) == shape
        and all((a in members) for a in c.ins if not isinstance(a, _Const) and a in self.data)
      ):
        members.add(c.outs[0])
        joined.append(c.outs[0])
        member_steps.add(ci)
        for nxt, _ in consumers.get(c.outs[0], ()):
          if nxt not in seen:
            seen.add(nxt)
            heapq.heappush(heap, nxt)
    escaping = [
      v
      for v in [output, *joined]
      if v in outputs or any(ci not in member_steps for ci, _ in consumers.get(v, ()))
    ]
    return escaping[0] if len(escaping) == 1 else output

  # -- evaluation --------------------------------------------------------------

  def eval_origin(self, o: Origin, base: jax.Array, read: Callable) -> jax.Array:
    """``ops(base)`` where ``base`` stands for ``leaf[index]``."""
    v = base
    for si, pos in o.ops:
      s = self.steps[si]
      v = s.fn(*[v if p == pos else read(a) for p, a in enumerate(s.ins)])[0]
    return v

  def weight_fn(self, layer: Layer, read: Callable | None = None) -> Callable[[Any], Any]:
    """Maps weight entries (``leaf[index]``) to the operand the layer's dot/conv reads."""
    o = self.origin[layer.weight_atom]
    return lambda w: self.eval_origin(o, w, read or _no_read)

  def weight_bijective(self, layer: Layer) -> bool:
    return self.origin[layer.weight_atom].bijective

  def weight_key(self, layer: Layer) -> tuple:
    """A value-based description of how a layer reads its weight (see :meth:`segments`)."""
    o = self.origin[layer.weight_atom]
    ops = tuple(
      (
        self.steps[sj].prim,
        _value_key(self.steps[sj].params),
        pos,
        tuple(
          _value_key(b.value) if isinstance(b, _Const) else _Identity(b)
          for p, b in enumerate(self.steps[sj].ins)
          if p != pos
        ),
      )
      for sj, pos in o.ops
    )
    return (
      _aval_key(self.avals[layer.weight_atom]),
      layer.weight_shape,
      layer.in_axes,
      layer.out_axes,
      layer.batch_axes,
      o.bijective,
      ops,
    )

  def evaluate(
    self,
    params: Sequence[jax.Array],
    args: Sequence[jax.Array],
    hook: Callable[[LayerIO], LayerUpdate | None] | None = None,
    on_post: Callable[[Layer, jax.Array], None] | None = None,
  ) -> tuple[list[jax.Array], list[jax.Array]]:
    """Runs the model on flat ``params`` and ``args`` leaves; traceable.

    At each layer's output (in execution order) ``hook(io)`` may return a
    :class:`LayerUpdate`; new weight/bias entries are written into the
    parameters and seen by every later use, and the forward pass continues
    with the update's output. ``on_post(layer, value)`` is called with the
    activation that follows each layer.

    Returns:
      ``(outputs, params)``: the model's flat outputs and the final parameter
      leaves.
    """
    env: dict[int, Any] = dict(zip(self.arg_ids, args, strict=True))
    for k, pid in enumerate(self.param_ids):
      if pid not in self.origin:  # integer leaves: plain inputs
        env[pid] = params[k]
    run = _Runner(self, env, dict(enumerate(params)))
    posts: dict[int, list[Layer]] = {}
    if on_post is not None:
      for lay in self.layers:
        posts.setdefault(self.producer[lay.post], []).append(lay)
    run.steps(0, len(self.steps) - 1, hook, posts, on_post)
    outs = [run.read(a) for a in self.out_atoms]
    return outs, [run.leaves[k] for k in range(len(params))]

  # -- segments: the program cut at each layer's output ---------------------

  @functools.cached_property
  def producer(self) -> dict[int, int]:
    return {o: si for si, s in enumerate(self.steps) for o in s.outs}

  def _reads(self, si: int) -> tuple[set[int], set[int]]:
    """(environment ids, parameter leaves) that evaluating step ``si`` reads."""
    ids: set[int] = set()
    leaves: set[int] = set()

    def add(a):
      if isinstance(a, _Const):
        return
      o = self.origin.get(a)
      if o is None:
        ids.add(a)
        return
      leaves.add(o.leaf)
      for sj, pos in o.ops:
        for p, b in enumerate(self.steps[sj].ins):
          if p != pos:
            add(b)

    for a in self.steps[si].ins:
      add(a)
    lay = self._layer_at.get(si)
    if lay is not None:
      leaves.add(lay.leaf)
      if lay.bias is not None:
        leaves.add(lay.bias.leaf)
    return ids, leaves

  @functools.cached_property
  def _layer_at(self) -> dict[int, Layer]:
    return {lay.output_step: lay for lay in self.layers}

  def _lazy(self, si: int) -> bool:
    s = self.steps[si]
    return len(s.outs) == 1 and s.outs[0] in self.origin

  def segments(self) -> list[Segment]:
    """The steps up to each layer's output, as separately runnable pieces.

    Segment ``k`` runs the steps after segment ``k-1`` up to and including the
    output step of the ``k``-th layer (in output order); steps after the last
    layer are dropped. Each segment lists the values it needs from earlier
    ones (``live_in``), the values later segments need from it
    (``live_out``), the parameter leaves it reads, and a ``signature`` equal
    for segments that compute the same thing on different inputs (the
    repeated blocks of a deep network), so one compilation serves them all.
    """
    order = sorted(self.layers, key=lambda lay: lay.output_step)
    reads = {si: self._reads(si) for si in range(len(self.steps)) if not self._lazy(si)}
    last_use: dict[int, int] = {}
    for si, (ids, _) in reads.items():
      for i in ids:
        last_use[i] = max(last_use.get(i, -1), si)
    segs, lo = [], 0
    for lay in order:
      hi = lay.output_step
      span = [si for si in range(lo, hi + 1) if si in reads]
      produced = [o for si in span for o in self.steps[si].outs]
      made = set(produced)
      live_in = tuple(
        dict.fromkeys(i for si in span for i in sorted(reads[si][0]) if i not in made)
      )
      live_out = tuple(o for o in produced if last_use.get(o, -1) > hi)
      leaves = tuple(sorted({leaf for si in span for leaf in reads[si][1]}))
      sig = self._signature(span, lay, live_in, live_out, leaves)
      segs.append(Segment(lo, hi, lay, live_in, live_out, leaves, sig))
      lo = hi + 1
    return segs

  def run_segment(
    self,
    seg: Segment,
    live_in: Sequence[Any],
    leaves: Sequence[Any],
    hook: Callable[[LayerIO], LayerUpdate | None],
  ):
    """Evaluates one segment (traceable). Returns ``(live_out values, {position in
    seg.leaves: new value} for the leaves the hook rewrote)``."""
    run = _Runner(
      self, dict(zip(seg.live_in, live_in, strict=True)), dict(zip(seg.leaves, leaves, strict=True))
    )
    run.steps(seg.lo, seg.hi, hook)
    written = {p: run.leaves[leaf] for p, leaf in enumerate(seg.leaves) if run.version[leaf]}
    return [run.env[i] for i in seg.live_out], written

  def _signature(self, span, lay, live_in, live_out, leaves) -> tuple:
    """A value-based description of a segment's computation (see :meth:`segments`).

    Identity-based parts (a closed-over array, a sub-jaxpr of an opaque step)
    make it unique to this program: such segments are only reused within it.
    """
    local = {i: ("in", n, _aval_key(self.avals[i])) for n, i in enumerate(live_in)}
    leaf_pos = {leaf: n for n, leaf in enumerate(leaves)}

    def ref(a):
      if isinstance(a, _Const):
        return ("c", _value_key(a.value))
      o = self.origin.get(a)
      if o is None:
        return local[a][:2]
      ops = tuple(
        (
          self.steps[sj].prim,
          _value_key(self.steps[sj].params),
          pos,
          tuple(ref(b) for p, b in enumerate(self.steps[sj].ins) if p != pos),
        )
        for sj, pos in o.ops
      )
      return ("d", leaf_pos[o.leaf], o.index, ops)

    body = []
    for si in span:
      s = self.steps[si]
      body.append(
        (
          s.prim,
          _value_key(s.params),
          tuple(ref(a) for a in s.ins),
          tuple(_aval_key(self.avals[o]) for o in s.outs),
        )
      )
      for o in s.outs:
        local[o] = ("loc", len(local))
    bias = (
      None
      if lay.bias is None
      else (leaf_pos[lay.bias.leaf], lay.bias.index, lay.bias.act_pos, ref(lay.bias.atom))
    )
    layer = (
      leaf_pos[lay.leaf],
      lay.weight_index,
      ref(lay.weight_atom),
      lay.in_axes,
      lay.out_axes,
      lay.batch_axes,
      local[lay.output][:2],
      bias,
      lay.tied_to is None,
      lay.read_earlier,
      lay.read_later,
      lay.bias_shared,
      span[-1] == lay.step,
    )
    ins = tuple(local[i][2] for i in live_in)
    leaf_avals = tuple(_aval_key(self.avals[self.param_ids[leaf]]) for leaf in leaves)
    return (tuple(body), layer, ins, leaf_avals, tuple(local[o][:2] for o in live_out))


@dataclasses.dataclass(frozen=True, eq=False)
class Segment:
  """Steps ``lo..hi`` of a :class:`Program`, ending at ``layer``'s output."""

  lo: int
  hi: int
  layer: Layer
  live_in: tuple[int, ...]
  live_out: tuple[int, ...]
  leaves: tuple[int, ...]
  signature: tuple


class _Identity:
  """Stands for an object compared by identity inside a signature."""

  __slots__ = ("obj",)

  def __init__(self, obj):
    self.obj = obj

  def __eq__(self, other):
    return isinstance(other, _Identity) and other.obj is self.obj

  def __hash__(self):
    return id(self.obj)


def _aval_key(aval) -> tuple:
  return (tuple(aval.shape), str(aval.dtype), bool(getattr(aval, "weak_type", False)))


def _value_key(v):
  """A hashable, value-based key for a primitive parameter or constant."""
  if isinstance(v, dict):
    return tuple(sorted((k, _value_key(x)) for k, x in v.items()))
  if isinstance(v, (list, tuple)):
    return (type(v).__name__, *(_value_key(x) for x in v))
  if isinstance(v, (np.ndarray, np.generic)):
    if v.size <= 4096:
      return ("np", v.shape, str(v.dtype), v.tobytes())
    return _Identity(v)
  if isinstance(v, jax.Array):
    return _Identity(v)
  if isinstance(v, (bool, int, float, complex, str, bytes, type(None))):
    return (type(v).__name__, v)
  try:
    hash(v)
  except TypeError:
    return _Identity(v)
  if type(v).__hash__ is object.__hash__:  # compared by identity anyway
    return _Identity(v)
  return (type(v).__module__, type(v).__qualname__, v)


def signature_is_portable(sig) -> bool:
  """Whether a signature holds no identity-based parts (safe to cache across calls)."""
  if isinstance(sig, _Identity):
    return False
  if isinstance(sig, tuple):
    return all(signature_is_portable(x) for x in sig)
  return True


class _Runner:
  """Evaluates steps of a program against an environment and parameter leaves."""

  def __init__(self, prog: Program, env: dict, leaves: dict):
    self.prog = prog
    self.env = env
    self.leaves = leaves
    self.version = dict.fromkeys(leaves, 0)
    self.cache: dict[int, tuple[int, Any]] = {}

  def read(self, a):
    if isinstance(a, _Const):
      return a.value
    o = self.prog.origin.get(a)
    if o is None:
      return self.env[a]
    hit = self.cache.get(a)
    if hit is not None and hit[0] == self.version[o.leaf]:
      return hit[1]
    v = self.prog.eval_origin(o, apply_index(self.leaves[o.leaf], o.index), self.read)
    self.cache[a] = (self.version[o.leaf], v)
    return v

  def write(self, leaf: int, index: Index, value):
    self.leaves[leaf] = set_index(self.leaves[leaf], index, value)
    self.version[leaf] += 1

  def run(self, si: int):
    s = self.prog.steps[si]
    self.env.update(zip(s.outs, s.fn(*[self.read(a) for a in s.ins]), strict=True))

  def steps(self, lo: int, hi: int, hook=None, posts=None, on_post=None):
    prog = self.prog
    for si in range(lo, hi + 1):
      if prog._lazy(si):
        continue  # parameter layout ops are evaluated lazily, from the current leaves
      lay = prog._layer_at.get(si)
      if lay is None or hook is None:
        self.run(si)
      else:
        self.at_layer(lay, si, hook)
      for lay in (posts or {}).get(si, ()):
        on_post(lay, self.env[lay.post])

  def at_layer(self, lay: Layer, si: int, hook):
    prog, s = self.prog, self.prog.steps[si]
    if lay.bias is None:
      pre = s.fn(*[self.read(a) for a in s.ins])[0]
      bias_term = bias = bias_fn = None
    else:
      pre = self.read(s.ins[lay.bias.act_pos])
      bias_term = self.read(lay.bias.atom)
      bo = prog.origin[lay.bias.atom]
      bias = apply_index(self.leaves[bo.leaf], bo.index)
      bias_fn = lambda b: prog.eval_origin(bo, b, self.read)
    weight = apply_index(self.leaves[lay.leaf], lay.weight_index)
    upd = hook(LayerIO(lay, pre, bias_term, weight, bias, bias_fn))
    if upd is None:
      if lay.bias is None:
        self.env[s.outs[0]] = pre
      else:
        self.run(si)
      return
    if upd.weight is not None:
      self.write(lay.leaf, lay.weight_index, upd.weight)
    if upd.bias is not None and lay.bias is not None:
      self.write(lay.bias.leaf, lay.bias.index, upd.bias)
    if upd.output is not None:
      self.env[lay.output] = upd.output.astype(prog.avals[lay.output].dtype)
      return
    # Recompute the layer from its (new) parameters: dot/conv, layout ops, bias add.
    for ci in (lay.step, *lay.chain):
      self.run(ci)


def _no_read(a):
  if isinstance(a, _Const):
    return a.value
  raise AssertionError("weight layout op with a non-constant operand")


def _weight_axes(step: Step, wpos: int, ndim: int) -> tuple[tuple[int, ...], ...]:
  """(input, output, batch) axes of a layer's weight operand."""
  if step.prim == "dot_general":
    (lc, rc), (lb, rb) = step.params["dimension_numbers"]
    contract, batch = (lc, lb) if wpos == 0 else (rc, rb)
    contract, batch = tuple(int(a) for a in contract), tuple(int(a) for a in batch)
    free = tuple(a for a in range(ndim) if a not in contract and a not in batch)
    return contract, free, batch
  dn = step.params["dimension_numbers"]
  rhs = dn.rhs_spec  # (out feature, in feature, *spatial)
  return (int(rhs[1]), *(int(a) for a in rhs[2:])), (int(rhs[0]),), ()


def trace(
  fn: str,
  f: Callable[..., Any],
  params: Any,
  args: Sequence[Any],
  leaf_paths: Sequence[str] | None = None,
) -> Program:
  """Traces ``f(params, *args)`` once and returns its :class:`Program`.

  Args:
    fn: the public function name used in error messages (``'lsuv'``).
    f: the model as a pure function of the parameters and the inputs.
    params: the parameter pytree (arrays or ``jax.ShapeDtypeStruct``).
    args: the other arguments (the batch, collections that are not scaled).
    leaf_paths: display path of each parameter leaf; default: the '/'-joined
      pytree path.

  Returns:
    The program; ``program.layers`` lists the layers in execution order.
  """
  p_leaves, p_def = jax.tree_util.tree_flatten(params)
  a_leaves, a_def = jax.tree_util.tree_flatten(tuple(args))
  if leaf_paths is None:
    leaf_paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]

  def flat_f(pl, al):
    return f(jax.tree_util.tree_unflatten(p_def, pl), *jax.tree_util.tree_unflatten(a_def, al))

  spec = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
  closed = jax.make_jaxpr(flat_f)([spec(x) for x in p_leaves], [spec(x) for x in a_leaves])
  shapes = [tuple(jnp.shape(x)) for x in p_leaves]
  flat = _Flattener(leaf_paths, shapes, fn)
  pids = []
  for k, v in enumerate(closed.jaxpr.invars[: len(p_leaves)]):
    i = flat.new_id(v.aval)
    flat.pdep.add(i)
    if _is_float(v.aval.dtype):
      flat.origin[i] = Origin(k, full_index(v.aval.shape))
    pids.append(i)
  aids = []
  for v in closed.jaxpr.invars[len(p_leaves) :]:
    i = flat.new_id(v.aval)
    flat.data.add(i)
    aids.append(i)
  outs = flat.walk(closed.jaxpr, closed.consts, [*pids, *aids])
  return Program(flat, pids, aids, outs, (p_def, a_def))
