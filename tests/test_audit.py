"""The classes of defect the outside audit found (issue 13), one test per class:
silent wrong numbers, inputs that crashed instead of failing clearly, values a
dtype cannot hold. Each case is a small hostile input; each must either give
the exact right numbers or fail at once with a jaxinit error naming the
function and the argument."""

import decimal
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxinit
import jaxinit.testing
from jaxinit._src import sampling

KEY = jax.random.key(3)

# (factory call, exception, regex) -- failing when the factory is called
FACTORY = [
  (lambda: jaxinit.glorot_normal(gain=1e200), ValueError, r"glorot_normal: `gain`=1e\+200 gives"),
  (
    lambda: jaxinit.glorot_uniform(gain=1e-200),
    ValueError,
    r"glorot_uniform: `gain`=1e-200 .*square",
  ),
  (
    lambda: jaxinit.he_normal(negative_slope=1e200),
    ValueError,
    r"he_normal: `negative_slope`=1e\+200 gives the gain 1\.414\d*e-200, whose square 0\.0",
  ),
  (lambda: jaxinit.he_uniform(negative_slope=-1e200), ValueError, r"he_uniform: `negative_slope`"),
  (
    lambda: jaxinit.normal(stddev=10**400),
    ValueError,
    r"normal: `stddev` must fit a float64, got an int of 1329 bits",
  ),
  (lambda: jaxinit.uniform(maxval=2**2000), ValueError, r"uniform: `maxval` must fit a float64"),
  (lambda: jaxinit.constant(10**400), ValueError, r"constant: `value` must fit a float64"),
  (
    lambda: jaxinit.orthogonal(scale=decimal.Decimal("inf")),
    ValueError,
    r"orthogonal: `scale` must be finite",
  ),
]


@pytest.mark.parametrize("make,exc,match", FACTORY, ids=lambda x: x if isinstance(x, str) else "")
def test_factories_refuse_what_the_call_would_fail_on(make, exc, match):
  with pytest.raises(exc, match=rf"^jaxinit\.{match}"):
    make()


# (initializer, shape, dtype, regex): the dtype cannot hold what would be drawn
CALL = [
  (
    jaxinit.normal(1e300),
    (3,),
    jnp.float32,
    r"normal: with `stddev`=1e\+300 .* beyond float32's largest",
  ),
  (
    jaxinit.normal(1e4, 4e4),
    (3,),
    jnp.float16,
    r"normal: with `stddev`=10000\.0 .*float16's largest finite value 6\.55e\+04",
  ),
  (jaxinit.uniform(-1e39, 1.0), (3,), jnp.bfloat16, r"uniform: with `minval`=-1e\+39"),
  (jaxinit.truncated_normal(1e38, 3e38), (3,), jnp.float32, r"truncated_normal: with `stddev`"),
  (
    jaxinit.variance_scaling(1e300),
    (3, 4),
    jnp.float32,
    r"variance_scaling: with the standard deviation",
  ),
  (
    jaxinit.glorot_normal(gain=1e20),
    (3, 4),
    jnp.float16,
    r"glorot_normal: with the standard deviation",
  ),
  (jaxinit.constant(1e6), (2,), jnp.float16, r"constant: with `value`=1000000\.0"),
  (jaxinit.constant([1.0, 7e4]), (2,), jnp.float16, r"constant: with `value`="),
  (jaxinit.orthogonal(1e39), (4, 4), jnp.float32, r"orthogonal: with `scale`=1e\+39"),
  (jaxinit.identity(1e5), (3, 3), jnp.float16, r"identity: with `scale`=100000\.0"),
  (jaxinit.dirac(scale=-1e5), (3, 3, 2, 2), jnp.float16, r"dirac: with `scale`=-100000\.0"),
  (jaxinit.normalized(1e39), (4, 4), jnp.float32, r"normalized: with `scale`"),
  (jaxinit.delta_orthogonal(1e5), (3, 4, 4), jnp.float16, r"delta_orthogonal: with `scale`"),
  (
    jaxinit.sparse(values=jaxinit.normal(1e39)),
    (40, 4),
    jnp.float32,
    r"sparse: with `stddev`=1e\+39",
  ),
  # underflow: every draw would round to zero (a silent all-zeros result before)
  (jaxinit.normal(), (3,), ml_dtypes.float4_e2m1fn, r"normal: .*below float4_e2m1fn's smallest"),
  (jaxinit.normal(1e-320), (3,), jnp.float32, r"normal: with `stddev`=1e-320 .*below float32's"),
  (jaxinit.uniform(0.0, 1e-320), (3,), jnp.float32, r"uniform: .*below float32's smallest"),
  (jaxinit.truncated_normal(1e-46), (3,), jnp.float32, r"truncated_normal: .*below float32's"),
  (jaxinit.constant(1e-320), (3,), jnp.float32, r"constant: .*would round to zeros"),
  (jaxinit.constant([1.0, 1e-9]), (2,), jnp.float16, r"constant: .*below float16's smallest"),
  (jaxinit.identity(1e-320), (3, 3), jnp.float32, r"identity: with `scale`=1e-320"),
  (jaxinit.dirac(scale=1e-50), (3, 3, 2, 2), jnp.float32, r"dirac: .*below float32's"),
  (jaxinit.orthogonal(1e-320), (4, 4), jnp.float32, r"orthogonal: .*would round to zeros"),
  (
    jaxinit.he_normal(negative_slope=2**62),
    (3, 4),
    jnp.float16,
    r"he_normal: with the standard deviation .* below float16's smallest",
  ),
]


