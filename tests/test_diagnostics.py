"""jaxinit.diagnostics against independent computations.

References: numpy float64 forward passes and hand-derived gradients and
Jacobians; a deep linear orthogonal network (J orthogonal: every singular value
is 1); a deep linear network with variance-1/fan_in weights (variance flat in
depth); the exact spectrum for the Lanczos estimate.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinit import diagnostics

# --- models --------------------------------------------------------------------------------


def linear_net(params, x):
  for w in params:
    x = x @ w
  return x


def tanh_net(params, x):
  for w in params:
    x = jnp.tanh(x @ w)
  return x


def normal(seed, *shape, scale=1.0):
  """Test data from numpy (no jax compilation per shape)."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def haar(seed, n):
  """A Haar orthogonal matrix by QR with the sign fix (independent of jaxinit.orthogonal)."""
  q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
  return jnp.asarray(q * np.sign(np.diag(r)), jnp.float32)


@pytest.fixture(scope="module")
def tanh_case():
  n = 96
  ws = [normal(i, n, n, scale=1.3 / np.sqrt(n)) for i in range(10)]
  x = normal(99, 4, n)
  return ws, x, diagnostics.jacobian_spectrum(tanh_net, ws, x, method="exact")


# --- signal propagation ----------------------------------------------------------------------


def moments(y):
  y = np.asarray(y, np.float64)
  return y.mean(), y.var()


def test_linear_network_with_unit_gain_keeps_the_variance_flat():
  # "He for a linear network": Var(W) = gain^2 / fan_in with gain 1
  n, depth, batch = 128, 16, 256
  ws = [normal(10 + i, n, n, scale=1 / np.sqrt(n)) for i in range(depth)]
  x = normal(2, batch, n)
  report = diagnostics.signal_propagation(linear_net, ws, x)
  assert report.paths == tuple(str(i) for i in range(depth)) and report.kinds == ("dot",) * depth
  assert report.fan_in == (n,) * depth
  # independent: a float64 numpy forward pass
  h, expect = np.asarray(x, np.float64), []
  for w in ws:
    h = h @ np.asarray(w, np.float64)
    expect.append(moments(h))
  np.testing.assert_allclose(report.mean, [m for m, _ in expect], atol=1e-5)
  np.testing.assert_allclose(report.var, [v for _, v in expect], rtol=1e-4)
  # nothing follows a linear layer: the "activation" is the output itself
  np.testing.assert_array_equal(report.post_var, report.var)
  assert report.input_var == pytest.approx(moments(x)[1], rel=1e-5)
  # flat: each layer multiplies the variance by (1/(B n)) tr(W^T S W) / (tr S / (B n)), S = X^T X,
  # of relative standard deviation sqrt(2 (1 + n/B)) / n (Marchenko-Pastur); a random walk
  # over the layers, k = 6
  se = np.sqrt(2 * (1 + n / batch)) / n * np.sqrt(np.arange(1, depth + 1))
  assert np.all(np.abs(np.log(report.var / report.input_var)) < 6 * se)


def test_relu_network_statistics_after_the_activation():
  n, depth = 64, 6
  ws = [normal(30 + i, n, n, scale=np.sqrt(2 / n)) for i in range(depth)]
  x = normal(3, 128, n)

  def relu_net(params, x):
    for w in params:
      x = jax.nn.relu(x @ w)
    return x

  report = diagnostics.signal_propagation(relu_net, ws, x)
  h, pre, post = np.asarray(x, np.float64), [], []
  for w in ws:
    z = h @ np.asarray(w, np.float64)
    h = np.maximum(z, 0)
    pre.append(moments(z))
    post.append(moments(h))
  np.testing.assert_allclose(report.var, [v for _, v in pre], rtol=1e-4)
  np.testing.assert_allclose(report.post_mean, [m for m, _ in post], rtol=1e-4)
  np.testing.assert_allclose(report.post_var, [v for _, v in post], rtol=1e-4)
  assert "post var" in str(report) and str(report).count("\n") == depth + 2


def test_linen_layers_in_execution_order():
  from _lsuv_models import OutOfOrder, fast_init, linen_layer_outputs

  model, x = OutOfOrder(), normal(4, 64, 16)
  variables = fast_init(model, x)
  report = diagnostics.signal_propagation(model, variables, x)
  # parameter (sorted) order is a_out, m_mid, z_in; the forward pass calls the reverse
  assert report.paths == ("z_in/kernel", "m_mid/kernel", "a_out/kernel")
  outs = linen_layer_outputs(model, variables, x)  # recorded by Flax's own interceptor
  np.testing.assert_allclose(report.mean, [moments(y)[0] for y in outs], atol=1e-5)
  np.testing.assert_allclose(report.var, [moments(y)[1] for y in outs], rtol=1e-5)
  np.testing.assert_allclose(
    report.post_var[:2],
    [moments(jax.nn.relu(outs[0]))[1], moments(jnp.tanh(outs[1]))[1]],
    rtol=1e-5,
  )
  assert report.post_var[2] == report.var[2]


