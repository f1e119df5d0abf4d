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
# # Orthogonal vs Gaussian weights in deep tanh networks: dynamical isometry at the edge of chaos
#
# Mean-field theory (Poole et al. 2016, Schoenholz et al. 2017) says a deep random network
# propagates signals best at the *edge of chaos*, where $\chi_1 = \sigma_w^2 E[\phi'(\sqrt{q^*}z)^2] = 1$:
# then the **mean** squared singular value of the input–output Jacobian $J$ stays 1 at any depth.
# Pennington, Schoenholz & Ganguli (2017) showed that the mean is not enough: with Gaussian
# weights the singular values of $J$ spread out as depth grows, while with **orthogonal**
# weights and tanh near $q^* \to 0$ they stay concentrated around 1 — *dynamical isometry*.
# ReLU networks cannot get there, whatever the weights.
#
# This notebook reproduces those statements with `jaxinit.mean_field` (all by quadrature)
# and `jaxinit.diagnostics.jacobian_spectrum` (exact singular values).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxinit
from jaxinit import diagnostics, mean_field

WIDTH = 128
DEPTHS = (4, 16, 64)

# %% [markdown]
# ## 1. The phase diagram and a critical point
#
# Colour is $\log_{10}\chi_1$ over $(\sigma_w^2, \sigma_b^2)$; the black contour is $\chi_1 = 1$
# and the dashed line is the same curve computed independently from
# `mean_field.critical_line(q*)`. We pick the critical point with a small fixed point
# $q^* = 1/64$, where tanh is nearly linear (Pennington et al. use small $q^*$ for this reason).

# %%
q_star = 1 / 64
crit = mean_field.critical_line("tanh", q_star)
sw, sb = float(crit.sigma_w), float(crit.sigma_b)
print(f"critical point for q* = {q_star}: sigma_w = {sw:.6f}, sigma_b = {sb:.6f}")
print("chi_1 there:", mean_field.chi1("tanh", sw, sb, q0=q_star))
print(mean_field.depth_scales("tanh", sw, sb, q0=q_star))
assert abs(mean_field.chi1("tanh", sw, sb, q0=q_star) - 1) < 1e-9

