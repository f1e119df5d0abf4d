"""`jaxinit compare`: the spec parser, the verdict rule, verdicts on known-bad cases, the CLI."""

import contextlib
import io
import math
import re
import signal
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import jaxinit
from jaxinit._src import compare


def test_parse_init_specs():
  assert compare.parse_init("he_normal") == jaxinit.he_normal()
  assert compare.parse_init("normal(0.01)") == jaxinit.normal(stddev=0.01)
  assert compare.parse_init("normal(stddev=0.02, mean=-1)") == jaxinit.normal(
    stddev=0.02, mean=-1.0
  )
  assert compare.parse_init("he_uniform(mode='fan_out')") == jaxinit.he_uniform(mode="fan_out")
  assert compare.parse_init("orthogonal(scale=sqrt(2))") == jaxinit.orthogonal(scale=math.sqrt(2))
  assert compare.split_specs("a, b(x=1, y=(2, 3)),c") == ["a", "b(x=1, y=(2, 3))", "c"]
  with pytest.raises(ValueError, match="unknown initializer 'he_norml'"):
    compare.parse_init("he_norml")
  with pytest.raises(ValueError, match="arguments must be numbers"):
    compare.parse_init("normal(stddev=__import__('os'))")
  with pytest.raises(TypeError, match="unexpected argument"):
    compare.parse_init("normal(scale=2)")


def test_verdict_rule():
  t = compare.THRESHOLD
  assert compare.verdict(1.0, 1.0) == "stable"
  assert compare.verdict(0.9 / t, 1.0) == "vanishing"
  assert compare.verdict(1.0, 0.9 / t) == "vanishing"
  assert compare.verdict(1.1 * t, 1.0) == "exploding"
  assert compare.verdict(1.0, 1.1 * t) == "exploding"
  assert compare.verdict(0.0, math.nan) == "vanishing"  # underflowed
  assert compare.verdict(math.inf, 1.0) == "exploding"


@pytest.fixture(scope="module")
def tanh_rows():
  # the known-bad cases on 50 tanh layers (narrow, to stay fast)
  return compare.run(
    ["normal(0.01)", "normal(1.0)", "glorot_normal"],
    activations=("tanh",),
    lsuv=(),
    depth=50,
    width=32,
    batch=64,
  )


def test_verdicts_on_known_cases(tanh_rows):
  rows = {r.label: r for r in tanh_rows}
  small, large, glorot = rows["normal(0.01)"], rows["normal(1.0)"], rows["glorot_normal"]
  # sigma_w^2 = 32 * 1e-4: the variance falls ~300x per layer, to 0 in float32
  assert small.verdict == "vanishing" and small.var_ratio < 1e-30
  # sigma_w^2 = 32: deep in the chaotic phase. Mean field gives chi_1 = 3.25 per layer, so
  # E[mean s^2] = chi_1^50 = 10^25.6; at width 32 one draw's value is log-normal, far below that
  # mean (10^15 here), so assert three times the verdict threshold's decades (10^9)
  assert large.verdict == "exploding" and large.jacobian.mean_squared > compare.THRESHOLD**3
  assert glorot.verdict == "stable"
  assert np.all(np.isfinite(glorot.var)) and glorot.var.shape == (50,)


def test_lsuv_and_he_are_stable_for_relu():
  rows = compare.run(
    ["he_normal", "glorot_normal"],
    activations=("relu",),
    lsuv=("orthogonal",),
    depth=30,
    width=32,
    batch=64,
  )
  by = {r.label: r for r in rows}
  assert by["he_normal"].verdict == "stable"
  assert by["glorot_normal"].verdict == "vanishing"  # halves per layer: 2^-29
  lsuv = by["lsuv(orthogonal)"]
  assert lsuv.verdict == "stable"
  np.testing.assert_allclose(lsuv.var, 1.0, atol=0.1)  # LSUV's tolerance


def test_table_and_plot(tanh_rows, tmp_path):
  text = compare.table(tanh_rows, 50)
  assert "activation: tanh" in text and "vanishing" in text and "exploding" in text
  assert text.count("\n") == 2 + len(tanh_rows)
  pytest.importorskip("matplotlib")
  path = tmp_path / "compare.png"
  compare.plot(tanh_rows, str(path))
  assert path.stat().st_size > 10_000


