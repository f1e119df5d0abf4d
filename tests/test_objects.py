"""Initializer objects: repr like the factory call, equality and hashing by
configuration, immutability, pickling, static jit arguments without retracing,
lookup by name and JSON serialization."""

import contextlib
import dataclasses
import json
import math
import pickle
import re
import signal
import tracemalloc
from decimal import Decimal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cases import CASES, SHAPES
from numpy import array, float32, float64

import jaxinit
from jaxinit._src import registry

EXAMPLES = [init for examples, _, _ in CASES.values() for init in examples] + [
  jaxinit.constant(np.arange(6.0).reshape(2, 3)),
  jaxinit.constant(np.array([1 + 2j, 3 - 1j], np.complex64)),
  jaxinit.constant(1 + 2j),
  jaxinit.he_normal(in_axis=(0, 1), out_axis=-1, batch_axis=2),
]
IDS = [repr(i)[:50] for i in EXAMPLES]


@pytest.mark.parametrize("init", EXAMPLES, ids=IDS)
def test_repr_reads_like_the_factory_call(init):
  text = repr(init)
  assert text.startswith(f"{init.name}(")
  rebuilt = eval(
    text,
    {
      **vars(jaxinit),
      "array": array,
      "float32": float32,
      "float64": float64,
      "complex64": np.complex64,
    },
  )
  assert rebuilt == init
  assert hash(rebuilt) == hash(init)


def test_repr_examples():
  assert repr(jaxinit.he_normal(mode="fan_out")) == "he_normal(mode='fan_out')"
  assert repr(jaxinit.he_normal()) == "he_normal()"
  assert repr(jaxinit.kaiming_uniform(negative_slope=5**0.5)) == (
    "he_uniform(negative_slope=2.23606797749979)"
  )
  assert repr(jaxinit.normal(0.02)) == "normal(stddev=0.02)"
  assert repr(jaxinit.constant(-7)) == "constant(value=-7)"
  assert repr(jaxinit.variance_scaling(2.0, "fan_avg", "uniform", batch_axis=0)) == (
    "variance_scaling(scale=2.0, mode='fan_avg', distribution='uniform', batch_axis=(0,))"
  )


@pytest.mark.parametrize("init", EXAMPLES, ids=IDS)
def test_pickle_roundtrip(init):
  again = pickle.loads(pickle.dumps(init))
  assert again == init and hash(again) == hash(init) and type(again) is type(init)


def test_unpickled_initializer_draws_the_same_values():
  init = jaxinit.he_uniform(negative_slope=0.3, mode="fan_out")
  again = pickle.loads(pickle.dumps(init))
  key = jax.random.key(1)
  np.testing.assert_array_equal(again(key, (3, 3, 4, 6)), init(key, (3, 3, 4, 6)))


@pytest.mark.parametrize("init", EXAMPLES, ids=IDS)
def test_json_serialization_roundtrip(init):
  config = jaxinit.serialize(init)
  text = json.dumps(config)  # JSON-able
  again = jaxinit.deserialize(json.loads(text))
  assert again == init
  assert jaxinit.get(json.loads(text)) == init
  assert registry.lookup(config["name"]) is type(init)


def test_equality_and_hashing_by_configuration():
  assert jaxinit.he_normal() == jaxinit.he_normal(mode="fan_in")
  assert jaxinit.he_normal() == jaxinit.kaiming_normal()
  assert jaxinit.normal(1) == jaxinit.normal(1.0)  # numbers are normalized
  assert jaxinit.he_normal(in_axis=[0]) == jaxinit.he_normal(in_axis=(0,))
  assert jaxinit.variance_scaling(batch_axis=0) == jaxinit.variance_scaling(batch_axis=(0,))
  assert jaxinit.he_normal() != jaxinit.he_normal(mode="fan_out")
  assert jaxinit.he_normal() != jaxinit.he_uniform()
  # same fields, different initializers
  assert jaxinit.lecun_uniform() != jaxinit.variance_scaling(1.0, "fan_in", "uniform")
  assert len({jaxinit.he_normal(), jaxinit.kaiming_normal(), jaxinit.he_normal(mode="fan_in")}) == 1


