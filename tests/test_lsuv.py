"""jaxinit.lsuv on real Flax linen and nnx models and on pure functions.

Every variance check measures the layer outputs independently of the LSUV
report and of jaxinit's layer discovery: through Flax's own method
interception (linen) or through the outputs the models record in ``taps``
(nnx, pure functions, see _lsuv_models.py).
"""

import collections
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _lsuv_models import (
  LinenMLP,
  NnxConvNet,
  NnxMLP,
  NnxTransformer,
  OutOfOrder,
  ResNet,
  ScanMLP,
  Tied,
  fast_init,
  linen_layer_outputs,
  np_init,
  pure_apply,
  pure_init,
)
from flax import linen as nn
from flax import nnx

import jaxinit
from jaxinit import testing
from jaxinit._src.lsuv import STATUS

KEY = jax.random.key(0)
TOL = 0.1


def _sd(x):
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _init(model, x, seed=0):
  return fast_init(model, x, seed)


def _batch(shape, seed=1, scale=1.0):
  # numpy draws: an eager jax.random draw compiles a program per shape (slow on CPU)
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def _tokens(shape, vocab, seed=7):
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


def _variances(outs):
  return np.array([np.var(np.asarray(o, np.float64)) for o in outs])


def _assert_on_target(outs, target=1.0, tol=TOL):
  v = _variances(outs)
  assert np.all(np.abs(v - target) < tol), f"output variances {np.round(v, 4)}, target {target}"
  return v


def _copy(tree):
  return jax.tree_util.tree_map(np.array, tree)


def _assert_same(a, b):
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def _nnx_taps(model, x):
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, x):
    taps = []
    nnx.merge(graphdef, state)(x, taps=taps)
    return taps

  return run(state, x)


@jax.jit
def _pure_taps(params, x):
  taps = []
  pure_apply(params, x, taps=taps)
  return taps


# ---------------------------------------------------------------------------
# Every processed layer ends on target, in the three model styles.
# ---------------------------------------------------------------------------


def test_linen_mlp_every_layer_on_target_eager_and_jit():
  model, x = LinenMLP(), _batch((128, 16), scale=3.0)
  variables = _init(model, x)
  before = _copy(variables)
  new, report = jaxinit.lsuv(model, variables, x)
  _assert_same(variables, before)  # the caller's variables are not modified
  assert report.paths == tuple(f"Dense_{i}/kernel" for i in range(4))
  assert report.bias_paths == tuple(f"Dense_{i}/bias" for i in range(4))
  v = _assert_on_target(linen_layer_outputs(model, new, x))
  np.testing.assert_allclose(report.var_after, v, rtol=1e-4)
  # jit and eager agree
  new_jit, report_jit = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x))(variables, x)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new, new_jit)
  np.testing.assert_allclose(report.scale, report_jit.scale, rtol=1e-6)
  # only kernels change, each by the reported scale
  for i in range(4):
    np.testing.assert_array_equal(
      new["params"][f"Dense_{i}"]["bias"], variables["params"][f"Dense_{i}"]["bias"]
    )
    np.testing.assert_allclose(
      new["params"][f"Dense_{i}"]["kernel"],
      variables["params"][f"Dense_{i}"]["kernel"] * report.scale[i],
      rtol=1e-6,
    )


def test_nnx_mlp_updates_in_place():
  model = NnxMLP(rngs=nnx.Rngs(0))
  x = _batch((128, 16))
  kernel0 = np.array(model.layers[1].kernel[...])
  report = jaxinit.lsuv(model, x, key=jax.random.key(3))
  assert isinstance(report, jaxinit.LSUVReport)
  assert report.paths == tuple(f"layers/{i}/kernel" for i in range(4))
  assert not np.allclose(model.layers[1].kernel[...], kernel0)
  v = _assert_on_target(_nnx_taps(model, x))
  np.testing.assert_allclose(report.var_after, v, rtol=1e-4)


