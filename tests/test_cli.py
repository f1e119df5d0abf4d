"""The `jaxinit` command line."""

import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from jaxinit._src import cli, registry


def _run(*args):
  return subprocess.run(
    [sys.executable, "-m", "jaxinit", *args],
    capture_output=True,
    text=True,
    check=False,
    timeout=120,
  )


def test_list_names_every_initializer_with_formula_and_defaults():
  out = _run("list")
  assert out.returncode == 0, out.stderr
  text = out.stdout
  for name in registry.names(include_aliases=True):
    assert name in text, name
  assert "he_normal(negative_slope=0.0, mode='fan_in'" in text
  assert "Var[w] = gain^2 / fan_mode" in text
  assert "calculate_gain" in text
  assert "'cholesky_qr'" in text and "'auto'" in text  # orthogonal's methods


def test_no_command_prints_help():
  out = _run()
  assert out.returncode == 0 and "usage: jaxinit" in out.stdout


def test_unknown_command_fails():
  out = _run("frobnicate")
  assert out.returncode == 2 and "invalid choice" in out.stderr


def test_console_script_when_installed():
  # the script pip put beside this interpreter (a venv used without activating it), else PATH
  beside = Path(sys.executable).parent / "jaxinit"
  exe = str(beside) if beside.exists() else shutil.which("jaxinit")
  if exe is None:
    pytest.skip("jaxinit is not installed as a console script in this environment")
  out = subprocess.run([exe, "list"], capture_output=True, text=True, check=False, timeout=120)
  assert out.returncode == 0 and "glorot_uniform" in out.stdout


# ---------------------------------------------------------------------------
# Flags are untrusted input: one clear line, a non-zero exit, never a traceback.
# ---------------------------------------------------------------------------

# (flags after `compare`, the flag the message names, a regex of the message)
HOSTILE_FLAGS = [
  (
    ["--seed", "9" * 5000],
    "--seed",
    r"expected an integer in \[0, 4294967294\], got '9{20}'\.\.\.",
  ),
  (["--seed", "-1"], "--seed", r"expected an integer in \[0, 4294967294\], got '-1'"),
  (["--seed", "1e3"], "--seed", r"expected an integer"),
  (["--depth", "10**100"], "--depth", r"expected an integer in \[1, 500\], got '10\*\*100'"),
  (["--depth", "0"], "--depth", r"expected an integer in \[1, 500\]"),
  (["--width", "99999999999999999999999"], "--width", r"expected an integer in \[1, 4096\]"),
  (["--batch", "-5"], "--batch", r"expected an integer in \[1, 4096\]"),
  (["--batch", "nan"], "--batch", r"expected an integer"),
  (["--depth", "500", "--width", "4096"], "--depth", r"over the bound 33554432"),
  (["--depth", "500", "--width", "64", "--batch", "4096"], "--depth", r"500 x 64 x 4096"),
  (["--activation", ""], "--activation", r"names no activation; choose from"),
  (["--activation", ","], "--activation", r"names no activation"),
  (["--activation", "relu,relu"], "--activation", r"names an activation twice"),
  (["--activation", "x" * 900], "--activation", r"unknown activation 'x{60}'\.\.\."),
  (["--inits", "normal(9**9**9)"], "--inits", r"9\*\*387420489 is too large"),
  (["--inits", "normal(" * 300], "--inits", r"is 2100 characters long; at most 2000"),
  (["--inits", "he_normal," * 40], "--inits", r"lists 40 items; at most 16"),
  (["--inits", "normal(" * 100], "--inits", r"has an unclosed \("),
  (["--inits", "", "--lsuv", "none"], "--inits", r"name no initializer; there is nothing"),
  (["--inits", "nromal"], "--inits", r"Did you mean 'normal'"),
  (["--lsuv", "orthogonal(scale=-1)"], "--lsuv", r"jaxinit\.orthogonal: `scale` must be > 0"),
  (["--lsuv", "orthogonal", "--batch", "1"], "--lsuv", r"needs --batch >= 2"),
  (["--plot", "/nonexistent-folder/x.png"], "--plot", r"the folder '/nonexistent-folder' does not"),
  (["--plot", "out.exe"], "--plot", r"must end in one of \.png"),
  (["--plot", "/proc/x.png"], "--plot", r"cannot write a file there \("),  # failed after the run
]


@pytest.mark.parametrize(
  "flags,flag,pattern", HOSTILE_FLAGS, ids=[str(f)[:40] for f, _, _ in HOSTILE_FLAGS]
)
def test_hostile_flags_fail_with_one_clear_line(flags, flag, pattern, capsys):
  assert len(" ".join(flags)) < 5100
  tracemalloc.start()
  try:
    try:
      code = cli.main(["compare", *flags])
    except SystemExit as e:  # argparse's own usage errors
      code = e.code
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  err = capsys.readouterr().err
  assert code == 2
  lines = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
  assert len(lines) == 1, err
  assert lines[0].startswith("jaxinit compare: error: "), err
  assert flag in lines[0] and re.search(pattern, lines[0]), lines[0]
  assert "Traceback" not in err and len(lines[0]) < 500
  assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize(
  "flags,pattern",
  [
    (["--seed", "9" * 5000], r"argument --seed: expected an integer"),
    (["--plot", "{tmp_path}/missing/x.png"], r"--plot .* does not exist"),
    (["--activation", ""], r"--activation names no activation"),
  ],
  ids=["seed", "plot", "activation"],
)
def test_no_traceback_from_the_real_process(flags, pattern, tmp_path):
  out = _run("compare", *(f.replace("{tmp_path}", str(tmp_path)) for f in flags))
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr and re.search(pattern, out.stderr), out.stderr
  assert out.stdout == ""


@pytest.mark.parametrize(
  "error,code,pattern",
  [
    (
      RuntimeError("boom\n  with a second line"),
      1,
      r"^jaxinit compare: internal error \(RuntimeError\): boom with a second line -- please",
    ),
    (
      OSError(28, "No space left on device"),
      1,
      r"^jaxinit compare: error: \[Errno 28\] No space left on device$",
    ),
    (MemoryError(), 1, r"^jaxinit compare: error: out of memory; use a smaller network\.$"),
    (KeyboardInterrupt(), 130, r"^jaxinit compare: interrupted$"),
    (ValueError("x" * 5000), 2, r"^jaxinit compare: error: x{300}\.\.\.$"),
  ],
)
def test_unexpected_errors_are_one_line(error, code, pattern, monkeypatch, capsys):
  from jaxinit._src import compare

  def fail(args):
    raise error

  monkeypatch.setattr(compare, "main", fail)
  assert cli.main(["compare"]) == code
  err = capsys.readouterr().err
  assert re.search(pattern, err.strip()), err
  assert err.count("\n") == 1


def test_help_documents_the_bounds(capsys):
  with pytest.raises(SystemExit):
    cli.main(["compare", "--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "depth <= 500, width <= 4096, batch <= 4096" in text
  assert "depth x width x max(width, batch) <= 2**25 = 33554432" in text
  assert "Exit status: 0 done, 2 bad flags, 1 a failure while running" in text
