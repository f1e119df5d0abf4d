"""Every bad argument fails with a message naming the function, the argument,
the bad value and what is allowed — at factory time where the factory can know."""

import dataclasses
import math
import pathlib

import jax
import jax.numpy as jnp
import pytest
from _cases import CASES
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinit
from jaxinit._src import registry

# (factory call, exception, regex the message must match)
FACTORY_ERRORS = [
  (
    lambda: jaxinit.normal(stddev=-1.0),
    ValueError,
    r"jaxinit\.normal: `stddev` must be >= 0, got -1\.0",
  ),
  (
    lambda: jaxinit.normal(stddev="big"),
    TypeError,
    r"jaxinit\.normal: `stddev` must be a real number, got 'big'",
  ),
  (
    lambda: jaxinit.normal(mean=math.nan),
    ValueError,
    r"jaxinit\.normal: `mean` must be finite, got nan",
  ),
  (
    lambda: jaxinit.normal(stddev=True),
    TypeError,
    r"jaxinit\.normal: `stddev` must be a real number, got True",
  ),
  (
    lambda: jaxinit.normal(stddev=1 + 2j),
    TypeError,
    r"jaxinit\.normal: `stddev` must be a real number",
  ),
  (
    lambda: jaxinit.uniform(1.0, 0.0),
    ValueError,
    r"jaxinit\.uniform: `minval` must be < `maxval`, got minval=1\.0, maxval=0\.0",
  ),
  (
    lambda: jaxinit.uniform(maxval=math.inf),
    ValueError,
    r"jaxinit\.uniform: `maxval` must be finite",
  ),
  (
    lambda: jaxinit.truncated_normal(lower=2.0, upper=1.0),
    ValueError,
    r"jaxinit\.truncated_normal: `lower` must be < `upper`, got lower=2\.0, upper=1\.0",
  ),
  (
    lambda: jaxinit.truncated_normal(lower=40.0, upper=41.0),
    ValueError,
    r"jaxinit\.truncated_normal: the interval \[40\.0, 41\.0\] .* holds no probability mass",
  ),
  (
    lambda: jaxinit.truncated_normal(exact_std="yes"),
    TypeError,
    r"jaxinit\.truncated_normal: `exact_std` must be True or False, got 'yes'",
  ),
  (
    lambda: jaxinit.truncated_normal(stddev=-0.1),
    ValueError,
    r"jaxinit\.truncated_normal: `stddev` must be >= 0",
  ),
  (
    lambda: jaxinit.constant("a"),
    TypeError,
    r"jaxinit\.constant: `value` must be a number or an array of numbers, got dtype <U1",
  ),
  (
    lambda: jaxinit.constant(math.inf),
    ValueError,
    r"jaxinit\.constant: `value` must be finite, got inf",
  ),
  (
    lambda: jaxinit.constant([1.0, math.nan]),
    ValueError,
    r"jaxinit\.constant: `value` must hold only finite numbers",
  ),
  (lambda: jaxinit.constant(True), TypeError, r"jaxinit\.constant: `value` must be a number"),
  (
    lambda: jaxinit.variance_scaling(scale=0.0),
    ValueError,
    r"jaxinit\.variance_scaling: `scale` must be > 0, got 0\.0",
  ),
  (
    lambda: jaxinit.variance_scaling(mode="fan_inn"),
    ValueError,
    r"jaxinit\.variance_scaling: `mode` must be one of 'fan_in', 'fan_out', 'fan_avg', 'fan_geo_avg', got 'fan_inn'",
  ),
  (
    lambda: jaxinit.variance_scaling(distribution="gaussian"),
    ValueError,
    r"jaxinit\.variance_scaling: `distribution` must be one of 'truncated_normal', 'normal', 'uniform', got 'gaussian'",
  ),
  (
    lambda: jaxinit.variance_scaling(in_axis="0"),
    TypeError,
    r"jaxinit\.variance_scaling: `in_axis` must be an int or a sequence of ints, got '0'",
  ),
  (
    lambda: jaxinit.variance_scaling(in_axis=1.5),
    TypeError,
    r"jaxinit\.variance_scaling: `in_axis` must be an int or a sequence of ints, got 1\.5",
  ),
  (
    lambda: jaxinit.variance_scaling(batch_axis=(0, 0)),
    ValueError,
    r"jaxinit\.variance_scaling: `batch_axis` has a repeated axis: \(0, 0\)",
  ),
  (
    lambda: jaxinit.glorot_normal(gain=-1.0),
    ValueError,
    r"jaxinit\.glorot_normal: `gain` must be > 0, got -1\.0",
  ),
  (
    lambda: jaxinit.glorot_uniform(out_axis=[0, "a"]),
    TypeError,
    r"jaxinit\.glorot_uniform: `out_axis` must be an int or a sequence of ints",
  ),
  (
    lambda: jaxinit.xavier_normal(truncated=None),
    TypeError,
    r"jaxinit\.glorot_normal: `truncated` must be True or False, got None",
  ),
  (
    lambda: jaxinit.he_normal(mode="in"),
    ValueError,
    r"jaxinit\.he_normal: `mode` must be one of 'fan_in', 'fan_out', 'fan_avg', 'fan_geo_avg', got 'in'",
  ),
  (
    lambda: jaxinit.he_normal(nonlinearity="rleu"),
    ValueError,
    r"jaxinit\.he_normal: `nonlinearity` must be a callable or one of .*, got 'rleu'\. Did you mean 'relu'",
  ),
  (
    lambda: jaxinit.he_normal(negative_slope=0.1, nonlinearity="relu"),
    ValueError,
    r"jaxinit\.he_normal: `negative_slope`=0\.1 applies only to nonlinearity='leaky_relu', got nonlinearity='relu'",
  ),
  (
    lambda: jaxinit.he_normal(nonlinearity=jnp.tanh),
    TypeError,
    r"jaxinit\.he_normal: `nonlinearity` must be a name",
  ),
  (
    lambda: jaxinit.kaiming_uniform(negative_slope="x"),
    TypeError,
    r"jaxinit\.he_uniform: `negative_slope` must be a real number, got 'x'",
  ),
  (
    lambda: jaxinit.he_uniform(mode="avg"),
    ValueError,
    r"jaxinit\.he_uniform: `mode` must be one of",
  ),
  (
    lambda: jaxinit.lecun_normal(truncated=1),
    TypeError,
    r"jaxinit\.lecun_normal: `truncated` must be True or False, got 1",
  ),
  (
    lambda: jaxinit.lecun_uniform(in_axis=(0, 0)),
    ValueError,
    r"jaxinit\.lecun_uniform: `in_axis` has a repeated axis",
  ),
  (
    lambda: jaxinit.calculate_gain("sigmod"),
    ValueError,
    r"jaxinit\.calculate_gain: `nonlinearity` must be a callable or one of .* got 'sigmod'\. Did you mean 'sigmoid'",
  ),
  (
    lambda: jaxinit.calculate_gain("relu", 0.2),
    ValueError,
    r"jaxinit\.calculate_gain: `param` applies only to 'leaky_relu' .* got param=0\.2 for 'relu'",
  ),
  (
    lambda: jaxinit.calculate_gain("leaky_relu", "a"),
    TypeError,
    r"jaxinit\.calculate_gain: `param` must be a real number, got 'a'",
  ),
  (
    lambda: jaxinit.calculate_gain(lambda z: 0.0 * z),
    ValueError,
    r"jaxinit\.calculate_gain: E\[phi\(z\)\^2\] of .* is 0\.0",
  ),
  (
    lambda: jaxinit.calculate_gain(lambda z: z[:3]),
    TypeError,
    r"jaxinit\.calculate_gain: could not evaluate the nonlinearity",
  ),
  (
    lambda: jaxinit.compute_fans((3, 4), in_axis=2),
    ValueError,
    r"jaxinit\.compute_fans: `in_axis`=2 is out of range for the 2-D shape \(3, 4\)",
  ),
  (
    lambda: jaxinit.get("he_norml"),
    ValueError,
    r"jaxinit\.get: unknown initializer 'he_norml'\. Did you mean 'he_normal'",
  ),
  (
    lambda: jaxinit.get("he_normal", slope=0.1),
    TypeError,
    r"jaxinit\.get: he_normal got unexpected argument\(s\) 'slope'; it takes negative_slope, mode",
  ),
  (
    lambda: jaxinit.get(3),
    TypeError,
    r"jaxinit\.get: `identifier` must be an initializer name, a config dict or an initializer, got 3",
  ),
  (
    lambda: jaxinit.get({"stddev": 1.0}),
    ValueError,
    r"jaxinit\.get: a config dict needs a 'name' key",
  ),
  (
    lambda: jaxinit.serialize(jax.nn.initializers.he_normal()),
    TypeError,
    r"jaxinit\.serialize: `init` must be a jaxinit initializer",
  ),
  (
    lambda: jaxinit.deserialize({"name": "normal", "sttdev": 1}),
    TypeError,
    r"jaxinit\.deserialize: normal got unexpected argument\(s\) 'sttdev'; it takes stddev, mean",
  ),
  (
    lambda: jaxinit.deserialize("normal"),
    TypeError,
    r"jaxinit\.deserialize: `config` must be a dict",
  ),
  (
    lambda: jaxinit.get("constant"),
    TypeError,
    r"jaxinit\.get: constant needs the argument\(s\) value\.",
  ),
  (
    lambda: jaxinit.get({"class_name": "STFT", "config": {}}),
    ValueError,
    r"jaxinit\.get: Keras's STFT initializer has no jaxinit equivalent",
  ),
  (
    lambda: jaxinit.deserialize({"name": "constant", "value": {"array": [1], "dtype": "V8"}}),
    ValueError,
    r"jaxinit\.deserialize: argument 'value': an array's dtype must be one of float16, bfloat16",
  ),
  (
    lambda: jaxinit.serialize(jaxinit.dirac(), format="keras"),
    ValueError,
    r"jaxinit\.serialize: dirac\(\) has no Keras 3 form: Keras 3 has no dirac initializer\.",
  ),
  (
    lambda: jaxinit.serialize(jaxinit.normal(), format="json"),
    ValueError,
    r"jaxinit\.serialize: `format` must be one of 'jaxinit', 'keras', got 'json'",
  ),
  (
    lambda: jaxinit.zero_hadamard(in_axis=(0, 1)),
    TypeError,
    r"jaxinit\.zero_hadamard: `in_axis` must be an integer, got \(0, 1\)",
  ),
  (
    lambda: jaxinit.zero_hadamard(out_axis="-1"),
    TypeError,
    r"jaxinit\.zero_hadamard: `out_axis` must be an integer, got '-1'",
  ),
  (
    lambda: jaxinit.zero_hadamard(batch_axis=(0, 0)),
    ValueError,
    r"jaxinit\.zero_hadamard: `batch_axis` has a repeated axis: \(0, 0\)",
  ),
  (
    lambda: jaxinit.zero_hadamard(in_axis=0, out_axis=0),
    ValueError,
    r"jaxinit\.zero_hadamard: `in_axis` and `out_axis` must differ, both are 0",
  ),
  (
    lambda: jaxinit.spectral(in_axis=1.0),
    TypeError,
    r"jaxinit\.spectral: `in_axis` must be an integer, got 1\.0",
  ),
  (
    lambda: jaxinit.spectral(out_axis=(0,)),
    TypeError,
    r"jaxinit\.spectral: `out_axis` must be an integer, got \(0,\)",
  ),
  (
    lambda: jaxinit.spectral(batch_axis="0"),
    TypeError,
    r"jaxinit\.spectral: `batch_axis` must be an int or a sequence of ints, got '0'",
  ),
  (
    lambda: jaxinit.spectral(method="svd"),
    ValueError,
    r"jaxinit\.spectral: `method` must be one of 'stewart', 'qr', 'cholesky_qr', 'auto', got 'svd'",
  ),
  (
    lambda: jaxinit.zero_rows(jax.nn.initializers.normal()),
    TypeError,
    r"jaxinit\.zero_rows: `init` must be a jaxinit initializer .* got <function",
  ),
  (
    lambda: jaxinit.zero_rows(rows=1.5),
    TypeError,
    r"jaxinit\.zero_rows: `rows` must be an index or a sequence of distinct indices, got 1\.5",
  ),
  (
    lambda: jaxinit.zero_rows(rows=()),
    ValueError,
    r"jaxinit\.zero_rows: `rows` is empty; give at least one index",
  ),
  (
    lambda: jaxinit.zero_rows(axis=None),
    TypeError,
    r"jaxinit\.zero_rows: `axis` must be an integer, got None",
  ),
  (
    lambda: jaxinit.depth_rule(None, lambda layer: 1.0),
    TypeError,
    r"jaxinit\.depth_rule: `init` must be an initializer, a name or config dict, .* got None",
  ),
  (
    lambda: jaxinit.depth_rule(jaxinit.normal(), 0.5),
    TypeError,
    r"jaxinit\.depth_rule: `scale` must be a function of the layer index .* got 0\.5",
  ),
  (
    lambda: jaxinit.depth_rule(jaxinit.normal(), abs, group=0),
    ValueError,
    r"jaxinit\.depth_rule: `group` must be >= 1 \(group 0 is the whole match\), got 0",
  ),
  (
    lambda: jaxinit.depth_rule(jaxinit.normal(), abs, group=1.0),
    TypeError,
    r"jaxinit\.depth_rule: `group` must be a group number or name, got 1\.0",
  ),
]


