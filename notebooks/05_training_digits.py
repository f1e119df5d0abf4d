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
# # Does the initialization matter for training? A deep MLP on scikit-learn's digits
#
# The digits dataset ships with scikit-learn (1,797 handwritten digits, 8×8 pixels, 10 classes;
# nothing is downloaded). We train the same deep network — 20 ReLU layers of width 64 and a
# linear classifier — with plain SGD + momentum under several initializations of the hidden
# layers, with six seeds each, and compare training loss and test accuracy per epoch. The
# diagnostics at initialization (signal variance through depth) are printed first, so the
# training curves can be read against them.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxinit
from jaxinit import diagnostics

t_start = time.perf_counter()
X, y = load_digits(return_X_y=True)
X = ((X - X.mean(0)) / (X.std(0) + 1e-8)).astype(np.float32)  # standardized pixels
perm = np.random.default_rng(0).permutation(len(X))
X, y = X[perm], y[perm].astype(np.int32)
X_train, y_train, X_test, y_test = X[:1400], y[:1400], X[1400:], y[1400:]
print(f"train {X_train.shape}, test {X_test.shape}, classes {np.bincount(y)}")

# %% [markdown]
# ## The network and the initializations
#
# The hidden weights come from each initializer; the classifier is Glorot-normal and the
# biases zero in every case. "LSUV" is Mishkin & Matas's procedure: orthogonal weights, then
# `jaxinit.lsuv` rescales every layer, in execution order, to unit output variance on a batch
# of 256 training images (one forward pass under `jit`).

# %%
DEPTH, WIDTH, SEEDS = 20, 64, (0, 1, 2, 3, 4, 5)


def mlp(params, x):
  for p in params["hidden"]:
    x = jax.nn.relu(x @ p["w"] + p["b"])
  return x @ params["head"]["w"] + params["head"]["b"]


def init_params(w_init, seed):
  keys = jax.random.split(jax.random.key(seed), DEPTH + 1)
  dims = [X.shape[1]] + [WIDTH] * DEPTH
  hidden = [
    {"w": w_init(keys[i], (dims[i], dims[i + 1])), "b": jnp.zeros(dims[i + 1])}
    for i in range(DEPTH)
  ]
  head = {"w": jaxinit.glorot_normal()(keys[-1], (WIDTH, 10)), "b": jnp.zeros(10)}
  return {"hidden": hidden, "head": head}


INITS = {
  "normal(0.01)": jaxinit.normal(stddev=0.01),
  "glorot_normal": jaxinit.glorot_normal(),
  "orthogonal": jaxinit.orthogonal(),
  "he_normal": jaxinit.he_normal(),
  "orthogonal(√2)": jaxinit.orthogonal(scale=np.sqrt(2)),
  "LSUV": "lsuv",
}


def make(name, seed):
  if INITS[name] == "lsuv":
    params = init_params(jaxinit.orthogonal(), seed)
    params, _ = jaxinit.lsuv(mlp, params, jnp.asarray(X_train[:256]))
    return params
  return init_params(INITS[name], seed)


print(f"{'init':15s} {'var layer 1':>12s} {'var layer 20':>12s} {'last/first':>11s}")
for name in INITS:
  report = diagnostics.signal_propagation(mlp, make(name, 0), jnp.asarray(X_train[:256]))
  v = report.var[:DEPTH]  # the hidden layers (the last entry is the classifier)
  print(f"{name:15s} {v[0]:12.3g} {v[-1]:12.3g} {v[-1] / v[0]:11.3g}")

# %% [markdown]
# ## Training
#
# SGD with momentum 0.9, learning rate 0.01, minibatches of 100, 30 epochs; one compiled
# epoch (a `lax.scan` over minibatches) serves every initialization.

# %%
EPOCHS, BATCH, LR = 30, 100, 0.01
opt = optax.sgd(LR, momentum=0.9)


def loss_fn(params, xb, yb):
  return optax.softmax_cross_entropy_with_integer_labels(mlp(params, xb), yb).mean()


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
def accuracy(params, xb, yb):
  return jnp.mean(jnp.argmax(mlp(params, xb), -1) == yb)


