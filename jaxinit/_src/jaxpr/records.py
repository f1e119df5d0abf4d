"""The records of a flattened program: its steps, where values come from, and its layers.

Plain data, shared by every stage: :mod:`.flatten` produces :class:`Step` and
:class:`Origin`, :mod:`.discover` produces :class:`Layer` and :class:`Bias`,
and :mod:`.run` hands :class:`LayerIO` to a hook and takes a :class:`LayerUpdate`
back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from jaxinit._src.jaxpr.index import Index


@dataclasses.dataclass(frozen=True, eq=False)
class Const:
  """A literal or closed-over constant of the traced program."""

  value: Any


@dataclasses.dataclass(eq=False)
class Step:
  """One operation of the flattened program: ``outs = fn(*ins)``."""

  prim: str
  params: dict
  ins: tuple  # int ids or Const
  outs: tuple[int, ...]
  fn: Callable[..., list]
  source: str = ""


@dataclasses.dataclass(frozen=True)
class Origin:
  """How a value derives from a parameter leaf: ``ops(leaf[index])``.

  ``ops`` are ``(step, position)`` pairs applied in order, each a layout
  operation whose input at ``position`` is the running value (its other
  inputs are constants). ``elementwise`` says all ops so far commute with
  indexing (casts, scalar multiplies), so a later static slice can be folded
  into ``index``; ``bijective`` says they only permute and cast entries.
  """

  leaf: int
  index: Index
  ops: tuple[tuple[int, int], ...] = ()
  elementwise: bool = True
  bijective: bool = True


@dataclasses.dataclass(frozen=True)
class Bias:
  """The bias add that follows a layer."""

  path: str
  leaf: int
  index: Index
  atom: int  # the id of the bias operand of the add
  step: int  # the add
  act_pos: int  # which operand of the add is the layer's output


@dataclasses.dataclass(frozen=True)
class Layer:
  """A linear layer found in a model, in execution order.

  Attributes:
    index: position in execution order (0 for the first layer called).
    path: the weight's parameter path, '/'-joined (``'Dense_0/kernel'``); a
      static slice of a stacked weight (``nn.scan``) is appended as ``'[3]'``.
    kind: ``'dot'`` (dot_general: dense, einsum, attention projections) or
      ``'conv'``.
    weight_shape: shape of the weight entries the layer reads.
    fan_in: number of weight entries each output entry sums over.
    fan_out: number of output features.
    output_shape: shape of the layer's output (after its bias).
    bias_path: path of the bias added to the output, or None.
    tied_to: index of an earlier layer whose weight entries this layer also
      reads (a tied weight), or None.
    read_earlier: the weight entries are read before this layer by an
      operation that is not a layer — the lookup of an embedding that is tied
      to an output projection. LSUV leaves such a weight alone: scaling it
      would change everything computed after that earlier read.
    read_later: the weight entries are read again after this layer (by a
      layer tied to it, or by any other operation).
    source: where the model's code called it (``file:line (function)``).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> params = {"b_second": jnp.ones((16, 4)), "a_first": jnp.ones((8, 16))}
    >>> apply_fn = lambda p, x: jnp.tanh(x @ p["a_first"]) @ p["b_second"]
    >>> [(l.index, l.path, l.kind, l.fan_in, l.fan_out)
    ...  for l in jaxinit.find_layers(apply_fn, params, jnp.ones((2, 8)))]
    [(0, 'a_first', 'dot', 8, 16), (1, 'b_second', 'dot', 16, 4)]
  """

  index: int
  path: str
  kind: str
  weight_shape: tuple[int, ...]
  fan_in: int
  fan_out: int
  output_shape: tuple[int, ...]
  bias_path: str | None
  tied_to: int | None
  read_earlier: bool
  read_later: bool
  source: str
  # -- internals used by the interpreter (jaxpr.run) --
  leaf: int = dataclasses.field(repr=False)
  weight_index: Index = dataclasses.field(repr=False)
  weight_atom: int = dataclasses.field(repr=False)
  step: int = dataclasses.field(repr=False)
  in_axes: tuple[int, ...] = dataclasses.field(repr=False)
  out_axes: tuple[int, ...] = dataclasses.field(repr=False)
  batch_axes: tuple[int, ...] = dataclasses.field(repr=False)
  output_step: int = dataclasses.field(repr=False)
  output: int = dataclasses.field(repr=False)
  chain: tuple[int, ...] = dataclasses.field(repr=False)
  post: int = dataclasses.field(repr=False)
  bias: Bias | None = dataclasses.field(repr=False)
  bias_shared: bool = dataclasses.field(repr=False, default=False)


@dataclasses.dataclass
class LayerIO:
  """What a hook sees at a layer's output during :func:`~jaxinit._src.jaxpr.run.evaluate`.

  ``pre`` is the layer's output without its bias, computed with the current
  weight; ``bias_term`` is the bias operand as added (it broadcasts against
  ``pre``), or None; ``weight`` and ``bias`` are the current parameter entries
  the layer reads. ``bias_fn(b)`` gives the bias operand for bias entries ``b``.
  """

  layer: Layer
  pre: jax.Array
  bias_term: jax.Array | None
  weight: jax.Array
  bias: jax.Array | None
  bias_fn: Callable[[jax.Array], jax.Array] | None


@dataclasses.dataclass
class LayerUpdate:
  """A hook's answer: new weight entries, new bias entries, and the output
  the forward pass continues with (recomputed from the new parameters when
  None)."""

  weight: jax.Array | None = None
  bias: jax.Array | None = None
  output: jax.Array | None = None
