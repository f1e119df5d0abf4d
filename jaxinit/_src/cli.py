"""The ``jaxinit`` command."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import textwrap
from collections.abc import Sequence

from jaxinit._src import catalog


def _defaults(cls) -> str:
  parts = []
  for f in dataclasses.fields(cls):
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
  list_presets(out)


def _presets() -> list[tuple[object, str]]:
  from jaxinit._src.presets import language, residual, vision

  return [
    (language.gpt2, "N(0, r^2); attn/mlp c_proj N(0, r^2 / (2L)); LN 1/0, biases 0"),
    (language.hf_default, "Linear/Embedding N(0, r^2), padding row 0, norms 1, biases 0"),
    (language.megatron, "inputs N(0, s^2), out_proj/fc2 N(0, s^2 / (2L)), head N(0, 1/d)"),
    (language.llama2, "megatron(sigma=0.02) on Llama's names"),
    (
      language.llama3,
      "embed N(0,1); q,k,v,w1 N(0, .02^2); wo,w2,w3 std .02/sqrt(2(l+1)); head TN(d^-1/2, 3 sigma)",
    ),
    (
      language.olmo,
      "mitchell: 1/sqrt(d), attn_out 1/sqrt(2d(l+1)), ff_out 1/sqrt(2 d_ff (l+1)),"
      " cut at 3 sigma; full_megatron; normal",
    ),
    (language.bert, "N(0, r^2), pad row 0, LN 1/0, biases 0; original: TN(r, 2 sigma)"),
    (
      language.t5,
      "q N(0, f^2/(d d_kv)), k,v,wi N(0, f^2/d), o N(0, f^2/(H d_kv)), wo N(0, f^2/d_ff)",
    ),
    (vision.vit, "hf: N(0, r^2), head too; original: Xavier, LeCun patch, cls 0, head 0"),
    (
      vision.torch_default,
      "Linear/Conv U(+-1/sqrt(fan_in)) weight and bias, norms 1/0, Embedding N(0,1)",
    ),
    (residual.fixup, "branch He x L^(-1/(2m-2)), last layer and head 0, scalars 0/1"),
    (residual.t_fixup, "Xavier x 0.67 N^-1/4 (encoder), x (9M)^-1/4 (decoder); embeddings"),
    (residual.deepnorm, "v, out, fc1, fc2 x beta = (8N)^-1/4 (...); residual x alpha = (2N)^1/4"),
    (residual.rezero, "residual weight alpha = 0"),
    (residual.skipinit, "branch scalar alpha = value (0)"),
    (language.small_init, "std sqrt(2 / (5d)) (GPT-NeoX init_method)"),
    (
      language.wang_init,
      "residual outputs std 2 / (L sqrt(d)) (GPT-NeoX output_layer_init_method)",
    ),
  ]


def _signature(fn) -> str:
  sig = inspect.signature(fn)
  params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
  return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def list_presets(out=None) -> None:
  """Prints every preset of ``jaxinit.presets`` with its signature, formula and summary."""
  out = out or sys.stdout
  print("\npresets (jaxinit.presets: reinit rules of published initializations):", file=out)
  for fn, formula in _presets():
    print(f"presets.{fn.__name__}{_signature(fn)}", file=out)
    summary = inspect.getdoc(fn).split("\n\n")[0].replace("\n", " ").replace("``", "")
    for line in textwrap.wrap(f"{formula}. {summary}", width=88):
      print(f"    {line}", file=out)


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
  sub.add_parser("list", help="list every initializer (formula, defaults) and preset")
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
