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
import importlib.util
import math
import operator
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src import activations, diagnostics, registry, serialization
from jaxinit._src import lsuv as lsuv_lib

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
# A spec comes from the command line, so it is untrusted: its size, nesting and
# arithmetic are bounded and every error names what was refused.
# ---------------------------------------------------------------------------

#: The longest one initializer spec may be, and the whole ``--inits``/``--lsuv`` text.
MAX_SPEC_CHARS = 200
MAX_SPECS_CHARS = 2000
#: The most initializers one flag may list.
MAX_SPECS = 16
#: The deepest nesting of parentheses/brackets, and of the expression tree.
MAX_SPEC_NESTING = 8
MAX_EXPRESSION_DEPTH = 16
#: Integers in a spec lie in (-2**63, 2**63); floats must stay finite.
MAX_INT = 2**63

_SPEC_HELP = "write a name such as 'he_normal' or a call such as 'normal(stddev=0.01)'"

_BINOPS = {
  ast.Add: ("+", operator.add),
  ast.Sub: ("-", operator.sub),
  ast.Mult: ("*", operator.mul),
  ast.Div: ("/", operator.truediv),
  ast.Pow: ("**", operator.pow),
}


def _error(message: str, exc: type[Exception] = ValueError) -> Exception:
  """An error of the ``jaxinit compare`` command (it names the flag and what was refused)."""
  return exc(f"jaxinit compare: {message}")


def _short(text: str, n: int = 60) -> str:
  return repr(text[:n]) + ("..." if len(text) > n else "")


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _bounded(x: Any, spec: str) -> Any:
  if isinstance(x, int) and not isinstance(x, bool) and not -MAX_INT < x < MAX_INT:
    raise _error(f"{_short(spec)}: an integer of {x.bit_length()} bits is too large (|n| < 2**63).")
  if isinstance(x, complex) or (isinstance(x, float) and not math.isfinite(x)):
    raise _error(f"{_short(spec)}: the arithmetic gives {x!r}, not a finite real number.")
  return x


def _power(a: int | float, b: int | float, spec: str) -> int | float:
  if isinstance(a, int) and isinstance(b, int) and b >= 0:
    # |a|**b < 2**63 <=> b * log2|a| < 63; refuse before computing (9**9**9 would run forever)
    if abs(a) > 1 and b * math.log2(abs(a)) >= 63:
      raise _error(f"{_short(spec)}: {a}**{b} is too large (|n| < 2**63).")
    return a**b
  try:
    return _bounded(float(a) ** float(b), spec)
  except (OverflowError, ZeroDivisionError):
    raise _error(f"{_short(spec)}: {a!r}**{b!r} is not a finite real number.") from None


def _arith(node: ast.BinOp, spec: str) -> int | float:
  symbol, op = _BINOPS[type(node.op)]
  a, b = _value(node.left, spec), _value(node.right, spec)
  if not (_is_number(a) and _is_number(b)):
    raise _error(f"{_short(spec)}: `{symbol}` works on numbers only, got {a!r:.30} and {b!r:.30}.")
  if isinstance(node.op, ast.Pow):
    return _power(a, b, spec)
  try:
    return _bounded(op(a, b), spec)
  except (OverflowError, ZeroDivisionError) as e:
    raise _error(f"{_short(spec)}: {a!r} {symbol} {b!r}: {e}.") from None


def _value(node: ast.AST, spec: str) -> Any:
  if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
    return _bounded(node.value, spec)
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    v = _value(node.operand, spec)
    if not _is_number(v):
      raise _error(f"{_short(spec)}: a sign applies to numbers only, got {v!r:.30}.")
    return -v if isinstance(node.op, ast.USub) else v
  if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
    return _arith(node, spec)
  if (
    isinstance(node, ast.Call)
    and isinstance(node.func, ast.Name)
    and node.func.id == "sqrt"
    and len(node.args) == 1
    and not node.keywords
  ):
    v = _value(node.args[0], spec)
    if not _is_number(v) or v < 0:
      raise _error(f"{_short(spec)}: sqrt needs a number >= 0, got {v!r:.30}.")
    return math.sqrt(v)
  if isinstance(node, (ast.Tuple, ast.List)):
    return tuple(_value(e, spec) for e in node.elts)
  raise _error(
    f"cannot read the initializer {_short(spec)}: arguments must be numbers, "
    "strings, sqrt(...) or arithmetic on them."
  )


