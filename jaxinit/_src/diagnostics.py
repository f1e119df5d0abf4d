"""Init-time diagnostics: signal propagation, gradient norms, Jacobian spectra.

Each function takes a model in the three call forms of :func:`jaxinit.lsuv`
(linen ``(module, variables, batch)``, nnx ``(model, batch)``, pure function
``(apply_fn, params, batch)``), evaluates it under ``jax.jit`` (the compiled
program is cached per model, shapes and options, so comparing initializations
of one architecture compiles once) and returns a host-side report with a
printable table. Nothing is modified.

* :func:`signal_propagation` runs LSUV's layer discovery on the model's jaxpr
  and records, per linear/conv layer in execution order, the mean and variance
  of its output and of the activation that follows it.
* :func:`gradient_norms` gives ``||grad p||`` and ``||grad p|| / ||p||`` per
  parameter for a loss of the model's output.
* :func:`jacobian_spectrum` gives the singular values of the input–output
  Jacobian of one example: exactly (the Jacobian is built with
  ``jacfwd``/``jacrev`` and its SVD taken in float64) or estimated by Lanczos
  on ``J^T J`` (or ``J J^T``) with Jacobian-vector products only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinit._src.checks import canonical_key, check_choice, check_int, fail, short_repr
from jaxinit._src.frameworks import bind as models
from jaxinit._src.jaxpr import run as jaxpr_run
from jaxinit._src.jaxpr.program import trace
from jaxinit._src.jaxpr.records import Layer

_HIGHEST = lax.Precision.HIGHEST


# ---------------------------------------------------------------------------
# Binding the three call forms.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Model:
  apply: Callable[..., Any]  # apply(params, *args), hashable where possible
  params: Any
  args: tuple
  batch_pos: int  # position of the user's batch in args
  paths: list[str]


def _bind(fn: str, model: Any, args: tuple, model_kwargs: Mapping[str, Any] | None) -> _Model:
  """The model as LSUV binds it (:func:`jaxinit._src.models.bind`): one pure ``apply``."""
  bound = models.bind(fn, model, args, model_kwargs)
  pos = 0 if bound.style == "function" else 1
  return _Model(bound.apply, bound.params, tuple(bound.args), pos, list(bound.paths))


def _check_concrete(fn: str, *trees: Any) -> None:
  if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(trees)):
    raise fail(
      fn,
      "diagnostics return host-side reports; call them outside jax.jit / "
      "jax.grad (on concrete parameters and batch).",
      TypeError,
    )


def _batch_size(fn: str, batch: Any) -> int:
  leaves = [x for x in jax.tree_util.tree_leaves(batch) if hasattr(x, "shape")]
  if not leaves or any(len(x.shape) == 0 for x in leaves):
    raise fail(
      fn, "the batch must be an array (or a pytree of arrays) with a leading batch axis.", TypeError
    )
  return int(leaves[0].shape[0])


def _hashable(*objs: Any) -> bool:
  try:
    hash(objs)
  except TypeError:
    return False
  return True


def _cached_jit(impl: Callable[..., Any], static: tuple) -> Callable[..., Any]:
  """``impl`` partially applied to hashable ``static`` args, jitted with caching."""
  if _hashable(*static):
    return functools.partial(_JITTED[impl], *static)
  return jax.jit(functools.partial(impl, *static))


_JITTED: dict[Callable, Callable] = {}


def _register_jit(n_static: int):
  def wrap(impl):
    _JITTED[impl] = jax.jit(impl, static_argnums=tuple(range(n_static)))
    return impl

  return wrap


def _fmt(x: float) -> str:
  if not math.isfinite(x):
    return str(x)
  if x == 0:
    return "0"
  if 1e-3 <= abs(x) < 1e4:
    return f"{x:.4g}"
  return f"{x:.3e}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [
    max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
  ]
  line = "  ".join(
    h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
  )
  out = [line, "-" * len(line)]
  for r in rows:
    out.append(
      "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
      )
    )
  return "\n".join(out)


# ---------------------------------------------------------------------------
# Signal propagation.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SignalReport:
  """Per-layer statistics of a forward pass, in execution order.

  Attributes:
    paths: the weight path of each layer (as :func:`jaxinit.find_layers`).
    kinds: ``'dot'`` or ``'conv'``.
    fan_in: weight entries summed per output entry.
    fan_out: output features.
    mean, var: mean and variance over all entries of each layer's output
      (the dot/conv result plus its bias — what the layer returns).
    post_mean, post_var: the same for the activation that follows the layer
      (the end of the elementwise chain after it; equal to the output when
      nothing elementwise follows).
    input_mean, input_var: the same for the batch (its floating leaves).
  """

  paths: tuple[str, ...]
  kinds: tuple[str, ...]
  fan_in: tuple[int, ...]
  fan_out: tuple[int, ...]
  mean: np.ndarray
  var: np.ndarray
  post_mean: np.ndarray
  post_var: np.ndarray
  input_mean: float
  input_var: float

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def ratio(self) -> float:
    """var(last layer output) / var(first layer output)."""
    return float(self.var[-1] / self.var[0]) if len(self) else math.nan

  def rows(self) -> list[dict[str, Any]]:
    return [
      {
        "layer": i,
        "path": p,
        "kind": k,
        "fan_in": fi,
        "fan_out": fo,
        "mean": float(m),
        "var": float(v),
        "post_mean": float(pm),
        "post_var": float(pv),
      }
      for i, (p, k, fi, fo, m, v, pm, pv) in enumerate(
        zip(
          self.paths,
          self.kinds,
          self.fan_in,
          self.fan_out,
          self.mean,
          self.var,
          self.post_mean,
          self.post_var,
          strict=True,
        )
      )
    ]

  def __str__(self) -> str:
    rows = [
      [
        str(r["layer"]),
        r["path"],
        r["kind"],
        str(r["fan_in"]),
        _fmt(r["mean"]),
        _fmt(r["var"]),
        _fmt(r["post_mean"]),
        _fmt(r["post_var"]),
      ]
      for r in self.rows()
    ]
    head = (
      f"input: mean {_fmt(self.input_mean)}, var {_fmt(self.input_var)}; "
      f"var last/first layer output: {_fmt(self.ratio)}\n"
    )
    return head + _table(
      ["#", "layer", "kind", "fan_in", "mean", "var", "post mean", "post var"], rows
    )


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  m = jnp.mean(x)
  return m, jnp.mean(jnp.square(x - m))


@_register_jit(2)
def _signal_impl(apply, batch_pos, params, args):
  """One forward pass through LSUV's interpreter, recording moments at every layer."""
  prog = trace(
    "diagnostics.signal_propagation", apply, params, args, models.param_paths(apply, params)
  )
  out: dict[int, tuple] = {}
  post: dict[int, tuple] = {}

  def hook(io):
    out[io.layer.index] = _moments(io.pre if io.bias_term is None else io.pre + io.bias_term)

  def on_post(layer, value):
    post[layer.index] = _moments(value)

  jaxpr_run.evaluate(
    prog,
    jax.tree_util.tree_leaves(params),
    jax.tree_util.tree_leaves(tuple(args)),
    hook=hook,
    on_post=on_post,
  )
  n = len(prog.layers)
  column = lambda d, k: jnp.stack([d[i][k] for i in range(n)])
  floats = [
    x.astype(jnp.float32).reshape(-1)
    for x in jax.tree_util.tree_leaves(args[batch_pos])
    if jnp.issubdtype(x.dtype, jnp.floating)
  ]
  in_m, in_v = _moments(jnp.concatenate(floats)) if floats else (jnp.float32(jnp.nan),) * 2
  return column(out, 0), column(out, 1), column(post, 0), column(post, 1), in_m, in_v