def test_pure_function_model_orthonormal_redraw():
  params, x = pure_init(), _batch((128, 16, 8))
  new, report = jaxinit.lsuv(pure_apply, params, x, key=jax.random.key(5))
  _assert_on_target(_pure_taps(new, x))
  assert report.paths == ("conv/w", "proj/w", "mix/w", "out/w")
  # Redrawn orthonormal, then scaled: W / s is orthonormal as the map it applies.
  s = {p: float(report.scale[i]) for i, p in enumerate(report.paths)}
  testing.assert_orthonormal(new["proj"]["w"].T / s["proj/w"], atol=1e-5)  # (out, in): W @ x
  testing.assert_orthonormal(new["mix"]["w"] / s["mix/w"], batch_axis=(0,), atol=1e-5)
  testing.assert_orthonormal(new["out"]["w"] / s["out/w"], atol=1e-5)
  # conv (out, in/groups, width): the matrix (in/groups * width, out)
  conv = np.transpose(np.asarray(new["conv"]["w"]), (1, 2, 0)).reshape(6, 8)
  testing.assert_orthonormal(conv / s["conv/w"], atol=1e-5)
  # same key, same result, bit for bit; another key, other weights
  again, _ = jaxinit.lsuv(pure_apply, params, x, key=jax.random.key(5))
  _assert_same(new, again)
  other, _ = jaxinit.lsuv(pure_apply, params, x, key=jax.random.key(6))
  assert not np.allclose(other["proj"]["w"], new["proj"]["w"])


# ---------------------------------------------------------------------------
# Residual nets, BatchNorm, conv, attention.
# ---------------------------------------------------------------------------


def test_linen_resnet_with_batchnorm_keeps_batch_stats():
  model, x = ResNet(), _batch((64, 8, 8, 3))
  variables = _init(model, x)
  new, report = jaxinit.lsuv(model, variables, x, model_kwargs={"train": False})
  assert len(report) == 7
  _assert_on_target(linen_layer_outputs(model, new, x, train=False))
  _assert_same(new["batch_stats"], variables["batch_stats"])
  for name in ("BatchNorm_0",):
    _assert_same(new["params"][name], variables["params"][name])  # BN scales: not layers
  # In training mode BatchNorm mutates its statistics: LSUV discards the mutation.
  new_t, _ = jaxinit.lsuv(
    model, variables, x, model_kwargs={"train": True, "mutable": ["batch_stats"]}
  )
  _assert_same(new_t["batch_stats"], variables["batch_stats"])
  _assert_on_target(linen_layer_outputs(model, new_t, x, train=True, mutable=["batch_stats"]))


def test_nnx_convnet_residual_depthwise_batchnorm():
  model = NnxConvNet(rngs=nnx.Rngs(1))
  model.eval()
  x = _batch((64, 8, 8, 3), scale=2.0)
  stats = _copy(nnx.state(model, nnx.BatchStat))
  report = jaxinit.lsuv(model, x, key=jax.random.key(4))
  assert report.paths == ("stem/kernel", "conv/kernel", "depthwise/kernel", "head/kernel")
  _assert_on_target(_nnx_taps(model, x))
  _assert_same(nnx.state(model, nnx.BatchStat), stats)


def test_nnx_transformer_block():
  model = NnxTransformer(rngs=nnx.Rngs(2))
  tokens = _tokens((64, 12), 40)
  embed, ln = np.array(model.embed.embedding[...]), np.array(model.ln1.scale[...])
  report = jaxinit.lsuv(model, tokens)
  assert report.paths == (
    "attn/query/kernel",
    "attn/key/kernel",
    "attn/value/kernel",
    "attn/out/kernel",
    "up/kernel",
    "down/kernel",
    "head/kernel",
  )
  _assert_on_target(_nnx_taps(model, tokens))
  np.testing.assert_array_equal(model.embed.embedding[...], embed)  # embeddings: not layers
  np.testing.assert_array_equal(model.ln1.scale[...], ln)  # norm scales: not layers


def test_execution_order_not_parameter_order():
  """Parameters sort as a_out, m_mid, z_in; the model calls z, m, a. Processing them in
  name order would normalize a_out before its input z_in changes."""
  model, x = OutOfOrder(), _batch((128, 16), scale=4.0)
  new, report = jaxinit.lsuv(model, _init(model, x), x)
  assert report.paths == ("z_in/kernel", "m_mid/kernel", "a_out/kernel")
  _assert_on_target(linen_layer_outputs(model, new, x))


