"""Initializers from names and configs, and back: ``get``, ``serialize``, ``deserialize``.

Configs are untrusted input (experiment files, command lines): every value is
decoded into a bounded, plain form before a factory sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxinit._src.base import Initializer
from jaxinit._src.checks import fail
from jaxinit._src.frozen import FrozenArray
from jaxinit._src.registry import lookup


def _build(cls: type[Initializer], kwargs: Mapping[str, Any], fn: str) -> Initializer:
  allowed = [f.name for f in cls.arguments()]
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    args = ", ".join(allowed) if allowed else "no arguments"
    raise fail(
      fn,
      f"{cls.name} got unexpected argument(s) {', '.join(map(repr, unknown))}; it takes {args}.",
      TypeError,
    )
  return cls(**kwargs)


def get(identifier: Any, **kwargs: Any) -> Any:
  """Returns an initializer from a name, a config dict, or an initializer.

  Args:
    identifier: one of

      - a registered name (``"he_normal"``, an alias such as ``"kaiming_normal"``,
        or a Keras class name such as ``"HeNormal"``);
      - a dict ``{"name": ..., **arguments}`` as made by :func:`serialize`, or a
        Keras-style ``{"class_name": ..., "config": {...}}``;
      - a jaxinit initializer (returned as is, or rebuilt with ``kwargs``
        overriding its arguments);
      - any other callable following the ``init(key, shape, dtype)`` protocol
        (for example a ``jax.nn.initializers`` closure), returned unchanged.
    **kwargs: factory arguments (override those in a dict or initializer).

  Returns:
    An initializer.

  Raises:
    ValueError: an unknown name (the message lists close matches).
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
  """
  if isinstance(identifier, Initializer):
    if not kwargs:
      return identifier
    return _build(type(identifier), {**identifier.config(), **kwargs}, "get")
  if isinstance(identifier, str):
    return _build(lookup(identifier, "get"), kwargs, "get")
  if isinstance(identifier, Mapping):
    return _from_dict(identifier, kwargs, "get")
  if callable(identifier):
    if kwargs:
      raise fail(
        "get",
        "keyword arguments apply only to jaxinit initializers and names, got "
        f"{identifier!r} with {sorted(kwargs)}.",
        TypeError,
      )
    return identifier
  raise fail(
    "get",
    "`identifier` must be an initializer name, a config dict or an initializer, "
    f"got {identifier!r}.",
    TypeError,
  )


def _from_dict(d: Mapping[str, Any], overrides: Mapping[str, Any], fn: str) -> Initializer:
  d = dict(d)
  if "class_name" in d and "name" not in d:  # Keras: {"class_name": ..., "config": {...}}
    name, args = d.pop("class_name"), dict(d.pop("config", {}) or {})
    args.pop("seed", None)  # keras seeds have no meaning with jax keys
    args.update(d)
  elif "name" in d:
    name = d.pop("name")
    args = d
  else:
    raise fail(fn, f"a config dict needs a 'name' key, got keys {sorted(d)}.", ValueError)
  args = {k: _decode(v, fn) for k, v in args.items()}
  args.update(overrides)
  return _build(lookup(name, fn), args, fn)


# ---------------------------------------------------------------------------
# JSON encoding of argument values.
# ---------------------------------------------------------------------------


def _encode(value: Any, path: str) -> Any:
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, complex):
    return {"complex": [value.real, value.imag]}
  if isinstance(value, tuple):
    return [_encode(v, path) for v in value]
  if isinstance(value, FrozenArray):
    a = value.array
    if np.iscomplexobj(a):
      return {"array": [a.real.tolist(), a.imag.tolist()], "dtype": a.dtype.name, "complex": True}
    return {"array": a.tolist(), "dtype": a.dtype.name}
  if isinstance(value, Initializer):
    return serialize(value)
  raise fail(
    "serialize",
    f"argument {path!r} holds {value!r}, which has no JSON form; "
    "use a registered name instead of a Python object.",
    TypeError,
  )


def _decode(value: Any, fn: str) -> Any:
  if isinstance(value, list):
    return tuple(_decode(v, fn) for v in value)
  if isinstance(value, Mapping):
    if "array" in value:
      if value.get("complex"):
        re_, im = value["array"]
        return np.asarray(re_, value["dtype"]) + 1j * np.asarray(im, value["dtype"])
      return np.asarray(value["array"], value.get("dtype"))
    if "complex" in value and len(value) == 1:
      re_, im = value["complex"]
      return complex(re_, im)
    if "name" in value or "class_name" in value:
      return _from_dict(value, {}, fn)
    raise fail(fn, f"cannot decode argument value {dict(value)!r}.")
  return value


def serialize(init: Initializer) -> dict[str, Any]:
  """Returns a JSON-able dict that :func:`deserialize` turns back into ``init``.

  The dict holds ``"name"`` and every argument of the factory (defaults
  included, so a later change of defaults does not change what a saved config
  means).

  Args:
    init: a jaxinit initializer.

  Returns:
    A dict of JSON types (str, numbers, bools, lists, dicts).

  Raises:
    TypeError: ``init`` is not a jaxinit initializer.

  Examples:
    >>> import json, jaxinit
    >>> d = jaxinit.serialize(jaxinit.he_uniform(mode="fan_out"))
    >>> d["name"], d["mode"]
    ('he_uniform', 'fan_out')
    >>> jaxinit.deserialize(json.loads(json.dumps(d))) == jaxinit.he_uniform(mode="fan_out")
    True
  """
  if not isinstance(init, Initializer):
    raise fail(
      "serialize",
      f"`init` must be a jaxinit initializer, got {init!r}; closures such as "
      "jax.nn.initializers have no serializable configuration.",
      TypeError,
    )
  out: dict[str, Any] = {"name": init.name}
  for k, v in init.config().items():
    out[k] = _encode(v, k)
  return out


def deserialize(config: Mapping[str, Any]) -> Initializer:
  """Rebuilds an initializer from :func:`serialize`'s dict.

  Args:
    config: ``{"name": ..., **arguments}`` (a Keras ``{"class_name", "config"}``
      dict is accepted too).

  Returns:
    An initializer equal to the one serialized.

  Raises:
    ValueError: unknown name or malformed dict. TypeError: unknown arguments.

  Examples:
    >>> import jaxinit
    >>> jaxinit.deserialize({"name": "truncated_normal", "stddev": 0.02})
    truncated_normal(stddev=0.02)
  """
  if not isinstance(config, Mapping):
    raise fail("deserialize", f"`config` must be a dict, got {config!r}.", TypeError)
  return _from_dict(config, {}, "deserialize")
