r"""``jaxinit.mup.parametrize`` and the :class:`Parametrization` it returns.

The maximal update parametrization (µP; Yang & Hu 2021, Yang et al. 2022 "Tensor
Programs V") makes the optimal hyperparameters of a model independent of its width by
scaling, per parameter, its initialization std, its learning rate and (in one
formulation) a forward multiplier. A :class:`Parametrization` holds, for every leaf of a
parameter tree, its kind and width multipliers (``classify``), and applies the µP tables
(``tables``) to initialization (``init_rules``, through :func:`jaxinit.reinit`) and to any
optax optimizer (``optim``). Depth-µP and CompleteP add depth (``depth``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

from jaxinit._src.basic import zeros
from jaxinit._src.checks import check_bool, check_choice, check_int, fail
from jaxinit._src.framework_types import unbox
from jaxinit._src.mup import classify as classify_lib
from jaxinit._src.mup import config as config_lib
from jaxinit._src.mup import init_rules, optim, tables
from jaxinit._src.mup.classify import Leaf, Options
from jaxinit._src.mup.depth import Depth, as_depth
from jaxinit._src.mup.leafmap import align, check_shape, is_float
from jaxinit._src.tree import flatten, reinit

_FN = "mup.parametrize"
_CLS = "mup.Parametrization"
WEIGHT_DECAY = ("mup", "scaled")


def _fmt(x: float) -> str:
  return f"{x:.6g}"


def _shape(s: tuple[int, ...]) -> str:
  return "(" + ", ".join(map(str, s)) + ("," if len(s) == 1 else "") + ")"


class Parametrization:
  """µP for one model at one width: per-leaf kinds and multipliers, and what applies them.

  Built by :func:`parametrize` (or :meth:`from_config`); immutable. Per-leaf values are
  available as trees of the target's structure (``kinds``, ``width_mult``,
  ``init_mult``, ``lr_mult``, ``wd_mult``; ``None`` at leaves that are not
  floating-point arrays), as a table (``print(p)``), and are applied by :meth:`init` /
  :meth:`rules` (initialization), :meth:`optimizer` / :meth:`scale_updates` (learning
  rates and weight decay) and the forward multipliers :attr:`readout_multiplier`,
  :meth:`attention_scale` and :attr:`residual_multiplier`, which the model multiplies by.
  """

  def __init__(
    self,
    leaves: Mapping[str, Leaf],
    formulation: str,
    optimizer: str,
    readout: tuple[str, ...] | None,
    fixed: tuple[str, ...],
    depth: Depth | None,
    structure: tuple[Any, list[str]] | None = None,
  ):
    self._leaves = dict(leaves)
    self.formulation = formulation
    self.optimizer_kind = optimizer
    self._readout = readout
    self._fixed = fixed
    self.depth = depth
    self._structure = structure

  # -- per-leaf numbers ----------------------------------------------------------

  def _init(self, leaf: Leaf) -> float:
    return tables.init_multiplier(leaf.kind, leaf.width_mult.fan_in, self.formulation)

  def _lr_width(self, leaf: Leaf) -> float:
    wm = leaf.width_mult
    return tables.lr_multiplier(
      leaf.kind, wm.fan_in, wm.fan_out, self.formulation, self.optimizer_kind
    )

  def _lr(self, leaf: Leaf) -> float:
    d = self.depth.lr_multiplier(self.optimizer_kind) if leaf.block and self.depth else 1.0
    return self._lr_width(leaf) * d

  def _tree(self, f) -> Any:
    if self._structure is None:
      return {p: f(leaf) for p, leaf in self._leaves.items()}
    treedef, paths = self._structure
    vals = [f(self._leaves[p]) if p in self._leaves else None for p in paths]
    return jax.tree_util.tree_unflatten(treedef, vals)

  @property
  def paths(self) -> tuple[str, ...]:
    """The parameter paths, in tree order."""
    return tuple(self._leaves)

  @property
  def kinds(self) -> Any:
    """A tree of ``'input'``, ``'hidden'``, ``'output'`` or ``'fixed'`` per leaf."""
    return self._tree(lambda leaf: leaf.kind)

  @property
  def width_mult(self) -> Any:
    """A tree of :class:`WidthMult` (fan-in and fan-out multipliers) per leaf."""
    return self._tree(lambda leaf: leaf.width_mult)

  @property
  def init_mult(self) -> Any:
    """A tree of init std multipliers (relative to the base initializer at the base shape)."""
    return self._tree(self._init)

  @property
  def lr_mult(self) -> Any:
    """A tree of learning-rate multipliers (width and, in residual blocks, depth)."""
    return self._tree(self._lr)

  @property
  def wd_mult(self) -> Any:
    """A tree of weight-decay multipliers (``1 / (width part of the LR multiplier)``).

    With a decay coupled to the learning rate (optax ``adamw``, torch ``AdamW``), the
    per-step decay ``lr × wd`` of every leaf is then the base model's, at any width — the
    convention of :meth:`optimizer`'s default ``weight_decay='mup'``.
    """
    return self._tree(lambda leaf: 1.0 / self._lr_width(leaf))

  # -- forward multipliers -------------------------------------------------------

  @property
  def readout_multiplier(self) -> float:
    """What the model multiplies its readout's output by: ``1/m_in`` under
    ``formulation='mup_package'`` (microsoft/mup's ``MuReadout``: ``output_mult * x /
    width_mult``; TP V Table 8), 1 under ``'init_lr'`` (carried by init and LR).

    Raises:
      ValueError: several readouts with different fan-in multipliers (use
        :meth:`readout_multipliers`).
    """
    mults = set(self.readout_multipliers().values())
    if len(mults) > 1:
      raise fail(
        f"{_CLS}.readout_multiplier",
        f"the readouts have different multipliers {self.readout_multipliers()}; "
        "use p.readout_multipliers() and apply each at its readout.",
      )
    return mults.pop() if mults else 1.0

  def readout_multipliers(self) -> dict[str, float]:
    """``{path: multiplier}`` for every readout weight (output kind or tied embedding)."""
    out = {}
    for p, leaf in self._leaves.items():
      if leaf.kind == "output" or leaf.tied:
        m = leaf.width_mult.fan_out if leaf.tied else leaf.width_mult.fan_in
        out[p] = tables.readout_multiplier(m, self.formulation)
    return out

  @property
  def residual_multiplier(self) -> float:
    """``m_L^{-α}`` for each residual branch (Depth-µP / CompleteP); 1 without ``depth``."""
    return self.depth.residual_multiplier if self.depth else 1.0

  def attention_scale(self, d_head: int, base_d_head: int | None = None) -> float:
    r"""The attention-logit scale ``√(d_head_base) / d_head`` (µP's 1/d attention).

    Replaces ``1/√d_head`` in ``softmax(q·k · scale)`` (TP V Def. 4.1 and App. B.1:
    ``α_attn · √d_base / d``, equal to ``1/√d`` at the base head dimension; microsoft/mup's
    README writes ``8/d`` for ``d_base = 64``). It applies in both formulations. If only
    the number of heads scales, ``d_head == d_head_base`` and the scale stays ``1/√d``.

    Args:
      d_head: the head dimension of the target model.
      base_d_head: the head dimension at the base width; default: read from Flax attention
        kernels (``.../query/kernel`` of shape ``(d_model, heads, head_dim)``).

    Returns:
      The scale, a float.

    Raises:
      ValueError: ``base_d_head`` not given and not readable from the tree.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxinit import mup
      >>> tree = lambda w: {"w": jnp.zeros((w, w)), "out": jnp.zeros((w, 2))}
      >>> mup.parametrize(tree(64), tree(256)).attention_scale(128, base_d_head=32)
      0.044194...
    """
    fn = f"{_CLS}.attention_scale"
    d_head = check_int(fn, "d_head", d_head, minimum=1)
    if base_d_head is None:
      found = {
        leaf.base_shape[-1]
        for p, leaf in self._leaves.items()
        if len(leaf.shape) == 3 and classify_lib.QKV_KERNEL.fullmatch(p)
      }
      if len(found) != 1:
        raise fail(
          fn,
          "cannot read the base head dimension from the tree (no single Flax attention "
          f"query/key/value kernel size, found {sorted(found)}); pass base_d_head=.",
        )
      base_d_head = found.pop()
    base_d_head = check_int(fn, "base_d_head", base_d_head, minimum=1)
    return math.sqrt(base_d_head) / d_head

  # -- the table ---------------------------------------------------------------------

  def __str__(self) -> str:
    head = [
      "path",
      "shape",
      "base",
      "kind",
      "fan_in x",
      "fan_out x",
      "init std x",
      "LR x",
      "WD x",
    ]
    rows = []
    for p, leaf in self._leaves.items():
      wm = leaf.width_mult
      kind = leaf.kind + (" (tied)" if leaf.tied else "") + (" [block]" if leaf.block else "")
      rows.append(
        [
          p,
          _shape(leaf.shape),
          _shape(leaf.base_shape),
          kind,
          _fmt(wm.fan_in),
          _fmt(wm.fan_out),
          _fmt(self._init(leaf)),
          _fmt(self._lr(leaf)),
          _fmt(1.0 / self._lr_width(leaf)),
        ]
      )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: "  ".join(
      c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    ).rstrip()
    depth = (
      f", depth {self.depth.base_depth} -> {self.depth.depth} (alpha {self.depth.alpha:g})"
      if self.depth
      else ""
    )
    title = (
      f"µP ({self.formulation}, {self.optimizer_kind}{depth}): {len(rows)} parameters; "
      "multipliers relative to the base model"
    )
    forward = (
      f"forward: readout x{_fmt(self._readout_or_nan())}, residual branches "
      f"x{_fmt(self.residual_multiplier)}, attention p.attention_scale(d_head)"
    )
    sep = "-" * len(line(head))
    return "\n".join([title, line(head), sep, *map(line, rows), sep, forward])

  def _readout_or_nan(self) -> float:
    try:
      return self.readout_multiplier
    except ValueError:
      return math.nan

  def __repr__(self) -> str:
    kinds = {k: 0 for k in tables.KINDS}
    for leaf in self._leaves.values():
      kinds[leaf.kind] += 1
    counts = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
    return (
      f"Parametrization(formulation={self.formulation!r}, optimizer={self.optimizer_kind!r}, "
      f"depth={self.depth!r}; {counts})"
    )

  # -- initialization ----------------------------------------------------------------

  def _rules(
    self, fn: str, base_init: Any, readout_zero_init: bool, tree_paths: Sequence[str] | None
  ) -> dict[str, Any]:
    readout_zero_init = check_bool(fn, "readout_zero_init", readout_zero_init)
    compiled = init_rules.base_rules(fn, base_init, self._leaves)
    used = [False] * len(compiled)
    chosen: dict[str, Any] = {}
    for p, leaf in self._leaves.items():
      for r, (pattern, init) in enumerate(compiled):
        if re.fullmatch(pattern, p):
          used[r] = True
          if init is not None:
            chosen[p] = init_rules.leaf_initializer(
              fn, p, init, leaf, self._leaves, self._init(leaf)
            )
          break
      if readout_zero_init and self._is_readout(p, leaf):
        chosen[p] = zeros()
    for r, (pattern, _) in enumerate(compiled):
      if not used[r]:
        raise classify_lib.unmatched(fn, "base_init", pattern, list(self._leaves))
    if tree_paths is None:
      return {re.escape(p): init for p, init in chosen.items()}
    out = {}
    for q in tree_paths:
      key = align(self._leaves, q)
      if key in chosen:
        out[re.escape(q)] = chosen[key]
    return out

  def _is_readout(self, path: str, leaf: Leaf) -> bool:
    if leaf.tied:
      return False
    matched = any(re.fullmatch(r, path) for r in self._readout or ())
    return leaf.kind == "output" or matched

  def rules(self, base_init: Any, *, readout_zero_init: bool = False) -> dict[str, Any]:
    r"""The :func:`jaxinit.reinit` rules that draw every leaf under µP.

    Each leaf that ``base_init`` covers gets an ordinary jaxinit initializer drawing with
    the std ``base_init`` gives at the leaf's *base* shape, times its init multiplier
    (``p.init_mult``): hidden ``1/√m_in``, ``init_lr`` readout ``1/m_in``, others 1 — so
    at the base width every rule draws exactly what ``base_init`` draws (mup.init's rule).

    Args:
      base_init: one initializer (a jaxinit initializer, name or config dict) for every
        weight — every leaf with a fan-in axis; biases and norm scales are left alone —
        or ``{pattern: initializer or None}`` (regexes matched against whole paths, first
        match wins, ``None`` keeps the leaf, leaves no pattern matches are kept).
        Supported: the variance-scaling family, normal, truncated_normal, uniform,
        zeros, ones/constant (where the std does not scale), orthogonal, and
        :func:`jaxinit.torch_bias` (from the sibling kernel's *base* fan-in).
      readout_zero_init: draw the readout (output-kind leaves and every leaf ``readout=``
        matches, except a tied embedding) as zeros (TP V App. D.2).

    Returns:
      ``{re.escape(path): initializer}``, in tree order.

    Raises:
      ValueError: a pattern matching nothing; an initializer whose std cannot be scaled
        (a nonzero-mean normal on a hidden leaf, ...). TypeError: a base initializer that
        is not a jaxinit initializer.

    Examples:
      >>> import jax.numpy as jnp, jaxinit
      >>> from jaxinit import mup
      >>> tree = lambda w: {"hidden": jnp.zeros((w, w)), "out": jnp.zeros((w, 10))}
      >>> p = mup.parametrize(tree(64), tree(256))
      >>> p.rules(jaxinit.lecun_normal())
      {'hidden': lecun_normal(), 'out': variance_scaling(scale=0.25)}
    """
    return self._rules(f"{_CLS}.rules", base_init, readout_zero_init, None)

  def init(self, params: Any, key: Any, base_init: Any, *, readout_zero_init: bool = False) -> Any:
    r"""Redraws ``params`` under µP: :func:`jaxinit.reinit` with :meth:`rules`.

    Every leaf is drawn with ``jaxinit.leaf_key(key, path)`` (path-stable keys, as
    ``reinit``); leaves no rule covers come back as the same objects. Runs under
    ``jax.jit``. ``params`` may be the tree the parametrization was built from, or the
    ``params`` collection of linen variables it was built from (and the other way round).

    Args:
      params: the target model's parameters (arrays or ``jax.ShapeDtypeStruct``).
      key: the root PRNG key.
      base_init: as for :meth:`rules`.
      readout_zero_init: as for :meth:`rules`.

    Returns:
      A tree of the same structure.

    Raises:
      ValueError: ``params`` has another width than the target, or unknown paths; see
        :meth:`rules`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxinit
      >>> from jaxinit import mup
      >>> tree = lambda w: {"hidden": jnp.zeros((w, w)), "out": jnp.zeros((w, 10))}
      >>> p = mup.parametrize(tree(64), tree(1024))
      >>> new = p.init(tree(1024), jax.random.key(0), jaxinit.normal(0.02))
      >>> f"{new['hidden'].std():.4f} {new['out'].std():.5f}"   # 0.02/sqrt(16), 0.02/16
      '0.0050 0.00125'
    """
    fn = f"{_CLS}.init"
    known = []
    for path, leaf in flatten(params, fn)[0]:
      value, key_ = unbox(leaf), align(self._leaves, path)
      if key_ is not None and is_float(value):
        check_shape(fn, path, value, self._leaves[key_].shape, "parameter")
        known.append(path)
    if not known:
      raise fail(
        fn,
        "`params` has none of the parametrization's paths "
        f"({', '.join(list(self._leaves)[:5])}, ...); pass the tree it was built from.",
      )
    rules = self._rules(fn, base_init, readout_zero_init, known)
    if not rules:
      return params
    return reinit(params, rules, key, layout="flax")

  # -- optimizers --------------------------------------------------------------------

  def _tables(self):
    lr = {p: self._lr(leaf) for p, leaf in self._leaves.items()}
    wd = {p: self._lr_width(leaf) for p, leaf in self._leaves.items()}
    shapes = {p: leaf.shape for p, leaf in self._leaves.items()}
    return lr, wd, shapes

  def optimizer(
    self, tx: optax.GradientTransformation, *, weight_decay: str = "mup"
  ) -> optax.GradientTransformationExtraArgs:
    r"""``tx`` with each leaf's update multiplied by its µP learning-rate multiplier.

    Works with any optax optimizer (adam, adamw, sgd with momentum, lion, adafactor,
    chains, schedules, masks); runs under ``jit``; adds no state (the state is ``tx``'s
    own). ``optimizer='adam'`` in :func:`parametrize` fits optimizers whose updates are
    normalized entrywise (adam, adamw, lion, rmsprop, adagrad, adafactor without
    ``multiply_by_parameter_scale``); ``'sgd'`` fits sgd, momentum and nesterov.

    **Weight decay** (``weight_decay='mup'``, default): the wrapped optimizer sees every
    parameter divided by the width part ``c_w`` of its multiplier, so a decay coupled to the
    learning rate (optax ``adamw``, ``add_decayed_weights`` before the learning rate in a
    chain) acts with learning rate ``c·lr`` and weight decay ``wd/c_w``: ``lr·wd`` per step
    does not change with width. These are exactly microsoft/mup's ``MuAdamW`` / ``MuSGD``
    param groups (``decoupled_wd=False``, its default and the only behaviour of mup 1.0.0),
    TP V App. B.3 ("weight decay should be scaled independently of width") and
    CompleteP Table 1 (hidden WD ``λ·m_N``). ``weight_decay='scaled'`` passes the
    parameters unchanged, so the decay is multiplied by ``c`` like the rest (mup's
    ``decoupled_wd=True`` on a coupled optimizer; nanoGPT-mup). Use ``'scaled'`` when
    ``tx`` reads parameters for anything but decay (adafactor's
    ``multiply_by_parameter_scale``, LARS/LAMB trust ratios). Adam's ``eps`` is not
    scaled (as mup; TP V App. B.3 asks for ``eps ∝ 1/fan_in`` where it matters).

    Args:
      tx: an optax ``GradientTransformation``.
      weight_decay: ``'mup'`` or ``'scaled'`` (see above).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      TypeError: ``tx`` is not an optax transformation. ValueError: a bad
        ``weight_decay``; at update time, a tree with paths or shapes the
        parametrization does not know.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxinit import mup
      >>> tree = lambda w: {"hidden": jnp.ones((w, w)), "out": jnp.ones((w, 10))}
      >>> p = mup.parametrize(tree(64), tree(256))
      >>> tx = p.optimizer(optax.sgd(0.1))     # the µP-Adam table, on sgd's updates
      >>> updates, _ = tx.update(tree(256), tx.init(tree(256)), tree(256))
      >>> round(float(updates["hidden"][0, 0]), 6), round(float(updates["out"][0, 0]), 6)
      (-0.025, -0.025)
    """
    fn = f"{_CLS}.optimizer"
    optim.check_tx(fn, tx)
    check_choice(fn, "weight_decay", weight_decay, WEIGHT_DECAY)
    lr, wd, shapes = self._tables()
    return optim.wrap(fn, tx, lr, wd if weight_decay == "mup" else None, shapes)

  def scale_updates(self) -> optax.GradientTransformation:
    r"""A bare ``GradientTransformation`` multiplying each leaf's update by its LR multiplier.

    For a chain of your own: ``optax.chain(optax.scale_by_adam(), p.scale_updates(),
    optax.add_decayed_weights(wd), optax.scale(-lr))`` — a decay added *after* it is not
    scaled, so ``lr·wd`` per step stays width-independent (mup's convention). No state.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from jaxinit import mup
      >>> tree = lambda w: {"hidden": jnp.ones((w, w)), "out": jnp.ones((w, 10))}
      >>> p = mup.parametrize(tree(64), tree(128))
      >>> tx = optax.chain(optax.scale_by_sign(), p.scale_updates(), optax.scale(-1e-3))
      >>> u, _ = tx.update(tree(128), tx.init(tree(128)))
      >>> round(float(u["hidden"][0, 0]), 8), round(float(u["out"][0, 0]), 8)
      (-0.0005, -0.0005)
    """
    lr, _, shapes = self._tables()
    return optim.scale_updates(f"{_CLS}.scale_updates", lr, shapes)

  # -- configuration -----------------------------------------------------------------

  def config(self) -> dict[str, Any]:
    """A JSON-able dict that :meth:`from_config` turns back into an equal parametrization.

    It holds the options and, per leaf, its shapes, which axes scale, its fan axes and
    its kind — everything needed without the model.

    Examples:
      >>> import json, jax.numpy as jnp
      >>> from jaxinit import mup
      >>> tree = lambda w: {"hidden": jnp.zeros((w, w)), "out": jnp.zeros((w, 10))}
      >>> p = mup.parametrize(tree(64), tree(256))
      >>> q = mup.Parametrization.from_config(json.loads(json.dumps(p.config())))
      >>> q == p, q.lr_mult
      (True, {'hidden': 0.25, 'out': 0.25})
    """
    return {
      "format": config_lib.FORMAT,
      "formulation": self.formulation,
      "optimizer": self.optimizer_kind,
      "readout": None if self._readout is None else list(self._readout),
      "fixed": list(self._fixed),
      "depth": self.depth.config() if self.depth else None,
      "leaves": [config_lib.leaf_to_dict(leaf) for leaf in self._leaves.values()],
    }

  @classmethod
  def from_config(cls, config: Mapping[str, Any], like: Any = None) -> Parametrization:
    """Rebuilds a parametrization from :meth:`config`'s dict.

    Args:
      config: the dict.
      like: optional: a tree with the parameters' paths (the model's params or their
        ``jax.eval_shape``); the per-leaf trees (``kinds``, ``lr_mult``, ...) then take its
        structure. Without it they are flat ``{path: value}`` dicts.

    Returns:
      A :class:`Parametrization`.

    Raises:
      ValueError, TypeError: a malformed dict, or ``like`` with other paths.
    """
    fn = f"{_CLS}.from_config"
    if not isinstance(config, Mapping) or config.get("format") != config_lib.FORMAT:
      raise fail(
        fn,
        f"`config` must be a dict made by Parametrization.config() (format "
        f"{config_lib.FORMAT!r}), got {config!r:.120}.",
        TypeError,
      )
    formulation = check_choice(fn, "formulation", config.get("formulation"), tables.FORMULATIONS)
    optimizer = check_choice(fn, "optimizer", config.get("optimizer"), tables.OPTIMIZERS)
    readout = classify_lib.patterns(fn, "readout", config.get("readout"))
    fixed = classify_lib.patterns(fn, "fixed", config.get("fixed") or ()) or ()
    depth = as_depth(fn, config.get("depth"))
    raw = config.get("leaves")
    if not isinstance(raw, Sequence) or not raw:
      raise fail(fn, "`config['leaves']` must be a non-empty list of leaf dicts.")
    leaves = {}
    for d in raw:
      leaf = config_lib.leaf_from_dict(fn, d)
      leaves[leaf.path] = leaf
    structure = None
    if like is not None:
      structure = _structure(fn, like, leaves)
    return cls(leaves, formulation, optimizer, readout, tuple(fixed), depth, structure)

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, Parametrization):
      return NotImplemented
    return self.config() == other.config()

  __hash__ = None


def _structure(fn: str, tree: Any, leaves: Mapping[str, Leaf]) -> tuple[Any, list[str]]:
  """The tree's structure and paths; its floating leaves must be exactly ``leaves``."""
  flat, treedef = flatten(tree, fn)
  floats = [p for p, leaf in flat if is_float(unbox(leaf))]
  if sorted(floats) != sorted(leaves):
    missing = sorted(set(leaves) - set(floats))[:5]
    extra = sorted(set(floats) - set(leaves))[:5]
    raise fail(
      fn,
      f"`like` does not have the parametrization's parameters: missing {missing}, extra {extra}.",
    )
  return treedef, [p for p, _ in flat]


def parametrize(
  base: Any,
  target: Any,
  *,
  optimizer: str = "adam",
  readout: str | Sequence[str] | None = None,
  fixed: str | Sequence[str] | None = None,
  formulation: str = "init_lr",
  depth: Depth | Mapping[str, Any] | None = None,
  layout: Any = None,
  delta: Any = None,
) -> Parametrization:
  r"""The µP parametrization of ``target``, a model at some width, against its ``base`` width.

  ``base`` and ``target`` are the same model's parameter trees (or their
  ``jax.eval_shape`` shapes) at the base width — where the hyperparameters were tuned, or
  will be — and at the target width: Flax linen ``params`` or ``variables``, an nnx
  ``State``, an equinox module, plain dicts. As microsoft/mup's ``set_base_shapes``, a
  dimension *scales with width* when its size differs between the two (or between
  ``base`` and ``delta``, when given). Every floating-point leaf gets a kind from which of
  its fan axes scale — ``input`` (only the fan-out: input kernels, biases, norm scales,
  embedding tables), ``hidden`` (both), ``output`` (only the fan-in: the readout),
  ``fixed`` (neither) — and width multipliers ``m_in``, ``m_out`` (the fans' ratios). The
  fan axes come from the layout: Flax kernels are ``(*receptive, in, out)``, equinox
  ``(out, in, *receptive)`` (mup takes the *last* scaling dimension as the fan-in, right
  for torch only); Flax attention kernels ``.../query|key|value/kernel`` ``(d_model,
  heads, head_dim)`` and ``.../out/kernel`` ``(heads, head_dim, d_model)`` have groups of
  fan axes, so any of their dimensions may scale; equinox ``nn.Embedding`` tables are read
  ``(vocab, d)``.

  The multipliers (:mod:`tables`; all 1 at the base width):

  ========== ============ ================ =============== ================= ==========
  kind       init std ×   Adam LR ×        SGD LR ×        WD ×              forward ×
  ========== ============ ================ =============== ================= ==========
  input      1            1                m_out           1 / LR×           1
  hidden     1/√m_in      1/m_in           m_out/m_in      1 / LR×           1
  output     1/m_in       1/m_in           1/m_in          1 / LR×           1
  fixed      1            1                1               1                 1
  ========== ============ ================ =============== ================= ==========

  (``formulation='init_lr'``, TP V Table 3.) ``formulation='mup_package'`` is TP V Table 8,
  microsoft/mup's ``MuReadout`` form: the readout keeps its base std, its Adam LR is 1 (SGD
  ``m_in``), and the model multiplies the readout's output by ``p.readout_multiplier`` =
  ``1/m_in``. The two give the same training (TP V Lemma J.1) up to Adam's eps; only
  ``mup_package`` expresses a readout tied to the input embedding (TP V Table 8 caption):
  pass ``readout='<embedding path>'``. Unlike mup (``MuSharedReadout``, issue #55), the tied
  table is not rescaled by √m: it keeps its base std, as the paper's Table 8 says. Every
  model also uses µP's attention scale ``p.attention_scale(d_head)`` (1/d, not 1/√d).

  ``depth=Depth(base_depth, depth, alpha, blocks)`` adds Depth-µP (α = 1/2, TP VI) or
  CompleteP (α = 1, Dey et al. 2025, Table 1): block parameters' LR × ``m_L^{α-1}``
  (Adam) and the branch multiplier ``p.residual_multiplier`` = ``m_L^{-α}``.

  A leaf whose kind the shapes cannot tell is an error naming the path and what to pass:
  ``readout=`` / ``fixed=`` (regexes matched against whole paths) or ``layout=``.

  Args:
    base: the parameter tree at the base width.
    target: the parameter tree at the target width (same paths and ranks).
    optimizer: ``'adam'`` (any entrywise-normalized optimizer: adam, adamw, lion, rmsprop,
      adagrad) or ``'sgd'`` (sgd, momentum, nesterov).
    readout: regex(es) of the readout weights when the shapes cannot say (a tied
      embedding; torch-layout trees with embedding tables); ``()`` for a model without
      a readout weight.
    fixed: regex(es) of leaves to leave out of µP (every multiplier 1).
    formulation: ``'init_lr'`` or ``'mup_package'``.
    depth: a :class:`Depth` (or a dict of its arguments), or None.
    layout: how kernels store their fan axes: a preset (``'flax'``, ``'torch'``, ...), a
      :class:`jaxinit.Layout`, or ``{regex: layout}`` for some leaves. Default: ``'torch'``
      for an equinox module, else ``'flax'``, with the conventions above.
    delta: optional third tree at another width: a dimension scales iff it differs between
      ``base`` and ``delta`` (mup's ``set_base_shapes(delta=)``); lets ``target`` be the
      base model itself.

  Returns:
    A :class:`Parametrization`.

  Raises:
    ValueError: trees that do not pair up, nothing scaling, an ambiguous leaf, a pattern
      matching nothing, a tied readout under ``'init_lr'``. TypeError: arguments of the
      wrong type.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, jaxinit
    >>> from flax import linen as nn
    >>> from jaxinit import mup
    >>> class MLP(nn.Module):
    ...   width: int
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.relu(nn.Dense(self.width)(x))
    ...     x = nn.relu(nn.Dense(self.width)(x))
    ...     return nn.Dense(10)(x)
    >>> x = jnp.ones((1, 32))
    >>> shapes = lambda w: jax.eval_shape(MLP(w).init, jax.random.key(0), x)["params"]
    >>> p = mup.parametrize(shapes(64), shapes(256))
    >>> print(p)
    µP (init_lr, adam): 6 parameters; multipliers relative to the base model
    path            shape       base      kind    fan_in x  fan_out x  init std x  LR x  WD x
    -----------------------------------------------------------------------------------------
    Dense_0/bias    (256,)      (64,)     input          1          4           1     1     1
    Dense_0/kernel  (32, 256)   (32, 64)  input          1          4           1     1     1
    Dense_1/bias    (256,)      (64,)     input          1          4           1     1     1
    Dense_1/kernel  (256, 256)  (64, 64)  hidden         4          4         0.5  0.25     4
    Dense_2/bias    (10,)       (10,)     fixed          1          1           1     1     1
    Dense_2/kernel  (256, 10)   (64, 10)  output         4          1        0.25  0.25     4
    -----------------------------------------------------------------------------------------
    forward: readout x1, residual branches x1, attention p.attention_scale(d_head)
    >>> params = p.init(MLP(256).init(jax.random.key(0), x)["params"], jax.random.key(1),
    ...                 jaxinit.lecun_normal())
    >>> tx = p.optimizer(optax.adamw(1e-3, weight_decay=0.1))

  References:
    Yang & Hu, "Tensor Programs IV: Feature Learning in Infinite-Width Neural Networks",
    2021. Yang, Hu et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
    Hyperparameter Transfer", 2022 (Tables 3, 8; Lemma J.1; App. B). microsoft/mup 1.0.0
    (``mup/shape.py``, ``mup/optim.py``, ``mup/layer.py``, ``mup/init.py``).
  """
  fn = _FN
  formulation = check_choice(fn, "formulation", formulation, tables.FORMULATIONS)
  optimizer = check_choice(fn, "optimizer", optimizer, tables.OPTIMIZERS)
  opt = Options(
    classify_lib.layout_option(fn, layout),
    classify_lib.patterns(fn, "readout", readout),
    classify_lib.patterns(fn, "fixed", fixed) or (),
  )
  depth = as_depth(fn, depth)
  leaves = classify_lib.classify(fn, base, target, delta, opt)
  tied = [p for p, leaf in leaves.items() if leaf.tied]
  if tied and formulation == "init_lr":
    raise fail(
      fn,
      f"{tied[0]!r} is read as an input (an embedding table) and matched by `readout`: a tied "
      "embedding. formulation='init_lr' cannot express it (TP V Table 8 caption: input and "
      "output weights need different init and LR there); use formulation='mup_package' and "
      "multiply the tied readout's logits by p.readout_multiplier.",
    )
  if depth is not None:
    blocks = [p for p in leaves if re.fullmatch(depth.blocks, p)]
    if not blocks:
      raise classify_lib.unmatched(fn, "depth.blocks", depth.blocks, list(leaves))
    for p in blocks:
      leaves[p] = dataclasses.replace(leaves[p], block=True)
  flat, treedef = flatten(target, fn)
  return Parametrization(
    leaves, formulation, optimizer, opt.readout, opt.fixed, depth, (treedef, [p for p, _ in flat])
  )