ax = mean_field.plot_phase_diagram("tanh", np.linspace(0.5, 2.5, 50), np.linspace(0, 0.5, 30))
ax.plot(sw**2, sb**2, "k*", ms=14, label=f"critical, $q^*$={q_star:.3g}")
ax.legend(loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# ## 2. Deep tanh networks at that point
#
# $h_l = \tanh(h_{l-1} W_l + b_l)$, width 128, weights either Gaussian with variance
# $\sigma_w^2/N$ (`jaxinit.normal`) or orthogonal scaled by $\sigma_w$ (`jaxinit.orthogonal`),
# biases $N(0, \sigma_b^2)$. The inputs have variance $(q^* - \sigma_b^2)/\sigma_w^2$, so that the
# first layer's pre-activations already have variance $q^*$ and every layer sits at the fixed point.


# %%
def tanh_net(params, x):
  for p in params:
    x = jnp.tanh(x @ p["w"] + p["b"])
  return x


def build(kind, depth, sigma_w, sigma_b, seed=0):
  w_init = (
    jaxinit.orthogonal(scale=sigma_w)
    if kind == "orthogonal"
    else jaxinit.normal(stddev=sigma_w / np.sqrt(WIDTH))
  )
  b_init = jaxinit.normal(stddev=sigma_b) if sigma_b > 0 else jaxinit.zeros()
  keys = jax.random.split(jax.random.key(seed), 2 * depth)
  return [
    {"w": w_init(keys[2 * i], (WIDTH, WIDTH)), "b": b_init(keys[2 * i + 1], (WIDTH,))}
    for i in range(depth)
  ]


def inputs(q, sigma_w, sigma_b, seed):
  """A batch whose first pre-activations h_1 = x W_1 + b_1 have variance q."""
  return np.sqrt((q - sigma_b**2) / sigma_w**2) * jax.random.normal(
    jax.random.key(seed), (8, WIDTH)
  )


x = inputs(q_star, sw, sb, seed=1)
spectra = {}
for kind in ("gaussian", "orthogonal"):
  for depth in DEPTHS:
    s = diagnostics.jacobian_spectrum(tanh_net, build(kind, depth, sw, sb), x, method="exact")
    spectra[kind, depth] = s
    print(f"{kind:10s} depth {depth:3d}: {s}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, kind in zip(axes, ("gaussian", "orthogonal")):
  diagnostics.plot_jacobian_spectrum(
    {f"depth {d}": spectra[kind, d] for d in DEPTHS}, ax=ax, bins=50
  )
  ax.set_title(f"tanh at the edge of chaos, {kind} weights")
plt.show()

# %% [markdown]
# What the numbers say (checked below): with orthogonal weights the spectrum stays close to 1
# even at depth 64 — a mean squared singular value near 1, the largest near 1, a moderate
# condition number. With Gaussian weights the singular values spread over ten decades: a few
# large ones and a mass collapsing towards 0, the condition number near $10^{10}$. Their mean
# square is 1 only *on average over networks* ($\chi_1 = 1$ is a statement about expectations):
# it is carried by rare large singular values, and a single deep Gaussian network typically
# falls well below it.

# %%
for depth in DEPTHS:
  g, o = spectra["gaussian", depth], spectra["orthogonal", depth]
  print(
    f"depth {depth:3d}: mean s^2 gaussian {g.mean_squared:.3f}, orthogonal {o.mean_squared:.3f}"
    f" | max s gaussian {g.max:.2f}, orthogonal {o.max:.2f}"
    f" | condition gaussian {g.condition:.3g}, orthogonal {o.condition:.3g}"
  )
deep_g, deep_o = spectra["gaussian", DEPTHS[-1]], spectra["orthogonal", DEPTHS[-1]]
assert 0.8 < deep_o.mean_squared < 1.2 and deep_o.max < 1.5 and deep_o.condition < 100
assert deep_g.max > 2 and deep_g.condition > 1e6

# %% [markdown]
# ## 3. Off criticality, the mean itself goes: theory vs measurement
#
# Mean-field theory predicts the mean squared singular value of $J$ to be $\chi_1^L$ (each layer
# multiplies it by $\chi_1$). Below, orthogonal tanh networks at $\sigma_b = 0$ and three
# weight scales: ordered ($\sigma_w = 0.9$), critical ($\sigma_w = 1$), chaotic ($\sigma_w = 1.3$),
# with pre-activations at each network's fixed point $q^*$ where it is positive (for the ordered
# and critical cases $q^* = 0$: we start at $q = 10^{-3}$, near it).

# %%
rows = []
for sigma_w in (0.9, 1.0, 1.3):
  q = mean_field.q_star("tanh", sigma_w, 0.0)
  q_in = q if q > 1e-3 else 1e-3
  chi = mean_field.chi1("tanh", sigma_w, 0.0, q0=q_in)
  x_q = inputs(q_in, sigma_w, 0.0, seed=2)
  for depth in (4, 16):
    params = build("orthogonal", depth, sigma_w, 0.0)
    measured = np.mean(
      [
        diagnostics.jacobian_spectrum(tanh_net, params, x_q, example=i, method="exact").mean_squared
        for i in range(len(x_q))
      ]
    )  # averaged over the 8 inputs
    rows.append((sigma_w, depth, chi**depth, measured))
    print(
      f"sigma_w {sigma_w}: chi_1 {chi:.4f}, depth {depth:2d}: predicted mean s^2 "
      f"{chi**depth:10.4g}, measured {measured:10.4g}"
    )

# %% [markdown]
# The ordered network shrinks gradients geometrically and the chaotic one amplifies them, and
# the measured factors agree with $\chi_1^L$ to within 15% at width 128: about 1% for the
# ordered network, 3% at criticality, 6–12% for the chaotic one, whose deviation grows with
# depth (the theory is for infinite width).

# %%
for sigma_w, depth, predicted, measured in rows:
  assert 0.85 < measured / predicted < 1.15, (sigma_w, depth, predicted, measured)

# %% [markdown]
# ## 4. ReLU cannot be isometric
#
# For ReLU the critical point is He initialization, $\sigma_w^2 = 2$, $\sigma_b = 0$, for every
# $q^*$ (`mean_field.critical_line("relu", q)` is $(\sqrt2, 0)$). The Jacobian of one example
# is $J = W_L D_L \cdots W_1 D_1$ with $D_l$ diagonal 0/1 masks that switch off about half the
# units at every layer: $J$ is rank-deficient, and orthogonal weights do not help.


# %%
def relu_net(params, x):
  for p in params:
    x = jax.nn.relu(x @ p["w"] + p["b"])
  return x


print(mean_field.critical_line("relu", [0.1, 1.0, 10.0]))
relu_spectra = {}
for kind in ("gaussian", "orthogonal"):
  s = diagnostics.jacobian_spectrum(
    relu_net,
    build(kind, 16, np.sqrt(2), 0.0),
    jax.random.normal(jax.random.key(3), (8, WIDTH)),
    method="exact",
  )
  relu_spectra[kind] = s
  rank = int(np.sum(s.singular_values > 1e-6 * s.max))
  print(f"relu, {kind:10s}, depth 16: rank {rank} of {WIDTH}; {s}")
  assert rank < WIDTH * 0.8

ax = diagnostics.plot_jacobian_spectrum(relu_spectra, bins=50)
ax.set_title("ReLU at criticality (He), depth 16")
plt.show()
