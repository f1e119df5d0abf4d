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
# # Deep networks without normalization: Fixup, ReZero, SkipInit and DeepNorm
#
# A residual network adds each block's output to its input, $x_{l+1} = x_l + f_l(x_l)$. If
# every branch $f_l$ is initialized to preserve the variance of what it reads (He et al.'s
# rule), the sum doubles the variance at every block: after 100 blocks the signal is
# $2^{100} \approx 10^{30}$ times larger than the input. Normalization layers hide this;
# the presets of `jaxinit.presets` remove it at the source:
#
# * **Fixup** (Zhang et al. 2019): the last layer of every branch and the classifier start at
#   zero, the other branch layers are scaled by $L^{-1/(2m-2)}$ ($L$ branches of $m$ layers);
# * **ReZero** (Bachlechner et al. 2020): $x_{l+1} = x_l + \alpha_l f_l(x_l)$ with $\alpha_l = 0$;
# * **SkipInit** (De & Smith 2020): the same multiplier, started at a small value
#   ($1/\sqrt{L}$ here);
# * **DeepNorm** (Wang et al. 2022) keeps the normalization of a post-LN Transformer but
#   computes $\mathrm{LN}(\alpha x + f(x))$ and scales some weights by $\beta$ at initialization.
#
# Part 1 builds a 100-block residual MLP without any normalization and measures its signal at
# initialization and its training on scikit-learn's digits; part 2 trains a 32-layer post-LN
# Transformer with and without DeepNorm. Every conclusion is asserted on the printed numbers.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxinit
from jaxinit import presets

t_start = time.perf_counter()
X, y = load_digits(return_X_y=True)
X = ((X - X.mean(0)) / (X.std(0) + 1e-8)).astype(np.float32)
perm = np.random.default_rng(0).permutation(len(X))
X, y = X[perm], y[perm].astype(np.int32)
X_train, y_train, X_test, y_test = X[:1400], y[:1400], X[1400:], y[1400:]
print(f"train {X_train.shape}, test {X_test.shape}")

# %% [markdown]
# ## Part 1: a 100-block residual MLP
#
# Each block is the pre-activation residual branch of a ResNet with Fixup's scalar biases
# and one scalar multiplier, in the Flax-native names the presets know
# (`blocks/{l}/dense_0/kernel`, `blocks/{l}/shift_{k}`, `blocks/{l}/res_scale`):
#
# $$x \leftarrow x + s \cdot W_1\, \mathrm{relu}(W_0\, \mathrm{relu}(x + b_0) + b_1) + b_2 .$$
#
# The baseline draws every kernel He-normal (the stem, both branch layers, the head), biases
# 0 and multipliers 1. Each preset is then applied on top of it with `preset.apply`, which
# redraws only the parameters of its roles.

# %%
L, WIDTH = 100, 64


def parameter_shapes():
  s = jax.ShapeDtypeStruct
  block = {
    "dense_0": {"kernel": s((WIDTH, WIDTH), jnp.float32)},
    "dense_1": {"kernel": s((WIDTH, WIDTH), jnp.float32)},
    **{f"shift_{k}": s((), jnp.float32) for k in range(3)},
    "res_scale": s((), jnp.float32),
  }
  return {
    "stem": {"kernel": s((64, WIDTH), jnp.float32), "bias": s((WIDTH,), jnp.float32)},
    "blocks": [block] * L,
    "head": {"kernel": s((WIDTH, 10), jnp.float32), "bias": s((10,), jnp.float32)},
  }


BASELINE = {
  r".*kernel": jaxinit.he_normal(),
  r".*bias|blocks/\d+/shift_\d": jaxinit.zeros(),
  r"blocks/\d+/res_scale": jaxinit.ones(),
}
PRESETS = {
  "He everywhere": None,
  "Fixup": presets.fixup(num_branches=L, m=2),
  "ReZero": presets.rezero(names="flax"),
  "SkipInit": presets.skipinit(value=L**-0.5),
}


def make(name, seed):
  key = jax.random.key(seed)
  params = jaxinit.reinit(parameter_shapes(), BASELINE, key)
  return params if PRESETS[name] is None else PRESETS[name].apply(params, key)


def forward(params, x):
  """Logits, and the variance of the residual stream after every block."""
  x = x @ params["stem"]["kernel"] + params["stem"]["bias"]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *params["blocks"])

  def block(x, b):
    h = jax.nn.relu(x + b["shift_0"]) @ b["dense_0"]["kernel"]
    h = jax.nn.relu(h + b["shift_1"]) @ b["dense_1"]["kernel"]
    x = x + b["res_scale"] * h + b["shift_2"]
    return x, jnp.var(x)

  x, variances = jax.lax.scan(block, x, stacked)
  return x @ params["head"]["kernel"] + params["head"]["bias"], variances


