"""The `jaxinit` command line."""

import shutil
import subprocess
import sys

import pytest

from jaxinit._src import registry


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
  exe = shutil.which("jaxinit")
  if exe is None:
    pytest.skip("jaxinit is not installed as a console script in this environment")
  out = subprocess.run([exe, "list"], capture_output=True, text=True, check=False, timeout=120)
  assert out.returncode == 0 and "glorot_uniform" in out.stdout
