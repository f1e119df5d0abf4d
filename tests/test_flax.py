"""Every initializer as kernel_init / bias_init of real Flax layers (linen and nnx),
and the fans Flax's kernel layouts imply."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cases import CASES
from flax import nnx

import jaxinit
from jaxinit import testing

FIRST = {name: examples[0] for name, (examples, _, _) in CASES.items()}
# matrix-only initializers (orthogonal, identity, ...) cannot draw a 1-D bias
BIAS = {
  name: init if "vector" in CASES[name][1] else jaxinit.zeros() for name, init in FIRST.items()
}


@pytest.mark.parametrize("name", sorted(FIRST))
def test_linen_dense_and_conv(name):
  init = FIRST[name]
  x = jnp.ones((2, 8, 8, 3))
  conv = nn.Conv(4, (3, 3), kernel_init=init, bias_init=jaxinit.zeros())
  v = conv.init(jax.random.key(0), x)
  assert v["params"]["kernel"].shape == (3, 3, 3, 4)
  assert conv.apply(v, x).shape == (2, 8, 8, 4)
  dense = nn.Dense(6, kernel_init=init, bias_init=BIAS[name], param_dtype=jnp.bfloat16)
  v = dense.init(jax.random.key(0), jnp.ones((2, 7), jnp.bfloat16))
  assert v["params"]["kernel"].dtype == jnp.bfloat16 and v["params"]["bias"].shape == (6,)


@pytest.mark.parametrize("name", sorted(FIRST))
def test_nnx_linear_and_conv(name):
  init = FIRST[name]
  # the same shapes and dtypes as the linen test: the compiled draws are shared
  lin = nnx.Linear(
    7, 6, kernel_init=init, bias_init=BIAS[name], param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
  )
  assert lin.kernel[...].shape == (7, 6) and lin.kernel[...].dtype == jnp.bfloat16
  assert lin(jnp.ones((2, 7), jnp.bfloat16)).shape == (2, 6)
  conv = nnx.Conv(3, 4, (3, 3), kernel_init=init, rngs=nnx.Rngs(1))
  assert conv.kernel[...].shape == (3, 3, 3, 4) and conv.kernel[...].dtype == jnp.float32


def test_flax_kernel_gets_the_initializer_draw():
  """Flax passes (key, shape, dtype) positionally: the kernel is exactly our draw."""
  init = jaxinit.he_uniform(mode="fan_out")
  key = jax.random.key(3)
  lin = nnx.Linear(64, 32, kernel_init=init, rngs=nnx.Rngs(params=key))
  expected = init(nnx.Rngs(params=key).params(), (64, 32), jnp.float32)
  np.testing.assert_array_equal(lin.kernel[...], expected)


def test_flax_layouts_give_the_right_variance():
  """He normal through Flax's own layers: Var = 2 / fan_in with HWIO fans."""
  v = nn.Conv(512, (3, 3), kernel_init=jaxinit.he_normal()).init(
    jax.random.key(0), jnp.ones((1, 8, 8, 96))
  )
  testing.assert_moments(v["params"]["kernel"], mean=0.0, var=2 / (9 * 96), name="linen conv")
  conv = nnx.Conv(96, 512, (3, 3), kernel_init=jaxinit.glorot_uniform(), rngs=nnx.Rngs(0))
  testing.assert_moments(conv.kernel[...], mean=0.0, var=2 / (9 * 96 + 9 * 512), name="nnx conv")
  # DenseGeneral flattens its kernel to (in, out) before calling kernel_init
  dense = nn.DenseGeneral((8, 64), kernel_init=jaxinit.lecun_normal())
  v = dense.init(jax.random.key(1), jnp.ones((1, 512)))
  assert v["params"]["kernel"].shape == (512, 8, 64)
  testing.assert_moments(v["params"]["kernel"], mean=0.0, var=1 / 512, name="DenseGeneral")


def test_jit_init_equals_eager_init():
  model = nn.Sequential(
    [
      nn.Dense(32, kernel_init=jaxinit.he_normal()),
      nn.relu,
      nn.Dense(8, kernel_init=jaxinit.glorot_normal(), bias_init=jaxinit.normal(0.1)),
    ]
  )
  x = jnp.ones((4, 16))
  eager = model.init(jax.random.key(0), x)
  jitted = jax.jit(model.init)(jax.random.key(0), x)
  jax.tree.map(np.testing.assert_array_equal, eager, jitted)
