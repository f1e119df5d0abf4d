"""orthogonal and delta_orthogonal: Haar distribution (every method), orthonormality for
every shape family, dtypes, sharding, compilation count, layout, errors.

Statistical checks use fixed keys used nowhere else, large batched draws (one
compilation each) and limits of 6 standard errors / KS p >= 1e-6.
"""

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxinit
from jaxinit import testing
from jaxinit._src import orthogonal as orth_lib

P = jax.sharding.PartitionSpec

METHODS = orth_lib.METHODS
N_HAAR = 20_000  # 3x3 draws per Haar check


# ---------------------------------------------------------------------------
# Haar distribution
# ---------------------------------------------------------------------------


def _mean_z(x, expected):
  return testing.moment_z_scores(np.asarray(x), mean=expected)[0]


def haar_failures(q: np.ndarray) -> list[str]:
  """Which Haar checks a batch ``(N, r, c)`` of orthogonal/unitary draws fails (r, c <= 3).

  * entries: for Haar O(3) (and its 3x2 / 2x3 Stiefel parts) every entry is
    uniform on [-1, 1]; for U(3), |q_ij|^2 ~ Beta(1, 2) and arg q_ij is uniform;
  * square: E[tr Q] = 0, E[|tr Q|^2] = 1, det = +-1 balanced (real) or with a
    uniform phase (complex).
  """
  q = np.asarray(q).astype(np.complex128)
  _, rows, cols = q.shape
  cplx = bool(np.any(q.imag))
  bad = []

  def ks(x, dist, args, label):
    p = stats.kstest(x, dist, args=args).pvalue
    if not p >= 1e-6:
      bad.append(f"{label}: KS p = {p:.2g}")

  for i in range(rows):
    for j in range(cols):
      e = q[:, i, j]
      if cplx:
        ks(np.abs(e) ** 2, "beta", (1, 2), f"|q[{i},{j}]|^2 ~ Beta(1, 2)")
        ks(np.angle(e), "uniform", (-np.pi, 2 * np.pi), f"arg q[{i},{j}] uniform")
      else:
        ks(e.real, "uniform", (-1, 2), f"q[{i},{j}] ~ U[-1, 1]")
  if rows == cols:
    tr = np.trace(q, axis1=1, axis2=2)
    det = np.linalg.det(q)
    for label, x, want in [
      ("E[tr Q] = 0", tr if cplx else tr.real, 0.0),
      ("E[|tr Q|^2] = 1", np.abs(tr) ** 2, 1.0),
      ("E[det Q] = 0", det if cplx else det.real, 0.0),
    ]:
      z = _mean_z(x, want)
      if not abs(z) <= 6:
        bad.append(f"{label}: z = {z:.1f}")
    if not np.allclose(np.abs(det), 1, atol=1e-4):
      bad.append("|det Q| != 1")
    if cplx:
      ks(np.angle(det), "uniform", (-np.pi, 2 * np.pi), "arg det Q uniform")
  return bad


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
def test_haar_square(method, dtype):
  key = jax.random.key(9103 + METHODS.index(method) + 10 * (dtype == jnp.complex64))
  q = jaxinit.orthogonal(batch_axis=0, method=method)(key, (N_HAAR, 3, 3), dtype)
  assert q.dtype == dtype
  testing.assert_orthonormal(q, batch_axis=(0,))  # unitary for complex64
  failures = haar_failures(q)
  assert not failures, failures


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(3, 2), (2, 3)], ids=["tall", "wide"])
def test_haar_rectangular(method, shape):
  key = jax.random.key(7717 + METHODS.index(method) + 10 * shape[0])
  q = jaxinit.orthogonal(batch_axis=0, method=method)(key, (N_HAAR, *shape))
  failures = haar_failures(q)
  assert not failures, failures


