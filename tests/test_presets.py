"""jaxinit.presets on real Flax linen models with the Flax-native names: every parameter
group's distribution (moments within 6 standard errors, Kolmogorov-Smirnov), exact
constants, per-layer stds of the depth-indexed presets; and the Preset object (mapping,
overrides, ties, +, pickling, errors), init_linen / init_nnx, `jaxinit list`."""

import io
import math
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _preset_models import LM, EncoderDecoder, ResidualMLP, ViT
from flax import linen as nn
from flax import nnx
from scipy import stats

import jaxinit
from jaxinit import presets, testing

KEY = jax.random.key(2024)
TOKENS = jnp.zeros((1, 8), jnp.int32)
# One size for every model here, and few distinct shapes (vocabulary = positions = d_ff), so
# that most draws hit the compilation cache; d_model != d_ff keeps formulas that use both honest.
D, H, F, L = 96, 4, 320, 4
V = P = F
K3 = stats.truncnorm(-3, 3).std()  # 0.98658: std of a normal cut at 3 sigma, not rescaled
K2 = stats.truncnorm(-2, 2).std()  # 0.87963


def _abstract(model, *args):
  return jax.eval_shape(model.init, jax.random.key(0), *args)["params"]


def _leaves(tree):
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v) for p, v in flat}


class Groups:
  """The leaves of a tree, grouped by the test's own patterns; tracks what was checked."""

  def __init__(self, tree):
    self.leaves = _leaves(tree)
    self.seen = set()

  def take(self, pattern):
    rx = re.compile(pattern)
    hits = {p: v for p, v in self.leaves.items() if rx.fullmatch(p)}
    assert hits, f"the test pattern {pattern!r} matches nothing"
    self.seen |= set(hits)
    return hits

  def values(self, pattern):
    return np.concatenate([v.ravel() for v in self.take(pattern).values()]).astype(np.float64)

  def normal(self, pattern, std, cut=None):
    x = self.values(pattern)
    if cut is None:
      testing.assert_moments(x, mean=0.0, var=std**2, name=pattern)
      testing.assert_ks(x, "norm", (0, std), alpha=1e-3, name=pattern)
    else:
      testing.assert_moments(x, mean=0.0, var=(stats.truncnorm(-cut, cut).std() * std) ** 2)
      testing.assert_ks(x, "truncnorm", (-cut, cut, 0, std), alpha=1e-3, name=pattern)

  def uniform(self, pattern, bound):
    x = self.values(pattern)
    testing.assert_moments(x, mean=0.0, var=bound**2 / 3, name=pattern)
    testing.assert_ks(x, "uniform", (-bound, 2 * bound), alpha=1e-3, name=pattern)

  def const(self, pattern, value):
    x = self.values(pattern)
    np.testing.assert_array_equal(x, np.full_like(x, value), err_msg=pattern)

  def per_layer(self, pattern, std_of_layer, cut=None):
    """``pattern`` captures the layer index as its first group."""
    rx = re.compile(pattern)
    by_layer = {}
    for p, v in self.take(pattern).items():
      by_layer.setdefault(int(rx.fullmatch(p).group(1)), []).append(v.ravel())
    assert sorted(by_layer) == list(range(len(by_layer)))
    for layer, vs in by_layer.items():
      x, std = np.concatenate(vs).astype(np.float64), std_of_layer(layer)
      k = 1.0 if cut is None else stats.truncnorm(-cut, cut).std()
      testing.assert_moments(x, mean=0.0, var=(k * std) ** 2, name=f"{pattern} layer {layer}")
      if cut is not None:
        assert np.abs(x).max() <= cut * std * (1 + 1e-6)
    return by_layer

  def all_checked(self, except_=()):
    rest = sorted(set(self.leaves) - self.seen - set(except_))
    assert not rest, f"leaves no check looked at: {rest}"


B = r"blocks_(\d+)"


