"""jaxinit.presets against the reference implementations themselves.

* Hugging Face ``transformers`` (GPT-2, Llama, BERT, T5, ViT): each model is built from a
  small config with its own random init (no download, fixed torch seed), its
  ``named_parameters()`` become a nested tree (keys split on '.'), the preset draws a tree of
  the same shapes, and every parameter group is compared: means and stds within 6 standard
  errors of the difference, two-sample Kolmogorov-Smirnov p > 1e-3, identical constants.
  The sizes are used by no other test.
* torchscale 0.3.0 (DeepNorm): alpha and beta read from torchscale's own objects for
  N, M in {6, 12, 100, 1000} equal the preset's to 1e-12, and a deepnorm encoder's groups
  match. torchscale is installed without its dependencies (they pull a CUDA torch):
  ``pip install --no-deps torchscale==0.3.0 fairscale==0.4.0``; it imports timm only for
  ``drop_path``, so when timm is missing a stand-in module providing that one name is
  placed in ``sys.modules`` for the import (the layers here have no drop path).
* torchtitan v0.2.2 and OLMo 59a53e3 (not installable here): every layer's std against the
  numbers their code's expressions give, computed below.
"""

import math
import re
import sys
import types

import jax
import numpy as np
import pytest
from scipy import stats

from jaxinit import presets, testing

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

KEY = jax.random.key(31)
RESULTS = []  # (model, group, n, z_mean, z_std, ks_p): printed with -s, for the record


def _tree(named):
  """``{dotted.name: tensor}`` -> nested dict of numpy arrays, split on '.'."""
  tree = {}
  for name, value in named:
    node = tree
    *parents, leaf = name.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value.detach().to(torch.float64).numpy()
  return tree


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    path = f"{prefix}{k}"
    out.update(_flat(v, path + "/") if isinstance(v, dict) else {path: np.asarray(v, np.float64)})
  return out


def _ours(preset, ref_tree):
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.float32), ref_tree)
  return _flat(preset.apply(shapes, KEY))


def _compare_samples(model, label, x, y):
  n1, n2 = x.size, y.size
  m1, m2, s1, s2 = x.mean(), y.mean(), x.std(), y.std()
  z_mean = (m1 - m2) / math.sqrt(s1**2 / n1 + s2**2 / n2)
  z_std = (s1 - s2) / math.sqrt(s1**2 / (2 * n1) + s2**2 / (2 * n2))
  rng = np.random.default_rng(0)
  sub = lambda a: a if a.size <= 300_000 else rng.choice(a, 300_000, replace=False)
  p = stats.ks_2samp(sub(x), sub(y)).pvalue
  RESULTS.append((model, label, n1, z_mean, z_std, p))
  print(f"{model:10s} {label:28s} n={n1:8d} z_mean={z_mean:+.2f} z_std={z_std:+.2f} KS p={p:.3f}")
  assert abs(z_mean) < 6 and abs(z_std) < 6 and p > 1e-3, (model, label, z_mean, z_std, p)


def compare(model, ref, ours, groups):
  """``groups``: (label, pattern, kind); kind "dist", "const" or ("pad", row)."""
  seen = set()
  for label, pattern, kind in groups:
    rx = re.compile(pattern)
    paths = [p for p in ref if rx.fullmatch(p) and p not in seen]
    assert paths, f"{model}: the group {label!r} ({pattern}) matches nothing"
    seen |= set(paths)
    if kind == "const":
      for p in paths:
        np.testing.assert_array_equal(ours[p], ref[p], err_msg=f"{model} {p}")
      continue
    rows = slice(None)
    if isinstance(kind, tuple):  # a padding row: equal (zero) in both, the rest compared
      row = kind[1]
      for p in paths:
        np.testing.assert_array_equal(ours[p][row], ref[p][row])
        assert not ref[p][row].any()
      rows = np.arange(ref[paths[0]].shape[0]) != row
    x = np.concatenate([ref[p][rows].ravel() for p in paths])
    y = np.concatenate([ours[p][rows].ravel() for p in paths])
    _compare_samples(model, label, x, y)
  assert seen == set(ref), f"{model}: groups miss {sorted(set(ref) - seen)}"