def test_scan_stacked_layers_each_step_on_target():
  model, x = ScanMLP(), _batch((128, 16))
  variables = _init(model, x)
  new, report = jaxinit.lsuv(model, variables, x)
  p = new["params"]
  stack = p["ScanCheckpointScanBlock_0"]["Dense_0"]
  outs = [x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]]
  h = outs[0]
  for t in range(4):
    outs.append(h @ stack["kernel"][t] + stack["bias"][t])
    h = jax.nn.relu(outs[-1])
  outs.append(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  _assert_on_target(outs)
  # each slice of the stacked kernel got its own scale
  old = variables["params"]["ScanCheckpointScanBlock_0"]["Dense_0"]["kernel"]
  for t in range(4):
    np.testing.assert_allclose(stack["kernel"][t], old[t] * report.scale[1 + t], rtol=1e-6)


def test_tied_weights_are_scaled_once_at_first_use():
  model = Tied()
  tokens = _tokens((128, 8), 50)
  variables = _init(model, tokens)
  new, report = jaxinit.lsuv(model, variables, tokens)
  assert [STATUS[int(c)] for c in report.status] == ["ok", "tied", "tied"]
  assert report.tied_to == (None, 0, None)
  old_k, new_k = variables["params"]["Dense_0"]["kernel"], new["params"]["Dense_0"]["kernel"]
  np.testing.assert_allclose(new_k, old_k * report.scale[0], rtol=1e-6)
  # the embedding is looked up before it is used as the output projection: never scaled
  _assert_same(new["params"]["Embed_0"], variables["params"]["Embed_0"])
  first_use = linen_layer_outputs(model, new, tokens)[0]
  _assert_on_target([first_use])
  assert "tied to #0" in str(report)


# ---------------------------------------------------------------------------
# Options.
# ---------------------------------------------------------------------------


def test_iterate_mode_reproduces_the_reference_loop():
  """exact=False runs the paper's update; compare with the eager reference algorithm
  (a whole forward pass per try, the output read through the model's taps)."""
  params = pure_init(8)
  params["out"]["b"] = jnp.linspace(-1.0, 1.0, 5)  # biases make the update iterate

  x = _batch((128, 16, 8))
  new, report = jaxinit.lsuv(pure_apply, params, x, exact=False, tol=0.01, max_iters=10)
  # the reference: hook-style loop, re-running the whole model per try
  ref = jax.tree_util.tree_map(np.asarray, params)
  names = ["conv", "proj", "mix", "out"]
  scales = []
  for i, name in enumerate(names):
    s, tries = 1.0, 0
    while True:
      var = np.var(np.asarray(_pure_taps(ref, x)[i], np.float64))
      if abs(var - 1.0) < 0.01 or tries >= 10:
        break
      ref[name]["w"] = ref[name]["w"] / np.sqrt(var)
      s /= np.sqrt(var)
      tries += 1
    scales.append(s)
  np.testing.assert_allclose(report.scale, scales, rtol=1e-3)
  assert max(np.asarray(report.iters)) >= 2
  del new


def test_exact_mode_hits_the_target_with_biases():
  model, x = LinenMLP(), _batch((128, 16))
  new, report = jaxinit.lsuv(model, _init(model, x), x, target_var=2.0, tol=1e-3)
  v = _assert_on_target(linen_layer_outputs(model, new, x), target=2.0, tol=1e-3)
  assert np.all(np.asarray(report.iters) == 1)
  new_it, report_it = jaxinit.lsuv(model, _init(model, x), x, target_var=2.0, tol=0.05, exact=False)
  _assert_on_target(linen_layer_outputs(model, new_it, x), target=2.0, tol=0.05)
  assert np.max(np.asarray(report_it.iters)) > 1  # the paper's update needs several steps
  del v


def test_center_shifts_biases_after_scaling():
  model, x = LinenMLP(), _batch((256, 16), scale=2.0)
  variables = _init(model, x)
  new, report = jaxinit.lsuv(model, variables, x, center=True)
  outs = linen_layer_outputs(model, new, x)
  _assert_on_target(outs)
  for y in outs:  # every output unit has zero mean over the batch
    y = np.asarray(y, np.float64)
    assert np.max(np.abs(y.mean(axis=0))) < 1e-4 * y.std(), np.abs(y.mean(axis=0)).max()
  assert not np.allclose(new["params"]["Dense_1"]["bias"], variables["params"]["Dense_1"]["bias"])
  del report


def test_layer_selection():
  model, x = LinenMLP(), _batch((128, 16), scale=3.0)
  variables = _init(model, x)
  new, report = jaxinit.lsuv(model, variables, x, exclude=r"Dense_[02]/")
  assert [STATUS[int(c)] for c in report.status] == ["excluded", "ok", "excluded", "ok"]
  for name in ("Dense_0", "Dense_2"):
    _assert_same(new["params"][name], variables["params"][name])
  outs = linen_layer_outputs(model, new, x)
  _assert_on_target([outs[1], outs[3]])
  new2, report2 = jaxinit.lsuv(model, variables, x, layers=lambda path: path == "Dense_3/kernel")
  assert [STATUS[int(c)] for c in report2.status] == ["excluded"] * 3 + ["ok"]
  new3, _ = jaxinit.lsuv(model, variables, x, layers=["Dense_3"])
  _assert_same(new2, new3)


def test_bfloat16_model():
  model = nn.Sequential(
    [
      nn.Dense(32, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, kernel_init=np_init()),
      nn.relu,
      nn.Dense(32, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, kernel_init=np_init()),
    ]
  )
  x = _batch((128, 16)).astype(jnp.bfloat16)
  new, report = jaxinit.lsuv(model, _init(model, x), x, key=jax.random.key(1))
  assert new["params"]["layers_0"]["kernel"].dtype == jnp.bfloat16
  _assert_on_target(linen_layer_outputs(model, new, x))
  del report


# ---------------------------------------------------------------------------
# Cost: one forward pass, whatever the depth and the number of tries.
# ---------------------------------------------------------------------------


def _count(jaxpr, names=("dot_general", "conv_general_dilated")):
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name in names
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      n += _count(getattr(sub, "jaxpr", sub), names)
  return n


@pytest.mark.parametrize("depth", [3, 9])
def test_compute_does_not_grow_with_depth_times_tries(depth):
  model = LinenMLP(widths=(24,) * depth)
  x = _batch((64, 16))
  variables = _init(model, x)
  fwd = jax.make_jaxpr(model.apply)(variables, x)
  for exact in (True, False):
    ls = jax.make_jaxpr(
      lambda v, x, exact=exact: jaxinit.lsuv(model, v, x, exact=exact, max_iters=10, tol=1e-3)
    )(variables, x)
    # every matmul of the model once: tries never re-run a layer, let alone the model
    assert _count(ls.jaxpr) == _count(fwd.jaxpr) == depth
    assert _count(ls.jaxpr, ("while",)) == (0 if exact else depth)
  calls = []

  def apply(p, x):
    calls.append(1)
    return model.apply({"params": p}, x)

  jaxinit.lsuv(apply, variables["params"], x, exact=False, tol=1e-3)
  assert len(calls) == 1  # the model is traced once


@pytest.mark.parametrize("case", ["resnet", "tied", "scan", "center+iterate"])
def test_eager_pieces_and_jit_agree(case):
  """Eagerly, LSUV runs one compiled piece per layer (residual values cross pieces);
  under jit, one graph. Both compute the same thing."""
  model, kwargs, x = {
    "resnet": (ResNet(), {"model_kwargs": {"train": False}}, _batch((64, 8, 8, 3))),
    "tied": (Tied(), {}, _tokens((64, 8), 50)),
    "scan": (ScanMLP(), {"key": jax.random.key(3)}, _batch((64, 16))),
    "center+iterate": (LinenMLP(), {"center": True, "exact": False, "tol": 0.01}, _batch((64, 16))),
  }[case]
  variables = _init(model, x)
  eager, r1 = jaxinit.lsuv(model, variables, x, **kwargs)
  jitted, r2 = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x, **kwargs))(variables, x)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), eager, jitted
  )
  np.testing.assert_array_equal(r1.status, r2.status)
  np.testing.assert_array_equal(r1.iters, r2.iters)
  np.testing.assert_allclose(r1.var_after, r2.var_after, rtol=1e-5)


