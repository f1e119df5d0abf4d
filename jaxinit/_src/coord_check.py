r"""The coordinate check of the µP papers: how each layer's output moves with width in training.

Train the same model at several widths for a few steps on one fixed batch and watch every
layer's output: in a parametrization that admits a width limit with feature learning (µP),
the change of each layer's output since initialization has a width-independent size, so
its RMS is flat against width; in the standard parametrization with Adam the readout's
change grows like the width and the network blows up as it widens (Tensor Programs V,
Fig. 5 plots the std of ``x_t − x_0``; microsoft/mup's ``mup/coord_check.py`` records
``|x|.mean()`` of every module's output, 1.0.0).

:func:`coord_check` records, for each width and each step ``t = 0 … steps`` (``t = 0`` is
the initialization), the RMS of every layer's output and of its change since ``t = 0``
(layers as :func:`jaxinit.find_layers` lists them), fits the slope of ``log RMS`` against
``log width`` per layer and step, and gives each layer a verdict from its change: ``stable``
(|slope| ≤ ``tol``), ``grows with width`` or ``shrinks with width``. It also records each
weight's spectral norm ``‖W_t − W_0‖₂`` against ``√(fan_out/fan_in)``, the scale the
spectral condition of Yang, Simon & Bernstein (2023, "A Spectral Condition for Feature
Learning") asks of a feature-learning update.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinit._src.checks import check_int, check_real, fail
from jaxinit._src.diagnostics import default_loss, layer_outputs
from jaxinit._src.paths import path_str

_FN = "diagnostics.coord_check"
GROUPS = ("input", "hidden", "output", "fixed")


def _slopes(widths: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Least-squares slope of log y against log width along axis 0 (nan where some y <= 0)."""
  x = np.log(widths)
  x = x - x.mean()
  with np.errstate(divide="ignore", invalid="ignore"):
    ly = np.log(y)
  ok = np.all(np.isfinite(ly), axis=0)
  ly = np.where(np.isfinite(ly), ly, 0.0)
  s = np.tensordot(x, ly - ly.mean(0), axes=(0, 0)) / np.sum(x * x)
  return np.where(ok, s, np.nan)


def _fmt(x: float) -> str:
  if not math.isfinite(x):
    return "-"
  return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