def _build(cls, config):
  torch.manual_seed(1234)
  return cls(config)


# ---------------------------------------------------------------------------
# Hugging Face transformers.
# ---------------------------------------------------------------------------


def test_gpt2_against_transformers():
  L = 5
  cfg = transformers.GPT2Config(
    vocab_size=2000,
    n_positions=128,
    n_embd=160,
    n_layer=L,
    n_head=5,
    bos_token_id=0,
    eos_token_id=0,
  )
  model = _build(transformers.GPT2LMHeadModel, cfg)
  ref_tree = _tree(model.named_parameters())  # the tied lm_head is listed once, as wte
  ref = _flat(ref_tree)
  ours = _ours(presets.gpt2(L), ref_tree)
  h = r"transformer/h/\d+/"
  compare(
    "gpt2",
    ref,
    ours,
    [
      ("c_proj (residual)", h + r"(attn|mlp)/c_proj/weight", "dist"),
      ("c_attn, c_fc", h + r"(attn/c_attn|mlp/c_fc)/weight", "dist"),
      ("wte, wpe", r"transformer/(wte|wpe)/weight", "dist"),
      ("ln weights", r"transformer/(h/\d+/ln_\d|ln_f)/weight", "const"),
      ("biases", r".*/bias", "const"),
    ],
  )
  # the full state dict lists lm_head too: apply re-ties it to the new wte
  full = _tree(model.state_dict().items())
  new = presets.gpt2(L).apply(full, KEY)
  assert new["lm_head"]["weight"] is new["transformer"]["wte"]["weight"]


def test_llama_against_transformers():
  """transformers' Llama has no init of its own: hf_default. The Llama presets' groups that
  share its formula (q, k, v, gate: N(0, 0.02^2); RMSNorm 1) match it too."""
  cfg = transformers.LlamaConfig(
    vocab_size=1500, hidden_size=192, intermediate_size=512, num_hidden_layers=3,
    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
  )  # fmt: skip
  ref_tree = _tree(_build(transformers.LlamaForCausalLM, cfg).named_parameters())
  ref = _flat(ref_tree)
  compare(
    "llama",
    ref,
    _ours(presets.hf_default(padding_idx=0), ref_tree),
    [
      ("embed_tokens", r"model/embed_tokens/weight", ("pad", 0)),
      ("linear weights", r"model/layers/\d+/(self_attn|mlp)/\w+/weight|lm_head/weight", "dist"),
      ("rms norms", r"model/(layers/\d+/\w+_layernorm|norm)/weight", "const"),
    ],
  )
  inputs = r"model/layers/\d+/(self_attn/[qkv]_proj|mlp/gate_proj)/weight"
  for preset in (presets.llama3(3, 192), presets.llama2(3, 192)):
    ours = _ours(preset, ref_tree)
    x = np.concatenate([ref[p].ravel() for p in ref if re.fullmatch(inputs, p)])
    y = np.concatenate([ours[p].ravel() for p in ref if re.fullmatch(inputs, p)])
    _compare_samples("llama", f"{preset.name.split('(')[0]} q,k,v,gate", x, y)


def test_bert_against_transformers():
  cfg = transformers.BertConfig(
    vocab_size=1800, hidden_size=144, num_hidden_layers=3, num_attention_heads=4,
    intermediate_size=576, max_position_embeddings=96, type_vocab_size=3,
  )  # fmt: skip
  model = _build(transformers.BertForMaskedLM, cfg)
  ref_tree = _tree(model.named_parameters())
  ref = _flat(ref_tree)
  compare(
    "bert",
    ref,
    _ours(presets.bert(), ref_tree),
    [
      ("word_embeddings", r"bert/embeddings/word_embeddings/weight", ("pad", 0)),
      ("layer norms", r".*LayerNorm/weight", "const"),
      ("biases", r".*bias", "const"),
      ("weights", r".*weight", "dist"),
    ],
  )


