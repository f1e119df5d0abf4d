"""A read-only numpy array that compares, hashes and reprs by value."""

from __future__ import annotations

from typing import Any

import numpy as np


class FrozenArray:
  """A read-only numpy array that compares, hashes and reprs by value.

  ``constant`` stores array values this way so the initializer stays hashable
  (a valid static jit argument) and serializable.
  """

  __slots__ = ("_a",)

  def __init__(self, a: Any):
    arr = np.array(a)
    arr.setflags(write=False)
    self._a = arr

  @property
  def array(self) -> np.ndarray:
    return self._a

  @property
  def shape(self) -> tuple[int, ...]:
    return self._a.shape

  @property
  def dtype(self) -> np.dtype:
    return self._a.dtype

  def __array__(self, dtype=None, copy=None):
    return self._a if dtype is None else self._a.astype(dtype)

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, FrozenArray):
      return NotImplemented
    return (
      self._a.dtype == other._a.dtype
      and self._a.shape == other._a.shape
      and bool(np.array_equal(self._a, other._a))
    )

  def __hash__(self) -> int:
    a = self._a
    if a.dtype.kind in "fcV" or a.dtype.name == "bfloat16":  # -0.0 == 0.0: one hash
      a = np.where(a == 0, np.zeros_like(a), a)
    return hash((a.dtype.str, a.shape, a.tobytes()))

  def __repr__(self) -> str:
    return repr(self._a)

  def __reduce__(self):
    return (FrozenArray, (self._a,))
