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
# # LSUV step by step on a convolutional network with residual connections
#
# Layer-sequential unit-variance initialization (Mishkin & Matas 2015): start from orthonormal
# weights, then, for each convolutional or dense layer **in the order the forward pass reaches
# it**, divide its weight by the standard deviation of its output on a batch, until the output
# variance is 1 (within a tolerance). This notebook
#
# 1. builds a small Flax linen ResNet on scikit-learn's 8×8 digits and shows why "execution
#    order" matters (the parameter tree's order is alphabetical, not the order of the calls);
# 2. runs LSUV by hand, one layer and one try at a time, with `diagnostics.signal_propagation`
#    as the measuring instrument — the way every published implementation works, re-running
#    the whole network for every try;
# 3. compares it with `jaxinit.lsuv`, which does the same in one forward pass under `jit`;
# 4. looks at what LSUV does and does not normalize in a residual network.

# %%
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

import jaxinit
from jaxinit import diagnostics

digits = load_digits().images.astype(np.float32)
x = jnp.asarray(((digits - digits.mean()) / digits.std())[:256, :, :, None])  # (256, 8, 8, 1)
print("batch", x.shape, "mean", float(x.mean()), "var", float(x.var()))

# %% [markdown]
# ## 1. The network and its layers
#
# A stem convolution, three residual blocks (the second one changes the width, so its shortcut
# is a 1×1 projection), global average pooling and a dense classifier. In `ResBlock` the
# projection is *declared* first but *called* last.


# %%
class ResBlock(nn.Module):
  features: int

  def setup(self):
    self.shortcut = nn.Conv(self.features, (1, 1), use_bias=False)
    self.conv_a = nn.Conv(self.features, (3, 3))
    self.conv_b = nn.Conv(self.features, (3, 3))

  def __call__(self, h):
    y = self.conv_b(nn.relu(self.conv_a(h)))
    skip = h if h.shape[-1] == self.features else self.shortcut(h)
    return nn.relu(y + skip)


class ResNet(nn.Module):
  @nn.compact
  def __call__(self, h):
    h = nn.relu(nn.Conv(16, (3, 3), name="stem")(h))
    h = ResBlock(16, name="block1")(h)
    h = ResBlock(32, name="block2")(h)
    h = ResBlock(32, name="block3")(h)
    return nn.Dense(10, name="head")(h.mean(axis=(1, 2)))


model = ResNet()
variables = model.init(jax.random.key(0), x)
print(
  "parameter tree order:",
  [p for p in jaxinit.leaf_paths(variables["params"]) if p.endswith("kernel")],
)
layers = jaxinit.find_layers(model, variables, x)
print("\nexecution order:")
for layer in layers:
  print(
    f"  {layer.index:2d} {layer.path:22s} {layer.kind:4s} fan_in {layer.fan_in:4d} "
    f"bias {layer.bias_path}"
  )
assert [lay.path for lay in layers][:2] == ["stem/kernel", "block1/conv_a/kernel"]
assert layers[-1].path == "head/kernel"

# %% [markdown]
# A hook-based implementation that walks the modules in the parameter tree's order would
# process `block1/conv_a` before `stem`, and `block2/shortcut` before `block2/conv_a` — both
# wrong: a layer must be normalized after everything that feeds it.
#
# ## 2. LSUV by hand, one try at a time
#
# Orthonormal weights first (`jaxinit.orthogonal` on every kernel, via `jaxinit.reinit`),
# then the loop of the paper. Every try re-runs the whole network to measure one layer.

# %%
ortho = jaxinit.reinit(
  variables, {".*kernel": jaxinit.orthogonal(), ".*bias": jaxinit.zeros()}, jax.random.key(1)
)
before = diagnostics.signal_propagation(model, ortho, x)
print(before)

# %%
TOL, MAX_ITERS = 0.1, 10


def scale_kernel(variables, path, s):
  parts = path.split("/")
  params = jax.tree_util.tree_map(lambda a: a, variables["params"])  # a copy of the tree

  def set_in(tree, keys):
    if len(keys) == 1:
      return {**tree, keys[0]: tree[keys[0]] * s}
    return {**tree, keys[0]: set_in(tree[keys[0]], keys[1:])}

  return {**variables, "params": set_in(params, parts)}


manual = ortho
passes = 0
stages = [before.var]
t0 = time.perf_counter()
for i, layer in enumerate(layers):
  for _ in range(MAX_ITERS):
    var = float(diagnostics.signal_propagation(model, manual, x).var[i])
    passes += 1
    if abs(var - 1) < TOL:
      break
    manual = scale_kernel(manual, layer.path, 1 / np.sqrt(var))
  stages.append(diagnostics.signal_propagation(model, manual, x).var)