@dataclasses.dataclass(frozen=True)
class CoordCheck:
  """What :func:`coord_check` measured.

  Attributes:
    widths: the widths, ascending.
    steps: the number of optimizer steps (records are at ``t = 0 … steps``).
    layers: one label per layer (its weight path; ``#k`` marks the k-th reuse of a weight).
    groups: each layer's group: ``'input'``, ``'hidden'``, ``'output'`` or ``'fixed'`` by
      which of its fans grow with width (or the names ``groups=`` gave).
    output_rms: ``(widths, steps + 1, layers)``: RMS of each layer's output.
    delta_rms: the same for the change of the output since ``t = 0``.
    loss: ``(widths, steps + 1)``: the loss on the batch before each step (and after the last).
    weights: the weight paths (once each).
    spectral: ``(widths, steps + 1, weights)``: ``‖W_t − W_0‖₂`` (the weight reshaped to a
      ``fan_in × fan_out`` matrix; 30 power iterations), nan where it cannot be reshaped.
    spectral_scale: ``(widths, weights)``: ``√(fan_out / fan_in)``.
    tol: the |slope| below which a layer is ``stable``.
  """

  widths: tuple[int, ...]
  steps: int
  layers: tuple[str, ...]
  groups: tuple[str, ...]
  output_rms: np.ndarray
  delta_rms: np.ndarray
  loss: np.ndarray
  weights: tuple[str, ...]
  spectral: np.ndarray
  spectral_scale: np.ndarray
  tol: float

  @property
  def output_slope(self) -> np.ndarray:
    """``(steps + 1, layers)``: slope of log RMS(output) against log width."""
    return _slopes(np.asarray(self.widths, float), self.output_rms)

  @property
  def delta_slope(self) -> np.ndarray:
    """``(steps, layers)``: slope of log RMS(output − output at init), ``t = 1 … steps``
    (nan at a step where some width did not change the layer at all)."""
    return _slopes(np.asarray(self.widths, float), self.delta_rms[:, 1:])

  @property
  def spectral_slope(self) -> np.ndarray:
    """``(steps, weights)``: slope of log(‖ΔW‖₂ / √(fan_out/fan_in)) against log width."""
    ratio = self.spectral[:, 1:] / self.spectral_scale[:, None, :]
    return _slopes(np.asarray(self.widths, float), ratio)

  def worst_delta_slope(self) -> np.ndarray:
    """Per layer: the change's slope of largest magnitude over the steps (nan: no change)."""
    s = self.delta_slope
    out = np.full(s.shape[1], np.nan)
    for j in range(s.shape[1]):
      col = s[:, j][np.isfinite(s[:, j])]
      if col.size:
        out[j] = col[np.argmax(np.abs(col))]
    return out

  @property
  def verdicts(self) -> tuple[str, ...]:
    """Per layer: ``'stable'``, ``'grows with width'``, ``'shrinks with width'`` (from
    :meth:`worst_delta_slope`), or ``'no change'``."""
    out = []
    for s in self.worst_delta_slope():
      if not math.isfinite(s):
        out.append("no change")
      elif s > self.tol:
        out.append("grows with width")
      elif s < -self.tol:
        out.append("shrinks with width")
      else:
        out.append("stable")
    return tuple(out)

  def __str__(self) -> str:
    w0, w1 = self.widths[0], self.widths[-1]
    head = [
      "layer",
      "group",
      f"out RMS t=0 ({w0}/{w1})",
      "out slope t=0",
      f"change RMS t={self.steps} ({w0}/{w1})",
      "change slope t=" + ",".join(str(t) for t in range(1, self.steps + 1)),
      "verdict",
    ]
    ds, os_ = self.delta_slope, self.output_slope
    rows = []
    for j, name in enumerate(self.layers):
      rows.append(
        [
          name,
          self.groups[j],
          f"{_fmt(self.output_rms[0, 0, j])} / {_fmt(self.output_rms[-1, 0, j])}",
          _fmt(os_[0, j]),
          f"{_fmt(self.delta_rms[0, -1, j])} / {_fmt(self.delta_rms[-1, -1, j])}",
          " ".join(f"{s:+.2f}" if math.isfinite(s) else "  -  " for s in ds[:, j]),
          self.verdicts[j],
        ]
      )
    table = _table(head, rows)
    title = (
      f"coordinate check: widths {', '.join(map(str, self.widths))}; {self.steps} steps on one "
      f"batch; slope of log RMS vs log width, stable if |slope| <= {self.tol:g}"
    )
    spec_rows = []
    ss = self.spectral_slope
    for k, name in enumerate(self.weights):
      r = self.spectral[:, -1, k] / self.spectral_scale[:, k]
      spec_rows.append([name, _fmt(r[0]), _fmt(r[-1]), _fmt(ss[-1, k])])
    spec = _table(
      ["weight", f"|dW|_2/sqrt(fo/fi) @{w0}", f"@{w1}", f"slope t={self.steps}"], spec_rows
    )
    return (
      f"{title}\n{table}\n\nspectral norm of the weight change after {self.steps} steps\n{spec}"
    )

  def plot(self, quantity: str = "delta", fig: Any = None) -> Any:
    """RMS against width (log-log), one line per step, one panel per layer group.

    Args:
      quantity: ``'delta'`` (change since init), ``'output'`` or ``'spectral'``
        (‖ΔW‖₂ / √(fan_out/fan_in) per weight group).
      fig: a matplotlib Figure to draw in (default: a new one).

    Returns:
      The Figure. Within a group, each line is the geometric mean over its layers.
    """
    fn = f"{_FN}.plot"
    if quantity not in ("delta", "output", "spectral"):
      raise fail(fn, f"`quantity` must be one of 'delta', 'output', 'spectral', got {quantity!r}.")
    try:
      import matplotlib.pyplot as plt
    except ImportError:
      raise ImportError("jaxinit.diagnostics.coord_check plots need matplotlib.") from None
    if quantity == "spectral":
      data = self.spectral / self.spectral_scale[:, None, :]
      groups = [_weight_group(self, w) for w in self.weights]
    else:
      data = self.delta_rms if quantity == "delta" else self.output_rms
      groups = list(self.groups)
    t0 = 1 if quantity != "output" else 0
    names = [g for g in (*GROUPS, *sorted(set(groups) - set(GROUPS))) if g in groups]
    fig = fig or plt.figure(figsize=(4 * len(names), 3.4))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    cmap = plt.get_cmap("viridis")
    span = self.widths[-1] / self.widths[0]
    for ax, g in zip(axes, names, strict=True):
      cols = [j for j, gj in enumerate(groups) if gj == g]
      ys = []
      for t in range(t0, self.steps + 1):
        with np.errstate(divide="ignore"):
          y = np.exp(np.mean(np.log(data[:, t, cols]), axis=1))
        ax.plot(self.widths, y, "o-", color=cmap(t / max(self.steps, 1)), label=f"t={t}")
        ys.append(y)
      ax.set(xscale="log", yscale="log", xlabel="width", title=f"{g} ({len(cols)})")
      ys = np.concatenate(ys)
      ys = ys[np.isfinite(ys) & (ys > 0)]
      if ys.size and ys.max() / ys.min() < span:  # y spans at least the widths' range:
        mid = math.sqrt(ys.max() * ys.min())  # a slope of 1 looks like one
        ax.set_ylim(mid / math.sqrt(span), mid * math.sqrt(span))
      ax.set_xticks(self.widths, [str(w) for w in self.widths])
      ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    label = {
      "delta": "RMS of output change since init",
      "output": "RMS of output",
      "spectral": "|dW|_2 / sqrt(fan_out/fan_in)",
    }
    axes[0].set_ylabel(label[quantity])
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _weight_group(cc: CoordCheck, weight: str) -> str:
  for name, g in zip(cc.layers, cc.groups, strict=True):
    if name.split("#")[0] == weight:
      return g
  return "fixed"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
  fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
  return "\n".join([fmt(header), "-" * len(fmt(header)), *map(fmt, rows)])


