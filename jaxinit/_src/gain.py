"""Gains: the factor by which a nonlinearity's weights are scaled to keep the
signal's second moment constant through depth."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

import numpy as np

from jaxinit._src import activations
from jaxinit._src.checks import fail
from jaxinit._src.quadrature import gaussian_expectation

# torch.nn.init.calculate_gain's table, value for value.
_TORCH_FIXED = {
  "linear": 1.0,
  "identity": 1.0,
  "conv1d": 1.0,
  "conv2d": 1.0,
  "conv3d": 1.0,
  "conv_transpose1d": 1.0,
  "conv_transpose2d": 1.0,
  "conv_transpose3d": 1.0,
  "sigmoid": 1.0,
  "tanh": 5.0 / 3.0,
  "relu": math.sqrt(2.0),
  "selu": 3.0 / 4.0,
}


# Names beyond torch's table: every activation of ``activations``; their gain is the
# variance-preserving 1 / sqrt(E[phi(z)^2]), computed in float64.
NONLINEARITIES: tuple[str, ...] = tuple(sorted({*_TORCH_FIXED, *activations.NAMES}))


def variance_preserving_gain(
  phi: Callable[[np.ndarray], object],
  fn: str = "calculate_gain",
) -> float:
  """1 / sqrt(E[phi(z)^2]), z ~ N(0, 1), by half-range Gauss–Hermite quadrature."""
  try:
    second_moment = gaussian_expectation(lambda z: np.asarray(phi(z), np.float64) ** 2)
  except Exception as e:
    raise fail(
      fn,
      f"could not evaluate the nonlinearity {phi!r} elementwise on a float64 numpy array: {e}",
      TypeError,
    ) from None
  if not (math.isfinite(second_moment) and second_moment > 0):
    raise fail(
      fn,
      f"E[phi(z)^2] of {phi!r} is {second_moment!r}; the gain 1/sqrt(E[phi(z)^2]) "
      "needs a finite positive value.",
    )
  return 1.0 / math.sqrt(second_moment)


def gain(fn: str, nonlinearity: str | Callable, param: float | None) -> float:
  """calculate_gain, with errors naming ``jaxinit.<fn>``."""
  if callable(nonlinearity):
    if param is not None:
      raise fail(
        fn,
        "`param` applies only to 'leaky_relu' and 'elu'; bind parameters of a "
        "callable nonlinearity with functools.partial.",
      )
    return variance_preserving_gain(nonlinearity, fn)
  if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
    close = difflib.get_close_matches(str(nonlinearity)[:64], NONLINEARITIES, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise fail(
      fn,
      f"`nonlinearity` must be a callable or one of "
      f"{', '.join(map(repr, NONLINEARITIES))}, got {nonlinearity!r:.80}.{hint}",
    )
  takes_param = nonlinearity in activations.TABLE and activations.TABLE[nonlinearity].param
  if param is not None and not takes_param:
    raise fail(
      fn,
      f"`param` applies only to 'leaky_relu' (negative slope) and 'elu' (alpha), "
      f"got param={param!r} for {nonlinearity!r}.",
    )
  if nonlinearity in _TORCH_FIXED:
    return _TORCH_FIXED[nonlinearity]
  _, p = activations.resolve(fn, nonlinearity, param, "nonlinearity")
  if nonlinearity == "leaky_relu":
    if abs(p) > 1e150:  # p * p overflows: sqrt(2 / (1 + p^2)) = sqrt(2) / |p| in float64
      return math.sqrt(2.0) / abs(p)
    return math.sqrt(2.0 / (1.0 + p * p))
  phi, _ = activations.numpy_pair(nonlinearity, p)
  return variance_preserving_gain(phi, fn)


def calculate_gain(nonlinearity: str | Callable, param: float | None = None) -> float:
  r"""Returns the recommended gain for a nonlinearity.

  For the names in ``torch.nn.init.calculate_gain`` the values are exactly
  torch's:

  ==============================================  ==============================
  nonlinearity                                    gain
  ==============================================  ==============================
  linear, identity, conv1d/2d/3d,                 1
  conv_transpose1d/2d/3d, sigmoid
  tanh                                            5/3
  relu                                            sqrt(2)
  leaky_relu (``param`` = slope, default 0.01)    sqrt(2 / (1 + slope^2))
  selu                                            3/4
  ==============================================  ==============================

  For ``gelu`` (exact, erf form), ``gelu_tanh``, ``silu``/``swish``, ``elu``
  (``param`` = alpha, default 1), ``softplus``, ``mish`` and for any callable
  ``phi``, the gain is the *variance-preserving* one

  .. math:: g = 1 / \sqrt{E[\phi(z)^2]}, \quad z \sim N(0, 1),

  so that a layer with weights of variance ``g^2 / fan_in`` fed unit-variance
  pre-activations keeps ``E[x^2]`` constant. The expectation is computed in
  float64 by Gauss–Hermite quadrature on each half-line (exact for ReLU:
  E[relu(z)^2] = 1/2 gives sqrt(2), the same as torch's value). torch raises
  for these names; its ``tanh`` 5/3 and ``selu`` 3/4 are empirical and differ
  from this definition (tanh gives 1.593 by it). For self-normalizing SELU
  networks use ``lecun_normal`` (variance 1/fan_in) rather than gain 3/4.

  Args:
    nonlinearity: a name above or a callable acting elementwise on a float64
      numpy array.
    param: the negative slope of ``leaky_relu`` or the alpha of ``elu``.

  Returns:
    The gain, a Python float.

  Raises:
    ValueError: unknown name (close matches are suggested), ``param`` given
      for a name that takes none, or E[phi(z)^2] not finite and positive.

  Examples:
    >>> import math, jax, jaxinit
    >>> jaxinit.calculate_gain("relu") == math.sqrt(2)
    True
    >>> jaxinit.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    True
    >>> print(f"{jaxinit.calculate_gain(lambda z: z * (z > 0)):.12f}")  # ReLU as a callable
    1.414213562373
    >>> print(f"{jaxinit.calculate_gain('gelu'):.6f}")
    1.533530
  """
  return gain("calculate_gain", nonlinearity, param)
