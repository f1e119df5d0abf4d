"""Static indices into a parameter leaf: ``leaf[index]`` with ints and (start, stop) slices.

An :data:`Index` has one entry per leaf dimension: an int (the dimension is
dropped, as in ``w[3]``) or a ``(start, stop)`` pair (a basic slice). These are
the only ways a layer can read part of a parameter (a static slice of a stacked
weight, the per-step slice of ``nn.scan``), so reading, writing, comparing and
naming such regions is all LSUV and layer discovery need.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax

Index = tuple  # per leaf dimension: an int (dimension dropped) or a (start, stop) slice


def full_index(shape: Sequence[int]) -> Index:
  return tuple((0, int(d)) for d in shape)


def index_shape(index: Index) -> tuple[int, ...]:
  return tuple(e[1] - e[0] for e in index if isinstance(e, tuple))


def kept_dims(index: Index) -> list[int]:
  return [i for i, e in enumerate(index) if isinstance(e, tuple)]


def apply_index(x: jax.Array, index: Index) -> jax.Array:
  """``x[index]`` with static ints and (start, stop) slices."""
  if all(isinstance(e, tuple) and e == (0, d) for e, d in zip(index, x.shape, strict=True)):
    return x
  starts = [e if isinstance(e, int) else e[0] for e in index]
  stops = [e + 1 if isinstance(e, int) else e[1] for e in index]
  y = lax.slice(x, starts, stops)
  drop = tuple(i for i, e in enumerate(index) if isinstance(e, int))
  return lax.squeeze(y, drop) if drop else y


def set_index(x: jax.Array, index: Index, value: jax.Array) -> jax.Array:
  """``x.at[index].set(value)`` for a static index (a plain replacement when full)."""
  value = value.astype(x.dtype)
  if all(isinstance(e, tuple) and e == (0, d) for e, d in zip(index, x.shape, strict=True)):
    return value
  drop = tuple(i for i, e in enumerate(index) if isinstance(e, int))
  if drop:
    value = lax.expand_dims(value, drop)
  starts = [e if isinstance(e, int) else e[0] for e in index]
  return lax.dynamic_update_slice(x, value, starts)


def overlaps(a: Index, b: Index) -> bool:
  for x, y in zip(a, b, strict=True):
    lo1, hi1 = (x, x + 1) if isinstance(x, int) else x
    lo2, hi2 = (y, y + 1) if isinstance(y, int) else y
    if hi1 <= lo2 or hi2 <= lo1:
      return False
  return True


def index_suffix(index: Index, shape: Sequence[int]) -> str:
  parts = []
  for e, d in zip(index, shape, strict=True):
    if isinstance(e, int):
      parts.append(str(e))
    elif e == (0, d):
      parts.append(":")
    else:
      parts.append(f"{e[0]}:{e[1]}")
  while parts and parts[-1] == ":":
    parts.pop()
  return f"[{','.join(parts)}]" if parts else ""