def signal_propagation(
  model: Any,
  *args: Any,
  model_kwargs: dict[str, Any] | None = None,
) -> SignalReport:
  """Mean and variance of every linear/conv layer's output and activation, in execution order.

  The layers are those :func:`jaxinit.find_layers` (LSUV's discovery) finds:
  every ``dot_general`` or convolution that reads a parameter — dense,
  einsum, attention projections, convolutions of any rank — in the order the
  forward pass calls them (right for residual and branched networks). One
  forward pass under ``jax.jit`` records, for each, the mean and variance
  over all entries of its output (with its bias) and of the activation that
  follows it.

  Three call forms, as :func:`jaxinit.lsuv`: ``signal_propagation(module,
  variables, batch)`` (linen), ``signal_propagation(model, batch)`` (nnx),
  ``signal_propagation(apply_fn, params, batch)`` (any pure function).

  Args:
    model: a linen ``nn.Module``, an ``nnx.Module`` or ``apply_fn(params,
      batch)``.
    *args: ``variables, batch`` / ``batch`` / ``params, batch``.
    model_kwargs: keyword arguments for the model call (``{'train': False}``).

  Returns:
    A :class:`SignalReport`; ``print`` it for a table, or plot it with
    :func:`plot_signal_propagation`.

  Raises:
    ValueError: no layers were found. TypeError: traced arguments (call it
      outside ``jax.jit``) or a wrong call form.

  Examples:
    A deep linear network with He-scaled weights keeps the variance flat:

    >>> import jax, jax.numpy as jnp, jaxinit
    >>> from jaxinit import diagnostics
    >>> def mlp(params, x):
    ...   for w in params:
    ...     x = jax.nn.relu(x @ w)
    ...   return x
    >>> keys = jax.random.split(jax.random.key(0), 10)
    >>> params = [jaxinit.he_normal()(k, (256, 256)) for k in keys]
    >>> x = jax.random.normal(jax.random.key(1), (512, 256))
    >>> report = diagnostics.signal_propagation(mlp, params, x)
    >>> report.paths[:2], len(report)
    (('0', '1'), 10)
    >>> bool(0.5 < report.ratio < 2)
    True
  """
  fn = "diagnostics.signal_propagation"
  m = _bind(fn, model, args, model_kwargs)
  _check_concrete(fn, m.params, m.args)
  if not _batch_size(fn, m.args[m.batch_pos]):  # means and variances of nothing are NaN
    raise fail(fn, "the batch holds 0 examples; statistics need at least one.")
  prog = trace(fn, m.apply, m.params, m.args, m.paths)
  if not prog.layers:
    raise fail(
      fn, "found no linear layers (dot_general or convolution reading a parameter) in the model."
    )
  out = _cached_jit(_signal_impl, (m.apply, m.batch_pos))(m.params, m.args)
  mean, var, pmean, pvar, in_m, in_v = jax.device_get(out)
  lays = prog.layers
  return SignalReport(
    paths=tuple(lay.path for lay in lays),
    kinds=tuple(lay.kind for lay in lays),
    fan_in=tuple(lay.fan_in for lay in lays),
    fan_out=tuple(lay.fan_out for lay in lays),
    mean=np.asarray(mean, np.float64),
    var=np.asarray(var, np.float64),
    post_mean=np.asarray(pmean, np.float64),
    post_var=np.asarray(pvar, np.float64),
    input_mean=float(in_m),
    input_var=float(in_v),
  )


