"""Test configuration shared by tests/ and the doctests in jaxinit/.

Eight simulated CPU devices let sharding be tested without accelerators; the
flag must be set before jax initializes its backends.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
