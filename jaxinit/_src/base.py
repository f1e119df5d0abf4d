"""The initializer protocol, the base class every jaxinit initializer derives from,
and the argument checking shared by all factories.

Every public initializer is a frozen dataclass. Calling it runs
``init(key, shape, dtype=None, out_sharding=None)``: the arguments are checked
and canonicalized on the host, then the draw itself runs as one jit-compiled
computation keyed on ``(initializer, shape, dtype)``. Because the initializer is
part of the compilation key, equal configurations share one compilation, and
because the draw is always compiled, an eager call and a call inside a user's
``jax.jit`` produce bit-identical arrays.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeAlias, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

Array: TypeAlias = jax.Array
Shape: TypeAlias = Sequence[int]
DTypeLike: TypeAlias = Any
Sharding: TypeAlias = jax.sharding.Sharding | jax.sharding.PartitionSpec | None


@runtime_checkable
class InitializerProtocol(Protocol):
  """What Flax and ``jax.nn.initializers`` call: ``init(key, shape, dtype, out_sharding)``."""

  def __call__(
    self,
    key: Array,
    shape: Shape,
    dtype: DTypeLike | None = None,
    out_sharding: Sharding = None,
  ) -> Array: ...


# ---------------------------------------------------------------------------
# Argument checking. Every message names the public function, the argument,
# the bad value and what is allowed.
# ---------------------------------------------------------------------------


def fail(fn: str, message: str, exc: type[Exception] = ValueError) -> Exception:
  """Builds the exception for a bad argument of ``jaxinit.<fn>``."""
  return exc(f"jaxinit.{fn}: {message}")


def check_real(
  fn: str,
  arg: str,
  value: Any,
  *,
  positive: bool = False,
  nonnegative: bool = False,
) -> float:
  """Returns ``value`` as a finite Python float, or raises a clear error."""
  if isinstance(value, jax.core.Tracer):
    raise fail(
      fn,
      f"`{arg}` must be a concrete number known when the initializer is "
      "built, got a traced value; build initializers outside jit.",
      TypeError,
    )
  if isinstance(value, (bool, np.bool_)) or not _is_real_scalar(value):
    raise fail(fn, f"`{arg}` must be a real number, got {value!r}.", TypeError)
  x = float(value)
  if not math.isfinite(x):
    raise fail(fn, f"`{arg}` must be finite, got {x!r}.")
  if positive and not x > 0:
    raise fail(fn, f"`{arg}` must be > 0, got {x!r}.")
  if nonnegative and not x >= 0:
    raise fail(fn, f"`{arg}` must be >= 0, got {x!r}.")
  return x


def check_int(fn: str, arg: str, value: Any, *, minimum: int | None = None) -> int:
  """Returns ``value`` as a Python int, or raises a clear error."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
    raise fail(fn, f"`{arg}` must be an integer, got {value!r}.", TypeError)
  x = int(value)
  if minimum is not None and x < minimum:
    raise fail(fn, f"`{arg}` must be >= {minimum}, got {x}.")
  return x


def check_bool(fn: str, arg: str, value: Any) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise fail(fn, f"`{arg}` must be True or False, got {value!r}.", TypeError)
  return bool(value)


def check_choice(fn: str, arg: str, value: Any, choices: Sequence[str]) -> str:
  """Returns ``value`` if it is one of ``choices``, else raises naming them."""
  if not isinstance(value, str) or value not in choices:
    allowed = ", ".join(repr(c) for c in choices)
    raise fail(fn, f"`{arg}` must be one of {allowed}, got {value!r}.")
  return value


def check_axes(fn: str, arg: str, value: Any) -> int | tuple[int, ...]:
  """An axis argument: an int, or a sequence of distinct ints (kept as a tuple)."""
  bad = fail(fn, f"`{arg}` must be an int or a sequence of ints, got {value!r}.", TypeError)
  if isinstance(value, (bool, np.bool_)):
    raise bad
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise bad
  out = []
  for a in value:
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral):
      raise bad
    out.append(int(a))
  if len(set(out)) != len(out):
    raise fail(fn, f"`{arg}` has a repeated axis: {tuple(out)!r}.")
  return tuple(out)


