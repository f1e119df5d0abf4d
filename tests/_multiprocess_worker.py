"""One process of the multi-process tests (tests/test_multiprocess.py); not a test module.

Run as ``python _multiprocess_worker.py --num-processes N --process-id I --port P
--local-devices D --out FILE [--memory-mib M] [--lean] [--phases P1,P2,...]``. The process
joins JAX's multi-controller runtime (``jax.distributed.initialize`` with the coordinator on
127.0.0.1, gloo CPU collectives), builds a global mesh over the N * D devices and initializes
parameters with ``jaxinit.reinit``, ``jaxinit.init_linen`` and ``jaxinit.init_nnx``. For every
leaf it checks that the process holds exactly its addressable shards, and that each
shard equals, bit for bit, the same slice of the unsharded draw made in this process
on one local device. With ``--memory-mib M`` it also measures the peak resident memory of
a sharded ``reinit`` of an M MiB tree, and (process 0) of the same draw unsharded. With
``--lean`` it makes one ``reinit`` call (eager) instead of three. ``--phases`` picks the phases
(default: reinit, init_linen, init_nnx); ``lsuv`` runs ``jaxinit.lsuv`` with the batch sharded
over every device of every process and compares it with the same LSUV on one local device.

It writes one JSON object to ``--out``, three times: ``{"started": false, ...}`` before
the distributed runtime starts (it stays if the process dies there), then with exit status
``DISTRIBUTED_FAILED`` and the error if ``jax.distributed.initialize`` or the creation of
the devices raises; ``{"started": true}`` once the runtime is up; at the end, the checks
made (``"checked"``), the failures found (``"failures"``), measurements and timings. An
exception after the start propagates (a traceback on stderr, exit status 1).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time

# Exit status when jax.distributed cannot start (the test is then skipped).
DISTRIBUTED_FAILED = 75


def _parse(argv):
  p = argparse.ArgumentParser()
  p.add_argument("--num-processes", type=int, required=True)
  p.add_argument("--process-id", type=int, required=True)
  p.add_argument("--port", type=int, required=True)
  p.add_argument("--local-devices", type=int, required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--memory-mib", type=int, default=0)
  p.add_argument("--init-timeout", type=int, default=60)
  p.add_argument("--lean", action="store_true", help="reinit: the eager call only")
  p.add_argument(
    "--phases",
    default="reinit,init_linen,init_nnx",
    help="comma-separated phases to run: reinit, init_linen, init_nnx, lsuv",
  )
  return p.parse_args(argv)


def _write(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f)
  os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Memory: the resident set's high-water mark, reset before each measured phase.
# ---------------------------------------------------------------------------


def _status_kib(field):
  with open("/proc/self/status") as f:
    return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _reset_peak():
  """Resets VmHWM to the current VmRSS (Linux >= 4.0, /proc/self/clear_refs '5')."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def _measure(fn):
  """(result, peak RSS increase, RSS increase kept) in bytes of one call of ``fn``.

  ``fn`` runs a compiled executable, so the increase is what the draw itself
  allocates. Buffers of 1 MiB or more come
  from mmap (MALLOC_MMAP_THRESHOLD_ is fixed by the test), so freed ones leave the
  resident set and cannot hide later allocations.
  """
  gc.collect()
  _reset_peak()
  base = _status_kib("VmRSS")
  out = fn()
  import jax

  jax.block_until_ready(out)
  peak = _status_kib("VmHWM")
  now = _status_kib("VmRSS")
  return out, (peak - base) * 1024, (now - base) * 1024


# ---------------------------------------------------------------------------
# The checks.
# ---------------------------------------------------------------------------


