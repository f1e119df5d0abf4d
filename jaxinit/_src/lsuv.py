"""LSUV (layer-sequential unit-variance) initialization in one forward pass, under jit.

Mishkin & Matas (2015) make every layer's output start at unit variance: redraw
each weight orthonormally, then, layer by layer in forward order, run a batch
through the model and divide the weight by the square root of the variance of
the layer's output, until ``|var - 1| < tol`` or ``max_iters`` tries. Every
published implementation re-runs the whole model for every try of every
layer: O(layers x tries) forward passes, in eager Python.

Here the whole procedure is one forward pass. The model is traced once to a
jaxpr (:mod:`jaxinit._src.jaxpr`); an interpreter evaluates it under
``jax.jit``, and when it reaches a layer's output it normalizes that layer on
the spot and continues with the normalized output — earlier layers are final
by then, which is exactly the state the sequential algorithm is in at that
layer. The tries need no re-evaluation: the layer is linear in its weight, so
the output for a weight ``s*W`` is ``s*(Wx) + b`` and its variance is the
quadratic ``var(s) = s^2 var(Wx) + 2 s cov(Wx, b) + var(b)``, whose three
coefficients one fused reduction over the output measures.

By default (``exact=True``) the scale is the root of ``var(s) = target`` —
the fixed point of the paper's update ``s <- s * sqrt(target / var(s))``,
reached in one step, in closed form. Without a bias (or with ``center=True``)
the paper's update gets there in one step too; with a bias it only converges
towards it, and ``exact=False`` runs that update in a ``lax.while_loop`` on the
scalars, which reproduces the scales of the reference implementations (whose
hooks see the bias as well) at the cost of a loop per layer in the compiled
program.

Compile time is what XLA spends on the kernels the program holds, so the
per-layer work is shaped to keep them few and alike (identical kernels are
compiled once): one fused reduction, one small scalar kernel, the scaled
output; weights are scaled once at the end from the recorded scales, and the
report is computed with vector operations over all layers.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinit._src.checks import canonical_key, check_bool, check_int, check_real, fail
from jaxinit._src.frameworks import bind as models
from jaxinit._src.jaxpr import run as jaxpr_run
from jaxinit._src.jaxpr import segments as jaxpr_segments
from jaxinit._src.jaxpr.index import apply_index, set_index
from jaxinit._src.jaxpr.keys import signature_is_portable
from jaxinit._src.jaxpr.program import Program, trace
from jaxinit._src.jaxpr.records import Layer, LayerIO, LayerUpdate
from jaxinit._src.orthogonal import haar_from_gaussian, stored_gaussian

FN = "lsuv"

#: Status codes of :class:`LSUVReport` rows.
STATUS = (
  "ok",  # 0: within tol of the target
  "not converged",  # 1: max_iters reached
  "skipped: variance ~0",  # 2: output (nearly) constant: never scaled
  "skipped: NaN/inf",  # 3: non-finite output
  "tied",  # 4: weight already scaled at an earlier use
  "excluded",  # 5: not selected by `layers` / `exclude`
)
OK, NOT_CONVERGED, TINY, NONFINITE, TIED, EXCLUDED = range(6)

# An output whose variance is below this fraction of its mean square is constant up to
# float rounding; scaling it to unit variance would amplify rounding noise.
_REL_TINY = 1e-10
# Batches with fewer examples than this get a warning: variance estimates are noisy.
_MIN_BATCH = 16


# ---------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=["var_before", "var_after", "scale", "iters", "status", "batch_finite"],
  meta_fields=["paths", "bias_paths", "tied_to", "target_var", "tol", "max_iters", "exact"],
)
@dataclasses.dataclass(frozen=True, repr=False)
class LSUVReport:
  """What :func:`lsuv` did, one row per layer in execution order.

  A pytree (it can be returned from ``jax.jit``); ``print(report)`` shows a
  table. Arrays have one entry per layer.

  Attributes:
    paths: the weight's parameter path of each layer.
    bias_paths: the path of the bias added to each layer's output, or None.
    tied_to: for a tied layer, the index of the layer whose weight it reuses
      (None for a weight first read outside a layer, e.g. a tied embedding).
    var_before: variance of the layer's output (bias included) when the
      forward pass reached it — after the earlier layers were normalized and,
      with a ``key``, after the orthonormal redraw.
    var_after: variance of the layer's output after normalization, from the
      output's exact moments on the batch (``s^2 var(Wx) + 2 s cov(Wx, b) +
      var(b)``; equal to a direct measurement up to rounding).
    scale: the factor the weight was multiplied by (1 where not scaled).
    iters: number of updates of the scale (0 when already within ``tol``; at
      most 1 with ``exact=True``).
    status: a code per layer; ``STATUS[code]`` names it: 'ok', 'not
      converged', 'skipped: variance ~0', 'skipped: NaN/inf', 'tied',
      'excluded'.
    batch_finite: whether every floating-point input was finite.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> params = {"w1": jnp.ones((8, 16)) / 8, "w2": jnp.ones((16, 4)) / 8}
    >>> apply_fn = lambda p, x: jax.nn.relu(x @ p["w1"]) @ p["w2"]
    >>> x = jax.random.normal(jax.random.key(0), (64, 8))
    >>> _, report = jaxinit.lsuv(apply_fn, params, x, key=jax.random.key(1))
    >>> report.paths, [r["status"] for r in report.rows()]
    (('w1', 'w2'), ['ok', 'ok'])
    >>> bool(jnp.all(jnp.abs(report.var_after - 1) < report.tol))
    True
  """

  paths: tuple[str, ...]
  bias_paths: tuple[str | None, ...]
  tied_to: tuple[int | None, ...]
  target_var: float
  tol: float
  max_iters: int
  exact: bool
  var_before: jax.Array
  var_after: jax.Array
  scale: jax.Array
  iters: jax.Array
  status: jax.Array
  batch_finite: jax.Array

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def ok(self) -> jax.Array:
    """True when no NaN/inf was met (the parameters were updated)."""
    return self.batch_finite & jnp.all(self.status != NONFINITE)

  @property
  def converged(self) -> jax.Array:
    """Per layer: the output variance ends within ``tol`` of ``target_var``."""
    return jnp.abs(self.var_after - self.target_var) < self.tol

  def error(self) -> str | None:
    """The error message for a run that met NaN/inf, or None (host-side)."""
    if bool(self.batch_finite) and not np.any(np.asarray(self.status) == NONFINITE):
      return None
    tail = "; the parameters were left unchanged."
    if not bool(self.batch_finite):
      return f"jaxinit.{FN}: the batch contains NaN or inf{tail}"
    i = int(np.argmax(np.asarray(self.status) == NONFINITE))
    return (
      f"jaxinit.{FN}: the output of layer #{i} ({self.paths[i]}) is NaN or inf: the "
      "activations reaching it overflowed or the parameters contain NaN/inf" + tail
    )

  def check(self) -> None:
    """Raises the error :func:`lsuv` raises eagerly when NaN/inf was met.

    Useful after calling :func:`lsuv` inside your own ``jax.jit``, where it
    cannot raise: there it returns the parameters unchanged and this report.
    """
    msg = self.error()
    if msg is not None:
      raise FloatingPointError(msg)

  def rows(self) -> list[dict[str, Any]]:
    """One dict per layer (host-side values)."""
    cols = {
      k: np.asarray(getattr(self, k))
      for k in ("var_before", "var_after", "scale", "iters", "status")
    }
    out = []
    for i, path in enumerate(self.paths):
      status = STATUS[int(cols["status"][i])]
      if status == "tied":
        status = (
          "tied: read earlier outside a layer (e.g. an embedding lookup)"
          if self.tied_to[i] is None
          else f"tied to #{self.tied_to[i]}"
        )
      out.append(
        {
          "layer": path,
          "bias": self.bias_paths[i],
          "var_before": float(cols["var_before"][i]),
          "var_after": float(cols["var_after"][i]),
          "scale": float(cols["scale"][i]),
          "iters": int(cols["iters"][i]),
          "status": status,
        }
      )
    return out

  def __str__(self) -> str:
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(self)):
      return f"LSUVReport({len(self)} layers, traced)"
    rows = self.rows()
    w = max([len("layer"), *(len(r["layer"]) for r in rows)])
    how = "exact solve" if self.exact else f"at most {self.max_iters} iterations"
    head = f"LSUV: {len(rows)} layers, target variance {self.target_var:g} ± {self.tol:g}, {how}"
    lines = [
      head,
      f"{'#':>3}  {'layer':<{w}}  {'var before':>10}  {'var after':>10}  "
      f"{'scale':>9}  {'iters':>5}  status",
    ]
    for i, r in enumerate(rows):
      lines.append(
        f"{i:>3}  {r['layer']:<{w}}  {r['var_before']:>10.4g}  {r['var_after']:>10.4g}"
        f"  {r['scale']:>9.4g}  {r['iters']:>5d}  {r['status']}"
      )
    if not bool(self.batch_finite):
      lines.append("the batch contains NaN or inf: parameters unchanged")
    return "\n".join(lines)

  __repr__ = __str__


# ---------------------------------------------------------------------------
# Options.
# ---------------------------------------------------------------------------


Selector = str | Sequence[str] | Callable[[str], bool] | None


def _selector(arg: str, value: Any) -> tuple | Callable[[str], bool] | None:
  if value is None or callable(value):
    return value
  patterns = (value,) if isinstance(value, str) else value
  bad = fail(
    FN,
    f"`{arg}` must be a regular expression, a sequence of them, or a function "
    f"path -> bool, got {value!r:.80}.",
    TypeError,
  )
  if not isinstance(patterns, Sequence) or not all(isinstance(p, str) for p in patterns):
    raise bad
  for p in patterns:
    try:
      re.compile(p)
    except re.error as e:
      raise fail(FN, f"`{arg}` pattern {p!r} is not a valid regular expression: {e}.") from None
  return tuple(patterns)


def _describe(selector) -> str:
  if callable(selector):
    return getattr(selector, "__name__", repr(selector))
  return repr(selector[0]) if len(selector) == 1 else repr(list(selector))


def _matches(selector, path: str) -> bool:
  if callable(selector):
    return bool(selector(path))
  return any(re.search(p, path) for p in selector)


@dataclasses.dataclass(frozen=True)
class _Options:
  tol: float
  max_iters: int
  target_var: float
  exact: bool
  center: bool
  min_var: float
  layers: Any
  exclude: Any

  def numeric(self) -> tuple:
    """The options that shape the computation (selection is passed as flags)."""
    return (self.tol, self.max_iters, self.target_var, self.exact, self.center, self.min_var)

  def selected(self, layer: Layer) -> bool:
    if self.layers is not None and not _matches(self.layers, layer.path):
      return False
    return not (self.exclude is not None and _matches(self.exclude, layer.path))


# ---------------------------------------------------------------------------
# The traced routine.
# ---------------------------------------------------------------------------


def _compute_dtype(dtype) -> np.dtype:
  return np.dtype(np.float64) if np.dtype(dtype).itemsize >= 8 else np.dtype(np.float32)


@dataclasses.dataclass(frozen=True)
class _RedrawPlan:
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


def _redraw_plan(prog: Program, lays: Sequence[Layer], regions: Sequence[Any]) -> _RedrawPlan:
  specs = []  # per layer: (nb, rows, cols) of its matrices, or None (kept)
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
  wide = any(np.dtype(r.dtype).itemsize >= 8 for r in regions) and jax.config.jax_enable_x64
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
  return _RedrawPlan(
    tuple(specs),
    tuple((shape, tuple(idx)) for shape, idx in members.items()),
    tuple(where),
    np.dtype(np.float64 if wide else np.float32),
  )


def _redraw_draw(plan: _RedrawPlan, key) -> list[jax.Array]:
  """Per group, the stacked Haar ``(k, m, n)`` matrices of its layers (see :func:`_redraw`).

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