def test_nnx_and_pure_function_models_match_their_own_records():
  from _lsuv_models import NnxConvNet, pure_apply, pure_init
  from flax import nnx

  model, x = NnxConvNet(rngs=nnx.Rngs(0)), normal(5, 8, 8, 8, 3)
  before = jax.tree_util.tree_map(np.asarray, nnx.state(model, nnx.Param))
  report = diagnostics.signal_propagation(model, x)
  taps = []
  model(x, taps=taps)
  assert report.kinds == ("conv", "conv", "conv", "dot") and len(taps) == 4
  assert report.paths[0] == "stem/kernel" and report.paths[-1] == "head/kernel"
  np.testing.assert_allclose(report.var, [moments(y)[1] for y in taps], rtol=1e-5)
  # nothing was modified
  after = nnx.state(model, nnx.Param)
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)

  params, xs = pure_init(), normal(6, 16, 16, 8)
  report = diagnostics.signal_propagation(pure_apply, params, xs)
  taps = []
  pure_apply(params, xs, taps)
  assert report.paths == ("conv/w", "proj/w", "mix/w", "out/w")
  np.testing.assert_allclose(report.var, [moments(y)[1] for y in taps], rtol=1e-5)
  np.testing.assert_allclose(report.post_var[0], moments(jnp.tanh(taps[0]))[1], rtol=1e-5)


def test_signal_propagation_errors():
  with pytest.raises(ValueError, match="found no linear layers"):
    diagnostics.signal_propagation(lambda p, x: x * p, jnp.ones(3), jnp.ones((2, 3)))
  with pytest.raises(TypeError, match=r"apply_fn\(params, batch\)"):
    diagnostics.signal_propagation(linear_net, jnp.ones((2, 3)))


# --- Jacobian spectrum -----------------------------------------------------------------------


def test_deep_linear_orthogonal_network_is_an_isometry():
  ws = [haar(i, 64) for i in range(24)]
  x = normal(1, 4, 64)
  exact = diagnostics.jacobian_spectrum(linear_net, ws, x, method="exact")
  assert exact.shape == (64, 64) and exact.singular_values.shape == (64,)
  # 24 float32 products of 64x64 matrices: rounding ~ 24 * sqrt(64) * eps = 2e-5 at worst
  np.testing.assert_allclose(exact.singular_values, 1.0, atol=2e-5)
  assert abs(exact.mean_squared - 1) < 2e-5 and abs(exact.condition - 1) < 4e-5
  lanczos = diagnostics.jacobian_spectrum(linear_net, ws, x, method="lanczos", num_iters=64)
  np.testing.assert_allclose(lanczos.singular_values, 1.0, atol=2e-5)
  assert abs(lanczos.mean_squared - 1) < 2e-5
  # 16 steps: A = I breaks down at every step (restarts), sum(alpha) = 16 of tr(A) = 64; the
  # projected Hutchinson term estimates the other 48 with standard error
  # sqrt(2 * 48 * (1 - 48/64) / 16) / 64 = 0.019 (16 Rademacher probes); k = 6 SE
  short = diagnostics.jacobian_spectrum(linear_net, ws, x, method="lanczos", num_iters=16)
  np.testing.assert_allclose(short.singular_values, 1.0, atol=2e-5)
  assert abs(short.mean_squared - 1) < 6 * 0.019


def test_exact_spectrum_matches_a_hand_built_jacobian():
  w1, w2, x = normal(1, 12, 20, scale=1 / 3), normal(2, 20, 7, scale=1 / 3), normal(3, 5, 12)
  f = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
  spec = diagnostics.jacobian_spectrum(f, (w1, w2), x, example=3, method="exact")
  a, b, xx = (np.asarray(v, np.float64) for v in (w1, w2, x[3]))
  jac = (b.T * (1 - np.tanh(xx @ a) ** 2)) @ a.T  # dy/dx = W2^T diag(tanh') W1^T, shape (7, 12)
  s = np.linalg.svd(jac, compute_uv=False)
  assert spec.shape == (7, 12)
  np.testing.assert_allclose(spec.singular_values, s, rtol=1e-5, atol=1e-7)
  assert spec.mean_squared == pytest.approx(np.mean(s**2), rel=1e-5)