class Checker:
  def __init__(self, jax, np):
    self.jax, self.np = jax, np
    self.checked: list[str] = []
    self.failures: list[str] = []

  def fail(self, what, msg):
    self.failures.append(f"{what}: {msg}")

  def bits(self, x):
    x = self.np.asarray(x)
    return x.view(f"u{x.dtype.itemsize}") if x.dtype.itemsize in (1, 2, 4, 8) else x

  def leaf(self, what, arr, sharding, full):
    """``arr``: a global array that should have ``sharding``; ``full``: the unsharded draw."""
    jax, np = self.jax, self.np
    self.checked.append(what)
    n0 = len(self.failures)
    if not isinstance(arr, jax.Array):
      return self.fail(what, f"not a jax.Array: {type(arr).__name__}")
    if arr.shape != full.shape or arr.dtype != full.dtype:
      return self.fail(what, f"{arr.shape} {arr.dtype}, unsharded {full.shape} {full.dtype}")
    if not arr.sharding.is_equivalent_to(sharding, arr.ndim):
      self.fail(what, f"sharding {arr.sharding}, expected {sharding}")
    if arr.sharding.device_set != set(jax.devices()):
      self.fail(what, f"spans {len(arr.sharding.device_set)} devices, not the global mesh")
    if arr.is_fully_addressable:
      self.fail(what, "fully addressable: the array is not global")
    local = set(jax.local_devices())
    shards = arr.addressable_shards
    devs = [s.device for s in shards]
    if len(devs) != len(set(devs)) or set(devs) != local:
      self.fail(
        what,
        f"addressable shards on {sorted(d.id for d in devs)}, local devices "
        f"{sorted(d.id for d in local)}",
      )
    index_map = sharding.devices_indices_map(arr.shape)
    want_shape = sharding.shard_shape(arr.shape)
    full_np = np.asarray(full)
    for s in shards:
      if s.data.devices() != {s.device}:
        self.fail(what, f"shard for {s.device} lives on {s.data.devices()}")
      if _norm(s.index, arr.shape) != _norm(index_map[s.device], arr.shape):
        self.fail(
          what, f"shard on {s.device} has index {s.index}, the sharding says {index_map[s.device]}"
        )
      if s.data.shape != want_shape:
        self.fail(what, f"shard on {s.device} has shape {s.data.shape}, expected {want_shape}")
        continue
      want = full_np[s.index]
      if not np.array_equal(self.bits(s.data), self.bits(want)):
        diff = int((self.bits(s.data) != self.bits(want)).sum())
        self.fail(
          what,
          f"shard on {s.device} {s.index}: {diff} of {want.size} values differ "
          "from the unsharded draw",
        )
    # nothing of the other processes' shards is materialized here
    for s in arr.global_shards:
      if s.device not in local and s.data is not None:
        self.fail(what, f"holds data for the non-addressable device {s.device}")
    local_bytes = sum(s.data.nbytes for s in shards)
    want_bytes = len(local) * int(np.prod(want_shape)) * arr.dtype.itemsize
    if local_bytes != want_bytes:
      self.fail(what, f"{local_bytes} bytes local, expected {want_bytes}")
    return len(self.failures) == n0


def _norm(index, shape):
  return tuple(slice(*sl.indices(d)) for sl, d in zip(index, shape, strict=True))


# ---------------------------------------------------------------------------
# The phases.
# ---------------------------------------------------------------------------


def _phase_reinit(jax, jnp, np, jaxinit, check, mesh, mesh8, key, full_set):
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  sds = jax.ShapeDtypeStruct
  tree = {
    "conv": {"kernel": sds((3, 3, 8, 16), jnp.float32), "bias": sds((16,), jnp.float32)},
    "dense": {"kernel": sds((32, 64), jnp.bfloat16)},
    "ortho": sds((16, 24), jnp.float32),
    "sparse": sds((24, 32), jnp.float32),
    "foreign": sds((16, 32), jnp.float32),
  }
  rules = {
    "conv/kernel": jaxinit.he_normal(),
    ".*bias": jaxinit.torch_bias(),
    "dense/kernel": jaxinit.truncated_normal(0.02, exact_std=True),
    "ortho": jaxinit.orthogonal(),
    "sparse": jaxinit.sparse(num_nonzero=3),
    "foreign": jax.nn.initializers.normal(0.5),  # any init(key, shape, dtype) callable
  }
  # PartitionSpecs on the 2-D mesh ("data" spans processes), and NamedShardings on the 1-D
  # mesh of all devices for two leaves
  specs = {
    "conv": {"kernel": P(None, None, None, "model"), "bias": P("model")},
    "dense": {"kernel": P("data", "model")},
    "ortho": P(None, ("data", "model")),
    "sparse": NamedSharding(mesh8, P("x", None)),
    "foreign": P("data", None),
  }
  named = jax.tree.map(
    lambda s: s if isinstance(s, NamedSharding) else NamedSharding(mesh, s),
    specs,
    is_leaf=lambda x: isinstance(x, P | NamedSharding),
  )
  # the reference: the unsharded draw, on one local device
  full = jax.jit(lambda k: jaxinit.reinit(tree, rules, k))(key)
  for leaf in jax.tree.leaves(full):
    assert leaf.devices() == {jax.local_devices()[0]}, leaf.devices()
  paths = jaxinit.leaf_paths(full)
  flat_named = jax.tree.leaves(named)
  assert len(paths) == len(flat_named) == 6, paths

  def compare(name, out, expected=flat_named):
    for p, a, s, f in zip(
      paths, jax.tree.leaves(out), expected, jax.tree.leaves(full), strict=True
    ):
      check.leaf(f"reinit[{name}] {p}", a, s, f)

  out = jaxinit.reinit(tree, rules, key, shardings=specs, mesh=mesh)
  compare("eager", out)
  if not full_set:
    return
  # under jax.set_mesh (Explicit axes) and jit: the draws run in auto_axes (every sharding
  # on the context's mesh, as jax requires there)
  specs_ctx = {**specs, "sparse": P(("data", "model"), None)}
  with jax.set_mesh(mesh):
    jitted = jax.jit(lambda k: jaxinit.reinit(tree, rules, k, shardings=specs_ctx))(key)
  named_ctx = jax.tree.map(
    lambda s: NamedSharding(mesh, s), specs_ctx, is_leaf=lambda x: isinstance(x, P)
  )
  compare("set_mesh + jit", jitted, jax.tree.leaves(named_ctx))
  # leaves that already are global arrays keep their sharding when redrawn
  compare("existing global leaves", jaxinit.reinit(out, rules, key))