@pytest.mark.parametrize(
  "call,exc,pattern",
  FACTORY_ERRORS,
  ids=[f"{i}-{p.split(':')[0]}" for i, (_, _, p) in enumerate(FACTORY_ERRORS)],
)
def test_factory_errors(call, exc, pattern):
  with pytest.raises(exc, match=pattern):
    call()


KEY = jax.random.key(0)

# Errors that need the call's shape, dtype, key or sharding.
CALL_ERRORS = [
  (
    lambda: jaxinit.normal()(0, (2, 2)),
    TypeError,
    r"jaxinit\.normal: `key` must be a jax\.random\.key\(\.\.\.\) or a jax\.random\.PRNGKey\(\.\.\.\) array, got int",
  ),
  (
    lambda: jaxinit.normal()(jnp.zeros(2), (2, 2)),
    TypeError,
    r"jaxinit\.normal: `key` must be a jax\.random\.key",
  ),
  (
    lambda: jaxinit.normal()(jnp.zeros(3, jnp.uint32), (2,)),
    TypeError,
    r"jaxinit\.normal: `key` must be .* got a uint32 array of shape \(3,\)",
  ),
  (
    lambda: jaxinit.normal()(jax.random.split(KEY, 2), (2,)),
    ValueError,
    r"jaxinit\.normal: `key` must be a single PRNG key, got a key array of shape \(2,\); use jax\.vmap",
  ),
  (
    lambda: jaxinit.normal()(KEY, (2, -1)),
    ValueError,
    r"jaxinit\.normal: `shape` dimensions must be >= 0, got \(2, -1\)",
  ),
  (
    lambda: jaxinit.normal()(KEY, "22"),
    TypeError,
    r"jaxinit\.normal: `shape` must be a sequence of ints, got '22'",
  ),
  (
    lambda: jaxinit.normal()(KEY, (2.0, 2)),
    TypeError,
    r"jaxinit\.normal: `shape` must be a sequence of ints",
  ),
  (
    lambda: jaxinit.he_normal()(KEY, (2, 2), jnp.int32),
    TypeError,
    r"jaxinit\.he_normal: `dtype` must be a floating-point or complex dtype .* got int32",
  ),
  (
    lambda: jaxinit.uniform()(KEY, (2, 2), bool),
    TypeError,
    r"jaxinit\.uniform: `dtype` must be a floating-point dtype .* got bool",
  ),
  (
    lambda: jaxinit.uniform()(KEY, (2, 2), jnp.complex64),
    TypeError,
    r"jaxinit\.uniform: `dtype` complex64 is complex",
  ),
  (
    lambda: jaxinit.normal()(KEY, (2, 2), "not-a-dtype"),
    TypeError,
    r"jaxinit\.normal: `dtype` must be a floating-point dtype, got 'not-a-dtype'",
  ),
  (
    lambda: jaxinit.he_normal(in_axis=3)(KEY, (2, 2)),
    ValueError,
    r"jaxinit\.he_normal: `in_axis`=3 is out of range for the 2-D shape \(2, 2\); axes must lie in \[-2, 1\]",
  ),
  (
    lambda: jaxinit.glorot_uniform(in_axis=0, out_axis=-2)(KEY, (4, 5)),
    ValueError,
    r"jaxinit\.glorot_uniform: `in_axis`=\(0,\) and `out_axis`=\(0,\) share axis \[0\]",
  ),
  (
    lambda: jaxinit.variance_scaling(batch_axis=0)(KEY, (4, 5)),
    ValueError,
    r"jaxinit\.variance_scaling: `in_axis`=\(0,\) and `batch_axis`=\(0,\) share axis",
  ),
  (
    lambda: jaxinit.lecun_normal(in_axis=0, out_axis=(0, 1))(KEY, (4, 5, 6)),
    ValueError,
    r"jaxinit\.lecun_normal: `in_axis`=\(0,\) and `out_axis`=\(0, 1\) share axis \[0\]",
  ),
  (
    lambda: jaxinit.he_normal(in_axis=0, out_axis=0)(KEY, (4,)),
    ValueError,
    r"jaxinit\.he_normal: `in_axis`=\(0,\) and `out_axis`=\(0,\) share axis",
  ),
  (
    lambda: jaxinit.constant([1.0, 2.0])(KEY, (2, 3)),
    ValueError,
    r"jaxinit\.constant: `value` of shape \(2,\) does not broadcast to the shape \(2, 3\)",
  ),
  (
    lambda: jaxinit.constant(1j)(KEY, (2,)),
    TypeError,
    r"jaxinit\.constant: `value` is complex but the requested dtype is float32",
  ),
  (
    lambda: jaxinit.truncated_normal(lower=-1.0, upper=2.0)(KEY, (2,), jnp.complex64),
    ValueError,
    r"jaxinit\.truncated_normal: complex draws are truncated in modulus, .* need symmetric bounds",
  ),
  (
    lambda: jaxinit.normal()(KEY, (5, 3), None, NamedSharding(jax.make_mesh((8,), ("x",)), P("x"))),
    ValueError,
    r"jaxinit\.normal: `out_sharding` .* cannot shard the shape \(5, 3\)",
  ),
  (
    lambda: jaxinit.orthogonal()(
      KEY, (8, 4), None, NamedSharding(jax.make_mesh((2, 4), ("a", "b")), P(None, None, "a"))
    ),
    ValueError,
    r"jaxinit\.orthogonal: `out_sharding` P\(None, None, 'a'\) has 3 entries, more than the 2 axes of the shape \(8, 4\)",
  ),
  (
    lambda: jaxinit.normal()(KEY, (2,), None, "x"),
    TypeError,
    r"jaxinit\.normal: `out_sharding` must be a jax\.sharding\.Sharding",
  ),
  (
    lambda: jaxinit.zero_hadamard()(KEY, (4,)),
    ValueError,
    r"jaxinit\.zero_hadamard: needs a shape with at least 2 dimensions .* got \(4,\)",
  ),
  (
    lambda: jaxinit.zero_hadamard(in_axis=0, out_axis=2)(KEY, (4, 5)),
    ValueError,
    r"jaxinit\.zero_hadamard: `out_axis`=2 is out of range for the 2-D shape \(4, 5\)",
  ),
  (
    lambda: jaxinit.zero_hadamard(batch_axis=0)(KEY, (4, 5)),
    ValueError,
    r"jaxinit\.zero_hadamard: `in_axis`=-2, `out_axis`=-1 and `batch_axis`=\(0,\) must name different axes",
  ),
  (
    lambda: jaxinit.spectral()(KEY, (7,)),
    ValueError,
    r"jaxinit\.spectral: needs a shape with at least 2 dimensions \(a matrix\), got \(7,\)",
  ),
  (
    lambda: jaxinit.spectral(in_axis=0, out_axis=1)(KEY, (3, 4), None, "s"),
    TypeError,
    r"jaxinit\.spectral: `out_sharding` must be a jax\.sharding\.Sharding",
  ),
  (
    lambda: jaxinit.spectral(in_axis=0, out_axis=-2)(KEY, (4, 5)),
    ValueError,
    r"jaxinit\.spectral: `in_axis`=\(0,\) and `out_axis`=\(0,\) share axis \[0\] of shape \(4, 5\)",
  ),
  (
    lambda: jaxinit.zero_rows(rows=5)(KEY, (5, 3)),
    ValueError,
    r"jaxinit\.zero_rows: `rows`=\(5,\) are not all indices of axis 0 \(of size 5\) of the shape \(5, 3\)",
  ),
  (
    lambda: jaxinit.zero_rows(axis=1)(KEY, (5,)),
    ValueError,
    r"jaxinit\.zero_rows: `axis`=1 is out of range for the 1-D shape \(5,\)",
  ),
  (
    lambda: jaxinit.zero_rows(jaxinit.uniform())(KEY, (5,), jnp.complex64),
    TypeError,
    r"jaxinit\.zero_rows: `dtype` complex64 is complex",
  ),
]