print(presets.fixup(num_branches=L, m=2).table())

# %% [markdown]
# ### The signal at initialization
#
# The variance of the residual stream after each block, on 256 training images, relative to
# its value before the first block.

# %%
signal_at_init = jax.jit(lambda p, x: forward(p, x)[1])
x0_var = {}
growth = {}
for name in PRESETS:
  params = make(name, 0)
  stem = X_train[:256] @ np.asarray(params["stem"]["kernel"]) + np.asarray(params["stem"]["bias"])
  x0_var[name] = float(stem.var())
  growth[name] = np.asarray(signal_at_init(params, X_train[:256]), np.float64) / x0_var[name]
print(
  f"{'init':14s} {'block 1':>10s} {'block 10':>10s} {'block 50':>10s} {'block 100':>10s}"
  f" {'log2 growth / block':>20s}"
)
for name, g in growth.items():
  per_block = np.log2(g[-1]) / L
  print(f"{name:14s} {g[0]:10.3g} {g[9]:10.3g} {g[49]:10.3g} {g[99]:10.3g} {per_block:20.3f}")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, g in growth.items():
  ax.semilogy(np.arange(1, L + 1), g, label=name)
ax.semilogy(np.arange(1, L + 1), 2.0 ** np.arange(1, L + 1), "k:", lw=1, label="$2^l$")
ax.set(
  xlabel="block $l$",
  ylabel="Var$[x_l]$ / Var$[x_0]$",
  title="100 residual blocks, no normalization: the signal at initialization",
)
ax.legend()
plt.show()

# %% [markdown]
# He everywhere doubles the variance at every block, in expectation: the pre-activation
# branch $W_1\,\mathrm{relu}(W_0\,\mathrm{relu}(x))$ with He weights returns a signal of the
# variance of $x$, and adding it to $x$ doubles it. Measured on one draw of width 64 the
# factor is a little under 2 (the logarithm of a product of random gains grows more slowly
# than the logarithm of its mean), about $2^{0.94}$ per block: the last block is some
# $10^{28}$ times the first, and its logits are of order $10^{14}$. Fixup and ReZero start every
# branch at exactly zero (the last branch layer, respectively the multiplier, is 0), so every
# block is the identity and the ratio is exactly 1. SkipInit's $\alpha = 1/\sqrt{L}$
# multiplies the variance by about $1 + 1/L$ per block: $(1.01)^{100} \approx 2.7$ in total.

# %%
he = growth["He everywhere"]
assert 0.85 < np.log2(he[-1]) / L < 1.05  # about 2^l
windows = np.diff(np.log2(he[9::10]))  # log2 growth over blocks 10-20, 20-30, ...
print("log2 growth over each 10 blocks:", windows.round(1))
assert np.all(windows > 5)  # at least 2^5 every 10 blocks, all the way up
for name in ("Fixup", "ReZero"):
  # every block is the identity (up to float32 rounding of the variance)
  np.testing.assert_allclose(growth[name], 1.0, rtol=1e-5, err_msg=name)
skip = growth["SkipInit"]
assert 1.5 < skip[-1] < 6 and abs(skip[-1] - (1 + 1 / L) ** L) < 2.0
assert he[-1] > 1e25 * max(growth[n][-1] for n in ("Fixup", "ReZero", "SkipInit"))

# %% [markdown]
# ### Training on digits
#
# Adam (learning rate $10^{-3}$), minibatches of 100, 8 epochs, two seeds per
# initialization; one compiled epoch (a `lax.scan` over the minibatches) serves all of them.

# %%
EPOCHS, BATCH, SEEDS = 8, 100, (0, 1)
opt = optax.adam(1e-3)


def loss_fn(params, xb, yb):
  return optax.softmax_cross_entropy_with_integer_labels(forward(params, xb)[0], yb).mean()


@jax.jit
def epoch(params, opt_state, order):
  xs = jnp.asarray(X_train)[order].reshape(-1, BATCH, X.shape[1])
  ys = jnp.asarray(y_train)[order].reshape(-1, BATCH)

  def step(carry, batch):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xs, ys))
  return params, opt_state, losses.mean()


@jax.jit
def accuracy(params):
  return jnp.mean(jnp.argmax(forward(params, jnp.asarray(X_test))[0], -1) == y_test)


