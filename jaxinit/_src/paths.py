"""Leaf paths of parameter trees, and the path-stable keys derived from them.

A leaf's *path* is the '/'-joined list of the keys that lead to it in
``jax.tree_util`` terms: dict keys (``DictKey``), attribute names
(``GetAttrKey``: equinox modules, dataclasses) and sequence indices
(``SequenceKey``), e.g. ``"Dense_0/kernel"``, ``"layers/0/weight"``. A key that
holds the separator (haiku's ``"mlp/~/linear"``) is kept as it is, so patterns
read as the names users see; a tree in which two distinct leaves get the same
path (``{"a/b": x, "a": {"b": y}}``, a list index beside a ``"0"`` key) is
refused, because the two would share a key and be drawn identical.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxinit._src.checks import fail


def key_str(k: Any) -> str:
  """One ``jax.tree_util`` path entry as text."""
  tu = jax.tree_util
  if isinstance(k, tu.DictKey):
    return str(k.key)
  if isinstance(k, tu.GetAttrKey):
    return k.name
  if isinstance(k, tu.SequenceKey):
    return str(k.idx)
  if isinstance(k, tu.FlattenedIndexKey):
    return str(k.key)
  return str(k)


def path_str(path: Sequence[Any]) -> str:
  """The '/'-joined form of a ``jax.tree_util`` key path."""
  return "/".join(key_str(k) for k in path)


def hash_words(path: str) -> tuple[int, int]:
  """The two 32-bit halves of the 64-bit BLAKE2b hash of ``path`` (stable everywhere).

  Lone surrogates (a key decoded from bytes with ``surrogateescape``) hash by
  their code points, so every ``str`` has a key.
  """
  digest = hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).digest()
  return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def flatten_with_paths(
  fn: str, tree: Any, is_leaf: Callable[[Any], bool] | None = None
) -> tuple[list[tuple[str, Any]], Any]:
  """``[(path, leaf)]`` and the treedef; two leaves with one path are an error of ``fn``."""
  try:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
  except (TypeError, ValueError) as e:  # dict keys jax cannot sort ({1: x, "1": y})
    raise fail(
      fn,
      f"`tree` cannot be flattened by jax.tree_util: {type(e).__name__}: {str(e)[:200]} "
      "(a dict whose keys mix types, e.g. 1 and '1', cannot be ordered).",
      TypeError,
    ) from None
  out = [(path_str(p), leaf) for p, leaf in flat]
  seen: dict[str, int] = {}
  for i, (p, _) in enumerate(out):
    j = seen.setdefault(p, i)
    if j != i:
      a = jax.tree_util.keystr(flat[j][0])
      b = jax.tree_util.keystr(flat[i][0])
      raise fail(
        fn,
        f"two leaves of the tree have the same path {p!r}: {a} and {b}. Paths join the "
        "tree's keys with '/', so a key holding '/' (or a list index beside a key "
        "spelling the same number) makes them collide, and the two leaves would share one "
        "random key. Rename one of the keys.",
      )
  return out, treedef


#: The longest pattern accepted (patterns come from configs and command lines).
MAX_PATTERN = 4096


def compile_pattern(fn: str, what: str, pattern: str) -> re.Pattern:
  """``re.compile(pattern)``, or one clear error of ``fn`` naming ``what`` (e.g. "the rule").

  Patterns that Python's ``re`` cannot build (a repeat count beyond its range,
  nesting deeper than its recursion, a bad escape) and patterns longer than
  ``MAX_PATTERN`` characters are refused the same way.
  """
  shown = repr(pattern) if len(pattern) <= 80 else repr(pattern[:77] + "...")
  if len(pattern) > MAX_PATTERN:
    raise fail(
      fn, f"{what} pattern {shown} has {len(pattern)} characters, more than {MAX_PATTERN}."
    )
  try:
    return re.compile(pattern)
  except (re.error, OverflowError, RecursionError, ValueError) as e:
    raise fail(fn, f"{what} pattern {shown} is not a valid regular expression: {e}.") from None