def _phase_linen(jax, jnp, np, jaxinit, check, mesh, key):
  from flax import linen as nn
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  part = nn.with_partitioning

  class Net(nn.Module):
    @nn.compact
    def __call__(self, ids):
      x = nn.Embed(64, 32, embedding_init=part(nn.initializers.normal(1.0), ("data", "model")))(ids)
      x = nn.Conv(
        16, (3,), kernel_init=part(nn.initializers.lecun_normal(), (None, "data", "model"))
      )(x)
      x = nn.Dense(
        64,
        kernel_init=part(nn.initializers.lecun_normal(), (None, "model")),
        bias_init=part(nn.initializers.zeros, ("model",)),
      )(x)
      x = nn.LayerNorm()(x)  # unannotated: replicated
      return nn.Dense(8, kernel_init=part(nn.initializers.lecun_normal(), ("model", "data")))(x)

  ids = jnp.zeros((2, 5), jnp.int32)
  rules = {
    "params/Conv_0/kernel": jaxinit.he_normal(),
    ".*Dense_0/bias": jaxinit.torch_bias(),
    ".*Dense_1/kernel": jaxinit.orthogonal(),
  }
  v = jaxinit.init_linen(Net(), key, ids, rules=rules, mesh=mesh)
  # the reference: module.init then reinit, unsharded, on one local device
  ref = jax.jit(lambda k, x: jaxinit.reinit(Net().init(k, x), rules, k))(key, ids)
  want = {
    "params/Embed_0/embedding": P("data", "model"),
    "params/Conv_0/kernel": P(None, "data", "model"),
    "params/Conv_0/bias": P(),
    "params/Dense_0/kernel": P(None, "model"),
    "params/Dense_0/bias": P("model"),
    "params/LayerNorm_0/scale": P(),
    "params/LayerNorm_0/bias": P(),
    "params/Dense_1/kernel": P("model", "data"),
    "params/Dense_1/bias": P(),
  }
  paths = jaxinit.leaf_paths(v)
  assert sorted(paths) == sorted(want), paths
  boxed = jax.tree.leaves(v, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  for p, a, f in zip(paths, boxed, jax.tree.leaves(nn.unbox(ref)), strict=True):
    if want[p] != P() and not isinstance(a, nn.Partitioned):
      check.fail(f"init_linen {p}", f"lost its nn.Partitioned box: {type(a).__name__}")
    check.leaf(f"init_linen {p}", nn.unbox(a), NamedSharding(mesh, want[p]), f)


def _phase_nnx(jax, jnp, np, jaxinit, check, mesh, key):
  from flax import nnx
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  part = nnx.with_partitioning

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.up = nnx.Linear(
        32,
        64,
        rngs=rngs,
        kernel_init=part(nnx.initializers.lecun_normal(), ("data", "model")),
        bias_init=part(nnx.initializers.zeros_init(), ("model",)),
      )
      self.down = nnx.Linear(
        64, 32, rngs=rngs, kernel_init=part(nnx.initializers.lecun_normal(), ("model", None))
      )
      self.norm = nnx.LayerNorm(32, rngs=rngs)

  rules = {"up/kernel": jaxinit.he_normal(), "down/bias": jaxinit.torch_bias()}
  model = jaxinit.init_nnx(lambda: Block(nnx.Rngs(3)), key, rules=rules, mesh=mesh)
  # the reference: the same model built on one local device (a 1-device mesh with the same
  # axis names, as nnx needs one to build annotated Variables), then reinit of its state
  local = jax.make_mesh((1, 1), ("data", "model"), devices=jax.local_devices()[:1])
  with jax.set_mesh(local):
    ref = jax.jit(lambda k: jaxinit.reinit(nnx.state(Block(nnx.Rngs(3)), nnx.Param), rules, k))(key)
  want = {
    "up/kernel": P("data", "model"),
    "up/bias": P("model"),
    "down/kernel": P("model", None),
    "down/bias": P(),
    "norm/scale": P(),
    "norm/bias": P(),
  }
  state = nnx.state(model, nnx.Param)
  paths = jaxinit.leaf_paths(state)
  assert sorted(paths) == sorted(want), paths
  for p, a, f in zip(paths, jax.tree.leaves(state), jax.tree.leaves(ref), strict=True):
    assert f.devices() == {jax.local_devices()[0]}, (p, f.devices())
    check.leaf(f"init_nnx {p}", a, NamedSharding(mesh, want[p]), f)


def _phase_memory(jax, jnp, np, jaxinit, check, mesh, key, pid, mib):
  """Peak RSS increase of a sharded reinit of a ``mib`` MiB tree in this process, and of the
  same draw unsharded on one device (process 0 only).

  Each draw is a jitted reinit compiled ahead of time, so the measured window holds the
  execution alone (compilation is not part of a draw's memory; and a warm-up run would
  double the test's draw time).
  """
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  sds = jax.ShapeDtypeStruct
  rows = mib * 2**20 // (4 * 4 * 8192)
  tree = {f"w{i}": sds((rows, 8192), jnp.float32) for i in range(4)}
  rules = {
    "w0": jaxinit.he_normal(),
    "w1": jaxinit.glorot_uniform(),
    "w2": jaxinit.truncated_normal(0.02),
    "w3": jaxinit.normal(),
  }
  specs = {
    "w0": P("data", "model"),
    "w1": P(None, ("data", "model")),
    "w2": P(("data", "model"), None),
    "w3": P("model", "data"),
  }
  total = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in tree.values())
  res = {"model_bytes": total}

  t = time.perf_counter()
  sharded = (
    jax.jit(lambda k: jaxinit.reinit(tree, rules, k, shardings=specs, mesh=mesh))
    .lower(key)
    .compile()
  )
  res["sharded_compile_s"] = time.perf_counter() - t
  t = time.perf_counter()
  out, peak, kept = _measure(lambda: sharded(key))
  res["sharded_s"] = time.perf_counter() - t
  held = sum(s.data.nbytes for a in jax.tree.leaves(out) for s in a.addressable_shards)
  res.update(sharded_peak=peak, sharded_kept=kept, sharded_held=held)
  if pid == 0:  # the same model drawn unsharded, on one device
    t = time.perf_counter()
    unsharded = jax.jit(lambda k: jaxinit.reinit(tree, rules, k)).lower(key).compile()
    res["unsharded_compile_s"] = time.perf_counter() - t
    t = time.perf_counter()
    full, peak1, kept1 = _measure(lambda: unsharded(key))
    res["unsharded_s"] = time.perf_counter() - t
    res.update(unsharded_peak=peak1, unsharded_kept=kept1)
    named = {k: NamedSharding(mesh, s) for k, s in specs.items()}
    for k in sorted(tree):
      check.leaf(f"memory tree {k}", out[k], named[k], full[k])
  return res