def _expression_depth(tree: ast.AST) -> int:
  deepest, stack = 0, [(tree, 1)]
  while stack:
    node, d = stack.pop()
    deepest = max(deepest, d)
    stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
  return deepest


def _parse(spec: str) -> ast.AST:
  if not isinstance(spec, str):
    raise _error(f"an initializer spec must be a string, got {type(spec).__name__}.", TypeError)
  text = spec.strip()
  if len(text) > MAX_SPEC_CHARS:
    raise _error(
      f"the initializer {_short(text)} is {len(text)} characters long; a spec is at most "
      f"{MAX_SPEC_CHARS}."
    )
  nesting = depth = 0
  for ch in text:  # before ast.parse: its own limits end in RecursionError
    depth += ch in "([{"
    depth -= ch in ")]}"
    nesting = max(nesting, depth)
  if nesting > MAX_SPEC_NESTING:
    raise _error(f"{_short(text)} nests parentheses {nesting} deep; at most {MAX_SPEC_NESTING}.")
  try:
    tree = ast.parse(text, mode="eval").body
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    raise _error(f"cannot read the initializer {_short(text)}; {_SPEC_HELP}.") from None
  if _expression_depth(tree) > MAX_EXPRESSION_DEPTH:
    raise _error(
      f"{_short(text)} is nested deeper than {MAX_EXPRESSION_DEPTH} levels; write the "
      "argument values out."
    )
  return tree


def parse_init(spec: str) -> Any:
  """An initializer from ``name`` or ``name(args)`` (positional in factory order, or keywords).

  The spec is bounded (``MAX_SPEC_CHARS`` characters, ``MAX_SPEC_NESTING`` parentheses,
  expressions ``MAX_EXPRESSION_DEPTH`` deep); arguments are numbers, strings, tuples,
  ``sqrt(...)`` and ``+ - * / **`` on numbers, with integers below 2**63 and finite
  floats (``normal(9**9**9)`` is refused at once).

  Examples:
    >>> from jaxinit._src.compare import parse_init
    >>> parse_init("normal(0.01)")
    normal(stddev=0.01)
    >>> parse_init("orthogonal(scale=sqrt(4))")
    orthogonal(scale=2.0)
  """
  tree = _parse(spec)
  text = spec.strip()
  if isinstance(tree, ast.Name):
    return _get(text, tree.id, {})
  if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name):
    try:
      cls = registry.lookup(tree.func.id, "get")
    except ValueError as e:
      raise ValueError(f"jaxinit compare: {_short(text)}: {e}") from None
    fields = [f.name for f in cls.arguments() if not f.kw_only]  # positional ones
    if len(tree.args) > len(fields):
      raise _error(
        f"{_short(text)}: {cls.name} takes at most {len(fields)} arguments ({', '.join(fields)})."
      )
    kwargs = {fields[i]: _value(a, text) for i, a in enumerate(tree.args)}
    for kw in tree.keywords:
      if kw.arg is None or kw.arg in kwargs:
        raise _error(f"{_short(text)}: repeated or unpacked argument.")
      kwargs[kw.arg] = _value(kw.value, text)
    return _get(text, tree.func.id, kwargs)
  raise _error(f"cannot read the initializer {_short(text)}; {_SPEC_HELP}.")


def _get(spec: str, name: str, kwargs: dict[str, Any]) -> Any:
  try:
    return serialization.get(name, **kwargs)
  except (ValueError, TypeError) as e:
    raise type(e)(f"jaxinit compare: {_short(spec)}: {e}") from None


