"""The one activation table: numpy and jax forms of each name are the same function,
and each derivative is the jax gradient (so gains, mean-field theory and the
networks of ``jaxinit compare`` all use the same activations)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinit
from jaxinit._src import activations

# avoid the kinks (0 for relu-likes, +-1 for hard_tanh), where a derivative is a choice
X = np.concatenate(
  [
    np.linspace(-6.0, -1.01, 200),
    np.linspace(-0.99, -0.01, 99),
    np.linspace(0.013, 0.99, 99),
    np.linspace(1.01, 6.0, 200),
  ]
)


@pytest.mark.parametrize("name", activations.NAMES)
def test_numpy_and_jax_forms_agree_in_float64(name):
  phi, dphi = activations.numpy_pair(name, activations.TABLE[name].param)
  with jax.enable_x64(True):
    f = activations.jax_fn(name)
    y = np.asarray(f(jnp.asarray(X, jnp.float64)))
    g = np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(X, jnp.float64)))
  np.testing.assert_allclose(phi(X), y, rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(dphi(X), g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["leaky_relu", "elu"])
def test_parameters_reach_both_forms(name):
  phi, _ = activations.numpy_pair(name, 0.3)
  with jax.enable_x64(True):
    y = np.asarray(activations.jax_fn(name, 0.3)(jnp.asarray(X, jnp.float64)))
  np.testing.assert_allclose(phi(X), y, rtol=1e-12, atol=1e-13)


def test_every_table_reads_the_same_names():
  assert jaxinit.mean_field.ACTIVATIONS == activations.NAMES
  from jaxinit._src import compare, gain

  assert compare.ACTIVATIONS == activations.NAMES
  assert set(activations.NAMES) <= set(gain.NONLINEARITIES)


def test_gelu_is_the_erf_form_everywhere():
  x = jnp.linspace(-3.0, 3.0, 7)
  exact = jax.nn.gelu(x, approximate=False)
  np.testing.assert_array_equal(activations.jax_fn("gelu")(x), exact)
  assert not np.array_equal(activations.jax_fn("gelu_tanh")(x), exact)