def _lm(**kw):
  return LM(V, D, H, F, L, **kw)


# ---------------------------------------------------------------------------
# The language-model presets on a linen transformer.
# ---------------------------------------------------------------------------


def test_gpt2_flax():
  tree = _abstract(_lm(positions=P), TOKENS)
  g = Groups(presets.gpt2(L, names="flax", tied=False).apply(tree, KEY))
  g.normal(rf"{B}/(attn/out|mlp/down)/kernel", 0.02 / math.sqrt(2 * L))
  g.normal(
    rf"{B}/(attn/(query|key|value)|mlp/up)/kernel|(embed|pos_embed)/embedding|head/kernel", 0.02
  )
  g.const(r".*norm/scale", 1.0)
  g.const(r".*/bias", 0.0)
  g.all_checked()


def test_hf_default_flax_gated_rmsnorm_without_biases():
  tree = _abstract(_lm(block=dict(rms=True, gated=True, bias=False)), TOKENS)
  g = Groups(presets.hf_default(names="flax").apply(tree, KEY))  # no bias: an optional role
  g.normal(r".*/kernel|embed/embedding", 0.02)
  g.const(r".*norm/scale", 1.0)
  g.all_checked()


def test_megatron_flax_truncated_with_positions_and_biases():
  tree = _abstract(_lm(positions=P, block=dict(gated=True)), TOKENS)
  p = presets.megatron(L, D, sigma=0.02, truncate=True, names="flax", positions=True, bias=True)
  g = Groups(p.apply(tree, KEY))
  g.normal(rf"{B}/(attn/out|mlp/down)/kernel", 0.02 / math.sqrt(2 * L), cut=3)
  g.normal(rf"{B}/(attn/(query|key|value)|mlp/(up|gate))/kernel|(pos_)?embed/embedding", 0.02, 3)
  g.normal(r"head/kernel", D**-0.5)  # never truncated
  g.const(r".*norm/scale", 1.0)
  g.const(r".*/bias", 0.0)
  g.all_checked()


@pytest.mark.parametrize("depth_init", [True, False])
def test_llama3_flax(depth_init):
  tree = _abstract(_lm(block=dict(rms=True, gated=True, bias=False)), TOKENS)
  g = Groups(presets.llama3(L, D, depth_init=depth_init, names="flax").apply(tree, KEY))
  depth = (
    (lambda i: 0.02 / math.sqrt(2 * (i + 1))) if depth_init else lambda i: 0.02 / math.sqrt(2 * L)
  )
  g.per_layer(rf"{B}/(?:attn/out|mlp/down|mlp/up)/kernel", depth)
  g.normal(rf"{B}/(attn/(query|key|value)|mlp/gate)/kernel", 0.02)
  g.normal(r"embed/embedding", 1.0)
  g.normal(r"head/kernel", D**-0.5, cut=3)
  g.const(r".*norm/scale", 1.0)
  g.all_checked()


def test_olmo_mitchell_flax_per_layer():
  tree = _abstract(_lm(block=dict(rms=True, gated=True, bias=False)), TOKENS)
  p = presets.olmo(L, D, F, names="flax", weight_tying=False)
  g = Groups(p.apply(tree, KEY))
  g.per_layer(rf"{B}/attn/out/kernel", lambda i: 1 / math.sqrt(2 * D * (i + 1)), cut=3)
  g.per_layer(rf"{B}/mlp/down/kernel", lambda i: 1 / math.sqrt(2 * F * (i + 1)), cut=3)
  g.normal(
    rf"{B}/(attn/(query|key|value)|mlp/(up|gate))/kernel|embed/embedding|head/kernel", D**-0.5, 3
  )
  g.const(r".*norm/scale", 1.0)
  g.all_checked()


