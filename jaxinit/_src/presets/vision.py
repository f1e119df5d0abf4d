"""Presets of vision models: ViT (Hugging Face's and the original Google one) and torch's
default layer initialization."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from jaxinit._src.base import Initializer
from jaxinit._src.basic import constant, normal, ones, zeros
from jaxinit._src.checks import check_bool, check_real, fail
from jaxinit._src.layouts import Layout
from jaxinit._src.presets.preset import (
  ANY,
  BLOCK,
  Preset,
  build,
  choice,
  positive,
  signature,
  torch_trunc,
)
from jaxinit._src.rules import SiblingRule, optional, torch_bias
from jaxinit._src.variance_scaling import glorot_uniform, he_uniform, lecun_normal

Patterns = Mapping[str, str | None] | None

_VIT_HF = r"(?:vit/)?"
# transformers 5.x names, and 4.x names (still on the Hub): (v5 | v4)
_VIT_ATTN_QKV = _VIT_HF + (
  r"(?:layers/\d+/attention/(?:q|k|v)_proj|encoder/layer/\d+/attention/attention/(?:query|key|value))"
)
_VIT_ATTN_OUT = (
  _VIT_HF + r"(?:layers/\d+/attention/o_proj|encoder/layer/\d+/attention/output/dense)"
)
_VIT_MLP = _VIT_HF + r"(?:layers/\d+/mlp/fc(?:1|2)|encoder/layer/\d+/(?:intermediate|output)/dense)"
_VIT_NORM = _VIT_HF + r"(?:(?:layers|encoder/layer)/\d+/layernorm_(?:before|after)|layernorm)"
_VJ = r"Transformer/encoderblock_\d+/"

_VIT_NAMES = {
  "hf": {
    "patch": _VIT_HF + r"embeddings/patch_embeddings/projection/weight",
    "patch_bias": _VIT_HF + r"embeddings/patch_embeddings/projection/bias",
    "cls": _VIT_HF + r"embeddings/cls_token",
    "positions": _VIT_HF + r"embeddings/position_embeddings",
    "attention_qkv": _VIT_ATTN_QKV + r"/weight",
    "attention_out": _VIT_ATTN_OUT + r"/weight",
    "attention_bias": r"(?:" + _VIT_ATTN_QKV + r"|" + _VIT_ATTN_OUT + r")/bias",
    "mlp": _VIT_MLP + r"/weight",
    "mlp_bias": _VIT_MLP + r"/bias",
    "norm_scale": _VIT_NORM + r"/weight",
    "norm_bias": _VIT_NORM + r"/bias",
    "head": r"classifier/weight",
    "head_bias": r"classifier/bias",
    "pooler": _VIT_HF + r"pooler/dense/weight",
    "pooler_bias": _VIT_HF + r"pooler/dense/bias",
  },
  "flax": {
    "patch": ANY + r"patch_embed/kernel",
    "patch_bias": ANY + r"patch_embed/bias",
    "cls": ANY + r"cls",
    "positions": ANY + r"pos_embedding",
    "attention_qkv": ANY + BLOCK + r"/attn/(?:qkv|query|key|value)/kernel",
    "attention_out": ANY + BLOCK + r"/attn/out/kernel",
    "attention_bias": ANY + BLOCK + r"/attn/[^/]+/bias",
    "mlp": ANY + BLOCK + r"/mlp/(?:up|down)/kernel",
    "mlp_bias": ANY + BLOCK + r"/mlp/(?:up|down)/bias",
    "norm_scale": ANY + r"(?:" + BLOCK + r"/[^/]*norm|final_norm)/scale",
    "norm_bias": ANY + r"(?:" + BLOCK + r"/[^/]*norm|final_norm)/bias",
    "head": ANY + r"head/kernel",
    "head_bias": ANY + r"head/bias",
    "pooler": ANY + r"pre_logits/kernel",
    "pooler_bias": ANY + r"pre_logits/bias",
  },
  "vit_jax": {
    "patch": r"embedding/kernel",
    "patch_bias": r"embedding/bias",
    "cls": r"cls",
    "positions": r"Transformer/posembed_input/pos_embedding",
    "attention_qkv": _VJ + r"MultiHeadDotProductAttention_\d+/(?:query|key|value)/kernel",
    "attention_out": _VJ + r"MultiHeadDotProductAttention_\d+/out/kernel",
    "attention_bias": _VJ + r"MultiHeadDotProductAttention_\d+/[^/]+/bias",
    "mlp": _VJ + r"MlpBlock_\d+/Dense_\d+/kernel",
    "mlp_bias": _VJ + r"MlpBlock_\d+/Dense_\d+/bias",
    "norm_scale": r"Transformer/(?:encoderblock_\d+/LayerNorm_\d+|encoder_norm)/scale",
    "norm_bias": r"Transformer/(?:encoderblock_\d+/LayerNorm_\d+|encoder_norm)/bias",
    "head": r"head/kernel",
    "head_bias": r"head/bias",
    "pooler": r"pre_logits/kernel",
    "pooler_bias": r"pre_logits/bias",
  },
}


def _merge(p: dict[str, str], *roles: str) -> str:
  return "(?:" + "|".join(p[r] for r in roles) + ")"


def vit(
  *,
  variant: str = "hf",
  initializer_range: float = 0.02,
  head_bias: float = 0.0,
  pooler: bool = False,
  names: str = "hf",
  patterns: Patterns = None,
) -> Preset:
  r"""ViT's initialization: Hugging Face's (``"hf"``) or the original Google one (``"original"``).

  ``variant="hf"`` (transformers 5.x): the class token and position embeddings
  ``trunc_normal_(std=r)`` (torch's absolute bounds +-2: a plain normal at r =
  0.02), every other weight -- the patch convolution, q/k/v/o, the MLP, the
  classifier -- ``N(0, r^2)``, biases 0, LayerNorm 1 / 0. **The classifier is not
  zero** here.

  ``variant="original"`` (google-research/vision_transformer, the Flax code the
  "ViT zero-inits its head" remark is about): patch convolution LeCun normal
  (Flax's default, the 2-sigma truncated normal with its std correction), class
  token 0, position embeddings ``N(0, 0.02^2)``, attention and MLP kernels Xavier
  uniform (attention on the flattened ``d x d`` map), MLP biases ``N(0, 1e-12)``,
  other biases 0, LayerNorm 1 / 0, **head kernel 0** and head bias
  ``head_bias``; ``pre_logits`` (the pooler) LeCun normal. timm's ``'jax'`` init
  is the same, with ``head_bias = -log(num_classes)`` for ``'jax_nlhb'``.

  Roles (``"original"``): ``patch``, ``patch_bias``, ``cls``, ``positions``,
  ``attention_qkv``, ``attention_out``, ``attention_bias``, ``mlp``, ``mlp_bias``,
  ``norm_scale``, ``norm_bias``, ``head``, ``head_bias``, ``pooler`` and
  ``pooler_bias`` (with ``pooler``); (``"hf"``): ``cls_positions``,
  ``norm_scale``, ``bias``, ``weights``.

  Args:
    variant: ``"hf"`` or ``"original"``.
    initializer_range: r (``"hf"``).
    head_bias: the head bias (``"original"``).
    pooler: the model has a pooler / ``pre_logits`` layer (``"original"``).
    names: ``"hf"`` (``vit/layers/{l}/attention/q_proj/weight``, and transformers
      4.x's ``vit/encoder/layer/{l}/attention/attention/query/weight``), ``"flax"``
      or ``"vit_jax"`` (the original code's names: ``Transformer/encoderblock_{l}/
      MultiHeadDotProductAttention_1/query/kernel`` of shape ``(d, heads, head_dim)``).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.vit(variant="original")
    >>> p[p.pattern("head")], p[p.pattern("mlp_bias")]
    (zeros(), normal(stddev=1e-06))

  References:
    transformers 5.24.0 ``models/vit/modeling_vit.py`` (``ViTPreTrainedModel._init_weights``);
    google-research/vision_transformer c6de1e5 ``vit_jax/models_vit.py``;
    huggingface/pytorch-image-models aa4b585 ``timm/models/vision_transformer.py``;
    A. Dosovitskiy et al., "An image is worth 16x16 words", ICLR 2021.
  """
  fn = "presets.vit"
  variant = choice(fn, "variant", variant, ("hf", "original"))
  r = positive(fn, "initializer_range", initializer_range)
  hb = check_real(fn, "head_bias", head_bias)
  pooler = check_bool(fn, "pooler", pooler)
  names = choice(fn, "names", names, ("hf", "flax", "vit_jax"))
  p = _VIT_NAMES[names]
  layout = "torch" if names == "hf" else "flax"
  if variant == "hf":
    weights = ANY + (r"weight" if names == "hf" else r"kernel")
    biases = ANY + r"bias"
    rows = [
      ("cls_positions", _merge(p, "cls", "positions"), torch_trunc(r)),
      ("norm_scale", p["norm_scale"], ones()),
      ("bias", biases, zeros()),
      ("weights", weights, normal(r)),
    ]
    name = signature("vit", variant=variant, initializer_range=r, names=names)
    return build(fn, name, rows, patterns, layout)
  # the original code's attention kernels are DenseGeneral (d, heads, head_dim) and
  # (heads, head_dim, d); Flax initializes them as the flattened d x d matrix
  qkv, out = glorot_uniform(), glorot_uniform()
  if names == "vit_jax":
    qkv = glorot_uniform(in_axis=-3, out_axis=(-2, -1))
    out = glorot_uniform(in_axis=(-3, -2), out_axis=-1)
  rows = [
    ("patch", p["patch"], lecun_normal()),
    ("patch_bias", p["patch_bias"], zeros()),
    ("cls", p["cls"], zeros()),
    ("positions", p["positions"], normal(0.02)),
    ("attention_qkv", p["attention_qkv"], qkv),
    ("attention_out", p["attention_out"], out),
    ("attention_bias", p["attention_bias"], zeros()),
    ("mlp", p["mlp"], glorot_uniform()),
    ("mlp_bias", p["mlp_bias"], normal(1e-6)),
    ("norm_scale", p["norm_scale"], ones()),
    ("norm_bias", p["norm_bias"], zeros()),
    ("head", p["head"], zeros()),
    ("head_bias", p["head_bias"], constant(hb) if hb else zeros()),
  ]
  if pooler:
    rows += [("pooler", p["pooler"], lecun_normal()), ("pooler_bias", p["pooler_bias"], zeros())]
  name = signature("vit", variant=variant, head_bias=hb, names=names)
  return build(fn, name, rows, patterns, layout)


# ---------------------------------------------------------------------------
# torch's default layer initialization
# ---------------------------------------------------------------------------

_TORCH_WEIGHT = he_uniform(negative_slope=math.sqrt(5.0))


@dataclasses.dataclass(frozen=True)
class _TorchDefaultWeight(SiblingRule):
  """torch's default for a parameter named ``weight`` (``kernel``/``scale`` in Flax).

  A sibling rule whose first sibling is the leaf itself, so it sees its own shape:
  rank >= 2 is a ``Linear`` / ``ConvNd`` weight, ``kaiming_uniform_(a=sqrt(5))`` =
  ``U(+-1/sqrt(fan_in))``; rank 1 is a normalization weight, 1.
  """

  def resolve(self, sibling_shape: tuple[int, ...], layout: Layout) -> Initializer:
    return _TORCH_WEIGHT if len(sibling_shape) >= 2 else ones()

  def __repr__(self):
    return "torch_default_weight()"


@dataclasses.dataclass(frozen=True)
class _TorchDefaultBias(SiblingRule):
  """torch's default bias: ``U(+-1/sqrt(fan_in))`` of a ``Linear`` / ``ConvNd`` weight
  (:func:`jaxinit.torch_bias`), 0 beside a normalization weight (rank 1)."""

  def resolve(self, sibling_shape: tuple[int, ...], layout: Layout) -> Initializer:
    if len(sibling_shape) >= 2:
      return torch_bias(self.sibling).resolve(sibling_shape, layout)
    return zeros()

  def __repr__(self):
    return "torch_default_bias()"


def torch_default(
  *,
  embeddings: bool | str = False,
  attention: bool = False,
  names: str = "torch",
  patterns: Patterns = None,
) -> Preset:
  r"""What torch's layers do when they are built: ``nn.Linear``, ``nn.ConvNd``, norms, ...

  * ``nn.Linear``, ``nn.ConvNd``, ``nn.ConvTransposeNd`` weights (any ``weight`` of
    rank >= 2): ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_(a=sqrt(5))``;
    fans in the ``"torch"`` layout, which for ``ConvTransposeNd`` reproduces torch's own
    reading of its weight); their biases ``U(+-1/sqrt(fan_in))`` of the sibling weight;
  * ``nn.LayerNorm``, ``nn.GroupNorm``, ``nn.RMSNorm``, ``nn.BatchNormNd`` (a
    ``weight`` of rank 1): weight 1, bias 0;
  * ``nn.Embedding`` (``embeddings``): ``N(0, 1)``;
  * ``nn.MultiheadAttention`` (``attention``): ``in_proj_weight`` Xavier uniform
    on the whole ``(3d, d)`` tensor, ``in_proj_bias`` and ``out_proj.bias`` 0.

  A state dict does not say which ``weight`` belongs to an embedding: name the
  embeddings (``embeddings=True`` matches modules whose name contains ``embed``; a
  string is a pattern), or they get the ``Linear`` rule. With ``names="flax"``
  Flax's leaf names tell the kinds apart (``kernel``, ``scale``, ``embedding``).
  BatchNorm's running statistics are buffers, not parameters: left alone.

  Roles: ``embeddings`` (with ``embeddings``), ``in_proj_weight``,
  ``in_proj_bias``, ``out_proj_bias`` (with ``attention``), ``weights``, ``bias``.

  Args:
    embeddings: False, True (the default pattern) or a pattern of embedding weights.
    attention: the model has ``nn.MultiheadAttention`` modules.
    names: ``"torch"`` (``layers/0/weight``, torch layout) or ``"flax"``.
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> sd = {"fc": {"weight": jnp.zeros((8, 400)), "bias": jnp.zeros(8)},
    ...       "ln": {"weight": jnp.zeros(8), "bias": jnp.zeros(8)}}
    >>> new = jaxinit.presets.torch_default().apply(sd, jax.random.key(0))
    >>> bool(abs(new["fc"]["weight"]).max() <= 0.05), float(new["ln"]["weight"][0])
    (True, 1.0)

  References:
    torch 2.13.0 ``torch/nn/modules/linear.py``, ``conv.py`` (``reset_parameters``),
    ``sparse.py``, ``normalization.py``, ``batchnorm.py``, ``activation.py``
    (``MultiheadAttention._reset_parameters``), ``torch/nn/init.py``.
  """
  fn = "presets.torch_default"
  names = choice(fn, "names", names, ("torch", "flax"))
  attention = check_bool(fn, "attention", attention)
  if not isinstance(embeddings, bool | str):
    raise fail(fn, f"`embeddings` must be True, False or a pattern, got {embeddings!r}.", TypeError)
  torch_names = names == "torch"
  sib = ("weight",) if torch_names else ("kernel", "scale")
  rows: list[tuple[str, str, Any]] = []
  if embeddings:
    default = ANY + (r"[^/]*(?:embed|Embed)[^/]*/weight" if torch_names else r"embedding")
    rows.append(("embeddings", embeddings if isinstance(embeddings, str) else default, normal(1.0)))
  if attention:
    rows += [
      ("in_proj_weight", ANY + r"in_proj_weight", glorot_uniform()),
      ("in_proj_bias", ANY + r"in_proj_bias", zeros()),
      ("out_proj_bias", ANY + r"out_proj/bias", zeros()),
    ]
  rows += [
    (
      "weights",
      ANY + (r"weight" if torch_names else r"(?:kernel|scale)"),
      _TorchDefaultWeight(sib),
    ),
    ("bias", ANY + r"bias", optional(_TorchDefaultBias(sib))),
  ]
  name = signature("torch_default", embeddings=embeddings, attention=attention, names=names)
  return build(fn, name, rows, patterns, "torch" if torch_names else "flax")
