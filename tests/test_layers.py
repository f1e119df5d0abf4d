"""Layer discovery (jaxinit.find_layers and the Program interpreter behind LSUV)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _lsuv_models import (
  NnxTransformer,
  OutOfOrder,
  ResNet,
  ScanMLP,
  Tied,
  fast_init,
  pure_apply,
  pure_init,
)
from flax import linen as nn
from flax import nnx

import jaxinit
from jaxinit._src.jaxpr import program as jaxpr_program
from jaxinit._src.jaxpr import run as jaxpr_run

KEY = jax.random.key(0)


def _summary(found):
  return [(lay.path, lay.kind, lay.fan_in, lay.fan_out, lay.bias_path) for lay in found]


def test_execution_order_not_parameter_order():
  x = jnp.ones((4, 8))
  model = OutOfOrder()
  found = jaxinit.find_layers(model, jax.eval_shape(model.init, KEY, x), x)
  # parameters sort as a_out, m_mid, z_in; the model calls them z, m, a
  assert [lay.path for lay in found] == ["z_in/kernel", "m_mid/kernel", "a_out/kernel"]
  assert [lay.index for lay in found] == [0, 1, 2]
  assert all(
    lay.source.startswith(__file__.replace("test_layers", "_lsuv_models")) for lay in found
  )


class _Zoo(nn.Module):
  """Every kind of linear layer, plus things that are not layers."""

  @nn.compact
  def __call__(self, x):  # x: (batch, 4, 4, 3)
    y = nn.ConvTranspose(4, (3, 3), strides=(2, 2), transpose_kernel=True)(x)  # flipped kernel
    y = nn.LayerNorm()(y)  # scale: elementwise, not a layer
    y = nn.Conv(6, (3,), feature_group_count=2)(y.reshape(y.shape[0], -1, 4))  # grouped 1-D
    y = nn.Conv(12, (3,), feature_group_count=6, use_bias=False)(y)  # depthwise, no bias
    y = nn.Einsum((12, 5), "btc,cd->btd")(y)
    z = nn.Conv(5, (2, 2, 2))(y.reshape(y.shape[0], 4, 4, 4, 5)[:, :2, :2, :2])  # 3-D
    a = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(y)  # q @ k: not a layer
    w = self.param("wn", nn.initializers.normal(), (5, 5))
    y = a @ (w / jnp.linalg.norm(w))  # weight normalization: not a layer
    e = nn.Embed(10, 5)(jnp.argmax(y, axis=-1))  # gather: not a layer
    return nn.DenseGeneral((2, 3), axis=(-2, -1))(e).sum() + z.sum()


def test_layer_kinds_fans_and_biases():
  x = jnp.ones((2, 4, 4, 3))
  found = jaxinit.find_layers(_Zoo(), jax.eval_shape(_Zoo().init, KEY, x), x)
  mha = "MultiHeadDotProductAttention_0"
  assert _summary(found) == [
    ("ConvTranspose_0/kernel", "conv", 27, 4, "ConvTranspose_0/bias"),
    ("Conv_0/kernel", "conv", 6, 6, "Conv_0/bias"),
    ("Conv_1/kernel", "conv", 3, 12, None),
    ("Einsum_0/kernel", "dot", 12, 5, "Einsum_0/bias"),
    ("Conv_2/kernel", "conv", 40, 5, "Conv_2/bias"),
    (f"{mha}/query/kernel", "dot", 5, 8, f"{mha}/query/bias"),
    (f"{mha}/key/kernel", "dot", 5, 8, f"{mha}/key/bias"),
    (f"{mha}/value/kernel", "dot", 5, 8, f"{mha}/value/bias"),
    (f"{mha}/out/kernel", "dot", 8, 5, f"{mha}/out/bias"),
    ("DenseGeneral_0/kernel", "dot", 320, 6, "DenseGeneral_0/bias"),
  ]
  assert found[-1].weight_shape == (64, 5, 2, 3)
  assert found[-1].output_shape == (2, 2, 3)


def test_pure_function_layouts():
  """(out, in) weights used as W @ x, einsum with a batch axis, grouped 1-D conv."""
  p = jax.eval_shape(pure_init)
  found = jaxinit.find_layers(pure_apply, p, jax.ShapeDtypeStruct((3, 16, 8), jnp.float32))
  assert _summary(found) == [
    ("conv/w", "conv", 6, 8, "conv/b"),
    ("proj/w", "dot", 128, 32, None),
    ("mix/w", "dot", 16, 16, None),
    ("out/w", "dot", 32, 5, "out/b"),
  ]


def test_calls_custom_derivatives_and_remat_are_looked_through():
  @jax.custom_vjp
  def matmul(x, w):
    return x @ w

  matmul.defvjp(lambda x, w: (x @ w, (x, w)), lambda r, g: (g @ r[1].T, r[0].T @ g))

  @jax.jit
  def inner(p, x):
    return jax.nn.gelu(x @ p["b"])

  def f(p, x):
    x = jax.checkpoint(lambda x: jnp.tanh(matmul(x, p["a"])))(x)
    return inner(p, x) @ p["c"].astype(jnp.bfloat16).T.astype(jnp.float32)

  p = {"a": jnp.ones((4, 4)), "b": jnp.ones((4, 4)), "c": jnp.ones((3, 4))}
  found = jaxinit.find_layers(f, p, jnp.ones((2, 4)))
  assert [lay.path for lay in found] == ["a", "b", "c"]


def test_tied_weights():
  tokens = jnp.zeros((4, 6), jnp.int32)
  found = jaxinit.find_layers(Tied(), jax.eval_shape(Tied().init, KEY, tokens), tokens)
  assert [(lay.path, lay.tied_to, lay.read_earlier, lay.read_later) for lay in found] == [
    ("Dense_0/kernel", None, False, True),
    ("Dense_0/kernel", 0, False, False),
    ("Embed_0/embedding", None, True, False),  # looked up by the gather first
  ]


def test_scan_over_stacked_layers_is_unrolled():
  x = jnp.ones((4, 16))
  found = jaxinit.find_layers(ScanMLP(), jax.eval_shape(ScanMLP().init, KEY, x), x)
  stack = "ScanCheckpointScanBlock_0/Dense_0"
  assert [lay.path for lay in found] == (
    ["Dense_0/kernel"] + [f"{stack}/kernel[{t}]" for t in range(4)] + ["Dense_1/kernel"]
  )
  assert [lay.bias_path for lay in found[1:5]] == [f"{stack}/bias[{t}]" for t in range(4)]
  assert all(lay.weight_shape == (32, 32) and lay.tied_to is None for lay in found[1:5])


def test_reverse_scan_runs_steps_in_execution_order():
  def f(p, x):
    def step(h, w):
      return jnp.tanh(h @ w), None

    return jax.lax.scan(step, x, p, reverse=True)[0]

  found = jaxinit.find_layers(f, jnp.ones((3, 4, 4)), jnp.ones((2, 4)))
  assert [lay.path for lay in found] == ["[2]", "[1]", "[0]"]


def test_scan_without_layers_is_not_unrolled():
  def f(p, x):
    x = jax.lax.scan(lambda h, _: (jnp.sin(h), None), x, None, length=50)[0]
    return x @ p

  prog = jaxpr_program.trace("find_layers", f, jnp.ones((4, 4)), (jnp.ones((2, 4)),))
  assert [s.prim for s in prog.steps].count("scan") == 1
  assert len(prog.layers) == 1


@pytest.mark.parametrize("kind", ["cond", "while"])
def test_layer_inside_control_flow_is_a_clear_error(kind):
  def f(p, x):
    if kind == "cond":
      return jax.lax.cond(x.sum() > 0, lambda: x @ p["w"], lambda: x)
    return jax.lax.while_loop(
      lambda c: c[1] < x.sum(), lambda c: (c[0] @ p["w"], c[1] + 1), (x, 0.0)
    )[0]

  with pytest.raises(NotImplementedError, match=r"jaxinit\.find_layers: the layer\(s\) w run"):
    jaxinit.find_layers(f, {"w": jnp.ones((3, 3))}, jnp.ones((2, 3)))


def test_nnx_paths_and_attention():
  model = nnx.eval_shape(lambda: NnxTransformer(rngs=nnx.Rngs(0)))
  found = jaxinit.find_layers(model, jnp.zeros((2, 6), jnp.int32))
  assert [lay.path for lay in found] == [
    "attn/query/kernel",
    "attn/key/kernel",
    "attn/value/kernel",
    "attn/out/kernel",
    "up/kernel",
    "down/kernel",
    "head/kernel",
  ]


def test_evaluate_matches_the_model_and_reports_activations():
  """The interpreter behind LSUV: same outputs as the model; on_post sees each activation."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 8, 8, 3)), jnp.float32)
  model = ResNet()
  variables = fast_init(model, x)

  def f(p, x):
    return model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x)

  p = variables["params"]
  prog = jaxpr_program.trace("find_layers", f, p, (x,))

  @jax.jit
  def run(leaves, x):
    seen = {}
    outs, _ = jaxpr_run.evaluate(
      prog, leaves, [x], on_post=lambda lay, v: seen.setdefault(lay.index, v)
    )
    return outs, seen

  outs, seen = run(jax.tree_util.tree_leaves(p), x)
  np.testing.assert_allclose(outs[0], f(p, x), rtol=1e-5, atol=1e-5)
  assert sorted(seen) == list(range(len(prog.layers)))
  # The stem conv is followed by BatchNorm (not elementwise-only): its activation is its output.
  assert seen[0].shape == (8, 8, 8, 16)
  # The classifier has no activation after it: its "post" is its output, the model's output.
  np.testing.assert_allclose(seen[len(prog.layers) - 1], outs[0], rtol=1e-6)


def test_evaluate_post_is_the_activation():
  def f(p, x):
    return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"]

  r = np.random.default_rng(0)
  p = {
    "w1": jnp.asarray(r.standard_normal((4, 8)), jnp.float32),
    "b1": jnp.ones(8),
    "w2": jnp.ones((8, 2)),
  }
  x = jnp.asarray(r.standard_normal((5, 4)), jnp.float32)
  prog = jaxpr_program.trace("find_layers", f, p, (x,))
  seen = {}
  jaxpr_run.evaluate(
    prog, jax.tree_util.tree_leaves(p), [x], on_post=lambda lay, v: seen.update({lay.path: v})
  )
  np.testing.assert_allclose(seen["w1"], jax.nn.relu(x @ p["w1"] + p["b1"]), rtol=1e-6)


def test_find_layers_argument_errors():
  with pytest.raises(TypeError, match=r"jaxinit\.find_layers: a Flax linen module is called as"):
    jaxinit.find_layers(nn.Dense(3), jnp.ones((2, 3)))
  with pytest.raises(TypeError, match=r"must be a Flax linen module, a Flax nnx module or"):
    jaxinit.find_layers(3, {}, jnp.ones(2))
