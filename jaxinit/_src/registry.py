"""Lookup by name and (de)serialization of initializers, for experiment configs."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxinit._src.base import Initializer, fail

# name -> initializer class; aliases map to the same class.
_REGISTRY: dict[str, type[Initializer]] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, *aliases: str) -> Callable[[type[Initializer]], type[Initializer]]:
  """Class decorator: makes ``cls`` reachable as ``get(name)`` and ``get(alias)``."""

  def wrap(cls: type[Initializer]) -> type[Initializer]:
    if cls.name != name:
      raise AssertionError(f"{cls.__name__}.name is {cls.name!r}, registered as {name!r}")
    for n in (name, *aliases):
      if n in _REGISTRY and _REGISTRY[n] is not cls:
        raise AssertionError(f"initializer name {n!r} registered twice")
      _REGISTRY[n] = cls
    for a in aliases:
      _ALIASES[a] = name
    return cls

  return wrap


def names(include_aliases: bool = True) -> list[str]:
  """The registered initializer names, sorted."""
  return sorted(n for n in _REGISTRY if include_aliases or n not in _ALIASES)


def aliases_of(name: str) -> list[str]:
  return sorted(a for a, target in _ALIASES.items() if target == name)


def _snake(name: str) -> str:
  """'HeNormal' -> 'he_normal' (Keras class names), 'he-normal' -> 'he_normal'."""
  s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
  return s.replace("-", "_").lower()


def lookup(name: str, fn: str = "get") -> type[Initializer]:
  if not isinstance(name, str):
    raise fail(fn, f"an initializer name must be a string, got {name!r}.", TypeError)
  key = name if name in _REGISTRY else _snake(name)
  if key in _REGISTRY:
    return _REGISTRY[key]
  close = difflib.get_close_matches(key, list(_REGISTRY), n=4, cutoff=0.6)
  hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
  raise fail(
    fn,
    f"unknown initializer {name!r}.{hint} Known names: {', '.join(names(False))} "
    "(`jaxinit list` shows them with formulas).",
  )


def _build(cls: type[Initializer], kwargs: Mapping[str, Any], fn: str) -> Initializer:
  allowed = [f.name for f in dataclasses.fields(cls)]
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
  from jaxinit._src.basic import FrozenArray

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