def split_specs(text: str, flag: str = "--inits") -> list[str]:
  """Splits 'a,b(x=1, y=2),c' at the commas outside parentheses and quotes.

  ``text`` is at most ``MAX_SPECS_CHARS`` characters and lists at most ``MAX_SPECS``
  specs; unbalanced parentheses are an error naming ``flag``.
  """
  if not isinstance(text, str):
    raise _error(f"{flag} must be a string, got {type(text).__name__}.", TypeError)
  if len(text) > MAX_SPECS_CHARS:
    raise _error(f"{flag} is {len(text)} characters long; at most {MAX_SPECS_CHARS}.")
  out: list[str] = []
  cur: list[str] = []
  depth, quote = 0, None
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
      if depth < 0:
        raise _error(f"{flag} {_short(text)} has a ')' without its '('.")
    if ch == "," and depth == 0 and not quote:
      out.append("".join(cur).strip())
      cur = []
    else:
      cur.append(ch)
  if depth or quote:
    raise _error(f"{flag} {_short(text)} has an unclosed {'quote' if quote else '('}.")
  out.append("".join(cur).strip())
  out = [s for s in out if s]
  if len(out) > MAX_SPECS:
    raise _error(f"{flag} lists {len(out)} items; at most {MAX_SPECS}.")
  return out


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


#: Bounds on the network ``jaxinit compare`` builds (the flags are untrusted input):
#: depth, width and batch, and ``depth * width * max(width, batch)`` -- the size of the
#: weights and of the activations kept for the backward pass -- at most ``MAX_CELLS``
#: (2**25: 128 MiB per float32 copy; the default run is 3.3M). Measured peak memory of
#: the whole process (one initializer, no LSUV, 2-core CPU): 0.39 GB for the default
#: 50 x 256 x 256, 1.2 GB at 512 x 256 x 256, 0.88 GB at 2 x 4096 x 4096. The compiled
#: graph grows with depth (1.3 GB at depth 1000 and width 64), hence ``MAX_DEPTH``.
MAX_DEPTH = 500
MAX_WIDTH = 4096
MAX_BATCH = 4096
MAX_CELLS = 2**25
#: ``--seed`` lies in [0, MAX_SEED] (the batch uses seed + 1, a uint32).
MAX_SEED = 2**32 - 2
#: The formats ``--plot`` writes (by the file's suffix).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def check_sizes(depth: Any, width: Any, batch: Any, seed: Any) -> None:
  """Refuses a network larger than the bounds above, or a seed out of range."""
  for flag, value, lo, hi in (
    ("--depth", depth, 1, MAX_DEPTH),
    ("--width", width, 1, MAX_WIDTH),
    ("--batch", batch, 1, MAX_BATCH),
    ("--seed", seed, 0, MAX_SEED),
  ):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
      big = isinstance(value, int) and value.bit_length() > 64
      shown = f"an integer of {value.bit_length()} bits" if big else value
      raise _error(f"{flag} must be an integer in [{lo}, {hi}], got {shown!s:.40}.")
  cells = depth * width * max(width, batch)
  if cells > MAX_CELLS:
    raise _error(
      f"--depth x --width x max(--width, --batch) = {depth} x {width} x {max(width, batch)} = "
      f"{cells} is over the bound {MAX_CELLS} (2**25; the default run is 50 x 256 x 256); "
      "use a smaller network."
    )


def _tail(path: str, n: int = 80) -> str:
  return repr(path if len(path) <= n else "..." + path[-n:])


def _probe_write(path: str) -> None:
  """Creates and removes ``path`` (or opens it for appending if it exists), so a folder
  that only looks writable (``/proc``, a read-only mount) fails before the run."""
  try:
    if os.path.exists(path):
      with open(path, "ab"):
        pass
    else:
      os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
      os.remove(path)
  except OSError as e:
    raise _error(f"--plot {_tail(path)}: cannot write a file there ({e.strerror}).") from None


