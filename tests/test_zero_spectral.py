"""zero_hadamard (ZerO), spectral and zero_rows: exact values against independent
constructions (scipy's Hadamard matrix, the orthogonal initializer), layouts, Flax layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxinit
from jaxinit import testing

KEY = jax.random.key(5)


def _zero_reference(m: int, n: int) -> np.ndarray:
  """ZerO's (out, in) = (m, n) matrix as its paper and reference notebook state it:
  eye(m, n) when m <= n, else I_{m x p} H_p / 2^(c/2) I_{p x n}, c = ceil(log2 m), p = 2^c."""
  if m <= n:
    return np.eye(m, n)
  c = int(np.ceil(np.log2(m)))
  p = 2**c
  return (scipy.linalg.hadamard(p) / 2 ** (c / 2))[:m, :n]


@pytest.mark.parametrize("m,n", [(3, 2), (5, 3), (9, 9), (4, 8), (16, 5)])
def test_zero_hadamard_matches_the_reference_construction(m, n):
  ref = _zero_reference(m, n)
  torch_w = jaxinit.zero_hadamard(in_axis=1, out_axis=0)(KEY, (m, n))
  np.testing.assert_array_equal(torch_w, ref.astype(np.float32))
  flax_w = jaxinit.zero_hadamard()(jax.random.key(99), (n, m))  # key ignored
  np.testing.assert_array_equal(flax_w, ref.T.astype(np.float32))
  if (m, n) == (5, 3):
    with jax.enable_x64(True):
      w64 = jaxinit.zero_hadamard(in_axis=1, out_axis=0)(KEY, (m, n), jnp.float64)
      np.testing.assert_array_equal(w64, ref)


def test_zero_hadamard_widening_columns_are_orthonormal_for_powers_of_two():
  w = np.asarray(jaxinit.zero_hadamard(in_axis=1, out_axis=0)(KEY, (16, 5)))
  np.testing.assert_allclose(w.T @ w, np.eye(5), atol=1e-6)
  w = np.asarray(jaxinit.zero_hadamard(in_axis=1, out_axis=0)(KEY, (12, 5)))  # p = 16
  np.testing.assert_allclose(np.diag(w.T @ w), np.full(5, 12 / 16), atol=1e-6)


def test_zero_hadamard_layouts_conv_centre_and_batch():
  ref = _zero_reference(6, 4)  # out 6, in 4
  conv = jaxinit.zero_hadamard()(KEY, (3, 3, 4, 6))  # Flax HWIO
  np.testing.assert_array_equal(conv[1, 1], ref.T.astype(np.float32))
  assert float(jnp.abs(conv).sum()) == pytest.approx(np.abs(ref).sum())
  tree = {"w": jnp.zeros((6, 4, 3, 3))}  # torch OIHW through reinit's layout
  torch_conv = jaxinit.reinit(tree, {"w": jaxinit.zero_hadamard()}, KEY, layout="torch")["w"]
  np.testing.assert_array_equal(torch_conv[:, :, 1, 1], ref.astype(np.float32))
  assert float(jnp.abs(torch_conv).sum()) == pytest.approx(np.abs(ref).sum())
  stack = jaxinit.zero_hadamard(batch_axis=0)(KEY, (3, 4, 6), jnp.bfloat16)
  for i in range(3):
    np.testing.assert_array_equal(stack[i], jnp.asarray(ref.T, jnp.bfloat16))


def test_zero_hadamard_through_flax_dense_copies_its_input_when_narrowing():
  x = jax.random.normal(jax.random.key(1), (4, 10))
  y, _ = nn.Dense(6, kernel_init=jaxinit.zero_hadamard()).init_with_output(KEY, x)
  np.testing.assert_array_equal(y, x[:, :6])


@pytest.mark.parametrize(
  "shape,kwargs,ratio",
  [
    ((256, 64), {}, 64 / 256),
    ((64, 256), {}, 256 / 64),
    ((3, 3, 16, 32), {}, 32 / 16),
    ((32, 16, 3, 3), {"in_axis": 1, "out_axis": 0}, 32 / 16),
  ],
)
def test_spectral_singular_values(shape, kwargs, ratio):
  init = jaxinit.spectral(**kwargs)
  w = init(KEY, shape)
  out_axis = kwargs.get("out_axis", -1)
  matrix = jnp.moveaxis(w, out_axis, -1).reshape(-1, shape[out_axis])
  s = np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)
  np.testing.assert_allclose(s, np.full_like(s, ratio**0.5), rtol=2e-5)
  # exactly orthogonal's draw, scaled: the machinery is shared
  col = out_axis % len(shape)
  same = jaxinit.orthogonal(scale=ratio**0.5, column_axis=col)(KEY, shape)
  np.testing.assert_array_equal(w, same)


def test_spectral_layout_batch_and_dtypes():
  tree = {"weight": jnp.zeros((128, 32))}  # torch (out, in): sqrt(128 / 32) = 2
  w = jaxinit.reinit(tree, {"weight": jaxinit.spectral()}, KEY, layout="torch")["weight"]
  np.testing.assert_allclose(np.linalg.svd(np.asarray(w), compute_uv=False), 2.0, rtol=2e-5)
  stack = jaxinit.spectral(batch_axis=0)(KEY, (3, 48, 12), jnp.bfloat16)
  assert stack.dtype == jnp.bfloat16
  for i in range(3):
    testing.assert_orthonormal(stack[i].astype(jnp.float32) / 0.5, atol=2e-2)
  assert not np.array_equal(stack[0], stack[1])


def test_zero_rows_values_and_layout():
  base = jaxinit.normal(0.02)
  init = jaxinit.zero_rows(base, rows=(1, -1))
  w = init(KEY, (50, 8))
  ref = base(KEY, (50, 8))
  np.testing.assert_array_equal(w[1], 0)
  np.testing.assert_array_equal(w[-1], 0)
  rest = np.delete(np.arange(50), [1, 49])
  np.testing.assert_array_equal(w[rest], ref[rest])
  # columns: axis=1
  wc = jaxinit.zero_rows("ones", rows=2, axis=1)(KEY, (3, 4))
  np.testing.assert_array_equal(wc, np.ones((3, 4)) * (np.arange(4) != 2))
  # a fan-based init inside follows reinit's layout
  inner = jaxinit.zero_rows(jaxinit.he_normal(), rows=0)
  tree = {"w": jnp.zeros((400, 20))}
  torch_w = jaxinit.reinit(tree, {"w": inner}, KEY, layout="torch")["w"]
  testing.assert_moments(torch_w[1:], mean=0.0, var=2 / 20, name="he fan_in 20")
  assert jaxinit.deserialize(jaxinit.serialize(init)) == init
  assert repr(init) == "zero_rows(init=normal(stddev=0.02), rows=(1, -1))"
