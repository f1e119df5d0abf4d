"""Fans for every layout, the 1-D rule, and gains (torch's table exactly; the
variance-preserving gain by quadrature, checked against scipy's adaptive
integration)."""

import math

import jax
import numpy as np
import pytest
from scipy import integrate, special

import jaxinit
from jaxinit import testing


@pytest.mark.parametrize(
  "shape,kwargs,expected",
  [
    ((64, 128), {}, (64, 128)),  # Flax Dense (in, out)
    ((3, 3, 16, 32), {}, (144, 288)),  # Flax Conv HWIO
    ((5, 16, 32), {}, (80, 160)),  # Flax Conv1D
    ((2, 3, 3, 16, 32), {}, (288, 576)),  # Flax Conv3D
    ((32, 16, 3, 3), {"in_axis": 1, "out_axis": 0}, (144, 288)),  # torch OIHW
    ((128, 64), {"in_axis": 1, "out_axis": 0}, (64, 128)),  # torch/equinox Linear (out, in)
    ((8, 64, 256), {"batch_axis": 0}, (64, 256)),  # stacked layers
    ((512, 8, 64), {"in_axis": 0, "out_axis": (1, 2)}, (512, 512)),  # DenseGeneral to heads
    ((8, 64, 512), {"in_axis": (0, 1), "out_axis": 2}, (512, 512)),  # attention out-projection
    ((128,), {}, (128, 128)),  # bias: the 1-D rule
    ((), {}, (1, 1)),  # scalar
    ((128,), {"in_axis": (), "out_axis": 0}, (1, 128)),  # explicit axes, general rule
  ],
)
def test_compute_fans(shape, kwargs, expected):
  fans = jaxinit.compute_fans(shape, **kwargs)
  assert fans == expected and all(isinstance(f, int) for f in fans)


@pytest.mark.parametrize(
  "shape,kw",
  [
    ((7, 9), {}),
    ((3, 3, 4, 5), {}),
    ((2, 3, 4, 5), {"batch_axis": 0}),
    ((4, 5, 6), {"in_axis": 0, "out_axis": (1, 2)}),
  ],
  ids=str,
)
def test_compute_fans_matches_jax_on_its_domain(shape, kw):
  from jax._src.nn.initializers import _compute_fans as jax_fans

  assert jaxinit.compute_fans(shape, **kw) == tuple(int(f) for f in jax_fans(shape, **kw))


def test_torch_layout_variance():
  """The same He init gives variance 2/fan_in in Flax HWIO and torch OIHW layouts."""
  key = jax.random.key(4)
  flax_w = jaxinit.he_normal()(key, (3, 3, 64, 1000))
  torch_w = jaxinit.he_normal(in_axis=1, out_axis=0)(key, (1000, 64, 3, 3))
  fan_in = 64 * 9
  testing.assert_moments(flax_w, mean=0.0, var=2 / fan_in, name="HWIO")
  testing.assert_moments(torch_w, mean=0.0, var=2 / fan_in, name="OIHW")
  # jax's default axes on the torch layout would use fan_in = 3 * 3 * 1000
  with pytest.raises(AssertionError, match="variance"):
    testing.assert_moments(jaxinit.he_normal()(key, (1000, 64, 3, 3)), var=2 / fan_in)


def test_bias_rule_in_an_initializer():
  b = jaxinit.lecun_uniform()(jax.random.key(0), (10**6,))
  testing.assert_moments(b, mean=0.0, var=1e-6)


TORCH_TABLE = {
  "linear": 1.0,
  "identity": 1.0,
  "conv1d": 1.0,
  "conv2d": 1.0,
  "conv3d": 1.0,
  "conv_transpose1d": 1.0,
  "conv_transpose2d": 1.0,
  "conv_transpose3d": 1.0,
  "sigmoid": 1.0,
  "tanh": 5.0 / 3.0,
  "relu": math.sqrt(2.0),
  "selu": 0.75,
  "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
}


@pytest.mark.parametrize("name", sorted(TORCH_TABLE))
def test_torch_gains_exact(name):
  assert jaxinit.calculate_gain(name) == TORCH_TABLE[name]