history = {}  # name -> (seeds, epochs, 2): training loss, test accuracy
for name in PRESETS:
  runs = []
  for seed in SEEDS:
    params = make(name, seed)
    opt_state = opt.init(params)
    rng = np.random.default_rng(100 + seed)
    curve = []
    for _ in range(EPOCHS):
      params, opt_state, loss = epoch(params, opt_state, rng.permutation(len(X_train)))
      curve.append((float(loss), float(accuracy(params))))
    runs.append(curve)
  history[name] = np.array(runs)
  first = ", ".join(f"{v:.3g}" for v in history[name][:, 0, 0])
  last = ", ".join(f"{v:.3g}" for v in history[name][:, -1, 0])
  acc = ", ".join(f"{v:.3f}" for v in history[name][:, -1, 1])
  print(f"{name:14s} training loss, epoch 1: {first}; epoch {EPOCHS}: {last}; test accuracy {acc}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
epochs = np.arange(1, EPOCHS + 1)
for name, h in history.items():
  (line,) = ax1.semilogy(epochs, h[:, :, 0].mean(0), label=name)
  ax2.plot(epochs, h[:, :, 1].mean(0), color=line.get_color(), label=name)
ax1.set(xlabel="epoch", ylabel="training loss (mean of 2 seeds)", title="100-block residual MLP")
ax2.set(xlabel="epoch", ylabel="test accuracy (mean of 2 seeds)", ylim=(0, 1))
ax2.axhline(0.1, color="gray", ls=":", lw=1)
ax1.legend()
plt.show()

# %% [markdown]
# With He everywhere the loss of the first epoch is astronomical and, although Adam's updates
# bring it down by many orders of magnitude, it is still far above chance level ($\ln 10
# \approx 2.3$) after 8 epochs, and the test accuracy never leaves chance (10%): bounded steps
# cannot undo a gain of $10^{28}$ spread over 200 matrices. Fixup, ReZero and SkipInit start as
# (nearly) the identity map and train as a shallow network would: with both seeds they reach a
# training loss below 0.5 and more than 94% test accuracy within 8 epochs.

# %%
final = {n: h[:, -1, 1] for n, h in history.items()}
he_loss = history["He everywhere"][:, :, 0]
assert np.all(he_loss[:, 0] > 1e10) and np.all(he_loss[:, -1] > 1e3 * np.log(10))
assert np.all(history["He everywhere"][:, :, 1] < 0.2)  # chance, at every epoch
for name in ("Fixup", "ReZero", "SkipInit"):
  assert np.all(final[name] > 0.94), (name, final[name])
  assert np.all(history[name][:, -1, 0] < 0.5), name
print({n: float(v.mean()) for n, v in final.items()})

# %% [markdown]
# ## Part 2: a deep post-LN Transformer, with and without DeepNorm
#
# The task: reverse a sequence of 10 random tokens (a vocabulary of 12), which needs
# attention (every output position must find the right input position). The model is a
# 32-layer post-LN Transformer encoder (width 64, 4 heads, MLP 128) in the Flax-native names,
# every sublayer computing $\mathrm{LN}(\alpha x + f(x))$. The baseline is torch's default
# initialization (`presets.torch_default`) with $\alpha = 1$; DeepNorm applies
# `presets.deepnorm(32, 0)` on top of it (value, output and MLP weights and biases times
# $\beta = (8N)^{-1/4}$) and uses its $\alpha = (2N)^{1/4}$. Adam at $10^{-3}$, no warmup,
# batches of 32 fresh sequences, 100 steps, two seeds each.

# %%
N, D, HEADS, D_FF, T, VOCAB = 32, 64, 4, 128, 10, 12


def transformer_shapes():
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  dense = lambda i, o: {"kernel": s(i, o), "bias": s(o)}
  norm = {"scale": s(D), "bias": s(D)}
  block = {
    "attn": {n: dense(D, D) for n in ("query", "key", "value", "out")},
    "attn_norm": norm,
    "mlp": {"up": dense(D, D_FF), "down": dense(D_FF, D)},
    "mlp_norm": norm,
  }
  return {
    "embed": {"embedding": s(VOCAB, D)},
    "pos_embed": {"embedding": s(T, D)},
    "blocks": [block] * N,
    "head": dense(D, VOCAB),
  }


deepnorm = presets.deepnorm(N, 0, names="flax")
print(f"DeepNorm for N = {N}: alpha = {deepnorm.alpha:.4f}, beta = {deepnorm.beta:.4f}")


def make_transformer(use_deepnorm, seed):
  key = jax.random.key(seed)
  params = presets.torch_default(names="flax", embeddings=True).apply(transformer_shapes(), key)
  if use_deepnorm:
    return deepnorm.apply(params, key), deepnorm.alpha
  return params, 1.0


def layer_norm(x, p):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def transformer(params, alpha, tokens):
  x = params["embed"]["embedding"][tokens] + params["pos_embed"]["embedding"]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *params["blocks"])

  def block(x, b):
    heads = lambda t: t.reshape(*t.shape[:-1], HEADS, D // HEADS)
    q, k, v = (
      heads(x @ b["attn"][n]["kernel"] + b["attn"][n]["bias"]) for n in ("query", "key", "value")
    )
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / (D // HEADS) ** 0.5)
    att = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)
    x = layer_norm(
      alpha * x + att @ b["attn"]["out"]["kernel"] + b["attn"]["out"]["bias"], b["attn_norm"]
    )
    h = jax.nn.relu(x @ b["mlp"]["up"]["kernel"] + b["mlp"]["up"]["bias"])
    x = layer_norm(
      alpha * x + h @ b["mlp"]["down"]["kernel"] + b["mlp"]["down"]["bias"], b["mlp_norm"]
    )
    return x, None

  x, _ = jax.lax.scan(block, x, stacked)
  return x @ params["head"]["kernel"] + params["head"]["bias"]


def reversal_loss(params, alpha, tokens):
  logits = transformer(params, alpha, tokens)
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, ::-1]).mean()


