"""Mean-field theory of deep random networks: q*, chi_1, the edge of chaos, depth scales.

Every expectation is computed in float64 by Gauss quadrature split at 0, so the
known points come out to ~1e-8 or better: tanh with sigma_b = 0 is critical at
sigma_w = 1, ReLU at sigma_w^2 = 2 (He initialization).

>>> from jaxinit import mean_field
>>> round(mean_field.critical_sigma_w("relu") ** 2, 12)
2.0
>>> round(mean_field.chi1("tanh", 1.0, 0.0), 12)
1.0
"""

from jaxinit._src.mean_field import ACTIVATIONS as ACTIVATIONS
from jaxinit._src.mean_field import Activation as Activation
from jaxinit._src.mean_field import CriticalLine as CriticalLine
from jaxinit._src.mean_field import DepthScales as DepthScales
from jaxinit._src.mean_field import activation as activation
from jaxinit._src.mean_field import chi1 as chi1
from jaxinit._src.mean_field import correlation_map as correlation_map
from jaxinit._src.mean_field import critical_line as critical_line
from jaxinit._src.mean_field import critical_sigma_w as critical_sigma_w
from jaxinit._src.mean_field import depth_scales as depth_scales
from jaxinit._src.mean_field import length_map as length_map
from jaxinit._src.mean_field import plot_phase_diagram as plot_phase_diagram
from jaxinit._src.mean_field import q_star as q_star

__all__ = [
  "ACTIVATIONS",
  "Activation",
  "CriticalLine",
  "DepthScales",
  "activation",
  "chi1",
  "correlation_map",
  "critical_line",
  "critical_sigma_w",
  "depth_scales",
  "length_map",
  "plot_phase_diagram",
  "q_star",
]
