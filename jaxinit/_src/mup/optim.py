"""µP learning rates for any optax optimizer: per-leaf update scaling, no extra state.

``wrap(tx, lr, wd_div)`` returns an optimizer whose update of each leaf is the wrapped
optimizer's update times the leaf's learning-rate multiplier ``c`` (``lr``), while the
wrapped optimizer sees the parameters divided by ``wd_div`` (the width part of ``c``).
For a decay coupled to the learning rate — optax's ``adamw``, ``add_decayed_weights``
before ``scale_by_learning_rate`` in any chain, torch's AdamW/SGD — the update is then

    c · (−lr) · (adam(g) + wd · p / c_w)  =  −(c·lr) · adam(g) − (c/c_w) · lr · wd · p,

i.e. learning rate ``c·lr`` and weight decay ``wd/c_w``: the per-step decay ``lr·wd`` is
independent of width, as with microsoft/mup's ``MuAdamW``/``MuSGD`` param groups
(``mup/optim.py``: ``lr /= m``, ``weight_decay *= m``) and CompleteP's Table 1, without
knowing the wrapped optimizer's learning rate, schedule, mask or decay. Multiplications by
1 are skipped. The state is the wrapped optimizer's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

from jaxinit._src.checks import fail
from jaxinit._src.mup.leafmap import check_shape, map_leaves


def check_tx(fn: str, tx: Any) -> None:
  if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
    raise fail(
      fn,
      "`tx` must be an optax.GradientTransformation (e.g. optax.adamw(1e-3)), got "
      f"{type(tx).__name__}.",
      TypeError,
    )


def scale_tree(
  fn: str, tree: Any, mults: Mapping[str, float], shapes: Mapping[str, tuple], what: str
) -> Any:
  label = {"updates": "the update of", "params": "the parameter"}[what]

  def f(path, v, c):
    check_shape(fn, path, v, shapes[path], label)
    return v if c == 1.0 else v * c

  return map_leaves(fn, tree, mults, f, what)


def scale_updates(
  fn: str, mults: Mapping[str, float], shapes: Mapping[str, tuple]
) -> optax.GradientTransformation:
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return scale_tree(fn, updates, mults, shapes, "updates"), state

  return optax.GradientTransformation(init_fn, update_fn)


def wrap(
  fn: str,
  tx: Any,
  lr: Mapping[str, float],
  wd_div: Mapping[str, float] | None,
  shapes: Mapping[str, tuple],
) -> optax.GradientTransformationExtraArgs:
  inner = optax.with_extra_args_support(tx)
  inv = None if wd_div is None else {k: 1.0 / v for k, v in wd_div.items()}

  def update_fn(updates, state, params=None, **extra):
    if params is not None and inv is not None:
      params = scale_tree(fn, params, inv, shapes, "params")
    new, state = inner.update(updates, state, params, **extra)
    return scale_tree(fn, new, lr, shapes, "updates"), state

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)
