"""What LSUV does to one traced model with given options: which layers, the hook, the end.

A :class:`Plan` is shared by the single-graph path (under the caller's jit) and
the segmented eager path (:mod:`jaxinit._src.lsuv`), so both compute the same
thing. It checks the model against the options (layers found, selections that
match, a target variance the layers' dtypes can hold), decides which layers are
scaled and centered, normalizes a layer when the forward pass reaches it
(:meth:`Plan.hook`, recording a :class:`~.lsuv_report.LayerRecord`), and scales
the weights and builds the report at the end (:meth:`Plan.finish`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinit._src.checks import fail
from jaxinit._src.jaxpr.index import apply_index, set_index
from jaxinit._src.jaxpr.program import Program
from jaxinit._src.jaxpr.records import Layer, LayerIO, LayerUpdate
from jaxinit._src.lsuv_inputs import Options, describe, matches
from jaxinit._src.lsuv_report import FN, LayerRecord, LSUVReport, build_report
from jaxinit._src.lsuv_solve import (
  add,
  broadcast_to,
  compute_dtype,
  const,
  iterate,
  moments,
  mul,
  output_norm,
  raw_moments,
  runnable,
  solve,
)

# The largest finite value divided by this is the largest variance LSUV aims at (and the
# smallest normal value times it the smallest): the variance, its sums and the entries a
# few standard deviations out must all stay finite and normal.
_HEADROOM = 256.0


def target_limits(out_dtype: Any, cdt: Any) -> tuple[float, float]:
  """The variances a layer with outputs in ``out_dtype``, measured in ``cdt``, can reach:
  the variance itself in ``cdt``, and entries of its standard deviation in ``out_dtype``."""
  fo, fc = jnp.finfo(out_dtype), jnp.finfo(cdt)
  hi = min(float(fc.max), float(fo.max) * float(fo.max)) / _HEADROOM
  lo = max(float(fc.tiny), float(fo.tiny) * float(fo.tiny)) * _HEADROOM
  return lo, hi


def _check_target(prog: Program, selected: Sequence[bool], target_var: float) -> None:
  """A target variance that the selected layers' dtypes cannot hold is refused."""
  for lay in prog.layers:
    if not selected[lay.index]:
      continue
    out = np.dtype(prog.avals[lay.output].dtype)
    cdt = compute_dtype(prog.avals[prog.steps[lay.step].outs[0]].dtype)
    lo, hi = target_limits(out, cdt)
    if lo <= target_var <= hi:
      continue
    side = f"at most {hi:.4g}" if target_var > hi else f"at least {lo:.4g}"
    limit = "largest finite" if target_var > hi else "smallest normal"
    lim = (lambda d: jnp.finfo(d).max) if target_var > hi else (lambda d: jnp.finfo(d).tiny)
    dtypes = f"{out.name}" if out == cdt else f"{out.name} (measured in {cdt.name})"
    limits = ", ".join(f"{d.name} {float(lim(d)):.4g}" for d in dict.fromkeys((out, cdt)))
    raise fail(
      FN,
      f"`target_var`={target_var!r} cannot be reached in {out.name}: layer #{lay.index} "
      f"({lay.path}) outputs {dtypes}, so `target_var` must be {side} (the {limit} "
      f"values: {limits}; a variance and its sums need a margin of {_HEADROOM:g}x).",
    )


