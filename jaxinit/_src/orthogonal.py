"""Haar-random (semi-)orthogonal and unitary initializers: ``orthogonal`` and
``delta_orthogonal``.

Three exact constructions of a Haar matrix are implemented.

``"qr"`` (Mezzadri 2007): draw a Gaussian matrix ``G``, factor ``G = QR`` and
multiply column ``j`` of ``Q`` by the phase ``R_jj / |R_jj|`` (a sign for real
matrices), which makes ``Q`` the factor of the unique QR with ``R_jj > 0``. This
is what jax, torch and Keras do.

``"stewart"`` (Stewart 1980), the default: form ``Q = H_1 ... H_n`` directly
from the Householder reflectors that a QR factorization of a Gaussian matrix
*would* produce, without running the factorization. Householder QR of an
``m x n`` Gaussian ``G`` works column by column: step ``j`` takes the vector
``x_j`` (rows ``j..m-1`` of the current column ``j``), builds the reflector
``H_j`` with ``H_j^H x_j = beta_j e_1`` and applies it to the trailing columns.
Because a Gaussian vector's distribution is invariant under any unitary map,
and the trailing columns are independent of ``x_j``, the updated trailing block
is again i.i.d. Gaussian and independent of ``H_j``. So the vectors ``x_1, ...,
x_n`` that QR turns into reflectors are independent standard Gaussian vectors
of lengths ``m, m-1, ..., m-n+1``, and we can draw them directly: half the
random numbers of a square ``G``, and no ``geqrf``.

Sign convention. LAPACK's ``larfg`` picks ``beta = -sign(Re alpha) ||x||``
(``alpha = x[0]``) to avoid cancellation in ``v_0 = alpha - beta``; then
``R_jj = beta_j`` has a random sign, ``H e_1 = x / beta`` has first entry
``-|alpha| / ||x|| <= 0``, and a sign diagonal ``D = diag(sign(beta_j))`` must
be applied afterwards (Mezzadri's fix). Here ``beta = +||x||`` always, the
convention that makes ``R_jj > 0``, with ``v_0`` computed without cancellation
(Parlett): for ``Re(alpha) > 0``, ``alpha - beta = (-||x_tail||^2 + 2i beta
Im(alpha)) / (conj(alpha) + beta)``. With

    H = I - tau v v^H,   v = [1; x_tail / v_0],   tau = (beta - alpha) / beta = -v_0 / beta,

``H^H x = beta e_1`` and ``H`` is unitary (``tau + conj(tau) = |tau|^2 ||v||^2``
holds for either sign of the real ``beta``), so ``H e_1 = x / ||x||``. No
diagonal is needed and ``Q`` is exactly the Haar factor; the saving is one pass
over the matrix.

Why ``Q = H_1 ... H_n`` is exactly Haar (induction on ``n``): write ``Q = H_1
diag(1, Q')`` with ``Q' = H'_2 ... H'_n`` built the same way from the remaining,
independent vectors, Haar on the ``(m-1) x (n-1)`` Stiefel manifold by
induction. The first column of ``Q`` is ``H_1 e_1 = x_1 / ||x_1||``, uniform on
the unit sphere. ``H_1`` maps ``e_1^perp`` isometrically onto the complement of
that column, and ``Q'`` is independent of ``x_1`` and invariant under unitary
maps, so given the first column the others are Haar in its complement. "A
uniform first column, then Haar in its complement" is the Haar measure. The
base case, a vector ``[alpha]`` of length 1, gives ``H = alpha / |alpha|``: a
uniform sign (O(1)) or phase (U(1)), with the same formulas. Using LAPACK's
``beta`` without ``D`` gives a first column with ``Re Q_00 <= 0``, which the
Haar tests catch.

``householder_product`` (LAPACK ``orgqr``/``ungqr``, cuSOLVER on GPU) reads
only the entries strictly below the diagonal, so only about ``n(n+1)/2``
random numbers are drawn and packed into the triangle (``packed_upper``; the
reflectors are built as rows, which is LAPACK's column-major layout).

``"cholesky_qr"``: the same ``Q`` as ``"qr"`` (the factor of the QR of a
Gaussian ``G`` with ``R_jj > 0``), computed by shifted CholeskyQR3 (Fukaya,
Kannan, Nakatsukasa, Yamamoto, Yanagisawa 2020) instead of Householder QR:
three passes of

    A = Y^H Y (+ s I),   L = chol(A) (lower, L_jj > 0),   Y <- Y L^{-H}

starting from ``Y = G``, the first with a shift ``s``. Each pass is a matrix
product, a small Cholesky factorization and a triangular solve with many
right-hand sides, all matmul-speed on GPUs and TPUs, where ``orgqr`` (stewart)
and ``geqrf`` (qr) are not.

Why the result is exactly the Haar ``Q`` (in exact arithmetic). Write ``G = Q
R`` with ``R_jj > 0`` (Mezzadri's ``Q``, Haar for a Gaussian ``G``). Without a
shift, ``G^H G = R^H Q^H Q R = R^H R``, and a Hermitian positive definite
matrix has exactly one Cholesky factor with a positive diagonal, so ``chol(G^H
G) = R^H`` and ``G L^{-H} = G R^{-1} = Q``. With the shift, the first pass gives
``Y_1 = G R_1^{-1}`` for some upper triangular ``R_1`` with a positive diagonal
(not orthonormal yet); the second pass then returns the ``Q`` factor of ``Y_1``
exactly, so ``G = Q (R_2 R_1)`` with ``R_2 R_1`` upper triangular with a
positive diagonal (a product of two such matrices): by uniqueness of that QR,
``Q`` is Mezzadri's ``Q``. The third pass multiplies by ``chol(I)^{-H} = I``. So
every pass after the first only repairs rounding, and no sign or phase fix is
needed: Cholesky diagonals are positive. (Equivalently: the map ``G -> Q`` is
equivariant, ``Q(UG) = U Q(G)`` for every unitary ``U``, because ``(UG)^H (UG)
= G^H G``; a left-invariant ``G`` then gives a left-invariant, i.e. Haar, ``Q``.)

Why three passes and a shift (rounding). One pass loses orthogonality like
``u kappa(G)^2`` (``u`` the unit roundoff); a second pass (CholeskyQR2) repairs
that if ``u kappa(G)^2 < ~1`` (Yamamoto, Nakatsukasa, Yanagisawa, Fukaya
2015). A tall Gaussian is well conditioned (``kappa <~ 6`` for ``m >= 2n``),
but a square one has ``kappa`` about ``3.6 n`` (median) with a heavy tail,
``P(kappa > x n) -> 1 - exp(-2/x - 2/x^2) ~ 2/x`` (Edelman 1988; checked on
3000 draws of n = 128), so in float32 ``u kappa^2`` reaches 1
around ``n ~ 1000``: without a shift, CholeskyQR2 and CholeskyQR3 break down
(NaN) on square matrices with ``kappa = 3e4`` to ``1e5`` (measured, n = 512).
The shift ``s = u E[tr G^H G] = u m n`` (``2 u m n`` for complex draws, whose
entries have ``E|g|^2 = 2``; a constant, so every program computes the same
bits) exceeds the rounding error of the Gram matrix and of its factorization,
so the first factorization does not break down, and it leaves ``Y_1`` with
``kappa(Y_1)^2 ~ s / sigma_min(G)^2``, small enough for the two plain passes
while ``kappa(G) <~ 1.4 / (u sqrt(n))``: 1e6 at n = 512, 5e5 at n = 2048
(measured: accepted up to 1e6 and 1e5 respectively, rejected from 3e6 and
1e6). (The paper's shift, ``11 (mn + n(n+1)) u ||G||_2^2``, comes from
worst-case bounds: about ``90 n`` times ours for a square ``G``, which would
leave ``u kappa(Y_1)^2 ~ 90 n^4 u^2 > 1``, too much for two plain passes, from
``n ~ 1300`` on. Ours is chosen from measurements, and the checks below cover
its failures.) Measured (float32, CPU, three keys each): ``max |Q^T Q - I|`` is
4.1e-7 to 7.5e-7 for ``n = 256, 1024, 2048``, square and ``2n x n``, where
Householder QR (``"qr"``) gives 3.5e-7 to 6.7e-7 and ``"stewart"`` 2e-7 to
4e-7; after two passes instead of three, a square 2048 matrix is orthonormal
to only 4e-6 to 7e-5.

A failure is never returned. The last pass factors ``A_3 = Y_2^H Y_2``; a
matrix with ``||A_3 - I||_F >= 1/2`` or a non-finite factor is redone from
``Y_1`` by one more shifted pass (shift ``u n``: ``Y_1``'s singular values are
at most 1) and two plain ones, which handled every matrix tried up to
``kappa(G) = 1e8`` (n = 512) and ``3e7`` (n = 2048), beyond ``1/u``; one that
fails that check too gets Householder QR of the same ``G`` with the sign fix
(``"qr"``). Both give the same ``Q`` (``G = Q R`` with ``R`` upper triangular
with a positive diagonal), so the distribution stays exactly Haar. The checks
cost ``O(n^2)``; the extra passes and the QR run only when a matrix fails
(``lax.cond``; the QR one matrix at a time), and under ``jax.vmap`` a custom
batching rule keeps the conditions (a batched condition becomes a select that
computes every branch). By the thresholds above and Edelman's law, a square
float32 Gaussian takes the extra passes with probability about
``P(kappa > 1.4 / (u sqrt(n))) ~ 1.4 u n^{3/2}``: 0.3% for n = 1024, 2% for
n = 4096, 6% for n = 8192 (a stack of matrices then runs them on the whole
stack); tall ones (``m >= 2n``) never do.

``"auto"``: ``"stewart"`` where the program is compiled for CPU,
``"cholesky_qr"`` elsewhere (GPU, TPU), chosen with
``jax.lax.platform_dependent`` when the program is lowered, i.e. for the
platform of the devices it will run on (those of ``out_sharding`` or of the
key), not the process's default backend; an exported program for several
platforms keeps both. The two methods draw different Gaussians, so the same key
gives different (equally Haar) matrices on CPU and on accelerators.

Wide matrices are drawn tall and transposed; a Haar matrix's transpose is Haar.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinit._src.base import Initializer
from jaxinit._src.checks import (
  Array,
  DTypeLike,
  check_axes,
  check_choice,
  check_int,
  check_range,
  check_real,
  check_side,
  complex_of,
  compute_dtype,
  fail,
  is_complex,
  normalize_axes,
)
from jaxinit._src.fans import fans
from jaxinit._src.registry import register

METHODS = ("stewart", "qr", "cholesky_qr", "auto")


# ---------------------------------------------------------------------------
# Random numbers for the reflectors.
# ---------------------------------------------------------------------------


def _gaussian(key: Array, size: int, real: np.dtype, cplx: bool) -> Array:
  """``size`` standard Gaussians, drawn flat (1-D threefry compiles fastest).

  The scale of the Gaussians does not matter (every vector is normalized), so
  complex draws are ``re + i im`` without the 1/sqrt(2).
  """
  if not cplx:
    return jax.random.normal(key, (size,), real)
  z = jax.random.normal(key, (2, size), real)
  return jax.lax.complex(z[0], z[1])


_STORE_ABOVE = 1 << 17  # numbers; about a 512 x 512 matrix


def stored_gaussian(key: Array, size: int, real: np.dtype, cplx: bool) -> Array:
  """``size`` standard Gaussians, computed once and stored before they are used.

  They are drawn in two halves by a two-step ``lax.scan``. XLA does not fuse
  across a loop boundary, so the normal transform (``erf_inv`` of the threefry
  bits) runs once, vectorized, over exactly ``size`` numbers. Without the loop
  XLA fuses the transform into each consumer (the packing, the norms, the
  scaled reflectors) and evaluates it there up to three times per number,
  which costs as much as drawing all ``n^2`` numbers. Draws of fewer than
  ``_STORE_ABOVE`` numbers skip the loop (it adds ~0.4 s of compilation).
  """
  if size < _STORE_ABOVE:  # small draws: not worth the loop's compile time
    return _gaussian(key, size, real, cplx)
  half = -(-size // 2)
  _, z = jax.lax.scan(
    lambda c, k: (c, _gaussian(k, half, real, cplx)), None, jax.random.split(key, 2)
  )
  return z.reshape(-1)[:size]


def packed_upper(z: Array, n: int) -> Array:
  """The ``(n+1)//2 * (n+1)`` entries of ``z[..., :]`` placed on and above the diagonal of n x n.

  Rows ``i`` and ``n-1-i`` need ``n-i`` and ``i+1`` entries, ``n+1`` together, so
  ``z`` is viewed as ``g`` of shape ``(h, n+1)``, ``h = ceil(n/2)``: row ``i < h``
  of the result is ``g[i, 1:]`` (its part ``j >= i`` is ``g[i, i+1:]``) and row
  ``n-1-r`` is ``g[r, :n]`` reversed (its part ``j >= n-1-r`` is ``g[r, :r+1]``).
  Every entry of ``z`` lands at most once on or above the diagonal (for odd
  ``n`` the ``(n+1)/2`` entries ``g[h-1, :h]`` are unused); entries below the
  diagonal repeat others and must be ignored. No transposes: rows are copied
  forwards or backwards.
  """
  batch = z.shape[:-1]
  h = (n + 1) // 2
  g = z.reshape(*batch, h, n + 1)
  return jnp.concatenate([g[..., 1:], g[..., : n - h, :n][..., ::-1, ::-1]], axis=-2)


def gaussian_rows(key: Array, nb: int, m: int, n: int, real: np.dtype, cplx: bool) -> Array:
  """``(nb, n, m)``, ``m >= n``: row ``i`` holds independent standard Gaussians at columns ``>= i``.

  Draws ``nb * (ceil(n/2) (n+1) + n (m-n))`` numbers, about ``n(n+1)/2 + n(m-n)``
  per matrix; entries left of the diagonal are not random and must be ignored.
  """
  tri = (n + 1) // 2 * (n + 1)
  rect = n * (m - n)
  z = stored_gaussian(key, nb * (tri + rect), real, cplx)
  xt = packed_upper(z[: nb * tri].reshape(nb, tri), n)
  if rect == 0:
    return xt
  return jnp.concatenate([xt, z[nb * tri :].reshape(nb, n, m - n)], axis=-1)


def _opaque_one(x: Array) -> Array:
  """1.0 in ``x``'s real dtype, as ``0 * x[0] + 1``: a value the compiler cannot fold."""
  first = jnp.real(x[(0,) * x.ndim])
  return first * np.asarray(0, first.dtype) + np.asarray(1, first.dtype)


