"""jaxinit.lsuv with a sharded batch (issue 14, item 2), on the 8 simulated CPU devices.

The same LSUV run three ways: the batch unsharded on one device (the reference); the batch
sharded over an 8-device data-parallel mesh axis, parameters replicated; and a 4 x 2 mesh with
the batch over 'data' and the kernels (and biases) sharded over 'model' (tensor-parallel).
Each eagerly and under ``jax.jit``. The scales (from the LSUVReport) and the parameters must
equal the single-device ones to 1e-5 relative (the issue's bar; only the order of the float32
sums differs) and the exact ones (the same LSUV in float64) to 1e-5, the parameters must keep
their shardings, and every layer's statistics must be global: on a batch whose halves have
different variances, each data shard sees one variance, and the scale must be the one of the
whole batch, computed here from the definition in float64.

Measured (this machine): MLP, sharded vs single device 1.2e-6 (dp) and 1.5e-6 (tp); conv
net 1.15e-5 (dp) and 1.22e-5 (tp), because the single-device result itself is 1.17e-5 from
the exact one (one float32 reduction over a 65536-entry layer output), while the sharded ones
are within 1.5e-6 of it: that case is an expected failure, with the fix in lsuv.py.

The meshes have Auto axes. On a mesh with Explicit axes (``jax.make_mesh``'s default) LSUV
fails at trace time; that case is an expected failure below, with the fix.
Multi-process LSUV (2 processes x 4 devices) is in ``test_multiprocess.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _lsuv_models import LinenMLP, ResNet, fast_init
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinit

AUTO = jax.sharding.AxisType.Auto
MESH_DP = jax.make_mesh((8,), ("data",), axis_types=(AUTO,))
MESH_TP = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AUTO, AUTO))
RTOL = 1e-5  # issue 14: "equal the single-device scales to 1e-5 relative"
KEY = jax.random.key(3)


def _batch(shape, seed=1, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


# model name -> (module, batch, lsuv keyword arguments). The MLP has biases; the conv net has
# BatchNorm (inference mode) and residual connections. The orthonormal redraw (key) is
# compared with the single device separately: in float64 it draws other numbers.
MODELS = {
  "mlp": lambda: (LinenMLP(), _batch((128, 16), scale=3.0), {}),
  "conv": lambda: (ResNet(), _batch((64, 8, 8, 3)), {"model_kwargs": {"train": False}}),
}


@functools.cache
def _case(name):
  """The model, its variables and batch on one device, the single-device LSUV result, and the
  exact one: the same LSUV in float64 (x64), to which float32 rounding is compared."""
  model, x, kwargs = MODELS[name]()
  variables = fast_init(model, x)
  new, report = jaxinit.lsuv(model, variables, x, **kwargs)
  with jax.enable_x64(True):
    to64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
    exact = jaxinit.lsuv(model, jax.tree.map(to64, variables), to64(x), **kwargs)
    exact = jax.tree.map(np.asarray, exact)
  return model, variables, x, kwargs, (new, report), exact


def _param_spec(path, leaf) -> P:
  """Tensor-parallel: the output-feature axis of kernels and biases over 'model'."""
  name = getattr(path[-1], "key", "")
  if name == "kernel" or (name == "bias" and "BatchNorm" not in jax.tree_util.keystr(path)):
    return P(*([None] * (leaf.ndim - 1)), "model")
  return P()


def _place(layout, variables, x):
  """(variables, batch) placed for ``layout``: 'dp' or 'tp'."""
  mesh = MESH_DP if layout == "dp" else MESH_TP
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  if layout == "dp":
    return jax.device_put(variables, NamedSharding(mesh, P())), xs
  specs = {
    k: jax.tree_util.tree_map_with_path(_param_spec, v) if k == "params" else None
    for k, v in variables.items()
  }
  shardings = {
    k: jax.tree.map(lambda s: NamedSharding(mesh, s), specs[k], is_leaf=lambda s: isinstance(s, P))
    if specs[k] is not None
    else NamedSharding(mesh, P())
    for k in variables
  }
  return jax.device_put(variables, shardings), xs


def _run(model, variables, x, kwargs, mode):
  if mode == "eager":
    return jaxinit.lsuv(model, variables, x, **kwargs)
  return jax.jit(lambda v, x: jaxinit.lsuv(model, v, x, **kwargs))(variables, x)


def _rel_diffs(new, ref, report, ref_report) -> tuple[float, float]:
  """Max relative difference of the scales, and of the parameters (per leaf: max |a - b| over
  max |b|, so an entry near 0 does not divide by ~0)."""
  s, s0 = np.asarray(report.scale, np.float64), np.asarray(ref_report.scale, np.float64)
  d_scale = float(np.max(np.abs(s / s0 - 1)))
  d_params = max(
    float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))
    for a, b in zip(
      jax.tree.leaves(new), jax.tree.leaves(jax.tree.map(np.float64, ref)), strict=True
    )
  )
  return d_scale, d_params


def _sharding_changes(new, old) -> list[str]:
  """Leaves whose output sharding is not the input's."""
  out = []
  for path, a in jax.tree_util.tree_leaves_with_path(new):
    b = functools.reduce(lambda t, k: t[k.key], path, old)
    if not a.sharding.is_equivalent_to(b.sharding, a.ndim):
      out.append(f"{jax.tree_util.keystr(path)}: {b.sharding.spec} -> {a.sharding.spec}")  # type: ignore[attr-defined]
  return out


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("layout", ["dp", "tp"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_sharded_batch_gives_the_single_device_result(name, layout, mode):
  model, variables, x, kwargs, (ref, ref_report), (exact, exact_report) = _case(name)
  vs, xs = _place(layout, variables, x)
  assert len(xs.sharding.device_set) == 8 and xs.addressable_shards[0].data.shape[0] == (
    x.shape[0] // (8 if layout == "dp" else 4)
  )
  new, report = _run(model, vs, xs, kwargs, mode)
  np.testing.assert_array_equal(report.status, ref_report.status)
  assert bool(report.converged.all())
  assert _sharding_changes(new, vs) == []  # the parameters keep their shardings
  d_single = _rel_diffs(new, ref, report, ref_report)
  d_exact = _rel_diffs(new, exact, report, exact_report)
  d_ref = _rel_diffs(ref, exact, ref_report, exact_report)
  print(
    f"{name} {layout} {mode}: max rel diff (scales, params) vs single device "
    f"{d_single[0]:.2e}, {d_single[1]:.2e}; vs exact {d_exact[0]:.2e}, {d_exact[1]:.2e} "
    f"(single device vs exact {d_ref[0]:.2e}, {d_ref[1]:.2e})"
  )
  # the sharded run is as close to the exact (float64) LSUV as the issue asks
  assert max(d_exact) <= RTOL, d_exact
  assert max(d_single) <= RTOL, d_single


@pytest.mark.parametrize("layout", ["dp", "tp"])
def test_orthonormal_redraw_with_a_sharded_batch(layout):
  """With a key, every weight is first redrawn (one Gaussian draw, batched QR): the same
  matrices whatever the batch's and the parameters' shardings, and the parameters keep their
  shardings."""
  model, variables, x, _, _, _ = _case("mlp")
  ref, ref_report = jaxinit.lsuv(model, variables, x, key=KEY)
  vs, xs = _place(layout, variables, x)
  new, report = jaxinit.lsuv(model, vs, xs, key=KEY)
  d_scale, d_params = _rel_diffs(new, ref, report, ref_report)
  print(f"mlp {layout} eager, key: max rel diff scales {d_scale:.2e}, params {d_params:.2e}")
  assert d_scale <= RTOL and d_params <= RTOL, (d_scale, d_params)
  changes = _sharding_changes(new, vs)
  assert changes == []


@pytest.mark.xfail(
  strict=True,
  raises=Exception,
  reason="on a mesh with Explicit axes, jaxinit/_src/lsuv.py _raw_moments slices the first "
  "entry of the layer output (lax.slice to shape (1, ..., 1)), a ShardingTypeError on a "
  "dimension sharded over 'data' (fix: run LSUV's traced computation under "
  "jax.sharding.auto_axes / on the mesh with Auto axes)",
)
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_explicit_axes_mesh(mode):
  model, variables, x, kwargs, (ref, ref_report), _ = _case("mlp")
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  new, report = _run(model, vs, xs, kwargs, mode)
  d_scale, d_params = _rel_diffs(new, ref, report, ref_report)
  assert d_scale <= RTOL and d_params <= RTOL, (d_scale, d_params)


# ---------------------------------------------------------------------------
# Global statistics: each shard alone would give another scale.
# ---------------------------------------------------------------------------


def _apply(p, x):
  return jax.nn.relu(x @ p["w1"]) @ p["w2"]


def _expected_scales(p, x, tol):
  """LSUV's scales from its definition, in float64: per layer in order, the output variance
  over all entries of the whole batch v, and s = sqrt(1 / v) unless |v - 1| < tol (no bias)."""
  w1, w2 = (np.asarray(p[k], np.float64) for k in ("w1", "w2"))
  x = np.asarray(x, np.float64)
  v1 = np.var(x @ w1)
  s1 = 1.0 if abs(v1 - 1) < tol else 1 / np.sqrt(v1)
  v2 = np.var(np.maximum(x @ (s1 * w1), 0) @ w2)
  s2 = 1.0 if abs(v2 - 1) < tol else 1 / np.sqrt(v2)
  return np.array([v1, v2]), np.array([s1, s2])


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_statistics_are_global_not_per_shard(mode):
  rng = np.random.default_rng(5)
  # rows 0-31 have standard deviation 1, rows 32-63 have 3: each of the 8 data shards
  # (8 rows) sees one of the two, the batch a mixture (variance 5)
  x = np.concatenate([rng.standard_normal((32, 16)), 3 * rng.standard_normal((32, 16))])
  p = {
    "w1": jnp.asarray(rng.standard_normal((16, 32)) / 4, jnp.float32),
    "w2": jnp.asarray(rng.standard_normal((32, 8)) / 4, jnp.float32),
  }
  x = jnp.asarray(x, jnp.float32)
  xs = jax.device_put(x, NamedSharding(MESH_DP, P("data")))
  ps = jax.device_put(p, NamedSharding(MESH_DP, P()))
  tol = 0.1
  var, scale = _expected_scales(p, x, tol)
  # the check can tell: one shard alone (either half) gives a scale far from the global one
  for shard in (x[:8], x[-8:]):
    _, s_shard = _expected_scales(p, shard, tol)
    assert abs(s_shard[0] / scale[0] - 1) > 0.2, (s_shard, scale)
  run = jaxinit.lsuv if mode == "eager" else jax.jit(jaxinit.lsuv, static_argnums=0)
  new, report = run(_apply, ps, xs)
  np.testing.assert_allclose(report.var_before, var, rtol=RTOL)
  np.testing.assert_allclose(report.scale, scale, rtol=RTOL)
  np.testing.assert_allclose(new["w1"], np.asarray(p["w1"]) * scale[0], rtol=RTOL)
  np.testing.assert_allclose(new["w2"], np.asarray(p["w2"]) * scale[1], rtol=RTOL)
