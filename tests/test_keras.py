"""Keras 3 compatibility, checked against Keras itself (the `refs` extra, JAX backend).

Every built-in Keras 3 initializer class (enumerated from `keras.initializers`, so a
new class fails `test_every_keras_class_is_covered` until it is mapped or refused)
is built by Keras, serialized by Keras, read by `jaxinit.get`, and both draw on the
same shape: a two-sample Kolmogorov-Smirnov test (p > 1e-3) and the first two
moments (within 6 standard errors of their difference) must agree; deterministic
initializers must agree exactly. The other way, `jaxinit.serialize(init,
format="keras")` must load in Keras and draw the same distribution.
"""

import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
scipy_stats = pytest.importorskip("scipy.stats")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxinit  # noqa: E402

if keras.backend.backend() != "jax":
  pytest.skip("the Keras tests draw with Keras's JAX backend", allow_module_level=True)

KI = keras.initializers

# Keras class name -> constructor arguments to test (each a separate case).
KERAS_CASES = {
  "Zeros": [{}],
  "Ones": [{}],
  "Constant": [{}, {"value": -0.75}],
  "RandomNormal": [{}, {"mean": 1.5, "stddev": 0.3}],
  "RandomUniform": [{}, {"minval": -2.0, "maxval": 0.5}],
  "TruncatedNormal": [{}, {"mean": -1.0, "stddev": 2.0}],
  "VarianceScaling": [
    {},
    {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
    {"scale": 0.5, "mode": "fan_avg", "distribution": "uniform"},
    {"scale": 3.0, "mode": "fan_in", "distribution": "normal"},  # Keras: truncated
  ],
  "GlorotNormal": [{}],
  "GlorotUniform": [{}],
  "HeNormal": [{}],
  "HeUniform": [{}],
  "LecunNormal": [{}],
  "LecunUniform": [{}],
  "Orthogonal": [{}, {"gain": 2.5}],
  "Identity": [{}, {"gain": -3.0}],
}
# Keras classes jaxinit has no equivalent for: get must refuse them clearly.
REFUSED = {"STFT": "short-time Fourier transform"}
SHAPES = {"Orthogonal": (3, 3, 32, 64), "Identity": (24, 40)}
SHAPE = (3, 3, 64, 128)  # a conv kernel: the receptive field counts in the fans


def _keras_classes():
  base = KI.Initializer
  return {
    obj.__name__
    for obj in vars(KI).values()
    if isinstance(obj, type) and issubclass(obj, base) and obj is not base
  }


def test_every_keras_class_is_covered():
  classes = _keras_classes()
  assert classes, "no Keras initializer classes found"
  assert classes == set(KERAS_CASES) | set(REFUSED), (
    f"Keras classes without a test case: {sorted(classes - set(KERAS_CASES) - set(REFUSED))}"
  )


def _draw_keras(init, shape):
  return np.asarray(init(shape=shape, dtype="float32"), np.float64)


def _draw_jaxinit(init, shape, seed=0):
  return np.asarray(init(jax.random.key(seed), shape, jnp.float32), np.float64)


def assert_same_distribution(ours, theirs, label):
  """Two-sample KS (p > 1e-3) and mean/variance within 6 SE of their difference."""
  a, b = ours.ravel(), theirs.ravel()
  if np.all(a == a[0]) or np.all(b == b[0]):  # deterministic
    np.testing.assert_array_equal(a, b, err_msg=label)
    return
  ks = scipy_stats.ks_2samp(a, b)
  assert ks.pvalue > 1e-3, f"{label}: KS statistic {ks.statistic:.4g}, p = {ks.pvalue:.3g}"
  n, m = a.size, b.size
  se_mean = math.sqrt(a.var() / n + b.var() / m)
  z_mean = (a.mean() - b.mean()) / se_mean
  assert abs(z_mean) < 6, f"{label}: means {a.mean():.6g} vs {b.mean():.6g} (z = {z_mean:.2f})"

  def var_se2(x):
    c = x - x.mean()
    return ((c**4).mean() - c.var() ** 2) / x.size

  z_var = (a.var() - b.var()) / math.sqrt(var_se2(a) + var_se2(b))
  assert abs(z_var) < 6, f"{label}: variances {a.var():.6g} vs {b.var():.6g} (z = {z_var:.2f})"


def _cases():
  for name, arg_list in KERAS_CASES.items():
    for args in arg_list:
      yield pytest.param(name, args, id=f"{name}-{json.dumps(args)}")


@pytest.mark.parametrize("name,args", list(_cases()))
def test_keras_config_through_get_draws_the_same_distribution(name, args):
  cls = getattr(KI, name)
  seeded = "seed" in cls().get_config()
  k_init = cls(**args, seed=1234) if seeded else cls(**args)
  config = json.loads(json.dumps(keras.saving.serialize_keras_object(k_init)))
  assert set(config) == {"module", "class_name", "config", "registered_name"}
  if name == "Identity":  # Keras 3.15's Identity.get_config() drops `gain`; from_config takes it
    assert config["config"] == {}
    config["config"] = args
  ours = jaxinit.get(config)
  if name != "Identity":  # the older form, {"class_name", "config"}, reads the same
    assert jaxinit.get({"class_name": name, "config": k_init.get_config()}) == ours
  shape = SHAPES.get(name, SHAPE)
  assert_same_distribution(_draw_jaxinit(ours, shape), _draw_keras(k_init, shape), repr(ours))


@pytest.mark.parametrize(
  "input_axes,output_axes,shape",
  [
    ([0], [1, 2], (64, 8, 16)),  # an EinsumDense kernel: every axis listed
    ([0], [2], (64, 8, 16)),  # axis 1 in neither: Keras counts it in neither fan
    ([-1], [-3], (64, 8, 16)),
  ],
)
def test_input_and_output_axes(input_axes, output_axes, shape):
  for cls in (KI.VarianceScaling, KI.GlorotUniform):
    k_init = cls(seed=7, input_axes=input_axes, output_axes=output_axes)
    ours = jaxinit.get(keras.saving.serialize_keras_object(k_init))
    assert_same_distribution(_draw_jaxinit(ours, shape), _draw_keras(k_init, shape), repr(ours))


def test_every_keras_name_and_alias():
  """Every name Keras resolves (class names, snake case, 'one', 'zero', ...) works in get."""
  from keras.src.initializers import ALL_OBJECTS_DICT

  for name, cls in ALL_OBJECTS_DICT.items():
    if cls is KI.Initializer:
      continue
    if cls.__name__ in REFUSED:
      with pytest.raises(ValueError, match=r"jaxinit\.get: Keras's STFT initializer has no"):
        jaxinit.get(name)
      continue
    expected = jaxinit.get(keras.saving.serialize_keras_object(cls()))
    assert jaxinit.get({"class_name": name, "config": {}}) == expected, name
    if name == "constant":  # a bare string is jaxinit's name first: constant needs a value
      with pytest.raises(TypeError, match=r"jaxinit\.get: constant needs the argument\(s\) value"):
        jaxinit.get(name)
    else:
      assert jaxinit.get(name) == expected, name


def test_keras_argument_meanings():
  """What Keras does with its arguments, read without drawing (the draws are tested above)."""

  def get(cls, **config):
    return jaxinit.get({"class_name": cls, "config": config})

  assert get("VarianceScaling", distribution="Truncated_Normal") == jaxinit.variance_scaling()
  assert get("VarianceScaling", distribution="normal") == jaxinit.variance_scaling()
  assert get("VarianceScaling", distribution="untruncated_normal") == (
    jaxinit.variance_scaling(distribution="normal")
  )
  assert get("HeNormal", input_axes=[1], output_axes=None) == jaxinit.he_normal()  # one: ignored
  assert get("HeNormal", input_axes=[0], output_axes=[2]) == (
    jaxinit.he_normal(in_axis=0, out_axis=2, batch_axis=1)
  )
  assert get("TruncatedNormal", stddev=0.3) == jaxinit.truncated_normal(0.3, exact_std=False)
  assert get("Orthogonal", gain=2.0, seed=5) == jaxinit.orthogonal(2.0)
  assert get("Constant", value=3) == jaxinit.constant(3)
  assert get("RandomUniform") == jaxinit.uniform(-0.05, 0.05)


def test_keras_config_values():
  assert jaxinit.get(KI.serialize(KI.Constant(np.array([1.0, -2.0])))) == jaxinit.constant(
    [1.0, -2.0]
  )
  assert jaxinit.get(KI.serialize(KI.Constant(jnp.float32(1.5)))) == jaxinit.constant(1.5)
  assert jaxinit.get(KI.serialize(KI.Orthogonal(seed=keras.random.SeedGenerator(3)))) == (
    jaxinit.orthogonal()
  )


# jaxinit initializers and the shape to compare them on, for serialize(format="keras").
EXPORTS = [
  (jaxinit.zeros(), SHAPE),
  (jaxinit.ones(), SHAPE),
  (jaxinit.constant(0.25), SHAPE),
  (jaxinit.constant(np.arange(128.0) / 7), SHAPE),
  (jaxinit.normal(0.2, -1.0), SHAPE),
  (jaxinit.uniform(0.0, 3.0), SHAPE),
  (jaxinit.truncated_normal(0.5, 2.0), SHAPE),
  (jaxinit.variance_scaling(0.7, "fan_out", "normal"), SHAPE),
  (jaxinit.variance_scaling(1.5, "fan_avg", "truncated_normal"), SHAPE),
  (jaxinit.variance_scaling(2.0, "fan_in", "uniform"), SHAPE),
  (jaxinit.glorot_normal(), SHAPE),
  (jaxinit.glorot_normal(gain=2.0, truncated=False), SHAPE),
  (jaxinit.glorot_uniform(gain=0.5), SHAPE),
  (jaxinit.he_normal(), SHAPE),
  (jaxinit.he_normal(negative_slope=0.2, mode="fan_out"), SHAPE),
  (jaxinit.he_normal(truncated=False), SHAPE),
  (jaxinit.he_uniform(nonlinearity="tanh"), SHAPE),
  (jaxinit.he_uniform(), SHAPE),
  (jaxinit.lecun_normal(), SHAPE),
  (jaxinit.lecun_normal(truncated=False), SHAPE),
  (jaxinit.lecun_uniform(), SHAPE),
  (jaxinit.orthogonal(scale=1.5, method="qr"), (3, 3, 32, 64)),
  (jaxinit.orthogonal(), (24, 96)),  # wide: Keras transposes
  (jaxinit.identity(2.0), (24, 40)),
]


@pytest.mark.parametrize("init,shape", EXPORTS, ids=[repr(i)[:60] for i, _ in EXPORTS])
def test_serialize_keras_loads_in_keras_and_draws_the_same(init, shape):
  config = json.loads(json.dumps(jaxinit.serialize(init, format="keras")))
  k_init = KI.deserialize(config)
  again = keras.saving.deserialize_keras_object(config)
  assert type(again) is type(k_init)
  rewritten = keras.saving.serialize_keras_object(k_init)
  if config["class_name"] == "Identity":  # Keras 3.15's Identity.get_config() drops `gain`
    config = {**config, "config": {}}
  assert rewritten == config  # Keras writes back what it loaded
  jaxinit.get(config)  # reads back (exactly where the class matches: the next test)
  assert_same_distribution(_draw_jaxinit(init, shape), _draw_keras(k_init, shape), repr(init))


def test_round_trip_is_exact_where_the_class_matches():
  for init in (
    jaxinit.he_normal(),
    jaxinit.normal(0.3, 1.0),
    jaxinit.truncated_normal(0.1),
    jaxinit.orthogonal(2.0),
    jaxinit.identity(0.5),
    jaxinit.variance_scaling(2.0, "fan_avg", "uniform"),
  ):
    assert jaxinit.get(jaxinit.serialize(init, format="keras")) == init


@pytest.mark.parametrize(
  "init,pattern",
  [
    (jaxinit.he_normal(in_axis=1, out_axis=0), r"`in_axis`=1\. Keras counts the fans"),
    (jaxinit.glorot_uniform(batch_axis=0), r"`batch_axis`=\[0\]"),
    (jaxinit.variance_scaling(mode="fan_geo_avg"), r"`mode`='fan_geo_avg'"),
    (jaxinit.truncated_normal(lower=-3.0), r"cuts at ±2 stddev"),
    (jaxinit.truncated_normal(exact_std=True), r"does not rescale"),
    (jaxinit.constant(1 + 2j), r"real number or a real array"),
    (jaxinit.orthogonal(column_axis=0), r"only column_axis=-1"),
    (jaxinit.dirac(), r"Keras 3 has no dirac initializer"),
    (jaxinit.sparse(num_nonzero=3), r"Keras 3 has no sparse initializer"),
    (jaxinit.delta_orthogonal(), r"Keras 3 has no delta_orthogonal"),
    (jaxinit.normalized(), r"Keras 3 has no normalized"),
  ],
)
def test_serialize_keras_refuses_what_keras_cannot_express(init, pattern):
  with pytest.raises(ValueError, match=r"jaxinit\.serialize: .* has no Keras 3 form: .*" + pattern):
    jaxinit.serialize(init, format="keras")
