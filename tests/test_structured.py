"""identity, dirac, sparse and normalized: exact structure, through real Flax layers,
exact counts, distributions at fixed keys, sharding, errors."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxinit
from jaxinit import testing

P = jax.sharding.PartitionSpec


def _sharding(spec):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("a", "b"))
  return jax.sharding.NamedSharding(mesh, spec)


# ---------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------


def test_identity_values():
  k = jax.random.key(0)
  np.testing.assert_array_equal(jaxinit.identity(2.5)(k, (3, 5)), 2.5 * np.eye(3, 5))
  np.testing.assert_array_equal(jaxinit.identity()(k, (5, 3)), np.eye(5, 3))
  stack = jaxinit.identity(-1.0)(k, (2, 4, 3, 3), jnp.bfloat16)
  assert stack.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
    stack.astype(jnp.float32), np.broadcast_to(-np.eye(3), (2, 4, 3, 3))
  )
  np.testing.assert_array_equal(jaxinit.identity()(k, (2, 2), jnp.complex64), np.eye(2))


@pytest.mark.parametrize("features", [12, 5])
def test_identity_through_flax_dense(features):
  x = jax.random.normal(jax.random.key(1), (4, 8))
  dense = nn.Dense(features, kernel_init=jaxinit.identity())
  y, _ = dense.init_with_output(jax.random.key(2), x)
  m = min(8, features)
  np.testing.assert_array_equal(y[:, :m], x[:, :m])
  np.testing.assert_array_equal(y[:, m:], 0)


# ---------------------------------------------------------------------------
# dirac
# ---------------------------------------------------------------------------


def test_dirac_preserves_inputs_through_flax_linen_conv():
  """An even 4x4 kernel (centre (1, 1) under padding="SAME") with 4 groups."""
  x = jax.random.normal(jax.random.key(3), (2, 5, 5, 8))
  conv = nn.Conv(
    8, (4, 4), padding="SAME", feature_group_count=4, kernel_init=jaxinit.dirac(groups=4, scale=0.5)
  )
  y, params = conv.init_with_output(jax.random.key(4), x)
  assert params["params"]["kernel"].shape == (4, 4, 2, 8)
  np.testing.assert_allclose(y, 0.5 * x, rtol=1e-6, atol=1e-6)


def test_dirac_preserves_inputs_through_nnx_conv():
  """A 3-D kernel (3, 2, 3), the even axis included, with 2 groups."""
  conv = nnx.Conv(
    6,
    6,
    (3, 2, 3),
    padding="SAME",
    feature_group_count=2,
    kernel_init=jaxinit.dirac(groups=2),
    rngs=nnx.Rngs(0),
  )
  x = jax.random.normal(jax.random.key(5), (2, 4, 4, 4, 6))
  np.testing.assert_allclose(conv(x), x, rtol=1e-6, atol=1e-6)


def test_dirac_structure():
  k = jax.random.key(0)
  w = np.asarray(jaxinit.dirac(groups=2)(k, (3, 3, 3, 4)))  # in_per_group 3 > out_per_group 2
  expected = np.zeros((3, 3, 3, 4))
  for g in range(2):
    for d in range(2):
      expected[1, 1, d, g * 2 + d] = 1
  np.testing.assert_array_equal(w, expected)
  w = np.asarray(jaxinit.dirac()(k, (2, 2, 2, 5)))  # even kernel: centre (0, 0)
  assert w.sum() == 2 and w[0, 0, 0, 0] == 1 and w[0, 0, 1, 1] == 1
  np.testing.assert_array_equal(jaxinit.dirac(scale=3.0)(k, (4, 6)), 3 * np.eye(4, 6))


# ---------------------------------------------------------------------------
# sparse
# ---------------------------------------------------------------------------


def test_sparse_exact_counts_per_unit():
  k = jax.random.key(6)
  w = np.asarray(jaxinit.sparse(num_nonzero=5)(k, (3, 3, 16, 32)))
  assert np.all((w != 0).reshape(-1, 32).sum(axis=0) == 5)
  w = np.asarray(jaxinit.sparse(num_nonzero=4, out_axis=0)(k, (10, 6, 3)))  # torch (out, in, k)
  assert np.all((w != 0).reshape(10, -1).sum(axis=1) == 4)
  w = np.asarray(jaxinit.sparse(num_nonzero=2, batch_axis=0)(k, (3, 7, 5)))  # stacked layers
  assert np.all((w != 0).sum(axis=1) == 2)


@pytest.mark.parametrize("sparsity,fan_in,zeros", [(0.28, 25, 7), (0.25, 9, 3), (0.9, 11, 10)])
def test_sparse_fraction_of_zeros(sparsity, fan_in, zeros):
  """ceil(sparsity * fan_in) zeros per unit, without float artefacts (0.28 * 25 is
  7.000000000000001 in floating point: 7 zeros, not 8)."""
  w = np.asarray(jaxinit.sparse(sparsity=sparsity)(jax.random.key(7), (fan_in, 40)))
  assert np.all((w == 0).sum(axis=0) == zeros)


def test_sparse_mask_is_uniform_and_values_follow_the_distribution():
  units, fan_in, k = 4000, 20, 5
  w = np.asarray(
    jaxinit.sparse(num_nonzero=k, values=jaxinit.normal(0.1))(jax.random.key(8), (fan_in, units))
  )
  hits = (w != 0).sum(axis=1)  # per input position, Binomial(units, k / fan_in)
  p = k / fan_in
  z = (hits - units * p) / math.sqrt(units * p * (1 - p))
  assert np.max(np.abs(z)) < 6, z
  # pairs of positions: kept together with probability k(k-1) / (F(F-1))
  m = (w != 0).astype(np.float64)
  both = (m[0] * m[1]).sum()
  q = k * (k - 1) / (fan_in * (fan_in - 1))
  assert abs(both - units * q) < 6 * math.sqrt(units * q * (1 - q))
  testing.assert_ks(w[w != 0], "norm", (0.0, 0.1))


def test_sparse_is_reproducible_and_keyed():
  init, shape = jaxinit.sparse(num_nonzero=5), (3, 3, 16, 32)  # compiled above
  a = init(jax.random.key(9), shape)
  np.testing.assert_array_equal(a, init(jax.random.key(9), shape))
  b = init(jax.random.key(10), shape)
  assert not np.array_equal(np.asarray(a) != 0, np.asarray(b) != 0)


def test_sparse_values_argument():
  k = jax.random.key(11)
  w = jaxinit.sparse(num_nonzero=2, values="ones")(k, (6, 4))
  np.testing.assert_array_equal(np.sort(np.unique(np.asarray(w))), [0.0, 1.0])
  init = jaxinit.sparse(num_nonzero=2, values={"name": "normal", "stddev": 0.5})
  assert init.values == jaxinit.normal(0.5)
  assert repr(jaxinit.sparse()) == "sparse(num_nonzero=15)"


# ---------------------------------------------------------------------------
# normalized
# ---------------------------------------------------------------------------


def test_normalized_norms():
  k = jax.random.key(12)
  w = np.asarray(jaxinit.normalized(2.0)(k, (3, 3, 16, 32)), np.float64)
  np.testing.assert_allclose(np.linalg.norm(w.reshape(-1, 32), axis=0), 2.0, rtol=1e-6)
  w = np.asarray(jaxinit.normalized(out_axis=0, batch_axis=1)(k, (8, 3, 5), jnp.complex64))
  np.testing.assert_allclose(np.linalg.norm(w, axis=2), 1.0, rtol=1e-6)
  assert np.any(w.imag != 0)


@pytest.mark.parametrize("i", range(3))
def test_normalized_direction_is_uniform(i):
  """Archimedes: each coordinate of a uniform point on the unit sphere in R^3 is U[-1, 1]."""
  w = jaxinit.normalized()(jax.random.key(13), (3, 30_000))  # one compilation for the 3 cases
  testing.assert_ks(w[i], "uniform", (-1.0, 2.0), name=f"coordinate {i}")


# ---------------------------------------------------------------------------
# sharding, registry, errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  "init,shape,spec",
  [
    (jaxinit.identity(), (16, 8), P("a", "b")),
    (jaxinit.dirac(groups=2), (3, 3, 4, 8), P(None, None, "a", "b")),
    (jaxinit.sparse(num_nonzero=3), (3, 3, 4, 8), P(None, None, "a", "b")),
    (jaxinit.normalized(), (16, 8), P("a", "b")),
  ],
  ids=lambda v: getattr(v, "name", ""),
)
def test_out_sharding(init, shape, spec):
  """(The conformance sweep checks these without sharding; here: layout and same values.)"""
  key = jax.random.key(14)
  w = init(key, shape, None, _sharding(spec))
  assert w.sharding.is_equivalent_to(_sharding(spec), len(shape))
  np.testing.assert_array_equal(w, init(key, shape))


@pytest.mark.parametrize(
  "init",
  [
    jaxinit.identity(0.5),
    jaxinit.dirac(2, 0.5),
    jaxinit.sparse(sparsity=0.5, values=jaxinit.he_normal(mode="fan_out")),
    jaxinit.normalized(3.0, 0, (1,)),
  ],
  ids=repr,
)
def test_registry_round_trips(init):
  assert jaxinit.deserialize(jaxinit.serialize(init)) == init
  assert jaxinit.get(init.name, **init.config()) == init


def test_get_by_name_with_arguments():
  assert jaxinit.get("sparse", num_nonzero=4) == jaxinit.sparse(num_nonzero=4)


@pytest.mark.parametrize(
  "factory,kwargs,exc,match",
  [
    (
      jaxinit.identity,
      {"scale": "1"},
      TypeError,
      r"jaxinit\.identity: .*`scale` must be a real number",
    ),
    (jaxinit.dirac, {"groups": 0}, ValueError, r"jaxinit\.dirac: .*`groups` must be >= 1, got 0"),
    (jaxinit.dirac, {"groups": 1.5}, TypeError, r"jaxinit\.dirac: .*`groups` must be an integer"),
    (
      jaxinit.sparse,
      {"num_nonzero": 3, "sparsity": 0.5},
      ValueError,
      r"jaxinit\.sparse: .*not both",
    ),
    (
      jaxinit.sparse,
      {"num_nonzero": 0},
      ValueError,
      r"jaxinit\.sparse: .*`num_nonzero` must be >= 1",
    ),
    (
      jaxinit.sparse,
      {"sparsity": 1.0},
      ValueError,
      r"jaxinit\.sparse: .*must be in \[0, 1\), got 1.0",
    ),
    (jaxinit.sparse, {"sparsity": -0.1}, ValueError, r"jaxinit\.sparse: .*`sparsity` must be >= 0"),
    (
      jaxinit.sparse,
      {"values": lambda k, s, d=None: k},
      TypeError,
      r"jaxinit\.sparse: .*`values` must be a jaxinit initializer",
    ),
    (
      jaxinit.sparse,
      {"values": "nromal"},
      ValueError,
      r"jaxinit\.sparse: .*unknown initializer 'nromal'",
    ),
    (jaxinit.normalized, {"scale": 0}, ValueError, r"jaxinit\.normalized: .*`scale` must be > 0"),
    (
      jaxinit.normalized,
      {"out_axis": "x"},
      TypeError,
      r"jaxinit\.normalized: .*`out_axis` must be an int",
    ),
  ],
)
def test_factory_errors(factory, kwargs, exc, match):
  with pytest.raises(exc, match=r"^" + match):
    factory(**kwargs)


@pytest.mark.parametrize(
  "init,shape,match",
  [
    (jaxinit.identity(), (4,), r"at least 2 dimensions"),
    (jaxinit.dirac(), (4,), r"at least 2 dimensions"),
    (jaxinit.dirac(groups=3), (3, 3, 4, 8), r"output channels \(8.*not divisible by `groups`=3"),
    (jaxinit.sparse(), (3, 8), r"`num_nonzero`=15 exceeds the fan-in 3"),
    (jaxinit.sparse(sparsity=0.9), (4, 8), r"zeroes all 4 incoming weights"),
    (jaxinit.sparse(num_nonzero=1), (8,), r"no fan-in axis"),
    (jaxinit.sparse(num_nonzero=1, out_axis=0, batch_axis=0), (4, 4), r"share axis \[0\]"),
    (jaxinit.normalized(), (8,), r"no fan-in axis"),
    (jaxinit.normalized(out_axis=2), (8, 4), r"`out_axis`=2 is out of range"),
  ],
)
def test_call_time_errors(init, shape, match):
  with pytest.raises(ValueError, match=rf"^jaxinit\.{init.name}: .*{match}"):
    init(jax.random.key(0), shape)
