"""Sharded draws on 8 simulated CPU devices (set by the root conftest.py): one initializer's
``out_sharding``, ``reinit``'s ``shardings``, and whole Flax models born sharded with
``init_linen`` / ``init_nnx``.

Every sharded draw carries the requested sharding and the bits of the unsharded draw, on
1, 2, 4 and 8 devices and on 1-D and 2-D meshes; each device generates only its own shard
(per-device memory about 1/8 of the unsharded program's).
"""

import functools
import math

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
from jaxinit import testing
from jaxinit._src import sharding as sharding_lib

KEY = jax.random.key(5)


@functools.cache
def _mesh(shape, names=("x",)):
  """A mesh of the first prod(shape) devices (jax.make_mesh's default axis type: Explicit).

  One object per mesh for the whole module: what jax compiles for a mesh context is then
  compiled once, not once per test (a fresh mesh per case made this file 25% slower)."""
  return jax.make_mesh(shape, names, devices=jax.devices()[: math.prod(shape)])


def _assert_same_values(a, b):
  for (path, x), y in zip(
    jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
  ):
    if not np.array_equal(np.asarray(x), np.asarray(y)):
      raise AssertionError(f"{jax.tree_util.keystr(path)} differs")


def test_eight_devices():
  assert jax.device_count() == 8


# ---------------------------------------------------------------------------
# One initializer: init(key, shape, dtype, out_sharding).
# ---------------------------------------------------------------------------

INITS = [
  jaxinit.he_normal(),
  jaxinit.truncated_normal(0.02, exact_std=True),
  jaxinit.glorot_uniform(),
  jaxinit.normal(0.3, 1.0),
  jaxinit.constant(0.5),
  jaxinit.zeros(),
]
SPECS_2X4 = [P("data", "model"), P(None, "model"), P(("data", "model"), None), P()]
FIRST = {name: examples[0] for name, (examples, _, _) in sorted(CASES.items())}


def _out_sharding_cases():
  """(initializer, shape, mesh shape, mesh axis names, spec, key seed)."""
  cases = [  # several specs, a 2-D mesh
    pytest.param(init, (16, 32), (2, 4), ("data", "model"), spec, 7, id=f"{init!r}-{spec}-2x4")
    for init in INITS
    for spec in SPECS_2X4
  ]
  cases += [  # the values do not depend on the mesh
    pytest.param(jaxinit.lecun_normal(), (24, 16), (n,), ("x",), P(None, "x"), 3, id=f"lecun-{n}")
    for n in (1, 2, 4, 8)
  ]
  cases += [  # every registered initializer (the sweep's first configuration)
    pytest.param(init, (2, 3, 16), (8,), ("x",), P(None, None, "x"), 5, id=f"{init!r}-(2, 3, 16)")
    for init in FIRST.values()
  ]
  return cases


@pytest.mark.parametrize("init,shape,mesh_shape,names,spec,seed", _out_sharding_cases())
def test_out_sharding_is_honoured_with_the_unsharded_values(
  init, shape, mesh_shape, names, spec, seed
):
  mesh = _mesh(mesh_shape, names)
  sharding = NamedSharding(mesh, spec)
  key = jax.random.key(seed)
  want = np.asarray(init(key, shape))
  got = init(key, shape, None, sharding)
  assert got.sharding == sharding, got.sharding
  assert got.sharding.is_equivalent_to(sharding, len(shape)), (spec, got.sharding)
  assert len(got.sharding.device_set) == mesh.size
  np.testing.assert_array_equal(got, want)


def test_conforms_with_sharding_and_bf16():
  mesh = _mesh((8,))
  testing.assert_conforms(
    jaxinit.he_uniform(), (16, 8), jnp.bfloat16, out_sharding=NamedSharding(mesh, P("x", None))
  )


