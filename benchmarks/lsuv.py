"""LSUV benchmark: jaxinit.lsuv vs a naive JAX port vs PyTorch's hook-based LSUV.

Two models, as in the issue:
  (a) a 32-layer ReLU MLP (784 -> 512 x 31 -> 10), batch 256;
  (b) a 16-layer 3x3 ReLU conv net (3 -> 64, then 64 -> 64, 'SAME'), global average
      pooling and a 64 -> 10 classifier, batch 64 of 32x32x3 images.

For each model:
  * forward      one jitted forward pass (steady state);
  * lsuv         jaxinit.lsuv under the caller's jax.jit, steady state, with and
                 without the orthonormal redraw (key);
  * lsuv e2e     an eager jaxinit.lsuv call from cold caches: tracing, compilation and
                 the run (with key: the paper's orthonormal pre-init included);
  * naive JAX    what existing implementations do, ported: orthonormal pre-init, then
                 per layer a Python loop that re-runs a jitted full forward pass and
                 reads the layer's output variance back to the host, until
                 |var - 1| < 0.1 or 10 tries (compilation included);
  * PyTorch      a faithful hook-based LSUV (torch.nn.init.orthogonal_, a forward hook
                 on each Conv2d/Linear, a whole-model forward per try, tol 0.1 on the
                 variance, 10 tries), CPU, same architecture and batch.
Then the compile time of jaxinit.lsuv for MLPs of depth 8/16/32/64 (linear in depth).

Run:  PYTHONPATH=. python benchmarks/lsuv.py [--quick] [--skip-torch]
The machine's load average is printed: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import jaxinit
from jaxinit._src import lsuv as lsuv_lib

TOL, MAX_ITERS = 0.1, 10

# The two models of the issue, and tiny versions for smoke runs (benchmarks/accelerator.py
# uses these too).
CONFIGS = {
  "full": {
    "mlp": dict(depth=32, width=512, batch=256, d_in=784),
    "conv": dict(depth=16, channels=64, batch=64, hw=32),
  },
  "quick": {
    "mlp": dict(depth=4, width=64, batch=32, d_in=32),
    "conv": dict(depth=3, channels=8, batch=16, hw=8),
  },
}


# ---------------------------------------------------------------------------
# Models.
# ---------------------------------------------------------------------------


class MLP(nn.Module):
  depth: int
  width: int

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth - 1):
      x = nn.relu(nn.Dense(self.width)(x))
    return nn.Dense(10)(x)


class ConvNet(nn.Module):
  depth: int
  channels: int

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = nn.relu(nn.Conv(self.channels, (3, 3), padding="SAME")(x))
    return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def model_and_batch(kind, cfg):
  """The Flax model of ``kind`` ("mlp" or "conv") for ``cfg`` and its input batch (NHWC)."""
  rng = np.random.default_rng(1)
  if kind == "mlp":
    model = MLP(cfg["depth"], cfg["width"])
    x = rng.standard_normal((cfg["batch"], cfg["d_in"]))
  else:
    model = ConvNet(cfg["depth"], cfg["channels"])
    x = rng.standard_normal((cfg["batch"], cfg["hw"], cfg["hw"], 3))
  return model, jnp.asarray(x, jnp.float32)


def torch_batch(kind, x):
  """The batch ``x`` as a CPU torch tensor in torch's layout (NCHW for the conv net)."""
  import torch

  xn = np.array(x)
  return torch.from_numpy(xn if kind == "mlp" else np.ascontiguousarray(xn.transpose(0, 3, 1, 2)))


