"""Sharded initialization on 8 simulated CPU devices (set by the root conftest.py):
bit-identical values on every mesh and unsharded, each leaf born in the requested
sharding, per-device memory about 1/8, and whole Flax models born sharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cases import CASES
from flax import linen as nn
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinit
from jaxinit._src import sharding

KEY = jax.random.key(5)

# few distinct shapes: every (initializer, shape, dtype, sharding) compiles once
TREE = {
  "conv": {"kernel": jnp.zeros((3, 3, 4, 16)), "bias": jnp.zeros((16,))},
  "dense": {"kernel": jnp.zeros((16, 64), jnp.bfloat16)},
}
SPECS = {
  "conv": {"kernel": P(None, None, None, "x"), "bias": P("x")},
  "dense": {"kernel": P("x", None)},
}
RULES = {
  "conv/kernel": jaxinit.he_normal(),
  ".*bias": jaxinit.torch_bias(),
  "dense/kernel": jaxinit.glorot_uniform(),
}


def _mesh(n, names=("x",)):
  shape = (n,) if len(names) == 1 else (2, n // 2)
  return jax.make_mesh(shape, names, devices=jax.devices()[:n])


def _assert_same_values(a, b):
  for (path, x), y in zip(
    jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
  ):
    if not np.array_equal(np.asarray(x), np.asarray(y)):
      raise AssertionError(f"{jax.tree_util.keystr(path)} differs")


def test_same_values_on_1_2_4_8_devices_and_unsharded():
  unsharded = jaxinit.reinit(TREE, RULES, KEY)
  assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(unsharded))
  for n in (1, 2, 4, 8):
    mesh = _mesh(n)
    out = jaxinit.reinit(TREE, RULES, KEY, shardings=SPECS, mesh=mesh)
    _assert_same_values(out, unsharded)
    for x, spec in zip(jax.tree.leaves(out), jax.tree.leaves(SPECS), strict=True):
      want = NamedSharding(mesh, spec)
      assert x.sharding.is_equivalent_to(want, x.ndim), (x.sharding, want)
      shard = x.addressable_shards[0].data
      assert shard.shape == want.shard_shape(x.shape)
  # a 2-D mesh and a tree of NamedShardings
  mesh = _mesh(8, ("d", "x"))
  named = jax.tree.map(lambda s: NamedSharding(mesh, s), SPECS)
  out = jaxinit.reinit(TREE, RULES, KEY, shardings=named)
  _assert_same_values(out, unsharded)
  for x, want in zip(jax.tree.leaves(out), jax.tree.leaves(named), strict=True):
    assert x.sharding == want


def test_explicit_mesh_context_and_existing_shardings():
  unsharded = jaxinit.reinit(TREE, RULES, KEY)
  mesh = _mesh(8)
  with jax.set_mesh(mesh):  # Explicit axes: PartitionSpecs resolve against the context
    out = jaxinit.reinit(TREE, RULES, KEY, shardings=SPECS)
    _assert_same_values(out, unsharded)
    jitted = jax.jit(lambda k: jaxinit.reinit(TREE, RULES, k, shardings=SPECS))(KEY)
    _assert_same_values(jitted, unsharded)
  for tree in (out, jitted):
    for x, spec in zip(jax.tree.leaves(tree), jax.tree.leaves(SPECS), strict=True):
      assert x.sharding.is_equivalent_to(NamedSharding(mesh, spec), x.ndim)
  # a tree that is already sharded keeps each leaf's sharding when redrawn
  again = jaxinit.reinit(out, {"conv/kernel": jaxinit.he_normal()}, KEY)
  assert again["conv"]["kernel"].sharding == out["conv"]["kernel"].sharding
  _assert_same_values(again, unsharded)


def test_every_initializer_accepts_out_sharding():
  mesh = _mesh(8)
  sharding = NamedSharding(mesh, P(None, None, "x"))
  for name, (examples, _, _) in sorted(CASES.items()):
    init = examples[0]
    a = init(KEY, (2, 3, 16), None, sharding)
    b = init(KEY, (2, 3, 16))
    assert a.sharding == sharding, name
    assert np.array_equal(np.asarray(a), np.asarray(b)), name


def test_per_device_memory_is_an_eighth():
  """The compiled SPMD program's per-device output and temporaries are 1/8 of the
  unsharded program's: no device materializes a whole leaf."""
  mesh = _mesh(8)
  tree = {
    "w": jax.ShapeDtypeStruct((512, 256), jnp.float32),
    "v": jax.ShapeDtypeStruct((4, 64, 256), jnp.float32),
  }
  specs = {"w": P(None, "x"), "v": P(None, "x", None)}
  rules = {"w": jaxinit.he_normal(), "v": jaxinit.glorot_uniform()}
  full = sum(4 * np.prod(s.shape) for s in jax.tree.leaves(tree))

  def peak(shardings):
    f = jax.jit(lambda k: jaxinit.reinit(tree, rules, k, shardings=shardings, mesh=mesh))
    m = f.lower(KEY).compile().memory_analysis()
    return m.output_size_in_bytes, m.output_size_in_bytes + m.temp_size_in_bytes

  out1, peak1 = peak(None)
  out8, peak8 = peak(specs)
  assert abs(out1 - full) < 1024 and abs(out8 - full / 8) < 1024  # + a few bytes of tuple
  ratio = peak8 / peak1
  assert 0.11 <= ratio <= 0.14, f"per-device peak {peak8} vs unsharded {peak1}: {ratio:.3f}"


