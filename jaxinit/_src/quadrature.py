"""Gaussian expectations E[f(z)], z ~ N(0, 1), by half-range Gauss–Hermite quadrature.

Full-line Gauss–Hermite converges slowly for activations with a kink at 0
(relative error 1e-5 for ELU with 300 nodes, and numpy's rule breaks down above
about 300 nodes). Splitting the line at 0 and using, on each half, the Gauss
rule for the Hermite weight ``exp(-z^2/2)`` on ``[0, inf)`` makes every
activation that is smooth on each side of 0 (ReLU, leaky ReLU, ELU, GELU, tanh,
...) converge geometrically: ReLU's E[relu(z)^2] = 1/2 comes out exact.

The half-range rule is built once: a fine Gauss–Legendre discretization of the
weight on [0, 14] (the mass beyond 14 is 1e-44) is reduced by the Stieltjes
procedure to its three-term recurrence, and the Golub–Welsch eigenproblem of
the Jacobi matrix gives nodes and weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

#: Nodes per half-line. Exact for polynomials of degree <= 79 on each half.
NODES = 40


@functools.cache
def half_range_rule(n: int = NODES) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights of the n-point Gauss rule for phi(z) dz on [0, inf).

  The weights sum to 1/2 (the half-line mass of the standard normal).
  """
  x, w = np.polynomial.legendre.leggauss(300)
  length = 14.0
  x = (x + 1.0) * (length / 2.0)
  w = w * (length / 2.0) * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
  alpha = np.zeros(n)
  beta = np.zeros(n)
  beta[0] = w.sum()
  p_prev = np.zeros_like(x)
  p = np.ones_like(x)
  norm_prev = 1.0
  for k in range(n):
    norm = np.sum(w * p * p)
    alpha[k] = np.sum(w * x * p * p) / norm
    if k > 0:
      beta[k] = norm / norm_prev
    p_next = (x - alpha[k]) * p - (beta[k] * p_prev if k > 0 else 0.0)
    # Rescale the three stored polynomials together; the ratios stay the same.
    s = math.sqrt(np.sum(w * p_next * p_next))
    p_prev, p, norm_prev = p / s, p_next / s, norm / (s * s)
  jacobi = np.diag(alpha) + np.diag(np.sqrt(beta[1:]), 1) + np.diag(np.sqrt(beta[1:]), -1)
  nodes, vecs = np.linalg.eigh(jacobi)
  weights = vecs[0] ** 2
  weights *= 0.5 / weights.sum()
  return nodes, weights


def gaussian_expectation(f: Callable[[np.ndarray], Any], scale: float = 1.0) -> float:
  """E[f(scale * z)] for z ~ N(0, 1), in float64.

  ``f`` is called once on a float64 numpy array of nodes; a function returning
  a jax array (computed in float32 unless x64 is on) is accepted and converted.
  """
  z, w = half_range_rule()
  nodes = np.concatenate([-z[::-1], z]) * scale
  weights = np.concatenate([w[::-1], w])
  values = np.asarray(f(nodes), dtype=np.float64)
  if values.shape != nodes.shape:
    raise ValueError(f"the function returned shape {values.shape} for inputs of shape "
                     f"{nodes.shape}; it must act elementwise")
  return float(np.dot(weights, values))
