"""jaxinit.mean_field against closed forms and known critical points.

Independent references: ReLU's E[relu(sqrt(q) z)^2] = q/2 and arc-cosine kernel;
erf's kernel E[erf(u1) erf(u2)] = (2/pi) arcsin(2 S12 / sqrt((1 + 2 S11)(1 + 2 S22)))
and E[erf'(u1) erf'(u2)] = (4/pi) / sqrt(det(I + 2 S)); scipy's adaptive quadrature
for tanh.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

from jaxinit import mean_field as mf

# --- closed forms for erf networks -------------------------------------------------------


def erf_length(q, sw, sb):
  return sw**2 * (2 / math.pi) * math.asin(2 * q / (1 + 2 * q)) + sb**2


def erf_q_star(sw, sb):
  return optimize.brentq(lambda q: erf_length(q, sw, sb) - q, 1e-12, 1e6, xtol=1e-15, rtol=1e-15)


def erf_chi(q, c, sw):
  return sw**2 * (4 / math.pi) / math.sqrt((1 + 2 * q) ** 2 - (2 * q * c) ** 2)


def erf_cmap(c, q, sw, sb):
  return (sw**2 * (2 / math.pi) * math.asin(2 * q * c / (1 + 2 * q)) + sb**2) / q


def relu_cmap(c):  # sigma_w^2 = 2, sigma_b = 0
  t = math.acos(c)
  return (math.sin(t) + (math.pi - t) * c) / math.pi


def tanh_expect(f, q):
  """E[f(sqrt(q) z)] by scipy's adaptive quadrature (independent of ours)."""
  s = math.sqrt(q)
  g = lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
  return sum(
    integrate.quad(g, a, b, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
    for a, b in [(-40, -1), (-1, 0), (0, 1), (1, 40)]
  )


# --- known points ------------------------------------------------------------------------


def test_tanh_is_critical_at_sigma_w_1_without_bias():
  assert abs(mf.critical_sigma_w("tanh", 0.0) - 1.0) < 1e-6
  assert abs(mf.chi1("tanh", 1.0, 0.0) - 1.0) < 1e-12
  # ordered below, chaotic above
  assert mf.chi1("tanh", 0.99) < 1 < mf.chi1("tanh", 1.01)
  line = mf.critical_line("tanh", 1e-10)  # q* -> 0 end of the critical line
  assert abs(line.sigma_w - 1.0) < 1e-6 and abs(line.sigma_b) < 1e-6


def test_relu_is_critical_at_sigma_w2_2_without_bias():
  assert abs(mf.critical_sigma_w("relu", 0.0) ** 2 - 2.0) < 1e-6
  line = mf.critical_line("relu", np.array([1e-3, 0.5, 1.0, 7.0, 1e3]))
  np.testing.assert_allclose(line.sigma_w**2, 2.0, rtol=1e-12)
  np.testing.assert_allclose(line.sigma_b, 0.0, atol=1e-6)
  # chi_1 = sigma_w^2 / 2 for every sigma_w, sigma_b (relu' is 0/1)
  np.testing.assert_allclose(
    mf.chi1("relu", np.array([0.5, 1.0, 2.0]), 0.3), np.array([0.125, 0.5, 2.0]), rtol=1e-13
  )


def test_relu_length_map_is_q_over_2():
  q = np.array([1e-6, 1e-3, 0.5, 1.0, 64.0, 1e4, 1e8])
  np.testing.assert_allclose(mf.length_map("relu", q, 1.0), q / 2, rtol=1e-13)
  # a fixed point: q* = sigma_b^2 / (1 - sigma_w^2 / 2)
  assert abs(mf.q_star("relu", 1.2, 0.3) - 0.09 / (1 - 0.72)) < 1e-12
  assert mf.q_star("relu", 1.5) == math.inf and mf.q_star("relu", 1.3) == 0.0
  assert mf.q_star("relu", math.sqrt(2), q0=3.5) == pytest.approx(3.5, rel=1e-13)


@pytest.mark.parametrize("sw,sb", [(0.8, 0.1), (1.5, 0.0), (2.0, 0.5), (4.0, 1.0)])
def test_erf_q_star_and_chi1_match_closed_forms(sw, sb):
  q = erf_q_star(sw, sb) if sb > 0 or sw * 2 / math.sqrt(math.pi) > 1 else 0.0
  assert mf.q_star("erf", sw, sb) == pytest.approx(q, rel=1e-11)
  assert mf.length_map("erf", q, sw, sb) == pytest.approx(erf_length(q, sw, sb), rel=1e-13)
  assert mf.chi1("erf", sw, sb) == pytest.approx(erf_chi(q, 1.0, sw), rel=1e-11)


def test_erf_critical_sigma_w_closed_form_without_bias():
  # sigma_b = 0: q* = 0 below the transition, chi_1 = sigma_w^2 erf'(0)^2 = 4 sigma_w^2 / pi
  assert mf.critical_sigma_w("erf") == pytest.approx(math.sqrt(math.pi) / 2, abs=1e-7)


@pytest.mark.parametrize("sb", [0.2, 0.7])
def test_erf_critical_sigma_w_closed_form(sb):
  sw = mf.critical_sigma_w("erf", sb)
  q = erf_q_star(sw, sb)
  assert erf_chi(q, 1.0, sw) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("q", [0.01, 1.0, 9.0, 400.0])
def test_tanh_expectations_match_adaptive_quadrature(q):
  dtanh2 = lambda x: (1 - math.tanh(x) ** 2) ** 2
  assert mf.length_map("tanh", q, 1.0) == pytest.approx(
    tanh_expect(lambda x: math.tanh(x) ** 2, q), rel=1e-11
  )
  line = mf.critical_line("tanh", q)
  assert line.sigma_w**2 == pytest.approx(1 / tanh_expect(dtanh2, q), rel=1e-11)


@pytest.mark.parametrize("act", ["tanh", "erf", "gelu", "elu"])
def test_critical_line_is_where_chi1_is_1(act):
  qs = np.geomspace(1e-3, 50, 7)
  line = mf.critical_line(act, qs)
  ok = np.isfinite(line.sigma_b)
  assert ok.sum() >= 4, act
  np.testing.assert_allclose(
    mf.chi1(act, line.sigma_w[ok], line.sigma_b[ok], q0=qs[ok]), 1.0, rtol=1e-9, err_msg=act
  )
  np.testing.assert_allclose(
    mf.q_star(act, line.sigma_w[ok], line.sigma_b[ok], q0=qs[ok]), qs[ok], rtol=1e-9, err_msg=act
  )


def test_correlation_maps_match_kernels():
  c = np.array([-0.9, -0.3, 0.0, 0.4, 0.95, 1.0])
  np.testing.assert_allclose(
    mf.correlation_map("relu", c, math.sqrt(2)), [relu_cmap(x) for x in c], atol=1e-13
  )
  sw, sb = 2.0, 0.3
  q = erf_q_star(sw, sb)
  np.testing.assert_allclose(
    mf.correlation_map("erf", c, sw, sb), [erf_cmap(x, q, sw, sb) for x in c], rtol=1e-11
  )


def test_depth_scales_match_closed_forms():
  # ordered phase: c* = 1 and xi_c = -1 / log chi_1
  d = mf.depth_scales("erf", 0.8, 0.1)
  q = erf_q_star(0.8, 0.1)
  chi = erf_chi(q, 1.0, 0.8)
  assert d.c_star == 1.0 and d.xi_c == pytest.approx(-1 / math.log(chi), rel=1e-9)
  # xi_q from the derivative of the closed-form length map
  u = 2 * q / (1 + 2 * q)
  slope = 0.8**2 * (2 / math.pi) * (2 / (1 + 2 * q) ** 2) / math.sqrt(1 - u * u)
  assert d.xi_q == pytest.approx(-1 / math.log(slope), rel=1e-8)
  # chaotic phase: c* is the fixed point of the closed-form correlation map
  sw, sb = 2.5, 0.2
  d = mf.depth_scales("erf", sw, sb)
  q = erf_q_star(sw, sb)
  c_star = optimize.brentq(lambda c: erf_cmap(c, q, sw, sb) - c, 0.0, 1 - 1e-9, xtol=1e-15)
  assert d.c_star == pytest.approx(c_star, abs=1e-9)
  assert d.xi_c == pytest.approx(-1 / math.log(erf_chi(q, c_star, sw)), rel=1e-7)
  # criticality: both depth scales of the correlations diverge
  assert mf.depth_scales("relu", math.sqrt(2)).xi_c == math.inf
  assert mf.depth_scales("tanh", 1.0).xi_c == math.inf


def test_callables_and_jax_functions():
  ref = mf.chi1("tanh", 2.0, 0.3)
  assert mf.chi1(jnp.tanh, 2.0, 0.3) == pytest.approx(ref, rel=1e-9)  # numerical derivative
  act = mf.activation(np.tanh, derivative=lambda x: 1 - np.tanh(x) ** 2)
  assert mf.chi1(act, 2.0, 0.3) == pytest.approx(ref, rel=1e-13)
  assert mf.activation("leaky_relu", 0.0).derivative(np.array([-1.0, 1.0])).tolist() == [0, 1]


def test_phase_diagram_plot_draws_the_critical_line():
  matplotlib = pytest.importorskip("matplotlib")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ax = mf.plot_phase_diagram("tanh", np.linspace(0.5, 3, 12), np.linspace(0, 1, 6))
  x, y = ax.lines[0].get_data()  # the parametric critical line: sigma_w^2, sigma_b^2
  assert len(x) > 10
  np.testing.assert_allclose(mf.chi1("tanh", np.sqrt(x), np.sqrt(y), q0=1.0), 1.0, rtol=1e-6)
  plt.close("all")


@pytest.mark.parametrize(
  "call,match",
  [
    (lambda: mf.chi1("tanhh", 1.0), "Did you mean 'tanh'"),
    (lambda: mf.chi1("tanh", -1.0), "`sigma_w` must be > 0"),
    (lambda: mf.q_star("relu", 1.0, [0.1, -0.2]), "`sigma_b` must be finite and >= 0"),
    (lambda: mf.activation("relu", 0.1), "`param` applies only to 'leaky_relu'"),
    (lambda: mf.correlation_map("relu", 1.5, 1.0), r"`c` must be finite and in \[-1.0, 1.0\]"),
    (lambda: mf.critical_line("tanh", 0.0), "`q_star` must be > 0"),
  ],
)
def test_errors(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()
