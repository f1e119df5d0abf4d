"""Haiku glue (haiku is imported only when a wrapped initializer runs).

:func:`haiku_initializer` turns a jaxinit initializer into a haiku one; haiku
``params`` are plain dicts (``"linear/w"``, ``"mlp/~/linear_0/w"``) for ``reinit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxinit._src import serialization
from jaxinit._src.base import Initializer
from jaxinit._src.checks import fail


@dataclasses.dataclass(frozen=True)
class HaikuInitializer:
  """A haiku initializer ``init(shape, dtype)`` drawing ``hk.next_rng_key()``."""

  init: Any

  def __call__(self, shape, dtype=None):
    import haiku as hk

    return self.init(hk.next_rng_key(), tuple(shape), dtype)


def haiku_initializer(init: Any) -> HaikuInitializer:
  """Wraps a jaxinit initializer for haiku's ``w_init`` / ``b_init``.

  Haiku calls initializers as ``init(shape, dtype)`` and leaves the key
  implicit; the wrapper draws ``hk.next_rng_key()`` and calls ``init(key,
  shape, dtype)``, so it must run inside a transformed function's ``init``.
  Haiku stores kernels as Flax does (``Linear`` ``(in, out)``, ``Conv2D``
  HWIO), so the default fan axes are right.

  Args:
    init: a jaxinit initializer, a name or config dict (see
      :func:`jaxinit.get`), or any ``init(key, shape, dtype)`` callable.

  Returns:
    A haiku initializer (hashable and comparable when ``init`` is).

  Examples:
    >>> import jax, jax.numpy as jnp, haiku as hk, jaxinit
    >>> f = hk.transform(lambda x: hk.Linear(
    ...     256, w_init=jaxinit.haiku_initializer(jaxinit.he_normal()))(x))
    >>> params = f.init(jax.random.key(0), jnp.ones((1, 512)))
    >>> print(f"{params['linear']['w'].var() * 512:.1f}")
    2.0
  """
  if isinstance(init, str | dict):
    init = serialization.get(init)
  if not (isinstance(init, Initializer) or callable(init)):
    raise fail("haiku_initializer", f"`init` must be an initializer, got {init!r}.", TypeError)
  return HaikuInitializer(init)