def test_bert_flax_post_ln_with_padding_row():
  tree = _abstract(_lm(positions=P, types=2, tied=True, block=dict(post_norm=True)), TOKENS)
  new = presets.bert(names="flax").apply(tree, KEY)
  emb = np.asarray(new["embed"]["embedding"])
  np.testing.assert_array_equal(emb[0], 0)
  g = Groups({**new, "embed": {"embedding": emb[1:]}})
  g.normal(r".*/kernel|(embed|pos_embed|type_embed)/embedding", 0.02)
  g.const(r".*norm/scale", 1.0)
  g.const(r".*/bias", 0.0)
  g.all_checked()


def test_t5_flax_encoder_decoder():
  tree = _abstract(EncoderDecoder(V, D, H, F, 2, gated=True), TOKENS, TOKENS)
  dkv = D // H
  g = Groups(presets.t5(D, dkv, H, F, factor=1.5, names="flax").apply(tree, KEY))
  att = r"(encoder|decoder)/blocks_\d+/(attn|cross_attn)/"
  g.normal(att + "query/kernel", 1.5 / math.sqrt(D * dkv))
  g.normal(att + "(key|value)/kernel", 1.5 / math.sqrt(D))
  g.normal(att + "out/kernel", 1.5 / math.sqrt(H * dkv))
  g.normal(r".*/relative_bias/embedding|.*/mlp/(up|gate)/kernel", 1.5 / math.sqrt(D))
  g.normal(r".*/mlp/down/kernel", 1.5 / math.sqrt(F))
  g.normal(r"embed/embedding", 1.5)
  g.const(r".*norm/scale", 1.5)
  g.all_checked()


def test_small_init_plus_wang_init_flax():
  tree = _abstract(_lm(), TOKENS)
  p = presets.small_init(D, names="flax") + presets.wang_init(L, D, names="flax")
  g = Groups(p.apply(tree, KEY))
  g.normal(rf"{B}/(attn/out|mlp/down)/kernel", 2 / (L * math.sqrt(D)))
  g.normal(
    rf"{B}/(attn/(query|key|value)|mlp/up)/kernel|embed/embedding|head/kernel",
    math.sqrt(2 / (5 * D)),
  )
  g.const(r".*norm/scale", 1.0)
  g.const(r".*/bias", 0.0)
  g.all_checked()


# ---------------------------------------------------------------------------
# ViT, torch defaults, the residual family.
# ---------------------------------------------------------------------------

IMAGES = jnp.zeros((1, 32, 32, 3))


def test_vit_flax_hf_and_original():
  tree = _abstract(ViT(4, D, H, F, 2, 1000), IMAGES)
  g = Groups(presets.vit(names="flax").apply(tree, KEY))
  g.normal(r".*/kernel|cls|pos_embedding", 0.02)
  g.const(r".*norm/scale", 1.0)
  g.const(r".*/bias", 0.0)
  g.all_checked()
  g = Groups(presets.vit(variant="original", head_bias=-2.5, names="flax").apply(tree, KEY))
  g.const(r"head/kernel|cls|.*norm/bias|.*attn/\w+/bias|patch_embed/bias", 0.0)
  g.const(r"head/bias", -2.5)
  g.const(r".*norm/scale", 1.0)
  g.uniform(rf"{B}/attn/\w+/kernel", math.sqrt(6 / (2 * D)))
  g.uniform(rf"{B}/mlp/(up|down)/kernel", math.sqrt(6 / (D + F)))
  g.normal(rf"{B}/mlp/(up|down)/bias", 1e-6)
  g.normal(r"pos_embedding", 0.02)
  g.normal(r"patch_embed/kernel", math.sqrt(1 / (4 * 4 * 3)) / K2, cut=2)  # lecun: exact std
  g.all_checked()


