"""jaxinit.depth_rule: each layer drawn with its own scale, read from the layer index its
pattern captured; every reinit guarantee kept (checked before drawing, path-stable keys,
jit, sharding, boxes); errors name the rule, the path and the layer."""

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinit
from jaxinit import testing

KEY = jax.random.key(11)
SIGMA = 0.02
LAYERS = 48


def megatron_scale(layer: int) -> float:
  """torchtitan's depth_init (v0.2.2, llama3/model/model.py): 0.02 / sqrt(2 (layer_id + 1))."""
  return (2 * (layer + 1)) ** -0.5


RULE = jaxinit.depth_rule(jaxinit.normal(SIGMA), megatron_scale)
PATTERN = r"layers/(\d+)/mlp/down/kernel"


def _model(layers=LAYERS, width=96):
  return {
    "layers": [{"mlp": {"down": {"kernel": jnp.zeros((width, width))}}} for _ in range(layers)]
  }


def test_48_layers_each_with_its_own_std():
  """Per layer: mean and std within 6 standard errors of 0 and 0.02 / sqrt(2 (l + 1))."""
  new = jaxinit.reinit(_model(), {PATTERN: RULE}, KEY)
  for layer in range(LAYERS):
    w = new["layers"][layer]["mlp"]["down"]["kernel"]
    std = SIGMA * megatron_scale(layer)
    testing.assert_moments(w, mean=0.0, var=std**2, name=f"layer {layer}")
  # an index off by one is far outside 6 SE on the first layers (sqrt(2) at layer 0) ...
  first = new["layers"][0]["mlp"]["down"]["kernel"]
  with pytest.raises(AssertionError, match="layer 0 off by one"):
    testing.assert_moments(first, var=(SIGMA * megatron_scale(1)) ** 2, name="layer 0 off by one")


def test_each_layer_is_its_base_draw_times_its_scale():
  """... and exactly: layer l is normal(0.02)(leaf_key(key, path)) * scale(l), so reading
  layer l + 1 (or l - 1) fails at every layer."""
  new = jaxinit.reinit(_model(8, 32), {PATTERN: RULE}, KEY)
  for layer in range(8):
    path = f"layers/{layer}/mlp/down/kernel"
    base = np.asarray(jaxinit.normal(SIGMA)(jaxinit.leaf_key(KEY, path), (32, 32)), np.float64)
    got = np.asarray(new["layers"][layer]["mlp"]["down"]["kernel"], np.float64)
    np.testing.assert_allclose(got, base * megatron_scale(layer), rtol=1e-6, atol=1e-12)
    for wrong in (layer + 1, layer - 1):
      if wrong >= 0:
        assert not np.allclose(got, base * megatron_scale(wrong), rtol=1e-3)