@pytest.mark.parametrize("init,shape,dtype,match", CALL, ids=lambda x: getattr(x, "name", ""))
def test_draws_a_dtype_cannot_hold_are_refused(init, shape, dtype, match):
  with pytest.raises(ValueError, match=rf"^jaxinit\.{match}"):
    init(KEY, shape, dtype)


@pytest.mark.parametrize("name", ["normal", "uniform", "he_normal", "orthogonal", "zeros"])
def test_a_dtype_without_zero_or_negatives_is_refused(name):
  e8m0 = ml_dtypes.float8_e8m0fnu  # powers of two only: no zero, no sign
  with pytest.raises(
    TypeError, match=rf"^jaxinit\.{name}: `dtype` float8_e8m0fnu cannot represent"
  ):
    jaxinit.get(name)(KEY, (4, 4), e8m0)
  ones = jaxinit.ones()(KEY, (2,), e8m0)  # ones it can hold
  assert (np.asarray(ones, np.float32) == 1).all()


def test_uniform_whose_width_overflows_the_compute_dtype_is_refused():
  with jax.enable_x64(True):
    with pytest.raises(
      ValueError, match=r"^jaxinit\.uniform: .*the width maxval - minval overflows float64"
    ):
      jaxinit.uniform(-1e308, 1e308)(KEY, (3,), jnp.float64)
    w = jaxinit.uniform(-1e307, 1e307)(KEY, (10_000,), jnp.float64)
    assert np.isfinite(w).all() and w.min() < -1e306 and w.max() > 1e306


