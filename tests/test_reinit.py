"""jaxinit.reinit: path rules, path-stable keys, layouts, sibling rules, framework trees,
and errors that leave the input untouched."""

import copy
import dataclasses

import equinox as eqx
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jaxinit
from jaxinit import testing

KEY = jax.random.key(7)


def _tree():
  return {
    "Dense_0": {"kernel": jnp.zeros((16, 32)), "bias": jnp.zeros((32,))},
    "Dense_1": {"kernel": jnp.zeros((32, 8)), "bias": jnp.zeros((8,))},
    "layers": [{"w": jnp.zeros((8, 8))}, {"w": jnp.zeros((8, 8))}],
    "step": jnp.zeros((), jnp.int32),
  }


def _equal(a, b):
  return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def test_paths_rules_and_untouched_leaves():
  tree = _tree()
  assert jaxinit.leaf_paths(tree) == [
    "Dense_0/bias",
    "Dense_0/kernel",
    "Dense_1/bias",
    "Dense_1/kernel",
    "layers/0/w",
    "layers/1/w",
    "step",
  ]
  he, const = jaxinit.he_normal(), jaxinit.constant(0.5)
  rules = {
    "Dense_1/.*": None,  # first match wins: Dense_1 is kept
    ".*kernel": he,
    "(.*/)?bias": const,
    r"layers/\d+/w": "lecun_normal",
  }  # a registry name
  new = jaxinit.reinit(tree, rules, KEY)
  for path in ("Dense_1/kernel", "Dense_1/bias", "step"):
    a, b = tree, new
    for part in path.split("/"):
      a, b = a[part], b[part]
    assert a is b, path  # same object
  # each redrawn leaf is exactly its initializer drawn with leaf_key(key, path)
  assert _equal(new["Dense_0"]["kernel"], he(jaxinit.leaf_key(KEY, "Dense_0/kernel"), (16, 32)))
  assert _equal(new["Dense_0"]["bias"], jnp.full((32,), 0.5))
  w1 = jaxinit.lecun_normal()(jaxinit.leaf_key(KEY, "layers/1/w"), (8, 8))
  assert _equal(new["layers"][1]["w"], w1)
  assert not _equal(new["layers"][0]["w"], new["layers"][1]["w"])
  # as a sequence of pairs, same result
  again = jaxinit.reinit(tree, list(rules.items()), KEY)
  chex_equal = jax.tree.map(_equal, new, again)
  assert all(jax.tree.leaves(chex_equal))


def test_keys_are_path_stable():
  rules = {".*kernel": jaxinit.he_normal(), ".*bias": jaxinit.normal()}
  small = {"Dense_0": {"kernel": jnp.zeros((16, 32)), "bias": jnp.zeros((32,))}}
  big = {
    "Conv_9": {"kernel": jnp.zeros((3, 3, 4, 8)), "bias": jnp.zeros((8,))},
    "Dense_0": {"kernel": jnp.zeros((16, 32)), "bias": jnp.zeros((32,))},
    "A": {"kernel": jnp.zeros((16, 32))},
  }
  a = jaxinit.reinit(small, rules, KEY)
  b = jaxinit.reinit(big, rules, KEY)
  assert _equal(a["Dense_0"]["kernel"], b["Dense_0"]["kernel"])
  assert _equal(a["Dense_0"]["bias"], b["Dense_0"]["bias"])
  # same shape, different path: different values
  assert not _equal(b["A"]["kernel"], b["Dense_0"]["kernel"])
  # legacy and typed root keys agree; another root key differs
  c = jaxinit.reinit(small, rules, jax.random.key_data(KEY))
  assert _equal(a["Dense_0"]["kernel"], c["Dense_0"]["kernel"])
  d = jaxinit.reinit(small, rules, jax.random.key(8))
  assert not _equal(a["Dense_0"]["kernel"], d["Dense_0"]["kernel"])


