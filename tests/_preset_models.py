"""Small Flax linen models with the Flax-native parameter names of jaxinit.presets.

One configurable transformer block (pre- or post-norm, LayerNorm or RMSNorm, fused or
separate q/k/v, plain or gated MLP, with or without biases, optional cross-attention)
assembled into a decoder LM, a BERT-like encoder, a T5-like encoder-decoder and a ViT;
and a residual MLP without normalization (Fixup / ReZero / SkipInit names).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


class Attention(nn.Module):
  d: int
  heads: int
  fused: bool = False
  bias: bool = True
  relative_buckets: int = 0  # T5: a relative position bias table (num_buckets, heads)

  @nn.compact
  def __call__(self, x, context=None):
    context = x if context is None else context
    dense = lambda name: nn.Dense(self.d, use_bias=self.bias, name=name)
    if self.fused:
      q, k, v = jnp.split(nn.Dense(3 * self.d, use_bias=self.bias, name="qkv")(x), 3, axis=-1)
    else:
      q, k, v = dense("query")(x), dense("key")(context), dense("value")(context)
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)
    logits = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k))
    if self.relative_buckets:
      table = nn.Embed(self.relative_buckets, self.heads, name="relative_bias")
      rel = jnp.arange(k.shape[1])[None, :] - jnp.arange(q.shape[1])[:, None]
      logits = logits + table(jnp.clip(rel, 0, self.relative_buckets - 1)).transpose(2, 0, 1)
    att = jax.nn.softmax(logits / (q.shape[-1] // self.heads) ** 0.5, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", att, split(v)).reshape(q.shape)
    return dense("out")(out)


class Mlp(nn.Module):
  d: int
  d_ff: int
  gated: bool = False
  bias: bool = True

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(self.d_ff, use_bias=self.bias, name="up")(x)
    if self.gated:
      h = h * jax.nn.silu(nn.Dense(self.d_ff, use_bias=self.bias, name="gate")(x))
    else:
      h = jax.nn.gelu(h)
    return nn.Dense(self.d, use_bias=self.bias, name="down")(h)


def _norm(rms: bool, name: str):
  return nn.RMSNorm(name=name) if rms else nn.LayerNorm(name=name)


class Block(nn.Module):
  d: int
  heads: int
  d_ff: int
  rms: bool = False
  post_norm: bool = False
  fused: bool = False
  gated: bool = False
  bias: bool = True
  cross: bool = False
  relative_buckets: int = 0

  @nn.compact
  def __call__(self, x, context=None):
    att = Attention(self.d, self.heads, self.fused, self.bias, self.relative_buckets, name="attn")
    sublayers = [("attn_norm", lambda h: att(h))]
    if self.cross:
      cross = Attention(self.d, self.heads, bias=self.bias, name="cross_attn")
      sublayers.append(("cross_norm", lambda h: cross(h, context)))
    mlp = Mlp(self.d, self.d_ff, self.gated, self.bias, name="mlp")
    sublayers.append(("mlp_norm", mlp))
    for norm_name, f in sublayers:
      norm = _norm(self.rms, norm_name)
      x = norm(x + f(x)) if self.post_norm else x + f(norm(x))
    return x


class LM(nn.Module):
  """A decoder-only (or, with ``post_norm`` and ``types``, BERT-like) language model."""

  vocab: int
  d: int
  heads: int
  d_ff: int
  layers: int
  positions: int = 0  # learned positions
  types: int = 0  # BERT's token-type embedding (and an embedding LayerNorm)
  tied: bool = False
  block: dict | None = None

  def setup(self):
    self.embed = nn.Embed(self.vocab, self.d)
    if self.positions:
      self.pos_embed = nn.Embed(self.positions, self.d)
    if self.types:
      self.type_embed = nn.Embed(self.types, self.d)
      self.embed_norm = nn.LayerNorm()
    self.blocks = [
      Block(self.d, self.heads, self.d_ff, **(self.block or {})) for _ in range(self.layers)
    ]
    self.final_norm = _norm((self.block or {}).get("rms", False), "final_norm")
    if not self.tied:
      self.head = nn.Dense(self.vocab, use_bias=False)

  def __call__(self, tokens):
    x = self.embed(tokens)
    if self.positions:
      x = x + self.pos_embed(jnp.arange(tokens.shape[1]))
    if self.types:
      x = self.embed_norm(x + self.type_embed(jnp.zeros_like(tokens)))
    for block in self.blocks:
      x = block(x)
    x = self.final_norm(x)
    return self.embed.attend(x) if self.tied else self.head(x)


class Stack(nn.Module):
  d: int
  heads: int
  d_ff: int
  layers: int
  cross: bool
  gated: bool = False

  @nn.compact
  def __call__(self, x, context=None):
    for i in range(self.layers):
      x = Block(
        self.d,
        self.heads,
        self.d_ff,
        rms=True,
        gated=self.gated,
        bias=False,
        cross=self.cross,
        relative_buckets=32 if i == 0 else 0,
        name=f"blocks_{i}",
      )(x, context)
    return nn.RMSNorm(name="final_norm")(x)


class EncoderDecoder(nn.Module):
  """A T5-like model: shared embedding, encoder, decoder with cross-attention, tied head."""

  vocab: int
  d: int
  heads: int
  d_ff: int
  layers: int
  gated: bool = False

  @nn.compact
  def __call__(self, src, tgt):
    embed = nn.Embed(self.vocab, self.d, name="embed")
    enc = Stack(self.d, self.heads, self.d_ff, self.layers, False, self.gated, name="encoder")
    dec = Stack(self.d, self.heads, self.d_ff, self.layers, True, self.gated, name="decoder")
    return embed.attend(dec(embed(tgt), enc(embed(src))))


class ViT(nn.Module):
  patch: int
  d: int
  heads: int
  d_ff: int
  layers: int
  classes: int

  @nn.compact
  def __call__(self, images):
    x = nn.Conv(self.d, (self.patch, self.patch), strides=self.patch, name="patch_embed")(images)
    x = x.reshape(x.shape[0], -1, self.d)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.d)), x], axis=1)
    x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], self.d))
    for i in range(self.layers):
      x = Block(self.d, self.heads, self.d_ff, name=f"blocks_{i}")(x)
    x = nn.LayerNorm(name="final_norm")(x)
    return nn.Dense(self.classes, name="head")(x[:, 0])


class ResidualBlock(nn.Module):
  """x + res_scale * dense_1(relu(dense_0(x + shift_0) + shift_1)) + shift_2 (no normalization)."""

  d: int

  @nn.compact
  def __call__(self, x):
    shift = [self.param(f"shift_{k}", nn.initializers.zeros, ()) for k in range(3)]
    h = nn.Dense(self.d, use_bias=False, name="dense_0")(x + shift[0])
    h = nn.Dense(self.d, use_bias=False, name="dense_1")(jax.nn.relu(h + shift[1]))
    return x + self.param("res_scale", nn.initializers.ones, ()) * h + shift[2]


class ResidualMLP(nn.Module):
  d: int
  blocks: int
  classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.d, name="stem")(x)
    for i in range(self.blocks):
      x = ResidualBlock(self.d, name=f"blocks_{i}")(x)
    return nn.Dense(self.classes, name="head")(x)