def check_plot_path(path: Any) -> None:
  """Refuses a ``--plot`` file that cannot be written, before anything is computed."""
  if not isinstance(path, str) or not path or "\0" in path or len(path) > 4096:
    raise _error(f"--plot must be a file name, got {path!r:.60}.")
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in PLOT_SUFFIXES:
    raise _error(
      f"--plot {_tail(path)}: the file must end in one of {', '.join(PLOT_SUFFIXES)} "
      f"(the image format), got {suffix or 'no suffix'!r}."
    )
  folder = os.path.dirname(path) or "."
  if not os.path.isdir(folder):
    raise _error(f"--plot {_tail(path)}: the folder {_tail(folder)} does not exist.")
  if not os.access(folder, os.W_OK) or os.path.isdir(path):
    raise _error(f"--plot {_tail(path)}: cannot write a file there.")
  _probe_write(path)
  if importlib.util.find_spec("matplotlib") is None:
    raise _error(
      "--plot needs matplotlib: pip install matplotlib (or pip install 'jaxinit[notebooks]').",
      ImportError,
    )


def _without_prefix(e: Exception) -> str:
  text = str(e)
  return text[len("jaxinit compare: ") :] if text.startswith("jaxinit compare: ") else text


def parse_flag(flag: str, specs: Sequence[str]) -> list[tuple[str, Any]]:
  """(spec, initializer) for each spec of ``flag``; errors name the flag."""
  if isinstance(specs, str):
    specs = split_specs(specs, flag)
  if len(specs) > MAX_SPECS:
    raise _error(f"{flag} lists {len(specs)} items; at most {MAX_SPECS}.")
  out = []
  for s in specs:
    try:
      out.append((s, parse_init(s)))
    except (ValueError, TypeError) as e:
      raise type(e)(f"jaxinit compare: {flag} {_without_prefix(e)}") from None
  return out


def check_activations(names: Sequence[str]) -> list[str]:
  """The ``--activation`` names: at least one, known, no repeats."""
  names = split_specs(names, "--activation") if isinstance(names, str) else list(names)
  if not names:
    raise _error(f"--activation names no activation; choose from {', '.join(ACTIVATIONS)}.")
  for a in names:
    if a not in ACTIVATIONS:
      shown = _short(a) if isinstance(a, str) else f"{a!r:.40}"
      raise _error(
        f"--activation: unknown activation {shown}; choose from {', '.join(ACTIVATIONS)}."
      )
  if len(set(names)) != len(names):
    raise _error(f"--activation names an activation twice: {', '.join(names)}.")
  return names


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

  Every argument is checked before anything is computed (the bounds above; at least one
  initializer; LSUV needs a batch of at least 2).

  Returns:
    One :class:`Row` per (activation, initializer), in order.
  """
  acts = check_activations(activations)
  check_sizes(depth, width, batch, seed)
  parsed = parse_flag("--inits", inits)
  parsed_lsuv = parse_flag("--lsuv", lsuv)
  if not parsed and not parsed_lsuv:
    raise _error("--inits and --lsuv name no initializer; there is nothing to compare.")
  if parsed_lsuv and batch < 2:
    raise _error(f"--lsuv needs --batch >= 2 (a variance over examples), got {batch}.")
  x = jax.random.normal(jax.random.key(seed + 1), (batch, width), jnp.float32)
  jobs = [(a, label, init, False) for a in acts for label, init in parsed]
  jobs += [(a, f"lsuv({label})", init, True) for a in acts for label, init in parsed_lsuv]
  jobs.sort(key=lambda j: acts.index(j[0]))  # group by activation
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
  """Runs the comparison from parsed command-line arguments.

  Every flag is checked before anything is computed (``--plot``'s folder too);
  errors are ``ValueError``/``TypeError``/``ImportError`` starting "jaxinit compare:".
  """
  out = out or sys.stdout
  err = sys.stderr if err is None else err
  acts = check_activations(args.activation)
  check_sizes(args.depth, args.width, args.batch, args.seed)
  inits = split_specs(args.inits, "--inits")
  lsuv_text = args.lsuv.strip() if isinstance(args.lsuv, str) else args.lsuv
  no_lsuv = isinstance(lsuv_text, str) and lsuv_text.lower() in ("", "none")
  lsuv = [] if no_lsuv else split_specs(args.lsuv, "--lsuv")
  if args.plot is not None:
    check_plot_path(args.plot)
  parse_flag("--inits", inits)  # every spec is read before the first run
  parse_flag("--lsuv", lsuv)
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