def test_immutable():
  init = jaxinit.he_normal()
  with pytest.raises(dataclasses.FrozenInstanceError):
    init.mode = "fan_out"


def test_aliases_are_the_same_factories():
  assert jaxinit.xavier_normal is jaxinit.glorot_normal
  assert jaxinit.xavier_uniform is jaxinit.glorot_uniform
  assert jaxinit.kaiming_normal is jaxinit.he_normal
  assert jaxinit.kaiming_uniform is jaxinit.he_uniform


def test_static_jit_argument_does_not_retrace():
  @jax.jit
  def make(key):
    return key

  @chex.assert_max_traces(n=1)
  def draw(init, key):
    return init(key, (8, 8))

  jitted = jax.jit(draw, static_argnums=0)
  for _ in range(3):
    jitted(jaxinit.he_normal(), jax.random.key(0))  # a new but equal object each time
    jitted(jaxinit.he_normal(mode="fan_in"), jax.random.key(1))


def test_one_compilation_per_configuration():
  """Equal initializers share the compiled draw (the config is the cache key)."""
  from jaxinit._src import draw

  before = draw._draw_jit._cache_size()
  for _ in range(3):
    jaxinit.glorot_uniform(gain=1.2345)(jax.random.key(0), (5, 7))
  assert draw._draw_jit._cache_size() == before + 1


def test_get_forms():
  he = jaxinit.he_normal()
  assert jaxinit.get("he_normal") == he
  assert jaxinit.get("kaiming_normal") == he
  assert jaxinit.get("HeNormal") == he  # Keras class names
  assert jaxinit.get("he_normal", mode="fan_out") == jaxinit.he_normal(mode="fan_out")
  assert jaxinit.get({"name": "he_normal", "mode": "fan_out"}) == jaxinit.he_normal(mode="fan_out")
  assert jaxinit.get({"name": "normal"}, stddev=0.1) == jaxinit.normal(0.1)
  assert jaxinit.get(he) is he
  assert jaxinit.get(he, mode="fan_avg") == jaxinit.he_normal(mode="fan_avg")
  keras = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_in", "distribution": "uniform", "seed": None},
  }
  assert jaxinit.get(keras) == jaxinit.variance_scaling(2.0, "fan_in", "uniform")
  closure = jax.nn.initializers.lecun_normal()
  assert jaxinit.get(closure) is closure


def test_serialize_format():
  d = jaxinit.serialize(jaxinit.he_normal(mode="fan_out", batch_axis=0))
  assert d == {
    "name": "he_normal",
    "negative_slope": 0.0,
    "mode": "fan_out",
    "nonlinearity": "leaky_relu",
    "truncated": True,
    "in_axis": -2,
    "out_axis": -1,
    "batch_axis": [0],
    "dtype": None,
  }
  assert jaxinit.serialize(jaxinit.constant(1 - 2j)) == {
    "name": "constant",
    "value": {"complex": [1.0, -2.0]},
    "dtype": None,
  }


def test_serialize_rejects_callables_in_arguments():
  """Nothing in a config may be a Python object without a JSON form."""
  init = jaxinit.constant(2.0)
  object.__setattr__(init, "value", jnp.tanh)  # bypasses validation on purpose
  with pytest.raises(TypeError, match=r"jaxinit\.serialize: argument 'value' holds"):
    jaxinit.serialize(init)


KEY = jax.random.key(0)


@pytest.mark.parametrize("name", registry.names(include_aliases=False))
def test_factory_dtype_is_the_default_and_a_call_dtype_wins(name):
  """Every initializer takes ``dtype=`` as jax's do: the dtype of a call that gives none."""
  example, families, _ = CASES[name]
  shape = SHAPES[families[0]] if "dense" not in families else SHAPES["dense"]
  init = jaxinit.get(example[0], dtype=jnp.bfloat16)
  assert init.dtype == "bfloat16" and init == jaxinit.get(example[0], dtype="bfloat16")
  assert repr(init).endswith("dtype='bfloat16')")
  assert init(KEY, shape).dtype == jnp.bfloat16
  assert init(KEY, shape, jnp.float32).dtype == jnp.float32
  assert (init(KEY, shape) == example[0](KEY, shape, jnp.bfloat16)).all()
  assert jaxinit.deserialize(jaxinit.serialize(init)) == init