def test_under_jit_equals_eager():
  rules = {".*kernel": jaxinit.he_normal(), ".*bias": jaxinit.torch_bias()}
  tree = {"Dense_0": {"kernel": jnp.zeros((16, 32)), "bias": jnp.zeros((32,))}}
  eager = jaxinit.reinit(tree, rules, KEY)
  jitted = jax.jit(lambda t, k: jaxinit.reinit(t, rules, k))(tree, KEY)
  assert all(jax.tree.leaves(jax.tree.map(_equal, eager, jitted)))
  abstract = jax.eval_shape(lambda: tree)  # ShapeDtypeStruct leaves are drawn too
  from_abstract = jaxinit.reinit(abstract, rules, KEY)
  assert all(jax.tree.leaves(jax.tree.map(_equal, eager, from_abstract)))


def test_foreign_initializer_and_dtypes():
  tree = {"a": jnp.zeros((16, 32), jnp.bfloat16), "b": jnp.zeros((16, 32))}
  new = jaxinit.reinit(
    tree, {"a": jaxinit.he_normal(), "b": jax.nn.initializers.lecun_normal()}, KEY
  )
  assert new["a"].dtype == jnp.bfloat16 and new["a"].shape == (16, 32)
  ref = jax.nn.initializers.lecun_normal()(jaxinit.leaf_key(KEY, "b"), (16, 32), jnp.float32)
  assert _equal(new["b"], ref)


# ---------------------------------------------------------------------------
# Layouts and the sibling bias rule.
# ---------------------------------------------------------------------------


def test_layout_presets_and_with_layout():
  torch_he = jaxinit.he_normal().with_layout("torch")
  assert torch_he == jaxinit.he_normal(in_axis=1, out_axis=0)
  assert hash(torch_he) == hash(jaxinit.he_normal(in_axis=1, out_axis=0))
  assert jaxinit.deserialize(jaxinit.serialize(torch_he)) == torch_he
  assert jaxinit.normal().with_layout("torch") == jaxinit.normal()  # no fans: unchanged
  lay = jaxinit.LAYOUTS
  # (out, in, kh, kw) = (64, 32, 3, 3): fan_in = 32 * 9, fan_out = 64 * 9
  assert jaxinit.compute_fans((64, 32, 3, 3), lay["torch"].in_axis, lay["torch"].out_axis) == (
    288,
    576,
  )
  # torch ConvTranspose (in, out, kh, kw) = (32, 64, 3, 3): true fans
  assert jaxinit.compute_fans(
    (32, 64, 3, 3), lay["torch_transpose"].in_axis, lay["torch_transpose"].out_axis
  ) == (288, 576)
  assert jaxinit.compute_fans((3, 3, 32, 64), lay["flax"].in_axis, lay["flax"].out_axis) == (
    288,
    576,
  )
  with pytest.raises(ValueError, match=r"jaxinit.he_normal: unknown layout 'troch'.*'torch'"):
    jaxinit.he_normal().with_layout("troch")


def test_reinit_layout_rewrites_default_axes_only():
  tree = {"w": jnp.zeros((64, 32, 3, 3)), "v": jnp.zeros((64, 32, 3, 3)), "b": jnp.zeros((64,))}
  explicit = jaxinit.he_normal(in_axis=0, out_axis=1)
  new = jaxinit.reinit(
    tree, {"w": jaxinit.he_normal(), "v": explicit, "b": jaxinit.he_normal()}, KEY, layout="torch"
  )
  torch_he = jaxinit.he_normal(in_axis=1, out_axis=0)
  assert _equal(new["w"], torch_he(jaxinit.leaf_key(KEY, "w"), (64, 32, 3, 3)))
  assert _equal(new["v"], explicit(jaxinit.leaf_key(KEY, "v"), (64, 32, 3, 3)))
  assert _equal(new["b"], jaxinit.he_normal()(jaxinit.leaf_key(KEY, "b"), (64,)))
  custom = jaxinit.Layout("custom", in_axis=1, out_axis=0)
  again = jaxinit.reinit(tree, {"w": jaxinit.he_normal()}, KEY, layout=custom)
  assert _equal(again["w"], new["w"])


