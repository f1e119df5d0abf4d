r"""Published initializations of real architectures, as :func:`jaxinit.reinit` rules.

Each function takes the model's configuration and returns a :class:`Preset`: a
mapping ``{pattern: rule}`` (roles in order, first match wins) with the
``layout`` its parameter names imply, the parameters a state dict lists twice
(``ties``) and the method's constants (DeepNorm's ``alpha``)::

  preset = jaxinit.presets.gpt2(n_layers=12)
  params = jaxinit.reinit(params, preset.rules, key, layout=preset.layout)
  params = preset.apply(params, key)          # the same, plus the ties
  variables = jaxinit.init_linen(model, key, x, rules=preset.rules, layout=preset.layout)

Every preset knows two or more naming schemes (``names=``):

* **Hugging Face state dicts** (``names="hf"``, the default where transformers
  has the model): the ``state_dict()`` keys split on ``"."`` into a nested tree,
  so paths read ``transformer/h/0/attn/c_proj/weight``, with torch's ``(out, in)``
  layout (GPT-2's ``Conv1D`` weights are ``(in, out)``: its layout is ``"flax"``).
  A tied parameter (GPT-2's ``lm_head.weight``) appears twice in a state dict and
  once in ``named_parameters()``; :meth:`Preset.apply` copies the source into the
  copy.
* **The reference code's own names** where it is not transformers: nanoGPT,
  torchtitan, metaseq, OLMo, fairseq (T-Fixup), torchscale (DeepNorm), the Fixup,
  ReZero and original ViT repositories.
* **Flax-native names** (``names="flax"``) of a straightforward linen / nnx
  transformer, ``nn.Dense`` everywhere (attention projections are ``(d, d)``
  kernels, heads reshaped in the forward pass):

  ===========================================  =========================================
  path                                         parameter
  ===========================================  =========================================
  ``embed/embedding``                          token embedding ``(vocab, d)`` (``nn.Embed``)
  ``pos_embed/embedding``                      learned positions ``(positions, d)``
  ``type_embed/embedding``, ``embed_norm``     BERT's token types and embedding LayerNorm
  ``patch_embed/kernel``, ``cls``,             ViT's patch convolution ``(p, p, C, d)``,
  ``pos_embedding``                            class token ``(1, 1, d)``, positions
  ``blocks_{l}/attn_norm/{scale,bias}``        the norm before (pre-LN) or after the attention
  ``blocks_{l}/attn/{query,key,value}``        ``(d, d)`` projections (or one fused ``attn/qkv``)
  ``blocks_{l}/attn/out``                      the attention's output projection
  ``blocks_{l}/attn/relative_bias/embedding``  T5's relative position bias (block 0)
  ``blocks_{l}/cross_norm``, ``cross_attn/*``  a decoder's cross-attention (``query`` ... ``out``)
  ``blocks_{l}/mlp_norm/{scale,bias}``         the norm around the MLP
  ``blocks_{l}/mlp/{up,gate,down}``            MLP in ``(d, d_ff)``, gate (SwiGLU's w1, T5's
                                               ``wi_0``), out ``(d_ff, d)``
  ``blocks_{l}/res_scale``, ``shift_{k}``      ReZero / SkipInit / Fixup branch scalar, Fixup
                                               scalar biases
  ``blocks_{l}/dense_{j}`` (``conv_{j}``)      layer ``j`` of a residual branch (Fixup)
  ``final_norm/{scale,bias}``, ``head``        final norm; output layer ``(d, vocab)``
  ``encoder/...``, ``decoder/...``             the same under the two stacks of an
                                               encoder-decoder
  ===========================================  =========================================

  ``blocks_{l}`` is linen's name for the ``l``-th module of a list attribute;
  nnx's ``nnx.List`` gives ``blocks/{l}``: both match. Any prefix (linen's
  ``params/``) is allowed.

Other names: ``patterns={role: pattern}`` replaces a role's pattern (``None``
drops the role); ``preset.table()`` lists the roles. A depth-indexed role (a
:func:`jaxinit.depth_rule`) needs the layer index captured as ``(?P<layer>\d+)``.
``jaxinit list`` shows every preset. The README's "Presets" table gives each
formula, its source and what the tests verify it against.
"""

from jaxinit._src.presets.language import bert as bert
from jaxinit._src.presets.language import gpt2 as gpt2
from jaxinit._src.presets.language import hf_default as hf_default
from jaxinit._src.presets.language import llama2 as llama2
from jaxinit._src.presets.language import llama3 as llama3
from jaxinit._src.presets.language import megatron as megatron
from jaxinit._src.presets.language import olmo as olmo
from jaxinit._src.presets.language import small_init as small_init
from jaxinit._src.presets.language import t5 as t5
from jaxinit._src.presets.language import wang_init as wang_init
from jaxinit._src.presets.preset import Preset as Preset
from jaxinit._src.presets.residual import deepnorm as deepnorm
from jaxinit._src.presets.residual import fixup as fixup
from jaxinit._src.presets.residual import rezero as rezero
from jaxinit._src.presets.residual import skipinit as skipinit
from jaxinit._src.presets.residual import t_fixup as t_fixup
from jaxinit._src.presets.vision import torch_default as torch_default
from jaxinit._src.presets.vision import vit as vit

__all__ = [
  "Preset",
  "bert",
  "deepnorm",
  "fixup",
  "gpt2",
  "hf_default",
  "llama2",
  "llama3",
  "megatron",
  "olmo",
  "rezero",
  "skipinit",
  "small_init",
  "t5",
  "t_fixup",
  "torch_default",
  "vit",
  "wang_init",
]