def _squares(x: Array, one: Array) -> Array:
  """``|x|^2``, each product multiplied by ``one`` (see :func:`sum_of_squares`)."""
  sq = (jnp.real(x) * jnp.real(x)) * one
  if jnp.iscomplexobj(x):
    sq = sq + (jnp.imag(x) * jnp.imag(x)) * one
  return sq


def sum_of_squares(x: Array, axes: tuple[int, ...], one: Array | None = None) -> Array:
  """``sum(|x|^2, axes, keepdims=True)``, bit-identical however the program is batched or sharded.

  Two things make a plain ``jnp.sum(x * x)`` differ in the last bit between a
  call, the same call under ``vmap``, and a sharded call: XLA's reduce picks its
  summation order from the shape, and XLA:CPU lets LLVM contract ``a * b + c``
  into an FMA, which happens or not depending on how the program was fused. So
  the sum is a fixed binary tree of elementwise adds, and every square is
  multiplied by a 1.0 the compiler cannot fold (``0 * x[0] + 1``): an add then
  only ever sees ``y * 1`` or another sum, and contracting ``y * 1 + z`` into an
  FMA is exact.
  """
  one = _opaque_one(x) if one is None else one
  sq = _squares(x, one)
  for axis in axes:
    axis = axis % x.ndim
    while sq.shape[axis] > 1:
      n = sq.shape[axis]
      h = n // 2
      lo = jax.lax.slice_in_dim(sq, 0, h, axis=axis)
      hi = jax.lax.slice_in_dim(sq, h, 2 * h, axis=axis)
      parts = [lo + hi]  # level 0 adds squares * one; later levels add sums
      if n % 2:
        parts.append(jax.lax.slice_in_dim(sq, 2 * h, n, axis=axis))
      sq = jnp.concatenate(parts, axis=axis) if len(parts) > 1 else parts[0]
  return sq


