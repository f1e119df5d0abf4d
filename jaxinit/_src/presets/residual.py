"""Presets that make deep residual networks trainable by their initialization: Fixup,
T-Fixup, DeepNorm, ReZero and SkipInit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jaxinit._src.basic import constant, normal, ones, zeros
from jaxinit._src.checks import check_bool, check_real, fail
from jaxinit._src.presets.preset import ANY, BLOCK, Preset, build, choice, count, signature
from jaxinit._src.rules import optional, torch_bias
from jaxinit._src.structured import zero_rows
from jaxinit._src.variance_scaling import (
  glorot_normal,
  glorot_uniform,
  he_uniform,
  variance_scaling,
)

#: The most layers one Fixup residual branch may have (its pattern lists each layer).
MAX_BRANCH_LAYERS = 64

Patterns = Mapping[str, str | None] | None


def _alternatives(items) -> str:
  return "(?:" + "|".join(str(i) for i in items) + ")"


# ---------------------------------------------------------------------------
# Fixup
# ---------------------------------------------------------------------------


def fixup(
  num_branches: int,
  m: int = 2,
  *,
  mode: str = "fan_out",
  names: str = "flax",
  bias: bool = False,
  downsample: bool | None = None,
  patterns: Patterns = None,
) -> Preset:
  r"""Fixup (Zhang, Dauphin & Ma 2019): residual networks without normalization.

  With ``L = num_branches`` residual branches of ``m`` layers each:

  1. the last layer of every branch and the classifier (weight and bias) are 0;
  2. the other branch layers are He-initialized, ``N(0, 2 / n)``, and their std
     multiplied by ``L^(-1 / (2m - 2))``: ``N(0, 2 L^(-1 / (m - 1)) / n)``
     (``n`` = fan-out, as the reference code does, or ``mode``);
  3. the scalar biases (before each layer and activation) are 0 and each branch's
     scalar multiplier is 1.

  Everything else (the stem, a ``downsample`` 1x1 convolution: He fan-out,
  unscaled, with ``downsample``) is yours. The forward pass must add the scalar
  biases and the multiplier: ``x + scale * f(x + b1, ...) + b2``.

  Roles: ``branch``, ``last``, ``shift``, ``scale``, ``head``, ``head_bias``,
  ``branch_bias`` (with ``bias``), ``downsample`` (with ``downsample``).

  Args:
    num_branches: L (e.g. 54 for ResNet-110, 16 for ResNet-50).
    m: layers per branch (2: basic blocks and MLP blocks, 3: bottlenecks).
    mode: the He fan, ``"fan_out"`` (reference code) or ``"fan_in"``.
    names: ``"flax"`` (``blocks_{i}/dense_{j}/kernel``, ``blocks_{i}/shift_{k}``,
      ``blocks_{i}/res_scale``, ``head``), ``"cifar"`` or ``"imagenet"`` (the
      reference's ``layer{s}/{b}/conv{j}/weight``, ``bias1a``, ``scale``, ``fc``).
    bias: the branch layers have ordinary biases (0).
    downsample: the model has ``downsample`` convolutions (default: ``"imagenet"``).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.fixup(num_branches=100, m=2)
    >>> p[p.pattern("branch")], p[p.pattern("last")]
    (variance_scaling(scale=0.02, mode='fan_out', distribution='normal'), zeros())
    >>> p[p.pattern("shift")]
    optional(zeros())

  References:
    hongyi-zhang/Fixup f3fa449 ``cifar/models/fixup_resnet_cifar.py``,
    ``imagenet/models/fixup_resnet_imagenet.py``; H. Zhang, Y. N. Dauphin, T. Ma,
    "Fixup initialization: residual learning without normalization", ICLR 2019.
  """
  fn = "presets.fixup"
  L, m = (
    count(fn, "num_branches", num_branches),
    count(fn, "m", m, minimum=2, maximum=MAX_BRANCH_LAYERS),
  )
  mode = choice(fn, "mode", mode, ("fan_out", "fan_in"))
  names = choice(fn, "names", names, ("flax", "cifar", "imagenet"))
  bias = check_bool(fn, "bias", bias)
  downsample = (
    names == "imagenet" if downsample is None else check_bool(fn, "downsample", downsample)
  )
  if names == "flax":
    layer = ANY + BLOCK + r"/(?:dense|conv)_"
    p = {
      "branch": layer + _alternatives(range(m - 1)) + r"/kernel",
      "last": layer + rf"{m - 1}/kernel",
      "shift": ANY + r"(?:" + BLOCK + r"/)?shift(?:_\d+)?",
      "scale": ANY + BLOCK + r"/res_scale",
      "head": ANY + r"head/kernel",
      "head_bias": ANY + r"head/bias",
      "branch_bias": layer + r"\d+/bias",
      "downsample": ANY + BLOCK + r"/downsample/kernel",
    }
  else:
    block = r"layer\d+/\d+/"
    p = {
      "branch": block + r"conv" + _alternatives(range(1, m)) + r"/weight",
      "last": block + rf"conv{m}/weight",
      "shift": r"(?:" + block + r")?bias\d+[ab]?",
      "scale": block + r"scale",
      "head": r"fc/weight",
      "head_bias": r"fc/bias",
      "branch_bias": block + r"conv\d+/bias",
      "downsample": block + r"downsample(?:/\d+)?/weight",
    }
  rows = [
    ("branch", p["branch"], variance_scaling(2.0 * L ** (-1 / (m - 1)), mode, "normal")),
    ("last", p["last"], zeros()),
    ("shift", p["shift"], optional(zeros())),
    ("scale", p["scale"], optional(ones())),
    ("head", p["head"], zeros()),
    ("head_bias", p["head_bias"], optional(zeros())),
  ]
  rows += [("branch_bias", p["branch_bias"], zeros())] if bias else []
  rows += (
    [("downsample", p["downsample"], variance_scaling(2.0, mode, "normal"))] if downsample else []
  )
  name = signature("fixup", num_branches=L, m=m, names=names)
  return build(fn, name, rows, patterns, "flax" if names == "flax" else "torch")


# ---------------------------------------------------------------------------
# T-Fixup
# ---------------------------------------------------------------------------


def _tfixup_names(names: str, side: str, shared: bool) -> dict[str, str]:
  if names == "fairseq":
    base = rf"{side}/layers/\d+/"
    return {
      "ffn": base + r"(?:fc1|fc2|self_attn/out_proj|encoder_attn/out_proj)/weight",
      "v": base + r"(?:self_attn|encoder_attn)/v_proj/weight",
      "qk": base + r"(?:self_attn|encoder_attn)/(?:q|k)_proj/weight",
      "bias": base + r"(?:fc1|fc2|self_attn/[^/]+|encoder_attn/[^/]+)/bias",
      "embedding": rf"{side}/embed_tokens/weight",
    }
  base = rf"{ANY}{side}/{BLOCK}/"
  return {
    "ffn": base + r"(?:(?:attn|cross_attn)/out|mlp/(?:up|down))/kernel",
    "v": base + r"(?:attn|cross_attn)/value/kernel",
    "qk": base + r"(?:attn|cross_attn)/(?:query|key)/kernel",
    "bias": base + r"(?:attn|cross_attn|mlp)/[^/]+/bias",
    "embedding": ANY + (r"(?:encoder/)?embed/embedding" if shared else rf"{side}/embed/embedding"),
  }


def t_fixup(
  n_enc: int,
  n_dec: int,
  d_model: int,
  *,
  shared_embeddings: bool = False,
  padding_idx: int | str | None = "default",
  names: str = "fairseq",
  patterns: Patterns = None,
) -> Preset:
  r"""T-Fixup (Huang et al. 2020): Transformers without LayerNorm or warmup.

  fairseq's base initialization, then the T-Fixup scaling (``N = n_enc``,
  ``M = n_dec``):

  * encoder ``fc1``, ``fc2``, attention ``out_proj`` and ``v_proj``: Xavier
    uniform times ``0.67 N^(-1/4)``; decoder ones (self and cross attention):
    Xavier uniform times ``(9 M)^(-1/4)`` (fairseq's ``v_proj`` has gain
    ``1/sqrt(2)``, which the reference multiplies back by ``sqrt(2)``);
  * ``q_proj``, ``k_proj``: fairseq's Xavier uniform with gain ``1/sqrt(2)``;
  * embeddings ``N(0, 1/d)`` times ``(9 N)^(-1/4)`` (encoder) and ``(9 M)^(-1/4)``
    (decoder, unless ``shared_embeddings``: then the encoder's only, at
    ``embed/embedding`` or ``encoder/embed/embedding`` with Flax names), padding row 0;
  * biases 0.

  Roles: ``{side}_ffn``, ``{side}_v``, ``{side}_qk``, ``{side}_bias``,
  ``{side}_embedding`` for ``side`` in ``encoder`` (if ``n_enc``), ``decoder`` (if ``n_dec``).

  Args:
    n_enc: N, encoder layers (0: decoder only).
    n_dec: M, decoder layers (0: encoder only).
    d_model: d.
    shared_embeddings: fairseq's ``share_all_embeddings``.
    padding_idx: the embedding row set to 0 (``"default"``: 1 with fairseq names).
    names: ``"fairseq"`` (``encoder/layers/{l}/fc1/weight``) or ``"flax"``
      (``encoder/blocks_{l}/mlp/up/kernel``).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.t_fixup(6, 6, 512)
    >>> p[p.pattern("encoder_ffn")], p[p.pattern("decoder_ffn")]
    (glorot_uniform(gain=0.42809...), glorot_uniform(gain=0.36889...))

  References:
    layer6ai-labs/T-Fixup b17e166 ``fairseq/modules/transformer_layer.py``,
    ``fairseq/models/transformer.py``, ``fairseq/modules/multihead_attention.py``;
    X. S. Huang et al., "Improving transformer optimization through better
    initialization", ICML 2020.
  """
  fn = "presets.t_fixup"
  N, M = count(fn, "n_enc", n_enc, minimum=0), count(fn, "n_dec", n_dec, minimum=0)
  if N == M == 0:
    raise fail(fn, "`n_enc` and `n_dec` are both 0; give at least one stack of layers.")
  d = count(fn, "d_model", d_model)
  shared = check_bool(fn, "shared_embeddings", shared_embeddings)
  names = choice(fn, "names", names, ("fairseq", "flax"))
  if padding_idx == "default":
    pad = 1 if names == "fairseq" else None
  else:
    pad = None if padding_idx is None else count(fn, "padding_idx", padding_idx, minimum=0)
  rows = []
  for side, n, s in (
    ("encoder", N, 0.67 * N**-0.25 if N else 0.0),
    ("decoder", M, (9 * M) ** -0.25 if M else 0.0),
  ):
    if not n:
      continue
    p = _tfixup_names(names, side, shared)
    emb_scale = (9 * N) ** -0.25 if side == "encoder" else (9 * M) ** -0.25
    emb = normal(d**-0.5 * emb_scale)
    emb = emb if pad is None else zero_rows(emb, rows=pad)
    rows += [
      (f"{side}_ffn", p["ffn"], glorot_uniform(gain=s)),
      (f"{side}_v", p["v"], glorot_uniform(gain=s)),
      (f"{side}_qk", p["qk"], glorot_uniform(gain=2**-0.5)),
      (f"{side}_bias", p["bias"], optional(zeros())),
    ]
    if side == "encoder" or not shared or not N:
      rows.append((f"{side}_embedding", p["embedding"], emb))
  name = signature("t_fixup", n_enc=N, n_dec=M, d_model=d, names=names)
  return build(fn, name, rows, patterns, "torch" if names == "fairseq" else "flax")


# ---------------------------------------------------------------------------
# DeepNorm
# ---------------------------------------------------------------------------


def _deepnorm_constants(N: int, M: int) -> tuple[tuple[str, float], ...]:
  """alpha and beta = 1 / init_scale, with torchscale 0.3.0's expressions."""
  if M == 0:  # encoder only (torchscale/architecture/encoder.py)
    return (("alpha", math.pow(2.0 * N, 0.25)), ("beta", 1 / math.pow(8.0 * N, 0.25)))
  if N == 0:  # decoder only (decoder.py)
    return (("alpha", math.pow(2.0 * M, 0.25)), ("beta", 1 / math.pow(8.0 * M, 0.25)))
  both = math.pow(math.pow(N, 4) * M, 0.0625)
  return (
    ("encoder_alpha", both * 0.81),
    ("encoder_beta", 1 / (both / 1.15)),
    ("decoder_alpha", math.pow(3.0 * M, 0.25)),
    ("decoder_beta", 1 / math.pow(12.0 * M, 0.25)),
  )