@_register_jit(1)
def _outputs_impl(apply, params, args):
  """One forward pass through LSUV's interpreter, keeping every layer's output (with its bias)."""
  prog = trace("diagnostics.layer_outputs", apply, params, args, models.param_paths(apply, params))
  out: dict[int, jax.Array] = {}

  def hook(io):
    out[io.layer.index] = io.pre if io.bias_term is None else io.pre + io.bias_term

  jaxpr_run.evaluate(
    prog, jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(tuple(args)), hook=hook
  )
  return tuple(out[i] for i in range(len(prog.layers)))


def layer_outputs(
  model: Any, *args: Any, model_kwargs: dict[str, Any] | None = None
) -> tuple[tuple[Layer, ...], tuple[jax.Array, ...]]:
  """The output of every linear/conv layer :func:`jaxinit.find_layers` lists, as arrays.

  What :func:`signal_propagation` summarizes, whole: each layer's output (its
  dot/conv result plus its bias), in execution order, from one forward pass.
  Unlike the other diagnostics it is traceable: called inside ``jax.jit`` or
  ``jax.grad`` it returns traced arrays (the layer list is found from shapes
  alone), which is how :func:`coord_check` compares a layer's output during
  training with its output at initialization.

  Args:
    model: a linen ``nn.Module``, an ``nnx.Module`` or ``apply_fn(params,
      batch)``.
    *args: ``variables, batch`` / ``batch`` / ``params, batch``.
    model_kwargs: keyword arguments for the model call.

  Returns:
    ``(layers, outputs)``: the :class:`jaxinit.Layer` tuple of
    :func:`jaxinit.find_layers` and one array per layer, of shape
    ``layer.output_shape``.

  Raises:
    ValueError: no layers were found. TypeError: a wrong call form.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxinit import diagnostics
    >>> f = lambda p, x: jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]
    >>> p = {"w1": jnp.ones((3, 4)), "b1": jnp.ones(4), "w2": jnp.ones((4, 2))}
    >>> layers, outs = diagnostics.layer_outputs(f, p, jnp.ones((5, 3)))
    >>> [(lay.path, out.shape) for lay, out in zip(layers, outs)]
    [('w1', (5, 4)), ('w2', (5, 2))]
    >>> float(outs[0][0, 0])  # 3 ones summed, plus the bias
    4.0
  """
  fn = "diagnostics.layer_outputs"
  m = _bind(fn, model, args, model_kwargs)
  _batch_size(fn, m.args[m.batch_pos])
  prog = trace(fn, m.apply, m.params, m.args, m.paths)
  if not prog.layers:
    raise fail(
      fn, "found no linear layers (dot_general or convolution reading a parameter) in the model."
    )
  return prog.layers, _cached_jit(_outputs_impl, (m.apply,))(m.params, m.args)