def test_t5_against_transformers():
  d, dkv, h, dff = 96, 24, 4, 384
  cfg = transformers.T5Config(
    vocab_size=1200, d_model=d, d_kv=dkv, d_ff=dff, num_layers=3, num_decoder_layers=2,
    num_heads=h, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
  )  # fmt: skip
  ref_tree = _tree(_build(transformers.T5ForConditionalGeneration, cfg).named_parameters())
  ref = _flat(ref_tree)
  att = r"(encoder|decoder)/block/\d+/layer/\d+/(SelfAttention|EncDecAttention)/"
  ffn = r"(encoder|decoder)/block/\d+/layer/\d+/DenseReluDense/"
  compare(
    "t5",
    ref,
    _ours(presets.t5(d, dkv, h, dff), ref_tree),
    [
      ("shared", r"shared/weight", "dist"),
      ("q", att + "q/weight", "dist"),
      ("k, v", att + "[kv]/weight", "dist"),
      ("o", att + "o/weight", "dist"),
      ("relative_attention_bias", att + "relative_attention_bias/weight", "dist"),
      ("wi_0, wi_1", ffn + "wi_[01]/weight", "dist"),
      ("wo", ffn + "wo/weight", "dist"),
      ("layer norms", r".*layer_norm/weight", "const"),
    ],
  )


def test_vit_against_transformers():
  cfg = transformers.ViTConfig(
    image_size=48, patch_size=8, num_channels=3, hidden_size=128, num_hidden_layers=3,
    num_attention_heads=4, intermediate_size=384, num_labels=100,
  )  # fmt: skip
  ref_tree = _tree(_build(transformers.ViTForImageClassification, cfg).named_parameters())
  ref = _flat(ref_tree)
  compare(
    "vit",
    ref,
    _ours(presets.vit(), ref_tree),
    [
      ("cls, positions", r"vit/embeddings/(cls_token|position_embeddings)", "dist"),
      ("layer norms", r".*layernorm\w*/weight", "const"),
      ("biases", r".*/bias", "const"),
      ("weights (patch, q/k/v/o, mlp, classifier)", r".*/weight", "dist"),
    ],
  )


# ---------------------------------------------------------------------------
# torchtitan and OLMo: their code's expressions.
# ---------------------------------------------------------------------------


def _shapes(spec):
  return {path: jax.ShapeDtypeStruct(shape, np.float32) for path, shape in spec.items()}


def _nest(flat):
  tree = {}
  for path, v in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def _check(label, x, std, cut=None):
  """Moments within 6 SE of the std torch's trunc_normal_(std, -cut std, cut std) gives."""
  k = 1.0 if cut is None else stats.truncnorm(-cut, cut).std()
  testing.assert_moments(x, mean=0.0, var=(k * std) ** 2, name=label)
  if cut is not None:
    testing.assert_ks(x, "truncnorm", (-cut, cut, 0, std), alpha=1e-3, name=label)


