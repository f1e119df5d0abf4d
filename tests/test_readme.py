"""The README's Python examples run as written (so the README stays true), one test per block.

The README reads as one session: a block may use what an earlier block imported or defined
(``jax``, ``jaxinit``, ``key``). Each test runs its block after exactly the earlier top-level
statements that define the names it borrows (and, in turn, what those borrow), so a block
fails on its own and no block is run twice.
"""

import ast
import builtins
import copy
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()
BLOCKS = [
  (TEXT.count("\n", 0, m.start(1)), m.group(1))  # (0-based line of the code, the code)
  for m in re.finditer(r"```python\n(.*?)```", TEXT, flags=re.S)
]


def _names(node):
  """(names bound, names read) anywhere in ``node``."""
  bound, read = set(), set()
  for n in ast.walk(node):
    if isinstance(n, ast.Name):
      (read if isinstance(n.ctx, ast.Load) else bound).add(n.id)
    elif isinstance(n, ast.alias):
      bound.add((n.asname or n.name).split(".")[0])
    elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
      bound.add(n.name)
    elif isinstance(n, ast.arg):
      bound.add(n.arg)
  return bound, read


# every top-level statement of the README, in order: (block, line, node, bound, read)
STATEMENTS = [
  (i, line, node, *_names(node))
  for i, (line, code) in enumerate(BLOCKS)
  for node in ast.parse(code).body
]


def _prerequisites(block):
  """The earlier statements that define what ``block`` borrows, in README order."""
  first = min(k for k, (i, *_) in enumerate(STATEMENTS) if i == block)
  bound, read = set(), set()
  for i, _, _, b, r in STATEMENTS:
    if i == block:
      bound |= b
      read |= r
  wanted = [(n, first) for n in read - bound - set(dir(builtins))]
  chosen = set()
  while wanted:
    name, before = wanted.pop()
    for k in range(before - 1, -1, -1):  # the last statement before `before` that binds it
      _, _, _, b, r = STATEMENTS[k]
      if name in b:
        if k not in chosen:
          chosen.add(k)
          wanted += [(n, k) for n in r - b - set(dir(builtins))]
        break
    else:
      raise AssertionError(f"README block {block} uses {name!r}, which no earlier block defines")
  return [STATEMENTS[k] for k in sorted(chosen)]


def test_readme_has_python_examples():
  assert BLOCKS, "no python examples found in README.md"


@pytest.mark.parametrize(
  "block",
  range(len(BLOCKS)),
  ids=[f"block{i}-line{line + 1}" for i, (line, _) in enumerate(BLOCKS)],
)
def test_readme_python_block_runs(block):
  namespace: dict = {}
  for _, line, node, _, _ in _prerequisites(block):
    node = ast.increment_lineno(copy.deepcopy(node), line)  # README line numbers
    module = ast.Module(body=[node], type_ignores=[])
    exec(compile(module, str(README), "exec"), namespace)
  line, code = BLOCKS[block]
  # padded so that a traceback points at the README's own line numbers
  exec(compile("\n" * line + code, str(README), "exec"), namespace)