def as_tuple(axes: int | tuple[int, ...]) -> tuple[int, ...]:
  return (axes,) if isinstance(axes, int) else tuple(axes)


def normalize_axes(
  fn: str, arg: str, axes: int | tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, ...]:
  """Axes as non-negative ints for ``shape``; out-of-range axes are an error."""
  ndim = len(shape)
  out = []
  for a in as_tuple(axes):
    if not -ndim <= a < ndim:
      raise fail(
        fn,
        f"`{arg}`={axes!r} is out of range for the {ndim}-D shape {shape}; "
        f"axes must lie in [{-ndim}, {ndim - 1}].",
      )
    out.append(a % ndim)
  if len(set(out)) != len(out):
    raise fail(fn, f"`{arg}`={axes!r} names the same axis twice for shape {shape}.")
  return tuple(out)


def _is_real_scalar(value: Any) -> bool:
  if isinstance(value, numbers.Real):
    return True
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    dt = np.asarray(value).dtype
    return np.ndim(value) == 0 and (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating))
  return False


# ---------------------------------------------------------------------------
# Keys, shapes and dtypes at call time.
# ---------------------------------------------------------------------------


def canonical_key(fn: str, key: Any) -> Array:
  """A typed PRNG key from a typed key or a legacy ``PRNGKey`` array."""
  is_array = isinstance(key, (jax.Array, np.ndarray))
  if is_array and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise fail(
        fn,
        f"`key` must be a single PRNG key, got a key array of shape {key.shape}; "
        "use jax.vmap over keys to draw several.",
      )
    return key
  if is_array and key.dtype == np.uint32:
    try:
      return jax.random.wrap_key_data(key)
    except Exception:  # wrong trailing shape for the default PRNG implementation
      raise fail(
        fn,
        "`key` must be a jax.random.key(...) or a jax.random.PRNGKey(...) array, "
        f"got a uint32 array of shape {key.shape}; a single legacy key has shape (2,).",
        TypeError,
      ) from None
  raise fail(
    fn,
    "`key` must be a jax.random.key(...) or a jax.random.PRNGKey(...) array, "
    f"got {type(key).__name__} {key!r:.60}.",
    TypeError,
  )


def canonical_shape(fn: str, shape: Any) -> tuple[int, ...]:
  if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
    shape = (shape,)
  if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
    raise fail(fn, f"`shape` must be a sequence of ints, got {shape!r}.", TypeError)
  out = []
  for d in shape:
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
      raise fail(fn, f"`shape` must be a sequence of ints, got {tuple(shape)!r}.", TypeError)
    if d < 0:
      raise fail(fn, f"`shape` dimensions must be >= 0, got {tuple(shape)!r}.")
    out.append(int(d))
  return tuple(out)


def default_float_dtype() -> np.dtype:
  """float32, or float64 when ``jax_enable_x64`` is on."""
  return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def canonical_dtype(fn: str, dtype: Any, *, allow_complex: bool) -> np.dtype:
  """The output dtype: floating (any width) or, where allowed, complex."""
  if dtype is None:
    return default_float_dtype()
  try:
    d = np.dtype(dtype)
  except TypeError:
    raise fail(fn, f"`dtype` must be a floating-point dtype, got {dtype!r}.", TypeError) from None
  if jnp.issubdtype(d, jnp.complexfloating):
    if not allow_complex:
      raise fail(
        fn,
        f"`dtype` {d.name} is complex, which this initializer does not support; "
        "use a real floating-point dtype.",
        TypeError,
      )
  elif not jnp.issubdtype(d, jnp.floating):
    kinds = "a floating-point or complex" if allow_complex else "a floating-point"
    raise fail(
      fn,
      f"`dtype` must be {kinds} dtype (float32, bfloat16, ...), got {d.name}; "
      "integer and bool parameters cannot be initialized this way.",
      TypeError,
    )
  return np.dtype(jax.dtypes.canonicalize_dtype(d))