def test_torch_default_flax():
  tree = _abstract(_lm(positions=P), TOKENS)
  g = Groups(presets.torch_default(names="flax", embeddings=True).apply(tree, KEY))
  g.uniform(rf"{B}/(attn/(query|key|value|out)|mlp/up)/(kernel|bias)|head/kernel", 1 / math.sqrt(D))
  g.uniform(rf"{B}/mlp/down/(kernel|bias)", 1 / math.sqrt(F))
  g.normal(r"(pos_)?embed/embedding", 1.0)
  g.const(r".*norm/scale", 1.0)
  g.const(r".*norm/bias", 0.0)
  g.all_checked()


def test_fixup_rezero_skipinit_on_a_residual_mlp():
  tree = _abstract(ResidualMLP(D, 12, 10), jnp.zeros((1, 64)))
  g = Groups(presets.fixup(12, m=2).apply(tree, KEY))
  g.normal(rf"{B}/dense_0/kernel", math.sqrt(2 / D) * 12**-0.5)  # He fan-out x L^(-1/2)
  g.const(rf"{B}/dense_1/kernel|head/kernel|head/bias|{B}/shift_\d", 0.0)
  g.const(rf"{B}/res_scale", 1.0)
  g.all_checked(except_=("stem/kernel", "stem/bias"))  # the stem is the user's
  new = (presets.rezero(names="flax")).apply(tree, KEY)
  np.testing.assert_array_equal(np.stack([new[f"blocks_{i}"]["res_scale"] for i in range(12)]), 0)
  new = presets.skipinit(value=0.25).apply(tree, KEY)
  np.testing.assert_array_equal(
    np.stack([new[f"blocks_{i}"]["res_scale"] for i in range(12)]), 0.25
  )


def test_fixup_bottleneck_exponent():
  """m = 3: std x L^(-1/4) on the first two layers of each branch, the third zero."""
  tree = {
    f"blocks_{i}": {f"conv_{j}": {"kernel": jnp.zeros((3, 3, 32, 32))} for j in range(3)}
    for i in range(4)
  }
  tree["head"] = {"kernel": jnp.zeros((32, 10))}
  g = Groups(presets.fixup(16, m=3).apply(tree, KEY))
  g.normal(rf"{B}/conv_(0|1)/kernel", math.sqrt(2 / (9 * 32)) * 16**-0.25)
  g.const(rf"{B}/conv_2/kernel|head/kernel", 0.0)
  g.all_checked()


def test_deepnorm_flax_post_ln():
  tree = _abstract(_lm(block=dict(post_norm=True)), TOKENS)
  p = presets.deepnorm(L, 0, names="flax")
  beta = (8 * L) ** -0.25
  g = Groups(p.apply(tree, KEY))
  g.uniform(rf"{B}/(attn/(value|out)|mlp/up)/(kernel|bias)", beta / math.sqrt(D))
  g.uniform(rf"{B}/mlp/down/(kernel|bias)", beta / math.sqrt(F))
  g.uniform(rf"{B}/attn/(query|key)/(kernel|bias)", 1 / math.sqrt(D))
  g.const(rf"{B}/\w+norm/scale", 1.0)
  g.const(rf"{B}/\w+norm/bias", 0.0)
  g.all_checked(except_=("embed/embedding", "head/kernel", "final_norm/scale", "final_norm/bias"))
  assert p.alpha == pytest.approx((2 * L) ** 0.25) and p.beta == pytest.approx(beta)


def test_t_fixup_flax_encoder_decoder():
  tree = _abstract(EncoderDecoder(V, D, H, F, 2), TOKENS, TOKENS)
  N = M = 2
  g = Groups(presets.t_fixup(N, M, D, names="flax", shared_embeddings=True).apply(tree, KEY))
  xavier = lambda fi, fo: math.sqrt(6 / (fi + fo))
  enc, dec = 0.67 * N**-0.25, (9 * M) ** -0.25
  g.uniform(r"encoder/blocks_\d+/attn/(value|out)/kernel", enc * xavier(D, D))
  g.uniform(r"encoder/blocks_\d+/mlp/(up|down)/kernel", enc * xavier(D, F))
  g.uniform(r"decoder/blocks_\d+/(attn|cross_attn)/(value|out)/kernel", dec * xavier(D, D))
  g.uniform(r"decoder/blocks_\d+/mlp/(up|down)/kernel", dec * xavier(D, F))
  g.uniform(
    r"(encoder|decoder)/blocks_\d+/(attn|cross_attn)/(query|key)/kernel", 2**-0.5 * xavier(D, D)
  )
  g.normal(r"embed/embedding", D**-0.5 * (9 * N) ** -0.25)
  # T-Fixup leaves the norms and T5's relative bias to the model
  g.all_checked(except_=[p for p in g.leaves if "norm" in p or "relative_bias" in p])