def _fast_init(model, x, seed=0):
  """The model's variables drawn with numpy (no XLA compilation for the init)."""
  shapes = jax.eval_shape(model.init, jax.random.key(seed), x)
  rng = np.random.default_rng(seed)

  def fill(path, sd):
    if getattr(path[-1], "key", "") == "bias":
      return jnp.zeros(sd.shape, sd.dtype)
    fan_in = int(np.prod(sd.shape[:-1]))
    return jnp.asarray(rng.uniform(-1, 1, sd.shape) / np.sqrt(fan_in), sd.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def _block(x):
  return jax.block_until_ready(x)


def _steady(fn, repeat: int) -> float:
  """Median seconds of fn() after one warm-up call."""
  _block(fn())
  times = []
  for _ in range(repeat):
    t = time.perf_counter()
    _block(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _cold(fn) -> float:
  """Seconds of one call from empty compilation caches (jax's and jaxinit's)."""
  jax.clear_caches()
  lsuv_lib._PIECES.clear()
  t = time.perf_counter()
  _block(fn())
  return time.perf_counter() - t


# ---------------------------------------------------------------------------
# The naive JAX port and the PyTorch reference.
# ---------------------------------------------------------------------------


def naive_jax_lsuv(model, variables, x, key):
  """Existing implementations, in JAX: a full jitted forward pass per try, the layer's
  output variance read back to the host each time. Layers are taken in creation
  order, which is the execution order for these sequential models."""
  kinds = (nn.Dense, nn.Conv)

  @jax.jit
  def variances(variables, x):
    _, state = model.apply(variables, x, capture_intermediates=lambda m, _: isinstance(m, kinds))
    return {
      name: jnp.var(out["__call__"][0])
      for name, out in state["intermediates"].items()
      if name != "__call__"
    }

  params = dict(variables["params"])
  names = sorted(params, key=lambda n: (not n.startswith("Conv"), int(n.rsplit("_", 1)[1])))
  init = jax.nn.initializers.orthogonal()  # the paper's orthonormal pre-init
  for name, k in zip(names, jax.random.split(key, len(names)), strict=True):
    w = params[name]["kernel"]
    params[name] = dict(params[name], kernel=init(k, w.shape, w.dtype))
  passes = 0
  for name in names:
    var, tries = float(variances({"params": params}, x)[name]), 0
    passes += 1
    while abs(var - 1.0) >= TOL and tries < MAX_ITERS:
      params[name] = dict(params[name], kernel=params[name]["kernel"] / np.sqrt(var))
      var, tries = float(variances({"params": params}, x)[name]), tries + 1
      passes += 1
  return {"params": params}, passes


def torch_models(kind, cfg):
  import torch.nn as tnn

  if kind == "mlp":
    layers = [tnn.Linear(cfg["d_in"], cfg["width"]), tnn.ReLU()]
    for _ in range(cfg["depth"] - 2):
      layers += [tnn.Linear(cfg["width"], cfg["width"]), tnn.ReLU()]
    return tnn.Sequential(*layers, tnn.Linear(cfg["width"], 10))
  c = cfg["channels"]
  layers = [tnn.Conv2d(3, c, 3, padding=1), tnn.ReLU()]
  for _ in range(cfg["depth"] - 1):
    layers += [tnn.Conv2d(c, c, 3, padding=1), tnn.ReLU()]
  return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, 10))


def torch_lsuv(model, x, preinit=True):
  """LSUV as in LSUV-pytorch: orthonormal init, hooks, a whole forward per try.
  ``preinit=False`` keeps the current weights (matches ``jaxinit.lsuv`` without a key)."""
  import torch
  import torch.nn as tnn

  passes = 0
  layers = [m for m in model.modules() if isinstance(m, (tnn.Conv2d, tnn.Linear))]
  with torch.no_grad():
    for m in layers if preinit else ():
      tnn.init.orthogonal_(m.weight)
    for m in layers:
      store = {}
      hook = m.register_forward_hook(lambda mod, inp, out, store=store: store.update(out=out))
      model(x)
      passes += 1
      var, tries = store["out"].var().item(), 0
      while abs(var - 1.0) >= TOL and tries < MAX_ITERS:
        m.weight.data /= var**0.5
        model(x)
        passes += 1
        var, tries = store["out"].var().item(), tries + 1
      hook.remove()
  return passes


# ---------------------------------------------------------------------------
# Runs.
# ---------------------------------------------------------------------------


def bench_model(kind, cfg, repeat, use_torch):
  model, x = model_and_batch(kind, cfg)
  variables = _fast_init(model, x)
  key = jax.random.key(0)
  row = {}

  fwd = jax.jit(model.apply)
  row["forward"] = _steady(lambda: fwd(variables, x), repeat)
  lsuv_key = jax.jit(lambda v, x, k: jaxinit.lsuv(model, v, x, key=k))
  lsuv_nokey = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x))
  row["lsuv"] = _steady(lambda: lsuv_nokey(variables, x), repeat)
  row["lsuv+key"] = _steady(lambda: lsuv_key(variables, x, key), repeat)
  row["e2e"] = statistics.median(_cold(lambda: jaxinit.lsuv(model, variables, x)) for _ in range(2))
  row["e2e+key"] = statistics.median(
    _cold(lambda: jaxinit.lsuv(model, variables, x, key=key)) for _ in range(2)
  )
  _, report = jaxinit.lsuv(model, variables, x, key=key)
  assert bool(report.converged.all()), str(report)

  jax.clear_caches()
  t = time.perf_counter()
  _, row["naive_passes"] = naive_jax_lsuv(model, variables, x, key)
  row["naive"] = time.perf_counter() - t

  if use_torch:
    import torch

    torch.manual_seed(0)
    tmodel = torch_models(kind, cfg)
    tx = torch_batch(kind, x)
    with torch.no_grad():
      row["torch_forward"] = _steady_torch(lambda: tmodel(tx), repeat)
    t = time.perf_counter()
    row["torch_passes"] = torch_lsuv(tmodel, tx)
    row["torch"] = time.perf_counter() - t
    torch.manual_seed(0)
    tmodel = torch_models(kind, cfg)  # torch's default init, LSUV without the pre-init
    t = time.perf_counter()
    row["torch_nopre_passes"] = torch_lsuv(tmodel, tx, preinit=False)
    row["torch_nopre"] = time.perf_counter() - t
  return row