def test_sharding_errors():
  mesh = _mesh(8)
  tree = {"w": jnp.zeros((12, 16))}
  with pytest.raises(
    ValueError,
    match=r"jaxinit.reinit: the rule 'w' .* matched 'w' of shape "
    r"\(12, 16\) float32: `out_sharding` .* cannot shard the shape \(12, 16\)",
  ):
    jaxinit.reinit(tree, {"w": jaxinit.normal()}, KEY, shardings={"w": P("x")}, mesh=mesh)
  with pytest.raises(ValueError, match=r"`shardings` has no entry for the leaf 'w'"):
    jaxinit.reinit(tree, {"w": jaxinit.normal()}, KEY, shardings={"v": P("x")}, mesh=mesh)
  with pytest.raises(
    ValueError,
    match=r"the leaf 'w' is to be sharded as P\(None, 'x'\) but "
    r"no mesh is known",
  ):
    jaxinit.reinit(tree, {"w": jaxinit.normal()}, KEY, shardings={"w": P(None, "x")})
  with pytest.raises(ValueError, match=r"`out_sharding` P\(None, None, 'x'\) has 3 entries"):
    jaxinit.normal()(KEY, (12, 16), None, P(None, None, "x"))


# ---------------------------------------------------------------------------
# Whole Flax models born sharded.
# ---------------------------------------------------------------------------


class _Linen(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(
      64, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
    )(x)
    x = nn.Dense(
      16, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed"))
    )(x)
    return nn.LayerNorm()(x)


def test_init_linen_born_sharded():
  mesh = _mesh(8, ("data", "model"))
  x = jnp.ones((2, 16))
  rules = {".*Dense.*/kernel": jaxinit.he_normal(), ".*Dense.*/bias": jaxinit.torch_bias()}
  with nn.logical_axis_rules([("mlp", "model"), ("embed", "data")]):
    v = jaxinit.init_linen(_Linen(), KEY, x, rules=rules, mesh=mesh)
  params = v["params"]
  assert isinstance(params["Dense_0"]["kernel"], nn.Partitioned)
  assert isinstance(params["Dense_1"]["kernel"], nn.LogicallyPartitioned)
  want = {
    "Dense_0/kernel": P(None, "model"),
    "Dense_1/kernel": P("model", "data"),
    "Dense_0/bias": P(),
    "LayerNorm_0/scale": P(),
  }
  for path, spec in want.items():
    a, b = path.split("/")
    leaf = nn.unbox(params[a][b])
    assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim), path
  # matched leaves: the rules' values; unmatched: the module's own init
  ref = jaxinit.reinit(_Linen().init(KEY, x), rules, KEY)
  _assert_same_values(nn.unbox(v), nn.unbox(ref))


class _Nnx(nnx.Module):
  def __init__(self, rngs):
    self.up = nnx.Linear(
      16,
      64,
      rngs=rngs,
      kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model")),
    )
    self.down = nnx.Linear(64, 16, rngs=rngs)


def test_init_nnx_born_sharded():
  mesh = _mesh(8, ("model",))
  rules = {".*kernel": jaxinit.he_normal()}
  model = jaxinit.init_nnx(lambda: _Nnx(nnx.Rngs(0)), KEY, rules=rules, mesh=mesh)
  up = model.up.kernel[...]
  assert up.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "model")), 2)
  assert up.addressable_shards[0].data.shape == (16, 8)
  assert model.up.kernel.get_metadata()["out_sharding"] == (None, "model")
  assert model.down.bias[...].sharding.is_equivalent_to(NamedSharding(mesh, P()), 1)
  # the same values as building the model, then reinit + nnx.update
  with jax.set_mesh(mesh):  # nnx needs a mesh to build annotated Variables eagerly
    plain = _Nnx(nnx.Rngs(0))
  nnx.update(plain, jaxinit.reinit(nnx.state(plain, nnx.Param), rules, KEY))
  _assert_same_values(nnx.state(model, nnx.Param), nnx.state(plain, nnx.Param))


def test_grouped_bits_shape():
  assert sharding.grouped_shape((3, 3, 4, 16), (None, None, None, "x")) == (36, 16)
  assert sharding.grouped_shape((3, 3, 4, 16), ("x", None, None, "y")) == (3, 12, 16)
  assert sharding.grouped_shape((16,), ("x",)) == (16,)


def test_foreign_initializer_sharded_inside_jit_under_set_mesh():
  """An ``init(key, shape, dtype)`` callable that is not a jaxinit initializer keeps its target
  sharding when reinit runs inside jit under ``jax.set_mesh`` (it came back replicated, every
  device drawing the whole leaf)."""
  mesh = _mesh(8)
  tree = {"w": jax.ShapeDtypeStruct((16, 32), jnp.float32)}
  rules = {"w": jax.nn.initializers.normal(0.5)}
  want = jaxinit.reinit(tree, rules, KEY)["w"]
  with jax.set_mesh(mesh):
    f = jax.jit(lambda k: jaxinit.reinit(tree, rules, k, shardings={"w": P("x", None)}))
    got = f(KEY)["w"]
  assert got.sharding.is_equivalent_to(NamedSharding(mesh, P("x", None)), 2), got.sharding
  assert got.addressable_shards[0].data.shape == (2, 32)
  np.testing.assert_array_equal(got, want)
