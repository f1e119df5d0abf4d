"""Every error prefix names a real public path.

Errors read ``jaxinit.<fn>: ...``, where ``fn`` is the path of the public function
under the ``jaxinit`` package. The prefixes are written in the source as the
``fn`` of ``fail(fn, ...)``, module constants (``FN = "lsuv"``), defaults of ``fn``
arguments and initializer names; this test reads every one of them from the code
(so a new one cannot drift, as ``jaxinit.jacobian_spectrum`` once did for
``jaxinit.diagnostics.jacobian_spectrum``) and resolves it on the package.
"""

import ast
import importlib
import pathlib
import re

import pytest

import jaxinit
from jaxinit._src import registry

SRC = pathlib.Path(jaxinit.__file__).parent / "_src"
PUBLIC_MODULES = ("diagnostics", "mean_field", "testing", "mup", "presets")
_PREFIX = re.compile(r"^jaxinit\.([A-Za-z_][\w.]*):")


def _fn_constants(tree: ast.AST) -> set[str]:
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
      "fail",
      "check_real",
      "check_int",
      "check_bool",
      "check_choice",
      "check_axes",
      "canonical_key",
      "canonical_shape",
      "canonical_dtype",
      "compile_pattern",
      "flatten_with_paths",
    ):
      if (
        node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
      ):
        found.add(node.args[0].value)
      for kw in node.keywords:
        if kw.arg == "fn" and isinstance(kw.value, ast.Constant):
          found.add(kw.value.value)
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
      names = [t.id for t in node.targets if isinstance(t, ast.Name)]
      if any(n in ("FN", "_FN", "fn") for n in names) and isinstance(node.value.value, str):
        found.add(node.value.value)
    if isinstance(node, ast.arguments):
      pos = node.posonlyargs + node.args
      for arg, default in zip(pos[len(pos) - len(node.defaults) :], node.defaults, strict=True):
        if arg.arg == "fn" and isinstance(default, ast.Constant):
          found.add(default.value)
      for arg, default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
        if arg.arg == "fn" and isinstance(default, ast.Constant):
          found.add(default.value)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      m = _PREFIX.match(node.value)
      if m:
        found.add(m.group(1))
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
      m = _PREFIX.match(str(node.values[0].value))
      if m:
        found.add(m.group(1))
  return found


def _prefixes() -> dict[str, list[str]]:
  where: dict[str, list[str]] = {}
  for path in sorted(SRC.rglob("*.py")):
    for fn in _fn_constants(ast.parse(path.read_text())):
      where.setdefault(fn, []).append(str(path.relative_to(SRC)))
  return where


def _resolves(path: str) -> bool:
  obj = jaxinit
  for i, part in enumerate(path.split(".")):
    if i == 0 and part in PUBLIC_MODULES and not hasattr(obj, part):
      try:
        importlib.import_module(f"jaxinit.{part}")
      except ImportError:
        return False
    if not hasattr(obj, part):
      return False
    obj = getattr(obj, part)
  return True


PREFIXES = _prefixes()


def test_the_scan_finds_the_prefixes():
  assert {"reinit", "lsuv", "get", "diagnostics.jacobian_spectrum"} <= set(PREFIXES)
  assert len(PREFIXES) >= 25


@pytest.mark.parametrize("fn", sorted(PREFIXES))
def test_every_error_prefix_is_a_public_path(fn):
  assert _resolves(fn), f"jaxinit.{fn} (used in {', '.join(PREFIXES[fn])}) is no public path"


@pytest.mark.parametrize("name", registry.names())
def test_registered_initializers_are_public_functions(name):
  assert callable(getattr(jaxinit, name, None)), name
