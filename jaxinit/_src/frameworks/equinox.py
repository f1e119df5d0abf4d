"""Equinox glue: an ``eqx.Module`` is a pytree, so ``reinit`` walks it directly
(paths are attribute names, e.g. ``"layers/0/weight"``); its kernels are stored
``(out, in, *spatial)``, so the torch layout is its default. Equinox is never
imported here: a module can only be one if equinox is already loaded.
"""

from __future__ import annotations

import sys
from typing import Any


def is_module(tree: Any) -> bool:
  """Whether ``tree`` is an ``equinox.Module``."""
  eqx = sys.modules.get("equinox")
  return eqx is not None and isinstance(tree, eqx.Module)
