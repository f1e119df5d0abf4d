"""Running a draw: one compilation per (initializer, shape, dtype, sharding).

An initializer's ``_sample(key, shape, dtype)`` is traced inside :func:`run`'s
jitted program, never eagerly, so an eager call and a call inside a user's
``jax.jit`` produce bit-identical arrays. With an output sharding, the random
bits are laid out so each device generates only its own shard (see
:func:`bits_shape`); the values never depend on the sharding.
"""

from __future__ import annotations

import contextvars
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src.checks import Array, Sharding, complex_of, compute_dtype, fail, is_complex
from jaxinit._src.sharding import check_sharding, explicit_context, grouped_shape, sharded_axes

# How the draw being traced lays out its random bits. ``False``: the output is
# unsharded, so the bits are drawn flat and reshaped. Otherwise ``(shape,
# grouped)``: the output of ``shape`` is sharded, and bits of exactly that shape
# are drawn in ``grouped``, which merges every run of consecutive unsharded axes
# into one axis and keeps every sharded axis whole, so the partitioner generates
# each shard in place (a 1/n-size buffer per device). All layouts give
# bit-identical values, because jax's partitionable threefry counts elements in
# row-major order; they differ in compile time: XLA's CPU compile time of the
# bits grows steeply with rank (0.2 s for 1-D, 3 s for 4-D and 5 s for 5-D on a
# 2-core machine), and a sharded 4-D conv kernel usually groups to rank 2 or 3.
# Drawing the bits flat instead makes every device materialize almost the whole
# array (measured: 94% of the unsharded per-device peak on 8 devices). Merging a
# sharded axis with the unsharded axes after it would lower the rank further; it
# was once seen to make XLA materialize the whole array, so the partitioner is
# never asked to split a merged axis.
_KEEP_SHAPE: contextvars.ContextVar[Any] = contextvars.ContextVar(
  "jaxinit_keep_shape", default=False
)


