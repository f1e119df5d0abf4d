"""The ``jaxinit`` command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any

from jaxinit._src import catalog


def _defaults(cls) -> str:
  parts = []
  for f in cls.arguments():
    has_default = f.default is not dataclasses.MISSING
    parts.append(f"{f.name}={f.default!r}" if has_default else f.name)
  return ", ".join(parts)


def list_initializers(out: Any = None) -> None:
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


def _presets() -> list[tuple[Any, str]]:
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
    summary = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ").replace("``", "")
    for line in textwrap.wrap(f"{formula}. {summary}", width=88):
      print(f"    {line}", file=out)


def _bounded_int(lo: int, hi: int):
  """An argparse type: an integer in [lo, hi], refused with a short echo otherwise."""

  def parse(text: str) -> int:
    shown = repr(text[:20]) + ("..." if len(text) > 20 else "")
    digits = text.strip().lstrip("+-")
    if not digits.isdigit() or len(digits) > 20:  # int() of 5000 digits is itself an error
      raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {shown}")
    value = int(text)
    if not lo <= value <= hi:
      raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {shown}")
    return value

  parse.__name__ = "integer"
  return parse


def _parser() -> argparse.ArgumentParser:
  from jaxinit._src import compare

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
    "Jacobian's mean squared singular value and condition number, and a verdict. Bounds (flags "
    f"are checked before anything runs): depth <= {compare.MAX_DEPTH}, width <= "
    f"{compare.MAX_WIDTH}, batch <= {compare.MAX_BATCH}, depth x width x max(width, batch) <= "
    f"2**25 = {compare.MAX_CELLS}; at most {compare.MAX_SPECS} initializers per flag, "
    f"{compare.MAX_SPEC_CHARS} characters per initializer. Exit status: 0 done, 2 bad flags, "
    "1 a failure while running.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  cmp.add_argument(
    "--depth", type=_bounded_int(1, compare.MAX_DEPTH), default=50, help="number of layers"
  )
  cmp.add_argument(
    "--width", type=_bounded_int(1, compare.MAX_WIDTH), default=256, help="width of every layer"
  )
  cmp.add_argument(
    "--batch",
    type=_bounded_int(1, compare.MAX_BATCH),
    default=256,
    help="examples in the synthetic N(0, 1) batch",
  )
  cmp.add_argument(
    "--activation", default="relu", help=f"comma-separated: {', '.join(compare.ACTIVATIONS)}"
  )
  cmp.add_argument(
    "--inits",
    default=",".join(compare.DEFAULT_INITS),
    help="comma-separated initializers: names accepted by jaxinit.get, optionally "
    "with arguments (numbers, strings, sqrt and arithmetic), e.g. "
    "'normal(stddev=0.02),he_uniform(mode=\"fan_out\")'",
  )
  cmp.add_argument(
    "--lsuv",
    default=",".join(compare.DEFAULT_LSUV),
    help="initializers to also run LSUV on (comma-separated), or 'none'",
  )
  cmp.add_argument(
    "--seed",
    type=_bounded_int(0, compare.MAX_SEED),
    default=0,
    help="seed of the weights and the batch",
  )
  cmp.add_argument(
    "--plot",
    metavar="FILE.png",
    default=None,
    help="save variance / gradient / Jacobian plots (needs matplotlib; "
    f"{', '.join(compare.PLOT_SUFFIXES)}; the folder must exist)",
  )
  cmp.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
  sub.add_parser("list", help="list every initializer (formula, defaults) and preset")
  return parser


def _one_line(e: BaseException, limit: int = 300) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= limit else text[:limit] + "..."


def _warning(message, category, filename, lineno, file=None, line=None) -> None:
  stream = sys.stderr if file is None else file
  print(f"jaxinit: warning: {_one_line(message)}", file=stream)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
  if args.command == "list":
    list_initializers()
    return 0
  if args.command == "compare":
    from jaxinit._src import compare

    with warnings.catch_warnings():
      warnings.showwarning = _warning
      return compare.main(args)
  parser.print_help()
  return 0 if args.command is None else 2


def main(argv: Sequence[str] | None = None) -> int:
  """The ``jaxinit`` command. Never shows a traceback: every error is one line on stderr.

  Exit status: 0 done; 2 bad flags or arguments (argparse's usage errors too); 1 a
  failure while running (a file that cannot be written, out of memory, an unexpected
  error); 130 interrupted.
  """
  parser = _parser()
  args = parser.parse_args(argv)  # usage errors: argparse prints them and exits 2
  name = f"jaxinit {args.command}" if args.command else "jaxinit"
  try:
    return _run(args, parser)
  except (ValueError, TypeError, ImportError) as e:
    message = _one_line(e)
    message = message.removeprefix("jaxinit compare: ")
    print(f"{name}: error: {message}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"{name}: interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:  # `jaxinit list | head`: the reader left; stop quietly
    with contextlib.suppress(OSError):
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1
  except OSError as e:
    print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
    return 1
  except MemoryError:
    print(f"{name}: error: out of memory; use a smaller network.", file=sys.stderr)
    return 1
  except Exception as e:  # never a traceback: say what failed and how to report it
    print(
      f"{name}: internal error ({type(e).__name__}): {_one_line(e)} -- please report it with "
      "the command line.",
      file=sys.stderr,
    )
    return 1
