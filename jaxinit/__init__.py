"""jaxinit: neural-network parameter initialization for JAX and Flax.

Every initializer is built by a factory and called as
``init(key, shape, dtype=None, out_sharding=None)``, the ``jax.nn.initializers``
protocol, so it plugs into Flax's ``kernel_init`` / ``bias_init`` (linen and
nnx) and into plain JAX code.
"""

from jaxinit import diagnostics as diagnostics  # submodule: jaxinit.diagnostics.*
from jaxinit import mean_field as mean_field  # submodule: jaxinit.mean_field.*
from jaxinit import mup as mup  # submodule: jaxinit.mup.*
from jaxinit import presets as presets  # submodule: jaxinit.presets.*
from jaxinit._src.base import Initializer as Initializer
from jaxinit._src.base import InitializerProtocol as InitializerProtocol
from jaxinit._src.basic import constant as constant
from jaxinit._src.basic import normal as normal
from jaxinit._src.basic import ones as ones
from jaxinit._src.basic import truncated_normal as truncated_normal
from jaxinit._src.basic import uniform as uniform
from jaxinit._src.basic import zeros as zeros
from jaxinit._src.compilation_cache import enable_compilation_cache as enable_compilation_cache
from jaxinit._src.fans import compute_fans as compute_fans
from jaxinit._src.frameworks.flax_init import init_linen as init_linen
from jaxinit._src.frameworks.flax_init import init_nnx as init_nnx
from jaxinit._src.frameworks.haiku import haiku_initializer as haiku_initializer
from jaxinit._src.gain import calculate_gain as calculate_gain
from jaxinit._src.jaxpr.records import Layer as Layer
from jaxinit._src.layouts import LAYOUTS as LAYOUTS
from jaxinit._src.layouts import Layout as Layout
from jaxinit._src.lsuv import LSUVReport as LSUVReport
from jaxinit._src.lsuv import find_layers as find_layers
from jaxinit._src.lsuv import lsuv as lsuv
from jaxinit._src.orthogonal import delta_orthogonal as delta_orthogonal
from jaxinit._src.orthogonal import orthogonal as orthogonal
from jaxinit._src.orthogonal import spectral as spectral
from jaxinit._src.rules import depth_rule as depth_rule
from jaxinit._src.rules import optional as optional
from jaxinit._src.rules import torch_bias as torch_bias
from jaxinit._src.serialization import deserialize as deserialize
from jaxinit._src.serialization import get as get
from jaxinit._src.serialization import serialize as serialize
from jaxinit._src.structured import dirac as dirac
from jaxinit._src.structured import identity as identity
from jaxinit._src.structured import normalized as normalized
from jaxinit._src.structured import sparse as sparse
from jaxinit._src.structured import zero_hadamard as zero_hadamard
from jaxinit._src.structured import zero_rows as zero_rows
from jaxinit._src.tree import leaf_key as leaf_key
from jaxinit._src.tree import leaf_paths as leaf_paths
from jaxinit._src.tree import reinit as reinit
from jaxinit._src.variance_scaling import glorot_normal as glorot_normal
from jaxinit._src.variance_scaling import glorot_uniform as glorot_uniform
from jaxinit._src.variance_scaling import he_normal as he_normal
from jaxinit._src.variance_scaling import he_uniform as he_uniform
from jaxinit._src.variance_scaling import kaiming_normal as kaiming_normal
from jaxinit._src.variance_scaling import kaiming_uniform as kaiming_uniform
from jaxinit._src.variance_scaling import lecun_normal as lecun_normal
from jaxinit._src.variance_scaling import lecun_uniform as lecun_uniform
from jaxinit._src.variance_scaling import variance_scaling as variance_scaling
from jaxinit._src.variance_scaling import xavier_normal as xavier_normal
from jaxinit._src.variance_scaling import xavier_uniform as xavier_uniform

__version__ = "0.1.0"

__all__ = [
  "LAYOUTS",
  "Initializer",
  "InitializerProtocol",
  "LSUVReport",
  "Layer",
  "Layout",
  "calculate_gain",
  "compute_fans",
  "constant",
  "delta_orthogonal",
  "depth_rule",
  "deserialize",
  "diagnostics",
  "dirac",
  "enable_compilation_cache",
  "find_layers",
  "get",
  "glorot_normal",
  "glorot_uniform",
  "haiku_initializer",
  "he_normal",
  "he_uniform",
  "identity",
  "init_linen",
  "init_nnx",
  "kaiming_normal",
  "kaiming_uniform",
  "leaf_key",
  "leaf_paths",
  "lecun_normal",
  "lecun_uniform",
  "lsuv",
  "mean_field",
  "mup",
  "normal",
  "normalized",
  "ones",
  "optional",
  "orthogonal",
  "presets",
  "reinit",
  "serialize",
  "sparse",
  "spectral",
  "torch_bias",
  "truncated_normal",
  "uniform",
  "variance_scaling",
  "xavier_normal",
  "xavier_uniform",
  "zero_hadamard",
  "zero_rows",
  "zeros",
]
