"""Accelerator benchmark: orthogonal, LSUV and sharded model init on the local devices.

One script for a lent GPU (or TPU) machine, under 6 minutes in all, with a time budget per
section (a step that would not fit in what is left of its section is skipped and says so, and
a watchdog ends the process at ``--limit`` seconds whatever happens):

1. Orthogonal (budget 190 s). For n = 1024, 4096, 8192, float32 and bfloat16: every
   ``jaxinit.orthogonal`` method (``stewart``, ``qr``, ``cholesky_qr``, ``auto``) against
   ``jax.nn.initializers.orthogonal`` and ``torch.nn.init.orthogonal_`` (on CUDA when torch
   sees a GPU; torch raises for bfloat16, which is recorded), plus a stack of 64 matrices of
   512 x 512 (jaxinit ``batch_axis=0``; jax: ``vmap`` over keys; torch: 64 calls, and one
   batched ``torch.linalg.qr`` with the sign fix) and one n x n matmul per n as the floor
   (``Precision.HIGHEST``, the precision ``cholesky_qr`` uses, and ``DEFAULT``, which is
   TF32 on recent NVIDIA GPUs). Times are steady state (after a first call that compiles),
   median of up to 5 rounds; ``max|Q^T Q - I|`` of every result is measured in float64.
2. LSUV (budget 70 s) on the two models of ``benchmarks/lsuv.py`` (32-layer MLP, 16-layer
   conv net): ``jaxinit.lsuv`` under ``jax.jit`` (steady state, with and without the
   orthonormal redraw) and end to end from cold caches, against that file's PyTorch LSUV
   on the same device.
3. Sharded model init (budget 60 s) of ``benchmarks/model_init.py``'s GPT-2-small-shaped
   model: Flax's own init vs jaxinit rules (``model_init.speed``), then ``jaxinit.reinit``
   with every leaf of rank >= 2 sharded over all local devices: time, bit-identity with the
   unsharded draw, per-device memory of the compiled program.

Usage::

  PYTHONPATH=. python benchmarks/accelerator.py            # the full run (a GPU machine)
  PYTHONPATH=. python benchmarks/accelerator.py --smoke    # tiny sizes, CPU, under a minute
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

# jax and torch share the GPU: jax must not take 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp
import numpy as np

import jaxinit
from jaxinit._src import orthogonal as orth_lib
from jaxinit._src.orthogonal import METHODS

try:
  import torch
except ImportError:  # torch is optional: its rows are skipped
  torch = None

HERE = os.path.dirname(os.path.abspath(__file__))
HIGHEST = jax.lax.Precision.HIGHEST


def _load(name: str):
  """``benchmarks/<name>.py`` as a module (the benchmarks directory is not a package)."""
  spec = importlib.util.spec_from_file_location(f"_bench_{name}", os.path.join(HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses (Flax modules) look their module up
  spec.loader.exec_module(module)
  return module


def _print(*args: Any) -> None:
  print(*args, flush=True)


# ---------------------------------------------------------------------------
# Devices, budgets, timing.
# ---------------------------------------------------------------------------


def torch_device() -> str:
  return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


def describe_devices() -> None:
  devices = jax.devices()
  _print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(devices)} device(s):")
  for d in devices:
    _print(f"  {d!r}: {getattr(d, 'device_kind', '?')}")
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  _print(f"host: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
  if torch is None:
    _print("torch: not installed (its rows are skipped)")
  elif torch.cuda.is_available():
    _print(
      f"torch {torch.__version__}, CUDA {torch.version.cuda}: "
      f"{torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)"
    )
  else:
    _print(f"torch {torch.__version__} on CPU ({torch.get_num_threads()} threads; no CUDA)")


class Budget:
  """Seconds left for a section; a step runs only if its predicted time fits."""

  def __init__(self, name: str, seconds: float):
    self.name, self.seconds = name, seconds
    self.start = time.perf_counter()

  def left(self) -> float:
    return self.seconds - (time.perf_counter() - self.start)

  def fits(self, predicted: float) -> bool:
    return predicted < self.left()

  def skip(self, what: str = "", predicted: float | None = None) -> str:
    guess = "" if predicted is None else f"predicted {predicted:.1f} s, "
    why = f" ({what})" if what else ""
    return f"skipped{why}: {guess}{max(self.left(), 0):.1f} s left of the {self.name} budget"


def _sync(x: Any) -> Any:
  jax.block_until_ready(x)
  if torch is not None and torch.cuda.is_available():
    torch.cuda.synchronize()
  return x


def timed(fn: Callable[[], Any], rounds: int, budget: Budget) -> tuple[float, list[float], Any]:
  """(first call s, steady-state times s, last result): rounds stop when the budget would not
  hold another."""
  t = time.perf_counter()
  out = _sync(fn())
  first = time.perf_counter() - t
  times: list[float] = []
  estimate = first
  for _ in range(rounds):
    if not budget.fits(estimate):
      break
    t = time.perf_counter()
    out = _sync(fn())
    times.append(time.perf_counter() - t)
    estimate = statistics.median(times)
  return first, times, out


def _ms(s: float | None) -> str:
  return "-" if s is None else (f"{s * 1e3:.2f} ms" if s < 10 else f"{s:.2f} s")


def orthonormality_error(q: Any) -> float | None:
  """max |Q^T Q - I| (Q Q^T if wide) of a matrix or stack, in float64: on the torch device
  when torch is there (a float64 product of 8192^2 is milliseconds on a GPU), else numpy."""
  try:
    if torch is not None:
      t = q if isinstance(q, torch.Tensor) else torch.from_numpy(_host_f32(q))
      t = t.to(torch_device(), torch.float64)
      if t.shape[-2] < t.shape[-1]:
        t = t.transpose(-1, -2)
      g = t.transpose(-1, -2) @ t
      return float((g - torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)).abs().max())
    a = _host_f32(q).astype(np.float64)
    if a.shape[-2] < a.shape[-1]:
      a = np.swapaxes(a, -1, -2)
    return float(np.abs(np.swapaxes(a, -1, -2) @ a - np.eye(a.shape[-1])).max())
  except Exception as e:  # a measurement, never fatal
    _print(f"    (orthonormality not measured: {type(e).__name__}: {e})")
    return None


def _host_f32(q: Any) -> np.ndarray:
  return np.array(jnp.asarray(q).astype(jnp.float32))  # a writable copy


# ---------------------------------------------------------------------------
# 1. Orthogonal.
# ---------------------------------------------------------------------------


def _orthogonal_contenders(n: int, dtype: Any, stack: int | None) -> dict[str, Callable[[], Any]]:
  """name -> call. ``stack``: a stack of that many n x n matrices instead of one."""
  key = jax.random.key(0)
  shape = (n, n) if stack is None else (stack, n, n)
  out: dict[str, Callable[[], Any]] = {}
  for method in METHODS:
    init = jaxinit.orthogonal(batch_axis=() if stack is None else 0, method=method)
    out[f"jaxinit {method}"] = lambda init=init: init(key, shape, dtype)
  ref = jax.nn.initializers.orthogonal()
  if stack is None:
    jitted = jax.jit(lambda k: ref(k, shape, dtype))
    out["jax.nn orthogonal"] = lambda: jitted(key)
  else:
    keys = jax.random.split(key, stack)
    jitted = jax.jit(jax.vmap(lambda k: ref(k, (n, n), dtype)))
    out["jax.nn orthogonal (vmap)"] = lambda: jitted(keys)
  if torch is not None:
    tdtype = torch.float32 if dtype == jnp.float32 else torch.bfloat16
    t = torch.empty(shape, dtype=tdtype, device=torch_device())
    if stack is None:
      out["torch orthogonal_"] = lambda: torch.nn.init.orthogonal_(t)
    else:
      out[f"torch orthogonal_ x{stack}"] = lambda: [torch.nn.init.orthogonal_(m) for m in t][-1]

      def batched_qr():
        q, r = torch.linalg.qr(torch.randn(shape, dtype=tdtype, device=t.device))
        return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)

      out["torch linalg.qr batched"] = batched_qr
  if dtype == jnp.float32:
    a = jax.random.normal(jax.random.key(1), shape, jnp.float32)
    mm_hi = jax.jit(lambda a: jnp.matmul(a, a, precision=HIGHEST))
    mm_default = jax.jit(lambda a: jnp.matmul(a, a))
    out["matmul HIGHEST (floor)"] = lambda: mm_hi(a)
    out["matmul DEFAULT"] = lambda: mm_default(a)
  return out


def orthogonal_section(smoke: bool, budget: Budget) -> None:
  sizes = [32] if smoke else [1024, 4096, 8192]
  stack = (4, 16) if smoke else (64, 512)
  rounds = 2 if smoke else 5
  cases = [(n, None, dt) for dt in (jnp.float32, jnp.bfloat16) for n in sizes]
  cases += [(stack[1], stack[0], jnp.float32)]
  steady: dict[tuple[str, str, int | None], tuple[int, float]] = {}  # (name, dtype, stack)
  for n, nstack, dtype in cases:
    dname = jnp.dtype(dtype).name
    label = f"{n}x{n} {dname}" if nstack is None else f"{nstack} x {n}x{n} {dname}"
    _print(f"\n### {label} ({budget.left():.0f} s left)")
    _print(
      f"  {'contender':28s} {'first call':>11s} {'median':>11s} {'min':>11s} {'max|QtQ-I|':>11s}"
    )
    med: dict[str, float] = {}
    outputs: dict[str, Any] = {}
    for name, fn in _orthogonal_contenders(n, dtype, nstack).items():
      prev = steady.get((name, dname, nstack))
      predicted = None if prev is None else prev[1] * (n / prev[0]) ** 3 * (rounds + 2)
      if predicted is not None and not budget.fits(predicted):
        _print(f"  {name:28s} {budget.skip('larger n', predicted)}")
        continue
      if not budget.fits(1.0):
        _print(f"  {name:28s} {budget.skip()}")
        continue
      try:
        first, times, out = timed(fn, rounds, budget)
      except Exception as e:  # torch raises for bfloat16 QR, jax may too: a result
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _print(f"  {name:28s} raises {type(e).__name__}: {msg[:90]}")
        continue
      m = statistics.median(times) if times else None  # None: the budget allowed no round
      if m is not None:
        med[name] = m
      steady[(name, dname, nstack)] = (n, first if m is None else m)
      err = None if name.startswith("matmul") else orthonormality_error(out)
      outputs[name] = out
      e = "-" if err is None else f"{err:.1e}"
      mn = min(times) if times else None
      _print(f"  {name:28s} {_ms(first):>11s} {_ms(m):>11s} {_ms(mn):>11s} {e:>11s}")
    _orthogonal_ratios(med)
    if (
      "jaxinit cholesky_qr" in med
      and dtype == jnp.float32
      and budget.fits(3 * med["jaxinit cholesky_qr"])
    ):
      _print(f"  cholesky_qr: matrices its three passes rejected: {_rejected(n, nstack)}")
    auto, chol, stew = (outputs.get(f"jaxinit {m}") for m in ("auto", "cholesky_qr", "stewart"))
    if auto is not None and chol is not None and stew is not None:
      same = lambda a, b: bool(jnp.array_equal(a, b))
      _print(f"  auto picked: cholesky_qr {same(auto, chol)}, stewart {same(auto, stew)}")


def _rejected(n: int, nstack: int | None) -> str:
  """How many matrices of the benchmark's draw (key 0) cholesky_qr's check sent to the rescue
  passes (and perhaps to Householder QR): the timing above includes them."""
  nb = 1 if nstack is None else nstack
  real = np.dtype(np.float32)

  def check(k):
    g = orth_lib.stored_gaussian(k, nb * n * n, real, False).reshape(nb, n, n)
    return orth_lib.cholesky_qr3(g)[1]

  ok = np.asarray(jax.jit(check)(jax.random.key(0)))
  return f"{int((~ok).sum())} of {ok.size} matrices"


def _orthogonal_ratios(med: dict[str, float]) -> None:
  refs = [r for r in med if r.startswith(("jax.nn", "torch", "matmul HIGHEST"))]
  if not refs:
    return
  _print("  ratios (medians): " + ", ".join(f"x / {r}" for r in refs))
  for name in (k for k in med if k.startswith("jaxinit")):
    cells = [f"{med[name] / med[r]:8.3g}" for r in refs]
    _print(f"    {name:26s} {' '.join(cells)}")


# ---------------------------------------------------------------------------
# 2. LSUV.
# ---------------------------------------------------------------------------


def lsuv_section(smoke: bool, budget: Budget) -> None:
  bench = _load("lsuv")
  for kind, cfg in bench.CONFIGS["quick" if smoke else "full"].items():
    _print(f"\n### {kind} {cfg} ({budget.left():.0f} s left)")
    if budget.fits(2.0 if smoke else 5.0):
      _lsuv_model(bench, kind, cfg, smoke, budget)
    else:
      _print("  " + budget.skip(kind))


def _lsuv_model(bench: Any, kind: str, cfg: dict, smoke: bool, budget: Budget) -> None:
  repeat, need = (2, 2.0) if smoke else (5, 15.0)  # need: seconds a cold LSUV may take
  model, x = bench.model_and_batch(kind, cfg)
  variables = bench._fast_init(model, x)
  key = jax.random.key(0)
  fwd = jax.jit(model.apply)
  plain = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x))
  keyed = jax.jit(lambda v, x, k: jaxinit.lsuv(model, v, x, key=k))
  rows = {
    "jax forward (jit, steady)": bench._steady(lambda: fwd(variables, x), repeat),
    "jaxinit.lsuv (jit, steady)": bench._steady(lambda: plain(variables, x), repeat),
    "jaxinit.lsuv + redraw (jit, steady)": bench._steady(lambda: keyed(variables, x, key), repeat),
  }
  if budget.fits(need):
    e2e = bench._cold(lambda: jaxinit.lsuv(model, variables, x, key=key))
    rows["jaxinit.lsuv + redraw, end to end"] = e2e
  _, report = jaxinit.lsuv(model, variables, x, key=key)
  converged = bool(np.asarray(report.converged).all())
  torch_lsuv = None
  if torch is not None and budget.fits(need / 2):
    device = torch_device()
    torch.manual_seed(0)
    tmodel = bench.torch_models(kind, cfg).to(device)
    tx = bench.torch_batch(kind, x).to(device)
    with torch.no_grad():
      rows[f"torch forward ({device})"] = _torch_steady(lambda: tmodel(tx), repeat)
    t = time.perf_counter()
    passes = bench.torch_lsuv(tmodel, tx)
    _sync(None)
    torch_lsuv = time.perf_counter() - t
    rows[f"torch LSUV + redraw ({device}, {passes} passes)"] = torch_lsuv
  forward = rows["jax forward (jit, steady)"]
  _print(f"  {'':44s} {'time':>11s} {'x forward':>10s}")
  for name, sec in rows.items():
    _print(f"  {name:44s} {_ms(sec):>11s} {sec / forward:10.2f}")
  _print(f"  jaxinit.lsuv converged on every layer: {converged}")
  if torch_lsuv is not None:
    steady = rows["jaxinit.lsuv + redraw (jit, steady)"]
    _print(
      f"  ratio torch LSUV / jaxinit.lsuv steady, both with the redraw: {torch_lsuv / steady:.1f}"
    )
    if "jaxinit.lsuv + redraw, end to end" in rows:
      e2e = rows["jaxinit.lsuv + redraw, end to end"]
      _print(
        f"  ratio torch LSUV / jaxinit.lsuv end to end (compiling included): {torch_lsuv / e2e:.2f}"
      )


def _torch_steady(fn: Callable[[], Any], repeat: int) -> float:
  _sync(fn())
  times = []
  for _ in range(repeat):
    t = time.perf_counter()
    _sync(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


# ---------------------------------------------------------------------------
# 3. Sharded model init.
# ---------------------------------------------------------------------------


def sharded_section(smoke: bool, budget: Budget) -> None:
  had_platforms = "JAX_PLATFORMS" in os.environ
  bench = _load("model_init")  # sets JAX_PLATFORMS=cpu if unset: jax is already up here
  if not had_platforms:
    os.environ.pop("JAX_PLATFORMS", None)
  cfg = bench.QUICK if smoke else bench.FULL
  devices = jax.local_devices()
  _print(f"\nmodel {cfg}; {len(devices)} local device(s) ({budget.left():.0f} s left)")
  if budget.fits(30.0 if not smoke else 5.0):
    n, rows = bench.speed(cfg, 2 if smoke else 3)
    _print(f"parameters: {n / 1e6:.1f}M (float32)")
    for name, (first, steady) in rows:
      _print(f"  {name:32s} first call {_ms(first):>10s}   steady {_ms(steady):>10s}")
    flax_steady = rows[0][1][1]
    for name, (_, steady) in rows[1:]:
      _print(f"  ratio {name} / flax (steady): {steady / flax_steady:.2f}")
  else:
    _print("  " + budget.skip("Flax vs jaxinit"))
  if not budget.fits(5.0 if smoke else 15.0):
    _print("  " + budget.skip("sharded reinit"))
    return
  model, tokens = bench._model(cfg)
  key = jax.random.key(0)
  abstract = jax.eval_shape(model.init, key, tokens)
  mesh = jax.make_mesh((len(devices),), ("x",), devices=devices)
  if 8 % len(devices) == 0:  # model_init's specs split axes divisible by 8 over "x"
    specs = bench._specs(abstract)
  else:
    specs = jax.tree.map(lambda _: jax.sharding.PartitionSpec(), abstract)
    _print(f"  {len(devices)} devices do not divide 8: every leaf replicated")
  programs = {
    f"sharded over {len(devices)}": lambda k: jaxinit.reinit(
      abstract, bench.RULES, k, shardings=specs, mesh=mesh
    ),
    "unsharded": lambda k: jaxinit.reinit(abstract, bench.RULES, k),
  }
  results = []
  for name, fn in programs.items():
    if not budget.fits(5.0 if smoke else 10.0):
      _print(f"  jit(reinit) {name}: " + budget.skip())
      return
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(key).compile()
    compile_s = time.perf_counter() - t
    first, times, out = timed(lambda compiled=compiled: compiled(key), 3, budget)
    steady = statistics.median(times) if times else first
    try:
      m = compiled.memory_analysis()
      memory = f"{(m.output_size_in_bytes + m.temp_size_in_bytes) / 2**20:.1f} MiB"
    except Exception as e:  # not every backend reports it
      memory = f"unavailable ({type(e).__name__})"
    _print(
      f"  jit(reinit) {name:15s} compile {_ms(compile_s):>10s}, steady {_ms(steady):>10s}, "
      f"per-device output + temporaries {memory}"
    )
    results.append(out)
  pairs = zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True)
  _print(
    f"  sharded == unsharded, bit for bit: {all(bool(jnp.array_equal(a, b)) for a, b in pairs)}"
  )


# ---------------------------------------------------------------------------


SECTIONS = (  # (title, function, budget s of the full run, budget s of --smoke)
  ("1. orthogonal", orthogonal_section, 190.0, 40.0),
  ("2. LSUV", lsuv_section, 70.0, 30.0),
  ("3. sharded model init", sharded_section, 60.0, 30.0),
)


def _watchdog(limit: float) -> None:
  def stop():
    _print(f"\nTIME LIMIT: {limit:.0f} s reached, stopping")
    os._exit(124)

  timer = threading.Timer(limit, stop)
  timer.daemon = True
  timer.start()


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU smoke run)")
  parser.add_argument("--limit", type=float, default=None, help="hard limit in seconds")
  parser.add_argument(
    "--sections", type=int, nargs="*", default=[1, 2, 3], help="which sections to run"
  )
  args = parser.parse_args()
  limit = args.limit or (200.0 if args.smoke else 340.0)
  _watchdog(limit)
  start = time.perf_counter()
  _print(
    f"# jaxinit accelerator benchmark ({'smoke' if args.smoke else 'full'}; limit {limit:.0f} s)"
  )
  describe_devices()
  failed = False
  for i, (title, section, full_s, smoke_s) in enumerate(SECTIONS, 1):
    if i not in args.sections:
      continue
    _print(f"\n## {title} (budget {smoke_s if args.smoke else full_s:.0f} s)")
    t = time.perf_counter()
    try:
      section(args.smoke, Budget(title, smoke_s if args.smoke else full_s))
    except Exception:  # report and go on with the next section
      failed = True
      _print(f"SECTION FAILED: {title}")
      traceback.print_exc(file=sys.stdout)
    _print(f"(section took {time.perf_counter() - t:.1f} s)")
  _print(f"\ntotal {time.perf_counter() - start:.1f} s; load average {os.getloadavg()[0]:.2f}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
