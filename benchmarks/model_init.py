"""Whole-model initialization: jaxinit rules vs Flax's own init, and the memory of the
sharded path.

1. Speed. A GPT-2-small-shaped Flax linen model (12 layers, d = 768, vocab 32,000,
   context 1,024, tied embedding: 110M parameters) is initialized
   (a) by Flax: ``jax.jit(model.init)(key, tokens)`` with Flax's default initializers
       (lecun_normal kernels, normal(1/sqrt(d)) embeddings, zero biases, unit scales);
   (b) by jaxinit rules that draw the same distributions on the same tree:
       ``jax.jit(lambda k: jaxinit.reinit(abstract, rules, k))(key)``, where
       ``abstract = jax.eval_shape(model.init, ...)`` (nothing allocated before);
   (c) by the same rules called eagerly (one cached compiled draw per distinct
       (initializer, shape, dtype)).
   First call (compile + run) and steady state (median of repeats) are reported, with
   the ratio jaxinit / Flax.
2. Memory, on 8 simulated CPU devices. Each path runs in a fresh subprocess and reports
   its peak resident set size above the RSS it had just before initializing:
   unsharded (one device), sharded (every leaf of rank >= 2 split 8 ways along an axis;
   jaxinit draws each shard in place), and the naive path that draws unsharded and then
   ``jax.device_put``\\ s to the same shardings. All simulated devices share the host's
   memory, so host RSS measures the *total*; the per-device figure comes from the
   compiled SPMD program's memory analysis (output + temporaries per device) of the
   jitted reinit, sharded vs unsharded.
3. Compile time against the leaf count (issue 13's bar: jitted ``reinit`` of a 400-leaf
   tree compiles in <= 0.5x the time of Flax's ``jax.jit(model.init)``). The same GPT
   with 33 blocks of width 128 (12 leaves a block + 4: 400 leaves, 6.9M parameters), so
   that compiling, not drawing, is what is measured: trace + lower + compile of each
   program, each in a fresh process (no in-memory cache shared between the two), the
   median of ``--compile-repeats`` processes.

Usage: ``PYTHONPATH=. python benchmarks/model_init.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

if "--child" not in sys.argv:
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import jaxinit

FULL = dict(layers=12, d=768, vocab=32000, ctx=1024)
QUICK = dict(layers=2, d=64, vocab=512, ctx=64)
LEAVES400 = dict(layers=33, d=128, vocab=1024, ctx=128)  # 33 * 12 + 4 = 400 leaves


class Block(nn.Module):
  d: int

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(name="ln_1")(x)
    qkv = nn.Dense(3 * self.d, name="c_attn")(h)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    att = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / np.sqrt(self.d).astype(np.float32))
    x = x + nn.Dense(self.d, name="c_proj")(att @ v)
    h = nn.LayerNorm(name="ln_2")(x)
    h = nn.Dense(4 * self.d, name="c_fc")(h)
    return x + nn.Dense(self.d, name="mlp_proj")(nn.gelu(h))


class GPT(nn.Module):
  layers: int
  d: int
  vocab: int
  ctx: int

  @nn.compact
  def __call__(self, tokens):
    wte = nn.Embed(self.vocab, self.d, name="wte")
    x = wte(tokens) + nn.Embed(self.ctx, self.d, name="wpe")(jnp.arange(tokens.shape[-1]))
    for i in range(self.layers):
      x = Block(self.d, name=f"h_{i}")(x)
    return wte.attend(nn.LayerNorm(name="ln_f")(x))


# The distributions of Flax's defaults, as jaxinit rules. nn.Embed's default is
# variance_scaling(1, "fan_in", "normal", out_axis=0) on (vocab, d): fan_in = d.
RULES = {
  ".*embedding": jaxinit.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0),
  ".*kernel": jaxinit.lecun_normal(),
  ".*bias": jaxinit.zeros(),
  ".*scale": jaxinit.ones(),
}


def _model(cfg):
  return GPT(**cfg), jnp.zeros((1, 8), jnp.int32)


def _specs(abstract):
  """Split every leaf of rank >= 2 eight ways along its largest axis divisible by 8."""
  P = jax.sharding.PartitionSpec

  def spec(x):
    if x.ndim < 2:
      return P()
    axes = [a for a in np.argsort(x.shape)[::-1] if x.shape[a] % 8 == 0]
    if not axes:
      return P()
    names = [None] * x.ndim
    names[int(axes[0])] = "x"
    return P(*names)

  return jax.tree.map(spec, abstract)


def _block(tree):
  jax.block_until_ready(tree)
  return tree


def _time_interleaved(fns, repeats):
  """First call of each, then ``repeats`` rounds that run every path once in turn (so
  a drifting machine load hits all paths alike); returns [(first, median)]."""
  firsts, times = [], [[] for _ in fns]
  for fn in fns:
    t = time.perf_counter()
    _block(fn())
    firsts.append(time.perf_counter() - t)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      t = time.perf_counter()
      _block(fn())
      times[i].append(time.perf_counter() - t)
  return [(f, float(np.median(ts))) for f, ts in zip(firsts, times, strict=True)]


def speed(cfg, repeats):
  model, tokens = _model(cfg)
  key = jax.random.key(0)
  abstract = jax.eval_shape(model.init, key, tokens)
  n = sum(x.size for x in jax.tree.leaves(abstract))
  flax_init = jax.jit(model.init)
  jaxinit_jit = jax.jit(lambda k: jaxinit.reinit(abstract, RULES, k))
  names = ["flax  jax.jit(model.init)", "jaxinit jit(reinit(abstract))", "jaxinit reinit eager"]
  fns = [
    lambda: flax_init(key, tokens),
    lambda: jaxinit_jit(key),
    lambda: jaxinit.reinit(abstract, RULES, key),
  ]
  rows = list(zip(names, _time_interleaved(fns, repeats), strict=True))
  # the rules draw the distributions Flax draws (checked on a few leaves' std)
  ours, theirs = jaxinit_jit(key)["params"], flax_init(key, tokens)["params"]
  for path in (("wte", "embedding"), ("h_0", "c_fc", "kernel")):
    a, b = ours, theirs
    for p in path:
      a, b = a[p], b[p]
    sa, sb = float(jnp.std(a)), float(jnp.std(b))
    assert abs(sa / sb - 1) < 0.02, (path, sa, sb)
  return n, rows


def memory_children(quick):
  out = {}
  for mode in ("unsharded", "sharded", "naive"):
    cmd = [sys.executable, __file__, "--child", mode] + (["--quick"] if quick else [])
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
      raise RuntimeError(f"child {mode} failed:\n{res.stderr[-3000:]}")
    out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
  return out


def _rss_mib():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmRSS")


def _peak_rss_mib():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM")


def child(mode, quick):
  """Initializes the model once along one path; prints JSON with peak RSS above baseline.

  The compilations happen inside the measured window on every path (a few MiB each).
  """
  cfg = QUICK if quick else FULL
  model, tokens = _model(cfg)
  key = jax.random.key(0)
  abstract = jax.eval_shape(model.init, key, tokens)
  mesh = jax.make_mesh((8,), ("x",))
  specs = _specs(abstract)
  shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs)
  _block(jnp.zeros(8) + 1)  # backend up before the baseline
  with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
    f.write("5")
  base = _rss_mib()
  if mode == "unsharded":
    out = jaxinit.reinit(abstract, RULES, key)
  elif mode == "sharded":
    out = jaxinit.reinit(abstract, RULES, key, shardings=shardings)
  else:  # naive: draw unsharded, then shard
    out = jax.device_put(jaxinit.reinit(abstract, RULES, key), shardings)
  _block(out)
  if mode == "naive":
    jax.effects_barrier()
  dev0 = jax.devices()[0]
  on_dev0 = sum(
    s.data.nbytes for x in jax.tree.leaves(out) for s in x.addressable_shards if s.device == dev0
  )
  total = sum(x.nbytes for x in jax.tree.leaves(out))
  print(
    json.dumps(
      dict(
        peak_above_base_mib=_peak_rss_mib() - base,
        total_mib=total / 2**20,
        device0_mib=on_dev0 / 2**20,
      )
    )
  )


def per_device_program(cfg):
  """Output + temporaries per device of the compiled reinit program, sharded vs not."""
  model, tokens = _model(cfg)
  abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
  mesh = jax.make_mesh((8,), ("x",))
  specs = _specs(abstract)
  res = {}
  for name, sh in (("unsharded", None), ("sharded", specs)):
    f = jax.jit(lambda k, sh=sh: jaxinit.reinit(abstract, RULES, k, shardings=sh, mesh=mesh))
    m = f.lower(jax.random.key(0)).compile().memory_analysis()
    res[name] = (m.output_size_in_bytes / 2**20, m.temp_size_in_bytes / 2**20)
  return res


def compile_child(which, cfg):
  """Trace + lower + compile one program in this fresh process; prints JSON seconds."""
  model, tokens = _model(cfg)
  key = jax.random.key(0)
  abstract = jax.eval_shape(model.init, key, tokens)
  leaves = len(jax.tree.leaves(abstract))
  t = time.perf_counter()
  if which == "flax":
    compiled = jax.jit(model.init).lower(key, tokens).compile()
    out = compiled(key, tokens)
  else:
    compiled = jax.jit(lambda k: jaxinit.reinit(abstract, RULES, k)).lower(key).compile()
    out = compiled(key)
  compile_s = time.perf_counter() - t
  _block(out)
  print(json.dumps(dict(compile_s=compile_s, leaves=leaves)))


def compile_times(cfg, repeats):
  """Median over ``repeats`` fresh processes of each program's trace + lower + compile."""
  res = {}
  for which in ("flax", "jaxinit"):
    times = []
    for _ in range(repeats):
      cmd = [sys.executable, __file__, "--child", f"compile-{which}", "--config", json.dumps(cfg)]
      env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
      r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
      if r.returncode != 0:
        raise RuntimeError(f"compile child {which} failed:\n{r.stderr[-3000:]}")
      d = json.loads(r.stdout.strip().splitlines()[-1])
      times.append(d["compile_s"])
    res[which] = (float(np.median(times)), d["leaves"], times)
  return res


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--repeats", type=int, default=None)
  ap.add_argument("--compile-repeats", type=int, default=None)
  ap.add_argument("--only-compile", action="store_true", help="run only part 3")
  ap.add_argument("--child", default=None)
  ap.add_argument("--config", default=None)
  args = ap.parse_args()
  if args.child and args.child.startswith("compile-"):
    compile_child(args.child.removeprefix("compile-"), json.loads(args.config))
    return
  if args.child:
    child(args.child, args.quick)
    return
  if args.only_compile:
    compile_part(args)
    return
  cfg = QUICK if args.quick else FULL
  repeats = args.repeats or (2 if args.quick else 7)
  print(f"# Model init ({'quick' if args.quick else 'GPT-2-small shape'}: {cfg})")
  print(
    f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
    f"load average {os.getloadavg()[0]:.2f} at start; jax {jax.__version__}, "
    f"{jax.device_count()} simulated CPU devices"
  )
  n, rows = speed(cfg, repeats)
  print(f"\nparameters: {n / 1e6:.1f}M (float32, {4 * n / 2**20:.0f} MiB)\n")
  print(f"| path | first call (compile + run) s | steady state s (median of {repeats}) |")
  print("|---|---|---|")
  for name, (first, steady) in rows:
    print(f"| {name} | {first:.2f} | {steady:.3f} |")
  flax_first, flax_steady = rows[0][1]
  for name, (first, steady) in rows[1:]:
    print(
      f"ratio {name} / flax: steady {steady / flax_steady:.3f}, first call {first / flax_first:.3f}"
    )

  per_dev = per_device_program(cfg)
  print("\nper-device memory of the compiled reinit program (8 devices), MiB:")
  print("| program | output | temporaries | output + temporaries |")
  print("|---|---|---|---|")
  for name, (o, t) in per_dev.items():
    print(f"| {name} | {o:.1f} | {t:.1f} | {o + t:.1f} |")
  ratio = sum(per_dev["sharded"]) / sum(per_dev["unsharded"])
  print(f"ratio sharded / unsharded per device: {ratio:.3f} (1/8 = 0.125)")

  mem = memory_children(args.quick)
  print(
    f"\nhost memory, one fresh process per path, peak RSS above the RSS before init, MiB "
    f"(load average {os.getloadavg()[0]:.2f}):"
  )
  print("| path | peak RSS above base | parameters total | held by device 0 |")
  print("|---|---|---|---|")
  for name, m in mem.items():
    print(
      f"| {name} | {m['peak_above_base_mib']:.0f} | {m['total_mib']:.0f} | {m['device0_mib']:.1f} |"
    )
  compile_part(args)


def compile_part(args):
  cfg = dict(QUICK, layers=4) if args.quick else LEAVES400
  reps = args.compile_repeats or (1 if args.quick else 3)
  res = compile_times(cfg, reps)
  leaves = res["flax"][1]
  print(
    f"\ncompile time, {leaves} leaves ({cfg}), trace + lower + compile in a fresh process, "
    f"median of {reps} (load average {os.getloadavg()[0]:.2f}):"
  )
  print("| program | seconds | each process |")
  print("|---|---|---|")
  for name, (med, _, times) in res.items():
    print(f"| {name} | {med:.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
  print(f"ratio jaxinit / flax compile: {res['jaxinit'][0] / res['flax'][0]:.3f} (bar <= 0.5)")


if __name__ == "__main__":
  main()
