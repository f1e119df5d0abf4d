"""Running a program: an interpreter over its steps that can rewrite each layer on the way.

:func:`evaluate` runs the whole model; :func:`run_segment` runs one segment
(:mod:`.segments`). Both are traceable: under ``jax.jit`` the Python loop is
unrolled at trace time and costs one forward pass. At each layer's output a
hook sees the layer's output, weight and bias (:class:`~.records.LayerIO`) and
may return new weight and bias entries and the output the forward pass
continues with (:class:`~.records.LayerUpdate`); parameter layout operations
are evaluated lazily from the current leaves, so every later use of a weight
sees the rewritten entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxinit._src.jaxpr.index import Index, apply_index, set_index
from jaxinit._src.jaxpr.program import Program
from jaxinit._src.jaxpr.records import Const, Layer, LayerIO, LayerUpdate
from jaxinit._src.jaxpr.segments import Segment


class _Runner:
  """Evaluates steps of a program against an environment and parameter leaves."""

  def __init__(self, prog: Program, env: dict, leaves: dict):
    self.prog = prog
    self.env = env
    self.leaves = leaves
    self.version = dict.fromkeys(leaves, 0)
    self.cache: dict[int, tuple[int, Any]] = {}

  def read(self, a):
    if isinstance(a, Const):
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
      if prog.is_lazy(si):
        continue  # parameter layout ops are evaluated lazily, from the current leaves
      lay = prog.layer_at.get(si)
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


def evaluate(
  prog: Program,
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
  env: dict[int, Any] = dict(zip(prog.arg_ids, args, strict=True))
  for k, pid in enumerate(prog.param_ids):
    if pid not in prog.origin:  # integer leaves: plain inputs
      env[pid] = params[k]
  run = _Runner(prog, env, dict(enumerate(params)))
  posts: dict[int, list[Layer]] = {}
  if on_post is not None:
    for lay in prog.layers:
      posts.setdefault(prog.producer[lay.post], []).append(lay)
  run.steps(0, len(prog.steps) - 1, hook, posts, on_post)
  outs = [run.read(a) for a in prog.out_atoms]
  return outs, [run.leaves[k] for k in range(len(params))]


# -- segments: the program cut at each layer's output ---------------------
def run_segment(
  prog: Program,
  seg: Segment,
  live_in: Sequence[Any],
  leaves: Sequence[Any],
  hook: Callable[[LayerIO], LayerUpdate | None],
):
  """Evaluates one segment (traceable). Returns ``(live_out values, {position in
  seg.leaves: new value} for the leaves the hook rewrote)``."""
  run = _Runner(
    prog, dict(zip(seg.live_in, live_in, strict=True)), dict(zip(seg.leaves, leaves, strict=True))
  )
  run.steps(seg.lo, seg.hi, hook)
  written = {p: run.leaves[leaf] for p, leaf in enumerate(seg.leaves) if run.version[leaf]}
  return [run.env[i] for i in seg.live_out], written
