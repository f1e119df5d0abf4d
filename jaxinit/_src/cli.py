"""The ``jaxinit`` command."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from collections.abc import Sequence

from jaxinit._src import catalog


def _defaults(cls) -> str:
  parts = []
  for f in cls.arguments():
    has_default = f.default is not dataclasses.MISSING
    parts.append(f"{f.name}={f.default!r}" if has_default else f.name)
  return ", ".join(parts)


def list_initializers(out=None) -> None:
  """Prints every registered initializer with its formula and defaults."""

  out = out or sys.stdout
  for name, cls, aliases in catalog.entries():
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

  print(
    "\ncalculate_gain(nonlinearity, param=None) knows: "
    + ", ".join(NONLINEARITIES)
    + ", or any callable (gain = 1 / sqrt(E[phi(z)^2]))",
    file=out,
  )


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="jaxinit",
    description="Neural-network parameter initialization for JAX and Flax.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  cmp = sub.add_parser(
    "compare",
    help="compare initializers on a deep network: signal and gradient propagation",
    description="Initializes an embedded deep MLP with each initializer (and LSUV), and prints "
    "the variance of the layer outputs through depth, the gradient-norm ratio, the input-output "
    "Jacobian's mean squared singular value and condition number, and a verdict.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  from jaxinit._src import compare

  cmp.add_argument("--depth", type=_positive_int, default=50, help="number of layers")
  cmp.add_argument("--width", type=_positive_int, default=256, help="width of every layer")
  cmp.add_argument(
    "--batch", type=_positive_int, default=256, help="examples in the synthetic N(0, 1) batch"
  )
  cmp.add_argument(
    "--activation", default="relu", help=f"comma-separated: {', '.join(compare.ACTIVATIONS)}"
  )
  cmp.add_argument(
    "--inits",
    default=",".join(compare.DEFAULT_INITS),
    help="comma-separated initializers: names accepted by jaxinit.get, optionally "
    "with arguments, e.g. 'normal(stddev=0.02),he_uniform(mode=\"fan_out\")'",
  )
  cmp.add_argument(
    "--lsuv",
    default=",".join(compare.DEFAULT_LSUV),
    help="initializers to also run LSUV on (comma-separated), or 'none'",
  )
  cmp.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
  cmp.add_argument(
    "--plot",
    metavar="FILE.png",
    default=None,
    help="save variance / gradient / Jacobian plots (needs matplotlib)",
  )
  cmp.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
  sub.add_parser("list", help="list every initializer with its formula and defaults")
  args = parser.parse_args(argv)
  if args.command == "list":
    list_initializers()
    return 0
  if args.command == "compare":
    try:
      return compare.main(args)
    except (ValueError, TypeError, ImportError) as e:
      print(f"jaxinit compare: error: {e}", file=sys.stderr)
      return 2
  parser.print_help()
  return 0 if args.command is None else 2
