"""The PyTorch reference of benchmarks/lsuv.py, and the two benchmark models' sizes.

This module imports no jax: ``benchmarks/lsuv.py --warm-cache`` runs it as its own process
(``python benchmarks/lsuv_torch.py --e2e ...``) to time the reference end to end, from
process start to the LSUV result, paying only Python's start-up and torch's imports.

LSUV as in LSUV-pytorch: ``torch.nn.init.orthogonal_`` pre-init, a forward hook on each
Conv2d/Linear, a whole-model forward per try, tol 0.1 on the variance, at most 10 tries.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

TOL, MAX_ITERS = 0.1, 10

# The two models of the issue, and tiny versions for smoke runs (benchmarks/accelerator.py
# uses these too, through benchmarks/lsuv.py).
CONFIGS = {
  "full": {
    "mlp": dict(depth=32, width=512, batch=256, d_in=784),
    "conv": dict(depth=16, channels=64, batch=64, hw=32),
  },
  "quick": {
    "mlp": dict(depth=4, width=64, batch=32, d_in=32),
    "conv": dict(depth=3, channels=8, batch=16, hw=8),
  },
}


def numpy_batch(kind, cfg) -> np.ndarray:
  """The benchmark batch of ``kind`` ("mlp" or "conv") for ``cfg``, float32 (NHWC images)."""
  rng = np.random.default_rng(1)
  if kind == "mlp":
    x = rng.standard_normal((cfg["batch"], cfg["d_in"]))
  else:
    x = rng.standard_normal((cfg["batch"], cfg["hw"], cfg["hw"], 3))
  return x.astype(np.float32)


def torch_batch(kind, x):
  """The batch ``x`` as a CPU torch tensor in torch's layout (NCHW for the conv net)."""
  import torch

  xn = np.array(x)
  return torch.from_numpy(xn if kind == "mlp" else np.ascontiguousarray(xn.transpose(0, 3, 1, 2)))


def torch_models(kind, cfg):
  import torch.nn as tnn

  if kind == "mlp":
    layers = [tnn.Linear(cfg["d_in"], cfg["width"]), tnn.ReLU()]
    for _ in range(cfg["depth"] - 2):
      layers += [tnn.Linear(cfg["width"], cfg["width"]), tnn.ReLU()]
    return tnn.Sequential(*layers, tnn.Linear(cfg["width"], 10))
  c = cfg["channels"]
  layers = [tnn.Conv2d(3, c, 3, padding=1), tnn.ReLU()]
  for _ in range(cfg["depth"] - 1):
    layers += [tnn.Conv2d(c, c, 3, padding=1), tnn.ReLU()]
  return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, 10))


def torch_lsuv(model, x, preinit=True):
  """LSUV as in LSUV-pytorch: orthonormal init, hooks, a whole forward per try.
  ``preinit=False`` keeps the current weights (matches ``jaxinit.lsuv`` without a key)."""
  import torch
  import torch.nn as tnn

  passes = 0
  layers = [m for m in model.modules() if isinstance(m, (tnn.Conv2d, tnn.Linear))]
  with torch.no_grad():
    for m in layers if preinit else ():
      tnn.init.orthogonal_(m.weight)
    for m in layers:
      store = {}
      hook = m.register_forward_hook(lambda mod, inp, out, store=store: store.update(out=out))
      model(x)
      passes += 1
      var, tries = store["out"].var().item(), 0
      while abs(var - 1.0) >= TOL and tries < MAX_ITERS:
        m.weight.data /= var**0.5
        model(x)
        passes += 1
        var, tries = store["out"].var().item(), tries + 1
      hook.remove()
  return passes


def main():
  ap = argparse.ArgumentParser(description="One end-to-end run of the PyTorch LSUV reference.")
  ap.add_argument("--e2e", choices=("mlp", "conv"), required=True, help="the model")
  ap.add_argument("--size", choices=tuple(CONFIGS), default="full")
  ap.add_argument("--no-preinit", action="store_true", help="keep torch's default init")
  ap.add_argument("--since", type=float, required=True, help="time.time() at process spawn")
  ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
  args = ap.parse_args()
  started = time.time()
  import torch

  if args.threads:
    torch.set_num_threads(args.threads)
  imported = time.time()

  cfg = CONFIGS[args.size][args.e2e]
  torch.manual_seed(0)
  model = torch_models(args.e2e, cfg)
  passes = torch_lsuv(model, torch_batch(args.e2e, numpy_batch(args.e2e, cfg)), not args.no_preinit)
  done = time.time()
  print(
    json.dumps(
      {
        "result_s": done - args.since,
        "startup_s": started - args.since,
        "imports_s": imported - args.since,
        "passes": passes,
        "threads": torch.get_num_threads(),
      }
    )
  )


if __name__ == "__main__":
  main()