# ---------------------------------------------------------------------------
# Running it.
# ---------------------------------------------------------------------------


def _matrix_shape(shape: tuple[int, ...], fan_in: int, fan_out: int) -> tuple[int, int] | None:
  """A split of ``shape`` into a ``fan_in × fan_out`` (or ``fan_out × fan_in``) matrix."""
  for k in range(1, len(shape)):
    a, b = math.prod(shape[:k]), math.prod(shape[k:])
    if {a, b} == {fan_in, fan_out} and a * b == fan_in * fan_out:
      return a, b
  return None


def _spectral_norm(m: jax.Array, iters: int = 30) -> jax.Array:
  """The largest singular value of ``m`` by power iteration on ``mᵀm`` (fixed start)."""
  m = m.astype(jnp.float32)
  v = jnp.cos(jnp.arange(m.shape[1], dtype=jnp.float32) * 1.7 + 0.3)

  def body(_, v):
    w = m.T @ (m @ v)
    return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

  v = jax.lax.fori_loop(0, iters, body, v / jnp.linalg.norm(v))
  return jnp.linalg.norm(m @ v)


def _rms(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


@dataclasses.dataclass(frozen=True)
class _Weight:
  path: str  # the leaf path
  index: int | None  # a slice of a stacked leaf (nn.scan), or None
  matrix: tuple[int, int] | None
  scale: float  # sqrt(fan_out / fan_in)


_STACKED = re.compile(r"(.*)\[(\d+)\]")


def _weights(layers: Sequence[Any], leaves: dict[str, Any]) -> list[tuple[str, _Weight]]:
  out, seen = [], set()
  for lay in layers:
    if lay.path in seen:
      continue
    seen.add(lay.path)
    path, index = lay.path, None
    m = _STACKED.fullmatch(path)
    if path not in leaves and m and m.group(1) in leaves:
      path, index = m.group(1), int(m.group(2))
      if tuple(leaves[path].shape[1:]) != tuple(lay.weight_shape):
        path = None
    mat = None if path is None else _matrix_shape(lay.weight_shape, lay.fan_in, lay.fan_out)
    out.append((lay.path, _Weight(path, index, mat, math.sqrt(lay.fan_out / lay.fan_in))))
  return out


def _labels(layers: Sequence[Any]) -> list[str]:
  count: dict[str, int] = {}
  out = []
  for lay in layers:
    k = count[lay.path] = count.get(lay.path, 0) + 1
    out.append(lay.path if k == 1 else f"{lay.path}#{k}")
  return out


def _check(fn, make, widths, steps, tx, loss, tol, groups):
  if not callable(make):
    raise fail(
      fn,
      "`make_params_and_apply` must be a function width -> (params, apply_fn), got "
      f"{type(make).__name__}.",
      TypeError,
    )
  if isinstance(widths, str | bytes) or not isinstance(widths, Sequence) or len(widths) < 2:
    raise fail(fn, f"`widths` must be a sequence of at least 2 widths, got {widths!r}.")
  widths = [check_int(fn, "widths", w, minimum=1) for w in widths]
  if sorted(set(widths)) != widths:
    raise fail(fn, f"`widths` must be distinct and ascending, got {widths}.")
  steps = check_int(fn, "steps", steps, minimum=1)
  if not callable(tx) and not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise fail(
      fn,
      "`tx` must be an optax.GradientTransformation or a function width -> "
      f"GradientTransformation (µP's optimizer depends on the width), got {type(tx).__name__}.",
      TypeError,
    )
  if loss is not None and not callable(loss):
    raise fail(
      fn, f"`loss` must be a function loss(output, batch) or None, got {loss!r}.", TypeError
    )
  if groups is not None and not callable(groups):
    raise fail(
      fn, f"`groups` must be a function path -> group name or None, got {groups!r}.", TypeError
    )
  return widths, steps, check_real(fn, "tol", tol, positive=True)


def _one_width(fn, width, make, batch, tx, loss, steps):
  """Trains one width; returns (layers, output rms, delta rms, losses, spectral, weights)."""
  made = make(width)
  if not (isinstance(made, tuple) and len(made) == 2 and callable(made[1])):
    raise fail(
      fn,
      f"`make_params_and_apply({width})` must return (params, apply_fn) with "
      f"apply_fn(params, batch) -> output, got {type(made).__name__}.",
      TypeError,
    )
  params, apply = made
  opt = tx(width) if not hasattr(tx, "update") else tx
  found: dict[str, Any] = {}

  def trace_layers(p):  # the layer list from shapes alone: nothing is compiled
    found["layers"], outs = layer_outputs(apply, p, batch)
    return outs

  jax.eval_shape(trace_layers, params)
  layers = found["layers"]
  leaves = {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  weights = _weights(layers, leaves)
  loss_of = (lambda out, b: default_loss(out)) if loss is None else loss

  def objective(p):
    return loss_of(apply(p, batch), batch)

  def step(p, state):
    grads = jax.grad(objective)(p)
    updates, state = opt.update(grads, state, p)
    return optax.apply_updates(p, updates), state

  def record(p, p0):
    _, outs = layer_outputs(apply, p, batch)
    _, outs0 = layer_outputs(apply, p0, batch)
    out_rms = jnp.stack([_rms(o) for o in outs])
    d_rms = jnp.stack([_rms(o - o0) for o, o0 in zip(outs, outs0, strict=True)])
    flat = {path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(p)[0]}
    flat0 = {path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(p0)[0]}
    specs = []
    for _, w in weights:
      if w.matrix is None:
        specs.append(jnp.float32(jnp.nan))
        continue
      dw = flat[w.path] - flat0[w.path]
      dw = dw if w.index is None else dw[w.index]
      specs.append(_spectral_norm(dw.reshape(w.matrix)))
    return out_rms, d_rms, jnp.stack(specs), jnp.asarray(objective(p), jnp.float32)

  @jax.jit
  def run(p0):  # one compiled program per width: init, then (record, step) x steps, record
    def body(carry, _):
      p, state = carry
      return step(p, state), record(p, p0)

    (p, _), recs = jax.lax.scan(body, (p0, opt.init(p0)), None, length=steps)
    last = record(p, p0)
    return jax.tree.map(lambda r, x: jnp.concatenate([r, x[None]]), recs, last)

  rows = jax.device_get(run(params))
  out_rms, d_rms, spec, losses = (np.asarray(r, float) for r in rows)
  return layers, out_rms, d_rms, losses, spec, weights


def coord_check(
  make_params_and_apply: Callable[[int], tuple[Any, Callable[..., Any]]],
  widths: Sequence[int],
  batch: Any,
  tx: optax.GradientTransformation | Callable[[int], optax.GradientTransformation],
  steps: int = 4,
  *,
  loss: Callable[[Any, Any], jax.Array] | None = None,
  tol: float = 0.3,
  groups: Callable[[str], str] | None = None,
) -> CoordCheck:
  r"""The coordinate check: does training change each layer's output the same at every width?

  For each width, ``make_params_and_apply(width)`` gives ``(params, apply_fn)``; the model
  takes ``steps`` optimizer steps on ``batch`` (the same batch each step, as mup's
  ``fix_data``), and at ``t = 0 … steps`` the RMS of every layer's output and of its change
  since ``t = 0`` are recorded (on ``batch``; layers as :func:`jaxinit.find_layers` lists
  them, outputs with their bias), with the loss and each weight's ``‖W_t − W_0‖₂``.
  (``t = steps`` is recorded after the last update: 4 steps observe 4 updates, where
  mup's ``get_coord_data(nsteps=4)`` records before each step and observes 3.)
  The slope of ``log RMS`` against ``log width``, per layer and step, says how a quantity
  scales: under µP the change of every layer's output since initialization is Θ(1) in width
  (|slope| small) — the network's output *at* initialization shrinks like ``1/√width`` in µP
  by design (TP V, Fig. 5; the mup README); under the standard parametrization with Adam
  the readout's change grows like the width (slope ≈ 1). The spectral norms test the
  spectral condition ``‖ΔW‖₂ = Θ(√(fan_out/fan_in))`` (Yang, Simon & Bernstein 2023):
  the slope of their ratio should be near 0.

  Args:
    make_params_and_apply: ``width -> (params, apply_fn)``, ``apply_fn(params, batch)``.
    widths: at least two widths, ascending (e.g. ``[64, 256, 1024]``).
    batch: what ``apply_fn`` takes (and ``loss``).
    tx: an optax optimizer, or ``width -> optimizer`` (µP's depends on the width:
      ``lambda w: mup.parametrize(base, target(w)).optimizer(optax.adam(lr))``).
    steps: optimizer steps per width.
    loss: ``loss(output, batch) -> scalar``; default
      :func:`jaxinit.diagnostics.default_loss` (½ mean of the squared output).
    tol: a layer whose change has |slope| ≤ ``tol`` at every step is ``stable``.
    groups: ``path -> group name`` for the table and the plot panels; default: by which of
      the layer's fans grow with width (``input``, ``hidden``, ``output``, ``fixed``).

  Returns:
    A :class:`CoordCheck`: ``print`` it for the table, ``.plot()`` for the figure.

  Raises:
    ValueError: bad widths/steps/tol; the layers differ between widths. TypeError: wrong
      argument types or a ``make_params_and_apply`` that does not return ``(params,
      apply_fn)``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxinit import diagnostics
    >>> def make(width):
    ...   k1, k2 = jax.random.split(jax.random.key(width))
    ...   params = {"w1": jax.random.normal(k1, (8, width)) / 8 ** 0.5,
    ...             "w2": jax.random.normal(k2, (width, 1)) / width ** 0.5}
    ...   return params, lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
    >>> x = jax.random.normal(jax.random.key(0), (16, 8))
    >>> cc = diagnostics.coord_check(make, [32, 128, 512], x, optax.sgd(0.1), steps=2)
    >>> cc.layers, cc.groups, cc.delta_rms.shape
    (('w1', 'w2'), ('input', 'output'), (3, 3, 2))

  References:
    Yang, Hu et al., "Tensor Programs V", 2022 (§ on the coordinate check, Fig. 5);
    microsoft/mup ``mup/coord_check.py``; Yang, Simon, Bernstein, "A Spectral Condition
    for Feature Learning", 2023.
  """
  fn = _FN
  widths, steps, tol = _check(fn, make_params_and_apply, widths, steps, tx, loss, tol, groups)
  runs = [_one_width(fn, w, make_params_and_apply, batch, tx, loss, steps) for w in widths]
  first, last = runs[0][0], runs[-1][0]
  for w, run in zip(widths, runs, strict=True):
    if [lay.path for lay in run[0]] != [lay.path for lay in first]:
      raise fail(
        fn,
        f"the layers at width {w} ({[lay.path for lay in run[0]]}) are not those at width "
        f"{widths[0]} ({[lay.path for lay in first]}): make_params_and_apply must build the same "
        "model at every width.",
      )
  if groups is None:
    names = [
      {(True, True): "hidden", (False, True): "input", (True, False): "output"}.get(
        (a.fan_in != b.fan_in, a.fan_out != b.fan_out), "fixed"
      )
      for a, b in zip(first, last, strict=True)
    ]
  else:
    names = [str(groups(lay.path)) for lay in first]
  weights = [name for name, _ in runs[0][5]]
  return CoordCheck(
    widths=tuple(widths),
    steps=steps,
    layers=tuple(_labels(first)),
    groups=tuple(names),
    output_rms=np.stack([r[1] for r in runs]),
    delta_rms=np.stack([r[2] for r in runs]),
    loss=np.stack([r[3] for r in runs]),
    weights=tuple(weights),
    spectral=np.stack([r[4] for r in runs]),
    spectral_scale=np.array([[w.scale for _, w in r[5]] for r in runs]),
    tol=tol,
  )
