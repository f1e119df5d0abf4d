"""Rules of ``reinit`` that are more than an initializer.

A rule whose distribution depends on another leaf (torch's default bias takes
its bound from the sibling kernel's fan-in) is resolved by ``reinit`` into an
ordinary initializer once the tree's shapes are known. A depth rule
(:func:`depth_rule`) scales its draw by a function of the layer index that its
pattern captured in the leaf's path.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from jaxinit._src.base import Initializer
from jaxinit._src.basic import uniform
from jaxinit._src.checks import check_real, fail, short_repr
from jaxinit._src.fans import fans
from jaxinit._src.layouts import Layout
from jaxinit._src.serialization import get


@dataclasses.dataclass(frozen=True)
class SiblingRule:
  """Base of reinit rules that need the shape of a sibling leaf (same parent path).

  Subclasses implement ``resolve(sibling_shape, layout) -> initializer``.
  ``reinit`` finds the sibling by trying the names in ``sibling`` in order under
  the matched leaf's parent. A sibling rule is not an initializer: it cannot be
  called as ``init(key, shape)`` on its own.
  """

  sibling: str | tuple[str, ...] = ("weight", "kernel", "w")  # stored as a tuple

  name: ClassVar[str] = "sibling_rule"

  def resolve(self, sibling_shape: tuple[int, ...], layout: Layout) -> Initializer:
    raise NotImplementedError

  def __call__(self, *args, **kwargs):
    raise fail(
      self.name,
      "this rule takes its scale from a sibling kernel, so it can only be used "
      "as a rule of jaxinit.reinit (which knows the sibling), not called directly.",
      TypeError,
    )


@dataclasses.dataclass(frozen=True)
class _TorchBias(SiblingRule):
  scale: float = 1.0

  name: ClassVar[str] = "torch_bias"

  def __post_init__(self):
    sib = (self.sibling,) if isinstance(self.sibling, str) else self.sibling
    if (
      not isinstance(sib, tuple | list) or not sib or not all(isinstance(s, str) and s for s in sib)
    ):
      raise fail(
        "torch_bias",
        f"`sibling` must be a name or a sequence of names, got {self.sibling!r}.",
        TypeError,
      )
    object.__setattr__(self, "sibling", tuple(sib))
    object.__setattr__(self, "scale", check_real("torch_bias", "scale", self.scale, positive=True))

  def resolve(self, sibling_shape, layout):
    if len(sibling_shape) < 2:
      fan_in = sibling_shape[0] if sibling_shape else 1
    else:
      fan_in, _ = fans("torch_bias", tuple(sibling_shape), layout.in_axis, layout.out_axis, ())
    bound = self.scale / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(-bound, bound)

  def __repr__(self):
    return f"torch_bias(sibling={self.sibling!r}, scale={self.scale!r})"


def torch_bias(
  sibling: str | tuple[str, ...] = ("weight", "kernel", "w"), scale: float = 1.0
) -> SiblingRule:
  r"""A ``reinit`` rule for torch's default bias: ``U(-b, b)``, ``b = scale / sqrt(fan_in)``.

  ``fan_in`` is that of the **sibling kernel** (the leaf named ``sibling`` under
  the same parent as the bias, e.g. ``"Dense_0/kernel"`` for
  ``"Dense_0/bias"``), computed with the layout given to :func:`reinit`. This is
  what ``torch.nn.Linear`` and ``torch.nn.ConvNd`` do for their bias and what
  ``jax.nn.initializers`` cannot express (an initializer only sees its own
  shape). torch's default *weight* init is
  ``jaxinit.he_uniform(negative_slope=5 ** 0.5)``, i.e. ``U(-1/sqrt(fan_in),
  1/sqrt(fan_in))`` as well.

  Args:
    sibling: the sibling's name, or names tried in order (default: ``"weight"``
      (torch, equinox), ``"kernel"`` (Flax), ``"w"`` (haiku)).
    scale: multiplies the bound.

  Returns:
    A rule for :func:`reinit` (not callable as an initializer on its own).

  Raises:
    TypeError: ``sibling`` is not a name or names; ``scale`` not a number.
    ValueError: ``scale <= 0``.

  Examples:
    >>> import jax, jaxinit
    >>> params = {"fc": {"weight": jax.numpy.zeros((8, 400)), "bias": jax.numpy.zeros(8)}}
    >>> rules = {".*weight": jaxinit.he_uniform(negative_slope=5 ** 0.5),
    ...          ".*bias": jaxinit.torch_bias()}
    >>> new = jaxinit.reinit(params, rules, jax.random.key(0), layout="torch")
    >>> bool(abs(new["fc"]["bias"]).max() <= 1 / 400 ** 0.5)
    True
  """
  return _TorchBias(sibling, scale)


# ---------------------------------------------------------------------------
# Depth-aware rules.
# ---------------------------------------------------------------------------


#: The most digits a captured layer index may have (a 5000-digit index has no int).
_MAX_LAYER_DIGITS = 18


def _callable_repr(fn: Any) -> str:
  if isinstance(fn, types.FunctionType | types.BuiltinFunctionType):
    return f"<function {fn.__qualname__}>"
  return repr(fn)


@dataclasses.dataclass(frozen=True, repr=False)
class DepthRule:
  """A ``reinit`` rule whose draw is multiplied by a function of the captured layer index.

  Built by :func:`depth_rule`. ``reinit`` reads the integer ``l`` that the
  pattern's group ``group`` captured in a leaf's path, draws the leaf with
  ``init`` (as any rule, with the leaf's path-stable key) and multiplies it by
  ``scale(l)``. Two depth rules are equal when their ``init``, ``scale`` and
  ``group`` are: the same function object, or equal callable objects (a
  frozen dataclass, as the presets use). A depth rule pickles where its
  ``init`` and ``scale`` do (a module-level function does, a lambda does not).
  """

  init: Any
  scale: Callable[[int], float]
  group: int | str = 1

  name: ClassVar[str] = "depth_rule"

  def check_pattern(self, fn: str, pattern: str, regex: re.Pattern) -> None:
    """Fails unless ``regex`` has the group this rule reads the layer index from."""
    has = (
      self.group in regex.groupindex
      if isinstance(self.group, str)
      else 1 <= self.group <= regex.groups
    )
    if not has:
      raise fail(
        fn,
        f"the rule {pattern!r} ({self!r}) reads the layer index from group "
        f"{self.group!r}, but the pattern has no such group; capture the index in "
        r"the pattern, e.g. 'h/(\d+)/mlp/c_proj/weight'.",
      )

  def factor(self, fn: str, pattern: str, path: str, match: re.Match) -> float:
    """``scale(l)`` for the leaf ``path`` matched by ``match``, checked."""
    text = match.group(self.group)
    if text is None or not text.isdecimal() or len(text) > _MAX_LAYER_DIGITS:
      raise fail(
        fn,
        f"the rule {pattern!r} ({self!r}) matched {path!r}, but its group "
        f"{self.group!r} captured {short_repr(text)}, not a layer index (a non-negative "
        f"integer of at most {_MAX_LAYER_DIGITS} digits).",
      )
    layer = int(text)
    try:
      value = self.scale(layer)
    except Exception as e:
      raise fail(
        fn,
        f"the rule {pattern!r} ({self!r}) matched {path!r} (layer {layer}), and "
        f"its scale({layer}) raised {type(e).__name__}: {e}",
      ) from e
    what = f"the rule {pattern!r} ({self!r}) matched {path!r} (layer {layer}): scale({layer})"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real | np.floating):
      raise fail(fn, f"{what} returned {value!r}; it must return a real number.", TypeError)
    try:
      value = float(value)
    except OverflowError:  # an int beyond float64
      raise fail(fn, f"{what} returned {short_repr(value)}; it must fit a float64.") from None
    if not math.isfinite(value):
      raise fail(fn, f"{what} returned {value!r}; it must be finite.")
    return value

  def __call__(self, *args, **kwargs):
    raise fail(
      self.name,
      "this rule draws each layer with its own scale, read from the layer index in "
      "the parameter's path, so it can only be used as a rule of jaxinit.reinit (or "
      "init_linen / init_nnx), not called directly.",
      TypeError,
    )

  def __repr__(self):
    group = "" if self.group == 1 else f", group={self.group!r}"
    init = (
      repr(self.init)
      if not isinstance(self.init, types.FunctionType)
      else (_callable_repr(self.init))
    )
    return f"depth_rule({init}, scale={_callable_repr(self.scale)}{group})"


def depth_rule(init: Any, scale: Callable[[int], float], group: int | str = 1) -> DepthRule:
  r"""A ``reinit`` rule that draws layer ``l`` with ``init`` multiplied by ``scale(l)``.

  The layer index ``l`` is the integer that the rule's pattern captures in
  group ``group`` (``r"h/(\d+)/mlp/c_proj/weight"``: GPT-2's layer; Hugging
  Face and torch count layers from 0). Each matching leaf is drawn as by an
  ordinary rule -- with its own path-stable key (:func:`jaxinit.leaf_key`), its
  layout, its sharding -- and its values are multiplied by ``scale(l)`` in
  float32 (float64 for 64-bit leaves) before the cast to the leaf's dtype. So
  the standard deviation of layer ``l`` is ``scale(l)`` times that of
  ``init``: one rule expresses the depth-scaled initializations of Megatron's
  ``0.02 / sqrt(2 (l + 1))`` (torchtitan's ``depth_init``) or OLMo's
  ``1 / sqrt(2 d (l + 1))``, instead of one rule per layer.

  ``reinit`` resolves the rule on the host for every leaf before anything is
  drawn (a pattern without that group, a capture that is not a non-negative
  integer, or a ``scale`` that fails or returns a non-finite number is an
  error naming the rule, the path and the layer). The multiplier is an argument
  of the compiled draw, not part of it: a 96-layer model compiles the draw once
  per distinct shape, not once per layer.

  Args:
    init: what every matching leaf is drawn with before scaling: a jaxinit
      initializer, a name or config dict (:func:`jaxinit.get`), a
      :func:`jaxinit.torch_bias` rule, or any ``init(key, shape, dtype)`` callable.
    scale: a function of the layer index (an ``int``) returning the multiplier,
      a finite real number. A module-level function or a callable object that
      compares by value (a frozen dataclass) keeps the rule picklable and equal to
      an identical rule; a lambda works but does neither.
    group: the number (>= 1) or name of the pattern's group holding the layer index.

  Returns:
    A rule for :func:`jaxinit.reinit`, :func:`jaxinit.init_linen` and
    :func:`jaxinit.init_nnx` (not callable as an initializer on its own).

  Raises:
    TypeError: ``init`` is not an initializer, name, dict, sibling rule or
      callable; ``scale`` is not callable; ``group`` is not an int or a name.
    ValueError: ``group < 1`` or an empty name.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> params = {"h": [{"c_proj": {"weight": jnp.zeros((512, 512))}} for _ in range(4)]}
    >>> rule = jaxinit.depth_rule(jaxinit.normal(0.02), lambda l: (2 * (l + 1)) ** -0.5)
    >>> new = jaxinit.reinit(params, {r"h/(\d+)/c_proj/weight": rule}, jax.random.key(0))
    >>> [round(float(new["h"][l]["c_proj"]["weight"].std()), 4) for l in range(4)]
    [0.0141, 0.01, 0.0082, 0.0071]

  References:
    M. Shoeybi et al., "Megatron-LM: training multi-billion parameter language
    models using model parallelism", 2019 (the scaled output init);
    torchtitan v0.2.2 ``torchtitan/models/llama3/model/model.py`` (``depth_init``).
  """
  fn = "depth_rule"
  if init is None or isinstance(init, DepthRule):
    raise fail(
      fn,
      f"`init` must be an initializer, a name or config dict, a sibling rule or an "
      f"init(key, shape, dtype) callable, got {init!r}.",
      TypeError,
    )
  if isinstance(init, str | Mapping):
    init = _get(fn, "init", init)
  elif not (isinstance(init, Initializer | SiblingRule) or callable(init)):
    raise fail(
      fn,
      f"`init` must be an initializer, a name or config dict, a sibling rule or an "
      f"init(key, shape, dtype) callable, got {init!r}.",
      TypeError,
    )
  if not callable(scale) or isinstance(scale, Initializer):
    raise fail(
      fn,
      f"`scale` must be a function of the layer index returning a multiplier, got {scale!r}.",
      TypeError,
    )
  if isinstance(group, bool | np.bool_) or not isinstance(group, numbers.Integral | str):
    raise fail(fn, f"`group` must be a group number or name, got {group!r}.", TypeError)
  if isinstance(group, str) and not group:
    raise fail(fn, "`group` must be a group number (>= 1) or a non-empty name, got ''.")
  if not isinstance(group, str):
    group = int(group)
    if group < 1:
      raise fail(fn, f"`group` must be >= 1 (group 0 is the whole match), got {group}.")
  return DepthRule(init, scale, group)


# ---------------------------------------------------------------------------
# Optional rules.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class OptionalRule:
  """A ``reinit`` rule that may match no parameter (built by :func:`optional`)."""

  rule: Any

  name: ClassVar[str] = "optional"

  def __call__(self, *args, **kwargs):
    raise fail(
      self.name,
      "this is a rule of jaxinit.reinit (it says the rule may match nothing), not an "
      "initializer; call the rule it wraps instead.",
      TypeError,
    )

  def __repr__(self):
    return f"optional({self.rule!r})"


def optional(rule: Any) -> OptionalRule:
  """Marks a ``reinit`` rule as allowed to match no parameter.

  ``reinit`` refuses a rule that matches nothing, since it usually means a typo.
  A catch-all such as "every bias is zero" is different: a model without biases
  is fine. ``optional(rule)`` behaves as ``rule`` on every path it matches, and
  matching none is not an error. The presets' catch-all roles are optional.

  Args:
    rule: anything ``reinit`` accepts as a rule value (an initializer, a name or
      config dict, a callable, :func:`jaxinit.torch_bias`,
      :func:`jaxinit.depth_rule`, or None to keep).

  Returns:
    A rule for :func:`jaxinit.reinit`.

  Raises:
    TypeError: ``rule`` is already optional.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> params = {"fc": {"weight": jnp.zeros((4, 3))}}       # no biases
    >>> rules = {".*bias": jaxinit.optional(jaxinit.zeros()), ".*weight": jaxinit.normal()}
    >>> jaxinit.reinit(params, rules, jax.random.key(0))["fc"]["weight"].shape
    (4, 3)
  """
  if isinstance(rule, OptionalRule):
    raise fail("optional", f"`rule` is already optional: {rule!r}.", TypeError)
  if isinstance(rule, str | Mapping):
    _get("optional", "rule", rule)  # a bad name or config fails here, not at reinit
  elif not (rule is None or callable(rule) or isinstance(rule, SiblingRule | DepthRule)):
    raise fail(
      "optional",
      "`rule` must be what reinit takes as a rule (an initializer, a name or config dict, "
      f"an init(key, shape, dtype) callable, a sibling or depth rule, or None), got "
      f"{short_repr(rule)}.",
      TypeError,
    )
  return OptionalRule(rule)


def _get(fn: str, arg: str, identifier: Any) -> Any:
  """``get(identifier)``, its errors naming ``jaxinit.<fn>`` and ``arg``."""
  try:
    return get(identifier)
  except (TypeError, ValueError) as e:
    raise type(e)(f"jaxinit.{fn}: `{arg}`: {e}") from None
