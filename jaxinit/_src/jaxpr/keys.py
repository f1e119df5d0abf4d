"""Value-based keys for the parts of a program: equal keys mean the same computation.

A segment's signature (:mod:`.segments`) is built from these keys, so that the
repeated blocks of a deep network get equal signatures and share one
compilation. Objects that have no value-based key (a large closed-over array,
a sub-jaxpr of an opaque step) are wrapped in :class:`Identity`, compared by
identity: a signature that holds one is only valid within its program.
"""

from __future__ import annotations

import jax
import numpy as np


class Identity:
  """Stands for an object compared by identity inside a signature."""

  __slots__ = ("obj",)

  def __init__(self, obj):
    self.obj = obj

  def __eq__(self, other):
    return isinstance(other, Identity) and other.obj is self.obj

  def __hash__(self):
    return id(self.obj)


def aval_key(aval) -> tuple:
  return (tuple(aval.shape), str(aval.dtype), bool(getattr(aval, "weak_type", False)))


def value_key(v):
  """A hashable, value-based key for a primitive parameter or constant."""
  if isinstance(v, dict):
    return tuple(sorted((k, value_key(x)) for k, x in v.items()))
  if isinstance(v, (list, tuple)):
    return (type(v).__name__, *(value_key(x) for x in v))
  if isinstance(v, (np.ndarray, np.generic)):
    if v.size <= 4096:
      return ("np", v.shape, str(v.dtype), v.tobytes())
    return Identity(v)
  if isinstance(v, jax.Array):
    return Identity(v)
  if isinstance(v, (bool, int, float, complex, str, bytes, type(None))):
    return (type(v).__name__, v)
  try:
    hash(v)
  except TypeError:
    return Identity(v)
  if type(v).__hash__ is object.__hash__:  # compared by identity anyway
    return Identity(v)
  return (type(v).__module__, type(v).__qualname__, v)


def signature_is_portable(sig) -> bool:
  """Whether a signature holds no identity-based parts (safe to cache across calls)."""
  if isinstance(sig, Identity):
    return False
  if isinstance(sig, tuple):
    return all(signature_is_portable(x) for x in sig)
  return True