def _steady_torch(fn, repeat):
  fn()
  times = []
  for _ in range(repeat):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def bench_compile(depths, width, batch, d_in):
  """Per depth: forward compile; jaxinit.lsuv under jit (one graph: trace + compile);
  eager jaxinit.lsuv end-to-end from cold caches (one piece per distinct layer)."""
  rows = []
  x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, d_in)), jnp.float32)
  for depth in depths:
    model = MLP(depth, width)
    variables = _fast_init(model, x)
    jax.clear_caches()
    t0 = time.perf_counter()
    jax.jit(model.apply).lower(variables, x).compile()
    t1 = time.perf_counter()
    jax.jit(lambda v, x, model=model: jaxinit.lsuv(model, v, x)).lower(variables, x).compile()
    t2 = time.perf_counter()
    eager = _cold(lambda model=model, variables=variables: jaxinit.lsuv(model, variables, x))
    rows.append((depth, t1 - t0, t2 - t1, eager))
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
  ap.add_argument("--skip-torch", action="store_true")
  args = ap.parse_args()
  use_torch = not args.skip_torch
  if use_torch:
    try:
      import torch

      del torch
    except ImportError:
      use_torch = False
  cfgs = CONFIGS["quick" if args.quick else "full"]
  repeat, depths = (2, (2, 4, 8)) if args.quick else (5, (8, 16, 32, 64))

  cpu = "?"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  print(
    f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()}; jax {jax.__version__}, "
    f"jaxlib {jax.lib.__version__ if hasattr(jax, 'lib') else '?'}",
    end="",
  )
  if use_torch:
    import torch

    print(f", torch {torch.__version__} ({torch.get_num_threads()} threads)", end="")
  print(
    f"\nOPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} (jax's "
    "CPU QR, used by the orthonormal redraw, runs in OpenBLAS)"
  )
  print(
    f"\nload average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
    f"{os.getloadavg()[2]:.2f}"
  )

  for kind, cfg in cfgs.items():
    row = bench_model(kind, cfg, repeat, use_torch)
    desc = ", ".join(f"{k}={v}" for k, v in cfg.items())
    f = row["forward"]
    print(f"\n## {kind} ({desc})")
    print(f"{'':34}{'seconds':>10}{'x forward':>11}")
    lines = [
      ("jax forward (jit, steady)", row["forward"]),
      ("jaxinit.lsuv steady (jit)", row["lsuv"]),
      ("jaxinit.lsuv steady, key", row["lsuv+key"]),
      ("jaxinit.lsuv end-to-end", row["e2e"]),
      ("jaxinit.lsuv end-to-end, key", row["e2e+key"]),
      (f"naive JAX port ({row['naive_passes']} passes)", row["naive"]),
    ]
    if use_torch:
      lines += [
        ("torch forward", row["torch_forward"]),
        (f"torch LSUV ({row['torch_passes']} passes)", row["torch"]),
        (f"torch LSUV, no pre-init ({row['torch_nopre_passes']})", row["torch_nopre"]),
      ]
    for name, sec in lines:
      print(f"{name:34}{sec:>10.4f}{sec / f:>11.2f}")
    print(
      f"ratio lsuv steady / forward:          {row['lsuv'] / f:.2f} (key: "
      f"{row['lsuv+key'] / f:.2f})"
    )
    print(f"ratio naive JAX / jaxinit e2e (key):  {row['naive'] / row['e2e+key']:.1f}")
    if use_torch:
      print(
        f"ratio torch / jaxinit e2e, both with the orthonormal pre-init:   "
        f"{row['torch'] / row['e2e+key']:.1f}"
      )
      print(
        f"ratio torch / jaxinit e2e, both on the given weights (no key):   "
        f"{row['torch_nopre'] / row['e2e']:.1f}"
      )

  print("\n## compile time vs depth (MLP of the width above; seconds, trace + compile)")
  print(
    f"{'depth':>6}{'forward':>10}{'lsuv (jit)':>12}{'ms/layer':>10}"
    f"{'lsuv eager e2e':>16}{'ms/layer':>10}"
  )
  for depth, fwd, jit_c, eager in bench_compile(
    depths, cfgs["mlp"]["width"], cfgs["mlp"]["batch"], cfgs["mlp"]["d_in"]
  ):
    print(
      f"{depth:>6}{fwd:>10.3f}{jit_c:>12.3f}{1e3 * jit_c / depth:>10.1f}"
      f"{eager:>16.3f}{1e3 * eager / depth:>10.1f}"
    )
  print(
    f"\nload average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
    f"{os.getloadavg()[2]:.2f}"
  )


if __name__ == "__main__":
  main()