def _redraw_place(
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
    q = jnp.transpose(q.reshape([op.shape[a] for a in perm]), np.argsort(perm))
    value = jax.linear_transpose(prog.weight_fn(lay), region)(q.astype(op.dtype))[0]
  else:
    value = q.reshape(region.shape).astype(region.dtype)
  return set_index(leaf, lay.weight_index, value)


def _redraw(prog: Program, plan: _Plan, key, leaves: list) -> list:
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
  matrix shape (:func:`_redraw_draw`); each layer then takes its slice
  (:func:`_redraw_place`). On the CPU, compiling a random-number generator and a
  QR costs far more than running them for a layer, so the eager path compiles
  the draw once and the placement once per distinct layer.
  """
  lays, rplan = _redraw_layers(prog, plan, leaves)
  stacks = _redraw_draw(rplan, key)
  new = list(leaves)
  for i, lay in enumerate(lays):
    if rplan.specs[i] is not None:
      g, start = rplan.where[i]
      new[lay.leaf] = _redraw_place(prog, lay, rplan.specs[i], stacks[g], start, new[lay.leaf])
  return new


def _redraw_layers(prog, plan, leaves) -> tuple[list, _RedrawPlan]:
  lays = [lay for lay in prog.layers if plan.selected[lay.index]]
  regions = [
    jax.ShapeDtypeStruct(
      tuple(e[1] - e[0] for e in lay.weight_index if not isinstance(e, int)), leaves[lay.leaf].dtype
    )
    for lay in lays
  ]  # what apply_index returns
  return lays, _redraw_plan(prog, lays, regions)


class _Plan:
  """What LSUV does to one traced model with given options: shared by the single-graph
  path (under the caller's jit) and the segmented eager path, so both compute the same
  thing. ``hook`` normalizes a layer; ``finish`` makes the parameters and the report."""

  def __init__(self, prog: Program, opts: _Options):
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
      if sel is not None and not any(_matches(sel, lay.path) for lay in prog.layers):
        raise fail(
          FN,
          f"`{arg}`={_describe(sel)} matches no layer; the layers' weight paths "
          f"are: {', '.join(lay.path for lay in prog.layers)}.",
        )
    self.selected = tuple(
      lay.tied_to is None and not lay.read_earlier and opts.selected(lay) for lay in prog.layers
    )
    self.centered = tuple(
      self.selected[lay.index] and opts.center and lay.bias is not None and not lay.bias_shared
      for lay in prog.layers
    )

  def static_key(self) -> tuple:
    return (self.opts.numeric(), self.selected, self.centered)

  # -- one layer ------------------------------------------------------------

  def hook(self, rows: dict):
    """The per-layer normalization; records the layer's row of raw statistics."""
    opts, t, tol = self.opts, self.opts.target_var, self.opts.tol

    def hook(io: LayerIO):
      lay = io.layer
      cdt = _compute_dtype(io.pre.dtype)
      pre = lax.convert_element_type(io.pre, cdt)
      b = (
        None
        if io.bias_term is None
        else _broadcast_to(lax.convert_element_type(io.bias_term, cdt), pre.shape)
      )
      raw = _raw_moments(pre, b)
      m, v0, c, vb = _moments(pre.size, *raw)
      nan = lax.full((), np.nan, cdt)
      if not self.selected[lay.index]:
        rows[lay.index] = (*raw, nan, lax.full((), 1, cdt), jnp.int32(0))
        return None
      zero = lax.full((), 0, cdt)
      if self.centered[lay.index]:
        # Per bias entry, the mean of the output over the entries it is added to: the
        # transpose of the bias broadcast sums them, the transpose of ones counts them.
        bias_c = io.bias.astype(cdt)
        h = lambda r: jnp.broadcast_to(io.bias_fn(r.astype(io.bias.dtype)).astype(cdt), pre.shape)
        ht = jax.linear_transpose(h, bias_c)
        count = ht(jnp.ones(pre.shape, cdt))[0]
        entry_mean = lambda y: ht(y)[0] / count
        pre_mean = entry_mean(pre)
        veff = _moments(pre.size, *_raw_moments(pre - h(pre_mean), None))[1]
        a, c_eff, vb_eff = veff, zero, zero
      else:
        veff, a, c_eff, vb_eff = nan, v0, c, vb
      runnable = lambda: _runnable(m, v0, c, vb, a, opts.min_var)
      if opts.exact:
        s, iters = _solve(a, c_eff, vb_eff, runnable(), t, tol)
      else:
        s, iters = _iterate(
          lambda s: s * s * a + 2 * s * c_eff + vb_eff, runnable, t, tol, opts.max_iters
        )
      # Only a weight that is read again later (tied) is rewritten during the pass; the
      # others are scaled once at the end, from the scales recorded here.
      weight = (io.weight.astype(cdt) * s).astype(io.weight.dtype) if lay.read_later else None
      bias = None
      if self.centered[lay.index]:
        shift = jnp.where(runnable(), s * pre_mean + entry_mean(b), zero)
        bias = (bias_c - shift).astype(io.bias.dtype)
        out = s * pre + h(bias.astype(cdt))
      elif b is not None:
        out = _add(_mul(pre, lax.broadcast(s, pre.shape)), b)
      else:
        out = _mul(pre, lax.broadcast(s, pre.shape))
      rows[lay.index] = (*raw, veff, s, iters)
      return LayerUpdate(
        weight=weight, bias=bias, output=lax.convert_element_type(out, io.pre.dtype)
      )

    return hook

  # -- the end --------------------------------------------------------------

  def scale_weight(self, lay: Layer, leaf, s):
    """The leaf with the layer's weight entries multiplied by ``s``."""
    w = apply_index(leaf, lay.weight_index)
    new = (w.astype(s.dtype) * s).astype(w.dtype)
    return set_index(leaf, lay.weight_index, new)

  def finish(self, rows: dict, new_leaves: list, leaves: list, arg_leaves: list):
    """Scales the weights, keeps the caller's parameters on NaN/inf, builds the report."""
    report, ok = self.report(rows, _all_finite(arg_leaves))
    new_leaves = list(new_leaves)
    for lay in self.prog.layers:
      if self.selected[lay.index] and not lay.read_later:
        new_leaves[lay.leaf] = self.scale_weight(lay, new_leaves[lay.leaf], rows[lay.index][8])
    new_leaves = [jnp.where(ok, new, old) for new, old in zip(new_leaves, leaves, strict=True)]
    return new_leaves, report

  def report(self, rows: dict, batch_finite, xp=jnp):
    """The report and whether no NaN/inf was met, from the per-layer raw sums.

    ``xp`` is ``jax.numpy`` inside a trace and ``numpy`` on the eager path, where
    the few scalars per layer are on the host anyway for the NaN check: a report
    computed there costs no compilation. Inside a trace, only values XLA keeps in
    memory (reduction outputs, slices, the scales) are stacked, so stacking does
    not recompute per-layer arithmetic.
    """
    prog, opts, t, tol = self.prog, self.opts, self.opts.target_var, self.opts.tol
    n = len(prog.layers)
    # float64 when the layers were computed in float64 (x64), else float32
    ft = np.result_type(np.float32, *(rows[i][8].dtype for i in range(n))).type
    cols = [xp.stack([xp.asarray(rows[i][k], ft) for i in range(n)]) for k in range(9)]
    veff, s = cols[7], cols[8]
    iters = xp.stack([xp.asarray(rows[i][9], np.int32) for i in range(n)])
    inv = (1.0 / np.array([math.prod(lay.output_shape) for lay in prog.layers], np.float64)).astype(
      ft
    )
    md, me = cols[0] * inv, cols[3] * inv
    m = cols[5] + md
    v0 = xp.maximum(cols[1] * inv - md * md, ft(0))
    c = cols[2] * inv - md * me
    vb = xp.maximum(cols[4] * inv - me * me, ft(0))
    cen = np.array(self.centered)
    a = xp.where(cen, veff, v0)
    finite = xp.isfinite(m) & xp.isfinite(v0) & xp.isfinite(c) & xp.isfinite(vb)
    finite = finite & xp.isfinite(a)
    sel = np.array(self.selected)
    run = sel & finite & (a > ft(opts.min_var)) & (a > ft(_REL_TINY) * (v0 + m * m))
    var_before = v0 + ft(2) * c + vb
    var_after = xp.where(run, xp.where(cen, s * s * a, s * s * v0 + ft(2) * s * c + vb), var_before)
    static = np.array(
      [
        OK if sel[i] else TIED if (lay.tied_to is not None or lay.read_earlier) else EXCLUDED
        for i, lay in enumerate(prog.layers)
      ],
      np.int32,
    )
    status = xp.where(
      ~finite,
      NONFINITE,
      xp.where(
        ~sel,
        static,
        xp.where(~run, TINY, xp.where(xp.abs(var_after - ft(t)) < ft(tol), OK, NOT_CONVERGED)),
      ),
    )
    ok = batch_finite & xp.all(finite)
    report = LSUVReport(
      paths=tuple(lay.path for lay in prog.layers),
      bias_paths=tuple(lay.bias_path for lay in prog.layers),
      tied_to=tuple(lay.tied_to for lay in prog.layers),
      target_var=t,
      tol=tol,
      max_iters=opts.max_iters,
      exact=opts.exact,
      var_before=var_before,
      var_after=var_after,
      scale=s,
      iters=iters,
      status=status.astype(np.int32),
      batch_finite=xp.asarray(batch_finite),
    )
    return report, ok


def _all_finite(leaves) -> jax.Array:
  ok = jnp.array(True)
  for x in leaves:
    if jnp.issubdtype(x.dtype, jnp.inexact):
      ok = ok & jnp.all(jnp.isfinite(x))
  return ok


def _lsuv_impl(apply, opts: _Options, params, args, key):
  """LSUV as one traced computation (used under the caller's jit)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  prog = trace(FN, apply, params, args, models.param_paths(apply, params))
  plan = _Plan(prog, opts)
  arg_leaves = jax.tree_util.tree_leaves(args)
  start = list(leaves) if key is None else _redraw(prog, plan, key, leaves)
  rows: dict = {}
  _, new_leaves = jaxpr_run.evaluate(prog, start, arg_leaves, plan.hook(rows))
  new_leaves, report = plan.finish(rows, new_leaves, leaves, arg_leaves)
  return jax.tree_util.tree_unflatten(treedef, new_leaves), report


_lsuv_jit = jax.jit(_lsuv_impl, static_argnums=(0, 1))


# ---------------------------------------------------------------------------
# The eager path: the program cut at each layer, identical pieces compiled once.
# ---------------------------------------------------------------------------

# Compiled pieces whose signature holds no identity-based parts, shared across calls.
_PIECES: collections.OrderedDict = collections.OrderedDict()
_PIECES_MAX = 256


def _piece(cache: dict, key, build: Callable[[], Callable]) -> Callable:
  portable = signature_is_portable(key)
  store = _PIECES if portable else cache
  fn = store.get(key)
  if fn is None:
    fn = store[key] = build()
    if portable and len(_PIECES) > _PIECES_MAX:
      _PIECES.popitem(last=False)
  elif portable:
    _PIECES.move_to_end(key)
  return fn


def _lsuv_eager(apply, opts: _Options, params, args, key):
  """LSUV from Python, one jitted piece per layer, identical pieces compiled once.

  XLA's compile time grows with the size of the program; a deep network repeats
  the same block, so running the forward pass as one compiled piece per layer
  (the steps up to the layer's output plus its normalization), with identical
  pieces sharing one compilation, makes compile time grow with the number of
  distinct blocks instead of the depth. Pieces are dispatched asynchronously and
  exchange device arrays: there is no host round-trip until the caller reads
  the report. The results equal those of the single-graph path (the same
  operations, in the same order, per layer) up to float rounding: XLA may
  compile a nonlinearity (GELU, a normalization) differently inside a piece
  than inside the whole graph, which can change the last bit of a variance.
  """
  leaves, treedef = jax.tree_util.tree_flatten(params)
  arg_leaves = jax.tree_util.tree_leaves(args)
  prog = trace(FN, apply, params, args, models.param_paths(apply, params))
  plan = _Plan(prog, opts)
  local: dict = {}
  cur = list(leaves)
  if key is not None:  # one compiled draw for all layers, one placement per distinct layer
    lays, rplan = _redraw_layers(prog, plan, cur)
    stacks = _piece(
      local, ("redraw", rplan), lambda: jax.jit(functools.partial(_redraw_draw, rplan))
    )(key)
    for i, lay in enumerate(lays):
      sp = rplan.specs[i]
      if sp is None:
        continue
      g, start = rplan.where[i]
      sig = (
        "place",
        sp,
        _aval(stacks[g]),
        _aval(cur[lay.leaf]),
        lay.weight_index,
        jaxpr_segments.weight_key(prog, lay),
      )
      place = _piece(
        local, sig, lambda lay=lay, sp=sp: jax.jit(functools.partial(_redraw_place, prog, lay, sp))
      )
      cur[lay.leaf] = place(stacks[g], np.int32(start), cur[lay.leaf])
  env = dict(zip(prog.arg_ids, arg_leaves, strict=True))
  for k, pid in enumerate(prog.param_ids):
    if pid not in prog.origin:
      env[pid] = cur[k]
  rows: dict = {}
  finite = None
  segments = jaxpr_segments.segments(prog)
  last_use = {i: n for n, seg in enumerate(segments) for i in seg.live_in}
  for n, seg in enumerate(segments):
    lay = seg.layer
    first = n == 0  # the first piece also checks the batch for NaN/inf

    def build(seg=seg, lay=lay, first=first):
      scale_here = plan.selected[lay.index] and not lay.read_later
      w_pos = seg.leaves.index(lay.leaf)

      def run(live_in, seg_leaves, arg_leaves):
        seg_rows: dict = {}
        outs, written = jaxpr_run.run_segment(prog, seg, live_in, seg_leaves, plan.hook(seg_rows))
        row = seg_rows[lay.index]
        if scale_here:  # the final weight, scaled once (the forward pass used s * Wx)
          written[w_pos] = plan.scale_weight(lay, written.get(w_pos, seg_leaves[w_pos]), row[8])
        return outs, written, row, _all_finite(arg_leaves) if first else None

      return jax.jit(run)

    key = (
      "segment",
      opts.numeric(),
      plan.selected[lay.index],
      plan.centered[lay.index],
      seg.signature,
      tuple(_aval(x) for x in arg_leaves) if first else None,
    )
    outs, written, rows[lay.index], seg_finite = _piece(local, key, build)(
      [env[i] for i in seg.live_in], [cur[leaf] for leaf in seg.leaves], arg_leaves if first else []
    )
    finite = seg_finite if first else finite
    for i in seg.live_in:  # free activations no later piece reads (memory as in a forward)
      if last_use[i] == n:
        del env[i]
    env.update(zip(seg.live_out, outs, strict=True))
    for p, value in written.items():
      cur[seg.leaves[p]] = value
  # The report, on the host: the scalars are needed there for the NaN check anyway, and
  # on NaN/inf the caller raises before returning anything (no guarding select needed).
  rows, finite = jax.device_get((rows, finite))
  report, _ = plan.report(rows, bool(finite), xp=np)
  return jax.tree_util.tree_unflatten(treedef, cur), report


def _aval(x) -> tuple:
  return (tuple(x.shape), str(x.dtype))


def _raw_moments(pre: jax.Array, b: jax.Array | None) -> tuple:
  """Shifted sums of ``pre`` (and ``b``) over all entries, in one fused reduction.

  Returns ``(S1, S2, S3, S4, S5, K, Kb)`` with ``d = pre - K``, ``e = b - Kb`` (``K``,
  ``Kb`` the first entries): ``S1 = sum d``, ``S2 = sum d^2``, ``S3 = sum d e``,
  ``S4 = sum e``, ``S5 = sum e^2`` (zeros without a bias). Shifting by an entry (the
  "shifted data" algorithm) makes the rounding error of the variance scale with
  ``(mean - K)^2 / var`` — of order one — instead of ``mean^2 / var`` as in the naive
  ``E[x^2] - E[x]^2``; one pass over the output instead of two keeps the number of
  kernels per layer, which XLA's compile time grows with, low.
  """
  first = (0,) * pre.ndim
  ones = (1,) * pre.ndim
  # lax primitives, not jnp operators: each of those stages a small jitted function
  # per new shape, which costs more to trace than the whole reduction
  k = lax.reshape(lax.slice(pre, first, ones), ())
  d = lax.sub(pre, lax.broadcast(k, pre.shape))
  zero = lax.full((), 0, pre.dtype)
  if b is None:
    ops = (d, lax.mul(d, d))
  else:
    kb = lax.reshape(lax.slice(b, first, ones), ())
    e = lax.sub(b, lax.broadcast(kb, b.shape))
    ops = (d, lax.mul(d, d), lax.mul(d, e), e, lax.mul(e, e))
  sums = lax.reduce(
    ops,
    tuple(zero for _ in ops),
    lambda x, y: tuple(xi + yi for xi, yi in zip(x, y, strict=True)),
    tuple(range(pre.ndim)),
  )
  if b is None:
    return (*sums, zero, zero, zero, k, zero)
  return (*sums, k, kb)


# The scalar arithmetic below runs once per layer at trace time; it is written with
# lax primitives, which bind directly, rather than jnp functions and operators, which
# each stage a small jitted function (about ten times the tracing cost).
_add, _sub, _mul, _div, _max = lax.add, lax.sub, lax.mul, lax.div, lax.max
_and, _sel, _finite = lax.bitwise_and, lax.select, lax.is_finite


def _moments(n, s1, s2, s3, s4, s5, k, kb):
  """Mean and variance of the output, its covariance with the bias term and the bias
  term's variance, from :func:`_raw_moments` (scalars, or vectors over layers)."""
  del kb  # the shift cancels in every central moment of b
  inv = np.asarray(1.0 / np.asarray(n, np.float64), s1.dtype)  # multiply, not divide
  md, me = _mul(s1, inv), _mul(s4, inv)
  mean = _add(k, md)
  var = _max(_sub(_mul(s2, inv), _mul(md, md)), _zeros(md))
  cov = _sub(_mul(s3, inv), _mul(md, me))
  var_b = _max(_sub(_mul(s5, inv), _mul(me, me)), _zeros(md))
  return mean, var, cov, var_b


def _broadcast_to(x, shape):
  """``jnp.broadcast_to`` (numpy's rules) with lax primitives, which trace faster."""
  lead = len(shape) - x.ndim
  keep = tuple(lead + i for i, d in enumerate(x.shape) if d != 1)
  squeezed = lax.reshape(x, tuple(d for d in x.shape if d != 1))
  return lax.broadcast_in_dim(squeezed, tuple(shape), keep)


def _zeros(x):
  return lax.full_like(x, 0)


def _const(value, like):
  """``value`` as a scalar of ``like``'s dtype (lax primitives do not promote)."""
  return lax.full((), value, like.dtype)


def _runnable(m, v0, c, vb, a, min_var):
  """A layer is scaled when its statistics are finite and the variance the scale acts on
  (``a``: var(Wx), or its part within bias entries when centering) is not ~0."""
  finite = _and(_and(_and(_finite(m), _finite(v0)), _and(_finite(c), _finite(vb))), _finite(a))
  big = _and(
    lax.gt(a, _const(min_var, a)), lax.gt(a, _mul(_add(v0, _mul(m, m)), _const(_REL_TINY, a)))
  )
  return _and(finite, big)


def _solve(a, c, vb, runnable, t, tol):
  """The scale ``s > 0`` with ``a s^2 + 2 c s + vb = t``, in closed form.

  This is the fixed point the paper's update ``s <- s * sqrt(t / var(s))``
  converges to, reached in one step: the larger root of the quadratic (a second
  positive root exists only when the bias term alone has variance above ``t``).
  A layer already within ``tol`` of ``t``, one that must not be scaled, and one
  with no positive root (its bias alone has more variance than the target and
  no weight scale reaches it) keep ``s = 1``.

  It is written with a single square root and a single final division: XLA then
  computes the scale in one small kernel per layer and reads it from memory,
  instead of re-deriving parts of it inside every kernel that uses it (which
  is what XLA's CPU compile time grows with).
  """
  zero, one = _zeros(a), lax.full_like(a, 1)
  t, tol = _const(t, a), _const(tol, a)  # Python floats would be float64 under x64
  v1 = _add(_add(a, _mul(c, _const(2, a))), vb)
  disc = _add(_mul(c, c), _mul(a, _sub(t, vb)))
  r = lax.sqrt(_max(disc, zero))
  # root = num / den; each form avoids cancellation for its sign of c, and den > 0
  # whenever the layer is runnable (a > 0).
  c_pos = lax.gt(c, zero)
  num = _sel(c_pos, _sub(t, vb), _sub(r, c))
  den = _sel(c_pos, _add(r, c), a)
  scale = _and(
    _and(runnable, lax.ge(disc, zero)), _and(lax.gt(num, zero), lax.ge(lax.abs(_sub(v1, t)), tol))
  )
  return _div(_sel(scale, num, one), _sel(scale, den, one)), lax.convert_element_type(
    scale, jnp.int32
  )


def _iterate(vfn, runnable, t, tol, max_iters):
  """The paper's update ``s <- s * sqrt(t / var(s))`` until ``|var - t| < tol``.

  ``var(s)`` is exact and costs a few scalar operations, so the loop runs on
  scalars. ``runnable()`` is evaluated inside the loop condition, so a layer
  that must not be scaled leaves the loop at once with ``s = 1``.
  """
  one = jnp.ones((), jnp.result_type(vfn(1.0)))

  def cond(state):
    _, v, it = state
    return runnable() & (jnp.abs(v - t) >= tol) & (it < max_iters) & (v > 0)

  def body(state):
    s, v, it = state
    s = s * jnp.sqrt(t / v)
    return s, vfn(s), it + 1

  s, _, iters = lax.while_loop(cond, body, (one, vfn(one), jnp.int32(0)))
  return s, iters


# ---------------------------------------------------------------------------
# The public entry point.
# ---------------------------------------------------------------------------


def _check_batch(batch: Any) -> None:
  leaves = [x for x in jax.tree_util.tree_leaves(batch) if hasattr(x, "shape")]
  if not leaves:
    raise fail(FN, f"the batch must contain arrays, got {type(batch).__name__}.", TypeError)
  x = leaves[0]
  if len(x.shape) == 0:
    raise fail(
      FN,
      "the batch's first array is a scalar; LSUV needs a batch of examples along the leading axis.",
    )
  n = x.shape[0]
  if n < 2:
    raise fail(
      FN,
      f"the batch holds {n} example(s) along its leading axis; LSUV estimates "
      "variances over a batch, so pass at least 2 (ideally 64 or more).",
    )
  if n < _MIN_BATCH:
    warnings.warn(
      f"jaxinit.{FN}: the batch holds only {n} examples; variance estimates from "
      f"fewer than {_MIN_BATCH} are noisy.",
      UserWarning,
      stacklevel=3,
    )


def lsuv(
  model: Any,
  *args: Any,
  tol: float = 0.1,
  max_iters: int = 10,
  target_var: float = 1.0,
  exact: bool = True,
  key: jax.Array | None = None,
  center: bool = False,
  layers: Selector = None,
  exclude: Selector = None,
  min_var: float = 1e-8,
  model_kwargs: dict[str, Any] | None = None,
):
  r"""LSUV: scales each linear layer so its output has unit variance on a batch.

  Layer-sequential unit-variance initialization (Mishkin & Matas, 2015): in
  execution order, each layer's weight ``W`` is multiplied by a scale ``s``
  so that the variance of the layer's output on ``batch`` reaches
  ``target_var``; a layer already within ``tol`` of it is left alone. With a
  ``key``, every weight is first redrawn orthonormally, as in the paper;
  without one, the current weights are kept and only rescaled.

  The whole procedure costs about one forward pass and runs under
  ``jax.jit`` (eagerly it is jitted for you, and the compilation is cached):
  the model is traced once, evaluated step by step, and each layer is
  normalized when the forward pass reaches it — earlier layers are final by
  then. The output is linear in ``W``, so ``var(s W x + b)`` is a quadratic in
  ``s`` whose coefficients are measured once: by default ``s`` is its root,
  the fixed point of the paper's update ``s <- s * sqrt(target_var / var)``,
  and no try costs a model evaluation.

  Three call forms:

  * Flax linen: ``new_variables, report = lsuv(module, variables, batch)``;
    only ``variables['params']`` changes (``batch_stats`` and other
    collections are passed through untouched, whatever the call mutates).
  * Flax nnx: ``report = lsuv(model, batch)`` updates ``model``'s
    ``nnx.Param`` values in place (only on success).
  * Any pure function: ``new_params, report = lsuv(apply_fn, params,
    batch)`` with ``apply_fn(params, batch)`` (equinox, haiku-transformed or
    hand-written models).

  What counts as a layer (see :func:`find_layers`): every ``dot_general`` or
  convolution that reads a parameter through layout operations only —
  dense, einsum/``DenseGeneral``, attention projections, convolutions of any
  rank, grouped and depthwise — found in execution order, with ``nn.scan`` /
  ``nnx.scan`` stacks unrolled per step. Embeddings, normalization scales
  and products between activations are not layers. A layer's output is its
  dot/conv result plus its bias (what the layer returns, and what PyTorch's
  hooks see), and its variance is taken over all entries. A tied weight
  (one used by several layers) is scaled once, at its first use in execution
  order; a weight first read outside a layer (an embedding tied to the output
  projection) is not scaled, as that would change the earlier read.

  Args:
    model: a linen ``nn.Module``, an ``nnx.Module``, or ``apply_fn``.
    *args: ``variables, batch`` (linen), ``batch`` (nnx) or ``params,
      batch`` (function). The batch is passed to the model as its single
      positional argument; its leading axis is the batch axis.
    tol: a layer whose output variance is within ``tol`` of ``target_var``
      is done (on the variance, as the authors' Keras port; their PyTorch
      port tests the standard deviation).
    max_iters: with ``exact=False``, the maximal number of updates per layer.
    target_var: the output variance to reach.
    exact: True (default): solve ``var(s) = target_var`` for the scale in
      closed form — one step, exactly on target. False: run the paper's
      update ``s <- s * sqrt(target_var / var)`` until within ``tol`` or
      ``max_iters`` updates, in a ``lax.while_loop`` on scalars; this gives
      the scales of the reference implementations when layers have biases,
      and costs a loop per layer in the compiled program. Layers without a
      bias get the same scale either way. When no scale reaches the target
      (a bias whose variance alone exceeds it), ``exact=True`` leaves the
      weight unchanged and reports 'not converged'; the paper's update keeps
      shrinking the weight for ``max_iters`` steps.
    key: a PRNG key to redraw every processed weight orthonormally first
      (independent per layer; per group of batch axes for batched weights),
      or None to keep the current weights.
    center: also shift each layer's bias, after its weight is scaled, so
      that the output has zero mean over the batch for every bias entry
      (then the variance is taken after centering). Layers without a bias
      are only scaled.
    layers: which layers to process: a regular expression (or several)
      searched in the weight path, or a function ``path -> bool``. Default:
      all.
    exclude: layers not to process (same forms); they are reported as
      'excluded' and left unchanged.
    min_var: a layer whose output variance is at most this (or is constant
      up to rounding) is skipped and reported, never scaled towards inf.
    model_kwargs: keyword arguments for the model call, e.g.
      ``{'train': False}``; for linen they go to ``module.apply`` (so
      ``mutable=['batch_stats']``, ``rngs=...`` and ``method=...`` work —
      mutated collections are discarded).

  Returns:
    ``(new_variables, report)`` (linen), ``report`` (nnx) or ``(new_params,
    report)`` (function). The :class:`LSUVReport` is a pytree; print it for a
    table.

  Raises:
    FloatingPointError: the batch or some layer's output is NaN/inf (eager
      calls; the caller's parameters are untouched). Inside your own
      ``jax.jit`` it cannot raise: the parameters come back unchanged and
      ``report.check()`` raises afterwards.
    ValueError: no layers were found; a batch of fewer than 2 examples; a
      layer inside ``lax.cond``/``while_loop`` (NotImplementedError); bad
      options.

  Warns:
    UserWarning: layers were skipped for (near-)zero output variance; the
      batch has fewer than 16 examples.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> from flax import linen as nn
    >>> dense = lambda n: nn.Dense(n, kernel_init=jaxinit.lecun_normal())
    >>> model = nn.Sequential([dense(64), nn.relu, dense(64), nn.relu, dense(10)])
    >>> x = jax.random.normal(jax.random.key(0), (128, 32))
    >>> variables = model.init(jax.random.key(1), x)
    >>> variables, report = jaxinit.lsuv(model, variables, x)
    >>> report.paths
    ('layers_0/kernel', 'layers_2/kernel', 'layers_4/kernel')
    >>> bool(report.converged.all())  # every output variance within tol of 1
    True

  References:
    D. Mishkin, J. Matas, "All you need is a good init", ICLR 2016,
    arXiv:1511.06422.
  """
  opts = _Options(
    tol=check_real(FN, "tol", tol, positive=True),
    max_iters=check_int(FN, "max_iters", max_iters, minimum=1),
    exact=check_bool(FN, "exact", exact),
    target_var=check_real(FN, "target_var", target_var, positive=True),
    center=check_bool(FN, "center", center),
    min_var=check_real(FN, "min_var", min_var, nonnegative=True),
    layers=_selector("layers", layers),
    exclude=_selector("exclude", exclude),
  )
  bound = models.bind(FN, model, args, model_kwargs)
  if key is not None:
    key = canonical_key(FN, key)
  _check_batch(models.batch_of(bound))
  tracing = any(
    isinstance(x, jax.core.Tracer)
    for x in jax.tree_util.tree_leaves((bound.params, bound.args, key))
  )
  if not tracing:
    new_params, report = _lsuv_eager(bound.apply, opts, bound.params, bound.args, key)
  else:
    try:
      hash((bound.apply, opts))
      run = functools.partial(_lsuv_jit, bound.apply, opts)
    except TypeError:  # an unhashable model function or option: no caching
      run = functools.partial(_lsuv_impl, bound.apply, opts)
    new_params, report = run(bound.params, bound.args, key)
  if not tracing:
    msg = report.error()
    if msg is not None:
      err = FloatingPointError(msg)
      err.report = report
      raise err
    _warn_skipped(report)
  result = bound.rebuild(new_params)
  return report if bound.style == "nnx" else (result, report)


def _warn_skipped(report: LSUVReport) -> None:
  status = np.asarray(report.status)
  skipped = [i for i in range(len(report)) if status[i] == TINY]
  if skipped:
    names = ", ".join(
      f"#{i} {report.paths[i]} (variance {float(report.var_before[i]):.3g})" for i in skipped
    )
    warnings.warn(
      f"jaxinit.{FN}: skipped {len(skipped)} layer(s) whose output variance is ~0 "
      f"(zero weights, or an input that is constant on this batch): {names}. "
      "Their weights were left unchanged.",
      UserWarning,
      stacklevel=3,
    )


def find_layers(
  model: Any, *args: Any, model_kwargs: dict[str, Any] | None = None
) -> tuple[Layer, ...]:
  """Lists the linear layers of a model in execution order — what :func:`lsuv` processes.

  The model is traced once (nothing is computed). A layer is a
  ``dot_general`` or convolution that reads a parameter through layout
  operations only (reshape, transpose, cast, broadcast, static slice) and
  whose other operand depends on the batch: dense, einsum/``DenseGeneral``,
  attention projections, convolutions of any rank, grouped or depthwise.
  Calls, ``custom_jvp``/``custom_vjp`` and ``remat`` are looked through;
  ``scan`` bodies holding layers are unrolled (one entry per step, the
  stacked weight's slice appended to the path as ``[t]``); a layer inside
  ``lax.cond`` or ``while_loop`` raises NotImplementedError naming it.

  Args:
    model: a linen module, an nnx module or ``apply_fn(params, batch)``.
    *args: as for :func:`lsuv`: ``variables, batch`` / ``batch`` /
      ``params, batch`` (arrays or ``jax.ShapeDtypeStruct``).
    model_kwargs: keyword arguments for the model call.

  Returns:
    A tuple of :class:`Layer` (path, kind, weight shape, fans, output
    shape, bias path, ``tied_to``, source location), in execution order.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> from flax import linen as nn
    >>> model = nn.Sequential([nn.Conv(8, (3, 3)), nn.relu, nn.Dense(4)])
    >>> x = jnp.ones((2, 16, 16, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes suffice
    >>> for layer in jaxinit.find_layers(model, variables, x):
    ...   print(layer.index, layer.path, layer.kind, layer.fan_in, layer.fan_out, layer.bias_path)
    0 layers_0/kernel conv 27 8 layers_0/bias
    1 layers_2/kernel dot 8 4 layers_2/bias
  """
  bound = models.bind("find_layers", model, args, model_kwargs)
  return trace("find_layers", bound.apply, bound.params, bound.args, bound.paths).layers
