"""out_sharding is honoured: the result carries the requested sharding and the
same values as the unsharded call (8 simulated CPU devices, set in conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinit
from jaxinit import testing

INITS = [
  jaxinit.he_normal(),
  jaxinit.truncated_normal(0.02, exact_std=True),
  jaxinit.glorot_uniform(),
  jaxinit.normal(0.3, 1.0),
  jaxinit.constant(0.5),
  jaxinit.zeros(),
]


def test_eight_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize("init", INITS, ids=repr)
def test_named_sharding_values_and_placement(init):
  mesh = jax.make_mesh((2, 4), ("data", "model"))
  key = jax.random.key(7)
  want = init(key, (16, 32))
  for spec in [P("data", "model"), P(None, "model"), P(("data", "model"), None), P()]:
    sharding = NamedSharding(mesh, spec)
    got = init(key, (16, 32), jnp.float32, sharding)
    assert got.sharding.is_equivalent_to(sharding, 2), (spec, got.sharding)
    np.testing.assert_array_equal(got, want)


def test_conforms_with_sharding_and_bf16():
  mesh = jax.make_mesh((8,), ("x",))
  testing.assert_conforms(
    jaxinit.he_uniform(), (16, 8), jnp.bfloat16, out_sharding=NamedSharding(mesh, P("x", None))
  )


def test_values_do_not_depend_on_the_mesh():
  key = jax.random.key(3)
  init = jaxinit.lecun_normal()
  want = np.asarray(init(key, (24, 16)))
  for n in (1, 2, 4, 8):
    mesh = jax.make_mesh((n,), ("x",), devices=jax.devices()[:n])
    got = init(key, (24, 16), None, NamedSharding(mesh, P(None, "x")))
    assert len(got.sharding.device_set) == n
    np.testing.assert_array_equal(got, want)


def test_partition_spec_inside_a_mesh_context():
  mesh = jax.make_mesh((4,), ("x",), devices=jax.devices()[:4])
  key = jax.random.key(0)
  with jax.set_mesh(mesh):
    got = jaxinit.he_normal()(key, (8, 8), None, P("x", None))
  assert got.sharding.is_equivalent_to(NamedSharding(mesh, P("x", None)), 2)
  np.testing.assert_array_equal(got, jaxinit.he_normal()(key, (8, 8)))


def test_sharded_inside_jit():
  mesh = jax.make_mesh((8,), ("x",))
  sharding = NamedSharding(mesh, P("x"))
  init = jaxinit.normal()
  out = jax.jit(lambda k: init(k, (64,), None, sharding))(jax.random.key(1))
  assert out.sharding.is_equivalent_to(sharding, 1)
  np.testing.assert_array_equal(out, init(jax.random.key(1), (64,)))


def test_values_are_the_same_in_every_compilation_context():
  """XLA folds constants and fuses products differently depending on the program
  around a draw (a mesh context blocks some rewrites); the samplers pin their
  roundings, so a draw made inside jax.set_mesh equals the plain draw bit for bit."""
  from _cases import CASES

  key = jax.random.key(21)
  inits = [examples[0] for examples, _, _ in CASES.values()]
  plain = [np.asarray(i(key, (64, 64))) for i in inits]
  plain_c = [
    np.asarray(i(key, (64, 64), jnp.complex64)) if i._supports_complex() else None for i in inits
  ]
  mesh = jax.make_mesh((4,), ("x",), devices=jax.devices()[:4])
  with jax.set_mesh(mesh):
    for init, want, want_c in zip(inits, plain, plain_c, strict=True):
      np.testing.assert_array_equal(init(key, (64, 64)), want, err_msg=repr(init))
      if want_c is not None:
        np.testing.assert_array_equal(
          init(key, (64, 64), jnp.complex64), want_c, err_msg=repr(init)
        )
