"""diagnostics.coord_check: under µP the change of every layer's output is flat in width,
under the standard parametrization the readout's grows with width (Adam, 4 steps, 64→1024);
and diagnostics.layer_outputs, which it is built on."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from jaxinit import diagnostics, mup

D_IN, D_OUT, WIDTHS, LR = 16, 4, (64, 256, 1024), 1e-3


def shapes(width):
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  return {
    "l0": {"w": s(D_IN, width), "b": s(width)},
    "l1": {"w": s(width, width), "b": s(width)},
    "l2": {"w": s(width, D_OUT), "b": s(D_OUT)},
  }


def apply(p, x):
  h = jax.nn.relu(x @ p["l0"]["w"] + p["l0"]["b"])
  h = jax.nn.relu(h @ p["l1"]["w"] + p["l1"]["b"])
  return h @ p["l2"]["w"] + p["l2"]["b"]


def parametrization(width):
  return mup.parametrize(shapes(64), shapes(width), delta=shapes(128))


def draw(width, p=None):
  """LeCun-normal weights and zero biases; under µP (``p``) drawn at the base fans and times
  the µP init multipliers (mup.init's rule). numpy draws, so nothing compiles."""
  rng = np.random.default_rng(width)
  out = {}
  for name, layer in shapes(width).items():
    shape = layer["w"].shape
    fan_in = shape[0] if p is None else shapes(64)[name]["w"].shape[0]
    mult = 1.0 if p is None else p.init_mult[name]["w"]
    out[name] = {
      "w": jnp.asarray(rng.standard_normal(shape) / math.sqrt(fan_in) * mult, jnp.float32),
      "b": jnp.zeros(layer["b"].shape),
    }
  return out


X = jax.random.normal(jax.random.key(1), (16, D_IN))
Y = jax.random.normal(jax.random.key(2), (16, D_OUT))


def mse(out, batch):
  return jnp.mean((out - Y) ** 2)


@pytest.fixture(scope="module")
def checks():
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int32 counts and floats
    mu = diagnostics.coord_check(
      lambda w: (draw(w, parametrization(w)), apply),
      WIDTHS,
      X,
      lambda w: parametrization(w).optimizer(optax.adam(LR)),
      steps=4,
      loss=mse,
    )
    sp = diagnostics.coord_check(lambda w: (draw(w), apply), WIDTHS, X, optax.adam(LR), 4, loss=mse)
  return mu, sp


def test_mup_is_flat_in_width_and_sp_readout_grows(checks):
  mu, sp = checks
  assert mu.layers == sp.layers == ("l0/w", "l1/w", "l2/w")
  assert mu.groups == ("input", "hidden", "output")
  assert mu.delta_rms.shape == (3, 5, 3) and np.all(mu.delta_rms[:, 0] == 0)
  # µP: every layer's change since init is width-independent at every step
  assert np.all(np.abs(mu.delta_slope) <= 0.3), mu.delta_slope
  assert mu.verdicts == ("stable", "stable", "stable")
  # ... while its readout *at init* shrinks like 1/sqrt(width) by design (zero-mean 1/m init)
  assert -0.7 < mu.output_slope[0, 2] < -0.2
  # SP: the readout's change grows like the width (and the hidden layer's with it)
  assert sp.delta_slope[0, 2] >= 0.6 and sp.worst_delta_slope()[2] >= 0.6, sp.delta_slope
  assert sp.verdicts[1:] == ("grows with width", "grows with width")
  # spectral condition: ‖ΔW‖₂ ∝ sqrt(fan_out/fan_in) under µP, not under SP
  assert np.all(np.abs(mu.spectral_slope) <= 0.3), mu.spectral_slope
  assert sp.spectral_slope[-1, 1] >= 0.5 and sp.spectral_slope[-1, 2] >= 0.5
  # the loss goes down at every width
  assert np.all(mu.loss[:, -1] < mu.loss[:, 0])


def test_table_and_plot(checks):
  mu, sp = checks
  text = str(sp)
  assert "grows with width" in text and "l2/w" in text and "spectral norm" in text
  assert "stable" in str(mu)
  matplotlib = pytest.importorskip("matplotlib")
  matplotlib.use("Agg")
  fig = mu.plot()
  assert [ax.get_title() for ax in fig.axes] == ["input (1)", "hidden (1)", "output (1)"]
  assert len(fig.axes[0].lines) == 4  # t = 1 ... 4
  assert len(sp.plot("output").axes[0].lines) == 5 and sp.plot("spectral")
  matplotlib.pyplot.close("all")


def test_layer_outputs_match_a_hand_computation_and_trace_under_jit():
  model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(3)])
  x = jax.random.normal(jax.random.key(0), (4, 5))
  variables = model.init(jax.random.key(1), x)
  layers, outs = diagnostics.layer_outputs(model, variables, x)
  p = variables["params"]
  h = x @ p["layers_0"]["kernel"] + p["layers_0"]["bias"]
  assert [lay.path for lay in layers] == ["layers_0/kernel", "layers_2/kernel"]
  np.testing.assert_allclose(outs[0], h, rtol=1e-6)
  np.testing.assert_allclose(
    outs[1], jnp.tanh(h) @ p["layers_2"]["kernel"] + p["layers_2"]["bias"], rtol=1e-5
  )
  jitted = jax.jit(lambda v: diagnostics.layer_outputs(model, v, x)[1])(variables)
  np.testing.assert_allclose(jitted[1], outs[1], rtol=1e-6)


@pytest.mark.parametrize(
  "kwargs, exc, message",
  [
    (dict(widths=[64]), ValueError, "`widths` must be a sequence of at least 2 widths"),
    (dict(widths=[256, 64]), ValueError, "`widths` must be distinct and ascending"),
    (dict(steps=0), ValueError, "`steps` must be >= 1, got 0"),
    (dict(tx="adam"), TypeError, "`tx` must be an optax.GradientTransformation or a function"),
    (dict(tol=-1.0), ValueError, "`tol` must be > 0"),
    (dict(make=lambda w: draw(w)), TypeError, r"must return \(params, apply_fn\)"),
  ],
)
def test_errors(kwargs, exc, message):
  args = dict(make=lambda w: (draw(w), apply), widths=[64, 128], tx=optax.sgd(0.1), steps=1)
  args.update(kwargs)
  make = args.pop("make")
  with pytest.raises(exc, match=r"jaxinit\.diagnostics\.coord_check: .*" + message):
    diagnostics.coord_check(make, args.pop("widths"), X, args.pop("tx"), **args)
