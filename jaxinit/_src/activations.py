"""The one table of named activations: each in float64 numpy (with its derivative),
for the exact computations (gains, mean-field theory), and in jax, for the
networks jaxinit builds (``jaxinit compare``).

Both forms of a name are the same function: ``gelu`` is the exact erf form
everywhere (``gelu_tanh`` is the tanh approximation, jax's
``approximate=True``), ``leaky_relu``'s slope defaults to 0.01 and ``elu``'s
alpha to 1 in both. ``tests/test_activations.py`` checks that the numpy and jax
forms agree and that each derivative is the jax gradient.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from jaxinit._src.checks import check_real, fail

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


@dataclasses.dataclass(frozen=True)
class Named:
  """One named activation: ``phi(x, param)`` in numpy float64 and in jax, and phi'."""

  numpy: Callable[[np.ndarray, Any], np.ndarray]
  derivative: Callable[[np.ndarray, Any], np.ndarray]
  jax: Callable[[jax.Array, Any], jax.Array]
  #: Default parameter, for the names that take one (``None``: takes none).
  param: float | None = None


def _elu(x, a):
  return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))


def _elu_d(x, a):
  return np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0.0)))


def _sig_d(x, _):
  s = special.expit(x)
  return s * (1.0 - s)


def _silu_d(x, _):
  s = special.expit(x)
  return s * (1.0 + x * (1.0 - s))


def _gelu_tanh(x, _):
  return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + _GELU_K * x**3)))


def _gelu_tanh_d(x, _):
  t = np.tanh(_GELU_C * (x + _GELU_K * x**3))
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_K * x * x)


def _softplus(x, _):
  return np.logaddexp(0.0, x)


def _mish(x, _):
  return x * np.tanh(np.logaddexp(0.0, x))


def _mish_d(x, _):
  t = np.tanh(np.logaddexp(0.0, x))
  return t + x * (1.0 - t * t) * special.expit(x)


_SILU = Named(lambda x, _: x * special.expit(x), _silu_d, lambda x, _: jax.nn.silu(x))

#: name -> the activation in both forms.
TABLE: dict[str, Named] = {
  "linear": Named(lambda x, _: x, lambda x, _: np.ones_like(x), lambda x, _: x),
  "relu": Named(
    lambda x, _: np.maximum(x, 0.0),
    lambda x, _: np.where(x > 0, 1.0, 0.0),
    lambda x, _: jax.nn.relu(x),
  ),
  "leaky_relu": Named(
    lambda x, a: np.where(x > 0, x, a * x),
    lambda x, a: np.where(x > 0, 1.0, a),
    lambda x, a: jax.nn.leaky_relu(x, a),
    0.01,
  ),
  "tanh": Named(
    lambda x, _: np.tanh(x), lambda x, _: 1.0 - np.tanh(x) ** 2, lambda x, _: jnp.tanh(x)
  ),
  "hard_tanh": Named(
    lambda x, _: np.clip(x, -1.0, 1.0),
    lambda x, _: np.where(np.abs(x) < 1.0, 1.0, 0.0),
    lambda x, _: jax.nn.hard_tanh(x),
  ),
  "erf": Named(
    lambda x, _: special.erf(x),
    lambda x, _: 2.0 / math.sqrt(math.pi) * np.exp(-x * x),
    lambda x, _: jax.scipy.special.erf(x),
  ),
  "sigmoid": Named(lambda x, _: special.expit(x), _sig_d, lambda x, _: jax.nn.sigmoid(x)),
  "gelu": Named(
    lambda x, _: x * special.ndtr(x),
    lambda x, _: special.ndtr(x) + x * np.exp(-0.5 * x * x) / _SQRT_2PI,
    lambda x, _: jax.nn.gelu(x, approximate=False),
  ),
  "gelu_tanh": Named(_gelu_tanh, _gelu_tanh_d, lambda x, _: jax.nn.gelu(x, approximate=True)),
  "silu": _SILU,
  "swish": _SILU,
  "elu": Named(_elu, _elu_d, lambda x, a: jax.nn.elu(x, a), 1.0),
  "selu": Named(
    lambda x, _: _SELU_SCALE * _elu(x, _SELU_ALPHA),
    lambda x, _: _SELU_SCALE * _elu_d(x, _SELU_ALPHA),
    lambda x, _: jax.nn.selu(x),
  ),
  "softplus": Named(_softplus, lambda x, _: special.expit(x), lambda x, _: jax.nn.softplus(x)),
  "mish": Named(_mish, _mish_d, lambda x, _: jax.nn.mish(x)),
  "sin": Named(lambda x, _: np.sin(x), lambda x, _: np.cos(x), lambda x, _: jnp.sin(x)),
}

#: Every activation name, sorted.
NAMES: tuple[str, ...] = tuple(sorted(TABLE))


def resolve(fn: str, name: Any, param: Any = None, arg: str = "activation") -> tuple[Named, Any]:
  """``(activation, parameter)`` for ``name``; errors name ``jaxinit.<fn>`` and ``arg``.

  ``param`` is the negative slope of ``leaky_relu`` or the alpha of ``elu``
  (their defaults when ``None``); it is an error for the other names.
  """
  if not isinstance(name, str) or name not in TABLE:
    close = difflib.get_close_matches(str(name)[:64], NAMES, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise fail(fn, f"`{arg}` must be one of {', '.join(map(repr, NAMES))}, got {name!r:.80}.{hint}")
  act = TABLE[name]
  if param is None:
    return act, act.param
  if act.param is None:
    raise fail(
      fn,
      f"`param` applies only to 'leaky_relu' (negative slope) and 'elu' (alpha), "
      f"got param={param!r} for {name!r}.",
    )
  return act, check_real(fn, "param", param)


def numpy_pair(name: str, param: Any) -> tuple[Callable, Callable]:
  """``(phi, phi')`` of a resolved name, as float64 numpy functions of one argument."""
  act = TABLE[name]
  return (lambda x: act.numpy(x, param)), (lambda x: act.derivative(x, param))


def jax_fn(name: str, param: Any = None) -> Callable[[jax.Array], jax.Array]:
  """The jax form of a resolved name, a function of one argument."""
  act = TABLE[name]
  p = act.param if param is None else param
  return lambda x: act.jax(x, p)
