"""The three ways JAX models are written, bound to one pure form (for LSUV and layer discovery).

``bind(fn, model, args, model_kwargs)`` turns

* a Flax linen module: ``(module, variables, batch)``,
* a Flax nnx module: ``(model, batch)``,
* a pure function: ``(apply_fn, params, batch)``, ``apply_fn(params, batch)``,

into a :class:`Bound`: a hashable ``apply(params, *args)`` (so jit can cache
its compilation), the parameter pytree that may be rewritten, the other
arguments, the display path of each parameter leaf, and ``rebuild``, which
turns new parameters back into what the caller expects (new linen variables;
an in-place ``nnx.update``; a new params pytree).

Only parameters are ever rewritten: linen collections other than ``'params'``
(``batch_stats``, ...) and nnx state other than ``nnx.Param`` (``BatchStat``,
RNG state) are passed in as ordinary arguments, and whatever the model call
mutates in them is discarded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxinit._src.checks import fail
from jaxinit._src.paths import path_str


@dataclasses.dataclass(frozen=True)
class Bound:
  apply: Callable[..., Any]
  params: Any
  args: tuple
  paths: list[str]
  rebuild: Callable[[Any], Any]
  style: str  # 'linen' | 'nnx' | 'function'


def _split_kwargs(kwargs: Mapping[str, Any]) -> tuple[Any, tuple, tuple]:
  """Splits call kwargs into array leaves (traced) and a hashable static rest."""
  leaves, treedef = jax.tree_util.tree_flatten(dict(kwargs))
  dynamic, static = [], []
  for x in leaves:
    if isinstance(x, (jax.Array, np.ndarray)):
      dynamic.append(x)
      static.append(_DYNAMIC)
    else:
      static.append(x)
  return treedef, tuple(static), tuple(dynamic)


class _Dynamic:
  def __repr__(self):
    return "<array>"


_DYNAMIC = _Dynamic()


def _join_kwargs(treedef, static: tuple, dynamic: tuple) -> dict:
  it = iter(dynamic)
  leaves = [next(it) if s is _DYNAMIC else s for s in static]
  return jax.tree_util.tree_unflatten(treedef, leaves)


@dataclasses.dataclass(frozen=True)
class _LinenApply:
  module: Any
  kw_def: Any
  kw_static: tuple

  def __call__(self, params, rest, batch, kw_dynamic):
    kwargs = _join_kwargs(self.kw_def, self.kw_static, kw_dynamic)
    return self.module.apply({"params": params, **rest}, batch, **kwargs)


@dataclasses.dataclass(frozen=True)
class _NnxApply:
  graphdef: Any
  kw_def: Any
  kw_static: tuple

  def __call__(self, params, rest, batch, kw_dynamic):
    from flax import nnx

    kwargs = _join_kwargs(self.kw_def, self.kw_static, kw_dynamic)
    model = nnx.merge(self.graphdef, params, rest)
    return model(batch, **kwargs)


@dataclasses.dataclass(frozen=True)
class _FnApply:
  fn: Callable[..., Any]
  kw_def: Any
  kw_static: tuple

  def __call__(self, params, batch, kw_dynamic):
    kwargs = _join_kwargs(self.kw_def, self.kw_static, kw_dynamic)
    return self.fn(params, batch, **kwargs)


def _paths(params: Any, strip_value: bool = False) -> list[str]:
  out = []
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    if (
      strip_value
      and path
      and isinstance(path[-1], jax.tree_util.GetAttrKey)
      and path[-1].name in ("value", "raw_value")
    ):
      path = path[:-1]
    out.append(path_str(path))
  return out


def _is_linen(model: Any) -> bool:
  try:
    from flax import linen as nn
  except ImportError:  # pragma: no cover - flax is a dependency
    return False
  return isinstance(model, nn.Module)


def _is_nnx(model: Any) -> bool:
  try:
    from flax import nnx
  except ImportError:  # pragma: no cover
    return False
  return isinstance(model, nnx.Module)


def bind(fn: str, model: Any, args: tuple, model_kwargs: Mapping[str, Any] | None) -> Bound:
  """Resolves the call form; errors name ``jaxinit.<fn>``."""
  if model_kwargs is None:
    model_kwargs = {}
  if not isinstance(model_kwargs, Mapping):
    raise fail(
      fn,
      "`model_kwargs` must be a dict of keyword arguments for the model call "
      f"(e.g. {{'train': False}}), got {model_kwargs!r:.80}.",
      TypeError,
    )
  kw_def, kw_static, kw_dyn = _split_kwargs(model_kwargs)

  if _is_linen(model):
    if len(args) != 2:
      raise fail(
        fn,
        f"a Flax linen module is called as jaxinit.{fn}(module, variables, batch, "
        f"...); got {len(args)} positional argument(s) after the module.",
        TypeError,
      )
    variables, batch = args
    if not isinstance(variables, Mapping) or "params" not in variables:
      if isinstance(variables, Mapping):
        got = f"a {type(variables).__name__} with keys {list(variables)}"
      elif hasattr(variables, "shape"):
        got = (
          f"an array of shape {tuple(variables.shape)} (did you pass the batch before the "
          "variables?)"
        )
      else:
        got = f"{type(variables).__name__}"
      raise fail(
        fn,
        "for a linen module the second argument must be the variables dict "
        f"returned by module.init (with a 'params' collection), got {got}.",
        TypeError,
      )
    rest = {k: v for k, v in variables.items() if k != "params"}

    def rebuild_linen(new_params):
      if hasattr(variables, "copy") and type(variables).__name__ == "FrozenDict":
        return variables.copy({"params": new_params})
      out = dict(variables)
      out["params"] = new_params
      return type(variables)(out) if isinstance(variables, dict) else out

    return Bound(
      _LinenApply(model, kw_def, kw_static),
      variables["params"],
      (rest, batch, kw_dyn),
      _paths(variables["params"]),
      rebuild_linen,
      "linen",
    )

  if _is_nnx(model):
    from flax import nnx

    if len(args) != 1:
      raise fail(
        fn,
        f"a Flax nnx module is called as jaxinit.{fn}(model, batch, ...) and is "
        f"updated in place; got {len(args)} positional argument(s) after the model.",
        TypeError,
      )
    batch = args[0]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

    def rebuild_nnx(new_params):
      nnx.update(model, new_params)

    apply = _NnxApply(graphdef, kw_def, kw_static)
    return Bound(
      apply, params, (rest, batch, kw_dyn), param_paths(apply, params), rebuild_nnx, "nnx"
    )

  if callable(model):
    if len(args) != 2:
      raise fail(
        fn,
        f"a model function is called as jaxinit.{fn}(apply_fn, params, batch, ...) "
        f"with apply_fn(params, batch); got {len(args)} positional argument(s) after "
        "the function.",
        TypeError,
      )
    params, batch = args
    return Bound(
      _FnApply(model, kw_def, kw_static),
      params,
      (batch, kw_dyn),
      _paths(params),
      lambda new_params: new_params,
      "function",
    )

  raise fail(
    fn,
    "the model must be a Flax linen module, a Flax nnx module or a function "
    f"apply_fn(params, batch), got {type(model).__name__}.",
    TypeError,
  )


def param_paths(apply: Callable[..., Any], params: Any) -> list[str]:
  """Display paths of the parameter leaves for a bound ``apply``."""
  return _paths(params, strip_value=isinstance(apply, _NnxApply))


def batch_of(bound: Bound) -> Any:
  """The user's batch among the bound arguments."""
  return bound.args[1] if bound.style in ("linen", "nnx") else bound.args[0]
