"""Every initializer jaxinit defines, registered: import this module to know them all.

The registry is filled as initializer modules are imported; this module imports
each of them, so tools that list or look up initializers by name (the CLI, the
config decoder's callers) see the complete table without importing the public
package.
"""

from __future__ import annotations

from jaxinit._src import basic, orthogonal, registry, structured, variance_scaling
from jaxinit._src.base import Initializer

#: The modules that define initializers, in the order ``jaxinit list`` shows them.
MODULES = (basic, variance_scaling, orthogonal, structured)


def entries() -> list[tuple[str, type[Initializer], list[str]]]:
  """``(name, class, aliases)`` of every registered initializer, sorted by name."""
  return [
    (name, registry.lookup(name), registry.aliases_of(name))
    for name in registry.names(include_aliases=False)
  ]