@pytest.mark.parametrize(
  "call,exc,match",
  [
    (
      lambda: jaxinit.normal()(KEY, (2**62,)),
      ValueError,
      r"normal: `shape` \(4611686018427387904,\) holds 4\.61e\+18 elements",
    ),
    (
      lambda: jaxinit.he_normal()(KEY, (2**30, 2**30)),
      ValueError,
      r"he_normal: `shape` .* more than any device",
    ),
    (
      lambda: jaxinit.normal()(np.zeros((3, 2), np.uint32), (2,)),
      ValueError,
      r"normal: `key` must be a single PRNG key, got a batch of legacy keys of shape \(3, 2\)",
    ),
    (
      lambda: jaxinit.normal()(KEY, (3,), np.longdouble),
      TypeError,
      r"normal: `dtype` float128 \(numpy's longdouble\) is not a jax dtype",
    ),
    (
      lambda: jaxinit.normal()(KEY, (3,), "f4,f4"),
      TypeError,
      r"normal: `dtype` must be a floating-point",
    ),
    (
      lambda: jaxinit.normal()(KEY, (3,), "not-a-dtype"),
      TypeError,
      r"normal: `dtype` must be a floating-point dtype, got 'not-a-dtype'",
    ),
    (
      lambda: jaxinit.normal()(KEY, (10**5000,)),
      ValueError,
      r"normal: `shape` \(an int of 16610 bits,\) holds about 2\*\*16609 elements",
    ),
    (
      lambda: jaxinit.normal()(KEY, (3,), ml_dtypes.float6_e2m3fn),  # aborted the process
      TypeError,
      r"normal: `dtype` float6_e2m3fn is not one XLA computes with",
    ),
    (
      lambda: jaxinit.ones()(KEY, (3,), ml_dtypes.float6_e3m2fn),
      TypeError,
      r"ones: `dtype` float6_e3m2fn is not one XLA computes with",
    ),
    (
      lambda: jaxinit.normal(dtype=np.float32(0.5)),  # silently read as float32
      TypeError,
      r"normal: `dtype` must be a dtype .*got the value np\.float32\(0\.5\)",
    ),
    (
      lambda: jaxinit.he_normal()(KEY, (3, 3), jnp.zeros((), jnp.bfloat16)),
      TypeError,
      r"he_normal: `dtype` must be a dtype .*pass `x\.dtype`",
    ),
    (
      lambda: jaxinit.reinit(
        {"w": jax.ShapeDtypeStruct((2**40, 2**20), jnp.float32)}, {"w": jaxinit.normal()}, KEY
      ),
      ValueError,
      r"reinit: .*more than any device",
    ),
  ],
)
def test_inputs_that_crashed_now_fail_clearly(call, exc, match):
  with pytest.raises(exc, match=rf"^jaxinit\.{match}"):
    call()


def test_non_native_byte_order_is_the_same_dtype():
  np.testing.assert_array_equal(
    jaxinit.normal()(KEY, (5,), ">f4"), jaxinit.normal()(KEY, (5,), jnp.float32)
  )


def test_constant_values_equal_means_hash_equal_and_draws_equal():
  assert jaxinit.constant(-0.0) == jaxinit.constant(0.0)
  assert hash(jaxinit.constant(-0.0)) == hash(jaxinit.constant(0.0))
  a, b = jaxinit.constant([-0.0, 1.0]), jaxinit.constant([0.0, 1.0])
  assert a == b and hash(a) == hash(b)
  # equal objects share one compilation, so they must draw the same bits
  x = np.asarray(a(KEY, (2,)))
  y = np.asarray(b(KEY, (2,)))
  assert x.tobytes() == y.tobytes()
  assert hash(jaxinit.constant(complex(-0.0, 1))) == hash(jaxinit.constant(complex(0.0, 1)))


def test_constant_decimal_and_fraction_are_real():
  import fractions

  d = jaxinit.constant(decimal.Decimal("1.5"))
  assert d == jaxinit.constant(1.5)
  np.testing.assert_array_equal(d(KEY, (2,)), [1.5, 1.5])
  assert jaxinit.constant(fractions.Fraction(1, 4)) == jaxinit.constant(0.25)
  assert jaxinit.normal(stddev=decimal.Decimal("0.5")) == jaxinit.normal(0.5)


# ---------------------------------------------------------------------------
# truncated normal: moments stable on any interval, bounds never crossed
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  "lower,width", [(0.0, 1e-5), (2.5, 1e-5), (-1e-9, 2e-9), (3.0, 1e-3), (-9.0, 0.8)]
)
def test_truncated_moments_are_stable_on_narrow_intervals(lower, width):
  """Against the exact density's series: on [c, c + w] the density is proportional to
  exp(-(c u + u^2 / 2)), whose variance is w^2/12 (1 - w^2 (c^2 - 1)/15 / 12 ...) for
  small w; checked here against direct high-order integration in float128-free numpy."""
  upper = lower + width
  mean, std = sampling.truncated_moments(lower, upper)
  # reference: the same integral by brute force, 200k-point midpoint rule on a shifted grid
  c = lower if abs(lower) <= abs(upper) else upper
  u = (np.arange(200_000) + 0.5) / 200_000 * width
  t = lower + u
  g = np.exp(-((t - c) * (t + c)) / 2.0)
  m_ref = (g * u).sum() / g.sum()
  v_ref = (g * (u - m_ref) ** 2).sum() / g.sum()
  assert abs(mean - (lower + m_ref)) <= 1e-9 * width + 1e-15 * abs(lower)
  assert std == pytest.approx(math.sqrt(v_ref), rel=1e-8)
  if width * max(1.0, abs(c)) < 0.01:  # nearly flat: nearly uniform
    assert std == pytest.approx(width / math.sqrt(12), rel=0.02)