def test_haar_checks_reject_non_haar_matrices():
  """The checks have power: QR without the sign fix, one random reflector, and a Haar sample
  whose columns are given the sign of their first entry (a wrong sign fix, as LAPACK's reflector
  convention without Mezzadri's diagonal gives) are orthogonal but not Haar."""
  g = np.asarray(jax.random.normal(jax.random.key(5501), (N_HAAR, 3, 3)), np.float64)
  no_sign_fix = np.linalg.qr(g)[0]
  u = g[:, :, 0] / np.linalg.norm(g[:, :, 0], axis=-1, keepdims=True)
  one_reflector = np.eye(3) - 2 * u[:, :, None] * u[:, None, :]
  q = np.asarray(jaxinit.orthogonal(batch_axis=0)(jax.random.key(5502), (N_HAAR, 3, 3)))
  first_row_positive = q * np.sign(q[:, :1, :])
  for name, bad in [
    ("qr without sign fix", no_sign_fix),
    ("one reflector", one_reflector),
    ("first row made positive", first_row_positive),
  ]:
    testing.assert_orthonormal(bad, batch_axis=(0,), atol=1e-5, name=name)
    assert haar_failures(bad), f"{name} passed the Haar checks"


def test_stewart_first_column_is_the_normalized_first_gaussian():
  """The sign convention, exactly: Q e_1 = x_1 / ||x_1|| (beta = +||x||, i.e. R_11 > 0)."""
  key = jax.random.key(1)
  real = np.dtype(np.float32)
  both = jax.jit(
    lambda k, *a: (orth_lib.gaussian_rows(k, *a), orth_lib.stewart(k, *a)),
    static_argnums=(1, 2, 3, 4, 5),
  )
  for m, n, cplx in [(7, 4, False), (5, 5, True)]:
    xt, q = (np.asarray(a) for a in both(key, 2, m, n, real, cplx))
    x0 = xt[:, 0, :]  # reflector 1 is row 1
    np.testing.assert_allclose(
      q[:, :, 0], x0 / np.linalg.norm(x0, axis=-1, keepdims=True), atol=2e-6
    )


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_packed_upper_places_every_draw_at_most_once_on_or_above_the_diagonal(n):
  size = (n + 1) // 2 * (n + 1)
  z = jnp.arange(1, size + 1, dtype=jnp.float32)[None]
  upper = np.asarray(orth_lib.packed_upper(z, n)[0])[np.triu_indices(n)]
  assert len(set(upper.tolist())) == upper.size == n * (n + 1) // 2
  assert size - upper.size == (n % 2) * (n + 1) // 2  # unused: none for even n


def test_qr_method_matches_jax_layout():
  """Same meaning of column_axis as jax.nn.initializers.orthogonal: with method='qr' and the
  same key, the same Gaussian is factored, so the results agree."""
  key = jax.random.key(3)
  for shape, col in [((4, 16, 3), 1)]:  # wide (transposed), a middle column axis
    ours = jaxinit.orthogonal(2.0, column_axis=col, method="qr")(key, shape)
    ref = jax.nn.initializers.orthogonal(2.0, column_axis=col)(key, shape)
    np.testing.assert_allclose(ours, ref, atol=1e-5, err_msg=f"{shape} column_axis={col}")


# ---------------------------------------------------------------------------
# Orthonormality for every shape family
# ---------------------------------------------------------------------------

SHAPES = [  # square: test_haar_square, test_large_square_float32_precision
  ((96, 40), -1, ()),  # tall
  ((40, 96), -1, ()),  # wide
  ((2, 3, 3, 4, 8), -1, ()),  # 3-D conv: 72 x 8
  ((3, 3, 16, 32), -2, ()),  # conv, columns = inputs: 288 x 16
  ((3, 3, 1, 24), -1, ()),  # depthwise: 9 x 24, orthonormal rows
  ((4, 24, 24), -1, (0,)),  # a stack of layers
  ((2, 6, 3, 5), 1, (0, 2)),  # two batch axes, columns in the middle
]


# every family with the default method; "qr" shares the flattening, so a few suffice
CASES = [(s, "stewart") for s in SHAPES] + [(SHAPES[i], "qr") for i in (1, 5)]