# ---------------------------------------------------------------------------
# The Preset object.
# ---------------------------------------------------------------------------

_TITAN_WO = ("embedding", "inputs", "norm_scale", "head")


def test_preset_is_a_mapping_of_rules_and_compares_by_value():
  p = presets.llama3(8, 256, names="torchtitan")
  q = presets.llama3(8, 256, names="torchtitan")
  assert p == q and hash(p) == hash(q) and pickle.loads(pickle.dumps(p)) == p
  assert p != presets.llama3(8, 256, names="torchtitan", depth_init=False)
  assert list(p) == list(p.rules) and len(p) == len(p.roles) == 5
  assert p[p.pattern("embedding")] == jaxinit.normal(1.0)
  assert p.layout == "torch" and "depth_out" in p.table()
  with pytest.raises(KeyError):
    p.pattern("nope")
  # usable where reinit takes rules, as a mapping or through .rules
  sd = {"layers": [{"attention": {"wo": {"weight": jnp.zeros((64, 64))}}} for _ in range(3)]}
  only = presets.llama3(8, 64, names="torchtitan", patterns=dict.fromkeys(_TITAN_WO))
  a = jaxinit.reinit(sd, only, KEY, layout=only.layout)
  b = jaxinit.reinit(sd, only.rules, KEY, layout=only.layout)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  w2 = a["layers"][2]["attention"]["wo"]["weight"]
  testing.assert_moments(w2, var=0.02**2 / 6, name="torchtitan wo, layer 2")
  # equal presets are one static jit argument: one trace for two separately built presets
  traces = []

  def init(key, preset):
    traces.append(preset)
    return preset.apply(sd, key)

  jitted = jax.jit(init, static_argnums=1)
  for _ in range(2):
    jitted(KEY, presets.llama3(8, 64, names="torchtitan", patterns=dict.fromkeys(_TITAN_WO)))
  assert len(traces) == 1


def test_overrides_drop_and_errors():
  p = presets.gpt2(2, patterns={"inputs": r"h/\d+/attn/c_attn/weight", "bias": None})
  assert p.pattern("inputs") == r"h/\d+/attn/c_attn/weight"
  assert "bias" not in [r for r, _, _ in p.roles]
  cases = [
    (
      lambda: presets.gpt2(2, patterns={"attn": "x"}),
      r"presets\.gpt2: `patterns` names unknown role\(s\) 'attn'; the roles of gpt2.* are "
      r"'residual_out', 'inputs'",
    ),
    (
      lambda: presets.llama3(2, 64, patterns={"depth_out": r"layers/\d+/attention/wo/weight"}),
      r"presets\.llama3: the role 'depth_out' is depth-indexed: its pattern must capture the "
      r"layer index as the group \(\?P<layer>",
    ),
    (
      lambda: presets.gpt2(2, patterns={"inputs": "("}),
      r"presets\.gpt2: `patterns`\['inputs'\] = '\(' is not a valid regular expression",
    ),
    (
      lambda: presets.gpt2(2, patterns={"inputs": presets.gpt2(2).pattern("residual_out")}),
      r"presets\.gpt2: the roles 'residual_out' and 'inputs' have the same pattern",
    ),
    (
      lambda: presets.gpt2(2, names="torch"),
      r"presets\.gpt2: `names` must be one of 'hf', 'nanogpt', 'flax', got 'torch'",
    ),
    (
      lambda: presets.olmo(2, 64, 128, init_fn="kaiming_normal"),
      r"presets\.olmo: `init_fn` must be one of 'mitchell', 'full_megatron', 'normal', "
      r"got 'kaiming_normal'",
    ),
    (lambda: presets.deepnorm(0, 0), r"presets\.deepnorm: `n_enc` and `n_dec` are both 0"),
    (lambda: presets.fixup(10, m=1), r"presets\.fixup: `m` must be >= 2, got 1"),
    (
      lambda: presets.small_init(64, names="flax") + presets.wang_init(2, 64),
      r"presets\.Preset: cannot add .* \(layout 'torch'\) to .* \(layout 'flax'\)",
    ),
  ]
  for call, pattern in cases:
    with pytest.raises(ValueError, match=rf"^jaxinit\.{pattern}"):
      call()
  with pytest.raises(TypeError, match=r"^jaxinit\.presets\.gpt2: `n_layers` must be an integer"):
    presets.gpt2(12.0)