# ---------------------------------------------------------------------------
# Configs are untrusted input: small hostile configs fail fast, in bounded memory,
# with an error naming the function and the argument.
# ---------------------------------------------------------------------------


def _nested_sparse(levels):
  d = cur = {}
  for _ in range(levels):
    cur["name"] = "sparse"
    cur["values"] = {}
    cur = cur["values"]
  cur["name"] = "normal"
  return d


def _nested_dict(levels):
  d = 0
  for _ in range(levels):
    d = {"v": d}
  return d


def _nested_list(levels):
  v = 0.0
  for _ in range(levels):
    v = [v]
  return v


def _array(**fields):
  return {"name": "constant", "value": fields}


# (config, exception, regex). Every config's JSON text is under 1 KB.
HOSTILE_CONFIGS = [
  # dtype strings that numpy would turn into huge or non-numeric dtypes
  *[
    (
      _array(array=[], dtype=dt),
      ValueError,
      r"jaxinit\.get: argument 'value': an array's dtype must be one of float16, .*, got "
      + re.escape(repr(dt[:40])),
    )
    for dt in [
      "(1000,1000,20)f8",
      "(4000,4000,125)f8",
      "V100000000",
      "U9999",
      "O",
      "<f4",
      ">f8",
      "f8",
      "float64,float64",
      "M8[s]",
      "bool",
      "S1000000",
      "float128",
      "x" * 200,
    ]
  ],
  (_array(array=1, dtype=7), ValueError, r"argument 'value': an array's dtype must be one of"),
  # declared shapes the data do not back
  (
    _array(array=0, shape=[10**9]),
    ValueError,
    r"argument 'value': an array of shape .* has 1000000000 elements;"
    r" config arrays hold at most 1048576",
  ),
  (
    _array(array=[], shape=[2**40, 2**40]),
    ValueError,
    r"argument 'value': an array of shape .* config arrays hold at most",
  ),
  (
    _array(array=[1, 2], shape=[3]),
    ValueError,
    r"argument 'value': the array data must be nested lists of numbers of shape \(3,\)",
  ),
  (
    _array(array=[[1, 2], [3]]),
    ValueError,
    r"argument 'value': the array data must be nested lists of numbers of shape \(2, 2\)",
  ),
  (
    _array(array=["a"]),
    ValueError,
    r"argument 'value': the array data must be nested lists of numbers",
  ),
  (
    _array(array=[True]),
    ValueError,
    r"argument 'value': the array data must be nested lists of numbers",
  ),
  (
    _array(array=_nested_list(40)),
    ValueError,
    r"argument 'value': an array's `shape` must be a list of at most 32",
  ),
  (
    _array(array=[1], shape=[-1]),
    ValueError,
    r"argument 'value': an array's `shape` must be a list of at most 32 non-negative",
  ),
  (
    _array(array=[1], shape="big"),
    ValueError,
    r"argument 'value': an array's `shape` must be a list",
  ),
  (
    _array(array=[1], dtype="float32", complex=True),
    ValueError,
    r"argument 'value': 'complex': true goes with a complex dtype",
  ),
  (
    _array(array=[1], dtype="complex64"),
    ValueError,
    r"argument 'value': 'complex': true goes with a complex dtype",
  ),
  (
    _array(array=[1], dtype="int8", extra=1),
    ValueError,
    r"argument 'value': an array has the keys 'array', 'dtype', 'shape',"
    r" 'complex', got also 'extra'",
  ),
  (
    _array(array=[300], dtype="int8"),
    ValueError,
    r"argument 'value': the array data do not fit the dtype int8",
  ),
  (
    _array(array=[2**63], dtype="int64"),
    ValueError,
    r"argument 'value': the array data do not fit the dtype int64",
  ),
  # nesting and size
  (
    {"name": "normal", "mean": _nested_dict(120)},
    ValueError,
    r"jaxinit\.get: argument 'mean' is nested more than 64 levels deep",
  ),
  (
    {"name": "constant", "value": _nested_list(400)},
    ValueError,
    r"jaxinit\.get: argument 'value' is nested more than 64 levels deep",
  ),
  (
    {"name": "x" * 900},
    ValueError,
    r"jaxinit\.get: argument 'name' holds a string of 900 characters"
    r" \('x{40}'\.\.\.\); config strings are at most 256",
  ),
  (
    {"name": "y" * 200},
    ValueError,
    r"jaxinit\.get: unknown initializer 'y{40}'\.\.\. \(200 characters; names are at most 64\)",
  ),
  (
    {"name": "normal", "mode": "z" * 500},
    ValueError,
    r"argument 'mode' holds a string of 500 characters",
  ),
  (
    {"name": "normal", "k" * 80: 1},
    ValueError,
    r"jaxinit\.get: the config has a key longer than 64 characters: 'k{40}'\.\.\.",
  ),
  (
    {"name": "normal", **{f"a{i}": 0 for i in range(60)}},
    TypeError,
    r"jaxinit\.get: normal got unexpected argument\(s\) 'a0', 'a1', 'a10',"
    r" 'a11', 'a12' \(and 55 more\); it takes stddev, mean",
  ),
  ({"name": 5}, TypeError, r"jaxinit\.get: an initializer name must be a string, got 5"),
  ({"nme": "normal"}, ValueError, r"jaxinit\.get: a config dict needs a 'name' key"),
  # numbers
  (
    {"name": "normal", "stddev": 10**300},
    ValueError,
    r"jaxinit\.get: argument 'stddev' holds an integer of 997 bits;"
    r" integers in a config must lie in \[-2\*\*63, 2\*\*64\)",
  ),
  ({"name": "normal", "stddev": math.inf}, ValueError, r"jaxinit\.normal: `stddev` must be finite"),
  (
    {"name": "constant", "value": {"complex": ["1", 2]}},
    ValueError,
    r"argument 'value': a complex number is \{'complex': \[real, imag\]\}",
  ),
  (
    {"name": "constant", "value": {"complex": [1, 2], "x": 1}},
    ValueError,
    r"cannot decode argument 'value': a dict value is an array",
  ),
  # Keras configs
  (
    {"class_name": "MyInit", "config": {}},
    ValueError,
    r"jaxinit\.get: unknown Keras initializer class 'MyInit'; Keras 3's built-in classes are Zeros",
  ),
  (
    {"class_name": "RandomNormal", "config": {}, "module": "evil.mod", "registered_name": "e>x"},
    ValueError,
    r"jaxinit\.get: the Keras config of 'RandomNormal' comes from module 'evil\.mod'",
  ),
  (
    {"class_name": "RandomNormal", "config": {}, "registered_name": "Custom>Init"},
    ValueError,
    r"registered as 'Custom>Init'\), not Keras's built-in initializers",
  ),
  (
    {"class_name": "STFT", "config": {}},
    ValueError,
    r"jaxinit\.get: Keras's STFT initializer has no jaxinit equivalent",
  ),
  (
    {"class_name": "RandomNormal", "config": [1]},
    TypeError,
    r"jaxinit\.get: Keras RandomNormal: `config` must be a dict",
  ),
  (
    {"class_name": "RandomNormal", "config": {"sttdev": 1}},
    TypeError,
    r"jaxinit\.get: Keras RandomNormal got unexpected argument\(s\)"
    r" 'sttdev'; it takes mean, stddev \(and seed\)",
  ),
  (
    {"class_name": "RandomNormal", "config": {}, "shared_object_id": 1},
    ValueError,
    r"jaxinit\.get: a Keras config has the keys 'module', 'class_name',"
    r" 'config', 'registered_name', got also 'shared_object_id'",
  ),
  (
    {"class_name": "VarianceScaling", "config": {"mode": "fan_geo_avg"}},
    ValueError,
    r"jaxinit\.get: Keras VarianceScaling: `mode` must be one of 'fan_in',"
    r" 'fan_out', 'fan_avg', got 'fan_geo_avg'",
  ),
  (
    {"class_name": "VarianceScaling", "config": {"distribution": 3}},
    ValueError,
    r"jaxinit\.get: Keras VarianceScaling: `distribution` must be one of",
  ),
  (
    {"class_name": "HeNormal", "config": {"input_axes": [10**6], "output_axes": [0]}},
    ValueError,
    r"jaxinit\.get: Keras HeNormal: `input_axes` must be null or a list of 1 to 32 axis indices",
  ),
  (
    {"class_name": "HeNormal", "config": {"input_axes": [0] * 40, "output_axes": [1]}},
    ValueError,
    r"Keras HeNormal: `input_axes` must be null or a list of 1 to 32",
  ),
  (
    {
      "class_name": "Constant",
      "config": {
        "value": {"class_name": "__numpy__", "config": {"value": [1], "dtype": "V100000000"}}
      },
    },
    ValueError,
    r"jaxinit\.get: argument 'value': an array's dtype must be one of",
  ),
  (
    {
      "class_name": "Constant",
      "config": {"value": {"class_name": "__lambda__", "config": {"code": "x"}}},
    },
    ValueError,
    r"jaxinit\.get: Keras Constant: `value` must be a number or a serialized array",
  ),
  (
    {"class_name": "x" * 100, "config": {}},
    ValueError,
    r"jaxinit\.get: unknown initializer 'x{40}'\.\.\. \(100 characters",
  ),
]


