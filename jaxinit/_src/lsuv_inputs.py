"""What the caller of :func:`jaxinit.lsuv` asked for, checked: options, layer selections, leaves.

Everything here runs at call time, before anything is traced or drawn, so a bad
argument raises one clear ``jaxinit.lsuv:`` error and nothing is modified.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src.checks import fail
from jaxinit._src.jaxpr.records import Layer
from jaxinit._src.paths import compile_pattern, path_str

Selector = str | Sequence[str] | Callable[[str], bool] | None

# Batches with fewer examples than this get a warning: variance estimates are noisy.
MIN_BATCH = 16


def selector(
  fn: str, arg: str, value: Any
) -> tuple[re.Pattern, ...] | Callable[[str], bool] | None:
  """``value`` of the ``layers``/``exclude`` argument as compiled patterns (or the function).

  Patterns are compiled with :func:`~jaxinit._src.paths.compile_pattern`, which
  refuses the ones Python's ``re`` cannot build (a repeat count beyond its range,
  nesting deeper than its recursion) and overlong ones with one clear error.
  """
  if value is None or callable(value):
    return value
  patterns = (value,) if isinstance(value, str) else value
  bad = fail(
    fn,
    f"`{arg}` must be a regular expression, a sequence of them, or a function "
    f"path -> bool, got {value!r:.80}.",
    TypeError,
  )
  if not isinstance(patterns, Sequence) or not all(isinstance(p, str) for p in patterns):
    raise bad
  return tuple(compile_pattern(fn, f"`{arg}`", p) for p in patterns)


def describe(sel: Any) -> str:
  """A selector as the caller wrote it (for messages)."""
  if callable(sel):
    return getattr(sel, "__name__", repr(sel))
  return repr(sel[0].pattern) if len(sel) == 1 else repr([p.pattern for p in sel])


def matches(sel: Any, path: str) -> bool:
  if callable(sel):
    return bool(sel(path))
  return any(p.search(path) for p in sel)


@dataclasses.dataclass(frozen=True)
class Options:
  """The checked keyword arguments of :func:`jaxinit.lsuv` (hashable: a static jit argument)."""

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

  def settings(self) -> tuple[float, float, int, bool]:
    """What the report shows: ``(target_var, tol, max_iters, exact)``."""
    return (self.target_var, self.tol, self.max_iters, self.exact)

  def selected(self, layer: Layer) -> bool:
    if self.layers is not None and not matches(self.layers, layer.path):
      return False
    return not (self.exclude is not None and matches(self.exclude, layer.path))


_ALLOWED = (
  "a numeric array (jax.Array, or a numpy array of bool, integer, floating-point or complex "
  "dtype) or a Python/numpy number"
)


def _leaf_problem(x: Any, shapes: bool) -> str | None:
  """Why ``x`` cannot be a leaf of the parameters or the batch, or None."""
  if isinstance(x, jax.Array) or (shapes and isinstance(x, jax.ShapeDtypeStruct)):
    return None
  if isinstance(x, (np.ndarray, np.generic)):
    if jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.bool_):
      return None
    return f"a numpy array of dtype {x.dtype}"
  if isinstance(x, (bool, float, complex)):
    return None
  if isinstance(x, int):
    bits = 64 if jax.config.read("jax_enable_x64") else 32
    if -(2 ** (bits - 1)) <= x < 2 ** (bits - 1):
      return None
    return f"a Python int of {x.bit_length()} bits, which does not fit in int{bits}"
  try:
    shown = repr(x)
  except Exception:  # a repr that fails must not hide the message
    shown = "?"
  shown = shown if len(shown) <= 60 else shown[:57] + "..."
  return f"of type {type(x).__name__} ({shown})"


def check_leaves(fn: str, what: str, tree: Any, paths: Sequence[str] | None, shapes: bool) -> None:
  """One clear error for the first leaf of ``tree`` that is not an array or a number.

  ``what`` names the tree in the message (``'params'``, ``'the batch'``);
  ``paths`` are the leaves' display paths (default: the '/'-joined pytree
  paths); ``shapes`` also admits ``jax.ShapeDtypeStruct`` (nothing is computed).
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  for n, (path, x) in enumerate(flat):
    problem = _leaf_problem(x, shapes)
    if problem is None:
      continue
    where = paths[n] if paths is not None and len(paths) == len(flat) else path_str(path)
    allowed = _ALLOWED + (" or a jax.ShapeDtypeStruct" if shapes else "")
    raise fail(
      fn,
      f"{what} leaf {where or '(the root)'!r} is {problem}; every leaf must be {allowed}.",
      TypeError,
    )


def check_batch(fn: str, batch: Any) -> None:
  """The batch holds arrays with at least 2 examples along the leading axis (warns under 16)."""
  leaves = [x for x in jax.tree_util.tree_leaves(batch) if hasattr(x, "shape")]
  if not leaves:
    raise fail(fn, f"the batch must contain arrays, got {type(batch).__name__}.", TypeError)
  x = leaves[0]
  if len(x.shape) == 0:
    raise fail(
      fn,
      "the batch's first array is a scalar; LSUV needs a batch of examples along the leading axis.",
    )
  n = x.shape[0]
  if n < 2:
    raise fail(
      fn,
      f"the batch holds {n} example(s) along its leading axis; LSUV estimates "
      "variances over a batch, so pass at least 2 (ideally 64 or more).",
    )
  if n < MIN_BATCH:
    warnings.warn(
      f"jaxinit.{fn}: the batch holds only {n} examples; variance estimates from "
      f"fewer than {MIN_BATCH} are noisy.",
      UserWarning,
      stacklevel=3,
    )
