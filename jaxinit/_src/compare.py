"""``jaxinit compare``: initializers side by side on an embedded deep network.

The network is a plain MLP, ``h_l = phi(h_{l-1} W_l + b_l)`` for l = 1..depth,
width ``width`` throughout, zero biases, on a fixed synthetic batch
``x ~ N(0, 1)`` of shape ``(batch, width)``. For each initializer (and for LSUV
applied on top of the chosen ones) it measures, with the public diagnostics:

* the variance of the layer outputs ``h_l W_l + b_l`` at the first, middle and
  last layer and the ratio last/first (:func:`signal_propagation`);
* the gradient-norm ratio ``||dL/dW_1|| / ||dL/dW_depth||`` for the loss
  ``0.5 * mean(h_depth^2)`` (:func:`gradient_norms`);
* the input–output Jacobian of one example: its mean squared singular value
  (how gradients reaching the input are scaled on average) and its condition
  number (:func:`jacobian_spectrum`: exact up to width 1024, else a Lanczos
  lower bound);

and gives a verdict: **vanishing** when the last layer's output variance or the
Jacobian's mean squared singular value is below ``1/THRESHOLD`` (of the first
layer's variance, resp. of 1), **exploding** when either is above
``THRESHOLD``, **stable** otherwise. ``THRESHOLD = 1000``: three decades over
the whole depth.

Compilation: the model is the same function for every initializer, so each
diagnostic compiles once per activation and every further initializer only
runs it.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src import activations, diagnostics, registry, serialization
from jaxinit._src import lsuv as lsuv_lib
from jaxinit._src.checks import fail

THRESHOLD = 1000.0

DEFAULT_INITS = (
  "normal(stddev=0.01)",
  "normal(stddev=0.1)",
  "glorot_normal",
  "he_normal",
  "orthogonal",
  "orthogonal(scale=sqrt(2))",
)
DEFAULT_LSUV = ("orthogonal",)

#: The activations ``jaxinit compare`` accepts: those of ``jaxinit.mean_field``.
ACTIVATIONS: tuple[str, ...] = activations.NAMES


@dataclasses.dataclass(frozen=True)
class MLP:
  """The embedded network as a hashable pure function ``apply(params, x)``."""

  activation: str

  def __call__(self, params: Sequence[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    act = activations.jax_fn(self.activation)
    for p in params:
      x = act(x @ p["w"] + p["b"])
    return x


# ---------------------------------------------------------------------------
# Initializer specs: "he_normal", "normal(0.01)", "orthogonal(scale=sqrt(2))".
# ---------------------------------------------------------------------------

_BINOPS = {
  ast.Add: operator.add,
  ast.Sub: operator.sub,
  ast.Mult: operator.mul,
  ast.Div: operator.truediv,
  ast.Pow: operator.pow,
}


def _value(node: ast.AST, spec: str) -> Any:
  if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
    return node.value
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    v = _value(node.operand, spec)
    return -v if isinstance(node.op, ast.USub) else v
  if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
    return _BINOPS[type(node.op)](_value(node.left, spec), _value(node.right, spec))
  if (
    isinstance(node, ast.Call)
    and isinstance(node.func, ast.Name)
    and node.func.id == "sqrt"
    and len(node.args) == 1
    and not node.keywords
  ):
    return math.sqrt(_value(node.args[0], spec))
  if isinstance(node, (ast.Tuple, ast.List)):
    return tuple(_value(e, spec) for e in node.elts)
  raise fail(
    "compare",
    f"cannot read the initializer {spec!r}: arguments must be numbers, "
    "strings, sqrt(...) or arithmetic on them.",
  )


def parse_init(spec: str) -> Any:
  """An initializer from ``name`` or ``name(args)`` (positional in factory order, or keywords).

  Examples:
    >>> from jaxinit._src.compare import parse_init
    >>> parse_init("normal(0.01)")
    normal(stddev=0.01)
    >>> parse_init("orthogonal(scale=sqrt(4))")
    orthogonal(scale=2.0)
  """
  try:
    tree = ast.parse(spec.strip(), mode="eval").body
  except SyntaxError:
    raise fail(
      "compare",
      f"cannot read the initializer {spec!r}; write a name such as "
      "'he_normal' or a call such as 'normal(stddev=0.01)'.",
    ) from None
  if isinstance(tree, ast.Name):
    return serialization.get(tree.id)
  if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name):
    cls = registry.lookup(tree.func.id, "compare")
    fields = [f.name for f in cls.arguments()]
    if len(tree.args) > len(fields):
      raise fail(
        "compare",
        f"{spec!r}: {cls.name} takes at most {len(fields)} arguments ({', '.join(fields)}).",
      )
    kwargs = {fields[i]: _value(a, spec) for i, a in enumerate(tree.args)}
    for kw in tree.keywords:
      if kw.arg is None or kw.arg in kwargs:
        raise fail("compare", f"{spec!r}: repeated or unpacked argument.")
      kwargs[kw.arg] = _value(kw.value, spec)
    return serialization.get(tree.func.id, **kwargs)
  raise fail(
    "compare",
    f"cannot read the initializer {spec!r}; write a name such as "
    "'he_normal' or a call such as 'normal(stddev=0.01)'.",
  )


def split_specs(text: str) -> list[str]:
  """Splits 'a,b(x=1, y=2),c' at the commas outside parentheses."""
  out, depth, cur = [], 0, []
  for ch in text:
    if ch in "([":
      depth += 1
    elif ch in ")]":
      depth -= 1
    if ch == "," and depth == 0:
      out.append("".join(cur).strip())
      cur = []
    else:
      cur.append(ch)
  if "".join(cur).strip():
    out.append("".join(cur).strip())
  return [s for s in out if s]


# ---------------------------------------------------------------------------
# The comparison.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
  """One initializer's measurements."""

  label: str
  activation: str
  var: np.ndarray  # per-layer output variance
  grad: np.ndarray  # per-layer ||dL/dW||
  jacobian: diagnostics.JacobianSpectrum
  seconds: float

  @property
  def var_ratio(self) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
      return float(self.var[-1] / self.var[0])

  @property
  def grad_ratio(self) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
      return float(self.grad[0] / self.grad[-1])

  @property
  def verdict(self) -> str:
    return verdict(self.var_ratio, self.jacobian.mean_squared)