def _deepnorm_names(names: str, prefix: str) -> dict[str, str]:
  if names == "torchscale":
    pre = prefix + r"layers/\d+/"
    scaled = pre + r"(?:(?:self_attn|encoder_attn)/(?:v_proj|out_proj)|ffn/(?:fc1|fc2))/"
    qk = pre + r"(?:self_attn|encoder_attn)/(?:q_proj|k_proj)/"
    norm = pre + r"(?:self_attn_layer_norm|encoder_attn_layer_norm|final_layer_norm)/"
    return {
      "scaled": scaled + "weight",
      "scaled_bias": scaled + "bias",
      "qk": qk + "weight",
      "qk_bias": qk + "bias",
      "norm_scale": norm + "weight",
      "norm_bias": norm + "bias",
    }
  pre = ANY + prefix + BLOCK + "/"
  scaled = pre + r"(?:(?:attn|cross_attn)/(?:value|out)|mlp/(?:up|down))/"
  qk = pre + r"(?:attn|cross_attn)/(?:query|key)/"
  norm = pre + r"[^/]*norm/"
  return {
    "scaled": scaled + "kernel",
    "scaled_bias": scaled + "bias",
    "qk": qk + "kernel",
    "qk_bias": qk + "bias",
    "norm_scale": norm + "scale",
    "norm_bias": norm + "bias",
  }


