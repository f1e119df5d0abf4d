"""jaxinit.enable_compilation_cache: a second process reuses the first one's compilations.

Two fresh Python processes run the same LSUV (a small MLP given as a pure function, with
the orthonormal redraw) with the cache enabled in one temporary directory. The first
compiles every program and stores it; the second must find every program it compiles in
the cache (JAX's monitoring events '/jax/compilation_cache/cache_hits' and
'cache_misses', counted in each process), write nothing new (the directory's files, sizes
and modification times are unchanged), and give bit-identical results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxinit

ROOT = Path(__file__).resolve().parents[1]

# One process: enable the cache, count cache events, run LSUV, save the result.
SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import jax, jax.numpy as jnp, numpy as np
import jaxinit

cache_dir, out = sys.argv[1], sys.argv[2]
jaxinit.enable_compilation_cache(cache_dir)
events = {"hits": 0, "misses": 0}
def listen(event, **kwargs):
  if event == "/jax/compilation_cache/cache_hits":
    events["hits"] += 1
  elif event == "/jax/compilation_cache/cache_misses":
    events["misses"] += 1
jax.monitoring.register_event_listener(listen)

rng = np.random.default_rng(0)
sizes = (16, 32, 32, 32, 10)
params = {
  f"l{i}": {"w": jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
            "b": jnp.asarray(0.3 * rng.standard_normal(b), jnp.float32)}
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
}
def apply(p, x):
  for i in range(len(p)):
    x = x @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"]
    x = jax.nn.relu(x) if i < len(p) - 1 else x
  return x
x = jnp.asarray(3 * rng.standard_normal((128, 16)), jnp.float32)
new, report = jaxinit.lsuv(apply, params, x, key=jax.random.key(4))
leaves = [np.asarray(a) for a in jax.tree.leaves(new)] + [np.asarray(report.scale)]
np.savez(out + ".npz", *leaves)
json.dump({**events, "converged": bool(report.converged.all()),
           "seconds": time.perf_counter() - t0}, open(out, "w"))
"""


def _run(cache_dir: Path, out: Path) -> dict:
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's process
  proc = subprocess.run(
    [sys.executable, "-c", SCRIPT, str(cache_dir), str(out)],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return json.loads(out.read_text())


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
  return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_a_second_process_reuses_the_cache(tmp_path):
  cache = tmp_path / "cache"
  first = _run(cache, tmp_path / "first.json")
  stored = _listing(cache)
  second = _run(cache, tmp_path / "second.json")
  print(f"first process: {first}; second process: {second}; {len(stored)} cache files")
  assert first["converged"] and second["converged"]
  # the first process compiled everything (nothing was there) and stored it
  assert first["hits"] == 0 and first["misses"] > 0 and len(stored) >= first["misses"]
  # the second found every program it compiled, and wrote nothing
  assert second["misses"] == 0 and second["hits"] == first["misses"], (first, second)
  assert _listing(cache) == stored
  a, b = np.load(tmp_path / "first.json.npz"), np.load(tmp_path / "second.json.npz")
  assert a.files == b.files
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])


def test_errors(tmp_path):
  import jax

  before = jax.config.jax_compilation_cache_dir
  afile = tmp_path / "file"
  afile.write_text("")
  prefix = "jaxinit.enable_compilation_cache: "
  with pytest.raises(ValueError, match=f"^{prefix}`path` .* exists and is not a directory"):
    jaxinit.enable_compilation_cache(afile)
  with pytest.raises(ValueError, match=f"^{prefix}`path` .* cannot be created"):
    jaxinit.enable_compilation_cache(afile / "sub")
  with pytest.raises(TypeError, match=f"^{prefix}`path` must be a str, an os.PathLike or None"):
    jaxinit.enable_compilation_cache(3)  # type: ignore[arg-type]
  with pytest.raises(ValueError, match=f"^{prefix}`path` must be a non-empty directory path"):
    jaxinit.enable_compilation_cache("")
  with pytest.raises(ValueError, match=f"^{prefix}`min_compile_time_secs` must be >= 0, got -1"):
    jaxinit.enable_compilation_cache(tmp_path, min_compile_time_secs=-1)
  with pytest.raises(ValueError, match=f"^{prefix}`min_compile_time_secs` must be finite"):
    jaxinit.enable_compilation_cache(tmp_path, min_compile_time_secs=float("nan"))
  with pytest.raises(TypeError, match=f"^{prefix}`min_compile_time_secs` must be a real number"):
    jaxinit.enable_compilation_cache(tmp_path, min_compile_time_secs="1")  # type: ignore[arg-type]
  # nothing was changed by the failed calls
  assert jax.config.jax_compilation_cache_dir == before


def test_defaults_and_return_value(tmp_path, monkeypatch):
  import jax
  from jax.experimental.compilation_cache import compilation_cache

  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  saved = {
    k: getattr(jax.config, k)
    for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  }
  try:
    path = jaxinit.enable_compilation_cache(min_compile_time_secs=2)
    assert path == tmp_path / "xdg" / "jaxinit" / "jax" and path.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == 0
  finally:
    for k, v in saved.items():
      jax.config.update(k, v)
    compilation_cache.reset_cache()