def _json_size(config):
  return len(json.dumps(config))


@contextlib.contextmanager
def _watchdog(seconds=60):
  """Turns a hang into a failure (not a speed assertion: the bound is far above the time)."""

  def alarm(signum, frame):
    raise TimeoutError(f"still running after {seconds} s")

  old = signal.signal(signal.SIGALRM, alarm)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize(
  "config,exc,pattern",
  HOSTILE_CONFIGS,
  ids=[f"{i}-{_json_size(c)}B" for i, (c, _, _) in enumerate(HOSTILE_CONFIGS)],
)
@pytest.mark.parametrize("entry", ["get", "deserialize"])
def test_hostile_configs_fail_fast_in_bounded_memory(config, exc, pattern, entry):
  assert _json_size(config) < 1024
  text = json.dumps(config)
  if entry == "deserialize":
    pattern = pattern.replace(r"jaxinit\.get:", r"jaxinit\.deserialize:")
  tracemalloc.start()
  try:
    with _watchdog(), pytest.raises(exc, match=pattern):
      getattr(jaxinit, entry)(json.loads(text))
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_hostile_python_objects():
  """Shapes a JSON text cannot have: cycles, shared sub-lists, non-string keys."""
  cycle = {"name": "sparse"}
  cycle["values"] = cycle
  with pytest.raises(
    ValueError, match=r"argument 'values' is nested more than 64 levels deep \(or holds itself\)"
  ):
    jaxinit.get(cycle)
  row = [0.5] * 1000
  shared = {"name": "constant", "value": {"array": [row] * 2000, "dtype": "float64"}}
  tracemalloc.start()
  try:
    with pytest.raises(
      ValueError, match=r"has 2000000 elements; config arrays hold at most 1048576"
    ):
      jaxinit.get(shared)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 4 * 2**20
  many = {"name": "constant", "value": [row] * 3000}  # 3M values: over MAX_CONFIG_ITEMS
  with pytest.raises(ValueError, match=r"jaxinit\.get: the config holds more than 2097152 values"):
    jaxinit.get(many)
  with pytest.raises(TypeError, match=r"jaxinit\.get: the config has a non-string key"):
    jaxinit.get({"name": "normal", 1: 2})
  # the 1,000 nested initializers (RecursionError before), larger than 1 KB
  with pytest.raises(ValueError, match=r"argument 'values' is nested more than 64 levels deep"):
    jaxinit.get(_nested_sparse(1000))


