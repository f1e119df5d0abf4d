"""Every distribution's mean and variance on >= 10^6 draws at 6 standard errors,
plus a Kolmogorov–Smirnov test of its shape; exact complex variances; bfloat16
resolution; and proof that these checks catch a wrong constant.

Expected values come from the definitions (formulas and scipy), never from the
output. Keys are fixed, so the tests are deterministic; the tolerances are what
makes them meaningful (k = 6 standard errors: a correct initializer fails by
chance with probability ~2e-9 per check).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxinit
from jaxinit import testing
from jaxinit._src import sampling
from jaxinit._src import variance_scaling as vs_mod

N = 10**6
TRUNC2_STD = math.sqrt(stats.truncnorm.var(-2, 2))  # 0.8796...


def draw(init, shape, dtype=jnp.float32, seed=2024):
  return np.asarray(init(jax.random.key(seed), shape, dtype))


# (initializer, shape, expected mean, expected variance, scipy distribution, args)
def _real_cases():
  fan_in, fan_out = 1000, 1000  # shape (1000, 1000): 10^6 draws
  sh = (fan_in, fan_out)
  conv = (5, 5, 40, 1000)  # HWIO: fan_in = 1000, fan_out = 25000, 10^6 draws
  out = []
  out.append(("normal", jaxinit.normal(), sh, 0.0, 0.05**2, "norm", (0.0, 0.05)))
  out.append(("normal_shifted", jaxinit.normal(2.0, -1.5), sh, -1.5, 4.0, "norm", (-1.5, 2.0)))
  out.append(("uniform", jaxinit.uniform(), sh, 0.0, 0.1**2 / 12, "uniform", (-0.05, 0.1)))
  out.append(("uniform_ab", jaxinit.uniform(1.0, 4.0), sh, 2.5, 9 / 12, "uniform", (1.0, 3.0)))
  tn = stats.truncnorm(-2, 2, 0, 0.05)
  out.append(
    (
      "truncated_normal",
      jaxinit.truncated_normal(),
      sh,
      0.0,
      tn.var(),
      "truncnorm",
      (-2, 2, 0, 0.05),
    )
  )
  s = 0.02 / TRUNC2_STD
  out.append(
    (
      "truncated_exact",
      jaxinit.truncated_normal(0.02, exact_std=True),
      sh,
      0.0,
      0.02**2,
      "truncnorm",
      (-2, 2, 0, s),
    )
  )
  asym = stats.truncnorm(-1, 3, 0.5, 0.3)
  out.append(
    (
      "truncated_asym",
      jaxinit.truncated_normal(0.3, 0.5, -1.0, 3.0),
      sh,
      asym.mean(),
      asym.var(),
      "truncnorm",
      (-1, 3, 0.5, 0.3),
    )
  )
  s = 1.0 / math.sqrt(stats.truncnorm.var(0.5, 2.5))
  tail = stats.truncnorm(0.5, 2.5, 0, s)
  out.append(
    (
      "truncated_tail_exact",
      jaxinit.truncated_normal(1.0, 0.0, 0.5, 2.5, True),
      sh,
      tail.mean(),
      1.0,
      "truncnorm",
      (0.5, 2.5, 0, s),
    )
  )
  for mode, n in [
    ("fan_in", 1000),
    ("fan_out", 25000),
    ("fan_avg", 13000),
    ("fan_geo_avg", math.sqrt(1000 * 25000)),
  ]:
    for dist in ["truncated_normal", "normal", "uniform"]:
      var = 2.0 / n
      std = math.sqrt(var)
      ks = {
        "truncated_normal": ("truncnorm", (-2, 2, 0, std / TRUNC2_STD)),
        "normal": ("norm", (0, std)),
        "uniform": ("uniform", (-std * math.sqrt(3), 2 * std * math.sqrt(3))),
      }[dist]
      out.append(
        (f"vs_{mode}_{dist}", jaxinit.variance_scaling(2.0, mode, dist), conv, 0.0, var, *ks)
      )
  g = 1.7
  out.append(
    (
      "glorot_normal",
      jaxinit.glorot_normal(gain=g),
      sh,
      0.0,
      g * g * 2 / 2000,
      "truncnorm",
      (-2, 2, 0, g * math.sqrt(1 / 1000) / TRUNC2_STD),
    )
  )
  a = math.sqrt(6 / 2000)
  out.append(
    ("glorot_uniform", jaxinit.glorot_uniform(), sh, 0.0, a * a / 3, "uniform", (-a, 2 * a))
  )
  slope = 0.2
  var = 2 / (1 + slope**2) / 1000
  out.append(
    (
      "he_normal_leaky",
      jaxinit.he_normal(negative_slope=slope),
      sh,
      0.0,
      var,
      "truncnorm",
      (-2, 2, 0, math.sqrt(var) / TRUNC2_STD),
    )
  )
  var = (5 / 3) ** 2 / 25000
  out.append(
    (
      "he_normal_tanh_fan_out_untruncated",
      jaxinit.he_normal(mode="fan_out", nonlinearity="tanh", truncated=False),
      conv,
      0.0,
      var,
      "norm",
      (0, math.sqrt(var)),
    )
  )
  a = math.sqrt(2) * math.sqrt(3 / 1000)
  out.append(("he_uniform", jaxinit.he_uniform(), sh, 0.0, a * a / 3, "uniform", (-a, 2 * a)))
  out.append(
    (
      "lecun_normal",
      jaxinit.lecun_normal(),
      conv,
      0.0,
      1 / 1000,
      "truncnorm",
      (-2, 2, 0, math.sqrt(1 / 1000) / TRUNC2_STD),
    )
  )
  a = math.sqrt(3 / 1000)
  out.append(
    ("lecun_uniform", jaxinit.lecun_uniform(), conv, 0.0, 1 / 1000, "uniform", (-a, 2 * a))
  )
  return out


REAL = _real_cases()


@pytest.mark.parametrize("label,init,shape,mean,var,dist,args", REAL, ids=[c[0] for c in REAL])
def test_real_moments_and_shape(label, init, shape, mean, var, dist, args):
  w = draw(init, shape)
  assert w.size >= N
  testing.assert_moments(w, mean=mean, var=var, name=label)
  # KS checks the shape (normal vs truncated vs uniform, a missing truncation
  # correction); small scale errors are the moment check's job. 2*10^5 draws suffice.
  testing.assert_ks(w.ravel()[: 2 * 10**5], dist, args, name=label)


COMPLEX = [
  ("normal", jaxinit.normal(0.3), 0.09),
  ("truncated_exact", jaxinit.truncated_normal(0.3, exact_std=True), 0.09),
  (
    "truncated_plain",
    jaxinit.truncated_normal(0.3, lower=-1.5, upper=1.5),
    0.09 * sampling.complex_truncated_std(1.5) ** 2,
  ),
  ("vs_truncated", jaxinit.variance_scaling(1.0, "fan_in", "truncated_normal"), 1 / 1000),
  ("vs_normal", jaxinit.variance_scaling(3.0, "fan_avg", "normal"), 3 / 1000),
  ("vs_uniform", jaxinit.variance_scaling(0.5, "fan_out", "uniform"), 0.5 / 1000),
  ("he_normal", jaxinit.he_normal(), 2 / 1000),
]


@pytest.mark.parametrize("label,init,var", COMPLEX, ids=[c[0] for c in COMPLEX])
def test_complex_variance_is_exact(label, init, var):
  """E|w|^2 is exactly the target (jax's complex truncated normal is 1.87% high)."""
  w = draw(init, (1000, 1000), jnp.complex64)
  assert w.dtype == np.complex64
  testing.assert_moments(w, mean=0.0, var=var, name=label)
  # real and imaginary parts: equal variance, uncorrelated, circular
  testing.assert_moments(w.real, var=var / 2, name=f"{label}.real")
  testing.assert_moments(w.imag, var=var / 2, name=f"{label}.imag")
  corr = np.corrcoef(w.real.ravel(), w.imag.ravel())[0, 1]
  assert abs(corr) < 6 / math.sqrt(w.size)


def test_complex_truncation_bounds_the_modulus():
  std = 0.3 / sampling.complex_truncated_std(2.0)
  w = draw(jaxinit.truncated_normal(0.3, exact_std=True), (1000, 1000), jnp.complex64)
  assert np.abs(w).max() <= 2.0 * std * (1 + 1e-6)
  # |z|^2 of the standard variable is Exp(1) truncated at 4: KS on the modulus squared
  r2 = (np.abs(w.astype(np.complex128)) / std) ** 2
  cdf = lambda t: np.clip(-np.expm1(-t) / -math.expm1(-4.0), 0, 1)
  testing.assert_ks(r2.ravel()[: 2 * 10**5], cdf, name="complex modulus")


def test_complex_uniform_is_uniform_on_a_disk():
  var = 1 / 1000
  w = draw(jaxinit.variance_scaling(1.0, "fan_in", "uniform"), (1000, 1000), jnp.complex64)
  radius = math.sqrt(2 * var)
  assert np.abs(w).max() <= radius * (1 + 1e-6)
  testing.assert_ks(
    (np.abs(w.astype(np.complex128)) / radius).ravel()[: 2 * 10**5],
    lambda r: np.clip(r, 0, 1) ** 2,
    name="disk radius",
  )


def test_variance_scaling_constants_are_the_exact_ones():
  assert vs_mod._TRUNC2_STD == pytest.approx(0.87962566103423978, rel=1e-15)
  assert vs_mod._TRUNC2_STD == pytest.approx(TRUNC2_STD, rel=1e-14)
  # E|z|^2 of a standard complex normal cut at |z| <= 2, by numerical integration of
  # the Exp(1) density of |z|^2 on [0, 4]
  num = stats.expon.expect(lambda t: t, lb=0, ub=4, conditional=True)
  assert vs_mod._COMPLEX_TRUNC2_STD == pytest.approx(math.sqrt(num), rel=1e-12)
  assert vs_mod._COMPLEX_TRUNC2_STD == pytest.approx(0.9619618, abs=1e-7)


def test_bfloat16_keeps_float32_resolution():
  """4M bfloat16 normal draws hold thousands of values (sampling in bf16 gives 128)."""
  init = jaxinit.normal(1.0)
  w = init(jax.random.key(5), (2048, 2048), jnp.bfloat16)
  ours = np.unique(np.asarray(w.astype(jnp.float32))).size
  native = np.unique(
    np.asarray(jax.random.normal(jax.random.key(5), (2048, 2048), jnp.bfloat16).astype(jnp.float32))
  ).size
  assert ours > 3000, ours
  assert ours > 10 * native, (ours, native)


@pytest.mark.parametrize(
  "init",
  [
    jaxinit.he_normal(),
    jaxinit.glorot_uniform(gain=1.3),
    jaxinit.truncated_normal(0.02, 0.1, exact_std=True),
    jaxinit.normal(0.5, 0.25),
  ],
  ids=repr,
)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_is_float32_draw_rounded_once(init, dtype):
  """A 16-bit draw is the float32 draw (scaled in float32) cast once: the scale
  constant is not rounded to 16 bits first (jax's bf16 std is 0.035889 for 0.035950).
  A truncated normal is then clipped to its bounds rounded inwards in 16 bits, so the
  cast cannot step outside them."""
  key = jax.random.key(9)
  w16 = init(key, (64, 777), dtype)
  want = init(key, (64, 777), jnp.float32).astype(dtype)
  if init.name == "truncated_normal":
    s = init.scale()
    lo = sampling.inward(init.mean + s * init.lower, np.dtype(dtype), up=True)
    hi = sampling.inward(init.mean + s * init.upper, np.dtype(dtype), up=False)
    clipped = (want < lo) | (want > hi)
    assert 0 < int(clipped.sum()) < 100  # bounds crossed by the cast alone, now clipped
    want = jnp.clip(want, lo, hi)
  np.testing.assert_array_equal(np.asarray(w16), np.asarray(want))


VS_TRUNC_ARGS = (-2, 2, 0, math.sqrt(1 / 1000) / TRUNC2_STD)


def test_checks_pass_with_the_exact_constants():
  """The unbroken draw that the broken ones below are told apart from."""
  init = jaxinit.variance_scaling(1.0, "fan_in", "truncated_normal")
  good = draw(init, (1000, 1000))
  testing.assert_moments(good, var=1 / 1000)
  testing.assert_ks(good.ravel()[: 2 * 10**5], "truncnorm", VS_TRUNC_ARGS)


def _moments(w):
  testing.assert_moments(w, var=1 / 1000)


def _ks(w):
  testing.assert_ks(w.ravel()[: 2 * 10**5], "truncnorm", VS_TRUNC_ARGS)


# (constant of variance_scaling.py, broken value, scale nudge, dtype, check, message).
# Draws are compiled once per configuration, so each broken draw uses a configuration
# (scale nudged by a few 1e-12, used nowhere else) that has not been compiled yet and
# therefore sees the patched constant.
BROKEN_CONSTANTS = [
  pytest.param(  # 1% off in the truncation correction (2% in the variance)
    "_TRUNC2_STD",
    TRUNC2_STD * 1.01,
    1e-12,
    jnp.float32,
    _moments,
    r"variance .* z = -\d+\.\d+ standard errors",
    id="truncation-correction-1%-off",
  ),
  pytest.param(  # the correction forgotten altogether (12% in the std): KS sees it too
    "_TRUNC2_STD", 1.0, 3e-12, jnp.float32, _ks, "Kolmogorov", id="truncation-correction-forgotten"
  ),
  pytest.param(  # jax's complex truncation constant (0.95311) instead of the exact 0.96196
    "_COMPLEX_TRUNC2_STD",
    0.95311164380491208,
    4e-12,
    jnp.complex64,
    _moments,
    "variance",
    id="jax-complex-truncation-constant",
  ),
]


@pytest.mark.parametrize("constant,value,nudge,dtype,check,match", BROKEN_CONSTANTS)
def test_checks_catch_a_wrong_constant(monkeypatch, constant, value, nudge, dtype, check, match):
  """Break each constant by a little: the 6-SE moment check or the KS check fails."""
  monkeypatch.setattr(vs_mod, constant, value)
  init = jaxinit.variance_scaling(1.0 + nudge, "fan_in", "truncated_normal")
  bad = draw(init, (1000, 1000), dtype)
  with pytest.raises(AssertionError, match=match):
    check(bad)


def test_ks_distinguishes_distributions_with_equal_variance():
  """The shape check matters: a normal with the right variance is not a uniform."""
  var = 1 / 1000
  w = draw(jaxinit.variance_scaling(1.0, "fan_in", "normal"), (1000, 1000))
  testing.assert_moments(w, var=var)
  a = math.sqrt(3 * var)
  with pytest.raises(AssertionError, match="Kolmogorov"):
    testing.assert_ks(w.ravel()[: 2 * 10**5], "uniform", (-a, 2 * a))
  with pytest.raises(AssertionError, match="Kolmogorov"):
    testing.assert_ks(w.ravel()[: 2 * 10**5], "truncnorm", (-2, 2, 0, math.sqrt(var) / TRUNC2_STD))


def test_truncated_normal_respects_bounds_and_resolves_both_tails():
  w = draw(jaxinit.truncated_normal(1.0, 0.0, -4.5, 4.5), (1000, 1000))
  assert w.min() >= -4.5 and w.max() <= 4.5
  # the mass beyond 3 sigma is symmetric (the inversion works from the nearer tail)
  p = stats.norm.sf(3) / (1 - 2 * stats.norm.sf(4.5))
  lo, hi = (w < -3).mean(), (w > 3).mean()
  se = math.sqrt(p * (1 - p) / w.size)
  assert abs(lo - p) < 6 * se and abs(hi - p) < 6 * se