def test_partition_spec_inside_a_mesh_context():
  mesh = _mesh((4,))
  key = jax.random.key(0)
  with jax.set_mesh(mesh):
    got = jaxinit.he_normal()(key, (8, 8), None, P("x", None))
  assert got.sharding.is_equivalent_to(NamedSharding(mesh, P("x", None)), 2)
  np.testing.assert_array_equal(got, jaxinit.he_normal()(key, (8, 8)))


def test_sharded_inside_jit():
  sharding = NamedSharding(_mesh((8,)), P("x"))
  init = jaxinit.normal()
  out = jax.jit(lambda k: init(k, (64,), None, sharding))(jax.random.key(1))
  assert out.sharding.is_equivalent_to(sharding, 1)
  np.testing.assert_array_equal(out, init(jax.random.key(1), (64,)))


def _context_cases():
  cases = []
  for init in FIRST.values():
    cases.append(pytest.param(init, None, id=f"{init!r}-(64, 64)-float32"))
    if init._supports_complex():
      cases.append(pytest.param(init, jnp.complex64, id=f"{init!r}-(64, 64)-complex64"))
  return cases


@pytest.mark.parametrize("init,dtype", _context_cases())
def test_values_are_the_same_in_every_compilation_context(init, dtype):
  """XLA folds constants and fuses products differently depending on the program
  around a draw (a mesh context blocks some rewrites); the samplers pin their
  roundings, so a draw made inside jax.set_mesh equals the plain draw bit for bit."""
  key = jax.random.key(21)
  want = np.asarray(init(key, (64, 64), dtype))
  with jax.set_mesh(_mesh((4,))):
    got = init(key, (64, 64), dtype)
  np.testing.assert_array_equal(got, want, err_msg=repr(init))


@pytest.mark.parametrize(
  "shape,sharded,grouped",
  [
    ((3, 3, 4, 16), (None, None, None, "x"), (36, 16)),
    ((3, 3, 4, 16), ("x", None, None, "y"), (3, 12, 16)),
    ((16,), ("x",), (16,)),
  ],
  ids=str,
)
def test_grouped_bits_shape(shape, sharded, grouped):
  """Random bits are drawn with consecutive unsharded axes merged (see draw.py)."""
  assert sharding_lib.grouped_shape(shape, sharded) == grouped


# ---------------------------------------------------------------------------
# reinit(tree, rules, key, shardings=..., mesh=...).
# ---------------------------------------------------------------------------

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


@pytest.fixture(scope="module")
def unsharded():
  return jaxinit.reinit(TREE, RULES, KEY)


def _assert_sharded_as(tree, shardings):
  for x, want in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
    assert x.sharding == want, (x.sharding, want)
    assert x.sharding.is_equivalent_to(want, x.ndim), (x.sharding, want)
    assert x.addressable_shards[0].data.shape == want.shard_shape(x.shape)


def test_unsharded_reinit_is_on_one_device(unsharded):
  assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(unsharded))


@pytest.mark.parametrize(
  "mesh_shape,names,named",
  [
    *[pytest.param((n,), ("x",), False, id=f"{n}-devices-PartitionSpecs") for n in (1, 2, 4, 8)],
    pytest.param((2, 4), ("d", "x"), True, id="2x4-NamedShardings"),
  ],
)
def test_reinit_values_do_not_depend_on_the_mesh(unsharded, mesh_shape, names, named):
  """A tree of PartitionSpecs with ``mesh=``, or a tree of NamedShardings alone."""
  mesh = _mesh(mesh_shape, names)
  want = jax.tree.map(lambda s: NamedSharding(mesh, s), SPECS)
  if named:
    out = jaxinit.reinit(TREE, RULES, KEY, shardings=want)
  else:
    out = jaxinit.reinit(TREE, RULES, KEY, shardings=SPECS, mesh=mesh)
  _assert_same_values(out, unsharded)
  _assert_sharded_as(out, want)


