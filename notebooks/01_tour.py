# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A tour of jaxinit with Flax linen and nnx
#
# Every jaxinit initializer is built by a factory, is an immutable object (repr, equality,
# hashing, pickling), and is called as `init(key, shape, dtype=None, out_sharding=None)` — the
# `jax.nn.initializers` protocol, so it plugs into Flax's `kernel_init` / `bias_init`. This
# notebook draws from each family, checks the numbers, and uses them in linen and nnx models,
# then touches the model-level tools: `reinit`, `lsuv` and the diagnostics.

# %%
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from scipy import stats

import jaxinit
from jaxinit import diagnostics, testing

key = jax.random.key(0)
# `jaxinit list` prints every initializer with its formula and defaults; the first few:
listing = subprocess.run(
  [sys.executable, "-m", "jaxinit", "list"], capture_output=True, text=True, check=True
).stdout
print("\n".join(listing.splitlines()[:12]), "\n...")

# %% [markdown]
# ## 1. The families and their distributions
#
# A 256×512 kernel from each, with the density the formula says (dashed). Fans follow Flax's
# layout: `fan_in` is the second-to-last axis times the receptive field.

# %%
shape = (256, 512)
fan_in, fan_out = 256, 512
cases = {
  "normal(stddev=0.05)": (jaxinit.normal(stddev=0.05), stats.norm(0, 0.05)),
  "uniform(-0.05, 0.05)": (jaxinit.uniform(), stats.uniform(-0.05, 0.1)),
  "truncated_normal(0.05)": (
    jaxinit.truncated_normal(stddev=0.05),
    stats.truncnorm(-2, 2, scale=0.05),
  ),
  "glorot_uniform": (
    jaxinit.glorot_uniform(),
    stats.uniform(-np.sqrt(6 / (fan_in + fan_out)), 2 * np.sqrt(6 / (fan_in + fan_out))),
  ),
  "he_normal (truncated, exact var)": (
    jaxinit.he_normal(),
    stats.truncnorm(-2, 2, scale=np.sqrt(2 / fan_in) / 0.87962566103423978),
  ),
  "orthogonal": (jaxinit.orthogonal(), stats.norm(0, np.sqrt(1 / fan_out))),
}
fig, axes = plt.subplots(2, 3, figsize=(13, 6))
for ax, (name, (init, dist)) in zip(axes.ravel(), cases.items()):
  w = np.asarray(init(key, shape)).ravel()
  ax.hist(w, bins=80, density=True, alpha=0.6)
  grid = np.linspace(w.min(), w.max(), 300)
  ax.plot(grid, dist.pdf(grid), "k--", lw=1)
  ax.set_title(f"{name}\nvar {w.var():.3g}")
fig.tight_layout()
plt.show()

# %% [markdown]
# The variances are exact, not approximately right: `testing.assert_moments` checks mean and
# variance within 6 standard errors, `testing.assert_ks` the whole distribution, and
# `testing.assert_orthonormal` the rows of the orthogonal matrix (for a wide matrix,
# $WW^\top = I$; the entries are then approximately $N(0, 1/512)$, the dashed line above).

# %%
testing.assert_moments(
  cases["he_normal (truncated, exact var)"][0](key, shape), mean=0.0, var=2 / fan_in
)
testing.assert_ks(
  cases["glorot_uniform"][0](key, shape), "uniform", (-np.sqrt(6 / 768), 2 * np.sqrt(6 / 768))
)
testing.assert_orthonormal(jaxinit.orthogonal()(key, shape))
print("moments, KS and orthonormality checks pass")

# %% [markdown]
# ## 2. Objects, names and configs
#
# Initializers compare and hash by configuration (so they are safe static arguments of `jit`),
# and round-trip through JSON-able configs, by name (`jaxinit.get`) or from a dict.