@pytest.mark.parametrize("with_key", [False, True])
def test_eager_and_jit_are_bit_identical_on_an_mlp(with_key):
  """The eager pieces run the same operations as the single graph: same bits."""
  model, x = LinenMLP(widths=(48, 32, 32, 32, 64, 10)), _batch((96, 20), scale=2.0)
  variables = _init(model, x)
  key = jax.random.key(7) if with_key else None
  eager, r1 = jaxinit.lsuv(model, variables, x, key=key)
  jitted, r2 = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x, key=key))(variables, x)
  _assert_same(eager, jitted)
  np.testing.assert_array_equal(r1.scale, r2.scale)
  # the report's arithmetic runs in numpy eagerly, in XLA under jit: rounding may differ
  np.testing.assert_allclose(r1.var_after, r2.var_after, rtol=1e-6)


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.float64])
def test_under_x64(param_dtype):
  """x64 on: a float32 model stays float32 (Python constants must not promote it), a
  float64 model is normalized and reported in float64."""
  with jax.enable_x64(True):
    model, x = LinenMLP(widths=(32, 32, 10)), _batch((64, 16))
    variables = jax.tree_util.tree_map(lambda a: a.astype(param_dtype), _init(model, x))
    x = x.astype(param_dtype)
    for run in (jaxinit.lsuv, jax.jit(jaxinit.lsuv, static_argnums=0)):
      new, report = run(model, variables, x, key=jax.random.key(0))
      assert {a.dtype for a in jax.tree_util.tree_leaves(new)} == {jnp.dtype(param_dtype)}
      assert report.scale.dtype == param_dtype
      v = _assert_on_target(linen_layer_outputs(model, new, x))
      if param_dtype == jnp.float64:  # the exact root: on target to float64 rounding
        np.testing.assert_allclose(v, 1.0, atol=1e-12)
        w = np.asarray(new["params"]["Dense_1"]["kernel"]) / float(report.scale[1])
        np.testing.assert_allclose(w.T @ w, np.eye(32), atol=1e-13)


