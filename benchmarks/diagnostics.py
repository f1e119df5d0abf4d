"""Diagnostics: Jacobian spectra (exact, Lanczos, plain-jax baseline) and ``jaxinit compare``.

1. ``jacobian_spectrum`` on a 16-layer tanh MLP at several widths, one example:
   (a) the baseline a user writes: ``jax.jit(jax.jacfwd(f))`` on the example, then
       ``np.linalg.svd`` — the full Jacobian;
   (b) ``jacobian_spectrum(method="exact")`` (the same, plus the batch-of-two trick and the
       float64 SVD);
   (c) ``jacobian_spectrum(method="lanczos", num_iters=32)`` (32 matrix-free J^T J products).
   First call (compile + run) and steady state (median of repeats) per path, the ratio to
   the baseline, and the Lanczos estimates' errors against the exact spectrum.
2. ``jaxinit compare`` with its defaults (50-layer ReLU MLP, width 256, batch 256, six
   initializers and LSUV), in a fresh subprocess: wall time, and the time the first
   initializer (which pays every compilation) and the others take.

Usage: ``PYTHONPATH=. python benchmarks/diagnostics.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit import diagnostics

FULL = dict(depth=16, widths=(256, 1024, 2048))
QUICK = dict(depth=4, widths=(64, 128))


def tanh_mlp(params, x):
  for w in params:
    x = jnp.tanh(x @ w)
  return x


def timed(fn, repeats):
  t0 = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return out, first, float(np.median(times))


def bench_jacobian(depth: int, widths, repeats: int) -> None:
  print(f"\n## jacobian_spectrum: {depth}-layer tanh MLP, one example, sigma_w = 1.2\n")
  print(
    "| width | path | first call s | steady s | steady / baseline | sigma_max rel. err | "
    "mean s^2 rel. err |"
  )
  print("|---|---|---|---|---|---|---|")
  for n in widths:
    _jacobian_width(depth, n, repeats)


def _jacobian_width(depth: int, n: int, repeats: int) -> None:
  rng = np.random.default_rng(0)
  ws = [
    jnp.asarray(rng.standard_normal((n, n)) * 1.2 / np.sqrt(n), jnp.float32) for _ in range(depth)
  ]
  x = jnp.asarray(rng.standard_normal((4, n)), jnp.float32)
  jac = jax.jit(jax.jacfwd(lambda v: tanh_mlp(ws, v[None])[0]))

  def baseline():
    return np.linalg.svd(np.asarray(jac(x[0])), compute_uv=False)

  s_base, f_base, t_base = timed(baseline, repeats)
  exact, f_ex, t_ex = timed(
    lambda: diagnostics.jacobian_spectrum(tanh_mlp, ws, x, method="exact"), repeats
  )
  lan, f_lan, t_lan = timed(
    lambda: diagnostics.jacobian_spectrum(tanh_mlp, ws, x, method="lanczos", num_iters=32), repeats
  )
  assert np.allclose(exact.singular_values[:8], s_base[:8], rtol=1e-3)
  err_max = abs(lan.max / exact.max - 1)
  err_ms = abs(lan.mean_squared / exact.mean_squared - 1)
  for name, f, t, e1, e2 in (
    ("baseline jit(jacfwd) + svd", f_base, t_base, "", ""),
    ("exact", f_ex, t_ex, "0", "0"),
    ("lanczos, 32 steps", f_lan, t_lan, f"{err_max:.1e}", f"{err_ms:.1e}"),
  ):
    print(f"| {n} | {name} | {f:.2f} | {t:.3f} | {t / t_base:.2f} | {e1} | {e2} |")


def bench_compare(quick: bool) -> None:
  args = [sys.executable, "-m", "jaxinit", "compare"]
  if quick:
    args += ["--depth", "6", "--width", "32", "--batch", "32"]
  print(f"\n## `jaxinit compare{' (quick)' if quick else ''}` in a fresh process\n")
  t0 = time.perf_counter()
  out = subprocess.run(
    args, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()}
  )
  wall = time.perf_counter() - t0
  steps = [float(m) for m in re.findall(r"\] \d+/\d+\s+([\d.]+)s", out.stderr)]
  print(out.stdout)
  if len(steps) >= 3:
    first, rest = steps[1] - steps[0], np.diff(steps[1:])
    print(
      f"wall time {wall:.1f}s (interpreter start and imports included); first "
      f"initializer (all compilations) {first:.1f}s, each further one "
      f"{np.median(rest):.2f}s (median)"
    )
  else:
    print(f"wall time {wall:.1f}s")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  cfg = QUICK if args.quick else FULL
  print(
    f"# Diagnostics benchmark\n\n{platform.processor() or platform.machine()}, "
    f"{os.cpu_count()} cores, jax {jax.__version__}, load average "
    f"{os.getloadavg()[0]:.1f} at start"
  )
  bench_jacobian(cfg["depth"], cfg["widths"], 1 if args.quick else args.repeats)
  bench_compare(args.quick)
  print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
  main()
