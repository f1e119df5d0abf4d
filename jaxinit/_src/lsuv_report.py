"""What LSUV measured and decided, per layer: :class:`LayerRecord`, and :class:`LSUVReport`.

The per-layer normalization (:mod:`jaxinit._src.lsuv_plan`) records one
:class:`LayerRecord` per layer: the raw sums of the layer's output it measured,
the scale it chose, and in ``iters`` whether it solved for one at all (-1:
not selected, non-finite output or variance ~0). :func:`build_report` turns
the records of all layers into the :class:`LSUVReport` with vector operations
over the layers, reading those decisions rather than deriving them again.
Only whether the output was finite is read off the recorded sums (they are
finite exactly when every entry is), to tell 'NaN/inf' from 'variance ~0':
each extra per-layer flag is an extra output kernel per layer for XLA, and
one that recomputed the finiteness of the moments doubled the compile time
of a small MLP.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src.jaxpr.records import Layer

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


class LayerRecord(NamedTuple):
  """What LSUV measured and decided at one layer (scalars; a pytree).

  The output ``y = pre + b`` of a layer (``pre`` its dot/conv result, ``b`` its
  bias term, zero without a bias) is measured through the deviations
  ``d = (pre - shift) * norm`` and ``e = (b - bias_shift) * norm``, where the
  shifts are the first entries (the "shifted data" algorithm: the rounding
  error of the variance then scales with ``(mean - shift)^2 / var``) and
  ``norm`` is a power of two, 1 unless the output is so large that the sums of
  squares would overflow the compute dtype. Moments computed from the sums
  are therefore those of ``norm * y``.

  Attributes:
    sum_d, sum_dd, sum_de, sum_e, sum_ee: the sums of ``d``, ``d^2``, ``d e``,
      ``e``, ``e^2`` over all entries of the output.
    shift, bias_shift: the first entries of ``pre`` and ``b``.
    norm: the power of two the deviations were multiplied by.
    var_eff: with ``center=True``, the variance (of ``norm * pre``) within
      each bias entry, the part the scale acts on; NaN otherwise.
    scale: the factor the layer's weight is multiplied by (1 when not scaled).
    iters: the number of updates of the scale, or -1 when the scale was not
      solved for: the layer is not selected, or its output is not finite or
      has variance ~0 (the decision of :func:`~.lsuv_solve.runnable`). A
      layer solved for may keep scale 1 (already within tol: 0 updates).
  """

  sum_d: Any
  sum_dd: Any
  sum_de: Any
  sum_e: Any
  sum_ee: Any
  shift: Any
  bias_shift: Any
  norm: Any
  var_eff: Any
  scale: Any
  iters: Any


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
      with a ``key``, after the orthonormal redraw. inf when that variance is
      beyond the dtype's range although the output is finite (the layer is
      still measured and normalized).
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


def _column(xp, records: Sequence[LayerRecord], field: str, dtype) -> Any:
  return xp.stack([xp.asarray(getattr(r, field), dtype) for r in records])


def build_report(
  layers: Sequence[Layer],
  records: Sequence[LayerRecord],
  selected: Sequence[bool],
  centered: Sequence[bool],
  settings: tuple[float, float, int, bool],
  batch_finite: Any,
  xp: Any = jnp,
) -> tuple[LSUVReport, Any]:
  """The report, and whether no NaN/inf was met, from the layers' records.

  ``settings`` is ``(target_var, tol, max_iters, exact)``. ``xp`` is
  ``jax.numpy`` inside a trace and ``numpy`` on the eager path, where the few
  scalars per layer are on the host anyway for the NaN check: a report computed
  there costs no compilation. Inside a trace, only values XLA keeps in memory
  (reduction outputs, slices, the scales) are stacked, so stacking does not
  recompute per-layer arithmetic.
  """
  if xp is np:  # a variance beyond the dtype's range is inf, without a warning
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
      return _build(layers, records, selected, centered, settings, batch_finite, xp)
  return _build(layers, records, selected, centered, settings, batch_finite, xp)


def _build(layers, records, selected, centered, settings, batch_finite, xp):
  t, tol, max_iters, exact = settings
  # float64 when the layers were computed in float64 (x64), else float32
  ft = np.result_type(np.float32, *(r.scale.dtype for r in records)).type
  col = lambda field: _column(xp, records, field, ft)
  inv = (1.0 / np.array([math.prod(lay.output_shape) for lay in layers], np.float64)).astype(ft)
  norm, s = col("norm"), col("scale")
  md, me = col("sum_d") * inv, col("sum_e") * inv
  v0 = xp.maximum(col("sum_dd") * inv - md * md, ft(0))
  c = col("sum_de") * inv - md * me
  vb = xp.maximum(col("sum_ee") * inv - me * me, ft(0))
  cen, sel = np.array(centered, bool), np.array(selected, bool)
  # the sums of deviations scaled by `norm` are finite exactly when every entry is
  finite = xp.isfinite(md) & xp.isfinite(v0) & xp.isfinite(c) & xp.isfinite(vb)
  finite = finite & xp.isfinite(norm) & (norm > ft(0)) & ~(cen & ~xp.isfinite(col("var_eff")))
  iters = _column(xp, records, "iters", np.int32)
  run = iters >= 0
  # the moments are those of norm * y: divide the variances by norm^2 (1 unless huge)
  # (the scale of a huge output is tiny: u = s / norm keeps its square from underflowing)
  norm2, u = norm * norm, s / norm
  var_before = (v0 + ft(2) * c + vb) / norm2
  after = xp.where(cen, u * u * col("var_eff"), u * u * v0 + ft(2) * u * (c / norm) + vb / norm2)
  var_after = xp.where(run, after, var_before)
  static = np.array(
    [
      OK if sel[i] else TIED if (lay.tied_to is not None or lay.read_earlier) else EXCLUDED
      for i, lay in enumerate(layers)
    ],
    np.int32,
  )
  on_target = xp.abs(var_after - ft(t)) < ft(tol)
  status = xp.where(
    ~finite,
    NONFINITE,
    xp.where(~sel, static, xp.where(~run, TINY, xp.where(on_target, OK, NOT_CONVERGED))),
  )
  report = LSUVReport(
    paths=tuple(lay.path for lay in layers),
    bias_paths=tuple(lay.bias_path for lay in layers),
    tied_to=tuple(lay.tied_to for lay in layers),
    target_var=t,
    tol=tol,
    max_iters=max_iters,
    exact=exact,
    var_before=var_before,
    var_after=var_after,
    scale=s,
    iters=xp.maximum(iters, np.int32(0)),
    status=status.astype(np.int32),
    batch_finite=xp.asarray(batch_finite),
  )
  return report, batch_finite & xp.all(finite)
