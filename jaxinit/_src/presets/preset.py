"""The ``Preset`` object every preset returns, and the helpers presets are built from.

A preset is an ordered table of *roles*: each role has a name (``"residual_out"``),
a pattern for ``jaxinit.reinit`` and a rule (an initializer, a sibling rule, a
depth rule). A preset function picks the patterns of one naming scheme (Hugging
Face state-dict names, a reference codebase's names, or the Flax-native names
documented in ``jaxinit.presets``), lets the caller override any role's pattern,
and returns a :class:`Preset`: a mapping ``{pattern: rule}`` with the layout its
names imply, the tied parameters of that naming, and constants (DeepNorm's alpha).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from jaxinit._src.base import Initializer
from jaxinit._src.basic import normal, truncated_normal
from jaxinit._src.checks import check_choice, check_int, check_real, fail, short_repr
from jaxinit._src.framework_types import is_box, rebox, unbox
from jaxinit._src.rules import DepthRule, OptionalRule
from jaxinit._src.tree import flatten, leaf_paths, reinit

#: Flax-native block prefix: linen ``blocks_3`` (a list attribute in ``setup``) or nnx
#: ``blocks/3`` (an ``nnx.List``).
BLOCK = r"blocks[_/]\d+"
#: The same, capturing the layer index as the group ``layer`` (what depth rules read).
LAYER = r"blocks[_/](?P<layer>\d+)"
#: Any prefix (linen ``params/``, an enclosing module) before Flax-native names.
ANY = r"(?:.*/)?"


@dataclasses.dataclass(frozen=True)
class InvSqrt:
  """``l -> (a * (l + offset)) ** -0.5``: the depth scale of Megatron-style inits.

  A frozen dataclass rather than a lambda, so that presets built twice compare
  equal and pickle.
  """

  a: float
  offset: int = 1

  def __call__(self, layer: int) -> float:
    return 1.0 / math.sqrt(self.a * (layer + self.offset))

  def __repr__(self):
    return f"1/sqrt({self.a:g} * (l + {self.offset}))"


def tn(std: float, cutoff: float | None) -> Initializer:
  """torch ``trunc_normal_(std=std, a=-cutoff*std, b=cutoff*std)`` (not rescaled), or
  ``normal(std)`` for ``cutoff=None``."""
  if cutoff is None:
    return normal(std)
  return truncated_normal(std, lower=-cutoff, upper=cutoff)


def torch_trunc(std: float, a: float = -2.0, b: float = 2.0) -> Initializer:
  """torch ``trunc_normal_(std=std, a=a, b=b)``: **absolute** bounds (torch's default +-2).

  For ``std`` <= 2/30 the bounds lie 30 standard deviations out or more, where the
  truncated and the plain normal differ by less than 1e-197 in probability, so the
  plain ``normal(std)`` is returned (what torch draws, in distribution).
  """
  lo, hi = a / std, b / std
  if lo <= -30 and hi >= 30:
    return normal(std)
  return truncated_normal(std, lower=lo, upper=hi)


def choice(fn: str, arg: str, value: Any, options: tuple[str, ...]) -> str:
  return check_choice(fn, arg, value, options)


def positive(fn: str, arg: str, value: Any) -> float:
  return check_real(fn, arg, value, positive=True)


#: The largest count (layers, widths, heads) a preset takes: every such count is used
#: in float arithmetic (1 / sqrt(2 n_layers)), exact for integers up to 2**53.
MAX_COUNT = 2**53


def count(fn: str, arg: str, value: Any, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
  return check_int(fn, arg, value, minimum=minimum, maximum=maximum)


def maybe_cutoff(fn: str, arg: str, value: Any) -> float | None:
  return None if value is None else check_real(fn, arg, value, positive=True)


def _pairs(fn: str, value: Any) -> tuple[tuple[str, Any], ...]:
  """``patterns`` as ``(role, pattern)`` pairs: a mapping or a sequence of pairs."""
  bad = fail(
    fn,
    "`patterns` must be a mapping {role: pattern or None} (or a sequence of such pairs), "
    f"got {short_repr(value)}.",
    TypeError,
  )
  if isinstance(value, Mapping):
    pairs = tuple(value.items())
  elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise bad
  else:
    pairs = tuple(value)
    if not all(isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in pairs):
      raise bad
  for role, _ in pairs:
    if not isinstance(role, str):
      raise fail(
        fn, f"`patterns` keys must be role names (str), got {short_repr(role)}.", TypeError
      )
  return tuple((r, q) for r, q in pairs)


@dataclasses.dataclass(frozen=True)
class Preset(Mapping):
  """A published initialization as ``reinit`` rules: a mapping ``{pattern: rule}``.

  Returned by every function of ``jaxinit.presets``. Use it where ``reinit`` takes
  rules, with its layout::

    new = jaxinit.reinit(params, preset.rules, key, layout=preset.layout)
    new = preset.apply(params, key)            # the same, then ties (see below)
    variables = jaxinit.init_linen(model, key, x, rules=preset.rules, layout=preset.layout)

  Attributes:
    name: the preset and its arguments, e.g. ``"gpt2(n_layers=12)"``.
    roles: ``(role, pattern, rule)`` triples in order (the first matching pattern wins).
    layout: the kernel layout of the naming scheme (``"torch"`` for torch state
      dicts, ``"flax"`` for Flax names and Hugging Face GPT-2's ``Conv1D``).
    ties: ``(copy, source)`` paths of parameters a state dict lists twice (GPT-2's
      ``lm_head/weight`` is ``transformer/wte/weight``). :meth:`apply` copies the
      redrawn source into each copy present in the tree; with ``reinit`` alone
      the copies keep their old values (no rule matches them, or a catch-all
      redraws them independently), so re-tie them yourself.
    constants: named numbers of the method, e.g. DeepNorm's ``alpha`` (the
      residual multiplier the forward pass needs) and ``beta``.

  A preset compares, hashes and pickles by value (two calls with the same
  arguments give equal presets: safe as a static ``jit`` argument). ``a + b``
  concatenates two presets' roles (``a``'s first), e.g. GPT-NeoX 20B's
  ``small_init(d) + wang_init(L, d)``.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> p = jaxinit.presets.gpt2(n_layers=4, patterns={"norm_scale": None, "bias": None})
    >>> p
    Preset("gpt2(n_layers=4, initializer_range=0.02, names='hf')", layout='flax', 3 roles)
    >>> sd = {"transformer": {"wte": {"weight": jnp.zeros((50, 8))},
    ...                       "h": [{"attn": {"c_proj": {"weight": jnp.zeros((8, 8))},
    ...                                       "c_attn": {"weight": jnp.zeros((8, 24))}}}]},
    ...       "lm_head": {"weight": jnp.zeros((50, 8))}}
    >>> new = p.apply(sd, jax.random.key(0))
    >>> new["lm_head"]["weight"] is new["transformer"]["wte"]["weight"]   # re-tied
    True
    >>> new2 = jaxinit.reinit(sd, p.rules, jax.random.key(0), layout=p.layout)
    >>> bool((new2["lm_head"]["weight"] == 0).all())                     # reinit alone: untied
    True
  """

  name: str
  roles: tuple[tuple[str, str, Any], ...]
  layout: str = "flax"
  ties: tuple[tuple[str, str], ...] = ()
  constants: tuple[tuple[str, float], ...] = ()

  fn: ClassVar[str] = "presets.Preset"

  # -- the mapping ------------------------------------------------------------

  @property
  def rules(self) -> dict[str, Any]:
    """``{pattern: rule}`` in order, for :func:`jaxinit.reinit`."""
    return {pattern: rule for _, pattern, rule in self.roles}

  def __getitem__(self, pattern: str) -> Any:
    for _, p, rule in self.roles:
      if p == pattern:
        return rule
    raise KeyError(pattern)

  def __iter__(self) -> Iterator[str]:
    return (p for _, p, _ in self.roles)

  def __len__(self) -> int:
    return len(self.roles)

  def pattern(self, role: str) -> str:
    """The pattern of ``role``."""
    for r, p, _ in self.roles:
      if r == role:
        return p
    raise KeyError(f"{self.name} has no role {role!r}; roles: {[r for r, _, _ in self.roles]}")

  @property
  def alpha(self) -> float | dict[str, float]:
    """DeepNorm's residual multiplier: a number, or ``{"encoder": ..., "decoder": ...}``."""
    return self._constant("alpha")

  @property
  def beta(self) -> float | dict[str, float]:
    """DeepNorm's initialization scale: a number, or ``{"encoder": ..., "decoder": ...}``."""
    return self._constant("beta")

  def _constant(self, what: str) -> float | dict[str, float]:
    c = dict(self.constants)
    if what in c:
      return c[what]
    parts = {k.split("_")[0]: v for k, v in c.items() if k.endswith("_" + what)}
    if not parts:
      raise AttributeError(f"{self.name} defines no {what!r}; its constants: {sorted(c)}")
    return parts

  # -- combining and applying -----------------------------------------------

  def __add__(self, other: Preset) -> Preset:
    if not isinstance(other, Preset):
      return NotImplemented
    if other.layout != self.layout:
      raise fail(
        self.fn,
        f"cannot add {other.name} (layout {other.layout!r}) to {self.name} (layout "
        f"{self.layout!r}): their names come from different layouts.",
      )
    mine = {p for _, p, _ in self.roles}
    roles = self.roles + tuple(r for r in other.roles if r[1] not in mine)
    clash = {k for k, _ in self.constants} & {k for k, _ in other.constants}
    if clash:
      raise fail(self.fn, f"{self.name} and {other.name} both define {sorted(clash)}.")
    return Preset(
      f"{self.name} + {other.name}",
      roles,
      self.layout,
      self.ties + tuple(t for t in other.ties if t not in self.ties),
      self.constants + other.constants,
    )

  def apply(self, tree: Any, key: Any, *, shardings: Any = None, mesh: Any = None) -> Any:
    """``reinit(tree, self.rules, key, layout=self.layout)``, then the ties.

    Before drawing, each role must match some path of ``tree``: a role that
    matches none fails naming the role (drop it with ``patterns={role: None}`` in
    the preset call, or point it at your names). After drawing, each tied copy
    present in ``tree`` gets its source's new value (same array).

    Args:
      tree: the parameter tree (nested dicts, linen variables, nnx State, ...).
      key: the root PRNG key.
      shardings: as for :func:`jaxinit.reinit`.
      mesh: as for :func:`jaxinit.reinit`.

    Returns:
      The tree with the preset's parameters redrawn and the ties restored.

    Raises:
      ValueError: a role matches no path (and everything ``reinit`` raises).
    """
    paths = leaf_paths(tree)
    regexes = [re.compile(p) for _, p, _ in self.roles]
    used = [False] * len(self.roles)
    for path in paths:  # first match wins, as in reinit
      hit = next((i for i, rx in enumerate(regexes) if rx.fullmatch(path)), None)
      if hit is not None:
        used[hit] = True
    for (role, pattern, rule), u in zip(self.roles, used, strict=True):
      if u or isinstance(rule, OptionalRule):
        continue
      raise fail(
        "presets.Preset.apply",
        f"the role {role!r} of {self.name} (pattern {pattern!r}) matches no parameter "
        f"path (that an earlier role does not take); if the model has no such parameter, "
        f"drop the role with patterns={{{role!r}: None}}, or give the pattern of your "
        f"names. Paths: {', '.join(paths[:20])}{' ...' if len(paths) > 20 else ''}.",
      )
    new = reinit(tree, self.rules, key, layout=self.layout, shardings=shardings, mesh=mesh)
    return _tie(new, self.ties)

  # -- display ---------------------------------------------------------------

  def __repr__(self) -> str:
    extra = "".join(f", {k}={v:.6g}" for k, v in self.constants)
    return f"Preset({self.name!r}, layout={self.layout!r}, {len(self.roles)} roles{extra})"

  def table(self) -> str:
    """The roles as a text table: role, pattern, rule."""
    w_role = max(len(r) for r, _, _ in self.roles)
    w_pat = max(len(p) for _, p, _ in self.roles)
    lines = [f"{self!r}"]
    lines += [f"  {r:<{w_role}}  {p:<{w_pat}}  {rule!r}" for r, p, rule in self.roles]
    lines += [f"  tied: {c} <- {s}" for c, s in self.ties]
    return "\n".join(lines)