def test_decimal_values_are_floats():
  """json.loads(parse_float=Decimal) gives Decimals: they are read as floats, never complex."""
  config = json.loads('{"name": "constant", "value": 0.25}', parse_float=Decimal)
  init = jaxinit.get(config)
  assert init == jaxinit.constant(0.25) and isinstance(init.value, float)
  config = json.loads('{"name": "normal", "stddev": 0.02, "mean": -1.5}', parse_float=Decimal)
  assert jaxinit.deserialize(config) == jaxinit.normal(0.02, -1.5)
  array = json.loads('{"name": "constant", "value": {"array": [0.5, 1.5]}}', parse_float=Decimal)
  assert jaxinit.get(array) == jaxinit.constant(np.array([0.5, 1.5]))
  z = json.loads('{"name": "constant", "value": {"complex": [0.5, -1.5]}}', parse_float=Decimal)
  assert jaxinit.get(z) == jaxinit.constant(0.5 - 1.5j)
  huge = json.loads('{"name": "normal", "stddev": 1e999999}', parse_float=Decimal)
  with pytest.raises(ValueError, match=r"jaxinit\.normal: `stddev` must be finite"):
    jaxinit.get(huge)


@pytest.mark.parametrize(
  "value",
  [
    np.zeros((0, 3)),
    np.zeros((3, 0), np.float32),
    np.zeros((2, 0, 4), jnp.bfloat16),
    np.zeros((0,), np.int32),
    np.zeros((0, 2), np.complex64),
    np.arange(6, dtype=np.int16).reshape(3, 2, 1),
    np.array([[1.5, -2.25]], jnp.bfloat16),
    np.array([1 + 2j, -3.5j], np.complex128),
  ],
  ids=lambda v: f"{v.dtype}{v.shape}",
)
def test_array_values_round_trip_with_shape_and_dtype(value):
  init = jaxinit.constant(value)
  config = jaxinit.serialize(init)
  assert config["value"]["shape"] == list(value.shape)
  again = jaxinit.deserialize(json.loads(json.dumps(config)))
  assert again == init
  assert again.value.shape == value.shape and again.value.dtype == value.dtype


