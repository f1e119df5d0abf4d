"""Benchmark: Haar orthogonal initialization of an n x n float32 matrix on the CPU.

Side by side in one run, for n = 256, 1024, 2048, 4096:

* every ``jaxinit.orthogonal`` method (``stewart``, the default, ``qr`` and
  ``cholesky_qr``; ``auto`` is ``stewart`` on the CPU), called as users call it
  (the draw is jit-compiled inside);
* ``jax.nn.initializers.orthogonal`` under ``jax.jit``;
* ``torch.nn.init.orthogonal_`` (CPU torch, optional: skipped if not installed);
* the floor for forming Q: one ``jax.lax.linalg.householder_product`` on a
  ready reflector matrix (from a Householder QR of a Gaussian);
* the random numbers alone: ``jax.random.normal`` of n^2 and of n(n+1)/2;
* ``jaxinit.orthogonal()`` for a bfloat16 target.

Times are steady state (after compilation, ``block_until_ready``), the median
(and minimum) over rounds; in each round every contender runs once, in turn, so
load from other processes spreads over all of them. Compile time is the time to
lower and compile each jax contender once. Ratios are of medians.

Usage::

  PYTHONPATH=. python benchmarks/orthogonal.py            # full run
  PYTHONPATH=. python benchmarks/orthogonal.py --quick    # smoke run, tiny sizes
  PYTHONPATH=. python benchmarks/orthogonal.py --sizes 2048 4096 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import jaxinit

try:
  import torch
except ImportError:  # torch is an optional benchmark dependency
  torch = None


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _load() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "n/a"


def machine() -> str:
  parts = [
    f"CPU: {_cpu_model()}, {os.cpu_count()} cores",
    f"jax {jax.__version__}",
    f"numpy {np.__version__}",
  ]
  if torch is not None:
    parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
  return "; ".join(parts)


def contenders(n: int) -> dict[str, tuple[Callable[[], object], Callable[[], object] | None]]:
  """name -> (steady-state call returning something to block on, compile-once call or None)."""
  key = jax.random.key(0)
  shape = (n, n)
  out: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {}

  def jaxinit_call(init, dtype=jnp.float32):
    run = lambda: init(key, shape, dtype)
    compile_ = lambda: jax.jit(lambda k: init(k, shape, dtype)).lower(key).compile()
    return run, compile_

  for method in ("stewart", "qr", "cholesky_qr"):
    out[f"jaxinit {method}"] = jaxinit_call(jaxinit.orthogonal(method=method))
  out["jaxinit stewart bf16"] = jaxinit_call(jaxinit.orthogonal(), jnp.bfloat16)

  jax_orth = jax.jit(lambda k: jax.nn.initializers.orthogonal()(k, shape, jnp.float32))
  out["jax.nn orthogonal"] = (lambda: jax_orth(key), lambda: jax_orth.lower(key).compile())

  if torch is not None:
    t = torch.empty(n, n)
    gen = torch.Generator().manual_seed(0)
    out["torch orthogonal_"] = (lambda: torch.nn.init.orthogonal_(t, generator=gen), None)

  # The floor: form Q from a ready reflector matrix (what a Householder QR leaves).
  g = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
  (raw, tau), _ = scipy.linalg.qr(g, mode="raw")  # LAPACK geqrf: reflectors below the diagonal
  a, taus = jnp.asarray(raw), jnp.asarray(tau)
  hh = jax.jit(jax.lax.linalg.householder_product)
  out["householder_product (floor)"] = (lambda: hh(a, taus), lambda: hh.lower(a, taus).compile())

  full = jax.jit(lambda k: jax.random.normal(k, (n * n,)))
  half = jax.jit(lambda k: jax.random.normal(k, (n * (n + 1) // 2,)))
  out["normal n^2 (rng only)"] = (lambda: full(key), None)
  out["normal n(n+1)/2 (rng only)"] = (lambda: half(key), None)
  return out


def _block(x):
  if isinstance(x, jax.Array):
    x.block_until_ready()
  return x


def measure(n: int, rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
  cs = contenders(n)
  compile_s = {}
  for name, (run, compile_) in cs.items():
    if compile_ is not None:
      t = time.perf_counter()
      compile_()
      compile_s[name] = time.perf_counter() - t
    _block(run())  # warm up: compile, allocate
  times: dict[str, list[float]] = {name: [] for name in cs}
  for _ in range(rounds):
    for name, (run, _) in cs.items():
      t = time.perf_counter()
      _block(run())
      times[name].append(time.perf_counter() - t)
  return times, compile_s


def _fmt(s: float) -> str:
  return f"{s * 1e3:9.1f} ms" if s < 10 else f"{s:9.2f} s "


def report(n: int, times: dict[str, list[float]], compile_s: dict[str, float]) -> None:
  med = {k: statistics.median(v) for k, v in times.items()}
  print(f"\nn = {n} (float32 {n}x{n}; {len(next(iter(times.values())))} rounds; load {_load()})")
  print(f"  {'contender':30s} {'median':>12s} {'min':>12s} {'compile':>10s}")
  for name, v in times.items():
    c = f"{compile_s[name]:8.2f} s" if name in compile_s else f"{'':>10s}"
    print(f"  {name:30s} {_fmt(med[name]):>12s} {_fmt(min(v)):>12s} {c}")
  d = med["jaxinit stewart"]
  print("  ratios (medians):")
  print(f"    stewart / jax.nn orthogonal      {d / med['jax.nn orthogonal']:6.2f}   (bar: <= 0.6)")
  if "torch orthogonal_" in med:
    print(f"    stewart / torch orthogonal_      {d / med['torch orthogonal_']:6.2f}   (bar: <= 1)")
  print(
    f"    stewart / householder_product    {d / med['householder_product (floor)']:6.2f}"
    "   (bar: <= 1.4)"
  )
  print(
    f"    stewart bf16 / stewart f32       {med['jaxinit stewart bf16'] / d:6.2f}   (bar: <= 1.1)"
  )
  print(f"    qr / jax.nn orthogonal           {med['jaxinit qr'] / med['jax.nn orthogonal']:6.2f}")
  chol = med["jaxinit cholesky_qr"]
  print(f"    cholesky_qr / stewart            {chol / d:6.2f}")
  print(f"    cholesky_qr / jax.nn orthogonal  {chol / med['jax.nn orthogonal']:6.2f}")
  if "torch orthogonal_" in med:
    print(f"    cholesky_qr / torch orthogonal_  {chol / med['torch orthogonal_']:6.2f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds (smoke test)")
  parser.add_argument("--sizes", type=int, nargs="*", default=[256, 1024, 2048, 4096])
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  sizes, rounds = ([32, 64], 2) if args.quick else (args.sizes, args.rounds)
  print(machine())
  print(f"load average at start: {_load()}")
  for n in sizes:
    times, compile_s = measure(n, rounds)
    report(n, times, compile_s)
  print(f"\nload average at end: {_load()}")


if __name__ == "__main__":
  main()