def test_repeated_layers_compile_once_and_never_mix_up_models():
  from jaxinit._src import lsuv as lsuv_lib

  lsuv_lib._PIECES.clear()
  x = _batch((64, 16))
  model = LinenMLP(widths=(24,) * 9)
  jaxinit.lsuv(model, _init(model, x), x)
  segments = [k for k in lsuv_lib._PIECES if k[0] == "segment"]
  assert len(segments) == 3  # first layer, the seven identical ones, the last
  # The orthonormal redraw: one program draws every matrix (one QR per matrix shape);
  # placing them compiles once per distinct layer: 16x24, then eight 24x24.
  new, _ = jaxinit.lsuv(model, _init(model, x), x, key=jax.random.key(0))
  kinds = collections.Counter(k[0] for k in lsuv_lib._PIECES)
  assert (kinds["redraw"], kinds["place"], kinds["segment"]) == (1, 2, 3)
  _assert_on_target(linen_layer_outputs(model, new, x))
  for i in range(9):
    w = np.asarray(new["params"][f"Dense_{i}"]["kernel"], np.float64)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T  # 16x24: orthonormal rows
    # LSUV scaled the orthonormal draw by one factor
    np.testing.assert_allclose(gram / gram[0, 0], np.eye(min(w.shape)), atol=1e-5)
  ks = [np.asarray(new["params"][f"Dense_{i}"]["kernel"]) for i in range(1, 9)]
  dots = [
    abs(np.sum(a * b)) / np.sqrt(np.sum(a * a) * np.sum(b * b)) for a, b in itertools.pairwise(ks)
  ]
  assert max(dots) < 0.2  # each layer its own matrix: independent draws give sd 1/24

  # Same shapes, another activation: other pieces, and each model ends on target.
  class TanhMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(8):
        x = jnp.tanh(nn.Dense(24, kernel_init=np_init(), bias_init=np_init(0.3))(x))
      return nn.Dense(24, kernel_init=np_init(), bias_init=np_init(0.3))(x)

  tanh = TanhMLP()
  new, _ = jaxinit.lsuv(tanh, _init(tanh, x), x)
  _assert_on_target(linen_layer_outputs(tanh, new, x))
  new, _ = jaxinit.lsuv(model, _init(model, x, seed=1), x)
  _assert_on_target(linen_layer_outputs(model, new, x))


# ---------------------------------------------------------------------------
# Bad cases: zero variance, NaN, tiny batches, no layers, bad options.
# ---------------------------------------------------------------------------


def test_zero_variance_layer_is_skipped_not_blown_up():
  model, x = LinenMLP(), _batch((128, 16))
  variables = _init(model, x)
  # ReLU after a bias of -100 is zero for every example: the next layer sees zeros.
  variables["params"]["Dense_0"]["bias"] = jnp.full((32,), -100.0)
  with pytest.warns(
    UserWarning,
    match=r"skipped 1 layer\(s\) whose output variance is ~0.*"
    r"#1 Dense_1/kernel",
  ):
    new, report = jaxinit.lsuv(model, variables, x)
  assert STATUS[int(report.status[1])] == "skipped: variance ~0"
  _assert_same(new["params"]["Dense_1"], variables["params"]["Dense_1"])
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(new))
  assert float(report.scale[1]) == 1.0


def test_all_zero_batch():
  model, x = LinenMLP(widths=(32, 32)), jnp.zeros((64, 16))
  variables = _init(model, x)
  variables["params"]["Dense_0"]["bias"] = jnp.zeros(32)
  with pytest.warns(UserWarning, match="skipped 2 layer"):
    new, _ = jaxinit.lsuv(model, variables, x, key=jax.random.key(0))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(new))