def _reinit_in_context(jitted):
  with jax.set_mesh(_mesh((8,))):  # Explicit axes: PartitionSpecs resolve against the context
    if jitted:
      return jax.jit(lambda k: jaxinit.reinit(TREE, RULES, k, shardings=SPECS))(KEY)
    return jaxinit.reinit(TREE, RULES, KEY, shardings=SPECS)


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_reinit_specs_resolve_against_the_mesh_context(unsharded, jitted):
  out = _reinit_in_context(jitted)
  _assert_same_values(out, unsharded)
  mesh = _mesh((8,))
  for x, spec in zip(jax.tree.leaves(out), jax.tree.leaves(SPECS), strict=True):
    assert x.sharding.is_equivalent_to(NamedSharding(mesh, spec), x.ndim)


def test_a_sharded_tree_keeps_each_leafs_sharding_when_redrawn(unsharded):
  out = _reinit_in_context(jitted=False)
  again = jaxinit.reinit(out, {"conv/kernel": jaxinit.he_normal()}, KEY)
  assert again["conv"]["kernel"].sharding == out["conv"]["kernel"].sharding
  _assert_same_values(again, unsharded)


def test_per_device_memory_is_an_eighth():
  """The compiled SPMD program's per-device output and temporaries are 1/8 of the
  unsharded program's: no device materializes a whole leaf."""
  mesh = _mesh((8,))
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


def test_foreign_initializer_sharded_inside_jit_under_set_mesh():
  """An ``init(key, shape, dtype)`` callable that is not a jaxinit initializer keeps its target
  sharding when reinit runs inside jit under ``jax.set_mesh`` (it came back replicated, every
  device drawing the whole leaf)."""
  mesh = _mesh((8,))
  tree = {"w": jax.ShapeDtypeStruct((16, 32), jnp.float32)}
  rules = {"w": jax.nn.initializers.normal(0.5)}
  want = jaxinit.reinit(tree, rules, KEY)["w"]
  with jax.set_mesh(mesh):
    f = jax.jit(lambda k: jaxinit.reinit(tree, rules, k, shardings={"w": P("x", None)}))
    got = f(KEY)["w"]
  assert got.sharding.is_equivalent_to(NamedSharding(mesh, P("x", None)), 2), got.sharding
  assert got.addressable_shards[0].data.shape == (2, 32)
  np.testing.assert_array_equal(got, want)


def _reinit_w(shardings, mesh):
  tree = {"w": jnp.zeros((12, 16))}
  return jaxinit.reinit(tree, {"w": jaxinit.normal()}, KEY, shardings=shardings, mesh=mesh)


@pytest.mark.parametrize(
  "call,pattern",
  [
    pytest.param(
      lambda: _reinit_w({"w": P("x")}, _mesh((8,))),
      r"jaxinit.reinit: the rule 'w' .* matched 'w' of shape "
      r"\(12, 16\) float32: `out_sharding` .* cannot shard the shape \(12, 16\)",
      id="uneven",
    ),
    pytest.param(
      lambda: _reinit_w({"v": P("x")}, _mesh((8,))),
      r"`shardings` has no entry for the leaf 'w'",
      id="no-entry",
    ),
    pytest.param(
      lambda: _reinit_w({"w": P(None, "x")}, None),
      r"the leaf 'w' is to be sharded as P\(None, 'x'\) but no mesh is known",
      id="no-mesh",
    ),
    pytest.param(
      lambda: jaxinit.normal()(KEY, (12, 16), None, P(None, None, "x")),
      r"`out_sharding` P\(None, None, 'x'\) has 3 entries",
      id="spec-longer-than-shape",
    ),
  ],
)
def test_sharding_errors(call, pattern):
  with pytest.raises(ValueError, match=pattern):
    call()


# ---------------------------------------------------------------------------
# Whole Flax models born sharded: init_linen, init_nnx.
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
  mesh = _mesh((2, 4), ("data", "model"))
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
  mesh = _mesh((8,), ("model",))
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
