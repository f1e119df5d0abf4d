"""µP (maximal update parametrization), Depth-µP and CompleteP for any parameter tree.

``parametrize(base, target)`` classifies every parameter of a model from its shapes at a
base and a target width, and gives per-parameter init-std and learning-rate multipliers
(Tensor Programs V, Table 3 / Table 8), applied by ``p.init`` (through
:func:`jaxinit.reinit`) and ``p.optimizer(tx)`` (any optax optimizer).

>>> import jax.numpy as jnp
>>> from jaxinit import mup
>>> tree = lambda w: {"hidden": jnp.zeros((w, w)), "out": jnp.zeros((w, 10))}
>>> mup.parametrize(tree(64), tree(512)).kinds
{'hidden': 'hidden', 'out': 'output'}
"""

from jaxinit._src.mup.classify import WidthMult as WidthMult
from jaxinit._src.mup.depth import Depth as Depth
from jaxinit._src.mup.parametrization import Parametrization as Parametrization
from jaxinit._src.mup.parametrization import parametrize as parametrize

__all__ = ["Depth", "Parametrization", "WidthMult", "parametrize"]