def test_named_group_dtype_foreign_and_sibling_bases():
  tree = {
    "blocks_3": {"w": jnp.zeros((64, 64), jnp.bfloat16), "v": jnp.zeros((64, 64))},
    "fc": [{"weight": jnp.zeros((8, 100)), "bias": jnp.zeros(8)} for _ in range(2)],
  }
  rules = {
    r"blocks_(?P<layer>\d+)/w": jaxinit.depth_rule("ones", lambda i: i + 0.5, group="layer"),
    r"blocks_(\d+)/v": jaxinit.depth_rule(jax.nn.initializers.ones, lambda i: -float(i)),
    r"fc/(\d+)/bias": jaxinit.depth_rule(jaxinit.torch_bias(), lambda i: 10.0 * (i + 1)),
  }
  new = jaxinit.reinit(tree, rules, KEY, layout="torch")
  assert new["blocks_3"]["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(new["blocks_3"]["w"], jnp.full((64, 64), 3.5, jnp.bfloat16))
  np.testing.assert_array_equal(new["blocks_3"]["v"], jnp.full((64, 64), -3.0))
  # torch_bias of fan_in 100 is U(+-0.1); times 10 (l + 1)
  for layer in range(2):
    b = new["fc"][layer]["bias"]
    ref = jaxinit.uniform(-0.1, 0.1)(jaxinit.leaf_key(KEY, f"fc/{layer}/bias"), (8,))
    np.testing.assert_allclose(b, ref * 10.0 * (layer + 1), rtol=1e-6)
    assert new["fc"][layer]["weight"] is tree["fc"][layer]["weight"]


def test_jit_abstract_path_stable_and_sharded():
  tree = _model(4, 32)
  eager = jaxinit.reinit(tree, {PATTERN: RULE}, KEY)
  jitted = jax.jit(lambda t, k: jaxinit.reinit(t, {PATTERN: RULE}, k))(tree, KEY)
  abstract = jaxinit.reinit(jax.eval_shape(lambda: tree), {PATTERN: RULE}, KEY)
  bigger = {**_model(4, 32), "extra": jnp.zeros((3, 3))}
  more = jaxinit.reinit(bigger, {PATTERN: RULE, "extra": jaxinit.normal()}, KEY)
  mesh = jax.make_mesh((2, 4), ("a", "b"))
  sharded = jaxinit.reinit(tree, {PATTERN: RULE}, KEY, shardings=NamedSharding(mesh, P("a", "b")))
  with jax.set_mesh(mesh):  # Explicit axes: the draw runs under auto_axes, multiplier included
    explicit = jaxinit.reinit(
      tree, {PATTERN: RULE}, KEY, shardings=NamedSharding(mesh, P("a", "b"))
    )
  for other in (jitted, abstract, more, sharded, explicit):
    for a, b in zip(
      jax.tree.leaves(eager), jax.tree.leaves({"layers": other["layers"]}), strict=True
    ):
      np.testing.assert_array_equal(a, b)
  w = sharded["layers"][2]["mlp"]["down"]["kernel"]
  assert w.sharding.is_equivalent_to(NamedSharding(mesh, P("a", "b")), 2)


class _Stack(nn.Module):
  @nn.compact
  def __call__(self, x):
    for i in range(3):
      x = nn.Dense(16, name=f"blocks_{i}")(x)
    return x


def test_init_linen_and_boxes():
  rules = {r"params/blocks_(\d+)/kernel": jaxinit.depth_rule("lecun_normal", lambda i: 2.0**-i)}
  v = jaxinit.init_linen(_Stack(), KEY, jnp.ones((1, 16)), rules=rules)
  plain = jaxinit.reinit(_Stack().init(KEY, jnp.ones((1, 16))), rules, KEY)
  for i in range(3):
    np.testing.assert_array_equal(
      v["params"][f"blocks_{i}"]["kernel"], plain["params"][f"blocks_{i}"]["kernel"]
    )
  k0, k2 = (v["params"][f"blocks_{i}"]["kernel"] for i in (0, 2))
  assert float(jnp.std(k0) / jnp.std(k2)) == pytest.approx(4.0, rel=0.3)


def test_equality_hash_pickle_repr():
  a = jaxinit.depth_rule(jaxinit.normal(0.02), megatron_scale)
  b = jaxinit.depth_rule({"name": "normal", "stddev": 0.02}, megatron_scale)
  assert a == b and hash(a) == hash(b)
  assert a != jaxinit.depth_rule(jaxinit.normal(0.02), megatron_scale, group=2)
  assert pickle.loads(pickle.dumps(a)) == a
  assert repr(a) == "depth_rule(normal(stddev=0.02), scale=<function megatron_scale>)"
  with pytest.raises(TypeError, match=r"^jaxinit\.depth_rule: this rule draws each layer"):
    a(KEY, (2, 2))


@pytest.mark.parametrize(
  "rules,exc,pattern",
  [
    (
      {"layers/0/mlp/down/kernel": RULE},
      ValueError,
      r"reads the layer index from group 1, but the pattern has no such group",
    ),
    (
      {r"layers/(?P<i>\d+)/mlp/down/kernel": RULE},  # group 1 exists: fine; a named one does not
      None,
      None,
    ),
    (
      {r"layers/(\d+)/mlp/down/kernel": jaxinit.depth_rule("normal", abs, group="depth")},
      ValueError,
      r"group 'depth', but the pattern has no such group",
    ),
    (
      {r"(layers)/\d+/mlp/down/kernel": RULE},
      ValueError,
      r"matched 'layers/0/mlp/down/kernel', but its group 1 captured 'layers', not a layer index",
    ),
    (
      {PATTERN: jaxinit.depth_rule("normal", lambda i: 1 / (i - 2))},
      ValueError,
      r"matched 'layers/2/mlp/down/kernel' \(layer 2\), and its scale\(2\) raised "
      r"ZeroDivisionError",
    ),
    (
      {PATTERN: jaxinit.depth_rule("normal", lambda i: "big")},
      TypeError,
      r"\(layer 0\): scale\(0\) returned 'big'; it must return a real number",
    ),
    (
      {PATTERN: jaxinit.depth_rule("normal", lambda i: float("inf"))},
      ValueError,
      r"scale\(0\) returned inf; it must be finite",
    ),
    (
      {PATTERN: jaxinit.depth_rule(jaxinit.orthogonal(), lambda i: 1.0), "bias": None},
      ValueError,
      r"the rule 'bias' matches no parameter path",
    ),
  ],
)
def test_errors_before_anything_is_drawn(rules, exc, pattern):
  tree = _model(4, 8)
  snapshot = copy.deepcopy(jax.tree.map(np.asarray, tree))
  if exc is None:
    jaxinit.reinit(tree, rules, KEY)
    return
  with pytest.raises(exc, match=rf"^jaxinit\.reinit: .*{pattern}"):
    jaxinit.reinit(tree, rules, KEY)
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(snapshot), strict=True):
    np.testing.assert_array_equal(a, b)