@pytest.mark.parametrize("lower,upper", [(0.3, 1.25), (-0.5, 0.49), (2.0, 2.9)])
def test_truncated_moments_quadrature_meets_the_closed_form(lower, upper):
  """Below width 1 the quadrature is used; the closed form is still accurate at 0.5 < w < 1."""
  z = sampling.truncated_mass(lower, upper)
  pa, pb = sampling.norm_pdf(lower), sampling.norm_pdf(upper)
  mean = (pa - pb) / z
  var = 1 + (lower * pa - upper * pb) / z - mean**2
  m, s = sampling.truncated_moments(lower, upper)
  assert m == pytest.approx(mean, rel=1e-12, abs=1e-14)
  assert s == pytest.approx(math.sqrt(var), rel=1e-11)


def test_exact_std_on_a_narrow_interval_under_x64():
  with jax.enable_x64(True):
    init = jaxinit.truncated_normal(1.0, 0.0, 2.5, 2.5 + 1e-5, exact_std=True)
    w = np.asarray(init(KEY, (1_000_000,), jnp.float64))
  se = math.sqrt(0.8 / w.size) / 2  # std of a near-uniform: kurtosis -1.2
  assert abs(w.std() - 1.0) < 6 * se, (w.std(), se)


def test_an_interval_too_narrow_for_float32_is_refused():
  init = jaxinit.truncated_normal(1.0, 0.0, 2.5, 2.5 + 1e-5, exact_std=True)
  with pytest.raises(
    ValueError,
    match=r"^jaxinit\.truncated_normal: the interval \[2\.5, 2\.50001\] is too narrow to sample in float32",
  ):
    init(KEY, (4,))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, ml_dtypes.float8_e4m3fn])
@pytest.mark.parametrize("lower,upper", [(-0.3, 0.30001), (0.1, 2.50001)])
def test_truncated_draws_never_leave_their_bounds(dtype, lower, upper):
  init = jaxinit.truncated_normal(0.7, 0.013, lower, upper)
  w = np.asarray(init(KEY, (200_000,), dtype), np.float64)
  assert w.min() >= 0.013 + 0.7 * lower and w.max() <= 0.013 + 0.7 * upper


# ---------------------------------------------------------------------------
# reinit: everything checked before anything is drawn; patterns bounded
# ---------------------------------------------------------------------------


def test_reinit_checks_every_foreign_callable_before_drawing_any_leaf():
  drawn = []

  def flaky(key, shape, dtype):
    if not isinstance(key, jax.core.Tracer):
      drawn.append(shape)  # a real draw, not the check's trace
    if shape == (5,):
      raise ValueError("boom")
    return jax.random.normal(key, shape, dtype)

  tree = {"a": jnp.zeros((3,)), "b": jnp.zeros((5,))}
  with pytest.raises(
    ValueError, match=r"^jaxinit\.reinit: the rule '\.\*' \(flaky\) matched 'b' .*ValueError: boom"
  ):
    jaxinit.reinit(tree, {".*": flaky}, KEY)
  assert drawn == []
  with pytest.raises(
    TypeError,
    match=r"^jaxinit\.reinit: .* returned an array of shape \(2,\) float32, not an array of shape \(3,\)",
  ):
    jaxinit.reinit(tree, {".*": lambda k, s, d: jnp.zeros((2,))}, KEY)
  with pytest.raises(TypeError, match=r"returned tuple, not an array"):
    jaxinit.reinit(tree, {".*": lambda k, s, d: (jnp.zeros(s), 1)}, KEY)


@pytest.mark.parametrize(
  "pattern,match",
  [
    ("a{99999999999}", r"is not a valid regular expression: the repetition number is too large"),
    ("(" * 3000 + ")" * 3000, r"has 6000 characters, more than 4096"),
    ("[", r"is not a valid regular expression"),
  ],
)
def test_reinit_patterns_that_python_cannot_build_fail_clearly(pattern, match):
  with pytest.raises(ValueError, match=rf"^jaxinit\.reinit: the rule pattern .*{match}"):
    jaxinit.reinit({"a": jnp.zeros(3)}, {pattern: jaxinit.zeros()}, KEY)


