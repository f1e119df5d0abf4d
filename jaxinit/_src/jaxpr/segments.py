"""The program cut at each layer's output into separately runnable segments, with signatures.

LSUV's eager path compiles one piece per layer: the steps since the previous
layer's output up to this layer's output, plus the normalization. A deep
network repeats the same block, so :func:`segments` gives each segment a
``signature`` — a value-based description of what it computes (its steps,
their parameters and constants, the avals of its inputs, how it reads its
parameter leaves) that is equal for segments computing the same thing on
different inputs — and identical segments share one compilation.
:func:`weight_key` describes the same way how one layer reads its weight.
"""

from __future__ import annotations

import dataclasses

from jaxinit._src.jaxpr.keys import Identity, aval_key, value_key
from jaxinit._src.jaxpr.program import Program
from jaxinit._src.jaxpr.records import Const, Layer


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


def weight_key(prog: Program, layer: Layer) -> tuple:
  """A value-based description of how a layer reads its weight (see :func:`segments`)."""
  o = prog.origin[layer.weight_atom]
  ops = tuple(
    (
      prog.steps[sj].prim,
      value_key(prog.steps[sj].params),
      pos,
      tuple(
        value_key(b.value) if isinstance(b, Const) else Identity(b)
        for p, b in enumerate(prog.steps[sj].ins)
        if p != pos
      ),
    )
    for sj, pos in o.ops
  )
  return (
    aval_key(prog.avals[layer.weight_atom]),
    layer.weight_shape,
    layer.in_axes,
    layer.out_axes,
    layer.batch_axes,
    o.bijective,
    ops,
  )


def segments(prog: Program) -> list[Segment]:
  """The steps up to each layer's output, as separately runnable pieces.

  Segment ``k`` runs the steps after segment ``k-1`` up to and including the
  output step of the ``k``-th layer (in output order); steps after the last
  layer are dropped. Each segment lists the values it needs from earlier
  ones (``live_in``), the values later segments need from it
  (``live_out``), the parameter leaves it reads, and a ``signature`` equal
  for segments that compute the same thing on different inputs (the
  repeated blocks of a deep network), so one compilation serves them all.
  """
  order = sorted(prog.layers, key=lambda lay: lay.output_step)
  reads = {si: prog.reads(si) for si in range(len(prog.steps)) if not prog.is_lazy(si)}
  last_use: dict[int, int] = {}
  for si, (ids, _) in reads.items():
    for i in ids:
      last_use[i] = max(last_use.get(i, -1), si)
  segs, lo = [], 0
  for lay in order:
    hi = lay.output_step
    span = [si for si in range(lo, hi + 1) if si in reads]
    produced = [o for si in span for o in prog.steps[si].outs]
    made = set(produced)
    live_in = tuple(dict.fromkeys(i for si in span for i in sorted(reads[si][0]) if i not in made))
    live_out = tuple(o for o in produced if last_use.get(o, -1) > hi)
    leaves = tuple(sorted({leaf for si in span for leaf in reads[si][1]}))
    sig = _signature(prog, span, lay, live_in, live_out, leaves)
    segs.append(Segment(lo, hi, lay, live_in, live_out, leaves, sig))
    lo = hi + 1
  return segs


def _signature(prog: Program, span, lay, live_in, live_out, leaves) -> tuple:
  """A value-based description of a segment's computation (see :func:`segments`).

  Identity-based parts (a closed-over array, a sub-jaxpr of an opaque step)
  make it unique to this program: such segments are only reused within it.
  """
  local: dict[int, tuple] = {i: ("in", n, aval_key(prog.avals[i])) for n, i in enumerate(live_in)}
  leaf_pos = {leaf: n for n, leaf in enumerate(leaves)}

  def ref(a):
    if isinstance(a, Const):
      return ("c", value_key(a.value))
    o = prog.origin.get(a)
    if o is None:
      return local[a][:2]
    ops = tuple(
      (
        prog.steps[sj].prim,
        value_key(prog.steps[sj].params),
        pos,
        tuple(ref(b) for p, b in enumerate(prog.steps[sj].ins) if p != pos),
      )
      for sj, pos in o.ops
    )
    return ("d", leaf_pos[o.leaf], o.index, ops)

  body = []
  for si in span:
    s = prog.steps[si]
    body.append(
      (
        s.prim,
        value_key(s.params),
        tuple(ref(a) for a in s.ins),
        tuple(aval_key(prog.avals[o]) for o in s.outs),
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
  leaf_avals = tuple(aval_key(prog.avals[prog.param_ids[leaf]]) for leaf in leaves)
  return (tuple(body), layer, ins, leaf_avals, tuple(local[o][:2] for o in live_out))