def stewart(key: Array, nb: int, m: int, n: int, real: np.dtype, cplx: bool) -> Array:
  """``nb`` independent Haar ``m x n`` (``m >= n``) matrices with orthonormal columns.

  See the module docstring for the construction and the proof. Reflector ``j``
  is row ``j`` of ``gaussian_rows``; ``(nb, n, m)`` in row-major order is the
  column-major ``(nb, m, n)`` that LAPACK's ``orgqr`` reads, so XLA passes it
  without a transpose.
  """
  xt = gaussian_rows(key, nb, m, n, real, cplx)  # (nb, n, m)
  dt = xt.dtype
  rows = jax.lax.broadcasted_iota(np.int32, (n, m), 0)
  cols = jax.lax.broadcasted_iota(np.int32, (n, m), 1)
  one = _opaque_one(xt)
  alpha = jnp.diagonal(xt, axis1=-2, axis2=-1)  # (nb, n)
  tail2 = sum_of_squares(jnp.where(cols > rows, xt, jnp.zeros((), dt)), (-1,), one)[..., 0]
  # An all-zero vector (probability ~0, but keep it finite): use e_1 instead.
  alpha = jnp.where((tail2 == 0) & (alpha == 0), jnp.ones((), dt), alpha)
  beta = jnp.sqrt(tail2 + _squares(alpha, one))  # ||x|| > 0
  # v_0 = alpha - beta without cancellation (Parlett): for Re(alpha) > 0 use
  # (alpha - beta)(conj(alpha) + beta) = -||x_tail||^2 + 2i beta Im(alpha).
  if cplx:
    stable = jax.lax.complex(-tail2, 2 * beta * jnp.imag(alpha)) / (
      jnp.conj(alpha) + beta.astype(dt)
    )
  else:
    stable = -tail2 / (alpha + beta)
  v0 = jnp.where(jnp.real(alpha) > 0, stable, alpha - beta.astype(dt))
  tau = -v0 / beta.astype(dt)  # (beta - alpha) / beta
  zero = v0 == 0  # x = [alpha > 0; 0]: H = I, nothing to scale
  inv = jnp.where(zero, jnp.zeros((), dt), 1 / jnp.where(zero, jnp.ones((), dt), v0))
  vt = xt * inv[..., :, None]  # only the entries right of the diagonal are read
  return jax.lax.linalg.householder_product(jnp.swapaxes(vt, -1, -2), tau)


