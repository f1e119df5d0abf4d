"""The ``jaxinit`` command."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from collections.abc import Sequence

from jaxinit._src import registry


def _defaults(cls) -> str:
  parts = []
  for f in dataclasses.fields(cls):
    parts.append(f"{f.name}={f.default!r}")
  return ", ".join(parts)


def list_initializers(out=None) -> None:
  """Prints every registered initializer with its formula and defaults."""
  import jaxinit  # noqa: F401  (registers everything)

  out = out or sys.stdout
  for name in registry.names(include_aliases=False):
    cls = registry.lookup(name)
    aliases = registry.aliases_of(name)
    head = f"{name}({_defaults(cls)})"
    print(head, file=out)
    if aliases:
      print(f"    aliases: {', '.join(aliases)}", file=out)
    for line in textwrap.wrap(cls.formula, width=88):
      print(f"    {line}", file=out)
    extra = []
    if cls.deterministic:
      extra.append("deterministic (ignores the key)")
    if not cls.supports_complex:
      extra.append("real dtypes only")
    if extra:
      print(f"    {'; '.join(extra)}", file=out)
  from jaxinit._src.gain import NONLINEARITIES

  print("\ncalculate_gain(nonlinearity, param=None) knows: " + ", ".join(NONLINEARITIES)
        + ", or any callable (gain = 1 / sqrt(E[phi(z)^2]))", file=out)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="jaxinit",
      description="Neural-network parameter initialization for JAX and Flax.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.add_parser("list", help="list every initializer with its formula and defaults")
  args = parser.parse_args(argv)
  if args.command == "list":
    list_initializers()
    return 0
  parser.print_help()
  return 0 if args.command is None else 2
