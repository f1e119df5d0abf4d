r"""Depth scaling of residual networks: Depth-µP (α = 1/2) and CompleteP (α = 1).

A residual network ``x_l = x_{l-1} + m_L^{-α} F_l(x_{l-1})`` with ``m_L = L / L_base``
keeps its optimal hyperparameters across depth when the branch multiplier and the
learning rates of the parameters *inside* the residual blocks scale with ``m_L``:

* Tensor Programs VI (Yang, Yu, Zhu, Hayou 2023, arXiv 2310.02244v5), Table 1 and
  Eq. (1): branch multiplier ``a/√L``; block learning rate η (SGD) or ``η/√L`` (Adam).
  §6.3 / Def. 6.2, Eq. (4): block learning rate ``η n^{-1} L^{-γ}``; Claims 7.1-7.5:
  stable and faithful for ``α ∈ [1/2, 1]`` with ``α + γ = 1``, and Depth-µP is
  ``α = γ = 1/2``; footnote 5: the effective learning rate is ``∝ L^{-γ}`` for Adam and
  ``∝ L^{α-γ}`` for SGD.
* CompleteP (Dey et al. 2025, arXiv 2505.01618), Table 1 (the α ∈ {0.5, 1} column):
  residual ``X + m_L^{-α} F(LN(X))``; AdamW learning rate of hidden weights, hidden
  biases and pre-LN parameters ``× m_L^{α-1}``; weight decay, initialization, embedding,
  final LN and unembedding not scaled with depth.

So for Adam-like optimizers a block parameter's learning rate is multiplied by
``m_L^{α-1}`` (TP VI's ``L^{-γ}``, γ = 1 − α), and for SGD by ``m_L^{2α-1}``
(``L^{α-γ}``; derived from TP VI's footnote 5 — no paper tabulates SGD for α = 1).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from jaxinit._src.checks import check_int, check_real, fail

_FN = "mup.Depth"
#: The largest depth (number of residual blocks): multipliers such as
#: ``(depth / base_depth) ** -alpha`` are computed in float64, exact for ints up to 2**53.
MAX_DEPTH = 2**53


@dataclasses.dataclass(frozen=True)
class Depth:
  r"""Depth-µP / CompleteP settings for :func:`jaxinit.mup.parametrize`.

  ``m_L = depth / base_depth``; the model multiplies each residual branch by
  ``residual_multiplier = m_L^{-α}``, and the learning rate of every parameter
  whose path matches ``blocks`` (the parameters inside residual blocks: their
  hidden weights, biases and norm scales) is multiplied by ``m_L^{α-1}`` (Adam-like)
  or ``m_L^{2α-1}`` (SGD). ``alpha=0.5`` is Depth-µP (TP VI, Claim 7.5), ``alpha=1``
  is CompleteP (Dey et al. 2025, Table 1). Initialization and weight decay are not
  depth-scaled (CompleteP, Table 1).

  Args:
    base_depth: the number of residual blocks at which the hyperparameters were tuned.
    depth: the number of residual blocks of the target model.
    alpha: the branch exponent α, in [1/2, 1].
    blocks: a regular expression matching (``re.fullmatch``) the paths of the
      parameters inside residual blocks, e.g. ``r"blocks_\d+/.*"``.

  Raises:
    TypeError, ValueError: a bad argument (named in the message).

  Examples:
    >>> from jaxinit import mup
    >>> d = mup.Depth(base_depth=2, depth=8, alpha=0.5, blocks=r"block_\d+/.*")
    >>> d.residual_multiplier, d.lr_multiplier("adam"), d.lr_multiplier("sgd")
    (0.5, 0.5, 1.0)
    >>> mup.Depth(2, 8, alpha=1.0, blocks=".*").lr_multiplier("adam")   # CompleteP
    1.0

  References:
    Yang, Yu, Zhu, Hayou, "Tensor Programs VI: Feature Learning in Infinite-Depth
    Neural Networks", 2023 (Table 1, Eq. (1), Eq. (4), Claims 7.1-7.5). Dey et al.,
    "Don't be lazy: CompleteP enables compute-efficient deep transformers", 2025
    (Table 1).
  """

  base_depth: int
  depth: int
  alpha: float = 0.5
  blocks: str = ".*"

  def __post_init__(self):
    object.__setattr__(
      self,
      "base_depth",
      check_int(_FN, "base_depth", self.base_depth, minimum=1, maximum=MAX_DEPTH),
    )
    object.__setattr__(
      self, "depth", check_int(_FN, "depth", self.depth, minimum=1, maximum=MAX_DEPTH)
    )
    alpha = check_real(_FN, "alpha", self.alpha)
    if not 0.5 <= alpha <= 1.0:
      raise fail(
        _FN,
        f"`alpha` must lie in [0.5, 1] (0.5: Depth-µP, 1: CompleteP; outside that range "
        f"training is unstable or unfaithful, TP VI Claims 7.1-7.3), got {alpha!r}.",
      )
    object.__setattr__(self, "alpha", alpha)
    if not isinstance(self.blocks, str):
      raise fail(
        _FN, f"`blocks` must be a regular expression (a string), got {self.blocks!r}.", TypeError
      )
    try:
      re.compile(self.blocks)
    except re.error as e:
      raise fail(_FN, f"`blocks`={self.blocks!r} is not a valid regular expression: {e}.") from None

  @property
  def multiplier(self) -> float:
    """``m_L = depth / base_depth``."""
    return self.depth / self.base_depth

  @property
  def residual_multiplier(self) -> float:
    """``m_L^{-α}``: what the model multiplies each residual branch by."""
    return self.multiplier**-self.alpha

  def lr_multiplier(self, optimizer: str) -> float:
    """A block parameter's LR multiplier: ``m_L^{α-1}`` (Adam), ``m_L^{2α-1}`` (SGD)."""
    exponent = self.alpha - 1.0 if optimizer == "adam" else 2.0 * self.alpha - 1.0
    return self.multiplier**exponent

  def config(self) -> dict[str, Any]:
    """A JSON-able dict; ``Depth(**config)`` rebuilds it."""
    return dataclasses.asdict(self)


def as_depth(fn: str, depth: Any) -> Depth | None:
  """``None``, a :class:`Depth`, or a dict of its arguments."""
  if depth is None or isinstance(depth, Depth):
    return depth
  if isinstance(depth, Mapping):
    allowed = [f.name for f in dataclasses.fields(Depth)]
    unknown = sorted(set(depth) - set(allowed))
    if unknown:
      raise fail(
        fn,
        f"`depth` has unknown key(s) {', '.join(map(repr, unknown))}; it takes "
        f"{', '.join(allowed)}.",
        TypeError,
      )
    return Depth(**depth)
  raise fail(
    fn,
    "`depth` must be None, a jaxinit.mup.Depth(base_depth, depth, alpha, blocks) or a dict "
    f"of those arguments, got {depth!r}.",
    TypeError,
  )
