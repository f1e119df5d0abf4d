"""Test helpers for initializers — jaxinit's own and yours.

>>> import jax, jaxinit
>>> from jaxinit import testing
>>> init = jaxinit.glorot_uniform()
>>> w = testing.assert_conforms(init, (256, 512))
>>> testing.assert_moments(w, mean=0.0, var=2 / (256 + 512))
>>> p = testing.assert_ks(w, "uniform", (-(6 / 768) ** 0.5, 2 * (6 / 768) ** 0.5))
"""

from jaxinit._src.testing import assert_conforms as assert_conforms
from jaxinit._src.testing import assert_ks as assert_ks
from jaxinit._src.testing import assert_moments as assert_moments
from jaxinit._src.testing import assert_orthonormal as assert_orthonormal
from jaxinit._src.testing import moment_z_scores as moment_z_scores

__all__ = [
  "assert_conforms",
  "assert_ks",
  "assert_moments",
  "assert_orthonormal",
  "moment_z_scores",
]
