"""`jaxinit compare`: the spec parser, the verdict rule, verdicts on known-bad cases, the CLI."""

import io
import math
import subprocess
import sys

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
