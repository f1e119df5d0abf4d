"""The benchmark scripts still run: smoke runs of benchmarks/accelerator.py and of
benchmarks/lsuv.py --warm-cache on the CPU.

Timings are never checked; the smoke run only shows that every section runs to its end (or
says what its time budget skipped) on tiny sizes, so the script is ready for a GPU machine.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# whole benchmark processes (80 s and 25 s of CPU): in CI's slow step, not the default run
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_accelerator_benchmark_smoke_run():
  env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's jaxinit
  out = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / "accelerator.py"), "--smoke"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
    timeout=400,  # the script's own watchdog stops it at 200 s
    check=False,
  )
  text = out.stdout
  assert out.returncode == 0, text[-4000:] + out.stderr[-4000:]
  assert "SECTION FAILED" not in text and "TIME LIMIT" not in text
  assert "device(s):" in text and "torch" in text  # the device description
  sections = text.split("\n## ")[1:]
  assert [s.split(" (budget")[0] for s in sections] == [
    "1. orthogonal",
    "2. LSUV",
    "3. sharded model init",
  ]
  orthogonal, lsuv, sharded = sections
  # each section either produced its results or says that its budget skipped them
  for part, result in [
    (orthogonal, "jaxinit cholesky_qr"),
    (orthogonal, "auto picked: cholesky_qr False, stewart True"),  # CPU: auto is stewart
    (lsuv, "jaxinit.lsuv converged on every layer: True"),
    (sharded, "sharded == unsharded, bit for bit: True"),
  ]:
    assert result in part or "skipped" in part, part
  assert "max|QtQ-I|" in orthogonal and "### 32x32 float32" in orthogonal


def test_lsuv_warm_cache_smoke_run():
  """--warm-cache spawns jaxinit processes (cold, then warm persistent cache) and the torch
  reference's process (benchmarks/lsuv_torch.py), on the tiny MLP, with the redraw."""
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)  # the processes of a user: one CPU device
  cmd = [sys.executable, str(ROOT / "benchmarks" / "lsuv.py"), "--warm-cache", "--quick"]
  cmd += ["--repeat", "1", "--variants", "redraw"]
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=400)
  text = out.stdout
  assert out.returncode == 0, text[-4000:] + out.stderr[-4000:]
  assert "### orthonormal redraw" in text and "### given weights" not in text
  assert "jaxinit converged on every layer: True" in text
  assert "jaxinit, warm cache (0 compiled, x1)" in text  # the second process compiled nothing
  cold = int(text.split("jaxinit, cold cache (")[1].split(" compiled")[0])
  assert cold > 0
  if "torch reference" in text:  # torch is optional
    assert "ratio torch / jaxinit warm cache:" in text
