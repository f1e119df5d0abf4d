"""A traced model as a :class:`Program`: its flattened steps, its layers, and lookups.

:func:`trace` traces ``f(params, *args)`` once with ``jax.make_jaxpr``, flattens
it (:mod:`.flatten`) and finds its layers (:mod:`.discover`). The program
answers the questions every later stage asks: which step produces a value,
which layer ends at a step, which steps are parameter layout operations
(evaluated lazily from the current leaves), what a step reads, and how a
layer's weight operand is computed from its parameter entries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxinit._src.jaxpr.discover import find_layers
from jaxinit._src.jaxpr.flatten import Flattener, is_float
from jaxinit._src.jaxpr.index import full_index
from jaxinit._src.jaxpr.records import Const, Layer, Origin
from jaxinit._src.paths import path_str


class Program:
  """A model flattened to straight-line steps, with its layers in execution order.

  Build one with :func:`trace`. ``layers`` lists the layers;
  :func:`jaxinit._src.jaxpr.run.evaluate` runs the model (traceable; costs one
  forward pass under jit) and can observe or rewrite each layer as the forward
  pass reaches it, and :func:`jaxinit._src.jaxpr.segments.segments` cuts it at
  each layer's output.
  """

  def __init__(self, flat: Flattener, param_ids, arg_ids, out_atoms, treedefs):
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
    self.layers: tuple[Layer, ...] = find_layers(flat, out_atoms)

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

  @functools.cached_property
  def producer(self) -> dict[int, int]:
    """The step that computes each value id."""
    return {o: si for si, s in enumerate(self.steps) for o in s.outs}

  def reads(self, si: int) -> tuple[set[int], set[int]]:
    """(environment ids, parameter leaves) that evaluating step ``si`` reads."""
    ids: set[int] = set()
    leaves: set[int] = set()

    def add(a):
      if isinstance(a, Const):
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
    lay = self.layer_at.get(si)
    if lay is not None:
      leaves.add(lay.leaf)
      if lay.bias is not None:
        leaves.add(lay.bias.leaf)
    return ids, leaves

  @functools.cached_property
  def layer_at(self) -> dict[int, Layer]:
    """The layer whose output (bias included) step ``si`` computes, by ``si``."""
    return {lay.output_step: lay for lay in self.layers}

  def is_lazy(self, si: int) -> bool:
    """Whether step ``si`` is a layout op of a parameter (evaluated from the current leaves)."""
    s = self.steps[si]
    return len(s.outs) == 1 and s.outs[0] in self.origin


def _no_read(a):
  if isinstance(a, Const):
    return a.value
  raise AssertionError("weight layout op with a non-constant operand")


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
  flat = Flattener(leaf_paths, shapes, fn)
  pids = []
  for k, v in enumerate(closed.jaxpr.invars[: len(p_leaves)]):
    i = flat.new_id(v.aval)
    flat.pdep.add(i)
    if is_float(v.aval.dtype):
      flat.origin[i] = Origin(k, full_index(v.aval.shape))
    pids.append(i)
  aids = []
  for v in closed.jaxpr.invars[len(p_leaves) :]:
    i = flat.new_id(v.aval)
    flat.data.add(i)
    aids.append(i)
  outs = flat.walk(closed.jaxpr, closed.consts, [*pids, *aids])
  return Program(flat, pids, aids, outs, (p_def, a_def))