def test_nan_in_batch_leaves_parameters_untouched():
  model, x = LinenMLP(), _batch((64, 16))
  variables = _init(model, x)
  before = _copy(variables)
  bad = x.at[3, 2].set(jnp.nan)
  with pytest.raises(
    FloatingPointError,
    match=r"jaxinit\.lsuv: the batch contains NaN or inf; "
    r"the parameters were left unchanged",
  ):
    jaxinit.lsuv(model, variables, bad)
  _assert_same(variables, before)
  nnx_model = NnxMLP(rngs=nnx.Rngs(0))
  state = _copy(nnx.state(nnx_model))
  with pytest.raises(FloatingPointError, match="NaN or inf"):
    jaxinit.lsuv(nnx_model, bad, key=jax.random.key(0))
  _assert_same(nnx.state(nnx_model), state)  # in-place update only on success


def test_nan_in_activations_names_the_layer():
  params = pure_init()

  def apply(p, x):  # log of a negative activation after the second layer
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ p["proj"]["w"].T)
    return jnp.log(h - 2.0) @ p["out"]["w"][:32]

  with pytest.raises(FloatingPointError, match=re.escape("layer #1 (out/w) is NaN or inf")):
    jaxinit.lsuv(apply, params, _batch((64, 128)))
  with pytest.raises(FloatingPointError, match=re.escape("layer #0 (proj/w) is NaN or inf")):
    bad = jax.tree_util.tree_map(lambda a: a, params)
    bad["proj"]["w"] = bad["proj"]["w"].at[0, 0].set(jnp.inf)
    jaxinit.lsuv(apply, bad, _batch((64, 128)))


def test_nan_under_jit_returns_the_original_parameters():
  model, x = LinenMLP(), _batch((64, 16))
  variables = _init(model, x)
  new, report = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x, key=jax.random.key(1)))(
    variables, x.at[0, 0].set(jnp.inf)
  )
  assert not bool(report.ok)
  _assert_same(new, variables)
  with pytest.raises(FloatingPointError, match="the batch contains NaN or inf"):
    report.check()


def test_small_batches():
  model = LinenMLP()
  with pytest.raises(ValueError, match=r"jaxinit\.lsuv: the batch holds 1 example"):
    x = _batch((1, 16))
    jaxinit.lsuv(model, _init(model, x), x)
  x = _batch((8, 16))
  with pytest.warns(UserWarning, match="the batch holds only 8 examples"):
    jaxinit.lsuv(model, _init(model, x), x)


def test_no_layers_is_a_clear_error():
  with pytest.raises(ValueError, match=r"jaxinit\.lsuv: found no linear layers"):
    jaxinit.lsuv(lambda p, x: jnp.tanh(x * p["scale"]), {"scale": jnp.ones(4)}, _batch((32, 4)))


def test_argument_errors():
  model, x = LinenMLP(), _batch((32, 16))
  v = _init(model, x)
  cases = [
    (dict(tol=0.0), ValueError, r"`tol` must be > 0, got 0.0"),
    (dict(max_iters=0), ValueError, r"`max_iters` must be >= 1, got 0"),
    (dict(target_var=-1), ValueError, r"`target_var` must be > 0"),
    (dict(exact="yes"), TypeError, r"`exact` must be True or False"),
    (dict(center=1), TypeError, r"`center` must be True or False"),
    (dict(layers=3), TypeError, r"`layers` must be a regular expression"),
    (dict(exclude="Dense_(("), ValueError, r"`exclude` pattern 'Dense_\(\(' is not a valid"),
    (dict(key=3), TypeError, r"`key` must be a jax.random.key"),
    (dict(model_kwargs=["train"]), TypeError, r"`model_kwargs` must be a dict"),
    # a selection that matches no layer is a typo, not a silent no-op
    (
      dict(layers="Dnese"),
      ValueError,
      r"`layers`='Dnese' matches no layer; the layers' "
      r"weight paths are: Dense_0/kernel, ",
    ),
    (dict(exclude=["nothing", "here"]), ValueError, r"`exclude`=\['nothing', 'here'\] matches"),
  ]
  for kwargs, exc, msg in cases:
    with pytest.raises(exc, match=r"jaxinit\.lsuv: " + msg):
      jaxinit.lsuv(model, v, x, **kwargs)
  with pytest.raises(TypeError, match=r"linen module is called as jaxinit\.lsuv\(module, "):
    jaxinit.lsuv(model, x)
  with pytest.raises(TypeError, match=r"must be the variables dict returned by module\.init"):
    jaxinit.lsuv(model, v["params"], x)
  with pytest.raises(
    TypeError,
    match=r"got an array of shape \(32, 16\) \(did you pass the "
    r"batch before the variables\?\)",
  ):
    jaxinit.lsuv(model, x, v)
  with pytest.raises(TypeError, match=r"nnx module is called as jaxinit\.lsuv\(model, batch"):
    jaxinit.lsuv(NnxMLP(rngs=nnx.Rngs(0)), v, x)
  with pytest.raises(TypeError, match=r"function is called as jaxinit\.lsuv\(apply_fn, params"):
    jaxinit.lsuv(pure_apply, x)