@pytest.mark.parametrize(
  "shape,col,batch,method", [(*s, m) for s, m in CASES], ids=lambda v: str(v)
)
def test_orthonormal(shape, col, batch, method):
  init = jaxinit.orthogonal(1.5, column_axis=col, batch_axis=batch, method=method)
  w = init(jax.random.key(4), shape)
  assert w.shape == shape and w.dtype == jnp.float32
  testing.assert_orthonormal(w, column_axis=col, batch_axis=batch, scale=1.5)
  if batch:  # independent matrices
    flat = np.moveaxis(np.asarray(w), batch, range(len(batch))).reshape(-1, *w.shape[1:])[:2]
    assert not np.allclose(flat[0], flat[1])


def test_large_square_float32_precision():
  w = jaxinit.orthogonal()(jax.random.key(6), (512, 512))
  assert testing.assert_orthonormal(w) < 2e-5  # 10 * eps * n is 6e-4


def test_depthwise_kernel_gets_orthonormal_rows():
  """Documented: (3, 3, 1, C) is the 9 x C matrix; for C > 9 its rows are orthonormal and the
  channels' taps have mean squared norm 9 / C, not 1 (same configuration as test_orthonormal)."""
  w = jaxinit.orthogonal(1.5)(jax.random.key(4), (3, 3, 1, 24))
  assert SHAPES[4] == ((3, 3, 1, 24), -1, ())
  sq_norms = np.sum(np.asarray(w, np.float64).reshape(9, 24) ** 2, axis=0) / 1.5**2
  np.testing.assert_allclose(np.mean(sq_norms), 9 / 24, rtol=1e-5)
  assert np.std(sq_norms) > 0.01  # and they differ from channel to channel


# ---------------------------------------------------------------------------
# dtypes, zero size, sharding, compilation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method,dtype", [("stewart", jnp.bfloat16), ("qr", jnp.float16)])
def test_16_bit_is_float32_rounded_once(method, dtype):
  init = jaxinit.orthogonal(method=method)
  key = jax.random.key(8)
  w16 = init(key, (48, 32), dtype)
  assert w16.dtype == dtype
  np.testing.assert_array_equal(w16, init(key, (48, 32)).astype(dtype))
  testing.assert_orthonormal(w16)


def test_float64_under_x64_is_computed_in_float64():
  with jax.enable_x64(True):  # (the conformance sweep checks complex128 too)
    w = jaxinit.orthogonal()(jax.random.key(10), (64, 48), jnp.float64)
  assert w.dtype == jnp.float64
  assert testing.assert_orthonormal(w) < 1e-13


def test_zero_size_shapes():
  plain = [(0, 5), (5, 0), (3, 3, 0, 8), (4, 4, 0)]
  for init, shapes in [
    (jaxinit.orthogonal(), plain),
    (jaxinit.delta_orthogonal(), plain),
    (jaxinit.orthogonal(batch_axis=0, method="qr"), [(0, 4, 4), (4, 0, 4), (2, 3, 0)]),
  ]:
    for shape in shapes:
      w = init(jax.random.key(0), shape, jnp.bfloat16)
      assert w.shape == shape and w.dtype == jnp.bfloat16


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("a", "b"))


def _sharded_equals_unsharded(init, shape, spec, key):
  sharding = jax.sharding.NamedSharding(_mesh(), spec)
  w = init(key, shape, None, sharding)
  assert w.sharding.is_equivalent_to(sharding, len(shape))
  np.testing.assert_array_equal(w, init(key, shape))  # bit-identical
  return w


def test_out_sharding():
  """Each device computes the whole draw and keeps its shard (here: one matrix per device)."""
  w = _sharded_equals_unsharded(
    jaxinit.orthogonal(batch_axis=0), (8, 16, 16), P(("a", "b")), jax.random.key(12)
  )
  testing.assert_orthonormal(w, batch_axis=(0,))
  with jax.set_mesh(_mesh()):
    w = jaxinit.orthogonal()(jax.random.key(13), (32, 32), None, P(None, "b"))
  assert w.sharding.spec == P(None, "b")