def qr(key: Array, nb: int, m: int, n: int, real: np.dtype, cplx: bool) -> Array:
  """``nb`` Haar ``m x n`` (``m >= n``) matrices: QR of a Gaussian, columns times R_jj's phase."""
  return haar_from_gaussian(_gaussian(key, nb * m * n, real, cplx).reshape(nb, m, n))


def haar_from_gaussian(g: Array) -> Array:
  """Haar ``(..., m, n)`` (``m >= n``) matrices from i.i.d. Gaussian ``g`` of that shape:
  the QR factor's columns times the phase of ``R_jj`` (Mezzadri 2007)."""
  q, r = jnp.linalg.qr(g)
  d = jnp.diagonal(r, axis1=-2, axis2=-1)
  a = jnp.abs(d)
  phase = jnp.where(a > 0, d / jnp.where(a > 0, a, 1).astype(d.dtype), jnp.ones_like(d))
  return q * phase[..., None, :]


def _gram(y: Array) -> Array:
  """``Y^H Y`` for a stack ``(nb, m, n)``, as a full-precision matrix product.

  ``Precision.HIGHEST``: by default float32 products run in TF32 on recent
  GPUs and in one bfloat16 pass on TPUs, which would leave ``Y`` orthonormal to
  only ~1e-3.
  """
  dims = (((1,), (1,)), ((0,), (0,)))
  return jax.lax.dot_general(jnp.conj(y), y, dims, precision=jax.lax.Precision.HIGHEST)


def _cholesky_pass(y: Array, shift: float) -> tuple[Array, Array, Array]:
  """One CholeskyQR pass: ``(Y L^{-H}, A, L)`` with ``A = Y^H Y + shift I = L L^H``."""
  a = _gram(y)
  if shift:
    n = a.shape[-1]
    a = a + jnp.eye(n, dtype=a.dtype) * np.asarray(shift, a.dtype)
  lower = jax.lax.linalg.cholesky(a)  # positive diagonal; NaN where it breaks down
  q = jax.lax.linalg.triangular_solve(
    lower, y, left_side=False, lower=True, transpose_a=True, conjugate_a=True
  )
  return q, a, lower


def cholesky_qr(key: Array, nb: int, m: int, n: int, real: np.dtype, cplx: bool) -> Array:
  """``nb`` Haar ``m x n`` (``m >= n``) matrices: shifted CholeskyQR3 of a Gaussian.

  The Gaussian is the one ``qr`` factors (for draws of fewer than
  ``_STORE_ABOVE`` numbers the two methods return the same matrices up to
  rounding).
  """
  return haar_by_cholesky(stored_gaussian(key, nb * m * n, real, cplx).reshape(nb, m, n))


# The last pass's Gram matrix A = Y^H Y must have ||A - I||_F^2 below this (so
# kappa(Y)^2 < 3 and the last pass is accurate to rounding).
_MAX_DEVIATION = 0.25


def _accurate(a: Array, lower: Array) -> Array:
  """Per matrix of the stack: whether the last pass (Gram ``a``, factor ``lower``) is trustworthy.

  A breakdown (NaN) fails too: NaN compares false.
  """
  n = a.shape[-1]
  dev = sum_of_squares(a - jnp.eye(n, dtype=a.dtype), (-2, -1))[..., 0, 0]
  return jnp.all(jnp.isfinite(lower), axis=(-2, -1)) & (dev < _MAX_DEVIATION)


def _shifted_then_two_plain(y: Array, shift: float) -> tuple[Array, Array, Array]:
  """``(Q, ok, Y_1)``: a pass shifted by ``shift``, giving ``Y_1``, then two plain passes."""
  y1, _, _ = _cholesky_pass(y, shift)
  y, _, _ = _cholesky_pass(y1, 0.0)
  q, a, lower = _cholesky_pass(y, 0.0)
  return q, _accurate(a, lower), y1


def cholesky_qr3(g: Array) -> tuple[Array, Array, Array]:
  """Shifted CholeskyQR3 of a stack ``g`` of ``(nb, m, n)``, ``m >= n``, scaled like a Gaussian.

  Returns ``(Q, ok, Y_1)``: the passes' ``Q``, whether each matrix can be
  trusted (:func:`_accurate` of the last pass), and the first pass's result
  (for :func:`rescue_passes`). The shift ``u E[tr G^H G] = u m n`` (``2 u m n``
  complex) assumes the standard Gaussians of ``cholesky_qr``.
  """
  _, m, n = g.shape
  unit_roundoff = float(jnp.finfo(g.dtype).eps) / 2
  return _shifted_then_two_plain(g, unit_roundoff * m * n * (2 if jnp.iscomplexobj(g) else 1))


def rescue_passes(y1: Array) -> tuple[Array, Array]:
  """``(Q, ok)`` from the first pass's ``Y_1``: one more shifted pass, then two plain ones.

  ``Y_1`` has singular values in (0, 1], so ``tr Y_1^H Y_1 <= n`` and the shift
  is ``u n``. It divides ``kappa(Y_1)^2`` by about ``1 / (u n)``.
  """
  n = y1.shape[-1]
  q, ok, _ = _shifted_then_two_plain(y1, float(jnp.finfo(y1.dtype).eps) / 2 * n)
  return q, ok


def haar_by_cholesky(g: Array) -> Array:
  """The ``Q`` of ``g = QR`` with ``R_jj > 0`` for a Gaussian stack ``g`` of ``(nb, m, n)``.

  Shifted CholeskyQR3; matrices it cannot make orthonormal get two more
  shifted passes, and matrices that still fail get Householder QR. See the
  module docstring (passes, shift, proof, fallbacks).
  """
  q, ok, y1 = cholesky_qr3(g)
  return _repair(q, ok, y1, g)


