"""jaxinit.testing catches broken initializers — each check is shown to fail on
an initializer that violates exactly what it checks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinit
from jaxinit import testing

SHAPE = (8, 16)


def test_passes_on_a_jax_initializer():
  testing.assert_conforms(jax.nn.initializers.lecun_normal(), SHAPE, jnp.float32)


def test_catches_an_upcast():
  def upcasting(key, shape, dtype=None, out_sharding=None):
    return jax.random.normal(key, shape, jnp.float32)

  with pytest.raises(AssertionError, match="asked for dtype bfloat16, got float32"):
    testing.assert_conforms(upcasting, SHAPE, jnp.bfloat16)


def test_catches_a_wrong_shape():
  def transposed(key, shape, dtype=None, out_sharding=None):
    return jax.random.normal(key, shape[::-1], dtype)

  with pytest.raises(AssertionError, match="wrong shape"):
    testing.assert_conforms(transposed, SHAPE)


def test_catches_non_finite_values():
  def log_of_uniform(key, shape, dtype=None, out_sharding=None):
    return jnp.log(jnp.zeros(shape, dtype))

  with pytest.raises(AssertionError):
    testing.assert_conforms(log_of_uniform, SHAPE)


def test_catches_hidden_state():
  counter = itertools.count()

  def stateful(key, shape, dtype=None, out_sharding=None):
    return jax.random.normal(jax.random.fold_in(key, next(counter)), shape, dtype)

  with pytest.raises(AssertionError, match="same key, different values"):
    testing.assert_conforms(stateful, SHAPE)


def test_catches_ignoring_the_key():
  def constant_noise(key, shape, dtype=None, out_sharding=None):
    return jax.random.normal(jax.random.key(0), shape, dtype)

  with pytest.raises(AssertionError, match="a different key gave the same array"):
    testing.assert_conforms(constant_noise, SHAPE)
  testing.assert_conforms(constant_noise, SHAPE, deterministic=True)


def test_catches_a_false_deterministic_claim():
  with pytest.raises(AssertionError, match="declared deterministic but depends on the key"):
    testing.assert_conforms(jaxinit.normal(), SHAPE, deterministic=True)


def test_catches_eager_jit_mismatch():
  def host_side(key, shape, dtype=None, out_sharding=None):
    # different arithmetic under tracing than eagerly
    scale = 2.0 if isinstance(key, jax.core.Tracer) else 1.0
    return jax.random.normal(key, shape, dtype) * scale

  with pytest.raises(AssertionError, match="eager and jit differ"):
    testing.assert_conforms(host_side, SHAPE)


def test_catches_legacy_key_mismatch():
  def typed_only(key, shape, dtype=None, out_sharding=None):
    bonus = 0.0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1.0
    if bonus:
      key = jax.random.wrap_key_data(key)
    return jax.random.normal(key, shape, dtype) + bonus

  with pytest.raises(AssertionError, match="typed and legacy keys differ"):
    testing.assert_conforms(typed_only, SHAPE)


def test_moments_report_the_z_score():
  w = jaxinit.normal(1.0)(jax.random.key(0), (10**6,))
  testing.assert_moments(w, mean=0.0, var=1.0)
  with pytest.raises(AssertionError, match=r"mean .* expected 0\.01, z = -\d+\.\d+"):
    testing.assert_moments(w, mean=0.01)
  with pytest.raises(AssertionError, match=r"variance .* expected 1\.03, z = -\d+\.\d+"):
    testing.assert_moments(w, var=1.03)
  z_mean, z_var = testing.moment_z_scores(w, mean=0.0, var=1.0)
  assert abs(z_mean) < 6 and abs(z_var) < 6


def test_ks_rejects_the_wrong_shape():
  w = np.asarray(jaxinit.uniform(-1.0, 1.0)(jax.random.key(0), (10**5,)))
  assert testing.assert_ks(w, "uniform", (-1.0, 2.0)) > 1e-6
  with pytest.raises(AssertionError, match=r"Kolmogorov–Smirnov test against norm"):
    testing.assert_ks(w, "norm", (0.0, (1 / 3) ** 0.5))


def test_orthonormal_check():
  q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (64, 16)))
  testing.assert_orthonormal(q)
  testing.assert_orthonormal(q.T)  # wide: orthonormal rows
  testing.assert_orthonormal(2.0 * q, scale=2.0)
  with pytest.raises(AssertionError, match="columns are not orthonormal"):
    testing.assert_orthonormal(q * 1.001)
  with pytest.raises(AssertionError, match="not orthonormal"):
    testing.assert_orthonormal(jax.random.normal(jax.random.key(1), (16, 16)))
  # batched, with the column axis first
  qs = jnp.stack([q, -q])  # (2, 64, 16)
  testing.assert_orthonormal(jnp.swapaxes(qs, 1, 2), column_axis=1, batch_axis=(0,))