def test_lanczos_estimates_converge_to_the_exact_spectrum(tanh_case):
  ws, x, exact = tanh_case
  d = exact.singular_values.size
  est = diagnostics.jacobian_spectrum(tanh_net, ws, x, method="lanczos", num_iters=32)
  assert est.method == "lanczos" and est.singular_values.size == 32
  # the top of the spectrum converges first
  assert est.max == pytest.approx(exact.max, rel=1e-5)
  # Ritz values interlace: inside [sigma_min, sigma_max], so the condition is a lower bound
  assert est.singular_values.min() >= exact.min - 1e-6
  assert est.condition <= exact.condition
  # tr(T) on the Krylov space (which holds the dominant directions) plus projected
  # Hutchinson: off by 0.1% here
  assert est.mean_squared == pytest.approx(exact.mean_squared, rel=1e-2)
  full = diagnostics.jacobian_spectrum(tanh_net, ws, x, method="lanczos", num_iters=d)
  # sigma^2 below 1e-5 ||A|| is numerical null space (a breakdown restarts there)
  np.testing.assert_allclose(
    np.sort(full.singular_values**2), np.sort(exact.singular_values**2), atol=1e-4 * exact.max**2
  )
  assert full.mean_squared == pytest.approx(exact.mean_squared, rel=1e-5)


def test_jacobian_of_wide_outputs_uses_the_output_side():
  w, x = normal(4, 6, 40, scale=0.5), normal(5, 3, 6)
  f = lambda p, x: jnp.tanh(x @ p)
  exact = diagnostics.jacobian_spectrum(f, w, x, method="exact")
  est = diagnostics.jacobian_spectrum(f, w, x, method="lanczos", num_iters=6)
  assert exact.shape == (40, 6) and exact.singular_values.size == 6
  np.testing.assert_allclose(est.singular_values, exact.singular_values, rtol=1e-4)


# --- gradient norms --------------------------------------------------------------------------


def test_gradient_norms_match_hand_derived_gradients():
  params = {"a": normal(6, 6, 5), "b": normal(7, 5, 3)}
  x = normal(8, 10, 6)
  report = diagnostics.gradient_norms(lambda p, x: (x @ p["a"]) @ p["b"], params, x)
  a, b, xx = (np.asarray(v, np.float64) for v in (params["a"], params["b"], x))
  y = xx @ a @ b
  dy = y / y.size  # d(0.5 * mean(y^2)) / dy
  grad_b = (xx @ a).T @ dy
  grad_a = xx.T @ dy @ b.T
  assert report.paths == ("a", "b")
  np.testing.assert_allclose(
    report.grad_norm, [np.linalg.norm(grad_a), np.linalg.norm(grad_b)], rtol=1e-5
  )
  np.testing.assert_allclose(report.param_norm, [np.linalg.norm(a), np.linalg.norm(b)], rtol=1e-6)
  assert report.loss == pytest.approx(0.5 * np.mean(y**2), rel=1e-5)
  np.testing.assert_allclose(report.ratio, report.grad_norm / report.param_norm)


def test_gradient_norms_custom_loss():
  w = jnp.eye(3)
  report = diagnostics.gradient_norms(
    lambda p, x: x @ p, w, jnp.ones((2, 3)), loss=lambda y: jnp.sum(y)
  )
  np.testing.assert_allclose(report.grad_norm, [np.sqrt(9 * 4)])  # each entry: sum over 2 rows


# --- plots -----------------------------------------------------------------------------------


def test_plots_draw_the_report_values(tanh_case):
  matplotlib = pytest.importorskip("matplotlib")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ws, x, exact = tanh_case
  grads = diagnostics.gradient_norms(tanh_net, ws, x)
  ax = diagnostics.plot_gradient_norms({"g": grads}, quantity="ratio")
  np.testing.assert_allclose(ax.lines[0].get_ydata(), grads.ratio)
  ax = diagnostics.plot_jacobian_spectrum({"exact": exact, "again": exact})
  assert ax.get_xscale() == "log" and len(ax.patches) == 2  # one step histogram each
  plt.close("all")


# --- errors ----------------------------------------------------------------------------------


def test_errors():
  w, x = jnp.eye(3), jnp.ones((2, 3))
  f = lambda p, x: x @ p
  with pytest.raises(
    ValueError, match=r"jaxinit\.diagnostics\.jacobian_spectrum: `method` must be one of"
  ):
    diagnostics.jacobian_spectrum(f, w, x, method="svd")
  with pytest.raises(ValueError, match="`example`=5 is out of range for a batch of 2"):
    diagnostics.jacobian_spectrum(f, w, x, example=5)
  with pytest.raises(TypeError, match=r"call them outside jax\.jit"):
    jax.jit(lambda w: diagnostics.gradient_norms(f, w, x).loss)(w)
  with pytest.raises(TypeError, match="`loss` must be a function"):
    diagnostics.gradient_norms(f, w, x, loss=3)