def compute_dtype(dtype: np.dtype) -> np.dtype:
  """The real dtype the draw is computed in: float64 for 64-bit targets, else float32.

  16-bit and 8-bit targets are drawn in float32 and cast at the end, so they keep
  float32 resolution before rounding (a bfloat16 normal draw then holds thousands
  of distinct values, where sampling in bfloat16 directly gives 128).
  """
  real = np.dtype(np.finfo(dtype).dtype) if is_complex(dtype) else dtype
  return np.dtype(np.float64) if real.itemsize >= 8 else np.dtype(np.float32)


def is_complex(dtype: np.dtype) -> bool:
  return bool(jnp.issubdtype(dtype, jnp.complexfloating))


def complex_of(real: np.dtype) -> np.dtype:
  return np.dtype(np.complex128) if real == np.float64 else np.dtype(np.complex64)


# ---------------------------------------------------------------------------
# The base class.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class Initializer:
  """Base class of all jaxinit initializers.

  Subclasses are frozen dataclasses whose fields are exactly the keyword
  arguments of their public factory (``name``), so that
  ``factory(**init.config()) == init`` and the object reprs, compares, hashes,
  pickles and serializes as the factory call that made it.

  A subclass implements ``_sample(key, shape, dtype)`` (traced, returns an array
  of exactly ``shape`` and ``dtype``) and may implement ``_check(fn, shape,
  dtype)`` for call-time checks that need the shape (they run on the host,
  before any tracing, and name ``jaxinit.<fn>``). ``_delegate()`` lets a named
  specialization hand both to a more general initializer.
  """

  name: ClassVar[str] = "initializer"
  #: Whether complex dtypes are supported.
  supports_complex: ClassVar[bool] = True
  #: Whether the output ignores the key (zeros, ones, constant, identity, dirac).
  deterministic: ClassVar[bool] = False
  #: One-line formula shown by ``jaxinit list`` and the README table.
  formula: ClassVar[str] = ""

  # -- the protocol --------------------------------------------------------

  def __call__(
    self,
    key: Array,
    shape: Shape,
    dtype: DTypeLike | None = None,
    out_sharding: Sharding = None,
  ) -> Array:
    """Draws an array of ``shape`` and ``dtype`` from ``key``.

    Args:
      key: a typed key (``jax.random.key``) or a legacy ``jax.random.PRNGKey``.
      shape: the shape of the parameter.
      dtype: the parameter dtype; ``None`` means float32 (float64 under x64).
        16-bit targets are drawn in float32 and cast.
      out_sharding: a ``jax.sharding.Sharding`` (or a ``PartitionSpec`` inside a
        mesh context) the result is produced in. The values do not depend on it.

    Returns:
      The drawn array.
    """
    fn = self.name
    shape = canonical_shape(fn, shape)
    dtype = canonical_dtype(fn, dtype, allow_complex=self._supports_complex())
    key = canonical_key(fn, key)
    self._check(fn, shape, dtype)
    return _run(self, key, shape, dtype, out_sharding)

  def _sample(self, key: Array, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """Traced: the draw, of exactly ``shape`` and ``dtype`` (never zero-size)."""
    delegate = self._delegate()
    if delegate is None:
      raise NotImplementedError(f"{type(self).__name__} must implement _sample or _delegate")
    return delegate._sample(key, shape, dtype)

  def _check(self, fn: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Call-time checks that need the shape or dtype; errors name ``jaxinit.<fn>``."""
    delegate = self._delegate()
    if delegate is not None:
      delegate._check(fn, shape, dtype)

  def _delegate(self) -> Initializer | None:
    """A more general initializer that draws the same distribution, or None."""
    return None

  def _supports_complex(self) -> bool:
    delegate = self._delegate()
    if delegate is not None:
      return delegate._supports_complex()
    return self.supports_complex

  # -- layouts ------------------------------------------------------------

  def with_layout(self, layout: Any) -> Initializer:
    """This initializer with its fan axes set for a kernel layout.

    ``layout`` is a preset name (``"flax"``, ``"torch"``, ``"equinox"``,
    ``"torch_transpose"``, ...; see ``jaxinit.LAYOUTS``) or a
    ``jaxinit.Layout``. Fan-based initializers (those with ``in_axis`` and
    ``out_axis`` fields) get the layout's axes; others are returned unchanged
    unless their class overrides this method (``jaxinit.reinit`` then calls
    it for leaves of rank >= 2). The result is an ordinary initializer (it
    reprs, hashes and serializes as the factory call with those axes).

    Examples:
      >>> import jaxinit
      >>> jaxinit.he_normal().with_layout("torch")
      he_normal(in_axis=1, out_axis=0)
    """
    from jaxinit._src import layouts

    return layouts.with_layout(self, layout)

  # -- repr / serialization ------------------------------------------------

  def config(self) -> dict[str, Any]:
    """The factory's keyword arguments that rebuild this initializer."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def __repr__(self) -> str:
    args = []
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.default is not dataclasses.MISSING and _same(value, f.default):
        continue
      args.append(f"{f.name}={value!r}")
    return f"{self.name}({', '.join(args)})"

  def __reduce__(self):
    return (_rebuild, (self.name, self.config()))


def _same(a: Any, b: Any) -> bool:
  try:
    return type(a) is type(b) and bool(a == b)
  except Exception:
    return False


def _rebuild(name: str, config: dict[str, Any]) -> Initializer:
  from jaxinit._src import registry

  return registry.lookup(name, "deserialize")(**config)


# ---------------------------------------------------------------------------
# Running the draw: one compilation per (initializer, shape, dtype, sharding).
# ---------------------------------------------------------------------------


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
_KEEP_SHAPE = contextvars.ContextVar("jaxinit_keep_shape", default=False)


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


def sharded_axes(shape: tuple[int, ...], sharding: Any) -> tuple[Any, ...]:
  """Per axis of ``shape``: None if unsharded, else its mesh axes (True if unknown)."""
  spec = None
  if isinstance(sharding, jax.sharding.NamedSharding):
    spec = sharding.spec
  elif isinstance(sharding, jax.sharding.PartitionSpec):
    spec = sharding
  if spec is not None:
    entries = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
    out = []
    for e, d in zip(entries, shape, strict=False):
      unsharded = e is None or e == () or d <= 1
      out.append(None if unsharded else (e if isinstance(e, str) else tuple(e)))
    if isinstance(sharding, jax.sharding.Sharding):  # trust the real shard shape
      shard = sharding.shard_shape(shape)
      out = [e if s != d else None for e, s, d in zip(out, shard, shape, strict=True)]
    return tuple(out)
  shard = sharding.shard_shape(shape)
  return tuple(True if s != d else None for s, d in zip(shard, shape, strict=True))


def grouped_shape(shape: tuple[int, ...], sharded: Sequence[Any]) -> tuple[int, ...]:
  """``shape`` with each run of consecutive unsharded axes merged into one axis.

  ``sharded[i]`` is falsy for an unsharded axis.

  >>> grouped_shape((3, 3, 256, 512), (None, None, None, "model"))
  (2304, 512)
  >>> grouped_shape((3, 3, 256, 512), (None, None, "model", None))
  (9, 256, 512)
  """
  return tuple(math.prod(shape[i] for i in g) for g in _groups(sharded))


def _groups(sharded: Sequence[Any]) -> list[list[int]]:
  groups: list[list[int]] = []
  run = False  # whether groups[-1] is a run of unsharded axes that may grow
  for i, s in enumerate(sharded):
    if s:
      groups.append([i])
      run = False
    elif run:
      groups[-1].append(i)
    else:
      groups.append([i])
      run = True
  return groups


def _draw(
  init: Initializer,
  key: Array,
  shape: tuple[int, ...],
  dtype: np.dtype,
  sharded: tuple[Any, ...] | None,
  fold: Array | None = None,
) -> Array:
  if math.prod(shape) == 0:
    return jnp.zeros(shape, dtype)
  if fold is not None:  # reinit's per-leaf key, derived inside the compiled draw
    key = jax.random.fold_in(jax.random.fold_in(key, fold[0]), fold[1])
  keep = False if sharded is None else (shape, grouped_shape(shape, sharded))
  token = _KEEP_SHAPE.set(keep)
  try:
    out = init._sample(key, shape, dtype)
  finally:
    _KEEP_SHAPE.reset(token)
  if out.shape != shape or out.dtype != dtype:  # an internal contract, never user input
    raise AssertionError(
      f"jaxinit.{init.name} produced {out.shape} {out.dtype}, expected {shape} {dtype}"
    )
  return out


_draw_jit = jax.jit(_draw, static_argnums=(0, 2, 3, 4))


@functools.lru_cache(maxsize=256)
def _draw_jit_sharded(sharding: Any):
  return jax.jit(_draw, static_argnums=(0, 2, 3, 4), out_shardings=sharding)


def _run(
  init: Initializer,
  key: Array,
  shape: tuple[int, ...],
  dtype: np.dtype,
  out_sharding: Sharding,
  fold: Array | None = None,
) -> Array:
  """The compiled draw; ``fold`` (two uint32 words) is folded into ``key`` first."""
  if out_sharding is None:
    return _draw_jit(init, key, shape, dtype, None, fold)
  if not isinstance(out_sharding, (jax.sharding.Sharding, jax.sharding.PartitionSpec)):
    raise fail(
      init.name,
      "`out_sharding` must be a jax.sharding.Sharding (e.g. NamedSharding) or a "
      f"PartitionSpec inside a mesh context, got {out_sharding!r}.",
      TypeError,
    )
  check_sharding(init.name, out_sharding, shape)
  explicit = _explicit_context()
  if explicit is not None and isinstance(
    out_sharding, jax.sharding.NamedSharding | jax.sharding.PartitionSpec
  ):
    return _run_explicit(init, key, shape, dtype, out_sharding, explicit, fold)
  sharded = sharded_axes(shape, out_sharding)
  return _draw_jit_sharded(out_sharding)(init, key, shape, dtype, sharded, fold)


def _explicit_context() -> Any:
  """The context's abstract mesh if it has Explicit axes (``jax.set_mesh``), else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
    return None
  return mesh


def _run_explicit(init, key, shape, dtype, out_sharding, abstract_mesh, fold=None) -> Array:
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

  def draw(k, f):
    return _draw_jit_sharded(target)(init, k, shape, dtype, sharded, f)

  return jax.sharding.auto_axes(draw, out_sharding=final)(key, fold)


def check_sharding(fn: str, sharding: Sharding, shape: tuple[int, ...]) -> None:
  """Raises a clear error when ``sharding`` cannot hold an array of ``shape``."""
  spec = getattr(sharding, "spec", sharding)
  if isinstance(spec, jax.sharding.PartitionSpec) and len(spec) > len(shape):
    raise fail(
      fn,
      f"`out_sharding` {spec} has {len(spec)} entries, more than the "
      f"{len(shape)} axes of the shape {shape}.",
    )
  if isinstance(sharding, jax.sharding.PartitionSpec):
    if len(sharding) > len(shape):
      raise fail(
        fn,
        f"`out_sharding` {sharding} has {len(sharding)} entries, more than the "
        f"{len(shape)} axes of the shape {shape}.",
      )
    return
  try:
    sharding.shard_shape(shape)
  except Exception as e:
    raise fail(fn, f"`out_sharding` {sharding} cannot shard the shape {shape}: {e}") from None
