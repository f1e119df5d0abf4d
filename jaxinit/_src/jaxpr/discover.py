"""Finding the layers of a flattened program: weight, bias, activation, ties.

A candidate step of the :class:`~.flatten.Flattener` (a ``dot_general`` or
``conv`` reading a parameter through layout operations and the batch) becomes a
:class:`~.records.Layer`: its fans from the weight operand's axes, its output
followed through layout operations to a bias add of a parameter with one entry
per output feature (what a Flax or PyTorch layer returns), the end of the
elementwise chain after it (the activation, ``Layer.post``), and whether its
weight entries are shared with an earlier layer (``tied_to``), read earlier by
something that is not a layer (``read_earlier``) or read again later
(``read_later``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

from jaxinit._src.jaxpr.flatten import Flattener
from jaxinit._src.jaxpr.index import Index, index_shape, index_suffix, overlaps
from jaxinit._src.jaxpr.records import Bias, Const, Layer, Step

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


def find_layers(flat: Flattener, out_atoms: Sequence[Any]) -> tuple[Layer, ...]:
  """The layers among ``flat``'s candidates, in execution order; ``out_atoms`` are the
  program's outputs (a value that is an output ends an activation chain)."""
  steps = flat.steps
  consumers: dict[int, list[tuple[int, int]]] = {}
  for si, s in enumerate(steps):
    for p, a in enumerate(s.ins):
      if not isinstance(a, Const):
        consumers.setdefault(a, []).append((si, p))
  outputs = {a for a in out_atoms if not isinstance(a, Const)}
  weight_reads = set(flat.candidates)
  reads = [
    (si, flat.origin[a])
    for si, s in enumerate(steps)
    if not (len(s.outs) == 1 and s.outs[0] in flat.origin)
    for p, a in enumerate(s.ins)
    if not isinstance(a, Const) and a in flat.origin and (si, p) not in weight_reads
  ]
  all_reads = reads + [(ci, flat.origin[steps[ci].ins[p]]) for ci, p in flat.candidates]
  layers: list[Layer] = []
  for si, wpos in flat.candidates:
    s = steps[si]
    w_atom = s.ins[wpos]
    o = flat.origin[w_atom]
    w_aval = flat.avals[w_atom]
    in_axes, out_axes, batch_axes = _weight_axes(s, wpos, len(w_aval.shape))
    fan_in = math.prod(w_aval.shape[a] for a in in_axes)
    fan_out = math.prod(w_aval.shape[a] for a in out_axes)
    bias, output, output_step, chain = _bias(flat, si, o.leaf, fan_out, consumers, outputs)
    tied = next(
      (lay.index for lay in layers if lay.leaf == o.leaf and overlaps(lay.weight_index, o.index)),
      None,
    )
    earlier = any(ri < si and ro.leaf == o.leaf and overlaps(ro.index, o.index) for ri, ro in reads)
    later = any(
      ri > si and ro.leaf == o.leaf and overlaps(ro.index, o.index) for ri, ro in all_reads
    )
    shared = bias is not None and any(
      lay.bias is not None and lay.bias.leaf == bias.leaf and overlaps(lay.bias.index, bias.index)
      for lay in layers
    )
    layers.append(
      Layer(
        index=len(layers),
        path=_path(flat, o.leaf, o.index),
        kind="dot" if s.prim == "dot_general" else "conv",
        weight_shape=index_shape(o.index),
        fan_in=int(fan_in),
        fan_out=int(fan_out),
        output_shape=tuple(flat.avals[output].shape),
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
        post=_post(flat, output, output_step, consumers, outputs),
        bias=bias,
        bias_shared=shared,
      )
    )
  return tuple(layers)


def _path(flat: Flattener, leaf: int, index: Index) -> str:
  return flat.leaf_paths[leaf] + index_suffix(index, flat.leaf_shapes[leaf])


def _bias(flat: Flattener, si, w_leaf, fan_out, consumers, outputs):
  """Follows a dot/conv output through layout ops to a bias add, if any."""
  y = flat.steps[si].outs[0]
  chain: list[int] = []
  while y not in outputs and len(consumers.get(y, ())) == 1:
    ci, pos = consumers[y][0]
    c = flat.steps[ci]
    if c.prim in _OUT_LAYOUT and len(c.ins) == 1:
      y = c.outs[0]
      chain.append(ci)
      continue
    if c.prim in ("add", "add_any") and len(c.ins) == 2:
      other = c.ins[1 - pos]
      o = None if isinstance(other, Const) else flat.origin.get(other)
      if (
        o is not None
        and o.leaf != w_leaf
        and math.prod(index_shape(o.index)) == fan_out
        and tuple(flat.avals[c.outs[0]].shape) == tuple(flat.avals[y].shape)
      ):
        bias = Bias(_path(flat, o.leaf, o.index), o.leaf, o.index, other, ci, pos)
        return bias, c.outs[0], ci, (*chain, ci)
    break
  return None, flat.steps[si].outs[0], si, ()


def _post(flat: Flattener, output: int, output_step: int, consumers, outputs) -> int:
  """The end of the elementwise chain (activation) that follows a layer's output."""
  shape = tuple(flat.avals[output].shape)
  members = {output}
  heap = sorted({ci for ci, _ in consumers.get(output, ())})
  seen = set(heap)
  joined: list[int] = []
  member_steps = {output_step}
  while heap:
    ci = heapq.heappop(heap)
    c = flat.steps[ci]
    if (
      c.prim in _ELEMENTWISE
      and len(c.outs) == 1
      and tuple(flat.avals[c.outs[0]].shape) == shape
      and all((a in members) for a in c.ins if not isinstance(a, Const) and a in flat.data)
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
