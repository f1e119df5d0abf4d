"""Step time of ``p.optimizer(optax.adamw(...))`` against ``optax.adamw`` alone.

A GPT-shaped Flax linen model (untied embeddings, pre-LN blocks; default 6 layers,
d_model 512, vocab 16,384: 31M parameters) is parametrized with µP against its width/4
base. The timed step is the optimizer alone — ``tx.update`` then ``optax.apply_updates``,
jitted, with the parameters and the optimizer state donated (updated in place), on fixed
gradients — since a model's forward and backward passes are the same under both and
would only dilute the ratio. Steady state: after a warm-up, the two programs run
alternately (so that drifts in machine load hit both alike) and the median of each is
reported, with their ratio (the bar: <= 1.05). Also timed: ``weight_decay='scaled'``
(no parameter rescaling) and ``optax.chain(..., p.scale_updates(), ...)``. The state of
the wrapped optimizer is checked to have exactly the leaves of ``optax.adamw``'s.

Usage: ``PYTHONPATH=. python benchmarks/mup_optimizer.py [--layers 6] [--d 512]
[--vocab 16384] [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from jaxinit import mup


class Block(nn.Module):
  d: int

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=8)(h, h)
    h = nn.LayerNorm()(x)
    return x + nn.Dense(self.d)(nn.gelu(nn.Dense(4 * self.d)(h)))


class GPT(nn.Module):
  layers: int
  d: int
  vocab: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, self.d)(tokens)
    for i in range(self.layers):
      x = Block(self.d, name=f"block_{i}")(x)
    return nn.Dense(self.vocab, use_bias=False, name="head")(nn.LayerNorm()(x))


def shapes(layers, d, vocab):
  tokens = jnp.zeros((1, 8), jnp.int32)
  return jax.eval_shape(GPT(layers, d, vocab).init, jax.random.key(0), tokens)["params"]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--layers", type=int, default=6)
  ap.add_argument("--d", type=int, default=512)
  ap.add_argument("--vocab", type=int, default=16384)
  ap.add_argument("--repeats", type=int, default=30)
  args = ap.parse_args()

  target = shapes(args.layers, args.d, args.vocab)
  base = shapes(args.layers, args.d // 4, args.vocab)
  p = mup.parametrize(base, target)
  n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(target))
  print(
    f"{platform.processor() or platform.machine()}, jax {jax.__version__}, optax "
    f"{optax.__version__}, devices {jax.devices()}"
  )
  print(
    f"GPT: {args.layers} layers, d {args.d}, vocab {args.vocab}: {n / 1e6:.1f}M parameters "
    f"({len(jax.tree.leaves(target))} leaves); µP base width {args.d // 4}"
  )

  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) * 0.02), target
  )
  grads = jax.tree.map(
    lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) * 1e-3), target
  )
  adamw = optax.adamw(1e-3, weight_decay=0.1)
  candidates = {
    "optax.adamw": adamw,
    "p.optimizer(adamw)": p.optimizer(adamw),
    "p.optimizer(adamw, weight_decay='scaled')": p.optimizer(adamw, weight_decay="scaled"),
    "chain(scale_by_adam, p.scale_updates, decay, -lr)": optax.chain(
      optax.scale_by_adam(), p.scale_updates(), optax.add_decayed_weights(0.1), optax.scale(-1e-3)
    ),
  }
  ref_state = adamw.init(params)
  steps, states = {}, {}
  for name, tx in candidates.items():
    state = tx.init(params)
    if name.startswith("p.optimizer"):
      assert jax.tree.structure(state) == jax.tree.structure(ref_state), name
    states[name] = state

    def step(params, state, grads, tx=tx):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    steps[name] = jax.jit(step, donate_argnums=(0, 1))

  live = {name: (jax.tree.map(jnp.copy, params), states[name]) for name in candidates}
  for name in candidates:  # compile and warm up
    for _ in range(3):
      live[name] = steps[name](*live[name], grads)
    jax.block_until_ready(live[name])
  times = {name: [] for name in candidates}
  for _ in range(args.repeats):  # interleaved
    for name in candidates:
      t0 = time.perf_counter()
      live[name] = steps[name](*live[name], grads)
      jax.block_until_ready(live[name])
      times[name].append(time.perf_counter() - t0)
  ref = statistics.median(times["optax.adamw"])
  print(f"\noptimizer step (update + apply_updates, jitted, donated), median of {args.repeats}:")
  print(f"{'optimizer':52s} {'ms':>8s} {'ratio':>7s}")
  for name, ts in times.items():
    m = statistics.median(ts)
    print(f"{name:52s} {m * 1e3:8.2f} {m / ref:7.3f}")
  print("\nstate leaves of p.optimizer(adamw) == optax.adamw's: True (checked)")


if __name__ == "__main__":
  main()
