"""Presets of language models: GPT-2, Hugging Face's default, Megatron / Llama 2, Llama 3
(torchtitan), OLMo, BERT, T5, and GPT-NeoX's small_init / wang_init."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jaxinit._src.basic import constant, normal, ones, truncated_normal, zeros
from jaxinit._src.checks import check_bool
from jaxinit._src.presets.preset import (
  ANY,
  BLOCK,
  InvSqrt,
  Preset,
  build,
  choice,
  count,
  maybe_cutoff,
  positive,
  signature,
  tn,
  torch_trunc,
)
from jaxinit._src.rules import depth_rule, optional
from jaxinit._src.structured import zero_rows

Patterns = Mapping[str, str | None] | None

# Flax-native names shared by the presets (documented in jaxinit.presets).
_FLAX_IN = ANY + BLOCK + r"/(?:(?:attn|cross_attn)/(?:qkv|query|key|value)|mlp/(?:up|gate))/kernel"
_FLAX_OUT = ANY + BLOCK + r"/(?:(?:attn|cross_attn)/out|mlp/down)/kernel"
_FLAX_NORM_SCALE = ANY + r"(?:" + BLOCK + r"/[^/]*norm|final_norm|embed_norm)/scale"
_FLAX_BIAS = (
  ANY + r"(?:" + BLOCK + r"/(?:[^/]*norm|(?:attn|cross_attn|mlp)/[^/]+)|final_norm|embed_norm)/bias"
)


def _padded(init, padding_idx):
  return init if padding_idx is None else zero_rows(init, rows=padding_idx)


def _padding(fn: str, value: Any) -> int | None:
  return None if value is None else count(fn, "padding_idx", value, minimum=0)


# ---------------------------------------------------------------------------
# GPT-2
# ---------------------------------------------------------------------------


def gpt2(
  n_layers: int,
  *,
  initializer_range: float = 0.02,
  names: str = "hf",
  bias: bool = True,
  tied: bool = True,
  patterns: Patterns = None,
) -> Preset:
  r"""GPT-2's initialization (Hugging Face ``transformers`` and nanoGPT).

  Every weight ``N(0, r^2)`` (``r = initializer_range``), except the two
  residual output projections of each block (``attn.c_proj`` and ``mlp.c_proj``),
  ``N(0, r^2 / (2 L))``; LayerNorm weights 1, every bias 0. Token and position
  embeddings ``N(0, r^2)``; the LM head is tied to the token embedding.

  OpenAI's released TF code (``src/model.py``, 9b63575) has no residual scaling
  and ``wpe`` std 0.01; its paper's "1/sqrt(N)" is what HF and nanoGPT implement.

  Roles: ``residual_out``, ``inputs`` (``c_attn``, ``q_attn``, ``c_fc``),
  ``embeddings``, ``norm_scale``, ``bias`` (with ``bias``), ``head`` (untied only).

  Args:
    n_layers: L, the number of blocks.
    initializer_range: r (HF's config name; nanoGPT hard-codes 0.02).
    names: ``"hf"`` (``transformer/h/{l}/attn/c_proj/weight``; Conv1D weights are
      ``(in, out)``, so the layout is ``"flax"``), ``"nanogpt"`` (the same names,
      ``nn.Linear`` ``(out, in)``), or ``"flax"`` (Flax-native names).
    bias: whether the model has biases (nanoGPT's ``bias=False`` has none).
    tied: the LM head is the token embedding (GPT-2 always; False adds a
      ``head`` role ``N(0, r^2)``).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.gpt2(n_layers=12)
    >>> p.pattern("residual_out")
    '(?:transformer/)?h/\\d+/(?:attn|crossattention|mlp)/c_proj/weight'
    >>> p[p.pattern("residual_out")]
    normal(stddev=0.004082482904638631)

  References:
    transformers 5.24.0 ``models/gpt2/modeling_gpt2.py`` (``GPT2PreTrainedModel._init_weights``);
    karpathy/nanoGPT ``model.py`` at 3adf61e (``_init_weights`` and the ``c_proj.weight`` loop);
    A. Radford et al., "Language models are unsupervised multitask learners", 2019.
  """
  fn = "presets.gpt2"
  L = count(fn, "n_layers", n_layers)
  r = positive(fn, "initializer_range", initializer_range)
  names = choice(fn, "names", names, ("hf", "nanogpt", "flax"))
  bias, tied = check_bool(fn, "bias", bias), check_bool(fn, "tied", tied)
  if names == "flax":
    p = {
      "residual_out": ANY + BLOCK + r"/(?:attn/out|cross_attn/out|mlp/down)/kernel",
      "inputs": _FLAX_IN,
      "embeddings": ANY + r"(?:embed|pos_embed)/embedding",
      "norm_scale": _FLAX_NORM_SCALE,
      "bias": _FLAX_BIAS,
      "head": ANY + r"head/kernel",
    }
    ties: tuple = ()
  else:
    t = r"(?:transformer/)?"
    p = {
      "residual_out": t + r"h/\d+/(?:attn|crossattention|mlp)/c_proj/weight",
      "inputs": t + r"h/\d+/(?:attn/c_attn|crossattention/(?:q_attn|c_attn)|mlp/c_fc)/weight",
      "embeddings": t + r"(?:wte|wpe)/weight",
      "norm_scale": t + r"(?:h/\d+/ln_(?:1|2|cross_attn)|ln_f)/weight",
      "bias": t
      + r"(?:h/\d+/(?:ln_(?:1|2|cross_attn)|(?:attn|crossattention)/(?:c_attn|q_attn|c_proj)"
      r"|mlp/(?:c_fc|c_proj))|ln_f)/bias",
      "head": r"lm_head/weight",
    }
    ties = (("lm_head/weight", "transformer/wte/weight"),) if tied else ()
  rows = [
    ("residual_out", p["residual_out"], normal(r / math.sqrt(2 * L))),
    ("inputs", p["inputs"], normal(r)),
    ("embeddings", p["embeddings"], normal(r)),
    ("norm_scale", p["norm_scale"], ones()),
  ]
  rows += [("bias", p["bias"], zeros())] if bias else []
  rows += [] if tied else [("head", p["head"], normal(r))]
  name = signature("gpt2", n_layers=L, initializer_range=r, names=names)
  return build(fn, name, rows, patterns, "torch" if names == "nanogpt" else "flax", ties)


# ---------------------------------------------------------------------------
# Llama-style names, shared by hf Llama / torchtitan / Flax-native presets.
# ---------------------------------------------------------------------------

_HF = r"(?:model/)?"
# Llama-style names: each naming's block prefix (``{}`` is the layer index), the
# suffixes of the block's weights, and the names outside the blocks.
_LLAMA_NAMES = {
  "hf": {
    "block": _HF + r"layers/{}/",
    "qkv": r"self_attn/(?:q|k|v)_proj/weight",
    "attn_out": r"self_attn/o_proj/weight",
    "mlp_gate": r"mlp/gate_proj/weight",
    "mlp_up": r"mlp/up_proj/weight",
    "mlp_down": r"mlp/down_proj/weight",
    "embedding": _HF + r"embed_tokens/weight",
    "norm_scale": _HF + r"(?:layers/\d+/[^/]*norm|norm)/weight",
    "bias": _HF + r"(?:layers/\d+/(?:self_attn|mlp)/[^/]+|layers/\d+/[^/]*norm|norm)/bias",
    "head": r"lm_head/weight",
  },
  "torchtitan": {
    "block": r"layers/{}/",
    "qkv": r"attention/(?:wq|wk|wv|wqkv)/weight",
    "attn_out": r"attention/wo/weight",
    "mlp_gate": r"feed_forward/w1/weight",
    "mlp_up": r"feed_forward/w3/weight",
    "mlp_down": r"feed_forward/w2/weight",
    "embedding": r"tok_embeddings/weight",
    "norm_scale": r"(?:layers/\d+/(?:attention_norm|ffn_norm)|norm)/weight",
    "bias": r"layers/\d+/(?:attention|feed_forward)/[^/]+/bias",
    "head": r"output/weight",
  },
  "flax": {
    "block": ANY + r"blocks[_/]{}/",
    "qkv": r"(?:attn|cross_attn)/(?:qkv|query|key|value)/kernel",
    "attn_out": r"(?:attn|cross_attn)/out/kernel",
    "mlp_gate": r"mlp/gate/kernel",
    "mlp_up": r"mlp/up/kernel",
    "mlp_down": r"mlp/down/kernel",
    "embedding": ANY + r"embed/embedding",
    "norm_scale": _FLAX_NORM_SCALE,
    "bias": _FLAX_BIAS,
    "head": ANY + r"head/kernel",
  },
}


def _blocks(names: str, *roles: str, layer: bool = False) -> str:
  """One pattern for the block weights ``roles``; ``layer``: capture the index as ``layer``."""
  q = _LLAMA_NAMES[names]
  index = r"(?P<layer>\d+)" if layer else r"\d+"
  suffix = q[roles[0]] if len(roles) == 1 else "(?:" + "|".join(q[r] for r in roles) + ")"
  return q["block"].format(index) + suffix


def hf_default(
  *,
  initializer_range: float = 0.02,
  padding_idx: int | None = None,
  names: str = "hf",
  patterns: Patterns = None,
) -> Preset:
  r"""Hugging Face's base initialization (``PreTrainedModel._init_weights``): Llama, Mistral, ...

  Every ``Linear``, ``Conv`` and ``Embedding`` weight ``N(0, r^2)``, every bias 0,
  every normalization weight 1 (modules whose name contains ``norm`` or starts with
  ``ln``); the embedding row ``padding_idx`` (``config.pad_token_id`` when set) 0.
  Models without their own ``_init_weights`` (Llama, Mistral, Qwen2, OLMo in
  transformers) get exactly this; GPT-2, BERT, T5 and ViT have their presets.

  Roles: ``embedding`` (only with ``padding_idx``), ``norm_scale``, ``bias``, ``weights``.

  Args:
    initializer_range: r.
    padding_idx: the embedding row set to 0, or None.
    names: ``"hf"`` (state-dict names, torch layout) or ``"flax"``.
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> sd = {"model": {"embed_tokens": {"weight": jnp.zeros((100, 64))},
    ...                 "layers": [{"mlp": {"up_proj": {"weight": jnp.zeros((128, 64))}}}],
    ...                 "norm": {"weight": jnp.zeros(64)}}}
    >>> new = jaxinit.presets.hf_default(padding_idx=0).apply(sd, jax.random.key(0))
    >>> emb = new["model"]["embed_tokens"]["weight"]
    >>> float(new["model"]["norm"]["weight"][0]), float(abs(emb[0]).max())
    (1.0, 0.0)

  References:
    transformers 5.24.0 ``modeling_utils.py`` (``PreTrainedModel._init_weights``) and
    ``models/llama/modeling_llama.py`` (no override).
  """
  fn = "presets.hf_default"
  r = positive(fn, "initializer_range", initializer_range)
  pad = _padding(fn, padding_idx)
  names = choice(fn, "names", names, ("hf", "flax"))
  if names == "hf":
    p = {
      "embedding": ANY + r"(?:embed_tokens|word_embeddings|wte|shared)/weight",
      "norm_scale": ANY + r"(?:[^/]*(?:norm|Norm)[^/]*|ln_[^/]*)/weight",
      "bias": ANY + r"[^/]+/bias",
      "weights": ANY + r"[^/]+/weight",
    }
  else:
    p = {
      "embedding": ANY + r"embed/embedding",
      "norm_scale": ANY + r"[^/]*norm[^/]*/scale",
      "bias": ANY + r"[^/]+/bias",
      "weights": ANY + r"[^/]+/(?:kernel|embedding)",
    }
  rows = [("embedding", p["embedding"], _padded(normal(r), pad))] if pad is not None else []
  rows += [
    ("norm_scale", p["norm_scale"], optional(ones())),
    ("bias", p["bias"], optional(zeros())),
    ("weights", p["weights"], normal(r)),
  ]
  name = signature("hf_default", initializer_range=r, padding_idx=pad, names=names)
  return build(fn, name, rows, patterns, "torch" if names == "hf" else "flax")


# ---------------------------------------------------------------------------
# Megatron "full megatron" (metaseq), Llama 2
# ---------------------------------------------------------------------------

_METASEQ = {
  "embedding": r"decoder/embed_tokens/weight",
  "positions": r"decoder/embed_positions/weight",
  "inputs": r"decoder/layers/\d+/(?:self_attn/(?:qkv_proj|q_proj|k_proj|v_proj)|fc1"
  r"|activation_fn/gate)/weight",
  "residual_out": r"decoder/layers/\d+/(?:self_attn/out_proj|fc2)/weight",
  "norm_scale": r"decoder/(?:layers/\d+/(?:self_attn_layer_norm|final_layer_norm)"
  r"|layer_norm)/weight",
  "bias": r"decoder/(?:layers/\d+/(?:self_attn/[^/]+|fc1|fc2|activation_fn/gate"
  r"|self_attn_layer_norm|final_layer_norm)|layer_norm)/bias",
  "head": r"decoder/output_projection/weight",
}


def megatron(
  n_layers: int,
  d_model: int,
  *,
  sigma: float = 0.006,
  scalar: float = 1.0,
  truncate: bool = False,
  pos_scalar: float = 1.0,
  padding_idx: int | str | None = "default",
  names: str = "metaseq",
  bias: bool | None = None,
  positions: bool | None = None,
  tied: bool = False,
  patterns: Patterns = None,
) -> Preset:
  r"""metaseq's "full megatron" initialization (``--full-megatron-init``), OPT's.

  Inputs of every block (q, k, v; ``fc1`` and the SwiGLU gate) ``N(0, sigma^2)``;
  the residual outputs (attention ``out_proj``, ``fc2``)
  ``N(0, (sigma * scalar)^2 / (2 L))``; token embeddings ``N(0, sigma^2)`` and
  learned positions ``N(0, (sigma * pos_scalar)^2)``, each with the padding row
  0; biases 0, LayerNorm 1 / 0; the untied output projection ``N(0, 1 / d)``,
  never truncated. ``truncate=True`` (metaseq's ``--truncate-init``) cuts the
  normals at +-3 standard deviations (torch ``trunc_normal_(a=-3 sigma, b=3 sigma)``,
  not rescaled: std x 0.98658).

  Roles: ``embedding``, ``positions``, ``inputs``, ``residual_out``,
  ``norm_scale``, ``bias``, ``head`` (untied only).

  Args:
    n_layers: L (``decoder_layers``).
    d_model: d (for the head's 1/d).
    sigma: ``megatron_init_sigma`` (metaseq's default 0.006).
    scalar: ``full_megatron_init_scalar``.
    truncate: ``truncate_init``.
    pos_scalar: ``pos_init_scalar``.
    padding_idx: the embedding row set to 0; ``"default"``: 1 (fairseq's pad) for
      metaseq names, none otherwise.
    names: ``"metaseq"`` (``decoder/layers/{l}/fc2/weight``), ``"hf"`` (Hugging
      Face Llama names) or ``"flax"``.
    bias: the model has biases (default: True for metaseq, False otherwise).
    positions: the model has learned positions (default: True for metaseq).
    tied: the output projection is the token embedding (``share_decoder_input_output_embed``).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.megatron(n_layers=24, d_model=1024)
    >>> rule = p[p.pattern("residual_out")]
    >>> print(f"{rule.stddev:.6f} = {0.006 / (2 * 24) ** 0.5:.6f}")
    0.000866 = 0.000866

  References:
    facebookresearch/metaseq f7ffa5f ``metaseq/utils.py`` (``init_method_normal``,
    ``scaled_init_method_normal``), ``metaseq/models/transformer_decoder.py``,
    ``metaseq/modules/transformer_decoder_layer.py``;
    M. Shoeybi et al., "Megatron-LM", 2019.
  """
  fn = "presets.megatron"
  L, d = count(fn, "n_layers", n_layers), count(fn, "d_model", d_model)
  s, k = positive(fn, "sigma", sigma), positive(fn, "scalar", scalar)
  ps = positive(fn, "pos_scalar", pos_scalar)
  truncate, tied = check_bool(fn, "truncate", truncate), check_bool(fn, "tied", tied)
  names = choice(fn, "names", names, ("metaseq", "hf", "flax"))
  meta = names == "metaseq"
  pad = (1 if meta else None) if padding_idx == "default" else _padding(fn, padding_idx)
  bias = meta if bias is None else check_bool(fn, "bias", bias)
  positions = meta if positions is None else check_bool(fn, "positions", positions)
  if meta:
    p = dict(_METASEQ)
  else:
    q = _LLAMA_NAMES[names]
    p = {
      "embedding": q["embedding"],
      "positions": ANY + (r"pos_embed/embedding" if names == "flax" else r"embed_positions/weight"),
      "inputs": _blocks(names, "qkv", "mlp_gate", "mlp_up"),
      "residual_out": _blocks(names, "attn_out", "mlp_down"),
      "norm_scale": q["norm_scale"],
      "bias": q["bias"],
      "head": q["head"],
    }
  c = 3.0 if truncate else None
  rows = [
    ("embedding", p["embedding"], _padded(tn(s, c), pad)),
    ("positions", p["positions"], _padded(tn(s * ps, c), pad)),
    ("inputs", p["inputs"], tn(s, c)),
    ("residual_out", p["residual_out"], tn(s * k / math.sqrt(2 * L), c)),
    ("norm_scale", p["norm_scale"], ones()),
    ("bias", p["bias"], zeros()),
    ("head", p["head"], normal(1 / math.sqrt(d))),
  ]
  drop = {"positions"} if not positions else set()
  drop |= {"bias"} if not bias else set()
  drop |= {"head"} if tied else set()
  rows = [row for row in rows if row[0] not in drop]
  ties = (("decoder/output_projection/weight", "decoder/embed_tokens/weight"),) if tied else ()
  name = signature("megatron", n_layers=L, d_model=d, sigma=s, truncate=truncate, names=names)
  return build(fn, name, rows, patterns, "flax" if names == "flax" else "torch", ties)


def llama2(
  n_layers: int,
  d_model: int,
  *,
  sigma: float = 0.02,
  names: str = "hf",
  patterns: Patterns = None,
  **megatron_options: Any,
) -> Preset:
  r"""The "Llama 2" initialization: full megatron (:func:`megatron`) on Llama's names.

  q, k, v, gate and up projections and the token embedding ``N(0, sigma^2)``;
  ``o_proj`` and ``down_proj`` ``N(0, sigma^2 / (2 L))``; RMSNorm weights 1; the
  untied ``lm_head`` ``N(0, 1 / d)``. OLMo's code calls full megatron "the init used
  for Llama 2" (``olmo/config.py``, ``InitFnType.full_megatron``); Meta's released
  Llama 2 code is inference-only and confirms nothing. OLMo's own variant, with
  its 3-sigma cutoff and ``1/sqrt(d)`` head, is ``olmo(init_fn="full_megatron")``.

  Args:
    n_layers: L.
    d_model: d.
    sigma: the base std (OLMo's default ``init_std`` 0.02).
    names: ``"hf"`` or ``"flax"`` (or ``"metaseq"``).
    patterns: ``{role: pattern or None}`` overrides.
    **megatron_options: any other :func:`megatron` argument.

  Returns:
    A :class:`Preset` (the roles of :func:`megatron`).

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.llama2(n_layers=32, d_model=4096)
    >>> p[p.pattern("residual_out")], p[p.pattern("head")]
    (normal(stddev=0.0025), normal(stddev=0.015625))

  References:
    allenai/OLMo 59a53e3 ``olmo/config.py``, ``olmo/model.py``; metaseq f7ffa5f
    (see :func:`megatron`).
  """
  return megatron(
    n_layers, d_model, sigma=sigma, names=names, patterns=patterns, **megatron_options
  )


# ---------------------------------------------------------------------------
# Llama 3 (torchtitan)
# ---------------------------------------------------------------------------


def llama3(
  n_layers: int,
  d_model: int,
  *,
  depth_init: bool = True,
  names: str = "hf",
  patterns: Patterns = None,
) -> Preset:
  r"""torchtitan's Llama 3 initialization (``depth_init`` True or False).

  With ``std_l = 0.02 / sqrt(2 (l + 1))`` (``depth_init=True``, torchtitan's
  default) or ``0.02 / sqrt(2 L)``:

  * token embedding ``N(0, 1)``;
  * ``wq``, ``wk``, ``wv``, ``w1`` (gate): ``trunc_normal_(std=0.02)``;
  * ``wo``, ``w2`` (down) **and ``w3`` (up)**: ``trunc_normal_(std=std_l)``;
  * RMSNorm weights 1; the output projection ``trunc_normal_(std=d^-1/2,
    a=-3 std, b=3 std)`` (cut at 3 standard deviations, not rescaled: std x 0.98658).

  torch's ``trunc_normal_`` default bounds are absolute (+-2): with std <= 0.02 that
  is 100 standard deviations or more, so these are drawn as plain normals (the
  same distribution). Depth is a :func:`jaxinit.depth_rule`: layer ``l`` is read
  from the path (group ``layer``).

  Roles: ``embedding``, ``inputs`` (q, k, v, gate), ``depth_out`` (o, down, up),
  ``norm_scale``, ``head``.

  Args:
    n_layers: L (used when ``depth_init=False``).
    d_model: d.
    depth_init: per-layer std (True) or one std for all layers.
    names: ``"hf"`` (``model/layers/{l}/mlp/up_proj/weight``), ``"torchtitan"``
      (``layers/{l}/feed_forward/w3/weight``) or ``"flax"``.
    patterns: ``{role: pattern or None}`` overrides (``depth_out`` must capture
      ``(?P<layer>\d+)`` when ``depth_init``).

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.llama3(n_layers=32, d_model=4096, names="torchtitan")
    >>> p[p.pattern("depth_out")]
    depth_rule(normal(stddev=0.02), scale=1/sqrt(2 * (l + 1)), group='layer')

  References:
    pytorch/torchtitan v0.2.2 (73a0e69) ``torchtitan/models/llama3/model/model.py``
    (``Transformer.init_weights``, ``TransformerBlock.__init__``: ``weight_init_std``),
    ``model/args.py`` (``depth_init: bool = True``), ``torchtitan/models/utils.py``
    (``trunc_normal_``).
  """
  fn = "presets.llama3"
  L, d = count(fn, "n_layers", n_layers), count(fn, "d_model", d_model)
  depth_init = check_bool(fn, "depth_init", depth_init)
  names = choice(fn, "names", names, ("hf", "torchtitan", "flax"))
  q = _LLAMA_NAMES[names]
  out: Any
  if depth_init:
    out = depth_rule(torch_trunc(0.02), InvSqrt(2.0, 1), group="layer")
  else:
    out = torch_trunc(0.02 / math.sqrt(2 * L))
  out_pattern = _blocks(names, "attn_out", "mlp_down", "mlp_up", layer=depth_init)
  rows = [
    ("embedding", q["embedding"], normal(1.0)),
    ("inputs", _blocks(names, "qkv", "mlp_gate"), torch_trunc(0.02)),
    ("depth_out", out_pattern, out),
    ("norm_scale", q["norm_scale"], ones()),
    ("head", q["head"], truncated_normal(1 / math.sqrt(d), lower=-3.0, upper=3.0)),
  ]
  name = signature("llama3", n_layers=L, d_model=d, depth_init=depth_init, names=names)
  return build(fn, name, rows, patterns, "flax" if names == "flax" else "torch")


# ---------------------------------------------------------------------------
# OLMo
# ---------------------------------------------------------------------------

_OLMO = {
  "embedding": r"transformer/wte/weight",
  "positions": r"transformer/wpe/weight",
  "inputs": r"transformer/blocks/\d+/(?:att_proj|q_proj|k_proj|v_proj|ff_proj)/weight",
  "attn_out": r"transformer/blocks/(?P<layer>\d+)/attn_out/weight",
  "ff_out": r"transformer/blocks/(?P<layer>\d+)/ff_out/weight",
  "norm_scale": r"transformer/(?:blocks/\d+/(?:attn_norm|ff_norm|q_norm|k_norm)|ln_f)/weight",
  "bias": r"transformer/(?:blocks/\d+/[^/]+|ff_out|ln_f)/bias",
  "head": r"transformer/ff_out/weight",
}


def _olmo_names(names: str) -> dict[str, str]:
  if names == "olmo":
    return dict(_OLMO)
  q = _LLAMA_NAMES[names]
  return {
    "embedding": q["embedding"],
    "positions": ANY + (r"pos_embed/embedding" if names == "flax" else r"embed_positions/weight"),
    "inputs": _blocks(names, "qkv", "mlp_gate", "mlp_up"),
    "attn_out": _blocks(names, "attn_out", layer=True),
    "ff_out": _blocks(names, "mlp_down", layer=True),
    "norm_scale": q["norm_scale"],
    "bias": q["bias"],
    "head": q["head"],
  }


def olmo(
  n_layers: int,
  d_model: int,
  d_ff: int,
  *,
  init_fn: str = "mitchell",
  init_std: float = 0.02,
  cutoff: float | None = None,
  emb_init_std: float | None = None,
  scale_emb_init: bool = False,
  weight_tying: bool = True,
  names: str = "olmo",
  bias: bool = False,
  norm_affine: bool = True,
  positions: bool = False,
  patterns: Patterns = None,
) -> Preset:
  r"""OLMo's initializations: ``mitchell``, ``full_megatron`` and ``normal``.

  Every normal is cut at ``c`` standard deviations, torch ``trunc_normal_(std,
  a=-c std, b=c std)`` not rescaled (``c = cutoff``, or 3 for ``mitchell`` and
  ``full_megatron``; ``normal`` cuts only with a ``cutoff``):

  ============  ===============  ================================  ================
  parameter     mitchell         full_megatron                     normal
  ============  ===============  ================================  ================
  wte           emb or 1/sqrt d  emb, init_std sqrt d (scale), or  emb or init_std
                                 init_std
  wpe, inputs   1/sqrt d         init_std                          init_std
  attn_out      1/sqrt(2 d (l+1))   init_std / sqrt(2 L)           init_std
  ff_out        1/sqrt(2 d_ff (l+1))  init_std / sqrt(2 L)         init_std
  head          1/sqrt d         1/sqrt d                          init_std
  ============  ===============  ================================  ================

  (``emb`` = ``emb_init_std``; inputs are ``att_proj`` / ``q,k,v_proj`` and
  ``ff_proj``; ``d_ff`` is ``ff_out``'s input width: ``mlp_hidden_size / 2`` for
  SwiGLU, e.g. 11008 for OLMo-7B.) Biases 0, norm weights 1. ``mitchell``'s
  per-layer stds are :func:`jaxinit.depth_rule`\ s (layer ``l`` from the path).
  Hugging Face's ``OlmoForCausalLM`` does not use these (it has the base
  ``N(0, 0.02^2)``, :func:`hf_default`); ``names="hf"`` maps OLMo's scheme onto
  its names (``o_proj`` = ``attn_out``, ``down_proj`` = ``ff_out``).

  Roles: ``embedding``, ``positions`` (with ``positions``), ``inputs``,
  ``attn_out``, ``ff_out``, ``head`` (without ``weight_tying``), ``norm_scale``
  (with ``norm_affine``), ``bias`` (with ``bias``).

  Args:
    n_layers: L.
    d_model: d.
    d_ff: the input width of each block's ``ff_out``.
    init_fn: ``"mitchell"``, ``"full_megatron"`` or ``"normal"``.
    init_std: ``init_std``.
    cutoff: ``init_cutoff_factor`` (None: 3 for mitchell / full_megatron).
    emb_init_std: ``emb_init_std``.
    scale_emb_init: ``scale_emb_init`` (full_megatron).
    weight_tying: the head is the token embedding (OLMo's default).
    names: ``"olmo"`` (``transformer/blocks/{l}/attn_out/weight``), ``"hf"`` or ``"flax"``.
    bias: ``include_bias``.
    norm_affine: ``layer_norm_with_affine`` (OLMo-7B: False, no norm weights).
    positions: learned positions ``wpe`` (no RoPE / ALiBi).
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.olmo(n_layers=32, d_model=4096, d_ff=11008)
    >>> p[p.pattern("ff_out")].scale(31) * 0.98658  # layer 31's std (the 3-sigma cut: x 0.98658)
    0.0011754...

  References:
    allenai/OLMo 59a53e3 ``olmo/model.py`` (``OLMoSequentialBlock.reset_parameters``,
    ``OLMo.reset_parameters``), ``olmo/initialization.py`` (``init_normal``),
    ``olmo/config.py`` (defaults).
  """
  fn = "presets.olmo"
  L, d = count(fn, "n_layers", n_layers), count(fn, "d_model", d_model)
  dff = count(fn, "d_ff", d_ff)
  init_fn = choice(fn, "init_fn", init_fn, ("mitchell", "full_megatron", "normal"))
  sigma = positive(fn, "init_std", init_std)
  cut = maybe_cutoff(fn, "cutoff", cutoff)
  emb = None if emb_init_std is None else positive(fn, "emb_init_std", emb_init_std)
  scale_emb, tying = check_bool(fn, "scale_emb_init", scale_emb_init), weight_tying
  tying = check_bool(fn, "weight_tying", tying)
  names = choice(fn, "names", names, ("olmo", "hf", "flax"))
  flags = {k: check_bool(fn, k, v) for k, v in (("bias", bias), ("norm_affine", norm_affine))}
  positions = check_bool(fn, "positions", positions)
  p = _olmo_names(names)
  inv_d = 1 / math.sqrt(d)
  c: float | None
  attn_out: Any
  ff_out: Any
  if init_fn == "mitchell":
    c = 3.0 if cut is None else cut
    stds = {"embedding": emb or inv_d, "positions": inv_d, "inputs": inv_d, "head": inv_d}
    base = tn(1.0, c)
    attn_out = depth_rule(base, InvSqrt(2.0 * d, 1), group="layer")
    ff_out = depth_rule(base, InvSqrt(2.0 * dff, 1), group="layer")
  else:
    c = (3.0 if cut is None else cut) if init_fn == "full_megatron" else cut
    megatron_ = init_fn == "full_megatron"
    wte = emb or (sigma * math.sqrt(d) if (megatron_ and scale_emb) else sigma)
    stds = {"embedding": wte, "positions": sigma, "inputs": sigma}
    stds["head"] = inv_d if megatron_ else sigma
    out = sigma / math.sqrt(2 * L) if megatron_ else sigma
    attn_out = ff_out = tn(out, c)
    p["attn_out"] = p["attn_out"].replace("(?P<layer>", "(?:")
    p["ff_out"] = p["ff_out"].replace("(?P<layer>", "(?:")
  rows = [
    ("embedding", p["embedding"], tn(stds["embedding"], c)),
    ("positions", p["positions"], tn(stds["positions"], c)),
    ("inputs", p["inputs"], tn(stds["inputs"], c)),
    ("attn_out", p["attn_out"], attn_out),
    ("ff_out", p["ff_out"], ff_out),
    ("head", p["head"], tn(stds["head"], c)),
    ("norm_scale", p["norm_scale"], ones()),
    ("bias", p["bias"], zeros()),
  ]
  drop = {"positions"} - ({"positions"} if positions else set())
  drop |= {"head"} if tying else set()
  drop |= {"bias"} if not flags["bias"] else set()
  drop |= {"norm_scale"} if not flags["norm_affine"] else set()
  rows = [row for row in rows if row[0] not in drop]
  name = signature("olmo", n_layers=L, d_model=d, d_ff=dff, init_fn=init_fn, names=names)
  return build(fn, name, rows, patterns, "flax" if names == "flax" else "torch")


# ---------------------------------------------------------------------------
# BERT
# ---------------------------------------------------------------------------


def bert(
  *,
  initializer_range: float = 0.02,
  pad_token_id: int | None = 0,
  variant: str = "hf",
  names: str = "hf",
  patterns: Patterns = None,
) -> Preset:
  r"""BERT's initialization: Hugging Face's, or Google's original TF one.

  ``variant="hf"``: every ``Linear`` and ``Embedding`` weight ``N(0, r^2)`` (word,
  position and token-type embeddings, attention, MLP, pooler, MLM transform), the
  word embedding's row ``pad_token_id`` 0, every bias 0 (``cls.predictions.bias``
  too), LayerNorm 1 / 0; the MLM decoder is tied to the word embedding.
  ``variant="original"``: google-research/bert's ``truncated_normal_initializer(r)``
  for every weight, cut at 2 standard deviations and not rescaled (std
  ``0.8796 r``), no padding row.

  Roles: ``word_embeddings``, ``norm_scale``, ``bias``, ``weights``.

  Args:
    initializer_range: r.
    pad_token_id: the word-embedding row set to 0 (``"hf"``), or None.
    variant: ``"hf"`` or ``"original"``.
    names: ``"hf"`` (``bert/encoder/layer/{l}/attention/self/query/weight``) or ``"flax"``.
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.bert()
    >>> p[p.pattern("word_embeddings")]
    zero_rows(init=normal(stddev=0.02))
    >>> p.ties[0]
    ('cls/predictions/decoder/weight', 'bert/embeddings/word_embeddings/weight')

  References:
    transformers 5.24.0 ``models/bert/modeling_bert.py`` (``BertPreTrainedModel._init_weights``)
    and ``modeling_utils.py``; google-research/bert eedf571 ``modeling.py``
    (``create_initializer``).
  """
  fn = "presets.bert"
  r = positive(fn, "initializer_range", initializer_range)
  pad = None if pad_token_id is None else count(fn, "pad_token_id", pad_token_id, minimum=0)
  variant = choice(fn, "variant", variant, ("hf", "original"))
  names = choice(fn, "names", names, ("hf", "flax"))
  if names == "hf":
    p = {
      "word_embeddings": r"(?:bert/)?embeddings/word_embeddings/weight",
      "norm_scale": ANY + r"LayerNorm/weight",
      "bias": ANY + r"bias",
      "weights": ANY + r"weight",
    }
    ties: tuple[tuple[str, str], ...] = (
      ("cls/predictions/decoder/weight", "bert/embeddings/word_embeddings/weight"),
      ("cls/predictions/decoder/bias", "cls/predictions/bias"),
    )
  else:
    p = {
      "word_embeddings": ANY + r"embed/embedding",
      "norm_scale": ANY + r"[^/]*norm[^/]*/scale",
      "bias": ANY + r"bias",
      "weights": ANY + r"(?:kernel|embedding)",
    }
    ties = ()
  w = normal(r) if variant == "hf" else truncated_normal(r, lower=-2.0, upper=2.0)
  word = _padded(w, pad if variant == "hf" else None)
  rows = [
    ("word_embeddings", p["word_embeddings"], word),
    ("norm_scale", p["norm_scale"], ones()),
    ("bias", p["bias"], zeros()),
    ("weights", p["weights"], w),
  ]
  name = signature("bert", initializer_range=r, variant=variant, names=names)
  return build(fn, name, rows, patterns, "torch" if names == "hf" else "flax", ties)


# ---------------------------------------------------------------------------
# T5
# ---------------------------------------------------------------------------


def t5(
  d_model: int,
  d_kv: int,
  n_heads: int,
  d_ff: int,
  *,
  factor: float = 1.0,
  names: str = "hf",
  tied: bool = True,
  patterns: Patterns = None,
) -> Preset:
  r"""T5's initialization (Mesh TensorFlow's, as Hugging Face implements it).

  With ``f = initializer_factor``: shared embedding ``N(0, f^2)``; attention
  ``q`` ``N(0, f^2 / (d d_kv))`` (the 1/sqrt(d_kv) of attention folded into q),
  ``k`` and ``v`` ``N(0, f^2 / d)``, ``o`` ``N(0, f^2 / (H d_kv))``; relative
  attention bias ``N(0, f^2 / d)``; FFN ``wi`` (``wi_0``, ``wi_1``) ``N(0, f^2 / d)``,
  ``wo`` ``N(0, f^2 / d_ff)``; layer-norm weights ``f``. No biases. transformers 5.x
  always ties ``lm_head`` to ``shared`` (``T5Config`` forces it); ``tied=False``
  adds v4's untied T5 v1.1 head ``N(0, f^2)``.

  Roles: ``shared``, ``q``, ``kv``, ``o``, ``relative_bias``, ``mlp_in``,
  ``mlp_out``, ``norm_scale``, ``head`` (untied only).

  Args:
    d_model: d.
    d_kv: per-head width.
    n_heads: H.
    d_ff: FFN width.
    factor: ``initializer_factor``.
    names: ``"hf"`` (``encoder/block/{l}/layer/0/SelfAttention/q/weight``) or ``"flax"``.
    tied: the LM head is ``shared``.
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.t5(d_model=512, d_kv=64, n_heads=8, d_ff=2048)
    >>> print(f"q {p[p.pattern('q')].stddev:.6f}, o {p[p.pattern('o')].stddev:.6f}")
    q 0.005524, o 0.044194

  References:
    transformers 5.24.0 ``models/t5/modeling_t5.py`` (``T5PreTrainedModel._init_weights``),
    ``models/t5/configuration_t5.py``; C. Raffel et al., "Exploring the limits of
    transfer learning with a unified text-to-text transformer", JMLR 2020.
  """
  fn = "presets.t5"
  d, dkv = count(fn, "d_model", d_model), count(fn, "d_kv", d_kv)
  h, dff = count(fn, "n_heads", n_heads), count(fn, "d_ff", d_ff)
  f = positive(fn, "factor", factor)
  names = choice(fn, "names", names, ("hf", "flax"))
  tied = check_bool(fn, "tied", tied)
  if names == "hf":
    att = r"(?:encoder|decoder)/block/\d+/layer/\d+/(?:SelfAttention|EncDecAttention)/"
    ffn = r"(?:encoder|decoder)/block/\d+/layer/\d+/DenseReluDense/"
    p = {
      "shared": r"shared/weight",
      "q": att + r"q/weight",
      "kv": att + r"(?:k|v)/weight",
      "o": att + r"o/weight",
      "relative_bias": att + r"relative_attention_bias/weight",
      "mlp_in": ffn + r"wi(?:_0|_1)?/weight",
      "mlp_out": ffn + r"wo/weight",
      "norm_scale": r"(?:encoder|decoder)/(?:block/\d+/layer/\d+/layer_norm"
      r"|final_layer_norm)/weight",
      "head": r"lm_head/weight",
    }
    ties: tuple[tuple[str, str], ...] = (("encoder/embed_tokens/weight", "shared/weight"),)
    ties += (("decoder/embed_tokens/weight", "shared/weight"),)
    ties += (("lm_head/weight", "shared/weight"),) if tied else ()
  else:
    att = ANY + BLOCK + r"/(?:attn|cross_attn)/"
    p = {
      "shared": ANY + r"embed/embedding",
      "q": att + r"query/kernel",
      "kv": att + r"(?:key|value)/kernel",
      "o": att + r"out/kernel",
      "relative_bias": ANY + r"relative_bias/embedding",
      "mlp_in": ANY + BLOCK + r"/mlp/(?:up|gate)/kernel",
      "mlp_out": ANY + BLOCK + r"/mlp/down/kernel",
      "norm_scale": _FLAX_NORM_SCALE,
      "head": ANY + r"head/kernel",
    }
    ties = ()
  rows = [
    ("shared", p["shared"], normal(f)),
    ("q", p["q"], normal(f / math.sqrt(d * dkv))),
    ("kv", p["kv"], normal(f / math.sqrt(d))),
    ("o", p["o"], normal(f / math.sqrt(h * dkv))),
    ("relative_bias", p["relative_bias"], normal(f / math.sqrt(d))),
    ("mlp_in", p["mlp_in"], normal(f / math.sqrt(d))),
    ("mlp_out", p["mlp_out"], normal(f / math.sqrt(dff))),
    ("norm_scale", p["norm_scale"], constant(f)),
  ]
  rows += [] if tied else [("head", p["head"], normal(f))]
  name = signature("t5", d_model=d, d_kv=dkv, n_heads=h, d_ff=dff, factor=f, names=names)
  return build(fn, name, rows, patterns, "torch" if names == "hf" else "flax", ties)


# ---------------------------------------------------------------------------
# GPT-NeoX: small_init and wang_init
# ---------------------------------------------------------------------------

_NEOX = r"(?:gpt_neox/)?"


def small_init(d_model: int, *, names: str = "hf", patterns: Patterns = None) -> Preset:
  r"""``small_init`` (Nguyen & Salazar 2019) as GPT-NeoX uses it: std ``sqrt(2 / (5 d))``.

  For every weight GPT-NeoX draws with its ``init_method``: the fused QKV, the
  MLP's first linear, the token embedding and the untied output embedding, all
  ``N(0, 2 / (5 d))`` (the Xavier-normal std of a ``d x 4d`` matrix); biases 0,
  LayerNorm 1 / 0. The residual outputs are the ``output_layer_init_method``'s:
  add :func:`wang_init` (GPT-NeoX 20B: ``small_init(d) + wang_init(L, d)``).

  Roles: ``inputs``, ``embeddings``, ``head``, ``norm_scale``, ``bias``.

  Args:
    d_model: d (``hidden_size``).
    names: ``"hf"`` (Hugging Face ``GPTNeoX`` names: ``gpt_neox/layers/{l}/attention/
      query_key_value/weight``) or ``"flax"``.
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> p = jaxinit.presets.small_init(6144) + jaxinit.presets.wang_init(44, 6144)
    >>> print(f"{p[p.pattern('inputs')].stddev:.6f} {p[p.pattern('residual_out')].stddev:.3e}")
    0.008069 5.799e-04

  References:
    EleutherAI/gpt-neox ea7aefd ``megatron/model/init_functions.py`` (``small_init_init_method``),
    ``megatron/model/transformer.py``, ``configs/20B.yml``; T. Nguyen, J. Salazar,
    "Transformers without tears", 2019.
  """
  fn = "presets.small_init"
  d = count(fn, "d_model", d_model)
  names = choice(fn, "names", names, ("hf", "flax"))
  if names == "hf":
    p = {
      "inputs": _NEOX + r"layers/\d+/(?:attention/query_key_value|mlp/dense_h_to_4h)/weight",
      "embeddings": _NEOX + r"embed_in/weight",
      "head": r"embed_out/weight",
      "norm_scale": _NEOX + r"(?:layers/\d+/[^/]*layernorm|final_layer_norm)/weight",
      "bias": _NEOX + r"(?:layers/\d+/(?:[^/]*layernorm|attention/[^/]+|mlp/[^/]+)"
      r"|final_layer_norm)/bias",
    }
  else:
    p = {
      "inputs": _FLAX_IN,
      "embeddings": ANY + r"embed/embedding",
      "head": ANY + r"head/kernel",
      "norm_scale": _FLAX_NORM_SCALE,
      "bias": _FLAX_BIAS,
    }
  std = math.sqrt(2 / (5 * d))
  rows = [
    ("inputs", p["inputs"], normal(std)),
    ("embeddings", p["embeddings"], normal(std)),
    ("head", p["head"], normal(std)),
    ("norm_scale", p["norm_scale"], ones()),
    ("bias", p["bias"], zeros()),
  ]
  name = signature("small_init", d_model=d, names=names)
  return build(fn, name, rows, patterns, "torch" if names == "hf" else "flax")


def wang_init(
  n_layers: int,
  d_model: int,
  *,
  truncated: bool = False,
  names: str = "hf",
  patterns: Patterns = None,
) -> Preset:
  r"""``wang_init`` (Ben Wang's, GPT-J) for the residual outputs: std ``2 / (L sqrt(d))``.

  The attention output (``attention.dense``) and the MLP's second linear
  (``dense_4h_to_h``) of every block, ``N(0, (2 / (L sqrt(d)))^2)`` as GPT-NeoX
  draws them; ``truncated=True`` is GPT-J's haiku ``TruncatedNormal``: cut at 2
  standard deviations, not rescaled (std x 0.8796). Only these weights: combine
  with :func:`small_init` (or another preset) for the rest.

  Roles: ``residual_out``.

  Args:
    n_layers: L.
    d_model: d.
    truncated: GPT-J's truncated form.
    names: ``"hf"`` (GPTNeoX names) or ``"flax"``.
    patterns: ``{role: pattern or None}`` overrides.

  Returns:
    A :class:`Preset`.

  Raises:
    ValueError, TypeError: a bad argument or override.

  Examples:
    >>> import jaxinit
    >>> rule = jaxinit.presets.wang_init(44, 6144, truncated=True).roles[0][2]
    >>> print(f"{rule.stddev:.3e} = {2 / (44 * 6144 ** 0.5):.3e}, cut at {rule.upper}")
    5.799e-04 = 5.799e-04, cut at 2.0

  References:
    EleutherAI/gpt-neox ea7aefd ``megatron/model/init_functions.py`` (``wang_init_method``);
    kingoflolz/mesh-transformer-jax f8315e3 ``mesh_transformer/layers.py``.
  """
  fn = "presets.wang_init"
  L, d = count(fn, "n_layers", n_layers), count(fn, "d_model", d_model)
  truncated = check_bool(fn, "truncated", truncated)
  names = choice(fn, "names", names, ("hf", "flax"))
  pattern = (
    _NEOX + r"layers/\d+/(?:attention/dense|mlp/dense_4h_to_h)/weight"
    if names == "hf"
    else _FLAX_OUT
  )
  std = 2 / (L * math.sqrt(d))
  init = truncated_normal(std, lower=-2.0, upper=2.0) if truncated else normal(std)
  name = signature("wang_init", n_layers=L, d_model=d, truncated=truncated, names=names)
  rows = [("residual_out", pattern, init)]
  return build(fn, name, rows, patterns, "torch" if names == "hf" else "flax")
