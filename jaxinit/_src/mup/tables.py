r"""The µP tables: per-kind multipliers of the initialization std and the learning rate.

Every multiplier is relative to the base model (the same model at the base width, in
the standard parametrization): at the base width each one is 1. ``m_in`` and
``m_out`` are the width multipliers of a parameter's fan-in and fan-out (the ratio of
the fans at the target and at the base width; 1 for a dimension that does not scale).
The kinds (Tensor Programs V, Table 3 columns; TP V App. B.1 for norms and embeddings):

* ``input``: only the fan-out scales (input weights, every bias, norm scales,
  embedding tables; a vector's fan-out is its size and its fan-in is 1);
* ``hidden``: both scale;
* ``output``: only the fan-in scales (the readout);
* ``fixed``: nothing scales.

Two formulations, equivalent by TP V Lemma J.1 (A, B, C → Aθ, B/θ, C/θ for Adam; C/θ² for
SGD); they differ only at the readout:

``init_lr`` — TP V Table 3 ("µP for general neural networks"), nothing in the forward pass:

=========== ============ =============== ================= ===========
kind        init std ×   Adam LR ×       SGD LR ×          forward ×
=========== ============ =============== ================= ===========
input       1            1               m_out             1
hidden      1/√m_in      1/m_in          m_out/m_in        1
output      1/m_in       1/m_in          1/m_in            1
fixed       1            1               1                 1
=========== ============ =============== ================= ===========

``mup_package`` — TP V Table 8, what microsoft/mup 1.0.0 implements (``MuReadout``,
``MuAdam``/``MuSGD`` in ``mup/optim.py``, ``mup.init``): the readout keeps its base std,
its output is multiplied by ``1/m_in`` (``MuReadout.forward``), its Adam LR is 1 and its
SGD LR ``m_in``; every other row as above. mup's SGD rule for hidden weights,
``lr / (m_in/m_out)`` (``MuSGD``), equals Table 3's constant when all widths scale
together and is what both formulations use when they do not (TP V App. J.2.1 notes
that SGD "doesn't quite work in general" with varying width ratios).

The init column is mup.init's rule (``mup/init.py``): the base initializer's std *at the
base shape*, times ``1/√m_in`` for hidden weights; the ``init_lr`` readout gets Table 3's
variance ``1/fan_in²``, i.e. ``1/m_in`` on the std.

Weight decay (torch/optax convention: each step multiplies a parameter by
``1 − lr·wd``): with ``wd × 1/LR×`` the per-step decay ``lr·wd`` does not depend on width.
This is what mup's ``MuAdam``/``MuAdamW``/``MuSGD`` do by default (``decoupled_wd=False``),
what TP V App. B.3 asks for ("weight decay should be scaled independently of width") and
CompleteP Table 1's hidden weight decay ``λ·m_N``.
"""

from __future__ import annotations

KINDS = ("input", "hidden", "output", "fixed")
FORMULATIONS = ("init_lr", "mup_package")
OPTIMIZERS = ("adam", "sgd")


def init_multiplier(kind: str, m_in: float, formulation: str) -> float:
  """The init std multiplier: base std (at the base shape) × this."""
  if kind == "hidden":
    return m_in**-0.5
  if kind == "output" and formulation == "init_lr":
    return 1.0 / m_in
  return 1.0


def lr_multiplier(kind: str, m_in: float, m_out: float, formulation: str, optimizer: str) -> float:
  """The learning-rate multiplier from width alone (no depth factor)."""
  if optimizer == "adam":
    if kind == "hidden" or (kind == "output" and formulation == "init_lr"):
      return 1.0 / m_in
    return 1.0
  # SGD
  if kind == "input":
    return m_out
  if kind == "hidden":
    return m_out / m_in
  if kind == "output":
    return 1.0 / m_in if formulation == "init_lr" else m_in
  return 1.0


def readout_multiplier(m_in: float, formulation: str) -> float:
  """What the model multiplies the readout's output (or its input) by."""
  return 1.0 / m_in if formulation == "mup_package" else 1.0
