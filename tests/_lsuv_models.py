"""Small real Flax models (linen, nnx) and a pure-function model for the LSUV and
layer-discovery tests.

Each nnx / pure-function model accepts ``taps``: a list its forward pass appends
every linear layer's output to (bias included), in call order — a record of the
layer outputs that is independent of jaxinit's own layer discovery. linen
models are measured with ``capture_intermediates`` instead.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx


def np_init(std: float | None = None):
  """A Flax initializer drawing with numpy from the key's bits: no XLA compilation.

  ``std=None`` gives 1/sqrt(fan_in) with fan_in = prod(shape[:-1]). Model
  initialization with jax's initializers compiles one random-bits program per
  parameter shape (seconds per model on a 2-core CPU), which would dominate
  these tests.
  """

  def init(key, shape, dtype=jnp.float32):
    if isinstance(key, jax.core.Tracer):  # under jax.eval_shape: only the shape matters
      return jnp.zeros(shape, dtype)
    bits = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    rng = np.random.default_rng(np.asarray(bits).ravel().tolist())
    scale = std if std is not None else 1.0 / math.sqrt(max(math.prod(shape[:-1]), 1))
    return jnp.asarray(rng.standard_normal(shape) * scale, dtype)

  return init


def fast_init(model, x, seed=0, **kwargs):
  """``model.init`` for a linen model, drawn with numpy from the shapes alone.

  ``jax.eval_shape`` gives the variables' structure without running anything;
  kernels get N(0, 1/fan_in), biases of linear layers N(0, 0.3^2) (normalization
  biases 0), embeddings N(0, 1), scales and running variances 1, running means 0.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(seed), x, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, sd):
    names = [getattr(k, "key", str(k)) for k in path]
    leaf, norm = names[-1], any("Norm" in n for n in names)
    if leaf in ("scale", "var"):
      return jnp.ones(sd.shape, sd.dtype)
    if leaf == "mean" or (leaf == "bias" and norm):
      return jnp.zeros(sd.shape, sd.dtype)
    std = {"bias": 0.3, "embedding": 1.0}.get(leaf, 1 / math.sqrt(math.prod(sd.shape[:-1])))
    return jnp.asarray(rng.standard_normal(sd.shape) * std, sd.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


KERNEL = np_init()
# Non-zero biases make the variance of a layer's output depend on its weight scale
# through a quadratic with a linear term, as in PyTorch's hook-based LSUV.
BIAS = np_init(0.3)


# ---------------------------------------------------------------------------
# linen
# ---------------------------------------------------------------------------


class LinenMLP(nn.Module):
  widths: tuple[int, ...] = (32, 32, 32, 10)

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.Dense(w, kernel_init=KERNEL, bias_init=BIAS)(x)
      if i < len(self.widths) - 1:
        x = nn.relu(x)
    return x


class OutOfOrder(nn.Module):
  """Submodules are named so that sorted parameter order is the reverse of call order."""

  def setup(self):
    self.z_in = nn.Dense(32, kernel_init=KERNEL, bias_init=BIAS)
    self.m_mid = nn.Dense(32, kernel_init=KERNEL, bias_init=BIAS)
    self.a_out = nn.Dense(8, kernel_init=KERNEL, bias_init=BIAS)

  def __call__(self, x):
    return self.a_out(nn.tanh(self.m_mid(nn.relu(self.z_in(x)))))


class ResBlock(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Conv(self.channels, (3, 3), use_bias=False, kernel_init=KERNEL)(x)
    y = nn.BatchNorm(use_running_average=not train)(y)
    y = nn.relu(y)
    y = nn.Conv(self.channels, (3, 3), use_bias=False, kernel_init=KERNEL)(y)
    y = nn.BatchNorm(use_running_average=not train)(y)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """conv-BN stem, two residual blocks, a strided conv, a classifier."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(16, (3, 3), use_bias=False, kernel_init=KERNEL)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = ResBlock(16)(x, train)
    x = nn.Conv(24, (3, 3), strides=2, kernel_init=KERNEL, bias_init=BIAS)(x)
    x = ResBlock(24)(nn.relu(x), train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(10, kernel_init=KERNEL, bias_init=BIAS)(x)


class Tied(nn.Module):
  """One Dense applied twice, and an embedding reused as the output projection."""

  @nn.compact
  def __call__(self, tokens):
    embed = nn.Embed(50, 32, embedding_init=np_init(1.0))
    shared = nn.Dense(32, kernel_init=KERNEL, bias_init=BIAS)
    h = embed(tokens)
    h = nn.relu(shared(h))
    h = nn.relu(shared(h))
    return embed.attend(h)


class ScanBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.relu(nn.Dense(32, kernel_init=KERNEL, bias_init=BIAS)(x)), None


class ScanMLP(nn.Module):
  """Four identical layers stacked with nn.scan (one stacked kernel) under remat."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(32, kernel_init=KERNEL)(x)
    stack = nn.scan(
      nn.remat(ScanBlock), variable_axes={"params": 0}, split_rngs={"params": True}, length=4
    )
    x, _ = stack()(x, None)
    return nn.Dense(10, kernel_init=KERNEL)(x)


def linen_layer_outputs(model, variables, x, **kwargs):
  """Outputs of every Dense/Conv/DenseGeneral call, in call order, by Flax itself."""
  kinds = (nn.Dense, nn.Conv, nn.DenseGeneral, nn.Einsum)
  outs = []

  def interceptor(next_fun, args, kw, context):
    y = next_fun(*args, **kw)
    if isinstance(context.module, kinds) and context.method_name == "__call__":
      outs.append(y)
    return y

  @jax.jit
  def run(variables, x):
    outs.clear()
    with nn.intercept_methods(interceptor):
      model.apply(variables, x, **kwargs)
    return list(outs)

  return run(variables, x)


# ---------------------------------------------------------------------------
# nnx
# ---------------------------------------------------------------------------


def _tap(taps, y):
  if taps is not None:
    taps.append(y)
  return y


class NnxMLP(nnx.Module):
  def __init__(self, sizes=(16, 48, 48, 48, 10), *, rngs):
    self.layers = nnx.List(
      [
        nnx.Linear(a, b, kernel_init=KERNEL, bias_init=BIAS, rngs=rngs)
        for a, b in itertools.pairwise(sizes)
      ]
    )

  def __call__(self, x, taps=None):
    for i, lin in enumerate(self.layers):
      x = _tap(taps, lin(x))
      if i < len(self.layers) - 1:
        x = nnx.gelu(x)
    return x


class NnxConvNet(nnx.Module):
  """Conv-BN-ReLU with a residual connection, a depthwise conv, a 1-D conv head."""

  def __init__(self, *, rngs):
    self.stem = nnx.Conv(3, 16, (3, 3), kernel_init=KERNEL, rngs=rngs)
    self.bn1 = nnx.BatchNorm(16, rngs=rngs)
    self.conv = nnx.Conv(16, 16, (3, 3), use_bias=False, kernel_init=KERNEL, rngs=rngs)
    self.bn2 = nnx.BatchNorm(16, rngs=rngs)
    self.depthwise = nnx.Conv(16, 32, (3, 3), feature_group_count=16, kernel_init=KERNEL, rngs=rngs)
    self.head = nnx.Linear(32, 10, kernel_init=KERNEL, bias_init=BIAS, rngs=rngs)

  def __call__(self, x, taps=None):
    x = nnx.relu(self.bn1(_tap(taps, self.stem(x))))
    x = nnx.relu(x + self.bn2(_tap(taps, self.conv(x))))
    x = nnx.relu(_tap(taps, self.depthwise(x)))
    return _tap(taps, self.head(jnp.mean(x, axis=(1, 2))))


class NnxTransformer(nnx.Module):
  """Token embedding, pre-LN multi-head attention, pre-LN GELU MLP, output head."""

  def __init__(self, vocab=40, d=32, heads=4, *, rngs):
    self.embed = nnx.Embed(vocab, d, embedding_init=np_init(1.0), rngs=rngs)
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(heads, d, decode=False, kernel_init=KERNEL, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.up = nnx.Linear(d, 4 * d, kernel_init=KERNEL, bias_init=BIAS, rngs=rngs)
    self.down = nnx.Linear(4 * d, d, kernel_init=KERNEL, rngs=rngs)
    self.head = nnx.Linear(d, vocab, kernel_init=KERNEL, rngs=rngs)

  def __call__(self, tokens, taps=None):
    h = self.embed(tokens)
    x = self.ln1(h)
    if taps is None:
      h = h + self.attn(x)
    else:  # the same computation, with the projections' outputs recorded
      a = self.attn
      q, k, v = _tap(taps, a.query(x)), _tap(taps, a.key(x)), _tap(taps, a.value(x))
      h = h + _tap(taps, a.out(nnx.dot_product_attention(q, k, v)))
    x = self.ln2(h)
    h = h + _tap(taps, self.down(nnx.gelu(_tap(taps, self.up(x)))))
    return _tap(taps, self.head(h))


# ---------------------------------------------------------------------------
# A pure-function model: equinox-style (out, in) weights, einsum, grouped 1-D conv.
# ---------------------------------------------------------------------------


def pure_init(seed=0, channels=8, length=16, hidden=32, out=5):
  r = np.random.default_rng(seed)

  def normal(shape, std):
    return jnp.asarray(r.standard_normal(shape) * std, jnp.float32)

  return {
    "conv": {
      "w": normal((channels, 2, 3), 0.7),  # (out, in/groups, width)
      "b": normal((channels,), 0.2),
    },
    "proj": {"w": normal((hidden, channels * length), 0.05)},  # (out, in): W @ x
    "mix": {"w": normal((2, hidden // 2, hidden // 2), 0.3)},  # one matrix per group
    "out": {"w": normal((hidden, out), 0.2), "b": jnp.zeros((out,))},
  }


def pure_apply(params, x, taps=None):
  """x: (batch, length, 2*4) NWC."""
  y = (
    jax.lax.conv_general_dilated(
      x,
      params["conv"]["w"],
      (1,),
      "SAME",
      dimension_numbers=("NWC", "OIW", "NWC"),
      feature_group_count=4,
    )
    + params["conv"]["b"]
  )
  h = jnp.tanh(_tap(taps, y)).reshape(x.shape[0], -1)
  h = jax.nn.relu(_tap(taps, h @ params["proj"]["w"].T))
  hg = h.reshape(h.shape[0], 2, -1)
  h = jax.nn.relu(_tap(taps, jnp.einsum("bgi,gio->bgo", hg, params["mix"]["w"]))).reshape(
    h.shape[0], -1
  )
  return _tap(taps, h @ params["out"]["w"] + params["out"]["b"])