@dataclasses.dataclass(frozen=True, repr=False)
class _ColumnMarker(jaxinit.Initializer):
  """An initializer without fan fields that handles layouts itself (as an orthogonal
  family can): it writes 1 along its column axis' first index."""

  column_axis: int = -1
  name = "column_marker"

  def with_layout(self, layout):
    lay = layout if isinstance(layout, jaxinit.Layout) else jaxinit.LAYOUTS[layout]
    return dataclasses.replace(self, column_axis=lay.out_axis)

  def _sample(self, key, shape, dtype):
    index = [slice(None)] * len(shape)
    index[self.column_axis] = 0
    return jnp.zeros(shape, dtype).at[tuple(index)].set(1)


def test_reinit_layout_calls_an_initializers_own_with_layout():
  tree = {"w": jnp.zeros((3, 5)), "b": jnp.zeros((3,))}
  new = jaxinit.reinit(tree, {".*": _ColumnMarker()}, KEY, layout="torch")
  assert _equal(new["w"], jnp.zeros((3, 5)).at[0, :].set(1))  # column axis 0 (out)
  assert _equal(new["b"], jnp.zeros((3,)).at[0].set(1))  # rank 1: untouched
  flax = jaxinit.reinit(tree, {"w": _ColumnMarker()}, KEY)
  assert _equal(flax["w"], jnp.zeros((3, 5)).at[:, 0].set(1))


def test_equinox_defaults_to_torch_layout():
  # weight (out, in) = (500, 2000): he_normal must use fan_in = 2000 (not 500)
  model = eqx.nn.Linear(2000, 500, key=jax.random.key(0))
  new = jaxinit.reinit(model, {"weight": jaxinit.he_normal(), "bias": jaxinit.zeros()}, KEY)
  assert isinstance(new, eqx.nn.Linear) and new.weight.shape == (500, 2000)
  testing.assert_moments(new.weight, mean=0.0, var=2.0 / 2000, name="equinox weight")
  assert _equal(new.bias, jnp.zeros(500))
  assert not _equal(model.weight, new.weight)  # the input module is untouched


def test_torch_bias_takes_fan_in_from_sibling():
  # torch's default Linear init: weight and bias both U(+-1/sqrt(fan_in)), fan_in = 100
  tree = {"fc": {"weight": jnp.zeros((4096, 100)), "bias": jnp.zeros((4096,))}}
  rules = {".*weight": jaxinit.he_uniform(negative_slope=5**0.5), ".*bias": jaxinit.torch_bias()}
  new = jaxinit.reinit(tree, rules, KEY, layout="torch")
  testing.assert_ks(new["fc"]["bias"], "uniform", (-0.1, 0.2), name="torch bias")
  testing.assert_ks(new["fc"]["weight"], "uniform", (-0.1, 0.2), name="torch weight")
  # equinox Conv2d: weight (out, in, kh, kw), bias (out, 1, 1); fan_in = in * 9
  conv = eqx.nn.Conv2d(4, 8, 3, key=jax.random.key(0))
  new_conv = jaxinit.reinit(conv, {"bias": jaxinit.torch_bias(scale=2.0)}, KEY)
  bound = 2.0 / (4 * 9) ** 0.5
  ref = jaxinit.uniform(-bound, bound)(jaxinit.leaf_key(KEY, "bias"), (8, 1, 1))
  assert _equal(new_conv.bias, ref)
  with pytest.raises(
    TypeError, match=r"^jaxinit\.torch_bias: .*only be used as a rule of jaxinit\.reinit"
  ):
    jaxinit.torch_bias()(KEY, (3,))


# ---------------------------------------------------------------------------
# Framework trees.
# ---------------------------------------------------------------------------