t_manual = time.perf_counter() - t0
print(f"by hand: {passes} full forward passes, {t_manual:.2f}s")

fig, ax = plt.subplots(figsize=(8, 4))
cmap = plt.get_cmap("viridis")
for k, v in enumerate(stages):
  ax.semilogy(
    v,
    marker=".",
    color=cmap(k / (len(stages) - 1)),
    label="orthogonal" if k == 0 else (f"after layer {k - 1}" if k in (1, 4, 11) else None),
  )
ax.axhline(1, color="k", lw=0.8, ls=":")
ax.set(
  xlabel="layer (execution order)",
  ylabel="variance of layer output",
  title="LSUV by hand: each stage fixes one more layer",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 3. The same in one pass: `jaxinit.lsuv`
#
# Normalizing layer $k$ only changes layers after it, and its output is linear in its weight,
# so `jaxinit.lsuv` normalizes each layer when a single forward pass reaches it, solving for
# the scale from the output's moments instead of re-running the network. Here it starts from
# the same orthonormal weights (no `key`: keep the current weights, only rescale).

# %%
t0 = time.perf_counter()
fast, report = jaxinit.lsuv(model, ortho, x, tol=TOL, max_iters=MAX_ITERS)
t_fast = time.perf_counter() - t0
print(report)
print(
  f"\njaxinit.lsuv: {t_fast:.2f}s including compilation; by hand: {passes} passes, {t_manual:.2f}s"
)
after = diagnostics.signal_propagation(model, fast, x)
assert bool(report.converged.all()) and np.all(np.abs(after.var - 1) < TOL)

# %% [markdown]
# Both end with every layer's output variance within the tolerance of 1. They are not
# identical weight for weight: the paper's update $W \leftarrow W/\sqrt{\mathrm{var}}$ stops at
# the first try inside the tolerance, and a layer with a bias converges there by a slightly
# different route, but the resulting kernels differ only by a scalar per layer:

# %%
ratios = []
for layer in layers:
  keys = layer.path.split("/")
  a, b = fast["params"], manual["params"]
  for k in keys:
    a, b = a[k], b[k]
  r = np.asarray(a) / np.asarray(b)
  ratios.append((layer.path, float(r.mean()), float(r.std() / abs(r.mean()))))
for path, mean, rel_spread in ratios:
  print(f"{path:22s} kernel ratio {mean:.4f}  (relative spread {rel_spread:.1e})")
assert all(spread < 1e-5 and abs(mean - 1) < 0.15 for _, mean, spread in ratios)

# %% [markdown]
# ## 4. What LSUV normalizes in a residual network
#
# LSUV makes every *layer output* have unit variance — nothing else. After a ReLU the variance
# is about a third (`post_var`, the activation that follows each layer), and the residual
# *stream*, each block's output $\mathrm{relu}(\text{branch} + \text{shortcut})$, is not
# normalized at all: a unit-variance branch is added to whatever the shortcut carries. We read
# the block outputs with Flax's `capture_intermediates` and print their second moments.

# %%
fig, ax = plt.subplots(figsize=(8, 4))
diagnostics.plot_signal_propagation(
  {
    "default Flax init (lecun_normal)": diagnostics.signal_propagation(model, variables, x),
    "orthogonal": before,
    "LSUV": after,
  },
  ax=ax,
)
ax.set_title("variance of each layer's output")
plt.show()
print("after LSUV, variance after each layer's activation:", after.post_var.round(2))
_, state = model.apply(fast, x, capture_intermediates=True, mutable=["intermediates"])
stream = {
  b: float(jnp.mean(state["intermediates"][b]["__call__"][0] ** 2))
  for b in ("block1", "block2", "block3")
}
print(
  "second moment of the residual stream after each block:",
  {b: round(v, 2) for b, v in stream.items()},
)

# %% [markdown]
# Where the shortcut is the identity (block 3) the stream grows: its second moment roughly
# doubles, the branch's unit variance adding to the stream it receives. Where the shortcut is
# a 1×1 projection (block 2), LSUV normalized that projection as a layer, so the stream is reset
# to the scale of a unit-variance layer output. In a deep residual network the stream therefore
# grows with the number of identity blocks whatever LSUV does to the layers — one reason
# residual networks add normalization layers or scale their branches (Fixup, SkipInit).

# %%
assert np.all(after.post_var[[0, 1, 3, 6]] < 0.5)  # after a ReLU: about a third
assert stream["block3"] > 1.5 * stream["block2"]
