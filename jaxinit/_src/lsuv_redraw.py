"""LSUV's first step: every selected weight redrawn orthonormal (Haar), in few kernels.

All matrices come from one Gaussian draw and one batched QR per distinct
matrix shape (:func:`redraw_draw`); each layer then takes its slice
(:func:`redraw_place`). :func:`redraw` does both in one trace; the eager path
compiles the draw once and the placement once per distinct layer.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinit._src.jaxpr.index import apply_index, set_index
from jaxinit._src.jaxpr.program import Program
from jaxinit._src.jaxpr.records import Layer
from jaxinit._src.orthogonal import haar_from_gaussian, stored_gaussian


@dataclasses.dataclass(frozen=True)
class RedrawPlan:
  """How the redraw lays out its matrices; depends on shapes only.

  ``specs[i]``: ``(nb, rows, cols)`` of layer ``i``'s matrices, or None (weight kept).
  ``groups``: per distinct matrix shape ``(m, n)`` (``m >= n``), the layers drawn in
  one batched QR, in layer order. ``where[i]``: ``(group, start)`` of layer ``i``'s
  matrices in its group's stack.
  """

  specs: tuple
  groups: tuple
  where: tuple
  real: np.dtype


def redraw_plan(prog: Program, lays: Sequence[Layer], regions: Sequence[Any]) -> RedrawPlan:
  specs: list[tuple | None] = []  # per layer: (nb, rows, cols) of its matrices, or None (kept)
  for lay, region in zip(lays, regions, strict=True):
    if prog.weight_bijective(lay):
      shape = prog.avals[lay.weight_atom].shape
      specs.append(
        tuple(
          math.prod(shape[a] for a in axes) for axes in (lay.batch_axes, lay.in_axes, lay.out_axes)
        )
      )
    elif len(region.shape) >= 2:
      specs.append((1, math.prod(region.shape[:-1]), region.shape[-1]))
    else:
      specs.append(None)
  wide = any(np.dtype(r.dtype).itemsize >= 8 for r in regions) and jax.config.read("jax_enable_x64")
  members: dict = collections.defaultdict(list)  # one batched QR per matrix shape
  for i, sp in enumerate(specs):
    if sp is not None:
      members[(max(sp[1:]), min(sp[1:]))].append(i)
  where: list = [None] * len(specs)
  for g, idx in enumerate(members.values()):
    start = 0
    for i in idx:
      where[i] = (g, start)
      start += specs[i][0]
  return RedrawPlan(
    tuple(specs),
    tuple((shape, tuple(idx)) for shape, idx in members.items()),
    tuple(where),
    np.dtype(np.float64 if wide else np.float32),
  )


def redraw_draw(plan: RedrawPlan, key) -> list[jax.Array]:
  """Per group, the stacked Haar ``(k, m, n)`` matrices of its layers (see :func:`redraw`).

  One flat Gaussian draw from ``key``, cut into one ``(k, m, n)`` block per group
  (groups in order of their first layer, layers in order within a group), then
  one batched QR per group (Q times the phase of diag R: exactly Haar).
  """
  sizes = [sum(plan.specs[i][0] for i in idx) * m * n for (m, n), idx in plan.groups]
  if not sizes:
    return []
  # stored once (drawn in a loop): otherwise XLA fuses the Gaussian transform into each
  # group's QR input and compiles one copy of it per group
  z = stored_gaussian(key, sum(sizes), plan.real, False)
  out, offset = [], 0
  for ((m, n), _), size in zip(plan.groups, sizes, strict=True):
    out.append(haar_from_gaussian(z[offset : offset + size].reshape(-1, m, n)))
    offset += size
  return out


def redraw_place(
  prog: Program,
  lay: Layer,
  sp: tuple,
  stack: jax.Array,
  start,
  leaf: jax.Array,
) -> jax.Array:
  """``leaf`` with the layer's weight entries replaced by its matrices, which are
  ``stack[start:start + nb]`` (``start`` may be traced: identical layers share code)."""
  nb, r, c = sp
  q = lax.dynamic_slice_in_dim(stack, start, nb)
  if r < c:
    q = jnp.swapaxes(q, -1, -2)  # wide: orthonormal rows
  region = apply_index(leaf, lay.weight_index)
  if prog.weight_bijective(lay):
    op = prog.avals[lay.weight_atom]
    perm = (*lay.batch_axes, *lay.in_axes, *lay.out_axes)
    q = jnp.transpose(
      q.reshape([op.shape[a] for a in perm]), tuple(int(i) for i in np.argsort(perm))
    )
    value = jax.linear_transpose(prog.weight_fn(lay), region)(q.astype(op.dtype))[0]
  else:
    value = q.reshape(region.shape).astype(region.dtype)
  return set_index(leaf, lay.weight_index, value)


def redraw(prog: Program, selected: Sequence[bool], key, leaves: list) -> list:
  """``leaves`` with every selected layer's weight redrawn orthonormal (the paper's step 1).

  A weight is viewed as the (fan_in x fan_out) matrix of the map it applies
  (for each index of its batch axes, e.g. per attention head when heads are a
  dot_general batch axis) and that matrix is drawn Haar-orthonormal: orthonormal
  columns when fan_in >= fan_out, rows otherwise. Grouped and depthwise
  convolutions are treated as one (k*k*C_in/groups x C_out) matrix, whose rows
  are orthonormal when C_out > k*k*C_in/groups. The layout back to the
  parameter (a transpose, a reshape) is undone with ``jax.linear_transpose`` of
  the parameter-to-operand map. Where that map is not a permutation (a
  broadcast, a scalar multiply) the parameter itself is drawn orthogonal with
  its last axis as columns; a 1-D weight is kept.

  All matrices come from one Gaussian draw and one batched QR per distinct
  matrix shape (:func:`redraw_draw`); each layer then takes its slice
  (:func:`redraw_place`). On the CPU, compiling a random-number generator and a
  QR costs far more than running them for a layer, so the eager path compiles
  the draw once and the placement once per distinct layer.
  """
  lays, rplan = redraw_layers(prog, selected, leaves)
  stacks = redraw_draw(rplan, key)
  new = list(leaves)
  for i, lay in enumerate(lays):
    if rplan.specs[i] is not None:
      g, start = rplan.where[i]
      new[lay.leaf] = redraw_place(prog, lay, rplan.specs[i], stacks[g], start, new[lay.leaf])
  return new


def redraw_layers(
  prog: Program, selected: Sequence[bool], leaves: Sequence[Any]
) -> tuple[list[Layer], RedrawPlan]:
  """The selected layers and the plan of their redraw (``leaves`` give the dtypes)."""
  lays = [lay for lay in prog.layers if selected[lay.index]]
  regions = [
    jax.ShapeDtypeStruct(
      tuple(e[1] - e[0] for e in lay.weight_index if not isinstance(e, int)), leaves[lay.leaf].dtype
    )
    for lay in lays
  ]  # what apply_index returns
  return lays, redraw_plan(prog, lays, regions)
