"""Sharded initialization across processes: JAX's multi-controller runtime on localhost.

Each test launches N worker processes (tests/_multiprocess_worker.py), each with its own
simulated CPU devices, joined by ``jax.distributed.initialize`` (coordinator on
127.0.0.1, gloo CPU collectives) into one global mesh of 8 devices. Every process runs
``jaxinit.reinit``, ``jaxinit.init_linen`` and ``jaxinit.init_nnx`` on that mesh and checks,
leaf by leaf, that it holds exactly its addressable shards (the devices and indices the
sharding assigns to it, every local device, no data for the other processes' devices) and
that each shard equals, bit for bit, the same slice of the unsharded draw it makes on one
local device. With 2 processes it also measures the peak resident memory of a sharded
draw of a 512 MiB tree against the same draw unsharded.

The workers run under a deadline and are killed (their whole process group) on failure
or timeout. A test is skipped only when ``jax.distributed`` cannot start, twice, each time
on a fresh port: a worker exits before its runtime is up (it reports the error and exits
with the worker's ``DISTRIBUTED_FAILED``, or dies inside ``jax.distributed.initialize``)
and no worker failed after starting. Any other failure, a timeout included, fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# 2 and 4 jax.distributed processes per test (60-75 s each on 2 cores): in CI's slow step
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_multiprocess_worker.py")
DEADLINE_S = 300  # for all the workers of one attempt together
MEMORY_MIB = 512


# what every process checks (tests/_multiprocess_worker.py): 6 leaves per reinit call (3 calls:
# eager; jit under jax.set_mesh; leaves that already are global arrays; only the first with
# --lean), 9 init_linen leaves, 6 init_nnx leaves; the memory tree's 4 leaves in process 0
def _n_checks(lean: bool) -> dict[str, int]:
  return {"reinit[": 6 if lean else 18, "init_linen ": 9, "init_nnx ": 6}


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _kill(proc: subprocess.Popen) -> bool:
  """Kills the worker's process group (its own session) if it still runs; True if it did."""
  running = proc.poll() is None
  if running:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  return running


def _tail(path: Path, n: int = 3000) -> str:
  text = path.read_text(errors="replace") if path.exists() else "(no output)"
  return text[-n:]


def _attempt(tmp_path: Path, tag: str, n: int, local: int, extra: list[str]):
  """Runs the N workers once; returns (exit statuses, killed, results, logs, seconds)."""
  port = _free_port()
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(WORKER.parent)])
  env["JAX_PLATFORMS"] = "cpu"
  # buffers of 1 MiB or more are mmapped and unmapped when freed, so RSS measures them
  env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
  procs, outs, logs, killed = [], [], [], []
  t0 = time.perf_counter()
  try:
    for i in range(n):
      out, log = tmp_path / f"{tag}_{i}.json", tmp_path / f"{tag}_{i}.log"
      cmd = [
        sys.executable, str(WORKER), "--num-processes", str(n), "--process-id", str(i),
        "--port", str(port), "--local-devices", str(local), "--out", str(out),
        *extra,
      ]  # fmt: skip
      with open(log, "wb") as f:
        procs.append(
          subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                           start_new_session=True)
        )  # fmt: skip
      outs.append(out)
      logs.append(log)
    deadline = t0 + DEADLINE_S
    while time.perf_counter() < deadline:
      codes = [p.poll() for p in procs]
      if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
        break  # all done, or one failed: the others would wait for it in a collective
      time.sleep(0.1)
  finally:
    killed = [_kill(p) for p in procs]
  codes = [p.returncode for p in procs]
  results = [json.loads(o.read_text()) if o.exists() else None for o in outs]
  return codes, killed, results, logs, time.perf_counter() - t0


def _run(tmp_path: Path, n: int, local: int, extra: list[str]):
  reasons = []
  for attempt in range(2):
    codes, killed, results, logs, seconds = _attempt(tmp_path, f"a{attempt}", n, local, extra)
    # a process that exited on its own before its distributed runtime was up (an error
    # reported with DISTRIBUTED_FAILED, or a crash inside jax.distributed.initialize)
    no_start = [
      i
      for i, (c, k, r) in enumerate(zip(codes, killed, results, strict=True))
      if c != 0 and not k and r is not None and not r["started"]
    ]
    # a process that failed on its own after it started, or left no result at all
    failed = [
      i
      for i, (c, k, r) in enumerate(zip(codes, killed, results, strict=True))
      if c != 0 and not k and (r is None or r["started"])
    ]
    if no_start and not failed:
      # jax.distributed could not start (the others were killed waiting for it): once more on
      # a fresh port (another program may have taken it meanwhile), then skip
      reasons = [
        f"process {i}: exit status {codes[i]}, {results[i]['error']}; log: "
        + _tail(logs[i], 300).strip().replace("\n", " | ")
        for i in no_start
      ]
      continue
    if any(c != 0 for c in codes):
      report = "\n".join(
        f"--- process {i}: exit status {c}{' (killed by the test)' if k else ''} ---\n{_tail(log)}"
        for i, (c, k, log) in enumerate(zip(codes, killed, logs, strict=True))
      )
      pytest.fail(
        f"{n} workers of {local} devices: a worker failed or ran past {DEADLINE_S} s "
        f"(after {seconds:.0f} s)\n{report}"
      )
    return results, seconds
  pytest.skip(f"jax.distributed cannot start on 127.0.0.1: {'; '.join(reasons)}")