@pytest.mark.parametrize("slope", [0.0, 0.2, 1.0, math.sqrt(5)])
def test_leaky_relu_param(slope):
  assert jaxinit.calculate_gain("leaky_relu", slope) == math.sqrt(2.0 / (1 + slope * slope))


@pytest.mark.parametrize(
  "name,param",
  [
    *[(n, None) for n in ["linear", "conv2d", "sigmoid", "tanh", "relu", "selu", "leaky_relu"]],
    ("leaky_relu", 0.3),
  ],
  ids=str,
)
def test_against_torch_when_installed(name, param):
  torch = pytest.importorskip("torch")
  assert jaxinit.calculate_gain(name, param) == pytest.approx(
    torch.nn.init.calculate_gain(name, param), rel=1e-15
  )


def _quad_gain(phi):
  """1/sqrt(E[phi(z)^2]) by scipy's adaptive quadrature, split at 0 (independent of ours)."""
  f = lambda z: phi(np.float64(z)) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
  m2 = integrate.quad(f, -np.inf, 0, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
  m2 += integrate.quad(f, 0, np.inf, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
  return 1 / math.sqrt(m2)


QUADRATURE = {
  "gelu": lambda z: z * special.ndtr(z),
  "silu": lambda z: z * special.expit(z),
  "swish": lambda z: z * special.expit(z),
  "elu": lambda z: z if z > 0 else math.expm1(z),
  "softplus": lambda z: np.logaddexp(0, z),
  "mish": lambda z: z * math.tanh(np.logaddexp(0, z)),
  "gelu_tanh": lambda z: 0.5 * z * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
}


@pytest.mark.parametrize("name", sorted(QUADRATURE))
def test_variance_preserving_gains(name):
  assert jaxinit.calculate_gain(name) == pytest.approx(_quad_gain(QUADRATURE[name]), rel=1e-10)


def test_elu_alpha_and_callables():
  alpha = 0.5
  expected = _quad_gain(lambda z: z if z > 0 else alpha * math.expm1(z))
  assert jaxinit.calculate_gain("elu", alpha) == pytest.approx(expected, rel=1e-10)
  # ReLU as a callable: its kink at 0 is integrated exactly -> sqrt(2)
  assert jaxinit.calculate_gain(lambda z: np.maximum(z, 0)) == pytest.approx(
    math.sqrt(2), rel=1e-12
  )
  # tanh by the definition (not torch's empirical 5/3)
  assert jaxinit.calculate_gain(np.tanh) == pytest.approx(_quad_gain(math.tanh), rel=1e-10)
  # a jax function works (evaluated in float32: agreement to float32 precision)
  gj = jaxinit.calculate_gain(lambda z: jax.nn.gelu(z, approximate=False))
  assert gj == pytest.approx(jaxinit.calculate_gain("gelu"), rel=1e-6)


@pytest.mark.parametrize(
  "name,phi",
  [("gelu", lambda z: jax.nn.gelu(z, approximate=False)), ("silu", jax.nn.silu)],
  ids=["gelu", "silu"],
)
def test_gain_preserves_the_second_moment_through_a_layer(name, phi):
  """Meaning of the definition: with Var[w] = g^2/fan_in and x = phi(z), z ~ N(0,1),
  the next pre-activation has E[y^2] = 1 (checked by Monte Carlo on a wide layer)."""
  fan_in, n = 2048, 512
  g = jaxinit.calculate_gain(name)
  w = jaxinit.variance_scaling(g * g, "fan_in", "normal")(jax.random.key(1), (fan_in, n))
  z = jax.random.normal(jax.random.key(2), (512, fan_in))
  y = np.asarray(phi(z) @ w, np.float64)
  # E[y^2] = 1; the sample mean of y^2 has a standard error dominated by the
  # finite draw of w: check at 6 standard errors of the per-unit means
  per_unit = (y**2).mean(axis=0)
  se = per_unit.std() / math.sqrt(n)
  assert abs(per_unit.mean() - 1.0) < 6 * se, (name, per_unit.mean(), se)