@pytest.mark.parametrize("depth_init", [True, False])
def test_llama3_against_torchtitan_expressions(depth_init):
  n_layers, dim, vocab = 6, 128, 1000
  hidden = 64 * -(-int(2 * 4 * dim / 3) // 64)  # FeedForward: int(2 * hidden / 3), multiple_of 64
  spec = {"tok_embeddings/weight": (vocab, dim), "output/weight": (vocab, dim)}
  spec["norm/weight"] = (dim,)
  for layer in range(n_layers):
    for w in ("wq", "wk", "wv", "wo"):
      spec[f"layers/{layer}/attention/{w}/weight"] = (dim, dim)
    spec[f"layers/{layer}/feed_forward/w1/weight"] = (hidden, dim)
    spec[f"layers/{layer}/feed_forward/w3/weight"] = (hidden, dim)
    spec[f"layers/{layer}/feed_forward/w2/weight"] = (dim, hidden)
    spec[f"layers/{layer}/attention_norm/weight"] = (dim,)
    spec[f"layers/{layer}/ffn_norm/weight"] = (dim,)
  p = presets.llama3(n_layers, dim, depth_init=depth_init, names="torchtitan")
  ours = _flat(p.apply(_nest(_shapes(spec)), KEY))
  for layer_id in range(n_layers):
    # TransformerBlock.__init__ (v0.2.2): the depth-scaled std of wo, w2 and w3
    if depth_init:
      weight_init_std = 0.02 / (2 * (layer_id + 1)) ** 0.5
    else:
      weight_init_std = 0.02 / (2 * n_layers) ** 0.5
    out = [f"layers/{layer_id}/attention/wo/weight", f"layers/{layer_id}/feed_forward/w2/weight"]
    out.append(f"layers/{layer_id}/feed_forward/w3/weight")
    _check(
      f"layer {layer_id} wo,w2,w3", np.concatenate([ours[q].ravel() for q in out]), weight_init_std
    )
    inputs = [f"layers/{layer_id}/attention/{w}/weight" for w in ("wq", "wk", "wv")]
    inputs.append(f"layers/{layer_id}/feed_forward/w1/weight")
    _check(f"layer {layer_id} wq,wk,wv,w1", np.concatenate([ours[q].ravel() for q in inputs]), 0.02)
  _check("tok_embeddings", ours["tok_embeddings/weight"], 1.0)  # nn.init.normal_
  final_out_std = dim**-0.5
  cutoff_factor = 3
  _check("output", ours["output/weight"], final_out_std, cut=cutoff_factor)
  norms = [v for k, v in ours.items() if k.endswith("norm/weight")]
  assert all((v == 1).all() for v in norms)


@pytest.mark.parametrize("init_fn", ["mitchell", "full_megatron"])
def test_olmo_against_its_code_expressions(init_fn):
  n_layers, d_model, mlp_hidden, vocab = 5, 112, 448, 900
  ff_in = mlp_hidden // 2  # SwiGLU: ff_out.in_features = output_multiplier (0.5) * hidden
  spec = {"transformer/wte/weight": (vocab, d_model), "transformer/ff_out/weight": (vocab, d_model)}
  for layer in range(n_layers):
    b = f"transformer/blocks/{layer}/"
    spec[b + "att_proj/weight"] = (3 * d_model, d_model)
    spec[b + "attn_out/weight"] = (d_model, d_model)
    spec[b + "ff_proj/weight"] = (mlp_hidden, d_model)
    spec[b + "ff_out/weight"] = (d_model, ff_in)
  p = presets.olmo(n_layers, d_model, ff_in, init_fn=init_fn, weight_tying=False, norm_affine=False)
  ours = _flat(p.apply(_nest(_shapes(spec)), KEY))
  init_std, cutoff = 0.02, 3.0  # config defaults; both schemes cut at 3 std by default
  for layer_id in range(n_layers):
    b = f"transformer/blocks/{layer_id}/"
    if init_fn == "mitchell":
      in_std = 1 / math.sqrt(d_model)
      attn_out_std = 1 / math.sqrt(2 * d_model * (layer_id + 1))
      ff_out_std = 1 / math.sqrt(2 * ff_in * (layer_id + 1))
    else:
      in_std = init_std
      attn_out_std = ff_out_std = init_std / math.sqrt(2.0 * n_layers)
    x = np.concatenate([ours[b + "att_proj/weight"].ravel(), ours[b + "ff_proj/weight"].ravel()])
    _check(f"{init_fn} layer {layer_id} inputs", x, in_std, cut=cutoff)
    _check(
      f"{init_fn} layer {layer_id} attn_out", ours[b + "attn_out/weight"], attn_out_std, cutoff
    )
    _check(f"{init_fn} layer {layer_id} ff_out", ours[b + "ff_out/weight"], ff_out_std, cut=cutoff)
  wte_std = 1 / math.sqrt(d_model) if init_fn == "mitchell" else init_std
  _check("wte", ours["transformer/wte/weight"], wte_std, cut=cutoff)
  _check("ff_out (head)", ours["transformer/ff_out/weight"], d_model**-0.5, cut=cutoff)


# ---------------------------------------------------------------------------
# torchscale (DeepNorm).
# ---------------------------------------------------------------------------


def _torchscale():
  try:
    import timm.models.layers  # noqa: F401
  except ImportError:
    # torchscale's component/droppath.py imports timm's drop_path, nothing else from timm;
    # a stand-in module with that one name lets torchscale import without timm (whose
    # install pulls torchvision and a CUDA torch). No layer here uses a drop path.
    stub = types.ModuleType("timm.models.layers")
    stub.drop_path = lambda x, drop_prob=0.0, training=False: x
    for name, module in [
      ("timm", types.ModuleType("timm")),
      ("timm.models", types.ModuleType("timm.models")),
      ("timm.models.layers", stub),
    ]:
      sys.modules.setdefault(name, module)
  return pytest.importorskip(
    "torchscale",
    reason="torchscale is not installed: pip install --no-deps torchscale==0.3.0 fairscale==0.4.0",
  )


_SMALL = dict(
  encoder_embed_dim=16, encoder_attention_heads=2, encoder_ffn_embed_dim=32, decoder_embed_dim=16,
  decoder_attention_heads=2, decoder_ffn_embed_dim=32, vocab_size=10, subln=False, dropout=0.0,
  drop_path_rate=0.0, no_output_layer=True,
)  # fmt: skip


class _Probe(torch.nn.Module):
  """Stands for a layer: one float64 parameter named fc1, which torchscale divides by its
  init_scale (every name containing "fc1" is divided), so it reads 1 / init_scale = beta."""

  def __init__(self, *args, **kwargs):
    super().__init__()
    self.fc1 = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))


