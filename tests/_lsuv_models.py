"""Small real Flax models (linen, nnx) and a pure-function model for the LSUV and
layer-discovery tests.

Each nnx / pure-function model accepts ``taps``: a list its forward pass appends
every linear layer's output to (bias included), in call order — a record of the
layer outputs that is independent of jaxinit's own layer discovery. linen
models are measured with ``capture_intermediates`` instead.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

# Non-zero biases make LSUV iterate (the output variance is then not exactly
# quadratic-free in the weight scale), as PyTorch's hook-based LSUV does.
BIAS = nn.initializers.normal(0.3)


# ---------------------------------------------------------------------------
# linen
# ---------------------------------------------------------------------------


class LinenMLP(nn.Module):
  widths: tuple[int, ...] = (32, 32, 32, 10)

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.Dense(w, bias_init=BIAS)(x)
      if i < len(self.widths) - 1:
        x = nn.relu(x)
    return x


class OutOfOrder(nn.Module):
  """Submodules are named so that sorted parameter order is the reverse of call order."""

  def setup(self):
    self.z_in = nn.Dense(32, bias_init=BIAS)
    self.m_mid = nn.Dense(32, bias_init=BIAS)
    self.a_out = nn.Dense(8, bias_init=BIAS)

  def __call__(self, x):
    return self.a_out(nn.tanh(self.m_mid(nn.relu(self.z_in(x)))))


class ResBlock(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Conv(self.channels, (3, 3), use_bias=False)(x)
    y = nn.BatchNorm(use_running_average=not train)(y)
    y = nn.relu(y)
    y = nn.Conv(self.channels, (3, 3), use_bias=False)(y)
    y = nn.BatchNorm(use_running_average=not train)(y)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """conv-BN stem, two residual blocks, a strided conv, a classifier."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(16, (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = ResBlock(16)(x, train)
    x = nn.Conv(24, (3, 3), strides=2, bias_init=BIAS)(x)
    x = ResBlock(24)(nn.relu(x), train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(10, bias_init=BIAS)(x)


class Tied(nn.Module):
  """One Dense applied twice, and an embedding reused as the output projection."""

  @nn.compact
  def __call__(self, tokens):
    embed = nn.Embed(50, 32)
    shared = nn.Dense(32, bias_init=BIAS)
    h = embed(tokens)
    h = nn.relu(shared(h))
    h = nn.relu(shared(h))
    return embed.attend(h)


class ScanBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.relu(nn.Dense(32, bias_init=BIAS)(x)), None


class ScanMLP(nn.Module):
  """Four identical layers stacked with nn.scan (one stacked kernel) under remat."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(32)(x)
    stack = nn.scan(nn.remat(ScanBlock), variable_axes={"params": 0},
                    split_rngs={"params": True}, length=4)
    x, _ = stack()(x, None)
    return nn.Dense(10)(x)


def linen_layer_outputs(model, variables, x, **kwargs):
  """Outputs of every Dense/Conv/DenseGeneral call, in call order, by Flax itself."""
  kinds = (nn.Dense, nn.Conv, nn.DenseGeneral, nn.Einsum)
  outs = []

  def interceptor(next_fun, args, kw, context):
    y = next_fun(*args, **kw)
    if isinstance(context.module, kinds) and context.method_name == "__call__":
      outs.append(y)
    return y

  with nn.intercept_methods(interceptor):
    model.apply(variables, x, **kwargs)
  return outs


# ---------------------------------------------------------------------------
# nnx
# ---------------------------------------------------------------------------


def _tap(taps, y):
  if taps is not None:
    taps.append(y)
  return y


class NnxMLP(nnx.Module):
  def __init__(self, sizes=(16, 48, 48, 48, 10), *, rngs):
    self.layers = nnx.List([nnx.Linear(a, b, bias_init=BIAS, rngs=rngs)
                            for a, b in itertools.pairwise(sizes)])

  def __call__(self, x, taps=None):
    for i, lin in enumerate(self.layers):
      x = _tap(taps, lin(x))
      if i < len(self.layers) - 1:
        x = nnx.gelu(x)
    return x


class NnxConvNet(nnx.Module):
  """Conv-BN-ReLU with a residual connection, a depthwise conv, a 1-D conv head."""

  def __init__(self, *, rngs):
    self.stem = nnx.Conv(3, 16, (3, 3), rngs=rngs)
    self.bn1 = nnx.BatchNorm(16, rngs=rngs)
    self.conv = nnx.Conv(16, 16, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(16, rngs=rngs)
    self.depthwise = nnx.Conv(16, 32, (3, 3), feature_group_count=16, rngs=rngs)
    self.head = nnx.Linear(32, 10, bias_init=BIAS, rngs=rngs)

  def __call__(self, x, taps=None):
    x = nnx.relu(self.bn1(_tap(taps, self.stem(x))))
    x = nnx.relu(x + self.bn2(_tap(taps, self.conv(x))))
    x = nnx.relu(_tap(taps, self.depthwise(x)))
    return _tap(taps, self.head(jnp.mean(x, axis=(1, 2))))


class NnxTransformer(nnx.Module):
  """Token embedding, pre-LN multi-head attention, pre-LN GELU MLP, output head."""

  def __init__(self, vocab=40, d=32, heads=4, *, rngs):
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(heads, d, decode=False, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.up = nnx.Linear(d, 4 * d, bias_init=BIAS, rngs=rngs)
    self.down = nnx.Linear(4 * d, d, rngs=rngs)
    self.head = nnx.Linear(d, vocab, rngs=rngs)

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


def pure_init(key, channels=8, length=16, hidden=32, out=5):
  k = jax.random.split(key, 5)
  return {
      "conv": {"w": jax.random.normal(k[0], (channels, 2, 3)) * 0.7,  # (out, in/groups, width)
               "b": jax.random.normal(k[1], (channels,)) * 0.2},
      "proj": {"w": jax.random.normal(k[2], (hidden, channels * length)) * 0.05},  # (out, in)
      "mix": {"w": jax.random.normal(k[3], (2, hidden // 2, hidden // 2)) * 0.3},  # per group
      "out": {"w": jax.random.normal(k[4], (hidden, out)) * 0.2, "b": jnp.zeros((out,))},
  }


def pure_apply(params, x, taps=None):
  """x: (batch, length, 2*4) NWC."""
  y = jax.lax.conv_general_dilated(
      x, params["conv"]["w"], (1,), "SAME", dimension_numbers=("NWC", "OIW", "NWC"),
      feature_group_count=4) + params["conv"]["b"]
  h = jnp.tanh(_tap(taps, y)).reshape(x.shape[0], -1)
  h = jax.nn.relu(_tap(taps, h @ params["proj"]["w"].T))
  hg = h.reshape(h.shape[0], 2, -1)
  h = jax.nn.relu(_tap(taps, jnp.einsum("bgi,gio->bgo", hg, params["mix"]["w"]))).reshape(
      h.shape[0], -1)
  return _tap(taps, h @ params["out"]["w"] + params["out"]["b"])