def test_leaf_keys_exist_for_every_path_even_undecodable_ones():
  tree = {"caf\udce9": jnp.zeros(3), "ok": jnp.zeros(3)}  # a key decoded with surrogateescape
  new = jaxinit.reinit(tree, {".*": jaxinit.normal()}, KEY)
  assert not np.array_equal(new["caf\udce9"], new["ok"])


@pytest.mark.parametrize(
  "tree",
  [
    {"a/b": jnp.zeros(3), "a": {"b": jnp.zeros(3)}},
    {"mlp/~/linear_0": {"w": jnp.zeros(3)}, "mlp": {"~": {"linear_0": {"w": jnp.zeros(3)}}}},
    {"layers": {"0": jnp.zeros(3)}, "layers/0": jnp.zeros(3)},
  ],
)
def test_two_leaves_with_one_path_are_refused(tree):
  with pytest.raises(
    ValueError, match=r"^jaxinit\.reinit: two leaves of the tree have the same path"
  ):
    jaxinit.reinit(tree, {".*": jaxinit.normal()}, KEY)
  with pytest.raises(ValueError, match=r"^jaxinit\.leaf_paths: two leaves"):
    jaxinit.leaf_paths(tree)


def test_haiku_style_keys_with_the_separator_still_work():
  params = {"mlp/~/linear_0": {"w": jnp.zeros((4, 8)), "b": jnp.zeros(8)}}
  new = jaxinit.reinit(params, {".*linear_0/w": jaxinit.he_normal()}, KEY)
  assert jaxinit.leaf_paths(params) == ["mlp/~/linear_0/b", "mlp/~/linear_0/w"]
  np.testing.assert_array_equal(
    new["mlp/~/linear_0"]["w"],
    jaxinit.he_normal()(jaxinit.leaf_key(KEY, "mlp/~/linear_0/w"), (4, 8)),
  )


# ---------------------------------------------------------------------------
# Found by fuzzing every entry point (after the audit): configuration arguments of
# presets, depth rules, µP and mean-field theory. One hostile input per line.
# ---------------------------------------------------------------------------

_BLOCK = r"blocks_(?P<layer>\d+)/w"
_SDS = jax.ShapeDtypeStruct


def _depth(scale, layer="0", init=None):
  tree = {f"blocks_{layer}": {"w": jnp.zeros((4, 4))}}
  rule = jaxinit.depth_rule(init or jaxinit.normal(1.0), scale)
  return lambda: jaxinit.reinit(tree, {_BLOCK: rule}, KEY)


def _widths(w):
  return {"hidden": _SDS((w, w), jnp.float32), "out": _SDS((w, 10), jnp.float32)}