history = {}  # name -> array (seeds, epochs, 2): train loss, test accuracy
for name in INITS:
  runs = []
  for seed in SEEDS:
    params = make(name, seed)
    opt_state = opt.init(params)
    rng = np.random.default_rng(100 + seed)
    curve = []
    for _ in range(EPOCHS):
      params, opt_state, loss = epoch(params, opt_state, rng.permutation(len(X_train)))
      curve.append((float(loss), float(accuracy(params, X_test, y_test))))
    runs.append(curve)
  history[name] = np.array(runs)
  print(f"{name:15s} final test accuracy {history[name][:, -1, 1].round(3)}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
epochs = np.arange(1, EPOCHS + 1)
for name, h in history.items():
  (line,) = ax1.semilogy(epochs, np.median(h[:, :, 0], 0), label=name)
  ax2.plot(epochs, np.median(h[:, :, 1], 0), color=line.get_color(), label=name)
ax1.set(
  xlabel="epoch",
  ylabel=f"training loss (median of {len(SEEDS)} seeds)",
  title=f"{DEPTH}-layer ReLU MLP on digits, SGD+momentum",
)
ax2.set(xlabel="epoch", ylabel=f"test accuracy (median of {len(SEEDS)} seeds)", ylim=(0, 1))
ax2.axhline(0.1, color="gray", ls=":", lw=1)
ax1.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## What the numbers say

# %%
# Medians over the seeds: a single run of a 20-layer net trained with momentum can blow
# up (one seed below does), and the mean would let that one run decide.
final = {n: np.median(h[:, -1, 1]) for n, h in history.items()}
at_5 = {n: np.median(h[:, 4, 1]) for n, h in history.items()}
first_90 = {
  n: [next((e + 1 for e in range(EPOCHS) if run[e, 1] >= 0.9), np.inf) for run in h]
  for n, h in history.items()
}
to_90 = {n: np.median(v) for n, v in first_90.items()}  # inf: most seeds never got there
worst = {n: h[:, -1, 1].min() for n, h in history.items()}
print(f"{'init':15s} {'acc @5':>7s} {'acc @30':>8s} {'worst seed @30':>15s} {'epochs to 90%':>14s}")
for n in history:
  print(
    f"{n:15s} {at_5[n]:7.3f} {final[n]:8.3f} {worst[n]:15.3f} "
    f"{to_90[n] if np.isfinite(to_90[n]) else '-'!s:>14s}"
  )
best = max(final, key=final.get)
print(
  f"\nbest final accuracy: {best} ({final[best]:.3f}); "
  f"normal(0.01) ends at {final['normal(0.01)']:.3f} (chance is 0.1)"
)
print(f"total time {time.perf_counter() - t_start:.1f}s")

# %% [markdown]
# **Conclusion** (medians over six seeds). The initializations that keep the ReLU signal's
# variance constant through depth train this 20-layer network; the ones that let it shrink
# do not, or only slowly. He normal (variance $2/\text{fan\_in}$), orthogonal with ReLU's
# gain $\sqrt2$ and LSUV (orthogonal, then unit output variance per layer) all reach about
# 55–65% test accuracy after 5 epochs, 90% within 9–13 epochs and 95–97% after 30; the
# orthogonal starts get there a few epochs sooner than He normal. Single runs vary a lot:
# between seeds, final accuracies of the same initialization differ by several points, and
# one orthogonal($\sqrt2$) run blew up at this learning rate (see "worst seed"), which is why
# the summary uses medians. Glorot and orthogonal with gain 1 lose a factor 2 per layer
# ($2^{-20} \approx 10^{-6}$ at the top, as the table above shows): they sit near chance for
# about 10 epochs and are still far behind after 30. The small Gaussian (std 0.01, a factor
# $\approx 0.003$ per layer) never leaves chance level: its gradients vanish. The assertions
# below keep these statements true.

# %%
good = ("he_normal", "orthogonal(√2)", "LSUV")
for g in good:
  assert final[g] > 0.93 and at_5[g] > 0.4 and to_90[g] <= 15, g
assert max(to_90["orthogonal(√2)"], to_90["LSUV"]) <= to_90["he_normal"]
for slow in ("glorot_normal", "orthogonal"):
  assert at_5[slow] < 0.15 and final[slow] < min(final[g] for g in good) - 0.25, slow
assert final["normal(0.01)"] < 0.2