def _tie(tree: Any, ties: tuple[tuple[str, str], ...]) -> Any:
  if not ties:
    return tree
  flat, treedef = flatten(tree, "presets.Preset.apply")
  index = {p: i for i, (p, _) in enumerate(flat)}
  leaves = [leaf for _, leaf in flat]
  for copy, source in ties:
    if copy in index and source in index:
      value = unbox(leaves[index[source]])
      old = leaves[index[copy]]
      leaves[index[copy]] = rebox(old, value) if is_box(old) else value
  return treedef.unflatten(leaves)


def build(
  fn: str,
  name: str,
  roles: list[tuple[str, str, Any]],
  patterns: Mapping[str, str | None] | None,
  layout: str,
  ties: tuple[tuple[str, str], ...] = (),
  constants: tuple[tuple[str, float], ...] = (),
) -> Preset:
  """A :class:`Preset` from ``(role, pattern, rule)`` rows and the caller's overrides.

  ``patterns`` maps role names to a new pattern, or to ``None`` to drop the role;
  an unknown role, a bad regular expression, two roles with one pattern, or a
  depth role whose pattern lacks the layer group fail naming ``jaxinit.<fn>``.
  """
  known = [r for r, _, _ in roles]
  overrides = dict(_pairs(fn, {} if patterns is None else patterns))
  unknown = sorted(set(overrides) - set(known))
  if unknown:
    raise fail(
      fn,
      f"`patterns` names unknown role(s) {', '.join(map(repr, unknown))}; the roles of "
      f"{name} are {', '.join(map(repr, known))}.",
    )
  out: list[tuple[str, str, Any]] = []
  seen: dict[str, str] = {}
  for role, pattern, rule in roles:
    pattern = overrides.get(role, pattern)
    if pattern is None:
      continue
    if not isinstance(pattern, str):
      raise fail(fn, f"`patterns`[{role!r}] must be a string or None, got {pattern!r}.", TypeError)
    try:
      regex = re.compile(pattern)
    except re.error as e:
      raise fail(
        fn, f"`patterns`[{role!r}] = {pattern!r} is not a valid regular expression: {e}."
      ) from None
    inner = rule.rule if isinstance(rule, OptionalRule) else rule
    if isinstance(inner, DepthRule):
      try:
        inner.check_pattern(fn, pattern, regex)
      except ValueError as e:
        raise fail(
          fn,
          f"the role {role!r} is depth-indexed: its pattern must capture the layer index "
          f"as the group (?P<layer>\\d+). {str(e).split(': ', 1)[1]}",
        ) from None
    if pattern in seen:
      raise fail(fn, f"the roles {seen[pattern]!r} and {role!r} have the same pattern {pattern!r}.")
    seen[pattern] = role
    out.append((role, pattern, rule))
  if not out:
    raise fail(fn, "`patterns` dropped every role; nothing would be initialized.")
  return Preset(name, tuple(out), layout, ties, constants)


def signature(fn_name: str, **kwargs: Any) -> str:
  """``"gpt2(n_layers=12, names='hf')"``: the preset's name, for ``Preset.name``."""
  args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
  return f"{fn_name}({args})"