def verdict(var_ratio: float, jacobian_mean_sq: float, threshold: float = THRESHOLD) -> str:
  """'vanishing', 'exploding' or 'stable' (see the module docstring for the rule).

  A NaN or zero (underflowed) measurement counts as vanishing, an infinite
  one as exploding.
  """
  values = [var_ratio, jacobian_mean_sq]
  if any(math.isinf(v) or v > threshold for v in values):
    return "exploding"
  if any(math.isnan(v) or v < 1.0 / threshold for v in values):
    return "vanishing"
  return "stable"


def _init_params(init: Any, key: jax.Array, depth: int, width: int) -> list[dict[str, jax.Array]]:
  keys = jax.random.split(key, depth)
  ws = jax.vmap(lambda k: init(k, (width, width), jnp.float32))(keys)
  b = jnp.zeros((width,), jnp.float32)
  return [{"w": ws[i], "b": b} for i in range(depth)]


class _Progress:
  """A plain-text progress bar on a stream (stderr)."""

  def __init__(self, total: int, stream: TextIO | None):
    self.total, self.done, self.stream = total, 0, stream
    self.start = time.perf_counter()
    self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

  def show(self, label: str) -> None:
    if self.stream is None:
      return
    width = 24
    filled = int(width * self.done / max(self.total, 1))
    bar = "#" * filled + "-" * (width - filled)
    line = f"[{bar}] {self.done}/{self.total}  {time.perf_counter() - self.start:5.1f}s  {label}"
    if self.tty:
      self.stream.write("\r" + line[:100].ljust(100))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def step(self, label: str) -> None:
    self.show(label)
    self.done += 1

  def close(self) -> None:
    self.show("done")
    if self.stream is not None and self.tty:
      self.stream.write("\n")
      self.stream.flush()


def run(
  inits: Sequence[str] = DEFAULT_INITS,
  *,
  activations: Sequence[str] = ("relu",),
  lsuv: Sequence[str] = DEFAULT_LSUV,
  depth: int = 50,
  width: int = 256,
  batch: int = 256,
  seed: int = 0,
  progress: TextIO | None = None,
) -> list[Row]:
  """Measures every initializer (and LSUV on top of the ``lsuv`` ones) for each activation.

  Returns:
    One :class:`Row` per (activation, initializer), in order.
  """
  for a in activations:
    if a not in ACTIVATIONS:
      raise fail("compare", f"unknown activation {a!r}; choose from {', '.join(ACTIVATIONS)}.")
  parsed = [(s, parse_init(s)) for s in inits]
  parsed_lsuv = [(s, parse_init(s)) for s in lsuv]
  x = jax.random.normal(jax.random.key(seed + 1), (batch, width), jnp.float32)
  jobs = [(a, label, init, False) for a in activations for label, init in parsed]
  jobs += [(a, f"lsuv({label})", init, True) for a in activations for label, init in parsed_lsuv]
  jobs.sort(key=lambda j: activations.index(j[0]))  # group by activation
  bar = _Progress(len(jobs), progress)
  rows = []
  for act, label, init, with_lsuv in jobs:
    bar.step(f"{act}: {label}")
    t0 = time.perf_counter()
    model = MLP(act)
    params = _init_params(init, jax.random.key(seed), depth, width)
    if with_lsuv:
      params, _ = lsuv_lib.lsuv(model, params, x)
    sig = diagnostics.signal_propagation(model, params, x)
    grads = diagnostics.gradient_norms(model, params, x)
    weights = grads.select([f"{i}/w" for i in range(depth)])
    jac = diagnostics.jacobian_spectrum(model, params, x)
    rows.append(Row(label, act, sig.var, weights.grad_norm, jac, time.perf_counter() - t0))
  bar.close()
  return rows