def _check(results, n: int, local: int, lean: bool) -> None:
  n_checks = _n_checks(lean)
  for i, r in enumerate(results):
    assert r["process_index"] == i and r["process_count"] == n, r
    assert r["device_count"] == n * local and len(r["local_device_ids"]) == local, r
    assert Path(r["jaxinit"]).resolve().is_relative_to(ROOT), r["jaxinit"]
    assert r["failures"] == [], f"process {i}:\n" + "\n".join(r["failures"])
    for prefix, count in n_checks.items():
      got = [c for c in r["checked"] if c.startswith(prefix)]
      assert len(got) == count, (i, prefix, got)
  k = sum(n_checks.values())
  assert all(r["checked"][:k] == results[0]["checked"][:k] for r in results)


def _summary(results, seconds) -> str:
  phases = {k: max(r["timings"][k] for r in results) for k in results[0]["timings"]}
  return f"wall {seconds:.1f} s; slowest process per phase: " + ", ".join(
    f"{k} {v:.1f} s" for k, v in phases.items()
  )


def test_two_processes_of_four_devices(tmp_path):
  results, seconds = _run(tmp_path, 2, 4, ["--memory-mib", str(MEMORY_MIB)])
  _check(results, 2, 4, lean=False)
  print(_summary(results, seconds))
  mem = [r["memory"] for r in results]
  single = mem[0]["unsharded_peak"]
  model = mem[0]["model_bytes"]
  assert [c for c in results[0]["checked"] if c.startswith("memory tree ")] == [
    f"memory tree w{i}" for i in range(4)
  ]
  # the measurement sees the arrays: what is still held after the call is resident
  assert mem[0]["unsharded_kept"] >= 0.95 * model, mem[0]
  for i, m in enumerate(mem):
    assert m["sharded_held"] == model // 2, (i, m)  # this process's half of the tree
    assert m["sharded_kept"] >= 0.95 * m["sharded_held"], (i, m)
    ratio = m["sharded_peak"] / single
    print(
      f"process {i}: peak RSS increase {m['sharded_peak'] / 2**20:.0f} MiB sharded, "
      f"{single / 2**20:.0f} MiB unsharded ({model / 2**20:.0f} MiB tree): ratio {ratio:.3f}"
    )
    assert ratio <= 0.6, (i, m, single)


def test_four_processes_of_two_devices(tmp_path):
  results, seconds = _run(tmp_path, 4, 2, ["--lean"])
  _check(results, 4, 2, lean=True)
  print(_summary(results, seconds))


def test_lsuv_with_the_batch_sharded_over_two_processes(tmp_path):
  """Issue 14: LSUV scales with the batch sharded over 2 processes x 4 devices equal the
  single-device scales to 1e-5 relative (eager and jit); every layer's statistics are global
  (each process holds one half of a batch whose halves have different variances)."""
  results, seconds = _run(tmp_path, 2, 4, ["--phases", "lsuv"])
  for i, r in enumerate(results):
    assert r["process_index"] == i and r["process_count"] == 2 and r["device_count"] == 8, r
    assert Path(r["jaxinit"]).resolve().is_relative_to(ROOT), r["jaxinit"]
    assert r["failures"] == [], f"process {i}:\n" + "\n".join(r["failures"])
    assert r["checked"] == ["lsuv eager", "lsuv jit"], r["checked"]
    for mode in ("eager", "jit"):
      d = r["lsuv"][mode]
      print(
        f"process {i} {mode}: max rel diff vs one device: scales {d['d_scale']:.2e}, "
        f"params {d['d_params']:.2e}"
      )
      assert d["d_scale"] <= 1e-5 and d["d_params"] <= 1e-5, (i, mode, d)
      assert d["scale"] == results[0]["lsuv"][mode]["scale"]  # one result, every process
  print(_summary(results, seconds))