# ---------------------------------------------------------------------------
# Gradient norms.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GradientReport:
  """Per-parameter gradient norms of a loss at the current parameters.

  Attributes:
    paths: every floating parameter leaf, in pytree order.
    grad_norm: ``||grad p||`` (Frobenius).
    param_norm: ``||p||``.
    loss: the loss value.
  """

  paths: tuple[str, ...]
  shapes: tuple[tuple[int, ...], ...]
  grad_norm: np.ndarray
  param_norm: np.ndarray
  loss: float

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def ratio(self) -> np.ndarray:
    """``||grad p|| / ||p||`` per parameter (inf where ``||p|| = 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
      return self.grad_norm / self.param_norm

  def select(self, paths: Sequence[str]) -> GradientReport:
    """The rows for ``paths``, in that order (e.g. the weights in execution order)."""
    idx = [self.paths.index(p) for p in paths]
    return GradientReport(
      tuple(self.paths[i] for i in idx),
      tuple(self.shapes[i] for i in idx),
      self.grad_norm[idx],
      self.param_norm[idx],
      self.loss,
    )

  def rows(self) -> list[dict[str, Any]]:
    return [
      {"path": p, "shape": s, "grad_norm": float(g), "param_norm": float(n), "ratio": float(r)}
      for p, s, g, n, r in zip(
        self.paths, self.shapes, self.grad_norm, self.param_norm, self.ratio, strict=True
      )
    ]

  def __str__(self) -> str:
    rows = [
      [
        r["path"],
        "x".join(map(str, r["shape"])) or "()",
        _fmt(r["grad_norm"]),
        _fmt(r["param_norm"]),
        _fmt(r["ratio"]),
      ]
      for r in self.rows()
    ]
    return f"loss {_fmt(self.loss)}\n" + _table(
      ["parameter", "shape", "|grad|", "|param|", "|grad|/|param|"], rows
    )


def default_loss(output: Any) -> jax.Array:
  """Half the mean square of every floating entry of the output: 0.5 * mean(y^2).

  The loss :func:`gradient_norms` uses by default: with it, ``dL/dy = y / y.size``, so
  the gradients reaching each layer measure how the network propagates its own
  output back, with no labels.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxinit import diagnostics
    >>> float(diagnostics.default_loss({"a": jnp.array([1.0, 3.0]), "b": jnp.array([2.0])}))
    2.333...
  """
  fn = "diagnostics.default_loss"
  every = jax.tree_util.tree_leaves(output)
  for y in every:
    if not hasattr(y, "dtype") or not hasattr(y, "size"):
      raise fail(fn, f"`output` must hold arrays, got a leaf {short_repr(y)}.", TypeError)
  leaves = [y for y in every if jnp.issubdtype(y.dtype, jnp.floating)]
  count = sum(y.size for y in leaves)
  if not count:  # the mean of nothing would be NaN
    raise fail(fn, "`output` holds no floating-point entries to take the mean square of.")
  total = sum(jnp.sum(jnp.square(y.astype(jnp.float32))) for y in leaves)
  return 0.5 * total / count


def _describe_aval(x: Any) -> str:
  if isinstance(x, jax.ShapeDtypeStruct):
    return f"an array of shape {x.shape} {x.dtype}"
  return short_repr(jax.tree_util.tree_map(lambda a: getattr(a, "shape", a), x))


def _norm(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.sqrt(jnp.sum(jnp.square(jnp.abs(x))))


@_register_jit(2)
def _grad_impl(apply, loss, params, args):
  floats = lambda t: [
    x for x in jax.tree_util.tree_leaves(t) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]

  def total(p):
    return jnp.asarray(loss(apply(p, *args)), jnp.float32)

  value, grads = jax.value_and_grad(total)(params)
  g = jnp.stack([_norm(x) for x in floats(grads)])
  w = jnp.stack([_norm(x) for x in floats(params)])
  return value, g, w


def gradient_norms(
  model: Any,
  *args: Any,
  loss: Callable[[Any], Any] | None = None,
  model_kwargs: dict[str, Any] | None = None,
) -> GradientReport:
  r"""Per-parameter gradient norm ``||dL/dp||`` and ``||dL/dp|| / ||p||`` at the current parameters.

  At initialization the ratio ``||grad W|| / ||W||`` is the relative size of
  a gradient step per layer: a healthy network has it of the same order in
  every layer; vanishing gradients show up as a ratio falling by orders of
  magnitude from the last layer to the first, exploding ones as the reverse.

  Args:
    model: a linen ``nn.Module``, an ``nnx.Module`` or ``apply_fn(params,
      batch)`` (call forms as :func:`jaxinit.lsuv`).
    *args: ``variables, batch`` / ``batch`` / ``params, batch``.
    loss: ``loss(output) -> scalar``; close over labels for a supervised loss
      (``lambda logits: optax.softmax_cross_entropy_with_integer_labels(
      logits, y).mean()``). Default :func:`default_loss`, half the mean
      square of the output (a regression onto zero targets).
    model_kwargs: keyword arguments for the model call.

  Returns:
    A :class:`GradientReport` with one row per floating parameter leaf.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> from jaxinit import diagnostics
    >>> params = {"w1": jnp.eye(4), "w2": 2 * jnp.eye(4)}
    >>> f = lambda p, x: (x @ p["w1"]) @ p["w2"]
    >>> report = diagnostics.gradient_norms(f, params, jnp.ones((8, 4)))
    >>> print(report)
    loss 2
    parameter  shape  |grad|  |param|  |grad|/|param|
    -------------------------------------------------
    w1           4x4       4        2               2
    w2           4x4       2        4             0.5
  """
  fn = "diagnostics.gradient_norms"
  m = _bind(fn, model, args, model_kwargs)
  _check_concrete(fn, m.params, m.args)
  if loss is None:
    loss = default_loss
  elif not callable(loss):
    raise fail(fn, f"`loss` must be a function of the model's output, got {loss!r:.60}.", TypeError)
  leaves = jax.tree_util.tree_flatten_with_path(m.params)[0]
  keep = [i for i, (_, x) in enumerate(leaves) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  if not keep:
    raise fail(fn, "the model has no floating-point parameters.")
  out = jax.eval_shape(lambda p, a: m.apply(p, *a), m.params, m.args)
  try:
    got = jax.eval_shape(loss, out)
  except Exception as e:  # user code (or default_loss's own error): one clear error
    if str(e).startswith("jaxinit."):
      raise
    raise fail(fn, f"`loss` failed on the model's output: {type(e).__name__}: {e}"[:400]) from None
  if getattr(got, "shape", None) != () or not jnp.issubdtype(got.dtype, jnp.floating):
    raise fail(
      fn,
      f"`loss` must return a float scalar, got {_describe_aval(got)}; reduce it (e.g. .mean()).",
      TypeError,
    )
  value, g, w = jax.device_get(_cached_jit(_grad_impl, (m.apply, loss))(m.params, m.args))
  return GradientReport(
    paths=tuple(m.paths[i] for i in keep),
    shapes=tuple(tuple(jnp.shape(leaves[i][1])) for i in keep),
    grad_norm=np.asarray(g, np.float64),
    param_norm=np.asarray(w, np.float64),
    loss=float(value),
  )


# ---------------------------------------------------------------------------
# Jacobian spectrum.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JacobianSpectrum:
  """Singular values of the input–output Jacobian J of one example.

  Attributes:
    singular_values: descending. ``method='exact'``: all min(m, n) of them;
      ``'lanczos'``: the Ritz estimates (as many as iterations), which lie
      inside [sigma_min, sigma_max] and converge from the ends inwards — the
      largest is accurate first.
    mean_squared: mean of sigma^2 over the min(m, n) singular values,
      ``||J||_F^2 / min(m, n)`` (exact, or an unbiased estimate for
      ``'lanczos'``, see :func:`jacobian_spectrum`); 1 under dynamical
      isometry, and the factor by which gradients are scaled on average.
    condition: sigma_max / sigma_min; for ``'lanczos'`` a lower bound
      (the smallest Ritz value overestimates sigma_min).
    shape: (m, n): output and input sizes of the example.
    method: ``'exact'`` or ``'lanczos'``.
  """

  singular_values: np.ndarray
  mean_squared: float
  condition: float
  shape: tuple[int, int]
  method: str

  @property
  def max(self) -> float:
    return float(self.singular_values[0])

  @property
  def min(self) -> float:
    return float(self.singular_values[-1])

  def __str__(self) -> str:
    bound = ">= " if self.method == "lanczos" else ""
    return (
      f"Jacobian {self.shape[0]}x{self.shape[1]} ({self.method}): sigma_max "
      f"{_fmt(self.max)}, sigma_min {_fmt(self.min)}, mean sigma^2 "
      f"{_fmt(self.mean_squared)}, condition {bound}{_fmt(self.condition)}"
    )


def _example_fn(apply, params, args, batch_pos, example):
  """f(x_flat) -> y_flat for one example, in float32, and x_flat.

  The model runs on a batch of two copies of the example and f reads the first
  row: a batch of one would make every layer a matrix-vector product, which
  XLA's CPU backend compiles about ten times slower than a matrix product.
  """
  batch = args[batch_pos]
  one = jax.tree_util.tree_map(lambda x: lax.dynamic_slice_in_dim(x, example, 1, axis=0), batch)
  leaves, treedef = jax.tree_util.tree_flatten(one)
  is_float = [jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]
  sizes = [x.size for x, f in zip(leaves, is_float, strict=True) if f]
  x0 = jnp.concatenate(
    [x.astype(jnp.float32).reshape(-1) for x, f in zip(leaves, is_float, strict=True) if f]
  )

  def f(xf):
    parts = jnp.split(xf, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [xf]
    it = iter(parts)
    new = [
      jnp.concatenate([next(it).reshape(x.shape).astype(x.dtype), x])
      if fl
      else jnp.concatenate([x, x])
      for x, fl in zip(leaves, is_float, strict=True)
    ]
    b = jax.tree_util.tree_unflatten(treedef, new)
    out = apply(params, *args[:batch_pos], b, *args[batch_pos + 1 :])
    ys = [y for y in jax.tree_util.tree_leaves(out) if jnp.issubdtype(y.dtype, jnp.floating)]
    if any(y.ndim == 0 or y.shape[0] != 2 for y in ys):
      raise fail(
        "diagnostics.jacobian_spectrum",
        "every floating output of the model must have a leading "
        f"batch axis (got output shapes {[tuple(y.shape) for y in ys]} for a batch of "
        "2); the Jacobian is that of one example's outputs.",
      )
    return jnp.concatenate([y[0].astype(jnp.float32).reshape(-1) for y in ys])

  return f, x0


@_register_jit(2)
def _jacobian_impl(apply, batch_pos, example, params, args):
  f, x0 = _example_fn(apply, params, args, batch_pos, example)
  m = jax.eval_shape(f, x0).shape[0]
  n = x0.shape[0]
  return jax.jacfwd(f)(x0) if n <= m else jax.jacrev(f)(x0)


@_register_jit(3)
def _matvec_impl(apply, batch_pos, side, example, params, args, v):
  """A v with A = J^T J (side 'in') or J J^T (side 'out'), J the example's Jacobian."""
  f, x0 = _example_fn(apply, params, args, batch_pos, example)
  _, jvp = jax.linearize(f, x0)
  vjp = lambda u: jax.linear_transpose(jvp, x0)(u)[0]
  return vjp(jvp(v)) if side == "in" else jvp(vjp(v))