def bits_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape random bits are drawn in for an output of ``shape`` (see above).

  Samplers call ``jax.random.*(key, bits_shape(shape), ...).reshape(shape)``.
  A draw of another shape than the sharded output (an intermediate matrix)
  keeps its own shape.
  """
  keep = _KEEP_SHAPE.get()
  if not keep:
    return shape if len(shape) <= 1 else (math.prod(shape),)
  out_shape, grouped = keep
  return grouped if tuple(shape) == out_shape else tuple(shape)


def _draw(
  init: Any,
  key: Array,
  shape: tuple[int, ...],
  dtype: np.dtype,
  sharded: tuple[Any, ...] | None,
  fold: Array | np.ndarray | None = None,
  scale: Array | np.ndarray | None = None,
) -> Array:
  if math.prod(shape) == 0:
    return jnp.zeros(shape, dtype)
  if fold is not None:  # reinit's per-leaf key, derived inside the compiled draw
    key = jax.random.fold_in(jax.random.fold_in(key, fold[0]), fold[1])
  keep = False if sharded is None else (shape, grouped_shape(shape, sharded))
  # A multiplier (reinit's depth rules) is applied in the compute precision, before the cast.
  sample_dtype = dtype if scale is None else _compute(dtype)
  token = _KEEP_SHAPE.set(keep)
  try:
    out = init._sample(key, shape, sample_dtype)
  finally:
    _KEEP_SHAPE.reset(token)
  if out.shape != shape or out.dtype != sample_dtype:  # an internal contract, never user input
    raise AssertionError(
      f"jaxinit.{init.name} produced {out.shape} {out.dtype}, expected {shape} {sample_dtype}"
    )
  if scale is not None:
    out = (out * scale.astype(out.dtype)).astype(dtype)
  return out


def _compute(dtype: np.dtype) -> np.dtype:
  """float32 / float64 (complex64 / complex128 for complex ``dtype``) to compute a draw in."""
  real = compute_dtype(dtype)
  return complex_of(real) if is_complex(dtype) else real


_draw_jit = jax.jit(_draw, static_argnums=(0, 2, 3, 4))


@functools.lru_cache(maxsize=256)
def _draw_jit_sharded(sharding: Any):
  return jax.jit(_draw, static_argnums=(0, 2, 3, 4), out_shardings=sharding)


def run(
  init: Any,
  key: Array,
  shape: tuple[int, ...],
  dtype: np.dtype,
  out_sharding: Sharding,
  fold: Array | np.ndarray | None = None,
  scale: float | None = None,
) -> Array:
  """The compiled draw; ``fold`` (two uint32 words) is folded into ``key`` first.

  ``scale`` multiplies the draw (before the cast to ``dtype``); it is an argument
  of the compiled program, so draws that differ only in it share one compilation.
  """
  mult = None if scale is None else np.asarray(scale, compute_dtype(dtype))
  if out_sharding is None:
    return _draw_jit(init, key, shape, dtype, None, fold, mult)
  if not isinstance(out_sharding, (jax.sharding.Sharding, jax.sharding.PartitionSpec)):
    raise fail(
      init.name,
      "`out_sharding` must be a jax.sharding.Sharding (e.g. NamedSharding) or a "
      f"PartitionSpec inside a mesh context, got {out_sharding!r}.",
      TypeError,
    )
  check_sharding(init.name, out_sharding, shape)
  explicit = explicit_context()
  if explicit is not None and isinstance(
    out_sharding, jax.sharding.NamedSharding | jax.sharding.PartitionSpec
  ):
    return _run_explicit(init, key, shape, dtype, out_sharding, explicit, fold, mult)
  sharded = sharded_axes(shape, out_sharding)
  return _draw_jit_sharded(out_sharding)(init, key, shape, dtype, sharded, fold, mult)


def _draw_many(
  init: Any, key: Array, shape: tuple[int, ...], dtype: np.dtype, folds: Array, scales=None
):
  """One leaf per row of ``folds`` (and entry of ``scales``): the values of ``_draw``."""
  if scales is None:
    return jax.vmap(lambda f: _draw(init, key, shape, dtype, None, f))(folds)
  return jax.vmap(lambda f, s: _draw(init, key, shape, dtype, None, f, s))(folds, scales)


_draw_many_jit = jax.jit(_draw_many, static_argnums=(0, 2, 3))


def run_many(
  init: Any,
  key: Array,
  shape: tuple[int, ...],
  dtype: np.dtype,
  folds: np.ndarray,
  scales: np.ndarray | None = None,
) -> list[Array]:
  """Unsharded draws of several leaves of one ``(initializer, shape, dtype)``, each with
  its ``fold`` (a row of ``folds``) and multiplier (an entry of ``scales``, or none), as
  one compiled, batched program.

  Bit for bit what one :func:`run` per fold gives (jax's random bits do not depend on
  batching). Inside a traced program (``jax.jit(reinit)``, ``init_linen``) this keeps
  the number of computations XLA compiles from growing with the number of leaves: the
  repeated blocks of a deep model share one.
  """
  if scales is not None:
    scales = np.asarray(scales, compute_dtype(dtype))
  stacked = _draw_many_jit(init, key, shape, dtype, jnp.asarray(folds), scales)
  return [stacked[i] for i in range(len(folds))]


def _run_explicit(
  init, key, shape, dtype, out_sharding, abstract_mesh, fold=None, scale=None
) -> Array:
  """A sharded draw under a mesh with Explicit axes.

  There, every intermediate carries its sharding in its type and starts out
  replicated, so the whole array would be computed on every device (and some
  jax.numpy routines reject mixing sharded and replicated operands). The draw
  therefore runs under ``jax.sharding.auto_axes``: traced against the same mesh
  with Auto axes, where the partitioner propagates the output sharding to the
  random bits, and the result is retyped to the explicit sharding (same
  devices, same spec: no data moves).
  """
  if isinstance(out_sharding, jax.sharding.NamedSharding):
    mesh, spec = out_sharding.mesh, out_sharding.spec
  else:
    try:
      mesh, spec = jax.sharding.get_mesh(), out_sharding
    except ValueError:  # inside jit only the abstract mesh is known
      mesh, spec = abstract_mesh, out_sharding
  if isinstance(mesh, jax.sharding.Mesh) and not mesh.empty:
    auto_mesh = mesh.update(axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))
    target: Any = jax.sharding.NamedSharding(auto_mesh, spec)
    final: Any = jax.sharding.NamedSharding(mesh, spec)
  else:  # only an abstract mesh is known (jax.sharding.use_abstract_mesh)
    target = final = spec
  sharded = sharded_axes(shape, target)

  def draw(k, f, s):
    return _draw_jit_sharded(target)(init, k, shape, dtype, sharded, f, s)

  return jax.sharding.auto_axes(draw, out_sharding=final)(key, fold, scale)