class Plan:
  """LSUV's decisions for one traced model: ``hook`` normalizes a layer; ``finish`` makes
  the parameters and the report."""

  def __init__(self, prog: Program, opts: Options):
    self.prog, self.opts = prog, opts
    if not prog.layers:
      raise fail(
        FN,
        "found no linear layers in the model: no dot_general or convolution reads "
        "a parameter (through reshapes, transposes and casts only) and the batch. Is "
        "`params` the model's parameters, and does the model use them?",
      )
    for lay in prog.layers:
      if math.prod(lay.output_shape) < 2:
        raise fail(
          FN,
          f"layer #{lay.index} ({lay.path}) has an output of shape "
          f"{lay.output_shape}: a variance needs at least 2 values; use a larger "
          "batch.",
        )
    for arg in ("layers", "exclude"):  # a selection that matches nothing is a typo
      sel = getattr(opts, arg)
      if sel is not None and not any(matches(sel, lay.path) for lay in prog.layers):
        raise fail(
          FN,
          f"`{arg}`={describe(sel)} matches no layer; the layers' weight paths "
          f"are: {', '.join(lay.path for lay in prog.layers)}.",
        )
    self.selected = tuple(
      lay.tied_to is None and not lay.read_earlier and opts.selected(lay) for lay in prog.layers
    )
    self.centered = tuple(
      self.selected[lay.index] and opts.center and lay.bias is not None and not lay.bias_shared
      for lay in prog.layers
    )
    _check_target(prog, self.selected, opts.target_var)

  def static_key(self) -> tuple:
    return (self.opts.numeric(), self.selected, self.centered)

  def hook(self, records: dict):
    """The per-layer normalization; records the layer's :class:`LayerRecord` in ``records``."""
    return lambda io: self._normalize(io, records)

  def _normalize(self, io: LayerIO, records: dict) -> LayerUpdate | None:
    opts, lay = self.opts, io.layer
    cdt = compute_dtype(io.pre.dtype)
    pre = lax.convert_element_type(io.pre, cdt)
    b = (
      None
      if io.bias_term is None
      else broadcast_to(lax.convert_element_type(io.bias_term, cdt), pre.shape)
    )
    norm = output_norm(pre, b)
    raw = raw_moments(pre, b, norm)
    m, v0, c, vb = moments(pre.size, raw, norm)
    nan = lax.full((), np.nan, cdt)
    if not self.selected[lay.index]:
      one = lax.full((), 1, cdt)
      records[lay.index] = _record(raw, norm, nan, one, jnp.int32(-1))
      return None
    # the moments are those of norm * output: so are the target, tol and min_var
    norm2 = mul(norm, norm)
    t, tol = mul(const(opts.target_var, norm), norm2), mul(const(opts.tol, norm), norm2)
    zero = lax.full((), 0, cdt)
    if self.centered[lay.index]:
      # Per bias entry, the mean of the output over the entries it is added to: the
      # transpose of the bias broadcast sums them, the transpose of ones counts them.
      assert io.bias is not None and io.bias_fn is not None and b is not None
      bias, bias_fn = io.bias, io.bias_fn
      bias_c = bias.astype(cdt)
      h = lambda r: jnp.broadcast_to(bias_fn(r.astype(bias.dtype)).astype(cdt), pre.shape)
      ht = jax.linear_transpose(h, bias_c)
      count = ht(jnp.ones(pre.shape, cdt))[0]
      entry_mean = lambda y: ht(y)[0] / count
      pre_mean = entry_mean(pre)
      veff = moments(pre.size, raw_moments(pre - h(pre_mean), None, norm), norm)[1]
      a, c_eff, vb_eff = veff, zero, zero
    else:
      veff, a, c_eff, vb_eff = nan, v0, c, vb
    run = lambda: runnable(m, v0, c, vb, a, mul(const(opts.min_var, norm), norm2))
    if opts.exact:
      s, iters = solve(a, c_eff, vb_eff, run(), t, tol)
    else:
      s, iters = iterate(a, c_eff, vb_eff, run, t, tol, opts.max_iters)
    # Only a weight that is read again later (tied) is rewritten during the pass; the
    # others are scaled once at the end, from the scales recorded here.
    weight = (io.weight.astype(cdt) * s).astype(io.weight.dtype) if lay.read_later else None
    new_bias = None
    if self.centered[lay.index]:
      shift = jnp.where(run(), s * pre_mean + entry_mean(b), zero)
      new_bias = (bias_c - shift).astype(bias.dtype)
      out = s * pre + h(new_bias.astype(cdt))
    elif b is not None:
      out = add(mul(pre, lax.broadcast(s, pre.shape)), b)
    else:
      out = mul(pre, lax.broadcast(s, pre.shape))
    records[lay.index] = _record(raw, norm, veff, s, iters)
    return LayerUpdate(
      weight=weight, bias=new_bias, output=lax.convert_element_type(out, io.pre.dtype)
    )

  def scale_weight(self, lay: Layer, leaf, s):
    """The leaf with the layer's weight entries multiplied by ``s``."""
    w = apply_index(leaf, lay.weight_index)
    new = (w.astype(s.dtype) * s).astype(w.dtype)
    return set_index(leaf, lay.weight_index, new)

  def report(self, records: dict, batch_finite, xp: Any = jnp) -> tuple[LSUVReport, Any]:
    """The report and whether no NaN/inf was met (see :func:`~.lsuv_report.build_report`)."""
    layers = self.prog.layers
    return build_report(
      layers,
      [records[i] for i in range(len(layers))],
      self.selected,
      self.centered,
      self.opts.settings(),
      batch_finite,
      xp,
    )

  def finish(self, records: dict, new_leaves: list, leaves: list, arg_leaves: list):
    """Scales the weights, keeps the caller's parameters on NaN/inf, builds the report."""
    report, ok = self.report(records, all_finite(arg_leaves))
    new_leaves = list(new_leaves)
    for lay in self.prog.layers:
      if self.selected[lay.index] and not lay.read_later:
        s = records[lay.index].scale
        new_leaves[lay.leaf] = self.scale_weight(lay, new_leaves[lay.leaf], s)
    new_leaves = [jnp.where(ok, new, old) for new, old in zip(new_leaves, leaves, strict=True)]
    return new_leaves, report


def _record(raw: Sequence[Any], norm, var_eff, scale, iters) -> LayerRecord:
  s1, s2, s3, s4, s5, k, kb = raw
  return LayerRecord(s1, s2, s3, s4, s5, k, kb, norm, var_eff, scale, iters)


def all_finite(leaves) -> jax.Array:
  ok = jnp.array(True)
  for x in leaves:
    if jnp.issubdtype(x.dtype, jnp.inexact):
      ok = ok & jnp.all(jnp.isfinite(x))
  return ok