def deepnorm(
  n_enc: int,
  n_dec: int,
  *,
  base: str = "torchscale",
  names: str = "torchscale",
  patterns: Patterns = None,
) -> Preset:
  r"""DeepNorm (Wang et al. 2022, DeepNet): post-LN Transformers of 1000 layers.

  The forward pass of every sublayer becomes ``LN(alpha * x + f(x))``; at
  initialization the value and output projections of attention and both FFN
  linears are scaled by ``beta``. With ``N = n_enc``, ``M = n_dec``:

  =================  =======================  ===========================
  architecture       alpha                    beta
  =================  =======================  ===========================
  encoder only       (2N)^(1/4)               (8N)^(-1/4)
  decoder only       (2M)^(1/4)               (8M)^(-1/4)
  encoder-decoder    0.81 (N^4 M)^(1/16)      1.15 (N^4 M)^(-1/16)  (encoder)
                     (3M)^(1/4)               (12M)^(-1/4)          (decoder)
  =================  =======================  ===========================

  (The paper's encoder beta is ``0.87 (N^4 M)^(-1/16)``; torchscale divides by
  ``(N^4 M)^(1/16) / 1.15``, i.e. ``0.8696``: the code's value is used.) The
  constants are ``preset.alpha`` and ``preset.beta`` (numbers, or
  ``{"encoder": ..., "decoder": ...}``), computed with torchscale's expressions.

  ``base="torchscale"`` (torchscale 0.3.0's default, ``bert_init=False``): every
  ``nn.Linear`` keeps torch's default ``U(+-1/sqrt(fan_in))``, weight and bias,
  and torchscale then divides by ``1/beta`` every parameter whose name contains
  ``v_proj``, ``out_proj``, ``fc1`` or ``fc2``: their weights **and biases**
  become ``U(+-beta/sqrt(fan_in))`` -- the decoder's cross-attention
  (``encoder_attn``) included. LayerNorms 1 / 0. ``base="paper"``: the paper's
  pseudocode, Xavier normal with gain ``beta`` (std times beta) for those weights,
  gain 1 for q and k, biases 0.

  Roles, for each stack: ``{side}_scaled``, ``{side}_scaled_bias``,
  ``{side}_qk``, ``{side}_qk_bias``, ``{side}_norm_scale``, ``{side}_norm_bias``
  (``side`` is ``encoder`` or ``decoder``).

  Args:
    n_enc: N, encoder layers (0: decoder only).
    n_dec: M, decoder layers (0: encoder only).
    base: ``"torchscale"`` or ``"paper"``.
    names: ``"torchscale"`` (``layers/{l}/self_attn/v_proj/weight``, under
      ``encoder/`` and ``decoder/`` for an encoder-decoder) or ``"flax"``.
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset` with ``alpha`` and ``beta``.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.deepnorm(100, 0)
    >>> round(p.alpha, 6), round(p.beta, 6)
    (3.760603, 0.18803)
    >>> {k: round(v, 6) for k, v in jaxinit.presets.deepnorm(6, 6).alpha.items()}
    {'encoder': 1.417938, 'decoder': 2.059767}

  References:
    torchscale 0.3.0 ``torchscale/architecture/encoder.py``, ``decoder.py``
    (``EncoderLayer.alpha``, ``Encoder.__init__``'s ``init_scale``),
    ``config.py``; H. Wang et al., "DeepNet: scaling Transformers to 1,000
    layers", 2022.
  """
  fn = "presets.deepnorm"
  N, M = count(fn, "n_enc", n_enc, minimum=0), count(fn, "n_dec", n_dec, minimum=0)
  if N == M == 0:
    raise fail(fn, "`n_enc` and `n_dec` are both 0; give at least one stack of layers.")
  base = choice(fn, "base", base, ("torchscale", "paper"))
  names = choice(fn, "names", names, ("torchscale", "flax"))
  constants = _deepnorm_constants(N, M)
  c = dict(constants)
  rows = []
  for side, n in (("encoder", N), ("decoder", M)):
    if not n:
      continue
    both = N and M
    prefix = f"{side}/" if both else f"(?:{side}/)?"
    p = _deepnorm_names(names, prefix)
    beta = c[f"{side}_beta"] if both else c["beta"]
    scaled_bias: Any
    qk_bias: Any
    if base == "torchscale":
      scaled = variance_scaling(beta**2 / 3, "fan_in", "uniform")  # U(+-beta / sqrt(fan_in))
      scaled_bias, qk, qk_bias = (
        torch_bias(scale=beta),
        he_uniform(negative_slope=5**0.5),
        torch_bias(),
      )
    else:
      scaled, qk = glorot_normal(gain=beta, truncated=False), glorot_normal(truncated=False)
      scaled_bias = qk_bias = zeros()
    rows += [
      (f"{side}_scaled", p["scaled"], scaled),
      (f"{side}_scaled_bias", p["scaled_bias"], optional(scaled_bias)),
      (f"{side}_qk", p["qk"], qk),
      (f"{side}_qk_bias", p["qk_bias"], optional(qk_bias)),
      (f"{side}_norm_scale", p["norm_scale"], optional(ones())),
      (f"{side}_norm_bias", p["norm_bias"], optional(zeros())),
    ]
  name = signature("deepnorm", n_enc=N, n_dec=M, base=base, names=names)
  layout = "torch" if names == "torchscale" else "flax"
  return build(fn, name, rows, patterns, layout, constants=constants)