def test_stored_gaussian_path_is_bit_exact_under_vmap_and_sharding(monkeypatch):
  """Large draws store their Gaussians through a 2-step loop (a performance device); with the
  threshold lowered, small shapes take that path too and must stay bit-exact."""
  monkeypatch.setattr(orth_lib, "_STORE_ABOVE", 0)
  init = jaxinit.orthogonal(0.75)  # a configuration no other test compiles
  shape, keys = (24, 16), jax.random.split(jax.random.key(19), 3)
  np.testing.assert_array_equal(
    jax.vmap(lambda k: init(k, shape))(keys), jnp.stack([init(k, shape) for k in keys])
  )
  w = _sharded_equals_unsharded(init, shape, P("a", "b"), keys[0])
  testing.assert_orthonormal(w, scale=0.75)


def test_one_compilation_per_shape_dtype_method(monkeypatch):
  traces = []
  original = orth_lib._Orthogonal._sample

  def counting(self, key, shape, dtype):
    traces.append((self.method, shape, dtype))
    return original(self, key, shape, dtype)

  monkeypatch.setattr(orth_lib._Orthogonal, "_sample", counting)
  shape = (5, 7)  # used by no other test, so nothing is cached yet
  for i in range(3):  # new keys and new but equal initializers: one trace
    jaxinit.orthogonal(1.25)(jax.random.key(i), shape)
  jaxinit.orthogonal(1.25)(jax.random.PRNGKey(3), shape)  # a legacy key too
  assert len(traces) == 1
  jaxinit.orthogonal(1.25)(jax.random.key(0), shape, jnp.bfloat16)
  jaxinit.orthogonal(1.25, method="qr")(jax.random.key(0), shape)
  jaxinit.orthogonal(1.25)(jax.random.key(0), (7, 5))
  for i in range(2):
    jaxinit.orthogonal(1.25, method="qr")(jax.random.key(i), shape)
    jaxinit.orthogonal(1.25)(jax.random.key(i), (7, 5))
  assert len(traces) == 4, traces


