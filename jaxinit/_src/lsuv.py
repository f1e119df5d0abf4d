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
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxinit._src.checks import canonical_key, check_bool, check_int, check_real
from jaxinit._src.frameworks import bind as models
from jaxinit._src.jaxpr import run as jaxpr_run
from jaxinit._src.jaxpr import segments as jaxpr_segments
from jaxinit._src.jaxpr.keys import signature_is_portable
from jaxinit._src.jaxpr.program import trace
from jaxinit._src.jaxpr.records import Layer
from jaxinit._src.lsuv_inputs import Options, Selector, check_batch, check_leaves, selector
from jaxinit._src.lsuv_plan import Plan, all_finite
from jaxinit._src.lsuv_redraw import redraw, redraw_draw, redraw_layers, redraw_place
from jaxinit._src.lsuv_report import FN, STATUS, TINY, LSUVReport

__all__ = ["STATUS", "LSUVReport", "find_layers", "lsuv"]


def _lsuv_impl(apply, opts: Options, params, args, key):
  """LSUV as one traced computation (used under the caller's jit)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  prog = trace(FN, apply, params, args, models.param_paths(apply, params))
  plan = Plan(prog, opts)
  arg_leaves = jax.tree_util.tree_leaves(args)
  start = list(leaves) if key is None else redraw(prog, plan.selected, key, leaves)
  records: dict = {}
  _, new_leaves = jaxpr_run.evaluate(prog, start, arg_leaves, plan.hook(records))
  new_leaves, report = plan.finish(records, new_leaves, leaves, arg_leaves)
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


def _lsuv_eager(apply, opts: Options, params, args, key):
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
  plan = Plan(prog, opts)
  local: dict = {}
  cur = list(leaves)
  if key is not None:  # one compiled draw for all layers, one placement per distinct layer
    lays, rplan = redraw_layers(prog, plan.selected, cur)
    stacks = _piece(
      local, ("redraw", rplan), lambda: jax.jit(functools.partial(redraw_draw, rplan))
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
      place = _piece(local, sig, functools.partial(_jit_partial, redraw_place, prog, lay, sp))
      cur[lay.leaf] = place(stacks[g], np.int32(start), cur[lay.leaf])
  env = dict(zip(prog.arg_ids, arg_leaves, strict=True))
  for k, pid in enumerate(prog.param_ids):
    if pid not in prog.origin:
      env[pid] = cur[k]
  records: dict = {}
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
        seg_records: dict = {}
        outs, written = jaxpr_run.run_segment(
          prog, seg, live_in, seg_leaves, plan.hook(seg_records)
        )
        record = seg_records[lay.index]
        if scale_here:  # the final weight, scaled once (the forward pass used s * Wx)
          written[w_pos] = plan.scale_weight(
            lay, written.get(w_pos, seg_leaves[w_pos]), record.scale
          )
        return outs, written, record, all_finite(arg_leaves) if first else None

      return jax.jit(run)

    key = (
      "segment",
      opts.numeric(),
      plan.selected[lay.index],
      plan.centered[lay.index],
      seg.signature,
      tuple(_aval(x) for x in arg_leaves) if first else None,
    )
    outs, written, records[lay.index], seg_finite = _piece(local, key, build)(
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
  records, finite = jax.device_get((records, finite))
  report, _ = plan.report(records, bool(finite), xp=np)
  return jax.tree_util.tree_unflatten(treedef, _keep_shardings(leaves, cur)), report


def _keep_shardings(old: list, new: list) -> list:
  """``new``'s leaves on the shardings of ``old``'s where those were committed arrays: the
  jitted pieces return what XLA picks (the redraw's placement, for one, may drop a replicated
  axis of a tensor-parallel kernel), and a caller's parameters keep their layout."""
  out = []
  for a, b in zip(old, new, strict=True):
    if (
      isinstance(a, jax.Array)
      and isinstance(b, jax.Array)
      and a.committed
      and not b.sharding.is_equivalent_to(a.sharding, b.ndim)
    ):
      b = jax.device_put(b, a.sharding)
    out.append(b)
  return out


def _jit_partial(f: Callable, *args: Any) -> Callable:
  return jax.jit(functools.partial(f, *args))


def _aval(x) -> tuple:
  return (tuple(x.shape), str(x.dtype))


# ---------------------------------------------------------------------------
# The public entry point.
# ---------------------------------------------------------------------------


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
    target_var: the output variance to reach. It must be one the layers'
      dtypes can hold with a margin of 256 (at most ``finfo(float32).max / 256``
      for float32 outputs, ``finfo(float16).max**2 / 256`` for float16 ones; at
      least the smallest normal value times 256); others are refused at call
      time. Outputs whose squares overflow the compute dtype are measured
      exactly all the same (their deviations are scaled by a power of two).
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
      options; a ``target_var`` out of the layers' dtype range (see above);
      a selection pattern Python's ``re`` cannot build or longer than 4096
      characters.
    TypeError: a leaf of the parameters or of the batch that is not a
      numeric array or number (a string, an object array, a Python object),
      named by its path.

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
  opts = Options(
    tol=check_real(FN, "tol", tol, positive=True),
    max_iters=check_int(FN, "max_iters", max_iters, minimum=1),
    exact=check_bool(FN, "exact", exact),
    target_var=check_real(FN, "target_var", target_var, positive=True),
    center=check_bool(FN, "center", center),
    min_var=check_real(FN, "min_var", min_var, nonnegative=True),
    layers=selector(FN, "layers", layers),
    exclude=selector(FN, "exclude", exclude),
  )
  bound = models.bind(FN, model, args, model_kwargs)
  if key is not None:
    key = canonical_key(FN, key)
  check_leaves(FN, "`params`", bound.params, bound.paths, shapes=False)
  check_leaves(FN, "the batch", models.batch_of(bound), None, shapes=False)
  check_batch(FN, models.batch_of(bound))
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
      setattr(err, "report", report)  # noqa: B010 (documented attribute)
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
  check_leaves("find_layers", "`params`", bound.params, bound.paths, shapes=True)
  check_leaves("find_layers", "the batch", models.batch_of(bound), None, shapes=True)
  return trace("find_layers", bound.apply, bound.params, bound.args, bound.paths).layers
