"""The registry the conformance sweep is driven from.

Every registered initializer name must have an entry (a test checks this), so a
new initializer cannot skip the sweep. Each entry lists example configurations
and the shape families it accepts.
"""

from __future__ import annotations

import jax.numpy as jnp

import jaxinit

SHAPES = {
  "scalar": (),
  "vector": (7,),
  "dense": (16, 32),
  "conv1d": (3, 4, 8),
  "conv2d": (3, 3, 4, 8),
  "conv3d": (2, 3, 3, 4, 8),
  "zero_size": (3, 3, 0, 8),
}
ALL = tuple(SHAPES)
MATRICES = tuple(s for s in SHAPES if s not in ("scalar", "vector"))
CORE = ("dense", "conv2d", "zero_size")

# float32 is swept by shape; these are the other dtypes, swept on one shape.
REAL = (jnp.bfloat16, jnp.float16)
COMPLEX = (jnp.complex64,)

# name -> (example initializers, shape families, dtypes)
CASES: dict[str, tuple[tuple, tuple[str, ...], tuple]] = {
  "zeros": ((jaxinit.zeros(),), ALL, REAL + COMPLEX),
  "ones": ((jaxinit.ones(),), ALL, REAL + COMPLEX),
  "constant": ((jaxinit.constant(-0.3), jaxinit.constant(2)), ALL, REAL + COMPLEX),
  "normal": ((jaxinit.normal(), jaxinit.normal(1.0, -2.0)), ALL, REAL + COMPLEX),
  "uniform": ((jaxinit.uniform(), jaxinit.uniform(0.0, 1.0)), ALL, REAL),
  "truncated_normal": (
    (
      jaxinit.truncated_normal(),
      jaxinit.truncated_normal(1.0, 0.5, -1.0, 3.0),
      jaxinit.truncated_normal(0.02, exact_std=True),
    ),
    ALL,
    REAL,
  ),
  "variance_scaling": (
    (
      jaxinit.variance_scaling(),
      jaxinit.variance_scaling(0.5, "fan_avg", "uniform"),
      jaxinit.variance_scaling(2.0, "fan_geo_avg", "normal"),
      jaxinit.variance_scaling(1.0, "fan_out", "truncated_normal"),
    ),
    ALL,
    REAL + COMPLEX,
  ),
  "glorot_normal": (
    (jaxinit.glorot_normal(), jaxinit.glorot_normal(gain=2.0, truncated=False)),
    ALL,
    REAL + COMPLEX,
  ),
  "glorot_uniform": ((jaxinit.glorot_uniform(),), ALL, REAL + COMPLEX),
  "he_normal": (
    (
      jaxinit.he_normal(),
      jaxinit.he_normal(0.1, "fan_out"),
      jaxinit.he_normal(nonlinearity="tanh", truncated=False),
    ),
    ALL,
    REAL + COMPLEX,
  ),
  "he_uniform": (
    (jaxinit.he_uniform(), jaxinit.he_uniform(nonlinearity="gelu")),
    ALL,
    REAL + COMPLEX,
  ),
  "lecun_normal": ((jaxinit.lecun_normal(),), ALL, REAL + COMPLEX),
  "lecun_uniform": ((jaxinit.lecun_uniform(),), ALL, REAL + COMPLEX),
  # One configuration each, and for the costly ones three representative shape families (they
  # accept every matrix family; conv1d/conv3d layouts and the other configurations are tested
  # in test_orthogonal.py and test_structured.py), to keep the sweep's compile time down.
  "orthogonal": ((jaxinit.orthogonal(),), CORE, REAL + COMPLEX),
  "delta_orthogonal": (
    (jaxinit.delta_orthogonal(2.0, column_axis=-2),),
    CORE,
    (jnp.bfloat16, *COMPLEX),
  ),  # float16: orthogonal's path
  "identity": ((jaxinit.identity(-0.5),), MATRICES, REAL + COMPLEX),
  "dirac": ((jaxinit.dirac(groups=2, scale=0.5),), MATRICES, REAL + COMPLEX),
  "sparse": ((jaxinit.sparse(num_nonzero=2),), CORE, (jnp.bfloat16, *COMPLEX)),  # = values'
  "normalized": ((jaxinit.normalized(2.0, out_axis=0),), CORE, REAL + COMPLEX),
  "zero_hadamard": (
    (jaxinit.zero_hadamard(), jaxinit.zero_hadamard(in_axis=1, out_axis=0)),
    MATRICES,
    REAL + COMPLEX,
  ),
  "spectral": ((jaxinit.spectral(),), CORE, REAL + COMPLEX),
  "zero_rows": (
    (jaxinit.zero_rows(jaxinit.normal(0.02), rows=(0, -1)),),
    ("vector", "dense", "conv2d", "zero_size"),
    REAL + COMPLEX,
  ),
}