@jax.custom_batching.custom_vmap
def _repair(q: Array, ok: Array, y1: Array, g: Array) -> Array:
  """``q`` with every matrix that is not ``ok`` recomputed: by :func:`rescue_passes`, and if
  they fail too, by Householder QR of ``g`` (sign-fixed), one matrix at a time.

  Nothing is recomputed unless some matrix failed (``lax.cond``). Under
  ``jax.vmap`` a condition on a batched predicate would become a select that
  always runs both branches, so the batching rule below folds the vmapped
  axis into the stack and keeps the conditions.
  """

  def rescue(q, ok, y1, g):
    q2, ok2 = rescue_passes(y1)
    q = jnp.where(ok[:, None, None], q, q2)
    ok = ok | ok2
    householder = lambda q, ok, g: _householder_where_failed(q, ok, g)  # traced anew each time
    return jax.lax.cond(jnp.all(ok), lambda q, ok, g: q, householder, q, ok, g)

  return jax.lax.cond(jnp.all(ok), lambda q, ok, y1, g: q, rescue, q, ok, y1, g)


def _householder_where_failed(q: Array, ok: Array, g: Array) -> Array:
  """``q[i]`` where ``ok[i]``, else the sign-fixed Householder QR factor of ``g[i]``."""

  def one(args):
    q, ok, g = args
    return jax.lax.cond(ok, lambda q, g: q, lambda q, g: haar_from_gaussian(g[None])[0], q, g)

  return jax.lax.map(one, (q, ok, g))


@_repair.def_vmap
def _repair_vmap(axis_size, in_batched, q, ok, y1, g):
  args = [
    x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
    for x, batched in zip((q, ok, y1, g), in_batched, strict=True)
  ]
  out = _repair(*(x.reshape(-1, *x.shape[2:]) for x in args))
  return out.reshape(axis_size, -1, *out.shape[1:]), True


_METHODS = {"stewart": stewart, "qr": qr, "cholesky_qr": cholesky_qr}


def haar(key: Array, nb: int, rows: int, cols: int, dtype: np.dtype, method: str) -> Array:
  """``(nb, rows, cols)`` Haar semi-orthogonal (unitary for complex ``dtype``) matrices.

  Computed in float32 (float64 for 64-bit dtypes) and returned in that
  precision (complex if ``dtype`` is); the caller casts. ``"auto"`` stages
  both of its methods; lowering keeps the one for the target platform.
  """
  if method == "auto":
    on = lambda name: lambda k: haar(k, nb, rows, cols, dtype, name)
    return jax.lax.platform_dependent(key, cpu=on("stewart"), default=on("cholesky_qr"))
  real = compute_dtype(dtype)
  cplx = is_complex(dtype)
  m, n = max(rows, cols), min(rows, cols)
  q = _METHODS[method](key, nb, m, n, real, cplx)
  # A wide matrix is a tall one transposed. Stewart's square matrices are
  # transposed too (Q^T is Haar if Q is): orgqr returns a column-major Q, whose
  # transpose is row-major, so the transpose costs nothing.
  if rows < cols or (rows == cols and method == "stewart"):
    q = jnp.swapaxes(q, -1, -2)
  return q.astype(complex_of(real) if cplx else real)


# ---------------------------------------------------------------------------
# orthogonal
# ---------------------------------------------------------------------------


def _layout(fn: str, shape: tuple[int, ...], column_axis: int, batch_axis: tuple[int, ...]):
  """(batch axes, row axes, column axis) of ``shape``, as non-negative ints, or a clear error."""
  col = normalize_axes(fn, "column_axis", column_axis, shape)[0]
  batch = normalize_axes(fn, "batch_axis", batch_axis, shape)
  if col in batch:
    raise fail(
      fn,
      f"`column_axis`={column_axis!r} is also in `batch_axis`={batch_axis!r} "
      f"for shape {shape}; the column axis must be a matrix axis.",
    )
  rows = tuple(a for a in range(len(shape)) if a != col and a not in batch)
  if not rows:
    raise fail(
      fn,
      f"the shape {shape} has no row axis: an orthogonal matrix needs the column "
      f"axis and at least one more axis that is not in `batch_axis`={batch_axis!r}.",
    )
  return batch, rows, col


def _to_shape(q: Array, shape: tuple[int, ...], order: tuple[int, ...]) -> Array:
  """``q`` laid out as the axes ``order`` of ``shape`` (flattened), moved into ``shape``."""
  q = q.reshape(tuple(shape[a] for a in order))
  return jnp.transpose(q, tuple(int(i) for i in np.argsort(order)))


@register("orthogonal")
@dataclasses.dataclass(frozen=True, repr=False)
class _Orthogonal(Initializer):
  scale: float = 1.0
  column_axis: int = -1
  batch_axis: int | tuple[int, ...] = ()  # stored as a tuple
  method: str = "stewart"

  name = "orthogonal"
  layout_fields = (("column_axis", "out"),)
  formula = (
    "w = scale * Q, Q Haar-random with orthonormal columns (tall) or rows (wide) of "
    "the matrix (prod(other axes), shape[column_axis]); unitary for complex; "
    "method 'stewart' (Householder reflectors, default), 'qr', 'cholesky_qr' (matmul-rich, "
    "for GPU/TPU) or 'auto' (stewart on CPU, cholesky_qr elsewhere)"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "scale", check_real(fn, "scale", self.scale, positive=True))
    object.__setattr__(self, "column_axis", check_int(fn, "column_axis", self.column_axis))
    batch = check_axes(fn, "batch_axis", self.batch_axis)
    batch = (batch,) if isinstance(batch, int) else batch
    object.__setattr__(self, "batch_axis", batch)
    if self.column_axis in batch:
      raise fail(
        fn,
        f"`column_axis`={self.column_axis} is also in `batch_axis`={batch}; "
        "the column axis must be a matrix axis.",
      )
    check_choice(fn, "method", self.method, METHODS)
    super().__post_init__()

  def _check(self, fn, shape, dtype):
    check_range(fn, dtype, -self.scale, self.scale, f"`scale`={self.scale!r}")
    if len(shape) < 2:
      raise fail(
        fn,
        f"needs a shape with at least 2 dimensions (a matrix), got {shape}; "
        "a 1-D parameter such as a bias has no orthogonal structure.",
      )
    batch, rows, col = _layout(fn, shape, self.column_axis, self.batch_axis)
    sides = (math.prod(shape[a] for a in rows), shape[col], math.prod(shape[a] for a in batch))
    check_side(fn, shape, sides, "matrices")

  def _sample(self, key, shape, dtype):
    batch, rows, col = _layout(self.name, shape, self.column_axis, self.batch_axis)
    nb = math.prod(shape[a] for a in batch)
    nrows = math.prod(shape[a] for a in rows)
    q = haar(key, nb, nrows, shape[col], dtype, self.method)
    if self.scale != 1.0:
      q = q * np.asarray(self.scale, q.dtype)
    return _to_shape(q, shape, (*batch, *rows, col)).astype(dtype)