def _orthogonalize(v: np.ndarray, basis: np.ndarray) -> np.ndarray:
  for _ in range(2):  # twice is enough (Kahan–Parlett)
    v = v - basis.T @ (basis @ v)
  return v


def lanczos(
  matvec: Callable[[np.ndarray], np.ndarray],
  v0: np.ndarray,
  num_iters: int,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Lanczos tridiagonalization with full reorthogonalization, on the host in float64.

  Returns the diagonal ``alpha`` (num_iters) and off-diagonal ``beta``
  (num_iters - 1) of T = V^T A V and the orthonormal basis V (num_iters, d).
  At a breakdown (``beta`` below 1e-5 of the running estimate of ||A||: an
  invariant subspace, e.g. A = I after one step, or the numerical null space
  of a rank-deficient A) the next vector is a fresh random one, orthogonalized,
  and ``beta`` is 0, so T stays the exact projection. Only ``matvec`` runs on
  the device: the loop compiles nothing.
  """
  d = v0.shape[0]
  basis = np.zeros((num_iters, d))
  alpha = np.zeros(num_iters)
  beta = np.zeros(max(num_iters - 1, 0))
  v = v0 / np.linalg.norm(v0)
  scale = 0.0
  for j in range(num_iters):
    basis[j] = v
    w = np.asarray(matvec(v), np.float64)
    alpha[j] = v @ w
    w = _orthogonalize(w, basis[: j + 1])
    b = float(np.linalg.norm(w))
    scale = max(scale, abs(alpha[j]) + (beta[j - 1] if j else 0.0) + b)
    if j == num_iters - 1:
      break
    if b <= 1e-5 * scale or b == 0.0:
      r = _orthogonalize(np.asarray(rng.standard_normal(d)), basis[: j + 1])
      v, beta[j] = r / np.linalg.norm(r), 0.0
    else:
      v, beta[j] = w / b, b
  return alpha, beta, basis


def jacobian_spectrum(
  model: Any,
  *args: Any,
  method: str = "auto",
  num_iters: int = 32,
  num_probes: int = 16,
  example: int = 0,
  key: jax.Array | None = None,
  model_kwargs: dict[str, Any] | None = None,
) -> JacobianSpectrum:
  r"""Singular values of the input–output Jacobian of one example.

  ``J = d output / d input`` for example ``example`` of the batch, evaluated
  on that example alone (in a batch of two copies of it, which XLA compiles
  faster than a batch of one; use ``model_kwargs`` to put batch norm in
  inference mode). Dynamical isometry (Pennington et al. 2017) is all
  singular values near 1: gradients then pass through depth undistorted.
  The input and output are the model's floating leaves, flattened.

  * ``method='exact'``: J is built column by column (``jacfwd`` when the input
    is the smaller side, else ``jacrev``) and its singular values taken in
    float64 on the host — costs min(m, n) Jacobian-vector products.
  * ``method='lanczos'``: ``num_iters`` steps of Lanczos with full
    reorthogonalization on ``J^T J`` (or ``J J^T``, the smaller side), one
    ``jvp`` and one ``vjp`` per step, never forming J. The Ritz values
    approximate the extreme singular values (the largest converges first);
    ``condition`` is a lower bound. ``mean_squared`` is ``tr(T)`` (exact on
    the Krylov space, which holds the dominant directions) plus a Hutchinson
    estimate of the trace on its complement with ``num_probes`` Rademacher
    probes: unbiased, and exact when ``num_iters`` reaches min(m, n).
  * ``'auto'``: exact when min(m, n) <= 1024, else Lanczos.

  Args:
    model: a linen ``nn.Module``, an ``nnx.Module`` or ``apply_fn(params,
      batch)`` (call forms as :func:`jaxinit.lsuv`).
    *args: ``variables, batch`` / ``batch`` / ``params, batch``.
    method: ``'auto'``, ``'exact'`` or ``'lanczos'``.
    num_iters: Lanczos steps (capped at min(m, n)).
    num_probes: Hutchinson probes for ``mean_squared`` (Lanczos only).
    example: which example of the batch.
    key: PRNG key for the Lanczos start vector and probes (default key 0).
    model_kwargs: keyword arguments for the model call.

  Returns:
    A :class:`JacobianSpectrum`.

  Examples:
    A deep linear network of orthogonal matrices has J orthogonal: every
    singular value is 1.

    >>> import jax, jax.numpy as jnp, jaxinit
    >>> from jaxinit import diagnostics
    >>> def linear(params, x):
    ...   for w in params:
    ...     x = x @ w
    ...   return x
    >>> ws = [jnp.linalg.qr(jax.random.normal(k, (64, 64)))[0]
    ...       for k in jax.random.split(jax.random.key(0), 20)]
    >>> spec = diagnostics.jacobian_spectrum(linear, ws, jnp.ones((4, 64)))
    >>> spec.method, len(spec.singular_values), bool(abs(spec.max - 1) < 1e-5)
    ('exact', 64, True)
    >>> spec = diagnostics.jacobian_spectrum(linear, ws, jnp.ones((4, 64)), method="lanczos")
    >>> bool(abs(spec.condition - 1) < 1e-5)
    True
  """
  fn = "diagnostics.jacobian_spectrum"
  method = check_choice(fn, "method", method, ("auto", "exact", "lanczos"))
  num_iters = check_int(fn, "num_iters", num_iters, minimum=1)
  num_probes = check_int(fn, "num_probes", num_probes, minimum=1)
  example = check_int(fn, "example", example, minimum=0)
  key = jax.random.key(0) if key is None else canonical_key(fn, key)
  m_ = _bind(fn, model, args, model_kwargs)
  _check_concrete(fn, m_.params, m_.args)
  size = _batch_size(fn, m_.args[m_.batch_pos])
  if example >= size:
    raise fail(fn, f"`example`={example} is out of range for a batch of {size}.")

  def sizes(params, args):
    f, x0 = _example_fn(m_.apply, params, args, m_.batch_pos, example)
    return f(x0), x0

  y_shape, x_shape = jax.eval_shape(sizes, m_.params, m_.args)
  m, n = y_shape.shape[0], x_shape.shape[0]
  if m == 0 or n == 0:
    raise fail(
      fn, f"the Jacobian of one example is {m}x{n}; the model needs floating inputs and outputs."
    )
  if method == "auto":
    method = "exact" if min(m, n) <= 1024 else "lanczos"
  if method == "exact":
    jac = jax.device_get(
      _cached_jit(_jacobian_impl, (m_.apply, m_.batch_pos))(example, m_.params, m_.args)
    )
    s = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)
    mean_sq = float(np.mean(s**2))
  else:
    k = min(num_iters, min(m, n))
    side, d = ("in", n) if n <= m else ("out", m)
    run = _cached_jit(_matvec_impl, (m_.apply, m_.batch_pos, side))
    matvec = lambda v: jax.device_get(run(example, m_.params, m_.args, jnp.asarray(v, jnp.float32)))
    seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).tolist()
    rng = np.random.default_rng(seed)
    alpha, beta, basis = lanczos(matvec, rng.standard_normal(d), k, rng)
    from scipy.linalg import eigh_tridiagonal

    theta = eigh_tridiagonal(alpha, beta, eigvals_only=True) if k > 1 else alpha
    s = np.sqrt(np.clip(theta, 0.0, None))
    # ||J||_F^2 = tr(A) = tr(V^T A V) + tr(P A P) with P = I - V V^T: the first is sum(alpha),
    # exact on the Krylov space that holds the dominant directions; the second a Hutchinson
    # estimate with Rademacher probes projected by P (0 when k = d).
    rest = 0.0
    if k < d:
      for _ in range(num_probes):
        g = _orthogonalize(rng.choice([-1.0, 1.0], size=d), basis)
        rest += float(g @ np.asarray(matvec(g), np.float64)) / num_probes
    mean_sq = (float(np.sum(alpha)) + rest) / min(m, n)
  s = np.sort(s)[::-1]
  with np.errstate(divide="ignore", invalid="ignore"):
    cond = float(s[0] / s[-1]) if s[-1] > 0 else math.inf
  return JacobianSpectrum(s, mean_sq, cond, (int(m), int(n)), method)


# ---------------------------------------------------------------------------
# Plots (matplotlib is optional).
# ---------------------------------------------------------------------------


def _pyplot(fn: str):
  try:
    import matplotlib.pyplot as plt
  except ImportError:
    raise ImportError(
      f"jaxinit.{fn} needs matplotlib: pip install matplotlib "
      "(or pip install 'jaxinit[notebooks]')."
    ) from None
  return plt


def _labelled(fn: str, reports: Any, cls: type) -> list[tuple[str | None, Any]]:
  if isinstance(reports, cls):
    return [(None, reports)]
  if isinstance(reports, Mapping):
    items = list(reports.items())
  else:
    raise fail(
      fn,
      f"expected a {cls.__name__} or a dict label -> {cls.__name__}, got {type(reports).__name__}.",
      TypeError,
    )
  for label, r in items:
    if not isinstance(r, cls):
      raise fail(
        fn,
        f"{label!r} maps to {type(r).__name__}, not a {cls.__name__}.",
        TypeError,
      )
  return [(str(k), v) for k, v in items]


def _axes(plt, ax):
  if ax is None:
    _, ax = plt.subplots(figsize=(6, 4))
  return ax


def plot_signal_propagation(
  reports: Any, *, quantity: str = "var", ax: Any = None, logy: bool = True
) -> Any:
  """Draws a per-layer statistic of one or several :class:`SignalReport` against depth.

  Args:
    reports: a report, or a dict ``label -> report`` (one line each).
    quantity: ``'var'`` (layer output variance), ``'post_var'`` (variance
      after the activation), ``'mean'`` or ``'post_mean'``.
    ax: a matplotlib Axes (default: a new figure).
    logy: logarithmic y axis (variances across depth span decades).

  Returns:
    The Axes; line ``i`` holds ``(layer index, value)`` of report ``i``.

  Examples:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from jaxinit import diagnostics
    >>> r = diagnostics.SignalReport(("0", "1"), ("dot", "dot"), (4, 4), (4, 4),
    ...     np.zeros(2), np.array([1.0, 0.5]), np.zeros(2), np.ones(2), 0.0, 1.0)
    >>> ax = diagnostics.plot_signal_propagation({"a": r})
    >>> ax.lines[0].get_ydata().tolist()
    [1.0, 0.5]
  """
  fn = "diagnostics.plot_signal_propagation"
  quantity = check_choice(fn, "quantity", quantity, ("var", "post_var", "mean", "post_mean"))
  plt = _pyplot(fn)
  ax = _axes(plt, ax)
  for label, r in _labelled(fn, reports, SignalReport):
    y = getattr(r, quantity)
    ax.plot(np.arange(len(y)), y, marker="." if len(y) < 60 else None, label=label)
  if logy and quantity.endswith("var"):
    ax.set_yscale("log")
  ax.set_xlabel("layer (execution order)")
  names = {
    "var": "variance of layer output",
    "post_var": "variance after activation",
    "mean": "mean of layer output",
    "post_mean": "mean after activation",
  }
  ax.set_ylabel(names[quantity])
  if any(label is not None for label, _ in _labelled(fn, reports, SignalReport)):
    ax.legend(fontsize=8)
  return ax


def plot_gradient_norms(
  reports: Any,
  *,
  quantity: str = "grad_norm",
  paths: Sequence[str] | None = None,
  ax: Any = None,
  logy: bool = True,
) -> Any:
  """Draws per-parameter gradient norms of one or several :class:`GradientReport`.

  Args:
    reports: a report, or a dict ``label -> report``.
    quantity: ``'grad_norm'`` or ``'ratio'`` (``||grad|| / ||param||``).
    paths: which parameters, in this order along the x axis (default: the
      2-D-or-larger ones, i.e. the weights, in pytree order; pass
      ``signal_report.paths`` for execution order).
    ax: a matplotlib Axes (default: a new figure).
    logy: logarithmic y axis.

  Returns:
    The Axes.

  Examples:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from jaxinit import diagnostics
    >>> r = diagnostics.GradientReport(("w0", "b0", "w1"), ((4, 4), (4,), (4, 4)),
    ...     np.array([1.0, 9.0, 0.1]), np.ones(3), 0.5)
    >>> diagnostics.plot_gradient_norms(r).lines[0].get_ydata().tolist()
    [1.0, 0.1]
  """
  fn = "diagnostics.plot_gradient_norms"
  quantity = check_choice(fn, "quantity", quantity, ("grad_norm", "ratio"))
  plt = _pyplot(fn)
  ax = _axes(plt, ax)
  items = _labelled(fn, reports, GradientReport)
  for label, r in items:
    sel = r.select(
      paths
      if paths is not None
      else [p for p, s in zip(r.paths, r.shapes, strict=True) if len(s) >= 2]
    )
    y = sel.grad_norm if quantity == "grad_norm" else sel.ratio
    ax.plot(np.arange(len(y)), y, marker="." if len(y) < 60 else None, label=label)
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel("weight (layer)")
  ax.set_ylabel(r"$\|\nabla W\|$" if quantity == "grad_norm" else r"$\|\nabla W\| / \|W\|$")
  if any(label is not None for label, _ in items):
    ax.legend(fontsize=8)
  return ax


def plot_jacobian_spectrum(
  spectra: Any, *, ax: Any = None, bins: int = 40, log: bool = True
) -> Any:
  """Histograms the singular values of one or several :class:`JacobianSpectrum`.

  Args:
    spectra: a spectrum, or a dict ``label -> spectrum``.
    ax: a matplotlib Axes (default: a new figure).
    bins: histogram bins (shared, log-spaced when ``log``).
    log: logarithmic singular-value axis.

  Returns:
    The Axes.

  Examples:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from jaxinit import diagnostics
    >>> s = diagnostics.JacobianSpectrum(np.array([2.0, 1.0, 0.5]), 1.75, 4.0, (3, 3), "exact")
    >>> ax = diagnostics.plot_jacobian_spectrum({"x": s})
    >>> ax.get_xscale()
    'log'
  """
  fn = "diagnostics.plot_jacobian_spectrum"
  plt = _pyplot(fn)
  ax = _axes(plt, ax)
  items = _labelled(fn, spectra, JacobianSpectrum)
  values = np.concatenate([s.singular_values for _, s in items])
  positive = values[values > 0]
  if log and positive.size:
    lo, hi = positive.min(), positive.max()
    if hi <= lo * 1.0001:
      lo, hi = lo / 1.1, hi * 1.1
    edges: Any = np.geomspace(lo, hi, bins + 1)
  else:
    edges = bins
  for label, s in items:
    ax.hist(s.singular_values, bins=edges, histtype="step", density=False, lw=1.5, label=label)
  if log:
    ax.set_xscale("log")
  ax.set_xlabel("singular value of the input-output Jacobian")
  ax.set_ylabel("count")
  if any(label is not None for label, _ in items):
    ax.legend(fontsize=8)
  return ax
