"""Initializers from names and configs, and back: ``get``, ``serialize``, ``deserialize``.

Configs are untrusted input (experiment files, command lines). Before anything is
built, a config is walked once, without recursion, and refused when it is larger
or deeper than the limits below; numbers, strings and arrays are then decoded into
plain, bounded values (arrays only of the plain numeric dtypes in ``DTYPES``, never a
dtype string handed to numpy), and every message echoes at most a short prefix of
what it refuses. Keras 3 configs are translated by ``keras_configs``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxinit._src import keras_configs
from jaxinit._src.base import Initializer
from jaxinit._src.checks import check_choice, fail
from jaxinit._src.frozen import FrozenArray
from jaxinit._src.keras_configs import short
from jaxinit._src.registry import lookup, names

#: The most values (dict entries, list items, numbers, strings) one config may hold.
MAX_CONFIG_ITEMS = 2**21
#: The deepest nesting of dicts and lists in a config.
MAX_CONFIG_DEPTH = 64
#: The most elements of an array argument (a ``constant`` value).
MAX_ARRAY_ELEMENTS = 2**20
#: The most dimensions of an array argument.
MAX_ARRAY_NDIM = 32
#: The longest string value, and the longest initializer name or argument name.
MAX_STRING = 256
MAX_NAME = 64
#: Integers in a config lie in [-2**63, 2**64) (any int64 or uint64).
INT_RANGE = (-(2**63), 2**64)

#: The dtype names an array in a config may have (no other string reaches numpy).
DTYPES: dict[str, np.dtype] = {
  name: np.dtype(getattr(jnp, name))
  for name in (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
  )
}

_KERAS_KEYS = ("module", "class_name", "config", "registered_name")
_ARRAY_KEYS = ("array", "dtype", "shape", "complex")
FORMATS = ("jaxinit", "keras")


# ---------------------------------------------------------------------------
# The size and depth bound, checked before anything is decoded.
# ---------------------------------------------------------------------------


def _check_leaf(fn: str, arg: str, value: Any) -> None:
  if isinstance(value, str) and len(value) > MAX_STRING:
    raise fail(
      fn,
      f"argument {arg!r} holds a string of {len(value)} characters ({short(value)}); "
      f"config strings are at most {MAX_STRING} characters.",
    )
  is_int = isinstance(value, int) and not isinstance(value, bool)
  if is_int and not INT_RANGE[0] <= value < INT_RANGE[1]:
    raise fail(
      fn,
      f"argument {arg!r} holds {short(value)}; integers in a config must lie in [-2**63, 2**64).",
    )


def _key_error(fn: str, k: Any) -> Exception:
  if not isinstance(k, str):
    return fail(
      fn, f"the config has a non-string key {short(k)}; keys are argument names.", TypeError
    )
  return fail(
    fn,
    f"the config has a key longer than {MAX_NAME} characters: {short(k)}; keys are argument names.",
  )


_PLAIN = (float, bool, type(None))


def check_config_bounds(fn: str, config: Any) -> None:
  """Refuses a config with more than ``MAX_CONFIG_ITEMS`` values or deeper than
  ``MAX_CONFIG_DEPTH`` (cycles included), too-long strings or keys, or huge integers.

  Iterative, and it stops at the first value over a limit, so its time and memory are
  bounded whatever the input (shared sub-lists count once per reference). Numbers in
  lists are checked in place (no stack entry each), so 2**20 values take a fraction of a
  second.
  """
  stack: list[tuple[Any, int, str]] = [(config, 0, "config")]
  count = 0
  while stack:
    node, depth, arg = stack.pop()
    if depth > MAX_CONFIG_DEPTH:
      raise fail(
        fn,
        f"argument {arg!r} is nested more than {MAX_CONFIG_DEPTH} levels deep "
        "(or holds itself); refusing the config.",
      )
    if isinstance(node, Mapping):
      for k in node:
        if not isinstance(k, str) or len(k) > MAX_NAME:
          raise _key_error(fn, k)
    elif not isinstance(node, (list, tuple)):
      _check_leaf(fn, arg, node)
      continue
    count += len(node)
    if count > MAX_CONFIG_ITEMS:
      raise fail(fn, f"the config holds more than {MAX_CONFIG_ITEMS} values; refusing it.")
    if isinstance(node, Mapping):
      stack.extend((v, depth + 1, k if depth == 0 else arg) for k, v in node.items())
      continue
    for v in node:  # numbers are checked in place, containers pushed
      if type(v) not in _PLAIN:
        if isinstance(v, (Mapping, list, tuple)):
          stack.append((v, depth + 1, arg))
        else:
          _check_leaf(fn, arg, v)


# ---------------------------------------------------------------------------
# get / deserialize
# ---------------------------------------------------------------------------


def _build(cls: type[Initializer], kwargs: Mapping[str, Any], fn: str) -> Initializer:
  allowed = [f.name for f in cls.arguments()]
  unknown = [k for k in kwargs if k not in allowed]
  missing = [
    f.name
    for f in cls.arguments()
    if f.default is dataclasses.MISSING
    and f.default_factory is dataclasses.MISSING
    and f.name not in kwargs
  ]
  if missing and not unknown:
    raise fail(fn, f"{cls.name} needs the argument(s) {', '.join(missing)}.", TypeError)
  if unknown:
    args = ", ".join(allowed) if allowed else "no arguments"
    shown = ", ".join(short(k) for k in sorted(unknown)[:5])
    more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
    raise fail(
      fn,
      f"{cls.name} got unexpected argument(s) {shown}{more}; it takes {args}.",
      TypeError,
    )
  return cls(**kwargs)


def _check_name(fn: str, name: Any, what: str = "an initializer name") -> str:
  if not isinstance(name, str):
    raise fail(fn, f"{what} must be a string, got {short(name)}.", TypeError)
  if len(name) > MAX_NAME:
    raise fail(
      fn,
      f"unknown initializer {short(name)} ({len(name)} characters; names are at most {MAX_NAME}).",
    )
  return name


def _resolve(name: str, fn: str) -> tuple[type[Initializer], dict[str, Any]]:
  """The class of a jaxinit name or alias, else of a Keras 3 class name or alias (with the
  arguments of Keras's defaults), else jaxinit's lookup error (close matches listed)."""
  if name not in names() and keras_configs.is_keras_name(name):
    init = _from_keras({"class_name": name, "config": {}}, {}, fn)
    return type(init), init.config()
  return lookup(name, fn), {}


def get(identifier: Any, **kwargs: Any) -> Any:
  """Returns an initializer from a name, a config dict, or an initializer.

  Configs are untrusted input: a dict is refused, with a clear error and before
  anything is built, when it holds more than ``MAX_CONFIG_ITEMS`` (2**21) values, is
  nested deeper than ``MAX_CONFIG_DEPTH`` (64), has a string longer than 256
  characters, a name longer than 64, or an integer outside [-2**63, 2**64); an array
  argument (``{"array": [...], "dtype": ..., "shape": [...]}``) may have one of the
  plain numeric dtypes in ``DTYPES`` (float16/32/64, bfloat16, complex64/128,
  int8..64, uint8..64), at most ``MAX_ARRAY_ELEMENTS`` (2**20) elements, and its data
  must match its shape. ``Decimal`` values (``json.loads(..., parse_float=Decimal)``)
  are read as floats.

  Keras 3: ``get`` takes what Keras writes, ``{"module": "keras.initializers",
  "class_name": ..., "config": {...}, "registered_name": None}`` (and the older
  ``{"class_name", "config"}``), for every built-in Keras 3 class and alias
  (``RandomNormal``, ``OrthogonalInitializer``, ``one``, ...), with Keras's meaning of
  each argument (``gain``, ``untruncated_normal``, ``input_axes``/``output_axes``),
  and gives the initializer that draws Keras's distribution; the Keras seed is
  ignored (jaxinit draws from the key it is called with). The mapping table is in
  ``jaxinit/_src/keras_configs.py``; ``STFT`` and custom classes are refused.

  Args:
    identifier: one of

      - a registered name (``"he_normal"``, an alias such as ``"kaiming_normal"``,
        or a Keras class name such as ``"HeNormal"`` or ``"RandomNormal"``);
      - a dict ``{"name": ..., **arguments}`` as made by :func:`serialize`, or a
        Keras config as above;
      - a jaxinit initializer (returned as is, or rebuilt with ``kwargs``
        overriding its arguments);
      - any other callable following the ``init(key, shape, dtype)`` protocol
        (for example a ``jax.nn.initializers`` closure), returned unchanged.
    **kwargs: jaxinit factory arguments (override those of a name, dict or
      initializer).

  Returns:
    An initializer.

  Raises:
    ValueError: an unknown name (the message lists close matches), a config over a
      limit, or a Keras configuration jaxinit has no equivalent for.
    TypeError: an argument the initializer does not take, or an identifier of
      another kind.

  Examples:
    >>> import jaxinit
    >>> jaxinit.get("he_normal", mode="fan_out")
    he_normal(mode='fan_out')
    >>> jaxinit.get({"name": "normal", "stddev": 0.02})
    normal(stddev=0.02)
    >>> jaxinit.get("GlorotUniform")
    glorot_uniform()
    >>> jaxinit.get({"module": "keras.initializers", "class_name": "Orthogonal",
    ...              "config": {"gain": 2.0, "seed": None}, "registered_name": None})
    orthogonal(scale=2.0)
  """
  if isinstance(identifier, Initializer):
    if not kwargs:
      return identifier
    return _build(type(identifier), {**identifier.config(), **kwargs}, "get")
  if isinstance(identifier, str):  # built once, with kwargs: get("constant", value=0.5)
    cls, base = _resolve(_check_name("get", identifier), "get")
    return _build(cls, {**base, **kwargs}, "get")
  if isinstance(identifier, Mapping):
    check_config_bounds("get", identifier)
    return _from_dict(identifier, kwargs, "get")
  if callable(identifier):
    if kwargs:
      raise fail(
        "get",
        "keyword arguments apply only to jaxinit initializers and names, got "
        f"{short(identifier)} with {sorted(kwargs)[:5]}.",
        TypeError,
      )
    return identifier
  raise fail(
    "get",
    "`identifier` must be an initializer name, a config dict or an initializer, "
    f"got {short(identifier)}.",
    TypeError,
  )


def _from_dict(d: Mapping[str, Any], overrides: Mapping[str, Any], fn: str) -> Initializer:
  if "name" in d:
    args = {k: v for k, v in d.items() if k != "name"}
    cls, base = _resolve(_check_name(fn, d["name"]), fn)
  elif "class_name" in d:
    return _from_keras(d, overrides, fn)
  else:
    keys = ", ".join(short(k) for k in list(d)[:8])
    raise fail(
      fn,
      f"a config dict needs a 'name' key (jaxinit) or 'class_name' and 'config' (Keras), "
      f"got keys [{keys}].",
    )
  decoded = {**base, **{k: _decode(v, fn, k) for k, v in args.items()}, **overrides}
  return _build(cls, decoded, fn)


def _from_keras(d: Mapping[str, Any], overrides: Mapping[str, Any], fn: str) -> Initializer:
  """A Keras config: ``{"module", "class_name", "config", "registered_name"}``."""
  extra = [k for k in d if k not in _KERAS_KEYS]
  if extra:
    raise fail(
      fn,
      f"a Keras config has the keys {', '.join(map(repr, _KERAS_KEYS))}, got also "
      f"{', '.join(short(k) for k in extra[:5])}.",
    )
  class_name = _check_name(fn, d["class_name"], "`class_name`")
  module, registered = d.get("module"), d.get("registered_name")
  builtin = module is None or (
    isinstance(module, str) and module.split(".")[0] in ("keras", "tf_keras", "tensorflow")
  )
  if not builtin or registered not in (None, class_name):
    raise fail(
      fn,
      f"the Keras config of {short(class_name)} comes from module {short(module)} "
      f"(registered as {short(registered)}), not Keras's built-in initializers; "
      "jaxinit knows only those.",
    )
  config = keras_configs.from_keras(class_name, d.get("config"), fn)
  if config["name"] == "constant":
    config["value"] = _keras_value(fn, config["value"])
  return _from_dict(config, overrides, fn)


def _keras_value(fn: str, value: Any) -> Any:
  """Keras's serialized tensors and numpy arrays, as jaxinit's array form."""
  if not isinstance(value, Mapping):
    return value
  if value.get("class_name") not in ("__numpy__", "__tensor__") or not isinstance(
    value.get("config"), Mapping
  ):
    raise fail(
      fn,
      f"Keras Constant: `value` must be a number or a serialized array, got {short(value)}.",
    )
  inner = value["config"]
  if not isinstance(inner.get("value"), list):  # a 0-d tensor holds a number
    return _decode_scalar(fn, "value", inner.get("value"))
  return {"array": inner["value"], "dtype": inner.get("dtype", "float32")}


def deserialize(config: Mapping[str, Any]) -> Initializer:
  """Rebuilds an initializer from :func:`serialize`'s dict (or a Keras 3 config).

  The config is untrusted input and bounded as in :func:`get`.

  Args:
    config: ``{"name": ..., **arguments}``, or a Keras 3 config ``{"module",
      "class_name", "config", "registered_name"}``.

  Returns:
    An initializer equal to the one serialized (for a Keras config, the one that
    draws the same distribution).

  Raises:
    ValueError: unknown name, malformed dict, a config over a limit.
    TypeError: unknown arguments.

  Examples:
    >>> import jaxinit
    >>> jaxinit.deserialize({"name": "truncated_normal", "stddev": 0.02})
    truncated_normal(stddev=0.02)
  """
  if not isinstance(config, Mapping):
    raise fail("deserialize", f"`config` must be a dict, got {short(config)}.", TypeError)
  check_config_bounds("deserialize", config)
  return _from_dict(config, {}, "deserialize")


# ---------------------------------------------------------------------------
# Argument values: JSON form <-> Python form.
# ---------------------------------------------------------------------------


def _decode_scalar(fn: str, arg: str, value: Any) -> Any:
  if isinstance(value, Decimal):  # json.loads(..., parse_float=Decimal)
    try:
      x = float(value)
    except (ValueError, OverflowError):
      raise fail(fn, f"argument {arg!r} holds {short(value)}, not a finite number.") from None
    return x
  return value


def _decode(value: Any, fn: str, arg: str) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_decode(v, fn, arg) for v in value)
  if isinstance(value, Mapping):
    if "array" in value:
      return _decode_array(value, fn, arg)
    if "complex" in value and len(value) == 1:
      parts = value["complex"]
      ok = isinstance(parts, (list, tuple)) and len(parts) == 2
      ok = ok and all(_is_plain_real(_decode_scalar(fn, arg, p)) for p in parts)
      if not ok:
        raise fail(
          fn,
          f"argument {arg!r}: a complex number is {{'complex': [real, imag]}}, got {short(parts)}.",
        )
      re_, im = (float(_decode_scalar(fn, arg, p)) for p in parts)
      return complex(re_, im)
    if "name" in value or "class_name" in value:
      return _from_dict(value, {}, fn)
    keys = ", ".join(short(k) for k in list(value)[:8])
    raise fail(
      fn,
      f"cannot decode argument {arg!r}: a dict value is an array {{'array', 'dtype', "
      f"'shape'}}, a complex number {{'complex'}} or an initializer {{'name'}}, got keys "
      f"[{keys}].",
    )
  return _decode_scalar(fn, arg, value)


def _is_plain_real(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _array_shape(fn: str, arg: str, data: Any, shape: Any) -> tuple[int, ...]:
  """The shape of nested lists ``data``: ``shape`` when given (it must match), else inferred."""
  if shape is None:
    inferred: list[int] = []
    node = data
    while isinstance(node, (list, tuple)) and len(inferred) <= MAX_ARRAY_NDIM:
      inferred.append(len(node))
      node = node[0] if node else None
    shape = inferred
  ok = isinstance(shape, (list, tuple)) and len(shape) <= MAX_ARRAY_NDIM
  ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
  if not ok:
    raise fail(
      fn,
      f"argument {arg!r}: an array's `shape` must be a list of at most {MAX_ARRAY_NDIM} "
      f"non-negative integers, got {short(shape)}.",
    )
  size = math.prod(shape)
  if size > MAX_ARRAY_ELEMENTS:
    raise fail(
      fn,
      f"argument {arg!r}: an array of shape {short(tuple(shape), 80)} has {size} elements; "
      f"config arrays hold at most {MAX_ARRAY_ELEMENTS}.",
    )
  _check_nested(fn, arg, data, tuple(shape), 0)
  return tuple(shape)


def _check_nested(fn: str, arg: str, node: Any, shape: tuple[int, ...], d: int) -> None:
  """Every list at depth ``d`` has length ``shape[d]``; leaves are numbers (depth <= 32)."""
  if d == len(shape):
    ok = _is_plain_real(node) or isinstance(node, Decimal)
  else:
    ok = isinstance(node, (list, tuple)) and len(node) == shape[d]
  if ok and d == len(shape) - 1:
    ok = all(_is_plain_real(x) or isinstance(x, Decimal) for x in node)
  if not ok:
    raise fail(
      fn,
      f"argument {arg!r}: the array data must be nested lists of numbers of shape "
      f"{short(shape, 80)}; found {short(node)} at depth {d}.",
    )
  if d < len(shape) - 1:
    for x in node:
      _check_nested(fn, arg, x, shape, d + 1)


def _decode_array(value: Mapping[str, Any], fn: str, arg: str) -> np.ndarray:
  extra = [k for k in value if k not in _ARRAY_KEYS]
  if extra:
    raise fail(
      fn,
      f"argument {arg!r}: an array has the keys {', '.join(map(repr, _ARRAY_KEYS))}, got also "
      f"{', '.join(short(k) for k in extra[:5])}.",
    )
  name = value.get("dtype", "float64")
  if not isinstance(name, str) or name not in DTYPES:
    raise fail(
      fn,
      f"argument {arg!r}: an array's dtype must be one of {', '.join(DTYPES)}, got {short(name)}.",
    )
  dtype = DTYPES[name]
  is_complex = value.get("complex", False)
  if not isinstance(is_complex, bool) or is_complex != (dtype.kind == "c"):
    raise fail(
      fn,
      f"argument {arg!r}: 'complex': true goes with a complex dtype and only with one, got "
      f"dtype {name}.",
    )
  data, shape = value["array"], value.get("shape")
  if is_complex:  # [real parts, imaginary parts]
    if not (isinstance(data, (list, tuple)) and len(data) == 2):
      raise fail(fn, f"argument {arg!r}: a complex array is [real parts, imaginary parts].")
    real = np.dtype(np.float64 if dtype == np.complex128 else np.float32)
    parts = [_decode_real_array(fn, arg, p, shape, real) for p in data]
    return (parts[0] + 1j * parts[1]).astype(dtype)
  return _decode_real_array(fn, arg, data, shape, dtype)


def _decode_real_array(fn: str, arg: str, data: Any, shape: Any, dtype: np.dtype) -> np.ndarray:
  shape = _array_shape(fn, arg, data, shape)
  try:
    if dtype.kind in "iu":
      out = np.asarray(data, dtype)
    else:
      out = np.asarray(data, np.float64).astype(dtype)
  except (OverflowError, ValueError, TypeError):
    raise fail(fn, f"argument {arg!r}: the array data do not fit the dtype {dtype.name}.") from None
  return out.reshape(shape)


def _encode(value: Any, path: str) -> Any:
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, complex):
    return {"complex": [value.real, value.imag]}
  if isinstance(value, tuple):
    return [_encode(v, path) for v in value]
  if isinstance(value, FrozenArray):
    return _encode_array(value.array, path)
  if isinstance(value, Initializer):
    return serialize(value)
  raise fail(
    "serialize",
    f"argument {path!r} holds {short(value)}, which has no JSON form; "
    "use a registered name instead of a Python object.",
    TypeError,
  )


def _encode_array(a: np.ndarray, path: str) -> dict[str, Any]:
  name = a.dtype.name
  if name not in DTYPES:
    raise fail(
      "serialize",
      f"argument {path!r} is an array of dtype {name}, which a config cannot hold; "
      f"cast it to one of {', '.join(DTYPES)}.",
      TypeError,
    )
  out: dict[str, Any] = {"shape": list(a.shape), "dtype": name}
  if a.dtype.kind == "c":
    out["array"] = [a.real.astype(np.float64).tolist(), a.imag.astype(np.float64).tolist()]
    out["complex"] = True
  elif a.dtype.kind == "f":
    out["array"] = a.astype(np.float64).tolist()  # exact: every float dtype fits in float64
  else:
    out["array"] = a.tolist()
  return out


def serialize(init: Initializer, format: str = "jaxinit") -> dict[str, Any]:
  """Returns a JSON-able dict that :func:`deserialize` turns back into ``init``.

  With ``format="jaxinit"`` (default) the dict holds ``"name"`` and every argument
  of the factory (defaults included, so a later change of defaults does not change
  what a saved config means); an array argument is ``{"array": nested lists,
  "dtype": name, "shape": [...]}`` (the shape kept even for a zero-size array).

  With ``format="keras"`` it is the config Keras 3 writes for the same distribution
  (``{"module": "keras.initializers", "class_name", "config", "registered_name"}``),
  loadable with ``keras.initializers.deserialize`` or
  ``keras.saving.deserialize_keras_object``. Glorot/He/LeCun with non-default
  arguments become Keras's ``VarianceScaling``; configurations Keras cannot express
  (custom axes, ``fan_geo_avg``, truncation bounds other than ±2, complex
  constants, initializers Keras does not have) are refused.

  Args:
    init: a jaxinit initializer.
    format: ``"jaxinit"`` or ``"keras"``.

  Returns:
    A dict of JSON types (str, numbers, bools, None, lists, dicts).

  Raises:
    TypeError: ``init`` is not a jaxinit initializer, or holds a value without a
      JSON form.
    ValueError: ``format`` is unknown, or (``"keras"``) Keras cannot express ``init``.

  Examples:
    >>> import json, jaxinit
    >>> d = jaxinit.serialize(jaxinit.he_uniform(mode="fan_out"))
    >>> d["name"], d["mode"]
    ('he_uniform', 'fan_out')
    >>> jaxinit.deserialize(json.loads(json.dumps(d))) == jaxinit.he_uniform(mode="fan_out")
    True
    >>> k = jaxinit.serialize(jaxinit.normal(0.02), format="keras")
    >>> k["class_name"], k["config"]
    ('RandomNormal', {'seed': None, 'mean': 0.0, 'stddev': 0.02})
  """
  if not isinstance(init, Initializer):
    raise fail(
      "serialize",
      f"`init` must be a jaxinit initializer, got {short(init)}; closures such as "
      "jax.nn.initializers have no serializable configuration.",
      TypeError,
    )
  check_choice("serialize", "format", format, FORMATS)
  out: dict[str, Any] = {"name": init.name}
  for k, v in init.config().items():
    out[k] = _encode(v, k)
  if format == "jaxinit":
    return out
  defaults = {
    f.name: _encode(f.default, f.name)
    for f in dataclasses.fields(type(init))
    if f.default is not dataclasses.MISSING
  }
  return keras_configs.to_keras(init.name, out, defaults, "serialize")
