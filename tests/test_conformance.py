"""Registry-driven sweep: every public initializer x shape family x dtype.

Each cell of the sweep draws once and checks shape, exact dtype (no upcast),
finiteness and that the same key gives the same bits. The full protocol check
(jaxinit.testing.assert_conforms: typed == legacy key, eager == jit, eval_shape,
different keys differ, vmap over keys) runs for every configuration on a
convolution kernel in float32 and a dense kernel in bfloat16. Every cell is a
fresh XLA compilation (~0.3 s on a 2-core CPU), which is what sizes the sweep.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cases import CASES, SHAPES

import jaxinit
from jaxinit import testing
from jaxinit._src import registry


def test_every_registered_initializer_is_swept():
  assert set(registry.names(include_aliases=False)) == set(CASES)


def _light(init, shape, dtype, key):
  out = init(key, shape, dtype)
  assert out.shape == shape, (init, out.shape, shape)
  assert out.dtype == jnp.dtype(dtype), (init, out.dtype, dtype)
  assert bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_array_equal(out, init(key, shape, dtype))
  return out


def _cells():
  full, light = [], []
  for name, (examples, families, dtypes) in CASES.items():
    for i, init in enumerate(examples):
      main = "conv2d" if "conv2d" in families else families[0]
      full.append(pytest.param(init, SHAPES[main], jnp.float32, id=f"{name}{i}-{main}-float32"))
      dense = "dense" if "dense" in families else main
      full.append(pytest.param(init, SHAPES[dense], jnp.bfloat16, id=f"{name}{i}-{dense}-bf16"))
      if i == 0:  # the first configuration of each initializer sees every family and dtype
        light += [
          pytest.param(init, SHAPES[f], jnp.float32, id=f"{name}{i}-{f}")
          for f in families
          if f != main
        ]
        light += [
          pytest.param(init, SHAPES[main], d, id=f"{name}{i}-{main}-{jnp.dtype(d).name}")
          for d in dtypes
          if d != jnp.bfloat16
        ]
  return full, light


FULL, LIGHT = _cells()


@pytest.mark.parametrize("init,shape,dtype", FULL)
def test_full_protocol(init, shape, dtype):
  testing.assert_conforms(init, shape, dtype, key=jax.random.key(11))


@pytest.mark.parametrize("init,shape,dtype", LIGHT)
def test_sweep(init, shape, dtype):
  _light(init, shape, dtype, jax.random.key(12))


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_dtype_is_float32(name):
  init = CASES[name][0][0]
  assert init(jax.random.key(0), (4, 4)).dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_under_x64(name):
  init = CASES[name][0][0]
  with jax.enable_x64(True):
    w = _light(init, (8, 16), None, jax.random.key(3))
    assert w.dtype == jnp.float64
    if not init.deterministic:
      # drawn in float64: values that float32 cannot represent
      wf = np.asarray(w)
      assert np.any(wf.astype(np.float32).astype(np.float64) != wf)


@pytest.mark.parametrize("name", sorted(n for n in CASES if CASES[n][0][0]._supports_complex()))
def test_complex128_under_x64(name):
  init = CASES[name][0][0]
  with jax.enable_x64(True):
    w = _light(init, (8, 16), jnp.complex128, jax.random.key(3))
    assert w.dtype == jnp.complex128


@pytest.mark.parametrize(
  "dtype", [jnp.int32, jnp.uint8, jnp.bool_], ids=lambda d: jnp.dtype(d).name
)
@pytest.mark.parametrize("name", sorted(CASES))
def test_integer_and_bool_dtypes_are_rejected(name, dtype):
  init = CASES[name][0][0]
  with pytest.raises(TypeError, match=rf"jaxinit\.{name}: `dtype` must be a floating-point"):
    init(jax.random.key(0), (4, 4), dtype)


def test_complex_rejected_where_meaningless():
  with pytest.raises(TypeError, match=r"jaxinit\.uniform: `dtype` complex64 is complex"):
    jaxinit.uniform()(jax.random.key(0), (4,), jnp.complex64)


def _zero_size_cases():
  cases = []
  for name in sorted(CASES):
    init, families = CASES[name][0][0], CASES[name][1]
    min_ndim = min(len(SHAPES[f]) for f in families)  # e.g. orthogonal needs a matrix
    for shape in [s for s in [(0,), (0, 6), (3, 3, 0, 8), (4, 0)] if len(s) >= min_ndim]:
      cases.append(pytest.param(init, shape, id=f"{init!r}-{shape}-bfloat16"))
  return cases


@pytest.mark.parametrize("init,shape", _zero_size_cases())
def test_zero_size_shapes_give_empty_arrays(init, shape):
  w = init(jax.random.key(0), shape, jnp.bfloat16)
  assert w.shape == shape and w.dtype == jnp.bfloat16


@pytest.mark.parametrize(
  "call",
  [
    lambda init, k: init(k, (3, 4), jnp.float32),
    lambda init, k: init(k, [3, 4], dtype=jnp.float32, out_sharding=None),
    lambda init, k: init(key=k, shape=(3, 4)),
  ],
  ids=["positional-dtype", "list-shape-and-keywords", "all-keywords"],
)
def test_flax_call_forms(call):
  """Flax calls kernel_init(key, shape, dtype) positionally; jax passes out_sharding."""
  init = jaxinit.he_normal()
  k = jax.random.key(0)
  np.testing.assert_array_equal(init(k, (3, 4)), call(init, k))
  assert isinstance(init, jaxinit.InitializerProtocol)
