"""Initializing a whole Flax model directly sharded: ``init_linen`` and ``init_nnx``.

Both follow the same recipe: ``jax.eval_shape`` gives the parameter structure,
shapes, dtypes and partitioning annotations without allocating anything; the
target shardings are read from the annotations; then one ``jax.jit`` with
``out_shardings`` runs the model's own initialization and ``jaxinit.reinit``
with the rules, so every leaf is born in its sharding. Leaves the rules redraw
are never computed by the model's initializers (XLA removes the dead code), and
the rules' draws generate each shard in place.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxinit._src.checks import canonical_key, fail, short_repr
from jaxinit._src.framework_types import is_box, rebox, unbox
from jaxinit._src.sharding import resolve_sharding
from jaxinit._src.tree import flatten, reinit


def _targets(fn: str, abstract: Any, mesh: Any) -> tuple[list[Any], Any, list[Any]]:
  """(shardings per leaf, treedef, boxes) of an abstract variable tree."""
  flat, treedef = flatten(abstract)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()) if mesh else None
  targets, boxes = [], []
  for path, leaf in flat:
    box = leaf if is_box(leaf) else None
    s = resolve_sharding(fn, path, box, unbox(leaf), None, mesh)
    targets.append(replicated if s is None else s)
    boxes.append(box)
  return targets, treedef, boxes


def _rebuild(treedef: Any, boxes: list[Any], values: list[Any]) -> Any:
  return jax.tree_util.tree_unflatten(
    treedef, [v if b is None else rebox(b, v) for b, v in zip(boxes, values, strict=True)]
  )


def _check_mesh(fn: str, mesh: Any) -> Any:
  if mesh is None:
    m = jax.sharding.get_mesh()
    return None if m.empty else m
  if not isinstance(mesh, jax.sharding.Mesh):
    raise fail(fn, f"`mesh` must be a jax.sharding.Mesh, got {mesh!r}.", TypeError)
  return mesh


def init_linen(
  module: Any,
  key: Any,
  *args: Any,
  rules: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
  mesh: jax.sharding.Mesh | None = None,
  layout: Any = None,
  **init_kwargs: Any,
) -> Any:
  """``module.init(key, *args)`` with every leaf born in its sharding.

  The structure and the partitioning annotations (``nn.with_partitioning``,
  ``nn.with_logical_partitioning`` under the active logical axis rules) come
  from ``jax.eval_shape(module.init, key, *args)``, so nothing is allocated
  before the sharded computation; unannotated leaves are replicated over
  ``mesh``. With ``rules``, the matching leaves are drawn by
  :func:`jaxinit.reinit` (same key) instead of the module's initializers, each
  generating its shards in place: the values equal ``jaxinit.reinit(
  module.init(key, *args), rules, key)`` on one device. The returned variables
  keep their ``nn.Partitioned`` boxes.

  Args:
    module: a ``flax.linen.Module``.
    key: the PRNG key (for ``module.init`` and the rules).
    *args: example inputs for ``module.init`` (traced; pass static flags in
      ``init_kwargs``).
    rules: optional :func:`jaxinit.reinit` rules.
    mesh: the device mesh (default: the one set by ``jax.set_mesh``, if any).
    layout: the kernel layout for the rules (default ``"flax"``).
    **init_kwargs: passed to ``module.init`` (``method=...``, flags).

  Returns:
    The variables, as ``module.init`` returns them, sharded.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> from flax import linen as nn
    >>> from jax.sharding import PartitionSpec as P
    >>> mesh = jax.make_mesh((8,), ("model",))
    >>> dense = nn.Dense(64, kernel_init=nn.with_partitioning(
    ...     nn.initializers.lecun_normal(), (None, "model")))
    >>> v = jaxinit.init_linen(dense, jax.random.key(0), jnp.ones((1, 16)), mesh=mesh,
    ...                        rules={".*kernel": jaxinit.he_normal()})
    >>> k = v["params"]["kernel"]
    >>> k.value.sharding.spec, k.value.addressable_shards[0].data.shape
    (P(None, 'model'), (16, 8))
  """
  fn = "init_linen"
  if not callable(getattr(module, "init", None)):
    raise fail(fn, f"`module` must be a flax.linen Module, got {short_repr(module)}.", TypeError)
  mesh = _check_mesh(fn, mesh)
  key = canonical_key(fn, key)
  init_fn = functools.partial(module.init, **init_kwargs)
  abstract = jax.eval_shape(init_fn, key, *args)
  targets, treedef, boxes = _targets(fn, abstract, mesh)
  shard_tree = jax.tree_util.tree_unflatten(treedef, targets)

  def run(key, *args):
    variables = init_fn(key, *args)
    if rules is not None:
      variables = reinit(variables, rules, key, layout=layout, shardings=shard_tree, mesh=mesh)
    return [unbox(leaf) for _, leaf in flatten(variables)[0]]

  values = jax.jit(run, out_shardings=targets)(key, *args)
  return _rebuild(treedef, boxes, values)


def init_nnx(
  make_model: Callable[[], Any],
  key: Any = None,
  *,
  rules: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
  mesh: jax.sharding.Mesh | None = None,
  layout: Any = None,
) -> Any:
  """Constructs an nnx model with every Variable born in its sharding.

  ``make_model`` builds the model and its own ``nnx.Rngs`` (e.g. ``lambda:
  Model(rngs=nnx.Rngs(0))``). ``nnx.eval_shape(make_model)`` gives the
  structure and the sharding annotations (``nnx.with_partitioning``,
  ``sharding`` metadata) without allocating; then one ``jax.jit`` with
  ``out_shardings`` constructs the model and, with ``rules``, redraws the
  matching Variables with :func:`jaxinit.reinit` (paths as in
  ``nnx.state(model)``, e.g. ``"linear/kernel"``), each generating its shards
  in place. Unannotated Variables are replicated over ``mesh``. The mesh is
  made current (``jax.set_mesh``) while the model is built, as nnx's eager
  sharding requires.

  Args:
    make_model: a function of no arguments returning the model.
    key: the root key of the rules (required with ``rules``).
    rules: optional :func:`jaxinit.reinit` rules.
    mesh: the device mesh (default: the one set by ``jax.set_mesh``, if any).
    layout: the kernel layout for the rules (default ``"flax"``).

  Returns:
    The model, its arrays sharded.

  Examples:
    >>> import jax, jaxinit
    >>> from flax import nnx
    >>> mesh = jax.make_mesh((8,), ("model",))
    >>> make = lambda: nnx.Linear(16, 64, rngs=nnx.Rngs(0), kernel_init=nnx.with_partitioning(
    ...     nnx.initializers.lecun_normal(), (None, "model")))
    >>> model = jaxinit.init_nnx(make, jax.random.key(1), mesh=mesh,
    ...                          rules={"kernel": jaxinit.he_normal()})
    >>> model.kernel[...].sharding.spec
    P(None, 'model')
  """
  from flax import nnx

  fn = "init_nnx"
  if not callable(make_model):
    raise fail(
      fn,
      f"`make_model` must be a function that builds the nnx model, got {short_repr(make_model)}.",
      TypeError,
    )
  mesh = _check_mesh(fn, mesh)
  if rules is not None:
    if key is None:
      raise fail(fn, "`key` is required when `rules` are given.")
    key = canonical_key(fn, key)
  ctx = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
  with ctx:
    abstract = nnx.eval_shape(make_model)
    if not nnx.graph.is_graph_node(abstract):
      raise fail(
        fn,
        f"`make_model` must return an nnx.Module, got {type(abstract).__name__} "
        f"{short_repr(abstract)}.",
        TypeError,
      )
    graphdef, abstract_state = nnx.split(abstract)
    targets, treedef, boxes = _targets(fn, abstract_state, mesh)
    shard_tree = jax.tree_util.tree_unflatten(treedef, targets)

    def run(key):
      _, state = nnx.split(make_model())
      if rules is not None:
        state = reinit(state, rules, key, layout=layout, shardings=shard_tree, mesh=mesh)
      return [unbox(leaf) for _, leaf in flatten(state)[0]]

    values = jax.jit(run, out_shardings=targets)(key)
    return nnx.merge(graphdef, _rebuild(treedef, boxes, values))
