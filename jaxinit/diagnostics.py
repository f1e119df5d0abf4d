"""Diagnostics for any JAX model: signal propagation, gradients, Jacobian spectra, and the
µP coordinate check (how training moves each layer's output across widths).

Same three call forms as :func:`jaxinit.lsuv`: ``(module, variables, batch)`` for
Flax linen, ``(model, batch)`` for Flax nnx, ``(apply_fn, params, batch)`` for a
pure function. Plots need matplotlib (``pip install 'jaxinit[notebooks]'``).

>>> import jax, jax.numpy as jnp
>>> from jaxinit import diagnostics
>>> f = lambda params, x: jnp.tanh(x @ params["w"])
>>> params = {"w": jnp.eye(8)}
>>> spec = diagnostics.jacobian_spectrum(f, params, jnp.zeros((2, 8)))  # tanh'(0) = 1
>>> spec.singular_values.round(6).tolist() == [1.0] * 8
True
"""

from jaxinit._src.coord_check import CoordCheck as CoordCheck
from jaxinit._src.coord_check import coord_check as coord_check
from jaxinit._src.diagnostics import GradientReport as GradientReport
from jaxinit._src.diagnostics import JacobianSpectrum as JacobianSpectrum
from jaxinit._src.diagnostics import SignalReport as SignalReport
from jaxinit._src.diagnostics import default_loss as default_loss
from jaxinit._src.diagnostics import gradient_norms as gradient_norms
from jaxinit._src.diagnostics import jacobian_spectrum as jacobian_spectrum
from jaxinit._src.diagnostics import layer_outputs as layer_outputs
from jaxinit._src.diagnostics import plot_gradient_norms as plot_gradient_norms
from jaxinit._src.diagnostics import plot_jacobian_spectrum as plot_jacobian_spectrum
from jaxinit._src.diagnostics import plot_signal_propagation as plot_signal_propagation
from jaxinit._src.diagnostics import signal_propagation as signal_propagation

__all__ = [
  "CoordCheck",
  "GradientReport",
  "JacobianSpectrum",
  "SignalReport",
  "coord_check",
  "default_loss",
  "gradient_norms",
  "jacobian_spectrum",
  "layer_outputs",
  "plot_gradient_norms",
  "plot_jacobian_spectrum",
  "plot_signal_propagation",
  "signal_propagation",
]