# ---------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------


def test_report_is_a_pytree_and_prints_a_table():
  model, x = LinenMLP(), _batch((64, 16))
  new, report = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x))(_init(model, x), x)
  leaves, treedef = jax.tree_util.tree_flatten(report)
  assert len(leaves) == 6
  again = jax.tree_util.tree_unflatten(treedef, leaves)
  assert again.paths == report.paths
  text = str(report)
  assert text.splitlines()[0] == "LSUV: 4 layers, target variance 1 ± 0.1, exact solve"
  for path in report.paths:
    assert path in text
  assert [r["layer"] for r in report.rows()] == list(report.paths)
  assert report.rows()[1]["status"] == "ok"
  assert bool(report.converged.all())
  del new


# ---------------------------------------------------------------------------
# Inputs a dtype or the code cannot take (issue 13): one clear error, nothing changed.
# ---------------------------------------------------------------------------


def _two_layers(dtype=jnp.float32, scale=1.0, seed=3):
  r = np.random.default_rng(seed)
  params = {
    "w1": jnp.asarray(r.standard_normal((8, 16)) / np.sqrt(8), dtype),
    "b1": jnp.asarray(r.standard_normal(16) * 0.1, dtype),
    "w2": jnp.asarray(r.standard_normal((16, 4)) / 4, dtype),
  }
  x = jnp.asarray(r.standard_normal((64, 8)) * scale, dtype)
  return params, x


def _apply_two(p, x):
  return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def _limit(out_dtype, side):
  """The reachable variances, from their definition in lsuv_plan: the variance in the
  compute dtype (float32 here) and entries of its standard deviation in the output
  dtype, with a margin of 256."""
  fo, fc = jnp.finfo(out_dtype), jnp.finfo(jnp.float32)
  if side == "max":
    return min(float(fc.max), float(fo.max) ** 2) / 256
  return max(float(fc.tiny), float(fo.tiny) ** 2) * 256


@pytest.mark.parametrize(
  "target_var,dtype,side",
  [
    (1e38, jnp.float32, "max"),  # reachable in no float32 sum: was all-inf weights
    (1e300, jnp.float32, "max"),
    (1e-300, jnp.float32, "min"),  # would round to 0 in float32
    (1e9, jnp.float16, "max"),  # std 3e4: the entries a few std out overflow float16
  ],
)
def test_a_target_var_the_dtype_cannot_hold_is_refused(target_var, dtype, side):
  params, x = _two_layers(dtype)
  before = _copy(params)
  bound = "at most" if side == "max" else "at least"
  name = jnp.dtype(dtype).name
  with pytest.raises(
    ValueError,
    match=re.escape(
      f"jaxinit.lsuv: `target_var`={target_var!r} cannot be reached in {name}: layer #0 (w1)"
    )
    + ".* must be "
    + re.escape(f"{bound} {_limit(dtype, side):.4g} "),
  ):
    jaxinit.lsuv(_apply_two, params, x, target_var=target_var)
  _assert_same(params, before)


def test_a_refused_target_var_leaves_an_nnx_model_unchanged():
  model = NnxMLP(rngs=nnx.Rngs(0))
  state = _copy(nnx.state(model))
  with pytest.raises(ValueError, match=r"jaxinit\.lsuv: `target_var`=1e\+38 cannot be reached"):
    jaxinit.lsuv(model, _batch((64, 16)), target_var=1e38, key=jax.random.key(0))
  _assert_same(nnx.state(model), state)