FUZZED = [
  # presets: counts are bounded (they enter float arithmetic), `patterns` is a mapping
  (
    lambda: jaxinit.presets.gpt2(n_layers=10**400),
    ValueError,
    r"presets\.gpt2: `n_layers` must be <= 9007199254740992, got an int of 1329 bits",
  ),
  (lambda: jaxinit.presets.t5(64, 16, 4, 10**400), ValueError, r"presets\.t5: `d_ff` must be <="),
  (lambda: jaxinit.presets.deepnorm(10**400, 2), ValueError, r"presets\.deepnorm: `n_enc` must"),
  (lambda: jaxinit.presets.fixup(4, m=10**12), ValueError, r"presets\.fixup: `m` must be <= 64"),
  (
    lambda: jaxinit.presets.gpt2(12, patterns=3),
    TypeError,
    r"presets\.gpt2: `patterns` must be a mapping \{role: pattern or None\}",
  ),
  (lambda: jaxinit.presets.vit(patterns="embed"), TypeError, r"presets\.vit: `patterns` must be"),
  (
    lambda: jaxinit.presets.bert(patterns={3: "x"}),
    TypeError,
    r"presets\.bert: `patterns` keys must be role names \(str\), got 3",
  ),
  # depth rules: the scaled draw must fit the dtype, like any draw
  (
    _depth(lambda i: 1e300),
    ValueError,
    r"reinit: .*normal: with `stddev`=1\.0 .*multiplied by the depth rule's scale 1e\+300, "
    r"the draws reach",
  ),
  (_depth(lambda i: 1e-300), ValueError, r"reinit: .*depth rule's scale 1e-300, .*round to zeros"),
  (_depth(lambda i: 10**400), ValueError, r"reinit: .*scale\(0\) returned an int of 1329 bits"),
  (_depth(lambda i: 1.0, layer="9" * 5000), ValueError, r"reinit: .*not a layer index"),
  # trees jax cannot flatten
  (
    lambda: jaxinit.reinit({1: jnp.zeros(2), "1": jnp.zeros(2)}, {".*": jaxinit.normal()}, KEY),
    TypeError,
    r"reinit: `tree` cannot be flattened by jax\.tree_util",
  ),
  # µP: a zero width has no ratio; depths are bounded
  (
    lambda: jaxinit.mup.parametrize(_widths(64), _widths(0)).init_mult,
    ValueError,
    r"mup\.parametrize: 'hidden' has shape \(0, 0\) in target .*no width ratio",
  ),
  (lambda: jaxinit.mup.Depth(2, 10**400), ValueError, r"mup\.Depth: `depth` must be <= 2?"),
  # structured draws index in int32: a longer side crashed inside jax's indexing
  (
    lambda: jaxinit.orthogonal()(KEY, (1, 2**47)),
    ValueError,
    r"orthogonal: the shape \(1, 140737488355328\) makes matrices with a side of",
  ),
  (lambda: jaxinit.spectral()(KEY, (2**31, 1)), ValueError, r"spectral: .*at most 2\*\*31 - 1"),
  (lambda: jaxinit.dirac()(KEY, (1, 2**47)), ValueError, r"dirac: .*makes a kernel with a side"),
  (lambda: jaxinit.delta_orthogonal()(KEY, (1, 2**32)), ValueError, r"delta_orthogonal: .*int32"),
  # rules resolve names at factory time, errors naming the factory
  (lambda: jaxinit.optional(3), TypeError, r"optional: `rule` must be what reinit takes"),
  (lambda: jaxinit.optional("nromal"), ValueError, r"optional: `rule`: jaxinit\.get: unknown"),
  (lambda: jaxinit.depth_rule("nromal", abs), ValueError, r"depth_rule: `init`: jaxinit\.get"),
  # jaxinit.testing: arguments that made a check pass vacuously or crash inside numpy/scipy
  (
    lambda: jaxinit.testing.assert_moments(np.ones(10), var=1.0, k=float("nan")),  # passed
    ValueError,
    r"testing\.assert_moments: `k` must be finite, got nan",
  ),
  (
    lambda: jaxinit.testing.assert_moments(np.ones(10), var=-1.0),
    ValueError,
    r"testing\.assert_moments: `var` must be >= 0",
  ),
  (
    lambda: jaxinit.testing.assert_moments(np.ones(10), mean="a"),
    TypeError,
    r"testing\.assert_moments: `mean` must be a real number",
  ),
  (
    lambda: jaxinit.testing.moment_z_scores(["a", "b"], mean=0.0),
    TypeError,
    r"testing\.moment_z_scores: `samples` must be an array of numbers",
  ),
  (
    lambda: jaxinit.testing.assert_ks(np.ones(10), 3),  # passed
    TypeError,
    r"testing\.assert_ks: `distribution` must be a scipy\.stats distribution name or a CDF",
  ),
  (
    lambda: jaxinit.testing.assert_ks(np.ones(10), "nrom"),
    ValueError,
    r"testing\.assert_ks: `distribution` 'nrom' is not a scipy\.stats continuous",
  ),
  (
    lambda: jaxinit.testing.assert_ks(np.ones(10), "norm", alpha=0.0),  # never fails
    ValueError,
    r"testing\.assert_ks: `alpha` must be > 0",
  ),
  (
    lambda: jaxinit.testing.assert_orthonormal(np.ones((4, 4)), column_axis=5),  # passed
    ValueError,
    r"testing\.assert_orthonormal: `column_axis`=5 is out of range",
  ),
  (
    lambda: jaxinit.testing.assert_orthonormal(np.eye(4), atol=float("nan")),
    ValueError,
    r"testing\.assert_orthonormal: `atol` must be finite",
  ),
  (
    lambda: jaxinit.testing.assert_conforms(3, (4,)),
    TypeError,
    r"testing\.assert_conforms: `init` must be an init\(key, shape, dtype\) callable",
  ),
  # framework glue and diagnostics: raw AttributeError / TypeError / jax errors before
  (lambda: jaxinit.init_linen(3, KEY), TypeError, r"init_linen: `module` must be a flax\.linen"),
  (lambda: jaxinit.init_nnx(3), TypeError, r"init_nnx: `make_model` must be a function"),
  (lambda: jaxinit.init_nnx(lambda: 3), TypeError, r"init_nnx: `make_model` must return an nnx"),
  (
    lambda: jaxinit.diagnostics.gradient_norms(
      lambda p, x: x @ p, jnp.eye(4), jnp.ones((8, 4)), loss=lambda y: y
    ),
    TypeError,
    r"diagnostics\.gradient_norms: `loss` must return a float scalar, got an array of shape "
    r"\(8, 4\)",
  ),
  (
    lambda: jaxinit.diagnostics.default_loss(jnp.zeros((0,))),  # NaN before
    ValueError,
    r"diagnostics\.default_loss: `output` holds no floating-point entries",
  ),
  (lambda: jaxinit.diagnostics.default_loss("y"), TypeError, r"diagnostics\.default_loss: "),
  (
    lambda: jaxinit.diagnostics.signal_propagation(
      lambda p, x: jnp.tanh(x @ p), jnp.eye(4), jnp.ones((0, 4))
    ),  # NaN statistics before
    ValueError,
    r"diagnostics\.signal_propagation: the batch holds 0 examples",
  ),
  # mean field: scales whose square overflows, arrays that would exhaust memory
  (
    lambda: jaxinit.mean_field.q_star("tanh", 1e300),  # returned 1.0
    ValueError,
    r"mean_field\.q_star: `sigma_w` must be <= 1e\+50, got 1e\+300",
  ),
  (lambda: jaxinit.mean_field.chi1("tanh", 1e200), ValueError, r"mean_field\.chi1: `sigma_w`"),
  (
    lambda: jaxinit.mean_field.activation("leaky_relu", 1e200),  # q_star gave 1.0
    ValueError,
    r"mean_field\.activation: `param` must lie in \[-1e\+50, 1e\+50\], got 1e\+200",
  ),
  (
    lambda: jaxinit.mean_field.length_map("relu", 1e308, 1.5),
    ValueError,
    r"mean_field\.length_map: `q` must be <= 1e\+100",
  ),
  (
    lambda: jaxinit.mean_field.q_star("tanh", np.broadcast_to(1.5, (10**7,))),  # ran for minutes
    ValueError,
    r"mean_field\.q_star: `sigma_w` has 10000000 entries; at most 65536",
  ),
]


