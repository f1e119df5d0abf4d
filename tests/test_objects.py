"""Initializer objects: repr like the factory call, equality and hashing by
configuration, immutability, pickling, static jit arguments without retracing,
lookup by name and JSON serialization."""

import dataclasses
import json
import pickle

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