def _phase_lsuv(jax, jnp, np, jaxinit, check):
  """LSUV with the batch sharded over all devices of all processes, against one device.

  The batch (128 examples: rows 0-63, process 0's, have standard deviation 1, rows 64-127
  have 3, so per-process statistics would differ from the global ones) is one global array
  sharded over a mesh of every device ('data', Auto axes); the parameters are replicated.
  The reference is the same LSUV in this process on one local device, with the whole batch.
  Eager and under jit; returns the largest relative differences (scales; parameters: per
  leaf max |a - b| / max |b|) and the scales.
  """
  from _lsuv_models import LinenMLP, fast_init
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  auto = jax.sharding.AxisType.Auto
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(auto,))
  rng = np.random.default_rng(1)
  x_np = np.concatenate([rng.standard_normal((64, 16)), 3 * rng.standard_normal((64, 16))])
  x_np = x_np.astype(np.float32)
  model = LinenMLP()
  variables = fast_init(model, jnp.asarray(x_np))  # numpy draws: the same in every process
  host = jax.tree.map(np.asarray, variables)

  def global_array(a, spec):
    return jax.make_array_from_callback(a.shape, NamedSharding(mesh, spec), lambda i: a[i])

  xs = global_array(x_np, P("data"))
  vs = jax.tree.map(lambda a: global_array(a, P()), host)
  ref, ref_report = jaxinit.lsuv(model, variables, jnp.asarray(x_np))  # one local device
  ref_scale = np.asarray(ref_report.scale, np.float64)
  out = {}
  for mode in ("eager", "jit"):
    what = f"lsuv {mode}"
    check.checked.append(what)
    if mode == "eager":
      new, report = jaxinit.lsuv(model, vs, xs)
    else:
      new, report = jax.jit(lambda v, x: jaxinit.lsuv(model, v, x))(vs, xs)
    scale = np.asarray(report.scale, np.float64)
    d_scale = float(np.max(np.abs(scale / ref_scale - 1)))
    d_params = 0.0
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref), strict=True):
      b = np.asarray(b, np.float64)
      if a.is_fully_addressable or not a.sharding.is_fully_replicated:
        check.fail(what, f"a parameter is not a replicated global array: {a.sharding}")
        continue
      for s in a.addressable_shards:
        diff = np.max(np.abs(np.asarray(s.data, np.float64) - b[s.index]))
        d_params = max(d_params, float(diff / max(np.max(np.abs(b)), 1e-30)))
    if not bool(np.all(np.asarray(report.converged))):
      check.fail(what, f"not every layer converged: {report}")
    out[mode] = {"d_scale": d_scale, "d_params": d_params, "scale": scale.tolist()}
  out["reference_scale"] = ref_scale.tolist()
  return out