@pytest.mark.parametrize("call,exc,match", FUZZED, ids=[m[:40] for _, _, m in FUZZED])
def test_fuzzed_inputs_fail_clearly(call, exc, match):
  with pytest.raises(exc, match=rf"^jaxinit\.{match}"):
    call()


def test_calculate_gain_of_a_huge_slope_is_not_zero():  # sqrt(2 / (1 + p * p)) gave 0.0
  assert jaxinit.calculate_gain("leaky_relu", 1e200) == pytest.approx(math.sqrt(2) * 1e-200)
  assert jaxinit.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)  # unchanged below


def test_get_a_name_with_its_required_arguments():  # get("constant", value=...) failed
  assert jaxinit.get("constant", value=0.5) == jaxinit.constant(0.5)
  assert jaxinit.get("RandomNormal", stddev=2.0) == jaxinit.normal(2.0)


def test_t_fixup_encoder_only_builds():  # n_dec=0 raised ZeroDivisionError
  p = jaxinit.presets.t_fixup(4, 0, 64)
  assert "decoder" not in " ".join(p.pattern(r) for r, _, _ in p.roles)


def test_testing_checks_take_ml_dtypes_floats():  # bfloat16's numpy kind is 'V', not 'f'
  w = jaxinit.orthogonal()(KEY, (16, 8), jnp.bfloat16)
  assert jaxinit.testing.assert_orthonormal(w) < 0.05
  jaxinit.testing.assert_moments(np.asarray(w).ravel(), mean=0.0, k=10.0)