# ---------------------------------------------------------------------------
# ReZero, SkipInit
# ---------------------------------------------------------------------------


def rezero(*, names: str = "rezero", patterns: Patterns = None) -> Preset:
  r"""ReZero (Bachlechner et al. 2020): each residual branch's scalar weight is 0.

  ``x <- x + alpha * F(x)`` with ``alpha = 0`` at initialization, no
  normalization: every block starts as the identity. The reference code
  (``RZTXEncoderLayer``) shares one ``resweight`` between a layer's attention and
  FFN; everything else keeps torch's defaults (``rezero() + torch_default()``).

  Roles: ``res_weight``.

  Args:
    names: ``"rezero"`` (``layers/{l}/resweight``, any prefix) or ``"flax"``
      (``blocks_{l}/res_scale``).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> jaxinit.presets.rezero().roles
    (('res_weight', '(?:.*/)?resweight', zeros()),)

  References:
    majumderb/rezero e2c94a8 ``rezero/transformer/rztx.py``; T. Bachlechner et al.,
    "ReZero is all you need: fast convergence at large depth", 2020.
  """
  fn = "presets.rezero"
  names = choice(fn, "names", names, ("rezero", "flax"))
  pattern = ANY + (r"resweight" if names == "rezero" else r"res_scale")
  name = signature("rezero", names=names)
  return build(
    fn, name, [("res_weight", pattern, zeros())], patterns, "torch" if names == "rezero" else "flax"
  )


def skipinit(*, value: float = 0.0, names: str = "flax", patterns: Patterns = None) -> Preset:
  r"""SkipInit (De & Smith 2020): each residual branch times a learnable scalar, ``value`` at init.

  ``x <- x + alpha * F(x)``, ``alpha = value`` (0, or small: at most ``1/sqrt(L)``
  for ``L`` blocks), no normalization, every other weight standard (He). The
  paper's; no official code was found.

  Roles: ``res_scale``.

  Args:
    value: alpha at initialization.
    names: ``"flax"`` (``blocks_{l}/res_scale``).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> jaxinit.presets.skipinit(value=0.1).roles[0][2]
    constant(value=0.1)

  References:
    S. De, S. L. Smith, "Batch normalization biases residual blocks towards the
    identity function in deep networks", NeurIPS 2020.
  """
  fn = "presets.skipinit"
  v = check_real(fn, "value", value)
  names = choice(fn, "names", names, ("flax",))
  init = constant(v) if v else zeros()
  name = signature("skipinit", value=v, names=names)
  return build(fn, name, [("res_scale", ANY + r"res_scale", init)], patterns, "flax")