def _torchscale_constants(N, M):
  """alpha from torchscale's own layer objects, beta from its stacks' division."""
  _torchscale()
  from torchscale.architecture import decoder, encoder
  from torchscale.architecture.config import DecoderConfig, EncoderConfig, EncoderDecoderConfig

  both = N and M
  if both:
    args = EncoderDecoderConfig(encoder_layers=N, decoder_layers=M, deepnorm=True, **_SMALL)
  elif N:
    args = EncoderConfig(encoder_layers=N, deepnorm=True, **_SMALL)
  else:
    args = DecoderConfig(decoder_layers=M, deepnorm=True, **_SMALL)
  out = {}
  sides = [("encoder", encoder.Encoder, encoder.EncoderLayer, "build_encoder_layer")] if N else []
  sides += [("decoder", decoder.Decoder, decoder.DecoderLayer, "build_decoder_layer")] if M else []
  for side, stack, layer, build in sides:
    alpha = layer(args, depth=0, is_encoder_decoder=bool(both)).alpha
    original = getattr(stack, build)
    setattr(stack, build, lambda self, *a, **k: _Probe())
    try:
      probe = stack(args, is_encoder_decoder=bool(both)).layers[0].fc1
    finally:
      setattr(stack, build, original)
    key = f"{side}_" if both else ""
    out[key + "alpha"], out[key + "beta"] = alpha, probe.item()
  return out


@pytest.mark.parametrize("N", [6, 12, 100, 1000])
def test_deepnorm_alpha_beta_equal_torchscale(N):
  for n_enc, n_dec in [(N, 0), (0, N)] + [(N, M) for M in (6, 12, 100, 1000)]:
    theirs = _torchscale_constants(n_enc, n_dec)
    ours = dict(presets.deepnorm(n_enc, n_dec).constants)
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
      assert abs(ours[k] - v) < 1e-12, (n_enc, n_dec, k, ours[k], v)


def test_deepnorm_groups_equal_a_torchscale_encoder():
  _torchscale()
  from torchscale.architecture.config import EncoderConfig
  from torchscale.architecture.encoder import Encoder

  N = 6
  dims = {"encoder_embed_dim": 96, "encoder_ffn_embed_dim": 288}
  args = EncoderConfig(**{**_SMALL, **dims}, encoder_layers=N, deepnorm=True)
  torch.manual_seed(99)
  ref_tree = _tree(Encoder(args).named_parameters())
  ref = _flat(ref_tree)
  compare(
    "torchscale",
    ref,
    _ours(presets.deepnorm(N, 0), ref_tree),
    [
      (
        "v, out, fc1, fc2 weights",
        r"layers/\d+/(self_attn/(v|out)_proj|ffn/fc[12])/weight",
        "dist",
      ),
      ("v, out, fc1 biases", r"layers/\d+/(self_attn/(v|out)_proj|ffn/fc1)/bias", "dist"),
      ("fc2 biases", r"layers/\d+/ffn/fc2/bias", "dist"),
      ("q, k", r"layers/\d+/self_attn/[qk]_proj/(weight|bias)", "dist"),
      ("layer norms", r"layers/\d+/\w+layer_norm/(weight|bias)", "const"),
    ],
  )