tf_opt = optax.adam(1e-3)


@jax.jit
def train_50(params, alpha, opt_state, key):
  def step(carry, k):
    params, opt_state = carry
    tokens = jax.random.randint(k, (32, T), 0, VOCAB)
    loss, grads = jax.value_and_grad(reversal_loss)(params, alpha, tokens)
    updates, opt_state = tf_opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, 50))
  return params, opt_state, losses


@jax.jit
def reversal_accuracy(params, alpha):
  tokens = jax.random.randint(jax.random.key(12345), (512, T), 0, VOCAB)
  return jnp.mean(jnp.argmax(transformer(params, alpha, tokens), -1) == tokens[:, ::-1])


tf_history = {}  # name -> (seeds, 100): training loss per step; and final accuracies
tf_accuracy = {}
for name, use in (("post-LN", False), ("post-LN + DeepNorm", True)):
  losses, accs = [], []
  for seed in (0, 1):
    params, alpha = make_transformer(use, seed)
    opt_state = tf_opt.init(params)
    curve = []
    for chunk in range(2):
      params, opt_state, ls = train_50(
        params, alpha, opt_state, jax.random.key(1000 * seed + chunk)
      )
      curve.append(np.asarray(ls))
    losses.append(np.concatenate(curve))
    accs.append(float(reversal_accuracy(params, alpha)))
  tf_history[name], tf_accuracy[name] = np.array(losses), np.array(accs)
  for seed, (h, a) in enumerate(zip(tf_history[name], tf_accuracy[name])):
    print(
      f"{name:20s} seed {seed}: loss at steps 1, 50, 100: {h[0]:.3f}, {h[49]:.3f}, "
      f"{h[99]:.3f}; held-out accuracy {a:.3f}"
    )
print(f"chance: loss ln({VOCAB}) = {np.log(VOCAB):.3f}, accuracy 1/{VOCAB} = {1 / VOCAB:.3f}")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, h in tf_history.items():
  ax.plot(np.arange(1, 101), h.mean(0), label=name)
ax.axhline(np.log(VOCAB), color="gray", ls=":", lw=1, label="chance")
ax.set(
  xlabel="step",
  ylabel="training loss (mean of 2 seeds)",
  yscale="log",
  title=f"{N}-layer post-LN Transformer, sequence reversal, Adam 1e-3, no warmup",
)
ax.legend()
plt.show()

# %% [markdown]
# Without DeepNorm the 32-layer post-LN Transformer does not learn the task in 100 steps: its
# loss stays at chance, $\ln 12 \approx 2.485$, and it reverses no more tokens than guessing
# would. With DeepNorm's $\alpha$ and $\beta$ — nothing else changed — it solves the task:
# within 100 steps its loss falls below a tenth of the chance level and it reverses held-out
# sequences essentially without error.

# %%
chance = np.log(VOCAB)
assert np.all(np.abs(tf_history["post-LN"][:, -10:].mean(1) - chance) < 0.05)
assert np.all(tf_accuracy["post-LN"] < 0.15)
assert np.all(tf_history["post-LN + DeepNorm"][:, -10:].mean(1) < 0.1 * chance)
assert np.all(tf_accuracy["post-LN + DeepNorm"] > 0.99)
print(f"total time {time.perf_counter() - t_start:.1f}s")