def _fmt(x: float) -> str:
  if math.isnan(x):
    return "nan"
  if math.isinf(x):
    return "inf"
  if x == 0:
    return "0"
  if 1e-2 <= abs(x) < 1e3:
    return f"{x:.3g}"
  return f"{x:.1e}"


def table(rows: Sequence[Row], depth: int) -> str:
  """The printed table, one block per activation."""
  mid = depth // 2
  head = [
    "initializer",
    "var[1]",
    f"var[{mid + 1}]",
    f"var[{depth}]",
    "last/first",
    "grad 1/L",
    "J mean s^2",
    "J cond",
    "verdict",
  ]
  blocks = []
  for act in dict.fromkeys(r.activation for r in rows):
    body = []
    for r in (r for r in rows if r.activation == act):
      cond = _fmt(r.jacobian.condition)
      if r.jacobian.method == "lanczos" and math.isfinite(r.jacobian.condition):
        cond = ">=" + cond
      body.append(
        [
          r.label,
          _fmt(r.var[0]),
          _fmt(r.var[mid]),
          _fmt(r.var[-1]),
          _fmt(r.var_ratio),
          _fmt(r.grad_ratio),
          _fmt(r.jacobian.mean_squared),
          cond,
          r.verdict,
        ]
      )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def fmt(cells, widths=widths):
      return "  ".join(
        c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
      )

    lines = [f"activation: {act}", fmt(head), "-" * len(fmt(head))]
    lines += [fmt(b) for b in body]
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


def plot(rows: Sequence[Row], path: str) -> None:
  """Saves variance and gradient norm against depth, and Jacobian spectra, to ``path``."""
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    raise ImportError(
      "jaxinit compare --plot needs matplotlib: pip install matplotlib "
      "(or pip install 'jaxinit[notebooks]')."
    ) from None
  acts = list(dict.fromkeys(r.activation for r in rows))
  fig, axes = plt.subplots(len(acts), 3, figsize=(15, 4 * len(acts)), squeeze=False)
  for ax_row, act in zip(axes, acts, strict=True):
    sel = [r for r in rows if r.activation == act]
    for r in sel:
      layers = np.arange(1, len(r.var) + 1)
      with np.errstate(divide="ignore"):
        (line,) = ax_row[0].semilogy(
          layers, np.where(r.var > 0, r.var, np.nan), label=f"{r.label} ({r.verdict})"
        )
        color = line.get_color()  # the same colour in every panel, even where one is empty
        ax_row[1].semilogy(layers, np.where(r.grad > 0, r.grad, np.nan), color=color, label=r.label)
      s = r.jacobian.singular_values
      s = np.sort(s[s > 0])[::-1]
      if s.size:
        ax_row[2].loglog(np.arange(1, s.size + 1), s, color=color, label=r.label)
    ax_row[0].set(title=f"{act}: variance of layer outputs", xlabel="layer", ylabel="variance")
    ax_row[1].set(
      title=f"{act}: gradient norm per layer",
      xlabel="layer",
      ylabel=r"$\|\partial L / \partial W_l\|$",
    )
    ax_row[2].set(
      title=f"{act}: input-output Jacobian (one example)", xlabel="rank", ylabel="singular value"
    )
    ax_row[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(args: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
  """Runs the comparison from parsed command-line arguments."""
  out = out or sys.stdout
  err = sys.stderr if err is None else err
  inits = split_specs(args.inits)
  lsuv = [] if args.lsuv.strip().lower() in ("", "none") else split_specs(args.lsuv)
  acts = split_specs(args.activation)
  t0 = time.perf_counter()
  rows = run(
    inits,
    activations=acts,
    lsuv=lsuv,
    depth=args.depth,
    width=args.width,
    batch=args.batch,
    seed=args.seed,
    progress=None if args.quiet else err,
  )
  print(
    f"{args.depth}-layer MLP, width {args.width}, batch {args.batch} of N(0, 1) inputs, "
    f"zero biases; seed {args.seed}",
    file=out,
  )
  print(table(rows, args.depth), file=out)
  print(
    f"\nverdict: vanishing / exploding when var[{args.depth}]/var[1] or the Jacobian's mean "
    f"squared singular value\nis below 1/{THRESHOLD:g} / above {THRESHOLD:g}; "
    f"stable otherwise. ({time.perf_counter() - t0:.1f}s)",
    file=out,
  )
  if args.plot:
    plot(rows, args.plot)
    print(f"plot saved to {args.plot}", file=out)
  return 0
