"""Every jitted routine lowers for cpu, cuda, rocm and tpu, on this CPU-only machine.

``jax.export.export(jax.jit(f), platforms=PLATFORMS)`` lowers a function for several
platforms at once without their hardware (one StableHLO module in which each
platform-specific lowering rule becomes a branch on the platform index). It fails when a
primitive has no lowering for a platform, and ``jax.export``'s own safety check refuses
custom calls that are not guaranteed stable (host callbacks, unversioned kernels). The
routines: every registered initializer at float32 and bfloat16, the orthogonal family's
methods (also complex64 and a batch of matrices), ``reinit`` (unsharded and with
shardings over the 8 simulated CPU devices), ``init_linen`` and ``init_nnx`` with
shardings, jitted ``lsuv`` on a conv net and a transformer block, and the jitted cores of
the diagnostics. For a module that holds custom calls, each platform is exported alone as
well, to say which platform needs which call (:func:`custom_call_table`).

Sharded routines export with their shardings for every platform: the module records
them per device of the mesh (8 here), platform-independently. What this machine cannot
check is the SPMD partitioning itself for GPU and TPU, which XLA runs when the module is
compiled on the target; the exported sharded ``reinit`` is compiled and run here on the 8
CPU devices (:func:`test_exported_sharded_reinit_runs_on_cpu`).

Nothing is allowed to fail today: ``ALLOWED_FAILURES`` is empty. A routine that cannot
lower for a platform must be listed there with the reason, and its docstring and the README
must name the platform (the test checks both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import sys
import time

# as conftest.py, for `python tests/test_lowering.py` (prints the table)
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinit
from jaxinit._src import orthogonal as orthogonal_lib
from jaxinit._src import registry

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
README = Path(__file__).resolve().parents[1] / "README.md"

# (routine as named in the table, platform) -> (the public function, e.g. "orthogonal" or
# "diagnostics.jacobian_spectrum", and why it does not lower there). The function's docstring
# and the README must name the platform. Empty: everything lowers everywhere (jax 0.10.2).
ALLOWED_FAILURES: dict[tuple[str, str], tuple[str, str]] = {}

# The custom calls each platform may need, reviewed: all are in jax.export's list of targets
# guaranteed stable. A new one (another factorization, a Pallas kernel, a callback) fails
# the test until it is reviewed here and its platforms are checked.
KNOWN_CUSTOM_CALLS: dict[str, dict[str, str]] = {
  "cpu": {
    **{f"lapack_{t}orgqr_ffi": "LAPACK orgqr: product of Householder reflectors" for t in "sd"},
    **{f"lapack_{t}ungqr_ffi": "LAPACK ungqr: the same, complex" for t in "cz"},
    **{f"lapack_{t}geqrf_ffi": "LAPACK geqrf: Householder QR" for t in "sdcz"},
    **{f"lapack_{t}potrf_ffi": "LAPACK potrf: Cholesky (orthogonal's cholesky_qr)" for t in "sdcz"},
    **{f"lapack_{t}trsm_ffi": "BLAS trsm: triangular solve (cholesky_qr)" for t in "sdcz"},
  },
  "cuda": {
    "cusolver_orgqr_ffi": "cuSOLVER orgqr/ungqr",
    "cusolver_geqrf_ffi": "cuSOLVER geqrf",
    "cublas_geqrf_batched_ffi": "cuBLAS batched geqrf (small matrices)",
    "cusolver_potrf_ffi": "cuSOLVER potrf: Cholesky (cholesky_qr)",
  },
  "rocm": {
    "hipsolver_orgqr_ffi": "hipSOLVER orgqr/ungqr",
    "hipsolver_geqrf_ffi": "hipSOLVER geqrf",
    "hipblas_geqrf_batched_ffi": "hipBLAS batched geqrf (small matrices)",
    "hipsolver_potrf_ffi": "hipSOLVER potrf: Cholesky (cholesky_qr)",
  },
  "tpu": {
    "ProductOfElementaryHouseholderReflectors": "XLA:TPU's householder_product",
    "Qr": "XLA:TPU's QR",
  },
}

KEY = jax.random.key(0)
SHAPE = (3, 3, 16, 32)  # a conv kernel: every initializer accepts it
_RNG = np.random.default_rng(0)  # inputs drawn with numpy: jax.random would compile each shape


def _normal(*shape):
  return jnp.asarray(_RNG.standard_normal(shape), jnp.float32)


_CUSTOM_CALL = re.compile(r"stablehlo\.custom_call @([\w.$-]+)")


@dataclasses.dataclass(frozen=True)
class Routine:
  """A function to export: ``fn(*args)``, lowered under ``context()`` (e.g. a mesh)."""

  name: str
  fn: Callable[..., Any]
  args: tuple
  context: Callable[[], Any] = contextlib.nullcontext


@dataclasses.dataclass(frozen=True)
class Lowered:
  """What exporting a routine gave: per platform, its custom calls or the error."""

  name: str
  custom_calls: dict[str, tuple[str, ...]]
  failures: dict[str, str]
  seconds: float
  exported: Any = None  # the multi-platform jax.export.Exported, when it succeeded


def _targets(module_text: str) -> tuple[str, ...]:
  return tuple(sorted(set(_CUSTOM_CALL.findall(module_text))))


def _error(e: Exception) -> str:
  return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"


def lower(routine: Routine, platforms: tuple[str, ...] = PLATFORMS) -> Lowered:
  """Exports ``routine`` for all ``platforms`` at once; per platform only where needed.

  A module without custom calls needs no attribution: every platform's module is free
  of them. Otherwise (or when the joint export fails) each platform is exported alone.
  """
  t = time.perf_counter()
  jitted = routine.fn if hasattr(routine.fn, "trace") else jax.jit(routine.fn)
  with routine.context():
    try:
      exported = export.export(jitted, platforms=platforms)(*routine.args)
      joint = _targets(exported.mlir_module())
    except Exception:
      exported, joint = None, None
    calls: dict[str, tuple[str, ...]] = {}
    failures: dict[str, str] = {}
    if joint == ():
      calls = dict.fromkeys(platforms, ())
    else:
      for p in platforms:
        try:
          calls[p] = _targets(export.export(jitted, platforms=(p,))(*routine.args).mlir_module())
        except Exception as e:
          failures[p] = _error(e)
  return Lowered(routine.name, calls, failures, time.perf_counter() - t, exported)


# ---------------------------------------------------------------------------
# The routines.
# ---------------------------------------------------------------------------


def _initializer_routines() -> list[Routine]:
  sys.path.insert(0, str(Path(__file__).parent))
  from _cases import CASES

  out = []
  for name in registry.names(include_aliases=False):
    if name not in CASES:
      raise AssertionError(f"initializer {name!r} has no entry in tests/_cases.py")
    init = CASES[name][0][0]
    out.append(
      Routine(
        f"{name} (f32, bf16)",
        functools.partial(lambda i, k: (i(k, SHAPE, jnp.float32), i(k, SHAPE, jnp.bfloat16)), init),
        (KEY,),
      )
    )
  for method in orthogonal_lib.METHODS:
    init = jaxinit.orthogonal(method=method)
    stack = jaxinit.orthogonal(method=method, batch_axis=0)
    out.append(
      Routine(
        f"orthogonal method={method!r} (f32, bf16, c64, batch of 4)",
        functools.partial(
          lambda i, s, k: (
            i(k, (48, 32), jnp.float32),
            i(k, (32, 48), jnp.bfloat16),
            i(k, (48, 32), jnp.complex64),
            s(k, (4, 32, 32), jnp.float32),
          ),
          init,
          stack,
        ),
        (KEY,),
      )
    )
  return out


def _mesh():
  return jax.make_mesh((2, 4), ("data", "model"))


_TREE = {
  "conv": {"kernel": jax.ShapeDtypeStruct(SHAPE, jnp.float32)},
  "dense": {"kernel": jax.ShapeDtypeStruct((64, 32), jnp.bfloat16)},
  "head": {"kernel": jax.ShapeDtypeStruct((64, 32), jnp.float32)},
  "bias": jax.ShapeDtypeStruct((32,), jnp.float32),
}
_RULES = {
  "conv/kernel": jaxinit.he_normal(),
  "dense/kernel": jaxinit.truncated_normal(0.02),
  "head/kernel": jaxinit.orthogonal(),
  "bias": jax.nn.initializers.normal(0.1),  # a foreign init(key, shape, dtype)
}
_SPECS = {
  "conv": {"kernel": P(None, None, None, "model")},
  "dense": {"kernel": P("data", "model")},
  "head": {"kernel": P(None, ("data", "model"))},
  "bias": P("model"),
}


def _sharded_reinit(key):
  return jaxinit.reinit(_TREE, _RULES, key, shardings=_SPECS, mesh=_mesh())


def _tree_routines() -> list[Routine]:
  from flax import linen as nn
  from flax import nnx

  part, lecun = nn.with_partitioning, nn.initializers.lecun_normal()

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Dense(64, kernel_init=part(lecun, (None, "model")))(x)
      return nn.Dense(8, kernel_init=part(lecun, ("model", "data")))(nn.relu(x))

  class Block(nnx.Module):
    def __init__(self, rngs):
      kinit = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
      self.up = nnx.Linear(16, 64, kernel_init=kinit, rngs=rngs)
      self.down = nnx.Linear(64, 16, rngs=rngs)

  rules = {".*kernel": jaxinit.orthogonal(), ".*bias": jaxinit.torch_bias()}
  return [
    Routine("leaf_key", lambda k: jax.random.key_data(jaxinit.leaf_key(k, "a/b")), (KEY,)),
    Routine("reinit (unsharded)", lambda k: jaxinit.reinit(_TREE, _RULES, k), (KEY,)),
    Routine("reinit (8 devices, mesh=)", _sharded_reinit, (KEY,)),
    Routine(
      "reinit (8 devices, jax.set_mesh)",
      lambda k: jaxinit.reinit(_TREE, _RULES, k, shardings=_SPECS),
      (KEY,),
      lambda: jax.set_mesh(_mesh()),
    ),
    Routine(
      "init_linen (8 devices)",
      lambda k, x: jaxinit.init_linen(Net(), k, x, rules=rules, mesh=_mesh()),
      (KEY, jnp.ones((2, 16))),
    ),
    _init_nnx_routine(lambda: Block(nnx.Rngs(0)), rules),
    _haiku_routine(),
  ]


class _RecordJit:
  """Stands in for ``jax`` in the module defining ``init_nnx``: its ``jax.jit`` records the
  jitted function and arguments, and returns their shapes instead of running them.

  ``init_nnx`` builds the model eagerly around one ``jax.jit`` (it sets the mesh with
  ``jax.set_mesh``, which cannot run under a trace), so it cannot itself be exported; the
  program it compiles can.
  """

  def __init__(self):
    self.calls: list[tuple[Any, tuple]] = []

  def __getattr__(self, name):
    return getattr(jax, name)

  def jit(self, fun, **kwargs):
    jitted = jax.jit(fun, **kwargs)

    def call(*args):
      self.calls.append((jitted, args))
      return jax.eval_shape(jitted, *args)

    return call


def _init_nnx_routine(make_model, rules) -> Routine:
  from unittest import mock

  module = sys.modules[jaxinit.init_nnx.__module__]
  recorder = _RecordJit()
  with mock.patch.object(module, "jax", recorder):
    jaxinit.init_nnx(make_model, KEY, rules=rules, mesh=_mesh())
  if len(recorder.calls) != 1:
    raise AssertionError(
      f"init_nnx made {len(recorder.calls)} jax.jit calls through {module.__name__}, "
      "expected 1: update _RecordJit in tests/test_lowering.py"
    )
  jitted, args = recorder.calls[0]
  return Routine(
    "init_nnx (8 devices; its jitted program)", jitted, args, lambda: jax.set_mesh(_mesh())
  )


def _haiku_routine() -> Routine:
  import haiku as hk

  init = jaxinit.haiku_initializer(jaxinit.he_normal())
  f = hk.transform(lambda x: hk.Linear(8, w_init=init)(x))
  return Routine("haiku_initializer (hk.Linear init)", f.init, (KEY, jnp.ones((2, 16))))


def _lsuv_routines() -> list[Routine]:
  sys.path.insert(0, str(Path(__file__).parent))
  from _lsuv_models import NnxTransformer, ResNet, fast_init
  from flax import nnx

  x = _normal(16, 12, 12, 3)
  resnet = ResNet()
  variables = fast_init(resnet, x)
  kw = {"model_kwargs": {"train": False}}
  graphdef, state = nnx.split(NnxTransformer(rngs=nnx.Rngs(0)))
  apply = lambda s, t: nnx.merge(graphdef, s)(t)
  tokens = jnp.asarray(_RNG.integers(0, 40, (16, 10)), jnp.int32)
  redraw = jax.random.key(3)
  return [
    Routine(
      "lsuv: conv net, key= (linen ResNet)",
      lambda v, x: jaxinit.lsuv(resnet, v, x, key=redraw, **kw),
      (variables, x),
    ),
    Routine(
      "lsuv: conv net, exact=False",
      lambda v, x: jaxinit.lsuv(resnet, v, x, exact=False, **kw),
      (variables, x),
    ),
    Routine(
      "lsuv: transformer block, key= (nnx, pure fn)",
      lambda s, t: jaxinit.lsuv(apply, s, t, key=redraw),
      (state, tokens),
    ),
  ]


def _diagnostics_routines() -> list[Routine]:
  """The jitted cores of the diagnostics (the public functions return host-side reports)."""
  sys.path.insert(0, str(Path(__file__).parent))
  from _lsuv_models import ResNet, fast_init, pure_apply, pure_init

  from jaxinit._src import diagnostics as d

  x = _normal(4, 12, 12, 3)
  conv = d._bind("signal_propagation", ResNet(), (fast_init(ResNet(), x), x), {"train": False})
  xs = _normal(4, 16, 8)
  pure = d._bind("jacobian_spectrum", pure_apply, (pure_init(), xs), None)
  return [
    Routine(
      "diagnostics.signal_propagation (core)",
      functools.partial(d._signal_impl, conv.apply, conv.batch_pos),
      (conv.params, conv.args),
    ),
    Routine(
      "diagnostics.gradient_norms (core)",
      functools.partial(d._grad_impl, conv.apply, d.default_loss),
      (conv.params, conv.args),
    ),
    Routine(
      "diagnostics.jacobian_spectrum exact (core)",
      functools.partial(d._jacobian_impl, pure.apply, pure.batch_pos, 0),
      (pure.params, pure.args),
    ),
    Routine(
      "diagnostics.jacobian_spectrum lanczos (core)",
      functools.partial(d._matvec_impl, pure.apply, pure.batch_pos, "in", 0),
      (pure.params, pure.args, jnp.ones(16 * 8)),
    ),
  ]


def routines() -> list[Routine]:
  """Everything :func:`lower_all` exports."""
  return _initializer_routines() + _tree_routines() + _lsuv_routines() + _diagnostics_routines()


def lower_all(platforms: tuple[str, ...] = PLATFORMS) -> list[Lowered]:
  """Exports every routine for ``platforms``; see :func:`custom_call_table`."""
  return [lower(r, platforms) for r in routines()]


def custom_call_table(lowered: list[Lowered], platforms: tuple[str, ...] = PLATFORMS) -> str:
  """A Markdown table: per routine and platform, the custom calls needed, or FAILS."""
  rows = [["routine", *platforms]]
  for r in lowered:
    cells = []
    for p in platforms:
      if p in r.failures:
        cells.append("FAILS")
      else:
        cells.append(", ".join(r.custom_calls[p]) or "-")
    rows.append([r.name, *cells])
  lines = ["| " + " | ".join(row) + " |" for row in rows]
  lines.insert(1, "|" + "---|" * len(rows[0]))
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# The tests.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lowered():
  t = time.perf_counter()
  out = lower_all()
  print(f"\nexported {len(out)} routines for {', '.join(PLATFORMS)} in "
        f"{time.perf_counter() - t:.1f} s")  # fmt: skip
  return out


def test_every_routine_lowers_for_every_platform(lowered):
  print(custom_call_table(lowered))
  failed = {(r.name, p): err for r in lowered for p, err in r.failures.items()}
  unexpected = {k: v for k, v in failed.items() if k not in ALLOWED_FAILURES}
  assert not unexpected, "\n".join(f"{n} on {p}: {e}" for (n, p), e in unexpected.items())
  readme = README.read_text()
  for (_name, platform), (public, reason) in ALLOWED_FAILURES.items():
    fn = functools.reduce(getattr, public.split("."), jaxinit)
    assert platform in (fn.__doc__ or ""), f"jaxinit.{public}'s docstring must say {platform}"
    assert re.search(rf"{re.escape(public)}.*{platform}", readme), (
      f"the README must say that jaxinit.{public} does not lower for {platform}: {reason}"
    )
  stale = [k for k in ALLOWED_FAILURES if k not in failed]
  assert not stale, f"ALLOWED_FAILURES lists routines that now lower: {stale}"
  names = [r.name for r in lowered]
  assert len(names) == len(set(names)), names
  for name in registry.names(include_aliases=False):
    assert any(n.startswith(f"{name} ") for n in names), name


def test_custom_calls_are_reviewed(lowered):
  """Each platform's module uses only reviewed custom calls, and only the orthogonal
  family (orthogonal, delta_orthogonal, spectral: a scaled semi-orthogonal matrix; LSUV's
  orthonormal redraw; reinit / init_linen / init_nnx drawing orthogonal leaves) uses any."""
  for r in lowered:
    for p, calls in r.custom_calls.items():
      unknown = set(calls) - set(KNOWN_CUSTOM_CALLS[p])
      assert not unknown, f"{r.name} on {p} needs unreviewed custom calls {sorted(unknown)}"
    uses_qr_family = re.match(
      r"(orthogonal|delta_orthogonal|spectral|lsuv.*key=|reinit|init_)", r.name
    )
    if not uses_qr_family:
      assert all(c == () for c in r.custom_calls.values()), (r.name, r.custom_calls)


# jax 0.10.0 and 0.10.1 export this module but cannot call it back (their shardy pass puts a
# rank-0 sharding constraint on the key's uint32[2] data: "'sdy.sharding_constraint' op
# sharding doesn't match tensor rank"); 0.10.2 can. Exporting, the point of this file, works
# on all three (test_every_routine_lowers_for_every_platform).
@pytest.mark.skipif(
  tuple(int(x) for x in jax.__version__.split(".")[:3]) < (0, 10, 2),
  reason="jax < 0.10.2 cannot call back an exported sharded module taking a key",
)
def test_exported_sharded_reinit_runs_on_cpu(lowered):
  """The multi-platform module of the sharded reinit, compiled and run on the 8 CPU devices,
  gives the direct call's values and shardings."""
  (exp,) = [r.exported for r in lowered if r.name == "reinit (8 devices, mesh=)"]
  assert exp.platforms == PLATFORMS and exp.nr_devices == 8
  mesh = _mesh()
  got = jax.jit(exp.call, in_shardings=NamedSharding(mesh, P()))(KEY)
  want = _sharded_reinit(KEY)
  leaves = [jax.tree.leaves(t) for t in (got, want, _SPECS)]
  for g, w, s in zip(*leaves, strict=True):
    assert g.sharding.is_equivalent_to(NamedSharding(mesh, s), g.ndim), (g.sharding, s)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


if __name__ == "__main__":
  print(custom_call_table(lower_all()))