def test_cli_end_to_end(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxinit",
      "compare",
      "--depth",
      "8",
      "--width",
      "16",
      "--batch",
      "32",
      "--inits",
      "normal(0.01),he_normal",
      "--lsuv",
      "none",
      "--activation",
      "relu,tanh",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert out.returncode == 0, out.stderr
  assert "8-layer MLP, width 16" in out.stdout
  assert out.stdout.count("normal(0.01)") == 2 and "activation: tanh" in out.stdout
  assert "4/4" in out.stderr  # the progress bar
  bad = subprocess.run(
    [sys.executable, "-m", "jaxinit", "compare", "--inits", "nromal"],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert bad.returncode == 2 and "Did you mean 'normal'" in bad.stderr


def test_progress_bar_writes_to_its_stream():
  stream = io.StringIO()
  bar = compare._Progress(2, stream)
  bar.step("a")
  bar.step("b")
  bar.close()
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith("[------------------------] 0/2") and "2/2" in lines[-1]


# ---------------------------------------------------------------------------
# Specs and flags are untrusted input: each hostile one fails at once, in bounded
# memory, with an error naming the flag and what was refused.
# ---------------------------------------------------------------------------

HOSTILE_SPECS = [
  ("normal(9**9**9)", r"--inits 'normal\(9\*\*9\*\*9\)': 9\*\*387420489 is too large"),
  ("normal(2**64)", r"2\*\*64 is too large"),
  ("normal(9.0**9**9)", r"9\.0\*\*387420489 is not a finite real number"),
  ("normal(10.0**400)", r"10\.0\*\*400 is not a finite real number"),
  ("normal(1e308*10)", r"the arithmetic gives inf, not a finite real number"),
  ("normal(10**18*10**18)", r"an integer of 120 bits is too large"),
  ("normal(99999999999999999999)", r"an integer of 67 bits is too large"),
  ("normal((-8)**(1/3))", r"not a finite real number"),
  ("normal(1/0)", r"1 / 0: division by zero"),
  ("normal(0.0**-1)", r"0\.0\*\*-1 is not a finite real number"),
  ("normal(sqrt(-1))", r"sqrt needs a number >= 0, got -1"),
  ("normal('a'*10**9)", r"`\*` works on numbers only, got 'a' and 1000000000"),
  ("normal((1,)*10**9)", r"`\*` works on numbers only"),
  ("normal(-'a')", r"a sign applies to numbers only"),
  ("normal(" + "(" * 50 + "1" + ")" * 50 + ")", r"nests parentheses 51 deep; at most 8"),
  ("normal(" + "-" * 150 + "1)", r"is nested deeper than 16 levels"),
  ("normal(" + "1+" * 60 + "1)", r"is nested deeper than 16 levels"),
  ("x" * 300, r"is 300 characters long; a spec is at most 200"),
  ("normal(stddev=__import__('os'))", r"arguments must be numbers, strings, sqrt"),
  ("normal(stddev=[].__class__)", r"arguments must be numbers, strings, sqrt"),
  ("__import__('os').system('true')", r"cannot read the initializer"),
  ("normal(1, 2, 3, 4)", r"normal takes at most 2 arguments"),
  ("normal(**{'stddev': 1})", r"repeated or unpacked argument"),
  ("normal(1, stddev=2)", r"repeated or unpacked argument"),
  ("normal(\x00)", r"cannot read the initializer"),
  ("he_norml", r"--inits 'he_norml': jaxinit\.get: unknown initializer 'he_norml'"),
  ("nromal(0.1)", r"--inits 'nromal\(0\.1\)': jaxinit\.get: unknown initializer 'nromal'"),
  ("normal(-1)", r"--inits 'normal\(-1\)': jaxinit\.normal: `stddev` must be >= 0, got -1\.0"),
]


@contextlib.contextmanager
def _bounded():
  """Hang guard (a watchdog far above the time, not a speed assertion) and a memory bound."""

  def alarm(signum, frame):
    raise TimeoutError("still running after 60 s")

  old = signal.signal(signal.SIGALRM, alarm)
  signal.setitimer(signal.ITIMER_REAL, 60)
  tracemalloc.start()
  try:
    yield
    peak = tracemalloc.get_traced_memory()[1]
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"
  finally:
    tracemalloc.stop()
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _refused(call, pattern, prefix="jaxinit compare: "):
  """``call`` raises a ValueError/TypeError starting with ``prefix`` and matching ``pattern``."""
  with pytest.raises((ValueError, TypeError)) as info:
    call()
  message = str(info.value)
  assert message.startswith(prefix), message
  assert re.search(pattern, message), message
  assert "\n" not in message


@pytest.mark.parametrize("spec,pattern", HOSTILE_SPECS, ids=[s[:30] for s, _ in HOSTILE_SPECS])
def test_hostile_specs_fail_fast(spec, pattern):
  assert len(spec) < 1024
  with _bounded():
    _refused(lambda: compare.parse_flag("--inits", [spec]), pattern, "jaxinit compare: --inits ")


@pytest.mark.parametrize(
  "text,pattern",
  [
    ("he_normal," * 17, r"--inits lists 17 items; at most 16"),
    ("a" * 2001, r"--inits is 2001 characters long; at most 2000"),
    ("normal(1", r"--inits 'normal\(1' has an unclosed \("),
    ("normal(1))", r"--inits 'normal\(1\)\)' has a '\)' without its '\('"),
    ("he_uniform(mode='fan_in", r"has an unclosed quote"),
  ],
)
def test_split_specs_bounds(text, pattern):
  with _bounded():
    _refused(lambda: compare.split_specs(text, "--inits"), pattern)


def test_split_specs_respects_quotes():
  assert compare.split_specs("he_uniform(mode='fan,out'),b") == ["he_uniform(mode='fan,out')", "b"]


@pytest.mark.parametrize(
  "sizes,pattern",
  [
    ((0, 8, 8, 0), r"--depth must be an integer in \[1, 500\], got 0"),
    ((10**100, 8, 8, 0), r"--depth must be an integer in \[1, 500\], got an integer of 333 bits"),
    ((8, 4097, 8, 0), r"--width must be an integer in \[1, 4096\]"),
    ((8, 8, 2**40, 0), r"--batch must be an integer in \[1, 4096\]"),
    ((8, 8, 8, -1), r"--seed must be an integer in \[0, 4294967294\], got -1"),
    ((8, 8, 8, 2**64), r"--seed must be an integer in \[0, 4294967294\]"),
    ((8, 8.5, 8, 0), r"--width must be an integer"),
    ((True, 8, 8, 0), r"--depth must be an integer"),
    ((500, 4096, 8, 0), r"500 x 4096 x 4096 = 8388608000 is over the bound 33554432"),
    ((400, 300, 300, 0), r"400 x 300 x 300 = 36000000 is over the bound"),
    ((50, 16, 4096, 0), r"50 x 16 x 4096 = 3276800"),  # under: no error
  ],
)
def test_sizes_are_bounded(sizes, pattern):
  if "3276800" in pattern:
    compare.check_sizes(*sizes)
    return
  _refused(lambda: compare.check_sizes(*sizes), pattern)


@pytest.mark.parametrize(
  "inits,kwargs,pattern",
  [
    (
      ["he_normal"],
      {"activations": [], "lsuv": ()},
      r"--activation names no activation; choose from elu",
    ),
    (
      ["he_normal"],
      {"activations": ["x" * 5000], "lsuv": ()},
      r"--activation: unknown activation 'x{60}'\.\.\.",
    ),
    (
      ["he_normal"],
      {"activations": ["relu", "relu"], "lsuv": ()},
      r"--activation names an activation twice: relu, relu",
    ),
    ([], {"lsuv": ()}, r"--inits and --lsuv name no initializer"),
    ([], {"lsuv": ["orthogonal"], "batch": 1}, r"--lsuv needs --batch >= 2"),
    (
      ["he_normal"],
      {"lsuv": ["orthogonl"]},
      r"--lsuv 'orthogonl': jaxinit\.get: unknown initializer",
    ),
  ],
  ids=[
    "no-activation",
    "unknown-activation",
    "activation-twice",
    "no-initializer",
    "lsuv-batch-1",
    "unknown-lsuv",
  ],
)
def test_run_checks_every_argument_before_computing(inits, kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    compare.run(inits, **kwargs)


def test_plot_path_is_checked_before_running(tmp_path):
  pytest.importorskip("matplotlib")
  compare.check_plot_path(str(tmp_path / "ok.png"))
  (tmp_path / "dir.png").mkdir()
  with pytest.raises(ValueError, match=r"cannot write a file there"):
    compare.check_plot_path(str(tmp_path / "dir.png"))


@pytest.mark.parametrize(
  "path,pattern",
  [
    ("{tmp_path}/missing/x.png", r"the folder '.*missing' does not exist"),
    ("{tmp_path}/x.exe", r"must end in one of \.png, \.pdf, \.svg, \.jpg, \.jpeg"),
    ("{tmp_path}", r"must end in one of .*got 'no suffix'"),
    ("a\0b.png", r"--plot must be a file name"),
    ("x" * 5000 + ".png", r"--plot must be a file name"),
  ],
  ids=["missing-folder", "exe", "a-folder", "nul", "long"],
)
def test_bad_plot_paths_are_refused(path, pattern, tmp_path):
  pytest.importorskip("matplotlib")
  path = path.replace("{tmp_path}", str(tmp_path))
  _refused(lambda: compare.check_plot_path(path), pattern)