def test_apply_names_a_role_that_matches_nothing_and_restores_ties():
  sd = {
    "transformer": {
      "wte": {"weight": jnp.zeros((50, 16))},
      "h": [{"attn": {"c_proj": {"weight": jnp.zeros((16, 16))}}}],
    },
    "lm_head": {"weight": jnp.ones((50, 16))},
  }
  p = presets.gpt2(1, patterns={"inputs": None, "norm_scale": None, "bias": None})
  new = p.apply(sd, KEY)
  assert new["lm_head"]["weight"] is new["transformer"]["wte"]["weight"]  # the tie
  with pytest.raises(
    ValueError,
    match=r"^jaxinit\.presets\.Preset\.apply: the role 'inputs' of gpt2.* matches no parameter "
    r"path .* patterns=\{'inputs': None\}",
  ):
    presets.gpt2(1, patterns={"norm_scale": None, "bias": None}).apply(sd, KEY)


class _LinenBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(D, use_bias=False, name="out")(x)


def test_preset_rules_in_init_linen_and_init_nnx():
  """Depth-indexed preset rules through init_linen (linen ``blocks_{l}``) and init_nnx
  (``nnx.List``: ``blocks/{l}``): every layer gets its own std."""
  only = presets.llama3(L, D, names="flax", patterns=dict.fromkeys(_TITAN_WO))

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      return _LinenBlock(name="attn")(x)

  class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
      for layer in range(L):
        x = Block(name=f"blocks_{layer}")(x)
      return x

  x = jnp.ones((1, D))
  v = jaxinit.init_linen(Stack(), KEY, x, rules=only.rules, layout=only.layout)
  ref = only.apply(Stack().init(KEY, x), KEY)
  for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(ref), strict=True):
    np.testing.assert_array_equal(a, b)

  class NnxBlock(nnx.Module):
    def __init__(self, rngs):
      self.attn = nnx.Dict(out=nnx.Linear(D, D, use_bias=False, rngs=rngs))

  class NnxStack(nnx.Module):
    def __init__(self, rngs):
      self.blocks = nnx.List([NnxBlock(rngs) for _ in range(L)])

  model = jaxinit.init_nnx(lambda: NnxStack(nnx.Rngs(0)), KEY, rules=only.rules, layout=only.layout)
  for layer in range(L):
    w = model.blocks[layer].attn["out"].kernel[...]  # nnx path: blocks/{layer}/attn/out/kernel
    testing.assert_moments(w, var=0.02**2 / (2 * (layer + 1)), name=f"nnx layer {layer}")
    linen_w = v["params"][f"blocks_{layer}"]["attn"]["out"]["kernel"]
    testing.assert_moments(linen_w, var=0.02**2 / (2 * (layer + 1)), name=f"linen layer {layer}")