def orthogonal(
  scale: float = 1.0,
  column_axis: int = -1,
  batch_axis: int | tuple[int, ...] = (),
  method: str = "stewart",
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  r"""Builds an initializer of Haar-random (semi-)orthogonal matrices.

  The parameter is viewed as the matrix ``W`` of shape ``(prod(other axes),
  shape[column_axis])``, the other axes flattened in order (the flattening of
  ``jax.nn.initializers.orthogonal``; for a Flax kernel ``(..., in, out)`` the
  rows are inputs and the columns outputs). ``W = scale * Q`` with ``Q`` drawn
  from the Haar (uniform) distribution: orthonormal columns
  (:math:`W^\top W = \text{scale}^2 I`) when ``W`` is tall or square,
  orthonormal rows (:math:`W W^\top = \text{scale}^2 I`) when it is wide. For a
  complex dtype ``Q`` is Haar unitary (:math:`W^H W = \text{scale}^2 I`).

  Each index of the ``batch_axis`` axes gets an independent matrix: a stack of
  layers ``(layers, n, n)`` with ``batch_axis=0`` draws one orthogonal matrix
  per layer in one call.

  Methods (all exactly Haar):

  * ``"stewart"`` (default): the product of Householder reflectors built from
    independent Gaussian vectors of lengths ``m, m-1, ...`` times a sign
    diagonal (Stewart 1980), formed with ``jax.lax.linalg.householder_product``.
    These are the reflectors a Householder QR of a Gaussian matrix would
    produce (with ``R_jj > 0``), so the result has the distribution of
    ``"qr"``, but no QR factorization runs and only about half the random
    numbers are drawn.
    On a 2-core CPU it takes about 0.5x the time of
    ``jax.nn.initializers.orthogonal`` (see ``benchmarks/RESULTS.md``).
  * ``"qr"``: QR of an i.i.d. Gaussian matrix, columns times the phase of
    ``diag(R)`` (Mezzadri 2007), as jax, torch and Keras do.
  * ``"cholesky_qr"``: the same ``Q`` as ``"qr"`` (same Gaussian), computed
    by shifted CholeskyQR3: three passes of a Gram matrix ``Y^H Y``, its
    Cholesky factor ``L`` and ``Y <- Y L^{-H}`` (the first Gram shifted by
    ``u m n`` so that its factorization cannot break down). Matrix products,
    a small Cholesky and triangular solves: the accelerator-friendly method.
    Orthonormal to float32 rounding like the others (``max |Q^T Q - I|``
    4e-7 to 8e-7 up to n = 2048, square or tall). A matrix the passes
    cannot make orthonormal (an ill-conditioned square Gaussian, estimated
    2% of them at n = 4096 and 6% at n = 8192; never a tall one) gets two more
    shifted passes, and Householder QR if those fail too, so the result is
    always the exact Haar ``Q``. On CPU it is slower than ``"stewart"``.
  * ``"auto"``: ``"stewart"`` when the program is compiled for CPU,
    ``"cholesky_qr"`` for GPU and TPU, chosen when the program is lowered
    (``jax.lax.platform_dependent``), so it follows the devices of
    ``out_sharding`` (or of the key), not the default backend. On CPU it is
    bit-identical to ``"stewart"``; the same key gives a different (equally
    Haar) matrix on an accelerator, which is why it is not the default.

  The matrix is computed in float32 (float64 for 64-bit dtypes) and cast, so
  ``bfloat16`` and ``float16`` work (jax and torch raise for them). With
  ``out_sharding`` each device computes the whole matrix (LAPACK's
  ``orgqr`` is not partitioned) and keeps its shard: per-device peak memory is
  about 3.5 full float32 matrices, not one shard (measured with
  ``memory_analysis`` for 1024 x 1024 on 8 devices: 13.5 MiB per device for a
  4 MiB matrix; 16.5 MiB with ``"qr"``, 29 MiB with ``"cholesky_qr"``, which
  keeps its Gaussian and first pass for the fallbacks). Batch draws
  (``batch_axis``) are computed whole too.

  A depthwise kernel ``(3, 3, 1, C)`` is the ``9 x C`` matrix: for ``C > 9`` it
  gets orthonormal *rows*, and each output channel's 9 taps have norm
  ``sqrt(9 / C)``, not 1. Use :func:`normalized` (or ``batch_axis``) if each
  channel should be normalized on its own.

  Args:
    scale: positive multiplier (the singular values of ``W``).
    column_axis: the axis of the columns.
    batch_axis: axes indexing independent matrices.
    method: ``"stewart"``, ``"qr"``, ``"cholesky_qr"`` or ``"auto"``.
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer. One compilation per (configuration, shape, dtype).

  Raises:
    ValueError: a bad argument, or ``column_axis`` in ``batch_axis``; at call
      time, a shape with fewer than two matrix axes or axes out of range.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> w = jaxinit.orthogonal()(jax.random.key(0), (64, 32))
    >>> bool(jnp.allclose(w.T @ w, jnp.eye(32), atol=1e-5))
    True
    >>> stack = jaxinit.orthogonal(batch_axis=0)(jax.random.key(0), (4, 16, 16), jnp.bfloat16)
    >>> stack.shape, stack.dtype
    ((4, 16, 16), dtype(bfloat16))
    >>> jaxinit.get({"name": "orthogonal", "scale": 2.0})
    orthogonal(scale=2.0)
    >>> q = jaxinit.orthogonal(method="cholesky_qr")(jax.random.key(0), (256, 256))
    >>> bool(jnp.allclose(q.T @ q, jnp.eye(256), atol=1e-5))
    True

  References:
    G. W. Stewart, "The efficient generation of random orthogonal matrices with
    an application to condition estimators", SIAM J. Numer. Anal. 17(3), 1980.
    F. Mezzadri, "How to generate random matrices from the classical compact
    groups", Notices of the AMS 54(5), 2007.
    T. Fukaya, R. Kannan, Y. Nakatsukasa, Y. Yamamoto, Y. Yanagisawa,
    "Shifted Cholesky QR for computing the QR factorization of ill-conditioned
    matrices", SIAM J. Sci. Comput. 42(1), 2020.
    A. Edelman, "Eigenvalues and condition numbers of random matrices", SIAM
    J. Matrix Anal. Appl. 9(4), 1988.
    A. Saxe, J. McClelland, S. Ganguli, "Exact solutions to the nonlinear
    dynamics of learning in deep linear neural networks", ICLR 2014.
  """
  return _Orthogonal(scale, column_axis, batch_axis, method, dtype=dtype)


# ---------------------------------------------------------------------------
# spectral
# ---------------------------------------------------------------------------


@register("spectral")
@dataclasses.dataclass(frozen=True, repr=False)
class _Spectral(Initializer):
  in_axis: int = -2
  out_axis: int = -1
  batch_axis: int | tuple[int, ...] = ()
  method: str = "stewart"

  name = "spectral"
  layout_fields = (("in_axis", "in"), ("out_axis", "out"))
  formula = (
    "w = sqrt(fan_out / fan_in) * Q, Q Haar semi-orthogonal as in orthogonal (columns "
    "on out_axis): every singular value is sqrt(fan_out / fan_in)"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "in_axis", check_int(fn, "in_axis", self.in_axis))
    object.__setattr__(self, "out_axis", check_int(fn, "out_axis", self.out_axis))
    batch = check_axes(fn, "batch_axis", self.batch_axis)
    object.__setattr__(self, "batch_axis", (batch,) if isinstance(batch, int) else batch)
    if self.in_axis == self.out_axis:
      raise fail(fn, f"`in_axis` and `out_axis` must differ, both are {self.in_axis}.")
    check_choice(fn, "method", self.method, METHODS)
    super().__post_init__()

  def _scaled(self, fn: str, shape: tuple[int, ...]) -> _Orthogonal:
    if len(shape) < 2:
      raise fail(
        fn,
        f"needs a shape with at least 2 dimensions (a matrix), got {shape}; a 1-D "
        "parameter such as a bias has no spectral norm to set.",
      )
    fan_in, fan_out = fans(fn, shape, self.in_axis, self.out_axis, self.batch_axis)
    scale = math.sqrt(fan_out / fan_in) if fan_in and fan_out else 1.0
    col = normalize_axes(fn, "out_axis", self.out_axis, shape)[0]
    return _Orthogonal(scale, col, self.batch_axis, self.method)

  def _check(self, fn, shape, dtype):
    self._scaled(fn, shape)._check(fn, shape, dtype)

  def _sample(self, key, shape, dtype):
    return self._scaled(self.name, shape)._sample(key, shape, dtype)


def spectral(
  in_axis: int = -2,
  out_axis: int = -1,
  batch_axis: int | tuple[int, ...] = (),
  method: str = "stewart",
  dtype: DTypeLike | None = None,
) -> Initializer:
  r"""Builds the spectral initializer: semi-orthogonal times ``sqrt(fan_out / fan_in)``.

  ``W = sqrt(fan_out / fan_in) * Q`` with ``Q`` drawn exactly as by
  :func:`orthogonal` (Haar, columns on ``out_axis``, one matrix per
  ``batch_axis`` index), so every singular value of ``W`` equals
  ``sqrt(fan_out / fan_in)``: the spectral condition of Yang, Simon and
  Bernstein (2023), ``||W||_2 = Theta(sqrt(fan_out / fan_in))``, which makes
  the features' and their updates' sizes independent of width. Fans are those of
  :func:`jaxinit.compute_fans` (for a convolution kernel the ratio is
  ``out / in`` channels). Bernstein's ``modula`` (``modula/atom.py``, ede2ba7)
  orthogonalizes a Gaussian by 6 Newton-Schulz steps (singular values only
  close to 1); this one is exact.

  Args:
    in_axis: the input axis (an int; it sets the fans).
    out_axis: the output axis (an int; the columns of ``Q``).
    batch_axis: axes of a stack of independent matrices.
    method: ``"stewart"`` or ``"qr"`` (see :func:`orthogonal`).
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    TypeError: an axis is not an int. ValueError: ``in_axis == out_axis``, an
      unknown ``method``; at call time, fewer than 2 dimensions or axes out of range.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> w = jaxinit.spectral()(jax.random.key(0), (256, 64))   # Flax Dense (in, out)
    >>> s = jnp.linalg.svd(w, compute_uv=False)
    >>> print(f"{s.min():.4f} {s.max():.4f} {(64 / 256) ** 0.5:.4f}")
    0.5000 0.5000 0.5000

  References:
    G. Yang, J. B. Simon, J. Bernstein, "A spectral condition for feature
    learning", arXiv:2310.17813, 2023.
  """
  return _Spectral(in_axis, out_axis, batch_axis, method, dtype=dtype)


# ---------------------------------------------------------------------------
# delta_orthogonal
# ---------------------------------------------------------------------------


def centre(shape: tuple[int, ...]) -> tuple[int, ...]:
  """The centre tap of the spatial axes ``shape``: ``(k - 1) // 2`` per axis.

  This is the tap that a Flax/lax ``padding="SAME"`` convolution aligns with
  the output position (it pads ``(k - 1) // 2`` before), for odd and even ``k``;
  jax's ``delta_orthogonal`` uses it too (torch's ``dirac_`` uses ``k // 2``,
  which differs for even ``k``).
  """
  return tuple((k - 1) // 2 for k in shape)


@register("delta_orthogonal")
@dataclasses.dataclass(frozen=True, repr=False)
class _DeltaOrthogonal(Initializer):
  scale: float = 1.0
  column_axis: int = -1
  in_axis: int = -2
  out_axis: int = -1

  name = "delta_orthogonal"
  layout_fields = (("in_axis", "in"), ("out_axis", "out"))
  formula = (
    "conv kernel (in and out channel axes, the rest spatial): zero except the centre tap "
    "((k-1)//2 per spatial axis), which holds scale * a Haar (in x out) matrix"
  )

  def __post_init__(self):
    fn = self.name
    object.__setattr__(self, "scale", check_real(fn, "scale", self.scale, positive=True))
    for arg in ("column_axis", "in_axis", "out_axis"):
      object.__setattr__(self, arg, check_int(fn, arg, getattr(self, arg)))
    if self.in_axis == self.out_axis:
      raise fail(fn, f"`in_axis` and `out_axis` must differ, got {self.in_axis} for both.")
    same_sign = len({a < 0 for a in (self.column_axis, self.in_axis, self.out_axis)}) == 1
    if same_sign and self.column_axis not in (self.in_axis, self.out_axis):
      raise fail(fn, self._column_message())
    super().__post_init__()

  def _column_message(self) -> str:
    return (
      f"`column_axis` must be the kernel's input axis (`in_axis`={self.in_axis}) or output "
      f"axis (`out_axis`={self.out_axis}), got {self.column_axis}."
    )

  def _relayout(self, layout, only_defaults=False):
    new = super()._relayout(layout, only_defaults)
    if new is self:
      return self
    if self.column_axis not in (self.in_axis, self.out_axis):
      raise fail(
        self.name,
        f"cannot follow the layout {layout!r}: `column_axis`={self.column_axis} is neither "
        f"`in_axis`={self.in_axis} nor `out_axis`={self.out_axis}; give it as one of them.",
      )
    column = new.out_axis if self.column_axis == self.out_axis else new.in_axis
    return dataclasses.replace(new, column_axis=column)

  def _axes(self, fn: str, shape: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """(input axis, output axis, spatial axes) of ``shape``, non-negative."""
    if len(shape) < 2:
      raise fail(fn, f"needs a kernel with an input and an output axis, got shape {shape}.")
    i = normalize_axes(fn, "in_axis", self.in_axis, shape)[0]
    o = normalize_axes(fn, "out_axis", self.out_axis, shape)[0]
    if i == o:
      raise fail(
        fn,
        f"`in_axis`={self.in_axis} and `out_axis`={self.out_axis} name the same "
        f"axis of the shape {shape}.",
      )
    c = normalize_axes(fn, "column_axis", self.column_axis, shape)[0]
    if c not in (i, o):
      raise fail(fn, f"{self._column_message()} (shape {shape})")
    return i, o, tuple(a for a in range(len(shape)) if a not in (i, o))

  def _check(self, fn, shape, dtype):
    check_range(fn, dtype, -self.scale, self.scale, f"`scale`={self.scale!r}")
    self._axes(fn, shape)
    check_side(fn, shape, shape, "a kernel")

  def _sample(self, key, shape, dtype):
    i, o, spatial = self._axes(self.name, shape)
    c = normalize_axes(self.name, "column_axis", self.column_axis, shape)[0]
    col = -1 if c == o else -2
    q = _Orthogonal(self.scale, col)._sample(key, (shape[i], shape[o]), dtype)
    taps = dict(zip(spatial, centre(tuple(shape[a] for a in spatial)), strict=True))
    # the (in, out) matrix placed at the centre tap, in the kernel's own axis order
    order = [a for a in range(len(shape)) if a in (i, o)]
    q = q if order == [i, o] else q.T
    index = tuple(taps.get(a, slice(None)) for a in range(len(shape)))
    return jnp.zeros(shape, dtype).at[index].set(q)


def delta_orthogonal(
  scale: float = 1.0,
  column_axis: int = -1,
  in_axis: int = -2,
  out_axis: int = -1,
  *,
  dtype: DTypeLike | None = None,
) -> Initializer:
  r"""Builds a delta-orthogonal initializer for convolution kernels (Xiao et al. 2018).

  For a Flax kernel of shape ``(*spatial, in, out)`` (1-D, 2-D, 3-D or more
  spatial axes) the result is zero everywhere except at the centre tap, which
  holds ``scale * Q`` with ``Q`` an ``in x out`` matrix from
  :func:`orthogonal` (``column_axis`` chooses its columns among the input and
  output axes). A convolution with this kernel acts on each position's channel
  vector as the orthogonal map ``Q``, which makes deep vanilla CNNs
  dynamically isometric at initialization.

  * ``in <= out``: ``Q Q^T = I``, the map ``x -> x Q`` preserves norms;
  * ``in > out`` (jax's ``delta_orthogonal`` refuses this): ``Q^T Q = I``,
    the ``out x in`` map has orthonormal rows (a norm-reducing projection).

  The centre tap is index ``(k - 1) // 2`` along each spatial axis (as in jax),
  the tap that Flax/lax ``padding="SAME"`` aligns with the output for odd *and*
  even ``k``; torch's ``dirac_`` uses ``k // 2``. A 2-D shape (no spatial axes)
  gets a plain orthogonal matrix.

  Args:
    scale: positive multiplier.
    column_axis: the output axis (default) or the input axis: which side of the
      ``in x out`` matrix has orthonormal columns when it is tall.
    in_axis: the input-channel axis (``-2`` for Flax ``(*spatial, in, out)``;
      ``1`` for torch/equinox ``(out, in, *spatial)``, which
      ``with_layout("torch")`` and ``reinit(layout=...)`` set).
    out_axis: the output-channel axis (``-1`` for Flax, ``0`` for torch).
    dtype: the dtype drawn when a call gives none (a call's ``dtype`` wins);
      ``None``: float32, or float64 under x64.

  Returns:
    An initializer.

  Raises:
    ValueError: ``scale <= 0``; at call time, a shape with fewer than 2
      dimensions, or ``column_axis`` not one of the channel axes.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> w = jaxinit.delta_orthogonal()(jax.random.key(0), (3, 3, 16, 32))
    >>> q = w[1, 1]
    >>> bool(jnp.allclose(q @ q.T, jnp.eye(16), atol=1e-5)), bool((w.at[1, 1].set(0) == 0).all())
    (True, True)

  References:
    L. Xiao, Y. Bahri, J. Sohl-Dickstein, S. Schoenholz, J. Pennington,
    "Dynamical isometry and a mean field theory of CNNs: how to train
    10,000-layer vanilla convolutional neural networks", ICML 2018.
  """
  return _DeltaOrthogonal(scale, column_axis, in_axis, out_axis, dtype=dtype)
