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

--warm-cache measures issue 13's bar instead: whole processes, from spawn to the LSUV
result (Python start-up, imports, building the model and batch, LSUV), on the MLP. A
jaxinit process with jaxinit.enable_compilation_cache on an empty cache directory (cold),
then --repeat processes on the same, now warm, directory; and --repeat processes of the
PyTorch reference (benchmarks/lsuv_torch.py, which imports no jax). Both variants: the
given weights (no key / no pre-init) and the orthonormal redraw (key / orthogonal_).

Run:  PYTHONPATH=. python benchmarks/lsuv.py [--quick] [--skip-torch]
      PYTHONPATH=. python benchmarks/lsuv.py --warm-cache [--quick] [--repeat 3]
The machine's load average is printed: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import jaxinit
from jaxinit._src import lsuv as lsuv_lib

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_reference():
  """benchmarks/lsuv_torch.py (the PyTorch reference and the sizes; no jax) as a module."""
  spec = importlib.util.spec_from_file_location("_bench_lsuv_torch", f"{HERE}/lsuv_torch.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_reference = _load_reference()
TOL, MAX_ITERS = _reference.TOL, _reference.MAX_ITERS
# The two models of the issue, and tiny versions for smoke runs (benchmarks/accelerator.py
# uses these too).
CONFIGS = _reference.CONFIGS
torch_batch = _reference.torch_batch
torch_models = _reference.torch_models
torch_lsuv = _reference.torch_lsuv


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
  if kind == "mlp":
    model = MLP(cfg["depth"], cfg["width"])
  else:
    model = ConvNet(cfg["depth"], cfg["channels"])
  return model, jnp.asarray(_reference.numpy_batch(kind, cfg))


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


# ---------------------------------------------------------------------------
# --warm-cache: whole processes, from spawn to the LSUV result.
# ---------------------------------------------------------------------------


def e2e_child(kind, size, cache_dir, with_key, since):
  """One jaxinit process of --warm-cache: the persistent cache on ``cache_dir``, LSUV on the
  benchmark model; prints a JSON line of seconds since ``since`` (the spawn, time.time())."""
  started = time.time()  # Python start-up and this module's imports (jax, flax, jaxinit) done
  jaxinit.enable_compilation_cache(cache_dir)
  misses = []
  jax.monitoring.register_event_listener(
    lambda event, **_: misses.append(1) if event == "/jax/compilation_cache/cache_misses" else 0
  )
  model, x = model_and_batch(kind, CONFIGS[size][kind])
  variables = _fast_init(model, x)
  key = jax.random.key(0) if with_key else None
  _, report = jaxinit.lsuv(model, variables, x, key=key)
  converged = bool(np.asarray(report.converged).all())  # on the host: the result is there
  done = time.time()
  print(
    json.dumps(
      {
        "result_s": done - since,
        "imports_s": started - since,
        "converged": converged,
        "compiled": len(misses),
      }
    )
  )


def _spawn(cmd: list[str]) -> dict:
  """Runs one process; its JSON line plus ``wall_s`` (spawn to exit) and ``cpu_s`` (the
  process's user + system CPU time: less sensitive than wall time to other programs' load,
  though threads that spin while waiting count)."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  since = time.time()
  t = time.perf_counter()
  out = subprocess.run(
    [*cmd, "--since", repr(since)], capture_output=True, text=True, check=False, cwd=HERE
  )
  wall = time.perf_counter() - t
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  if out.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
  return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall, "cpu_s": cpu}


VARIANTS = {"given": ("given weights", False), "redraw": ("orthonormal redraw", True)}


def bench_warm_cache(kind, size, repeat, use_torch, variants=("given", "redraw"), torch_threads=0):
  """Per variant (given weights; orthonormal redraw): one cold-cache jaxinit process, then
  ``repeat`` warm-cache jaxinit processes interleaved with ``repeat`` torch processes (so
  both see the same load). Returns {variant: {"cold": run, "warm": [runs], "torch": [runs]}}."""
  env_py = [sys.executable]
  me = os.path.abspath(__file__)
  out = {}
  for variant, with_key in (VARIANTS[v] for v in variants):
    with tempfile.TemporaryDirectory(prefix="jaxinit_cache_") as cache:
      child = [*env_py, me, "--e2e-child", kind, "--size", size, "--cache", cache]
      child += ["--key"] if with_key else []
      runs = {"cold": _spawn(child), "warm": [], "torch": []}
      for _ in range(repeat):
        runs["warm"].append(_spawn(child))
        if use_torch:
          ref = [*env_py, f"{HERE}/lsuv_torch.py", "--e2e", kind, "--size", size]
          ref += ["--threads", str(torch_threads)]
          runs["torch"].append(_spawn(ref + ([] if with_key else ["--no-preinit"])))
    out[variant] = runs
  return out


def print_warm_cache(kind, size, results) -> None:
  def med(runs, k):
    if k == "lsuv_s":  # after the imports: building the model and batch, LSUV
      return statistics.median(r["result_s"] - r["imports_s"] for r in runs)
    return statistics.median(r[k] for r in runs)

  print(f"\n## {kind} ({size}), whole processes: spawn to LSUV result (seconds, median)")
  print(
    "columns: spawn to result; spawn to imports done; result minus imports; spawn to exit; "
    "CPU time (user + system) of the process"
  )
  print(f"{'':42}{'to result':>10}{'imports':>9}{'after':>9}{'to exit':>9}{'cpu':>9}")
  for variant, runs in results.items():
    print(f"### {variant}")
    cold, warm, ref = [runs["cold"]], runs["warm"], runs["torch"]
    rows = [
      (f"jaxinit, cold cache ({cold[0]['compiled']} compiled)", cold),
      (f"jaxinit, warm cache ({warm[0]['compiled']} compiled, x{len(warm)})", warm),
    ]
    if ref:
      name = f"torch reference ({ref[0]['passes']} passes, {ref[0]['threads']} thr, x{len(ref)})"
      rows.append((name, ref))
    for name, rs in rows:
      print(
        f"{name:42}{med(rs, 'result_s'):>10.3f}{med(rs, 'imports_s'):>9.3f}"
        f"{med(rs, 'lsuv_s'):>9.3f}{med(rs, 'wall_s'):>9.3f}{med(rs, 'cpu_s'):>9.3f}"
      )
    ok = all(r["converged"] for r in cold + warm)
    print(f"jaxinit converged on every layer: {ok}")
    if ref:
      t_ref = med(ref, "result_s")
      print(
        f"ratio torch / jaxinit warm cache: {t_ref / med(warm, 'result_s'):.2f} (bar >= 4); "
        f"torch / jaxinit cold cache: {t_ref / med(cold, 'result_s'):.2f}; to exit: "
        f"{med(ref, 'wall_s') / med(warm, 'wall_s'):.2f}"
      )
      print(
        f"ratio of CPU time: torch / jaxinit warm cache "
        f"{med(ref, 'cpu_s') / med(warm, 'cpu_s'):.2f}, cold cache "
        f"{med(ref, 'cpu_s') / med(cold, 'cpu_s'):.2f}"
      )
      print(
        f"ratio after the imports (model, batch, LSUV): torch / jaxinit warm cache "
        f"{med(ref, 'lsuv_s') / med(warm, 'lsuv_s'):.2f}, cold cache "
        f"{med(ref, 'lsuv_s') / med(cold, 'lsuv_s'):.2f}"
      )
    print(f"ratio cold / warm cache (jaxinit): {med(cold, 'result_s') / med(warm, 'result_s'):.2f}")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
  ap.add_argument("--skip-torch", action="store_true")
  ap.add_argument(
    "--warm-cache",
    action="store_true",
    help="whole processes with jaxinit's persistent compilation cache vs the torch reference",
  )
  ap.add_argument("--repeat", type=int, default=None, help="--warm-cache: warm and torch runs")
  ap.add_argument("--model", choices=("mlp", "conv"), default="mlp", help="--warm-cache model")
  ap.add_argument(
    "--torch-threads", type=int, default=0, help="--warm-cache: torch's threads (0: default)"
  )
  ap.add_argument(
    "--variants",
    default="given,redraw",
    help="--warm-cache: given (weights kept, torch without pre-init) and/or redraw (key, "
    "torch with orthogonal_)",
  )
  # one process of --warm-cache (internal)
  ap.add_argument("--e2e-child", choices=("mlp", "conv"), help=argparse.SUPPRESS)
  ap.add_argument("--size", choices=tuple(CONFIGS), default="full", help=argparse.SUPPRESS)
  ap.add_argument("--cache", help=argparse.SUPPRESS)
  ap.add_argument("--key", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--since", type=float, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.e2e_child:
    e2e_child(args.e2e_child, args.size, args.cache, args.key, args.since)
    return
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

  if args.warm_cache:
    size = "quick" if args.quick else "full"
    n = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    variants = tuple(args.variants.split(","))
    if not variants or any(v not in VARIANTS for v in variants):
      ap.error(f"--variants: a comma-separated subset of {', '.join(VARIANTS)}")
    results = bench_warm_cache(args.model, size, n, use_torch, variants, args.torch_threads)
    print_warm_cache(args.model, size, results)
    print(
      f"\nload average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
      f"{os.getloadavg()[2]:.2f}"
    )
    return

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
