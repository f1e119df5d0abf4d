"""Re-initializing whole parameter trees by path rules: ``jaxinit.reinit``.

A leaf's *path* is the '/'-joined list of the keys that lead to it in
``jax.tree_util`` terms: dict keys (``DictKey``), attribute names
(``GetAttrKey``, equinox modules, dataclasses) and sequence indices
(``SequenceKey``), e.g. ``"Dense_0/kernel"``, ``"layers/0/weight"``. Flax
metadata boxes (linen ``nn.Partitioned``, nnx ``Variable``) are looked through:
the path of an ``nnx.Param`` is that of the Variable, without ``/value``.

A leaf's key is ``jax.random.fold_in`` of the root key with the two 32-bit
halves of a BLAKE2b hash of its path (:func:`leaf_key`), so a leaf's values
depend on the root key and its own path only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxinit._src import draw, serialization
from jaxinit._src.base import Initializer
from jaxinit._src.checks import (
  canonical_dtype,
  canonical_key,
  canonical_shape,
  complex_of,
  compute_dtype,
  fail,
  is_complex,
  scaled_range,
)
from jaxinit._src.framework_types import is_box, is_equinox_module, rebox, unbox
from jaxinit._src.layouts import Layout, get_layout
from jaxinit._src.paths import compile_pattern, flatten_with_paths, hash_words
from jaxinit._src.rules import DepthRule, OptionalRule, SiblingRule
from jaxinit._src.sharding import (
  check_sharding,
  explicit_context,
  resolve_sharding,
  sharding_table,
)

_FN = "reinit"

# ---------------------------------------------------------------------------
# Keys.
# ---------------------------------------------------------------------------


def leaf_key(key: Any, path: str) -> jax.Array:
  """The key :func:`reinit` draws the leaf at ``path`` with.

  ``fold_in(fold_in(key, h0), h1)`` where ``(h0, h1)`` are the two 32-bit
  halves of the 64-bit BLAKE2b hash of the UTF-8 path (stable across
  processes and machines, unlike Python's salted ``hash``). It depends on the
  path alone, so adding, removing or renaming *other* parameters never changes
  this leaf. Works on traced keys (under ``jit``).

  Args:
    key: the root key (typed or legacy).
    path: the leaf's '/'-joined path, e.g. ``"Dense_0/kernel"``.

  Returns:
    A typed key.

  Examples:
    >>> import jax, jaxinit
    >>> params = {"Dense_0": {"kernel": jax.numpy.zeros((4, 3))}}
    >>> new = jaxinit.reinit(params, {".*kernel": jaxinit.normal()}, jax.random.key(0))
    >>> same = jaxinit.normal()(jaxinit.leaf_key(jax.random.key(0), "Dense_0/kernel"), (4, 3))
    >>> bool((new["Dense_0"]["kernel"] == same).all())
    True
  """
  if not isinstance(path, str):
    raise fail("leaf_key", f"`path` must be a string, got {path!r}.", TypeError)
  key = canonical_key("leaf_key", key)
  h0, h1 = hash_words(path)
  return jax.random.fold_in(jax.random.fold_in(key, np.uint32(h0)), np.uint32(h1))


# ---------------------------------------------------------------------------
# Leaves.
# ---------------------------------------------------------------------------


def _is_array(x: Any) -> bool:
  return isinstance(x, jax.Array | np.ndarray | jax.ShapeDtypeStruct) or (
    isinstance(x, np.generic) and not isinstance(x, np.bool_ | np.str_ | np.bytes_)
  )


def flatten(tree: Any, fn: str = _FN) -> tuple[list[tuple[str, Any]], Any]:
  """``[(path, leaf)]`` and the treedef, with Flax boxes kept whole as leaves."""
  return flatten_with_paths(fn, tree, is_leaf=is_box)


def leaf_paths(tree: Any) -> list[str]:
  """The paths :func:`reinit` sees in ``tree``: those of its array leaves, in tree order.

  Use it to write rules.

  Examples:
    >>> import jax.numpy as jnp, jaxinit
    >>> jaxinit.leaf_paths({"layers": [{"w": jnp.zeros(2), "b": jnp.zeros(2)}], "act": "relu"})
    ['layers/0/b', 'layers/0/w']
  """
  return [p for p, leaf in flatten(tree, "leaf_paths")[0] if _is_array(unbox(leaf))]


# ---------------------------------------------------------------------------
# Rules.
# ---------------------------------------------------------------------------


def _compile_rules(rules: Any) -> list[tuple[str, re.Pattern, Any, bool]]:
  if isinstance(rules, Mapping):
    items = list(rules.items())
  elif isinstance(rules, Sequence) and not isinstance(rules, str | bytes):
    items = []
    for item in rules:
      if not (isinstance(item, tuple | list) and len(item) == 2):
        raise fail(
          _FN,
          "`rules` must be a mapping {pattern: initializer} or a sequence of "
          f"(pattern, initializer) pairs; got the item {item!r}.",
          TypeError,
        )
      items.append(tuple(item))
  else:
    raise fail(
      _FN,
      "`rules` must be a mapping {pattern: initializer} or a sequence of "
      f"(pattern, initializer) pairs, got {type(rules).__name__}.",
      TypeError,
    )
  if not items:
    raise fail(_FN, "`rules` is empty; give at least one pattern.")
  out = []
  for pattern, init in items:
    if not isinstance(pattern, str):
      raise fail(
        _FN,
        f"a rule's pattern must be a string (a regular expression), got {pattern!r}.",
        TypeError,
      )
    compiled = compile_pattern(_FN, "the rule", pattern)
    may_miss = isinstance(init, OptionalRule)
    init = _rule_init(pattern, init.rule if may_miss else init)
    if isinstance(init, DepthRule):
      init.check_pattern(_FN, pattern, compiled)
    out.append((pattern, compiled, init, may_miss))
  return out


def _rule_init(pattern: str, init: Any) -> Any:
  if init is None or isinstance(init, Initializer | SiblingRule | DepthRule):
    return init
  if isinstance(init, str | Mapping):
    return serialization.get(init)
  if callable(init):
    return init
  raise fail(
    _FN,
    f"the rule {pattern!r} maps to {init!r}, which is not an initializer; "
    "use a jaxinit initializer, a name or config dict (jaxinit.get), any "
    "init(key, shape, dtype) callable, a sibling rule (jaxinit.torch_bias), a depth "
    "rule (jaxinit.depth_rule), or None to keep the leaf.",
    TypeError,
  )


def _describe(init: Any) -> str:
  return (
    repr(init)
    if isinstance(init, Initializer | SiblingRule | DepthRule)
    else getattr(init, "__name__", repr(init))
  )


def _no_match_error(pattern: str, paths: list[str]) -> Exception:
  shown = paths[:40]
  more = f" (and {len(paths) - len(shown)} more)" if len(paths) > len(shown) else ""
  close = difflib.get_close_matches(pattern, paths, n=3, cutoff=0.4)
  hint = f" Close paths: {', '.join(map(repr, close))}." if close else ""
  return fail(
    _FN,
    f"the rule {pattern!r} matches no parameter path (patterns must match the "
    f"whole path, as re.fullmatch; write '.*kernel' to match any path ending in "
    f"'kernel').{hint} Paths: {', '.join(shown)}{more}.",
  )


# ---------------------------------------------------------------------------
# reinit.
# ---------------------------------------------------------------------------


def _default_layout(tree: Any) -> Layout:
  if is_equinox_module(tree):
    return get_layout(_FN, "equinox")
  return get_layout(_FN, "flax")


def _sibling_shape(
  path: str, rule: SiblingRule, shapes: dict[str, tuple[int, ...]], pattern: str
) -> tuple[int, ...]:
  parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
  for name in rule.sibling:
    if parent + name in shapes:
      return shapes[parent + name]
  tried = ", ".join(repr(parent + n) for n in rule.sibling)
  raise fail(
    _FN,
    f"the rule {pattern!r} ({rule!r}) matched {path!r}, but none of its "
    f"sibling kernels exists: tried {tried}. Pass sibling='<name>'.",
  )


def _check_leaf(path, pattern, init, shape, dtype, sharding, scale=None) -> None:
  """Every host-side check of one leaf, before anything is drawn; a depth rule's
  ``scale`` multiplies the range the dtype must hold."""
  what = f"the rule {pattern!r} ({_describe(init)}) matched {path!r} of shape {shape} {dtype}"
  if isinstance(init, Initializer):
    try:
      d = canonical_dtype(init.name, dtype, allow_complex=init._supports_complex())
      with scaled_range(scale):
        init._check(init.name, shape, d)
    except (TypeError, ValueError) as e:
      raise type(e)(f"jaxinit.reinit: {what}, which it cannot initialize: {e}") from None
  elif not jax.numpy.issubdtype(dtype, jax.numpy.inexact):
    raise fail(_FN, f"{what}: only floating-point or complex leaves can be initialized.", TypeError)
  else:
    _check_foreign(what, init, shape, dtype)
  if sharding is not None:
    try:
      check_sharding(_FN, sharding, shape)
    except ValueError as e:
      raise fail(_FN, f"{what}: {str(e).removeprefix('jaxinit.reinit: ')}") from None


def _check_foreign(what: str, init: Callable, shape, dtype) -> None:
  """Traces an ``init(key, shape, dtype)`` callable without running it (``jax.eval_shape``):
  it must accept the leaf and return its shape and dtype. So a callable that fails does
  so before any leaf is drawn."""
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
  try:
    out = jax.eval_shape(lambda k: init(k, shape, dtype), key)
  except Exception as e:  # user code: any exception becomes one clear error
    kind = TypeError if isinstance(e, TypeError) else ValueError
    raise fail(
      _FN,
      f"{what}: calling it as init(key, shape, dtype) failed: {type(e).__name__}: {str(e)[:300]}",
      kind,
    ) from None
  got = (tuple(getattr(out, "shape", ())), getattr(out, "dtype", None))
  if not isinstance(out, jax.ShapeDtypeStruct) or got != (tuple(shape), np.dtype(dtype)):
    raise fail(
      _FN,
      f"{what}: it returned {_short_aval(out)}, not an array of shape {shape} "
      f"{np.dtype(dtype).name}.",
      TypeError,
    )


def _short_aval(out: Any) -> str:
  if isinstance(out, jax.ShapeDtypeStruct):
    return f"an array of shape {out.shape} {out.dtype}"
  return f"{type(out).__name__}"


def reinit(
  tree: Any,
  rules: Mapping[str, Any] | Sequence[tuple[str, Any]],
  key: Any,
  *,
  layout: str | Layout | None = None,
  shardings: Any = None,
  mesh: jax.sharding.Mesh | None = None,
) -> Any:
  r"""Redraws the leaves of a parameter tree whose paths match ``rules``.

  Every array leaf whose path matches a rule is redrawn with that rule's
  initializer, with its own shape and dtype; every other leaf is returned as
  the same object. Paths are '/'-joined tree keys (``"Dense_0/kernel"``,
  ``"layers/0/weight"``; :func:`leaf_paths` lists them). Patterns are regular
  expressions matched against the **whole** path (``re.fullmatch``): write
  ``".*kernel"`` for any kernel, ``"Dense_0/.*"`` for one layer,
  ``"(.*/)?bias"`` for biases at any depth. The **first** matching rule wins;
  a rule mapped to ``None`` keeps the leaves it matches (an exception ahead of
  a broader rule). A rule that matches no leaf is an error (a typo must not pass
  silently), as is a bad pattern or a leaf the initializer cannot produce.
  Everything is checked before anything is drawn, and the input is never
  modified.

  Each leaf is drawn with ``leaf_key(key, path)``, so its values depend only on
  the root key and its own path: adding, removing or reordering other
  parameters changes nothing. Runs under ``jax.jit`` (tree and key may be
  traced); the leaves may also be ``jax.ShapeDtypeStruct`` (from
  ``jax.eval_shape``), which is how a model is initialized directly sharded.

  Works on plain dicts and lists, linen ``variables`` (or
  ``variables["params"]``: the path then starts below ``params``), nnx
  ``State`` (write it back with ``nnx.update(model, new_state)``), equinox
  modules, haiku ``params`` dicts (paths like ``"linear/w"``), and any pytree.
  Flax metadata boxes stay in place: an ``nn.Partitioned`` or an ``nnx.Param``
  comes back as the same kind of box with the same metadata and a new value.

  **Layout.** ``layout`` says how the tree stores its kernels: ``"flax"``
  ``(*spatial, in, out)`` or ``"torch"`` / ``"equinox"`` ``(out, in,
  *spatial)``, ``"torch_transpose"``, or a :class:`jaxinit.Layout` (see
  ``jaxinit.LAYOUTS``). It rewrites the fan axes of fan-based initializers that
  are on their default axes, for leaves of rank >= 2; axes set explicitly on an
  initializer win. Default: ``"equinox"`` for an equinox module, else
  ``"flax"``.

  **Rule values.** A jaxinit initializer; a name or config dict accepted by
  :func:`jaxinit.get`; any ``init(key, shape, dtype)`` callable (such as a
  ``jax.nn.initializers`` one); :func:`jaxinit.torch_bias` (scale from the
  sibling kernel); :func:`jaxinit.depth_rule` (a draw multiplied by a function
  of the layer index the pattern captured); or ``None`` (keep). Wrapped in
  :func:`jaxinit.optional`, a rule may match nothing. A preset of
  ``jaxinit.presets`` is a mapping of such rules.

  **Sharding.** Each redrawn leaf is produced directly in its target sharding,
  under ``jit`` with ``out_shardings``, each device generating only its shard;
  the values do not depend on the sharding or the number of devices. The target
  is, in order: the leaf's entry in ``shardings`` (a tree of the same structure
  with ``Sharding``, ``PartitionSpec`` or ``None`` leaves, e.g. from
  ``nn.get_partition_spec`` / ``nnx.get_partition_spec``; or one ``Sharding``
  for every redrawn leaf); the leaf's Flax partitioning annotation
  (``nn.with_partitioning``, ``nn.with_logical_partitioning`` with the active
  logical axis rules, nnx ``sharding`` metadata), applied only when a mesh is
  known (``mesh``, the box's own, or ``jax.set_mesh``); the sharding the leaf already
  has when it spans several devices; else none (the default device).
  ``PartitionSpec``\ s need ``mesh`` or an active ``jax.set_mesh``.

  Args:
    tree: the parameter tree.
    rules: ``{pattern: initializer}`` (ordered) or a sequence of ``(pattern,
      initializer)`` pairs.
    key: the root PRNG key.
    layout: the kernel layout (see above).
    shardings: target shardings (see above).
    mesh: the mesh for ``PartitionSpec`` targets and annotations.

  Returns:
    A tree of the same structure.

  Raises:
    ValueError: a bad pattern, a rule matching nothing, a sharding that cannot
      hold a leaf, a missing sibling kernel, a shape an initializer rejects.
    TypeError: a leaf dtype the initializer cannot produce (integer, bool, key,
      complex for a real-only initializer), a rule value that is no initializer.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> params = {"Dense_0": {"kernel": jnp.zeros((64, 32)), "bias": jnp.zeros(32)},
    ...           "head": {"kernel": jnp.zeros((32, 10)), "bias": jnp.zeros(10)}}
    >>> rules = {"head/.*": None,                       # keep the head
    ...          ".*kernel": jaxinit.he_normal(),
    ...          ".*bias": jaxinit.constant(0.1)}
    >>> new = jaxinit.reinit(params, rules, jax.random.key(0))
    >>> print(f"{new['Dense_0']['kernel'].var() * 64:.1f}", new["head"] is params["head"])
    2.0 False
    >>> new["head"]["kernel"] is params["head"]["kernel"]
    True
  """
  lay = get_layout(_FN, layout) if layout is not None else _default_layout(tree)
  compiled = _compile_rules(rules)
  table = sharding_table(_FN, shardings)
  if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
    raise fail(_FN, f"`mesh` must be a jax.sharding.Mesh, got {mesh!r}.", TypeError)
  key = canonical_key(_FN, key)

  flat, treedef = flatten(tree)
  arrays = [(i, p, leaf, unbox(leaf)) for i, (p, leaf) in enumerate(flat)]
  arrays = [(i, p, leaf, v) for i, p, leaf, v in arrays if _is_array(v)]
  shapes = {p: tuple(v.shape) for _, p, _, v in arrays}
  used = [False] * len(compiled)
  plan = []
  for i, path, leaf, value in arrays:
    for r, (pattern, regex, init, _) in enumerate(compiled):
      match = regex.fullmatch(path)
      if match:
        used[r] = True
        if init is not None:
          plan.append((i, path, leaf, value, pattern, init, match))
        break
  for r, (pattern, _, _, may_miss) in enumerate(compiled):
    if not used[r] and not may_miss:
      raise _no_match_error(pattern, [p for _, p, _, _ in arrays])

  # Resolve and check everything on the host before drawing anything.
  draws = []
  for i, path, leaf, value, pattern, init, match in plan:
    shape = canonical_shape(_FN, value.shape)
    dtype = (
      np.dtype(value.dtype)
      if not jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
      else value.dtype
    )
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or not isinstance(dtype, np.dtype):
      raise fail(
        _FN,
        f"the rule {pattern!r} ({_describe(init)}) matched {path!r}, a PRNG key "
        "array, which cannot be initialized; exclude it from the pattern.",
        TypeError,
      )
    scale = None
    if isinstance(init, DepthRule):
      scale, init = init.factor(_FN, pattern, path, match), init.init
    if isinstance(init, SiblingRule):
      init = init.resolve(_sibling_shape(path, init, shapes, pattern), lay)
    if isinstance(init, Initializer):
      try:
        init = init.for_layout(lay, shape)
      except (TypeError, ValueError) as e:
        raise type(e)(
          f"jaxinit.reinit: the rule {pattern!r} ({_describe(init)}) matched {path!r} of shape "
          f"{shape}: {e}"
        ) from None
    box = leaf if is_box(leaf) else None
    sharding = resolve_sharding(_FN, path, box, value, table, mesh)
    _check_leaf(path, pattern, init, shape, dtype, sharding, scale)
    draws.append((i, path, leaf, box, init, shape, dtype, sharding, scale))

  leaves = [leaf for _, leaf in flat]
  boxes = {d[0]: d[3] for d in draws}
  for i, new in _draw_all(draws, key):
    leaves[i] = rebox(boxes[i], new) if boxes[i] is not None else new
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _draw_all(draws: list, key: Any) -> list[tuple[int, Any]]:
  """``(leaf index, new value)`` for every planned draw.

  Each jaxinit leaf is drawn with the key of :func:`leaf_key`, folded inside the
  compiled draw (one dispatch per leaf instead of three), and a depth rule's
  multiplier is an argument of that draw. Inside a traced program, unsharded leaves
  of one (initializer, shape, dtype) are drawn by one batched program (the same
  bits; the multipliers batched too), so compile time does not grow with the number
  of identical leaves; eagerly, each distinct draw is compiled once and reused anyway.
  """
  batch = isinstance(key, jax.core.Tracer)
  groups: dict[tuple, list[tuple[int, np.ndarray, float | None]]] = {}
  out = []
  for i, path, _, _, init, shape, dtype, sharding, scale in draws:
    if not isinstance(init, Initializer):
      new = _call_foreign(init, leaf_key(key, path), shape, dtype, sharding, scale)
      out.append((i, new))
      continue
    fold = np.asarray(hash_words(path), np.uint32)
    d = canonical_dtype(init.name, dtype, allow_complex=init._supports_complex())
    if batch and sharding is None:
      groups.setdefault((init, shape, d, scale is None), []).append((i, fold, scale))
    else:
      out.append((i, draw.run(init, key, shape, d, sharding, fold, scale)))
  for (init, shape, d, unscaled), members in groups.items():
    if len(members) == 1:
      i, fold, scale = members[0]
      out.append((i, draw.run(init, key, shape, d, None, fold, scale)))
    else:
      folds = np.stack([f for _, f, _ in members])
      scales = None if unscaled else np.array([s for _, _, s in members])
      values = draw.run_many(init, key, shape, d, folds, scales)
      out.extend((i, v) for (i, _, _), v in zip(members, values, strict=True))
  return out


def _call_foreign(init: Callable, key, shape, dtype, sharding, scale=None) -> Any:
  """Runs an ``init(key, shape, dtype)`` callable that is not a jaxinit initializer;
  a depth rule's ``scale`` multiplies its result in float32 (float64 for 64-bit leaves)."""

  def run(k):
    out = init(k, shape, dtype)
    if scale is None:
      return out
    real = compute_dtype(np.dtype(dtype))
    wide = complex_of(real) if is_complex(np.dtype(dtype)) else real
    return (out.astype(wide) * np.asarray(scale, real).astype(wide)).astype(dtype)

  if sharding is None:
    return run(key)
  explicit = explicit_context()
  spec = getattr(sharding, "spec", sharding)
  if explicit is not None and (
    isinstance(sharding, jax.sharding.PartitionSpec)
    or (
      isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh.abstract_mesh == explicit
    )
  ):
    # Under a mesh with Explicit axes, inside an outer jit, a nested jit's out_shardings
    # do not reach the result's type: the leaf came back replicated, every device
    # drawing all of it (found by tests/test_multiprocess.py). As draw._run_explicit
    # does, the draw runs in auto_axes and the result takes the explicit sharding.
    def draw(k):
      return jax.jit(run, out_shardings=spec)(k)

    return jax.sharding.auto_axes(draw, out_sharding=sharding)(key)
  return jax.jit(run, out_shardings=sharding)(key)