def test_the_largest_reachable_target_var_is_reached():
  # Half the float32 limit: the output's sums of squares overflow float32, its entries do not.
  params, x = _two_layers()
  t = _limit(jnp.float32, "max") / 2
  new, report = jaxinit.lsuv(_apply_two, params, x, target_var=t, tol=1e-3 * t)
  assert [STATUS[int(c)] for c in report.status] == ["ok", "ok"]
  y1 = np.asarray(x, np.float64) @ np.asarray(new["w1"], np.float64) + np.asarray(new["b1"])
  np.testing.assert_allclose(np.var(y1), t, rtol=1e-3)


@pytest.mark.parametrize("exact,center", [(True, False), (False, False), (True, True)])
def test_finite_outputs_whose_squares_overflow_are_measured(exact, center):
  # A batch of magnitude 1e19: every layer-1 output is finite in float32, its square is
  # not. With a bias scaled alike (centered: its variance is removed) or a zero bias (else:
  # a bias of variance 0.01 * c^2 alone would exceed the target), the first layer's output
  # is c times the unscaled one, so its exact scale is the unscaled one divided by c (the
  # iteration may stop elsewhere within tol).
  params, x = _two_layers()
  if not center:
    params = {**params, "b1": jnp.zeros_like(params["b1"])}
  c = 1e19
  huge = {**params, "b1": params["b1"] * c}
  kw = dict(exact=exact, center=center, max_iters=50)
  _, ref = jaxinit.lsuv(_apply_two, params, x, **kw)
  new, report = jaxinit.lsuv(_apply_two, huge, x * c, **kw)
  assert report.error() is None
  assert STATUS[int(report.status[0])] == "ok"
  if exact:
    np.testing.assert_allclose(float(report.scale[0]) * c, float(ref.scale[0]), rtol=1e-5)
  y1 = (np.asarray(x, np.float64) * c) @ np.asarray(new["w1"], np.float64)
  y1 = y1 + np.asarray(new["b1"], np.float64)
  assert abs(np.var(y1) - 1.0) < TOL
  _, traced = jax.jit(lambda p, x: jaxinit.lsuv(_apply_two, p, x, **kw))(huge, x * c)
  np.testing.assert_allclose(traced.scale, report.scale, rtol=1e-5)
  np.testing.assert_array_equal(traced.status, report.status)


_NOT_ARRAYS = [
  ("params", "w2", "hello", "of type str ('hello')"),
  ("params", "w2", np.array([object()] * 3), "a numpy array of dtype object"),
  ("params", "w2", object(), "of type object"),
  ("params", "w2", 2**80, "a Python int of 81 bits, which does not fit in int32"),
  ("batch", "tokens", np.array(["a", "b"]), "a numpy array of dtype <U1"),
  ("batch", "tokens", "abc", "of type str ('abc')"),
]


@pytest.mark.parametrize("where,name,leaf,what", _NOT_ARRAYS, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("fn", ["lsuv", "find_layers"])
def test_non_array_leaves_are_one_clear_error(fn, where, name, leaf, what):
  params, x = _two_layers()
  batch = {"x": x}
  if where == "params":
    params = {**params, name: leaf}
  else:
    batch = {**batch, name: leaf}
  before = dict(params)
  label = "`params`" if where == "params" else "the batch"
  with pytest.raises(
    TypeError,
    match=re.escape(f"jaxinit.{fn}: {label} leaf {name!r} is {what}")
    + r".*; every leaf must be a numeric array",
  ):
    getattr(jaxinit, fn)(lambda p, b: _apply_two(p, b["x"]), params, batch)
  assert dict(params).keys() == before.keys()
  assert all(params[k] is before[k] for k in before)


@pytest.mark.parametrize(
  "arg,pattern,match",
  [
    ("layers", "w{99999999999}", r"pattern 'w\{99999999999\}' is not a valid regular expression"),
    ("exclude", ["w1", "a{4294967296}"], r"pattern 'a\{4294967296\}' is not a valid regular"),
    ("layers", "w" * 5000, r"pattern 'wwww.*' has 5000 characters, more than 4096"),
    ("exclude", "(" * 3, r"pattern '\(\(\(' is not a valid regular expression"),
  ],
  ids=["repeat", "repeat-in-list", "too-long", "unbalanced"],
)
def test_selection_patterns_python_cannot_build_are_refused(arg, pattern, match):
  params, x = _two_layers()
  with pytest.raises(ValueError, match=rf"jaxinit\.lsuv: `{arg}` " + match):
    jaxinit.lsuv(_apply_two, params, x, **{arg: pattern})