class _Linen(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(
      32, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
    )(x)
    return nn.Dense(8)(x)


def test_linen_variables_keep_partitioning_boxes():
  variables = _Linen().init(jax.random.key(0), jnp.ones((1, 16)))
  rules = {".*kernel": jaxinit.he_normal(), ".*bias": jaxinit.torch_bias()}
  new = jaxinit.reinit(variables, rules, KEY)
  box = new["params"]["Dense_0"]["kernel"]
  assert isinstance(box, nn.Partitioned) and box.names == (None, "model")
  ref = jaxinit.he_normal()(jaxinit.leaf_key(KEY, "params/Dense_0/kernel"), (16, 32))
  assert _equal(box.value, ref)
  # the unboxed params tree gives paths without the "params/" prefix
  params = nn.unbox(variables)["params"]
  new_params = jaxinit.reinit(params, rules, KEY)
  assert _equal(
    new_params["Dense_1"]["kernel"],
    jaxinit.he_normal()(jaxinit.leaf_key(KEY, "Dense_1/kernel"), (32, 8)),
  )
  bound = 1 / 32**0.5
  assert float(jnp.abs(new_params["Dense_1"]["bias"]).max()) <= bound


class _Nnx(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(16, 32, rngs=rngs)
    self.layers = nnx.List([nnx.Linear(32, 8, rngs=rngs)])
    self.drop = nnx.Dropout(0.1, rngs=rngs)


def test_nnx_state_and_update_one_liner():
  model = _Nnx(nnx.Rngs(0))
  before = nnx.state(model, nnx.Param)
  before_kernel = np.asarray(model.linear.kernel[...])
  rules = {".*kernel": jaxinit.he_normal(), ".*bias": jaxinit.constant(0.25)}
  new = jaxinit.reinit(nnx.state(model, nnx.Param), rules, KEY)
  assert _equal(model.linear.kernel[...], before_kernel)  # nothing written yet
  nnx.update(model, new)  # the documented one-liner that writes it back
  ref = jaxinit.he_normal()(jaxinit.leaf_key(KEY, "layers/0/kernel"), (32, 8))
  assert _equal(model.layers[0].kernel[...], ref)
  assert _equal(model.linear.bias[...], jnp.full((32,), 0.25))
  assert isinstance(new["linear"]["kernel"], nnx.Param)
  assert jaxinit.leaf_paths(before) == [
    "layers/0/bias",
    "layers/0/kernel",
    "linear/bias",
    "linear/kernel",
  ]
  # the full state also holds the RNG key and counter: matching them is an error
  with pytest.raises(TypeError, match=r"matched 'drop/rngs/count' of shape \(\) uint32"):
    jaxinit.reinit(nnx.state(model), {".*": jaxinit.normal()}, KEY)
  with pytest.raises(TypeError, match=r"matched 'drop/rngs/key', a PRNG key array"):
    jaxinit.reinit(nnx.state(model), {".*/key": jaxinit.normal()}, KEY)


def test_haiku_initializer_and_params():
  init = jaxinit.he_normal()

  def net(x):
    return hk.Linear(32, w_init=jaxinit.haiku_initializer(init))(x)

  def draw(x):
    return init(hk.next_rng_key(), (16, 32))

  params = hk.transform(net).init(jax.random.key(3), jnp.ones((1, 16)))
  # the first hk.next_rng_key() of a transform depends only on its rng
  expected = hk.transform(draw).apply({}, jax.random.key(3), None)
  assert params["linear"]["w"].dtype == jnp.float32
  assert _equal(params["linear"]["w"], expected)
  assert jaxinit.haiku_initializer("he_normal") == jaxinit.haiku_initializer(init)
  # haiku params are plain dicts: "linear/w"
  new = jaxinit.reinit(params, {"linear/w": jaxinit.lecun_normal(), "linear/b": None}, KEY)
  assert _equal(
    new["linear"]["w"], jaxinit.lecun_normal()(jaxinit.leaf_key(KEY, "linear/w"), (16, 32))
  )
  assert new["linear"]["b"] is params["linear"]["b"]


# ---------------------------------------------------------------------------
# Errors: clear messages, nothing drawn, input untouched.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  "rules,exc,pattern",
  [
    (
      {"Dense_0/kernal": jaxinit.normal()},
      ValueError,
      r"the rule 'Dense_0/kernal' matches no parameter path.*Close paths: 'Dense_0/kernel'",
    ),
    (
      {"kernel": jaxinit.normal()},
      ValueError,
      r"the rule 'kernel' matches no parameter path \(patterns must match the whole path",
    ),
    (
      {"Dense_[0-": jaxinit.normal()},
      ValueError,
      r"the rule pattern 'Dense_\[0-' is not a valid regular expression",
    ),
    (
      {"step": jaxinit.normal()},
      TypeError,
      r"the rule 'step' \(normal\(\)\) matched 'step' of shape \(\) int32, which it cannot "
      r"initialize: jaxinit.normal: `dtype` must be a floating-point",
    ),
    (
      {"Dense_1/kernel": jaxinit.normal(), ".*": jaxinit.he_normal()},
      TypeError,
      r"the rule '\.\*' \(he_normal\(\)\) matched 'step' of shape \(\) int32",
    ),
    ({"Dense_0/kernel": 3.0}, TypeError, r"maps to 3.0, which is not an initializer"),
    (
      {"Dense_0/bias": jaxinit.torch_bias(sibling="weight")},
      ValueError,
      r"none of its sibling kernels exists: tried 'Dense_0/weight'",
    ),
    (
      {"Dense_0/kernel": jaxinit.he_normal(in_axis=3)},
      ValueError,
      r"matched 'Dense_0/kernel' of shape \(16, 32\).*`in_axis`=3 is out of range",
    ),
    ({}, ValueError, r"`rules` is empty"),
  ],
)
def test_errors_leave_input_untouched(rules, exc, pattern):
  tree = _tree()
  snapshot = copy.deepcopy(jax.tree.map(np.asarray, tree))
  leaves = jax.tree.leaves(tree)
  with pytest.raises(exc, match=rf"^jaxinit\.reinit: .*{pattern}"):
    jaxinit.reinit(tree, rules, KEY)
  assert all(a is b for a, b in zip(jax.tree.leaves(tree), leaves, strict=True))
  assert all(jax.tree.leaves(jax.tree.map(_equal, tree, snapshot)))


def test_complex_leaf_with_real_only_initializer():
  tree = {"w": jnp.zeros((4, 4), jnp.complex64)}
  with pytest.raises(TypeError, match=r"matched 'w' of shape \(4, 4\) complex64.*is complex"):
    jaxinit.reinit(tree, {"w": jaxinit.uniform()}, KEY)
  new = jaxinit.reinit(tree, {"w": jaxinit.he_normal()}, KEY)
  assert new["w"].dtype == jnp.complex64


def _stack_tree(n):
  """n identical layers, as the repeated blocks of a deep model."""
  return {
    f"layer_{i}": {
      "kernel": jax.ShapeDtypeStruct((24, 40), jnp.float32),
      "bias": jax.ShapeDtypeStruct((40,), jnp.float32),
      "q": jax.ShapeDtypeStruct((40, 40), jnp.bfloat16),
      "mask": jax.ShapeDtypeStruct((40, 12), jnp.float32),
    }
    for i in range(n)
  }


STACK_RULES = {
  ".*kernel": jaxinit.he_normal(),
  ".*bias": jaxinit.uniform(),
  ".*q": jaxinit.orthogonal(),
  ".*mask": jaxinit.sparse(num_nonzero=3, values=jaxinit.truncated_normal(0.1)),
}


def test_identical_leaves_under_jit_are_one_batched_draw_with_the_same_bits():
  """Inside jit, leaves of one (initializer, shape, dtype) are drawn by one batched
  program: the values are those of the eager per-leaf draws, bit for bit, and the
  compiled program does not grow with the number of identical leaves."""
  tree = _stack_tree(6)
  eager = jaxinit.reinit(tree, STACK_RULES, KEY)
  jitted = jax.jit(lambda k: jaxinit.reinit(tree, STACK_RULES, k))(KEY)
  for path, a, b in zip(
    jaxinit.leaf_paths(tree), jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True
  ):
    assert _equal(a, b), path
  distinct = {str(eager[f"layer_{i}"]["kernel"].tolist()) for i in range(6)}
  assert len(distinct) == 6  # every layer has its own key

  def sampler_ops(n):
    tree = _stack_tree(n)
    hlo = jax.jit(lambda k: jaxinit.reinit(tree, STACK_RULES, k)).lower(KEY).compile().as_text()
    return hlo.count(" xor(")  # threefry's rounds: one copy per compiled sampler

  # one sampler per distinct draw: 12 identical layers compile (almost) what 2 do; drawn
  # leaf by leaf, each layer would add its own copy of every sampler (about 6x here)
  assert 0 < sampler_ops(12) < 1.5 * sampler_ops(2)