def test_cli_lists_presets():
  from jaxinit._src import cli

  out = io.StringIO()
  cli.list_initializers(out)
  text = out.getvalue()
  for name in presets.__all__:
    if name != "Preset":
      assert f"presets.{name}(" in text, name
  assert "zero_hadamard(" in text and "spectral(" in text


# ---------------------------------------------------------------------------
# The reference codebases' names: each path goes to the role the reference gives it.
# ---------------------------------------------------------------------------

NAMES = [
  (
    presets.gpt2(2, names="nanogpt"),
    {
      "transformer/wte/weight": "embeddings",
      "transformer/wpe/weight": "embeddings",
      "transformer/h/1/attn/c_attn/weight": "inputs",
      "transformer/h/1/attn/c_proj/weight": "residual_out",
      "transformer/h/1/mlp/c_fc/weight": "inputs",
      "transformer/h/1/mlp/c_proj/weight": "residual_out",
      "transformer/h/1/ln_1/weight": "norm_scale",
      "transformer/h/1/mlp/c_proj/bias": "bias",
      "transformer/ln_f/bias": "bias",
      "transformer/h/1/attn/bias": None,  # nanoGPT's causal-mask buffer: never touched
      "lm_head/weight": None,  # tied: apply copies wte into it
    },
  ),
  (
    presets.megatron(4, 256),
    {
      "decoder/embed_tokens/weight": "embedding",
      "decoder/embed_positions/weight": "positions",
      "decoder/layers/3/self_attn/qkv_proj/weight": "inputs",
      "decoder/layers/3/self_attn/qkv_proj/bias": "bias",
      "decoder/layers/3/self_attn/out_proj/weight": "residual_out",
      "decoder/layers/3/fc1/weight": "inputs",
      "decoder/layers/3/fc2/weight": "residual_out",
      "decoder/layers/3/self_attn_layer_norm/weight": "norm_scale",
      "decoder/layer_norm/bias": "bias",
      "decoder/output_projection/weight": "head",
    },
  ),
  (
    presets.olmo(4, 256, 512, names="hf", weight_tying=False),
    {
      "model/embed_tokens/weight": "embedding",
      "model/layers/2/self_attn/q_proj/weight": "inputs",
      "model/layers/2/mlp/up_proj/weight": "inputs",
      "model/layers/2/self_attn/o_proj/weight": "attn_out",
      "model/layers/2/mlp/down_proj/weight": "ff_out",
      "model/layers/2/post_feedforward_layernorm/weight": "norm_scale",
      "model/norm/weight": "norm_scale",
      "lm_head/weight": "head",
    },
  ),
  (
    presets.vit(names="hf"),  # transformers 4.x names
    {
      "vit/embeddings/cls_token": "cls_positions",
      "vit/embeddings/patch_embeddings/projection/weight": "weights",
      "vit/encoder/layer/0/attention/attention/query/weight": "weights",
      "vit/encoder/layer/0/layernorm_before/weight": "norm_scale",
      "vit/encoder/layer/0/output/dense/bias": "bias",
      "classifier/weight": "weights",
    },
  ),
  (
    presets.vit(variant="original", names="vit_jax", pooler=True),
    {
      "embedding/kernel": "patch",
      "embedding/bias": "patch_bias",
      "cls": "cls",
      "Transformer/posembed_input/pos_embedding": "positions",
      "Transformer/encoderblock_5/MultiHeadDotProductAttention_1/query/kernel": "attention_qkv",
      "Transformer/encoderblock_5/MultiHeadDotProductAttention_1/out/kernel": "attention_out",
      "Transformer/encoderblock_5/MultiHeadDotProductAttention_1/out/bias": "attention_bias",
      "Transformer/encoderblock_5/MlpBlock_3/Dense_1/kernel": "mlp",
      "Transformer/encoderblock_5/MlpBlock_3/Dense_1/bias": "mlp_bias",
      "Transformer/encoderblock_5/LayerNorm_2/scale": "norm_scale",
      "Transformer/encoder_norm/bias": "norm_bias",
      "pre_logits/kernel": "pooler",
      "head/kernel": "head",
      "head/bias": "head_bias",
    },
  ),
  (
    presets.fixup(54, names="cifar"),
    {
      "conv1/weight": None,  # the stem keeps torch's default
      "bias1": "shift",
      "layer2/4/conv1/weight": "branch",
      "layer2/4/conv2/weight": "last",
      "layer2/4/bias1a": "shift",
      "layer2/4/bias2b": "shift",
      "layer2/4/scale": "scale",
      "fc/weight": "head",
      "fc/bias": "head_bias",
    },
  ),
  (
    presets.fixup(16, m=3, names="imagenet"),
    {
      "layer1/0/conv2/weight": "branch",
      "layer1/0/conv3/weight": "last",
      "layer1/0/downsample/weight": "downsample",
    },
  ),
  (
    presets.t_fixup(6, 6, 512),
    {
      "encoder/embed_tokens/weight": "encoder_embedding",
      "encoder/layers/5/self_attn/v_proj/weight": "encoder_v",
      "encoder/layers/5/self_attn/q_proj/weight": "encoder_qk",
      "encoder/layers/5/fc2/weight": "encoder_ffn",
      "encoder/layers/5/fc2/bias": "encoder_bias",
      "decoder/embed_tokens/weight": "decoder_embedding",
      "decoder/layers/0/encoder_attn/v_proj/weight": "decoder_v",
      "decoder/layers/0/encoder_attn/out_proj/weight": "decoder_ffn",
      "decoder/layers/0/encoder_attn/k_proj/weight": "decoder_qk",
    },
  ),
  (
    presets.deepnorm(6, 12),
    {
      "encoder/layers/0/self_attn/v_proj/weight": "encoder_scaled",
      "encoder/layers/0/ffn/fc1/bias": "encoder_scaled_bias",
      "encoder/layers/0/self_attn/k_proj/weight": "encoder_qk",
      "decoder/layers/11/encoder_attn/out_proj/weight": "decoder_scaled",
      "decoder/layers/11/encoder_attn/q_proj/bias": "decoder_qk_bias",
      "decoder/layers/11/encoder_attn_layer_norm/weight": "decoder_norm_scale",
      "decoder/embed_tokens/weight": None,
    },
  ),
  (
    presets.rezero() + presets.torch_default(),
    {
      "transformer_encoder/layers/0/resweight": "res_weight",
      "transformer_encoder/layers/0/linear1/weight": "weights",
      "transformer_encoder/layers/0/linear1/bias": "bias",
    },
  ),
  (
    presets.small_init(512) + presets.wang_init(8, 512),
    {
      "gpt_neox/embed_in/weight": "embeddings",
      "gpt_neox/layers/7/attention/query_key_value/weight": "inputs",
      "gpt_neox/layers/7/attention/dense/weight": "residual_out",
      "gpt_neox/layers/7/mlp/dense_h_to_4h/weight": "inputs",
      "gpt_neox/layers/7/mlp/dense_4h_to_h/weight": "residual_out",
      "gpt_neox/layers/7/mlp/dense_4h_to_h/bias": "bias",
      "gpt_neox/layers/7/input_layernorm/weight": "norm_scale",
      "gpt_neox/final_layer_norm/bias": "bias",
      "embed_out/weight": "head",
    },
  ),
]


@pytest.mark.parametrize("preset,paths", NAMES, ids=lambda x: getattr(x, "name", "")[:40])
def test_reference_names_go_to_their_roles(preset, paths):
  """First match wins, as in reinit; None: no role takes the path."""
  for path, role in paths.items():
    hit = next((r for r, p, _ in preset.roles if re.fullmatch(p, path)), None)
    assert hit == role, (preset.name, path, hit, role)