@pytest.mark.parametrize(
  "call,exc,pattern",
  CALL_ERRORS,
  ids=[f"{i}-{p.split(':')[0]}" for i, (_, _, p) in enumerate(CALL_ERRORS)],
)
def test_call_errors(call, exc, pattern):
  with pytest.raises(exc, match=pattern):
    call()


# Error tests live here and, for the orthogonal family and the structured initializers,
# beside their other tests.
ERROR_TEST_TEXT = "".join(
  (pathlib.Path(__file__).parent / f).read_text()
  for f in ("test_errors.py", "test_orthogonal.py", "test_structured.py")
)


@pytest.mark.parametrize("name", registry.names(include_aliases=False))
def test_every_factory_argument_has_an_error_test(name):
  """Each registered initializer, and each of its arguments, appears in an error test."""
  cls = registry.lookup(name)
  # `dtype`, which every initializer has, is swept by the test below
  fields = [f.name for f in dataclasses.fields(cls) if f.name != "dtype"]
  if fields:
    assert f"jaxinit\\.{name}:" in ERROR_TEST_TEXT, f"no error test for jaxinit.{name}"
  for field in fields:
    assert f"`{field}`" in ERROR_TEST_TEXT, f"no error test names the argument `{field}` of {name}"


@pytest.mark.parametrize("name", registry.names(include_aliases=False))
def test_factory_dtype_is_checked_when_the_factory_is_called(name):
  cls = registry.lookup(name)
  example = CASES[name][0][0]
  with pytest.raises(
    TypeError, match=rf"jaxinit\.{name}: `dtype` must be a floating-point.*got int32"
  ):
    jaxinit.get(example, dtype="int32")
  if not cls.supports_complex:
    with pytest.raises(TypeError, match=rf"jaxinit\.{name}: `dtype` complex64 is complex"):
      jaxinit.get(example, dtype="complex64")
