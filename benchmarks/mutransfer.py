"""µTransfer on a language model: the optimal Adam learning rate across width (SP vs µP)
and across depth (Depth-µP α = 1/2, CompleteP α = 1), on text every machine has.

Data: the Python standard library's own top-level ``.py`` sources (``sysconfig``'s
``stdlib`` directory, sorted by name, concatenated), as bytes (vocabulary 256); the last
10% is held out. Model: a pre-LN transformer character LM (Flax linen): token and position
embeddings, ``L`` blocks ``x + r·Attn(LN(x))``, ``x + r·MLP(LN(x))`` (causal attention with
4 heads, head dim ``d/4``; MLP ``4d``; ``r`` the residual multiplier), final LN, an untied
readout. Base width 64 (``delta`` at 128), base depth 2.

* Width transfer: at depth 2, widths ``--widths`` (default 64 128 256 512), SP (LeCun-normal
  kernels at the width's fans, embeddings N(0, 1), ``1/√d_head`` attention, one Adam learning
  rate) against µP (``jaxinit.mup``: ``p.init``, ``p.optimizer``, ``p.attention_scale``).
* Depth transfer: at width 64, depths ``--depths`` (default 2 4 8 16), three depth rules on top
  of µP: none (``r = 1``), Depth-µP (α = 1/2) and CompleteP (α = 1)
  (``mup.Depth(2, L, alpha, blocks)``: ``r = (L/2)^-α``, block learning rates
  ``× (L/2)^(α-1)``).

Each run: ``--steps`` Adam steps on random windows of ``--ctx`` bytes, ``--batch`` per step,
scored by the mean loss (nats/byte) on 16 fixed held-out batches; the learning rates
``2^lo … 2^hi`` (``--lrs lo hi``) of one configuration run as one vectorized program. Printed:
per configuration, the loss per learning rate, the best learning rate (median over
``--seeds``) and its shift from the first width/depth to the last, in grid steps.

Usage: ``PYTHONPATH=. python benchmarks/mutransfer.py [--quick]`` (``--quick``: widths 64
128 256, depths 2 4 8, 100 steps, batch 8, context 32: minutes on a laptop CPU; the
defaults are for an accelerator).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sysconfig
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import jaxinit
from jaxinit import mup

BASE_WIDTH, BASE_DEPTH, HEADS = 64, 2, 4
BASE_INIT = {  # LeCun-normal on the true fan-in of the attention kernels' axis groups
  ".*embedding": jaxinit.normal(1.0),
  ".*(query|key|value)/kernel": jaxinit.lecun_normal(in_axis=0, out_axis=(1, 2)),
  ".*out/kernel": jaxinit.lecun_normal(in_axis=(0, 1), out_axis=2),
  ".*kernel": jaxinit.lecun_normal(),
  ".*bias": jaxinit.zeros(),
  ".*scale": jaxinit.ones(),
}


def corpus(n_bytes: int) -> np.ndarray:
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  out, total = [], 0
  for f in sorted(root.glob("*.py")):
    b = f.read_bytes()
    out.append(b)
    total += len(b)
    if total >= n_bytes:
      break
  return np.frombuffer(b"".join(out)[:n_bytes], np.uint8).astype(np.int32)


class Block(nn.Module):
  d: int
  attn_scale: float
  residual: float

  @nn.compact
  def __call__(self, x, mask):
    dh = self.d // HEADS
    scale = self.attn_scale * math.sqrt(dh)  # nn.dot_product_attention divides q by sqrt(dh)

    def attn(q, k, v, mask=None):  # Flax passes only the keywords this signature names
      return nn.dot_product_attention(q * scale, k, v, mask=mask)

    h = nn.LayerNorm()(x)
    x = x + self.residual * nn.MultiHeadDotProductAttention(HEADS, attention_fn=attn)(
      h, h, mask=mask
    )
    h = nn.LayerNorm()(x)
    return x + self.residual * nn.Dense(self.d)(nn.gelu(nn.Dense(4 * self.d)(h)))


class LM(nn.Module):
  d: int
  depth: int
  ctx: int
  attn_scale: float = 0.0  # 0: 1/sqrt(d_head)
  residual: float = 1.0

  @nn.compact
  def __call__(self, tokens):
    scale = self.attn_scale or 1 / math.sqrt(self.d // HEADS)
    x = nn.Embed(256, self.d)(tokens) + nn.Embed(self.ctx, self.d)(jnp.arange(tokens.shape[-1]))
    mask = nn.make_causal_mask(tokens)
    for i in range(self.depth):
      x = Block(self.d, scale, self.residual, name=f"block_{i}")(x, mask)
    return nn.Dense(256, use_bias=False, name="head")(nn.LayerNorm()(x))


def shapes(d, depth, ctx):
  return jax.eval_shape(LM(d, depth, ctx).init, jax.random.key(0), jnp.zeros((1, ctx), jnp.int32))[
    "params"
  ]


def configure(kind: str, d: int, depth: int, ctx: int):
  """(model, init(key) -> params, Adam direction) for one configuration."""
  if kind == "SP":
    tgt = shapes(d, depth, ctx)
    return LM(d, depth, ctx), lambda k: jaxinit.reinit(tgt, BASE_INIT, k), optax.scale_by_adam()
  alpha = {"µP": None, "µP+Depth-µP": 0.5, "µP+CompleteP": 1.0}[kind]
  dep = None if alpha is None else mup.Depth(BASE_DEPTH, depth, alpha, r"block_\d+/.*")
  p = mup.parametrize(
    shapes(BASE_WIDTH, depth, ctx),
    shapes(d, depth, ctx),
    delta=shapes(2 * BASE_WIDTH, depth, ctx),
    depth=dep,
  )
  model = LM(d, depth, ctx, p.attention_scale(d // HEADS), p.residual_multiplier)
  tgt = shapes(d, depth, ctx)
  return model, lambda k: p.init(tgt, k, BASE_INIT), p.optimizer(optax.scale_by_adam())


def sweep(kind, d, depth, args, train, val, lrs):
  model, init, direction = configure(kind, d, depth, args.ctx)

  def loss_fn(params, tokens):
    logits = model.apply({"params": params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  windows = lambda data, starts: data[starts[:, None] + jnp.arange(args.ctx + 1)]
  vstarts = jnp.asarray(np.random.default_rng(0).integers(0, len(val) - args.ctx - 1, (16, 32)))

  def run(lr, seed):
    params = init(jax.random.key(seed))
    starts = jax.random.randint(
      jax.random.key(100 + seed), (args.steps, args.batch), 0, len(train) - args.ctx - 1
    )

    def step(carry, s):
      params, state = carry
      grads = jax.grad(loss_fn)(params, windows(train, s))
      updates, state = direction.update(grads, state, params)
      return (jax.tree.map(lambda w, u: w - lr * u, params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, direction.init(params)), starts)
    return jax.lax.map(lambda s: loss_fn(params, windows(val, s)), vstarts).mean()

  lr = jnp.repeat(jnp.asarray(lrs, jnp.float32), args.seeds)
  seed = jnp.tile(jnp.arange(args.seeds), len(lrs))
  with jax.numpy_dtype_promotion("standard"):
    out = jax.jit(jax.vmap(run))(jnp.asarray(lr), seed)
  return np.asarray(out).reshape(len(lrs), args.seeds)


def report(title, rows, lrs):
  """rows: {(kind, size): losses (lrs, seeds)} -> prints, returns {kind: shift in grid steps}."""
  print(f"\n{title}: held-out loss (nats/byte, median over seeds) per log2(learning rate)")
  print(f"{'':22s} {'size':>5s} " + " ".join(f"{int(math.log2(v)):>6d}" for v in lrs) + "   best")
  best = {}
  for (kind, size), losses in rows.items():
    idx = np.argmin(np.where(np.isfinite(losses), losses, np.inf), axis=0)
    best[(kind, size)] = int(np.median(idx))
    med = np.median(losses, axis=1)
    cells = " ".join(f"{v:6.3f}" if np.isfinite(v) else "   nan" for v in med)
    print(f"{kind:22s} {size:5d} {cells}   2^{int(math.log2(lrs[best[(kind, size)]]))}")
  shifts = {}
  for kind in dict.fromkeys(k for k, _ in rows):
    sizes = [s for k, s in rows if k == kind]
    shifts[kind] = best[(kind, sizes[-1])] - best[(kind, sizes[0])]
    print(f"  {kind}: optimum moves {shifts[kind]:+d} grid steps from {sizes[0]} to {sizes[-1]}")
  return shifts


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
  ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16])
  ap.add_argument("--lrs", type=int, nargs=2, default=[-12, -4], metavar=("LO", "HI"))
  ap.add_argument("--steps", type=int, default=400)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--ctx", type=int, default=64)
  ap.add_argument("--seeds", type=int, default=2)
  ap.add_argument("--bytes", type=int, default=2_000_000)
  ap.add_argument("--skip", choices=["width", "depth"], default=None)
  if ap.parse_args().quick:  # smaller defaults; flags given explicitly still win
    ap.set_defaults(widths=[64, 128, 256], depths=[2, 4, 8], steps=100, batch=8, ctx=32, seeds=1)
    ap.set_defaults(lrs=[-11, -5])
  args = ap.parse_args()
  data = corpus(args.bytes)
  cut = int(0.9 * len(data))
  train, val = jnp.asarray(data[:cut]), jnp.asarray(data[cut:])
  lrs = 2.0 ** np.arange(args.lrs[0], args.lrs[1] + 1)
  print(
    f"jax {jax.__version__} on {jax.devices()[0].platform}; {len(data):,} bytes of stdlib "
    f"source; {args.steps} steps x {args.batch} x {args.ctx} bytes; {args.seeds} seed(s); "
    f"learning rates 2^{args.lrs[0]}..2^{args.lrs[1]}"
  )
  t0 = time.perf_counter()
  if args.skip != "width":
    rows = {}
    for kind in ("SP", "µP"):
      for d in args.widths:
        rows[(kind, d)] = sweep(kind, d, BASE_DEPTH, args, train, val, lrs)
    report(f"width transfer (depth {BASE_DEPTH})", rows, lrs)
    print(f"  ({time.perf_counter() - t0:.0f}s)")
  if args.skip != "depth":
    rows = {}
    for kind in ("µP", "µP+Depth-µP", "µP+CompleteP"):
      for depth in args.depths:
        rows[(kind, depth)] = sweep(kind, BASE_WIDTH, depth, args, train, val, lrs)
    report(f"depth transfer (width {BASE_WIDTH})", rows, lrs)
  print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
  main()