# ---------------------------------------------------------------------------
# delta_orthogonal
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  "shape",
  [(3, 16, 32), (4, 4, 8, 8), (2, 3, 3, 8, 8), (3, 3, 32, 16), (8, 16)],
  ids=["1d", "2d-even", "3d", "2d-fan_in>fan_out", "no-spatial"],
)
def test_delta_orthogonal(shape):
  key = jax.random.key(15)
  w = np.asarray(jaxinit.delta_orthogonal(2.0)(key, shape))
  c = tuple((k - 1) // 2 for k in shape[:-2])
  centre = w[c]
  off = w.copy()
  off[c] = 0
  assert np.all(off == 0), "taps off the centre must be exactly zero"
  assert np.all(centre != 0)
  testing.assert_orthonormal(centre, scale=2.0)  # rows if in <= out, columns if in > out


def test_delta_orthogonal_centre_is_orthogonal_of_the_same_key():
  key = jax.random.key(16)
  w = jaxinit.delta_orthogonal(column_axis=-2)(key, (3, 3, 8, 16))
  np.testing.assert_array_equal(w[1, 1], jaxinit.orthogonal(column_axis=-2)(key, (8, 16)))


# ---------------------------------------------------------------------------
# Registry, serialization, errors
# ---------------------------------------------------------------------------


def test_registry_and_serialization():
  init = jaxinit.get({"name": "orthogonal", "scale": 2.0})
  assert init == jaxinit.orthogonal(2.0) and repr(init) == "orthogonal(scale=2.0)"
  for init in (jaxinit.orthogonal(0.5, 0, (1, 2), "qr"), jaxinit.delta_orthogonal(2.0, -2)):
    assert jaxinit.deserialize(jaxinit.serialize(init)) == init
    assert pickle.loads(pickle.dumps(init)) == init
  assert jaxinit.orthogonal(batch_axis=1).batch_axis == (1,)
  assert hash(jaxinit.orthogonal()) == hash(jaxinit.orthogonal())


@pytest.mark.parametrize(
  "kwargs,exc,match",
  [
    ({"scale": "2"}, TypeError, r"`scale` must be a real number, got '2'"),
    ({"scale": 0.0}, ValueError, r"`scale` must be > 0, got 0.0"),
    ({"scale": math.inf}, ValueError, r"`scale` must be finite"),
    ({"column_axis": 1.0}, TypeError, r"`column_axis` must be an integer, got 1.0"),
    ({"batch_axis": "0"}, TypeError, r"`batch_axis` must be an int or a sequence of ints"),
    ({"batch_axis": (0, 0)}, ValueError, r"`batch_axis` has a repeated axis"),
    ({"column_axis": 0, "batch_axis": 0}, ValueError, r"`column_axis`=0 is also in `batch_axis`"),
    (
      {"method": "householder"},
      ValueError,
      r"`method` must be one of 'stewart', 'qr', got 'householder'",
    ),
  ],
)
def test_orthogonal_factory_errors(kwargs, exc, match):
  with pytest.raises(exc, match=r"^jaxinit\.orthogonal: .*" + match):
    jaxinit.orthogonal(**kwargs)


@pytest.mark.parametrize(
  "init,shape,match",
  [
    (jaxinit.orthogonal(), (5,), r"at least 2 dimensions .* got \(5,\)"),
    (jaxinit.orthogonal(column_axis=2), (4, 4), r"`column_axis`=2 is out of range"),
    (jaxinit.orthogonal(batch_axis=0), (4, 4), r"has no row axis"),
    (jaxinit.orthogonal(column_axis=-1, batch_axis=1), (4, 4), r"`column_axis`=-1 is also in"),
    (jaxinit.delta_orthogonal(), (5,), r"needs a kernel with an input and an output axis"),
    (
      jaxinit.delta_orthogonal(column_axis=0),
      (3, 3, 4, 4),
      r"`column_axis` must be the kernel's input axis \(`in_axis`=-2\) or output axis .*got 0",
    ),
    (jaxinit.delta_orthogonal(in_axis=0, out_axis=-4), (3, 3, 4, 4), r"name the same axis"),
    (jaxinit.dirac(in_axis=1, out_axis=-3), (3, 3, 4, 4), r"name the same axis"),
    (jaxinit.identity(), (4,), r"at least 2 dimensions"),
  ],
)
def test_call_time_errors(init, shape, match):
  with pytest.raises(ValueError, match=rf"^jaxinit\.{init.name}: .*{match}"):
    init(jax.random.key(0), shape)


def test_delta_orthogonal_factory_errors():
  with pytest.raises(ValueError, match=r"^jaxinit\.delta_orthogonal: `scale` must be > 0"):
    jaxinit.delta_orthogonal(-1.0)
  with pytest.raises(TypeError, match=r"^jaxinit\.delta_orthogonal: `column_axis` must be an"):
    jaxinit.delta_orthogonal(column_axis=(0, 1))
  with pytest.raises(
    ValueError,
    match=r"^jaxinit\.delta_orthogonal: `column_axis` must be the "
    r"kernel's input axis \(`in_axis`=-2\) or output axis \(`out_axis`=-1\), got -3",
  ):
    jaxinit.delta_orthogonal(column_axis=-3)
  with pytest.raises(ValueError, match=r"^jaxinit\.delta_orthogonal: `in_axis` and `out_axis`"):
    jaxinit.delta_orthogonal(in_axis=0, out_axis=0)
  with pytest.raises(TypeError, match=r"^jaxinit\.dirac: `in_axis` must be an integer"):
    jaxinit.dirac(in_axis=(0,))
  with pytest.raises(ValueError, match=r"^jaxinit\.identity: `in_axis` and `out_axis`"):
    jaxinit.identity(in_axis=-1)