# %%
a = jaxinit.he_normal(mode="fan_out")
b = jaxinit.get("kaiming_normal", mode="fan_out")
print(repr(a), a == b, hash(a) == hash(b))
config = jaxinit.serialize(jaxinit.orthogonal(scale=np.sqrt(2)))
print(config, jaxinit.deserialize(config))
print(jaxinit.get({"class_name": "HeUniform", "config": {"seed": None}}))  # a Keras config
print(
  "gain for tanh:",
  jaxinit.calculate_gain("tanh"),
  "| for gelu:",
  round(jaxinit.calculate_gain("gelu"), 6),
)
try:
  jaxinit.variance_scaling(mode="fan_inn")
except ValueError as e:
  print("error at build time:", e)

# %% [markdown]
# ## 3. Flax linen
#
# Any initializer is a `kernel_init` / `bias_init`. Delta-orthogonal convolution kernels
# (Xiao et al. 2018) are zero except at the centre tap, which holds an orthogonal matrix.


# %%
class ConvNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(32, (3, 3), kernel_init=jaxinit.delta_orthogonal(), bias_init=jaxinit.zeros())(x)
    x = nn.tanh(x)
    x = nn.Conv(32, (3, 3), kernel_init=jaxinit.he_normal(nonlinearity="tanh"))(
      x.mean((1, 2))[:, None, None]
    )
    return nn.Dense(10, kernel_init=jaxinit.glorot_uniform())(x.reshape(x.shape[0], -1))


images = jax.random.normal(key, (64, 16, 16, 3))
variables = ConvNet().init(jax.random.key(1), images)
k0 = variables["params"]["Conv_0"]["kernel"]
print("Conv_0 kernel", k0.shape, "nonzero taps:", int((jnp.abs(k0).sum((2, 3)) > 0).sum()))
testing.assert_orthonormal(k0[1, 1])  # the centre tap: 3 x 32, orthonormal rows
print(jax.tree_util.tree_map(jnp.shape, variables["params"]))

# %% [markdown]
# ## 4. Flax nnx


# %%
class MLP(nnx.Module):
  def __init__(self, depth, width, rngs):
    init = jaxinit.orthogonal(scale=np.sqrt(2))
    self.layers = nnx.List(
      [
        nnx.Linear(width, width, kernel_init=init, bias_init=jaxinit.zeros(), rngs=rngs)
        for _ in range(depth)
      ]
    )

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return x


mlp = MLP(8, 128, nnx.Rngs(0))
w = mlp.layers[0].kernel[...]
testing.assert_orthonormal(w / np.sqrt(2))
print("nnx kernel", w.shape, "W^T W / 2 = I")

# %% [markdown]
# ## 5. Whole models: reinit by path, LSUV, diagnostics
#
# `jaxinit.reinit` redraws the leaves whose path matches a rule (here: every kernel of the
# linen model becomes LeCun-normal); `jaxinit.lsuv` rescales every layer to unit output
# variance on a batch, in one forward pass; the diagnostics show the effect layer by layer.

# %%
relinit = jaxinit.reinit(variables, {".*kernel": jaxinit.lecun_normal()}, jax.random.key(2))
print("reinit changed:", [p for p in jaxinit.leaf_paths(variables) if p.endswith("kernel")])

x = jax.random.normal(jax.random.key(3), (256, 128))
before = diagnostics.signal_propagation(mlp, x)
report = jaxinit.lsuv(mlp, x)  # nnx: updates the model in place
after = diagnostics.signal_propagation(mlp, x)
print(report)
ax = diagnostics.plot_signal_propagation({"orthogonal(√2)": before, "after LSUV": after})
ax.set_title("nnx MLP, 8 ReLU layers")
plt.show()
assert np.all(np.abs(after.var - 1) < 0.1)

# %% [markdown]
# For a deep network, `jaxinit compare` (on the command line) puts initializers side by side;
# the other notebooks go deeper: signal propagation (02), LSUV on a ResNet (03), dynamical
# isometry and mean-field theory (04), and a training study (05).