def test_array_values_without_shape_still_decode():
  """Configs written before the shape was recorded (non-empty arrays) read as before."""
  old = {"name": "constant", "value": {"array": [[1.0, 2.0]], "dtype": "float32"}}
  assert jaxinit.get(old) == jaxinit.constant(np.array([[1.0, 2.0]], np.float32))


def test_serialize_refuses_unknown_format():
  with pytest.raises(
    ValueError, match=r"jaxinit\.serialize: `format` must be one of 'jaxinit', 'keras', got 'yaml'"
  ):
    jaxinit.serialize(jaxinit.normal(), format="yaml")


def test_keras_names_and_configs_without_keras():
  """The Keras 3 forms get reads (tests/test_keras.py checks them against Keras itself)."""
  keras_config = {
    "module": "keras.initializers",
    "class_name": "RandomNormal",
    "config": {"seed": 7, "mean": 0.5, "stddev": 0.1},
    "registered_name": None,
  }
  assert jaxinit.get(keras_config) == jaxinit.normal(0.1, 0.5)
  assert jaxinit.get(keras_config, stddev=0.3) == jaxinit.normal(0.3, 0.5)
  assert jaxinit.get("RandomUniform") == jaxinit.uniform(-0.05, 0.05)
  assert jaxinit.get("one") == jaxinit.ones() and jaxinit.get("zero") == jaxinit.zeros()
  assert jaxinit.get("OrthogonalInitializer", scale=2.0) == jaxinit.orthogonal(2.0)
  assert jaxinit.get({"class_name": "IdentityInitializer", "config": {"gain": 3.0}}) == (
    jaxinit.identity(3.0)
  )
  assert jaxinit.get({"class_name": "Constant", "config": {}}) == jaxinit.constant(0.0)
  # a Keras name in jaxinit's form: Keras's defaults, then jaxinit's arguments
  assert jaxinit.get({"name": "RandomNormal", "stddev": 0.1}) == jaxinit.normal(0.1)
  assert jaxinit.deserialize({"name": "Constant"}) == jaxinit.constant(0.0)


@pytest.mark.parametrize(
  "init", [jaxinit.he_normal(), jaxinit.normal(0.3, 1.0), jaxinit.orthogonal(2.0)], ids=repr
)
def test_keras_config_round_trips_without_keras(init):
  assert jaxinit.get(jaxinit.serialize(init, format="keras")) == init