def main(argv=None):
  args = _parse(argv)
  flags = [
    f
    for f in os.environ.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  flags.append(f"--xla_force_host_platform_device_count={args.local_devices}")
  os.environ["XLA_FLAGS"] = " ".join(flags)
  os.environ["JAX_PLATFORMS"] = "cpu"
  t0 = time.perf_counter()
  # Written before the distributed runtime starts: if the process dies in there (it was
  # once seen to crash with SIGSEGV when the coordinator's port was taken), this is left.
  result = {"process_id": args.process_id, "started": False, "error": "died while starting"}
  _write(args.out, result)
  import jax

  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=f"127.0.0.1:{args.port}",
      coordinator_bind_address=f"127.0.0.1:{args.port}",  # not every interface
      num_processes=args.num_processes,
      process_id=args.process_id,
      initialization_timeout=args.init_timeout,
    )
    devices = jax.devices()  # creates the CPU client with its gloo collectives
  except Exception as e:  # the distributed runtime could not start: reported, not raised
    result["error"] = f"{type(e).__name__}: {e}"
    _write(args.out, result)
    sys.exit(DISTRIBUTED_FAILED)
  result["started"] = True
  del result["error"]
  _write(args.out, result)  # from here on, any failure is a failure of the test
  result["init_s"] = time.perf_counter() - t0

  import jax.numpy as jnp
  import numpy as np

  import jaxinit

  jax.config.update("jax_numpy_dtype_promotion", "strict")
  result["jaxinit"] = jaxinit.__file__
  result["process_count"] = jax.process_count()
  result["process_index"] = jax.process_index()
  result["device_count"] = len(devices)
  result["local_device_ids"] = [d.id for d in jax.local_devices()]
  result["device_processes"] = [d.process_index for d in devices]

  check = Checker(jax, np)
  mesh = jax.make_mesh((2, 4), ("data", "model"))
  mesh8 = jax.make_mesh((8,), ("x",))
  key = jax.random.key(2024)
  timings = {}
  phases = [
    (
      "reinit",
      lambda: _phase_reinit(jax, jnp, np, jaxinit, check, mesh, mesh8, key, not args.lean),
    ),
    ("init_linen", lambda: _phase_linen(jax, jnp, np, jaxinit, check, mesh, key)),
    ("init_nnx", lambda: _phase_nnx(jax, jnp, np, jaxinit, check, mesh, key)),
    ("lsuv", lambda: _phase_lsuv(jax, jnp, np, jaxinit, check)),
  ]
  wanted = args.phases.split(",")
  for name, phase in phases:
    if name not in wanted:
      continue
    t = time.perf_counter()
    value = phase()
    if value is not None:
      result[name] = value
    timings[name] = time.perf_counter() - t
  if args.memory_mib:
    t = time.perf_counter()
    result["memory"] = _phase_memory(
      jax, jnp, np, jaxinit, check, mesh, key, args.process_id, args.memory_mib
    )
    timings["memory"] = time.perf_counter() - t
  result.update(checked=check.checked, failures=check.failures, timings=timings)
  result["total_s"] = time.perf_counter() - t0
  _write(args.out, result)


if __name__ == "__main__":
  main()
