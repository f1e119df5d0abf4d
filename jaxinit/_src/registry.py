"""The name table of initializers: ``register`` (a class decorator) and ``lookup``.

Initializer modules register their classes when they are imported; the public
package imports all of them, so every name is known to a user of ``jaxinit``.
Building initializers from names and configs is ``serialization``'s job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from jaxinit._src.checks import fail

# name -> initializer class; aliases map to the same class.
_REGISTRY: dict[str, type[Any]] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, *aliases: str) -> Callable[[type[Any]], type[Any]]:
  """Class decorator: makes ``cls`` reachable as ``get(name)`` and ``get(alias)``."""

  def wrap(cls: type[Any]) -> type[Any]:
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


def lookup(name: str, fn: str = "get") -> type[Any]:
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
