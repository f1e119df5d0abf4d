"""Rules of ``reinit`` that are more than an initializer.

A rule whose distribution depends on another leaf (torch's default bias takes
its bound from the sibling kernel's fan-in) is resolved by ``reinit`` into an
ordinary initializer once the tree's shapes are known.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from jaxinit._src.base import Initializer
from jaxinit._src.basic import uniform
from jaxinit._src.checks import check_real, fail
from jaxinit._src.fans import fans
from jaxinit._src.layouts import Layout


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
