"""Checks for initializers: conformance to the protocol, moments at k standard
errors, Kolmogorov–Smirnov goodness of fit, and orthonormality.

They raise ``AssertionError`` with the measured numbers (z-scores, KS statistic)
in the message, so a failing test says by how much it failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxinit._src.checks import (
  Array,
  Sharding,
  canonical_shape,
  check_axes,
  check_real,
  default_float_dtype,
  fail,
  normalize_axes,
  short_repr,
)


def _samples(fn: str, samples: Any, arg: str = "samples") -> np.ndarray:
  """``samples`` as a numeric numpy array (real, complex, bool, or an ml_dtypes float such
  as bfloat16, whose numpy kind is 'V'), else a clear error."""
  try:
    x = np.asarray(samples)
  except Exception:  # an object numpy cannot hold (ragged lists, ...)
    x = np.asarray(None)
  if x.dtype.kind not in "biufc" and not jnp.issubdtype(x.dtype, jnp.floating):  # bfloat16..
    raise fail(fn, f"`{arg}` must be an array of numbers, got {short_repr(samples)}.", TypeError)
  return x


def _expected(fn: str, arg: str, value: Any, *, complex_ok: bool, nonnegative: bool = False):
  """An expected moment: None, or a finite number (complex where ``complex_ok``)."""
  if value is None:
    return None
  if complex_ok and isinstance(value, complex | np.complexfloating):
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
      raise fail(fn, f"`{arg}` must be finite, got {value!r}.")
    return complex(value)
  return check_real(fn, arg, value, nonnegative=nonnegative)


def _canonical_dtype(dtype: Any) -> np.dtype:
  if dtype is None:
    return default_float_dtype()
  return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def assert_conforms(
  init: Callable[..., Array],
  shape: Sequence[int],
  dtype: Any = None,
  *,
  key: Array | None = None,
  deterministic: bool | None = None,
  out_sharding: Sharding = None,
) -> Array:
  """Checks that ``init`` behaves as an initializer must, and returns its draw.

  Checks, in order:

  1. ``init(key, shape, dtype)`` has exactly ``shape`` and ``dtype`` (no upcast,
     no silent float32 for a bfloat16 request) and finite values;
  2. the same key gives a bit-identical array, with a typed key and with the
     equivalent legacy ``PRNGKey``;
  3. the call inside ``jax.jit`` is bit-identical to the eager call;
  4. ``jax.eval_shape`` gives the same shape and dtype without computing;
  5. a different key gives a different array (or the same one, for a
     deterministic initializer);
  6. ``jax.vmap`` over three keys equals the three separate calls;
  7. with ``out_sharding``, the result carries that sharding and the same values.

  Args:
    init: any callable with the ``init(key, shape, dtype)`` protocol.
    shape: the shape to draw.
    dtype: the dtype to draw (``None``: the initializer's default, float32 or
      float64 under x64).
    key: the key to use (default ``jax.random.key(0)``).
    deterministic: whether ``init`` ignores its key. Defaults to the
      initializer's ``deterministic`` attribute, else False.
    out_sharding: a sharding to check (optional).

  Returns:
    The array drawn with ``key``.

  Raises:
    AssertionError: a check failed; the message says which.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxinit
    >>> from jaxinit import testing
    >>> w = testing.assert_conforms(jaxinit.he_normal(), (3, 3, 8, 16), jnp.bfloat16)
    >>> w.dtype
    dtype(bfloat16)
  """
  if not callable(init):
    raise fail(
      "testing.assert_conforms",
      f"`init` must be an init(key, shape, dtype) callable, got {short_repr(init)}.",
      TypeError,
    )
  shape = canonical_shape("testing.assert_conforms", shape)
  want = _canonical_dtype(dtype)
  if key is None:
    key = jax.random.key(0)
  if deterministic is None:
    deterministic = bool(getattr(init, "deterministic", False))
  name = getattr(init, "name", None) or repr(init)

  out = init(key, shape, dtype)
  chex.assert_shape(out, shape, custom_message=f"{name}: wrong shape")
  if out.dtype != want:
    raise AssertionError(f"{name}: asked for dtype {want}, got {out.dtype}")
  chex.assert_tree_all_finite(out)

  again = init(key, shape, dtype)
  chex.assert_trees_all_equal(out, again, custom_message=f"{name}: same key, different values")
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  legacy = jax.random.key_data(key) if typed else key
  chex.assert_trees_all_equal(
    out, init(legacy, shape, dtype), custom_message=f"{name}: typed and legacy keys differ"
  )

  jitted = jax.jit(lambda k: init(k, shape, dtype))(key)
  chex.assert_trees_all_equal(out, jitted, custom_message=f"{name}: eager and jit differ")

  abstract = jax.eval_shape(lambda k: init(k, shape, dtype), key)
  if abstract.shape != shape or abstract.dtype != want:
    raise AssertionError(f"{name}: eval_shape gives {abstract.shape} {abstract.dtype}")

  keys = jax.random.split(jax.random.fold_in(key, 1), 3)
  singles = [init(k, shape, dtype) for k in keys]
  if out.size >= 2:
    same = bool(np.array_equal(np.asarray(singles[0]), np.asarray(out)))
    if deterministic and not same:
      raise AssertionError(f"{name}: declared deterministic but depends on the key")
    if not deterministic and same:
      raise AssertionError(f"{name}: a different key gave the same array")
  batched = jax.vmap(lambda k: init(k, shape, dtype))(keys)
  chex.assert_trees_all_equal(
    batched,
    jnp.stack(singles),
    custom_message=f"{name}: vmap over keys differs from separate calls",
  )

  if isinstance(out_sharding, jax.sharding.Sharding):
    sharded = init(key, shape, dtype, out_sharding)
    if not sharded.sharding.is_equivalent_to(out_sharding, len(shape)):
      raise AssertionError(f"{name}: asked for sharding {out_sharding}, got {sharded.sharding}")
    chex.assert_trees_all_equal(
      out, sharded, custom_message=f"{name}: sharded values differ from unsharded"
    )
  return out


def moment_z_scores(
  samples: Any, *, mean: complex | None = None, var: float | None = None
) -> tuple[float | None, float | None]:
  """z-scores of the sample mean and variance against expected values.

  The variance is ``E|w - E w|^2`` (real or complex). Standard errors come from
  the sample itself: ``SE(mean) = s / sqrt(n)`` and ``SE(var) = sd(|w - m|^2) /
  sqrt(n)``, which for a real sample is ``sqrt((m4 - s^4) / n)``, valid for any
  distribution with a fourth moment (normal, truncated, uniform, ...). Computed
  in float64.

  Args:
    samples: an array of draws (any shape).
    mean: the expected mean, or None to skip.
    var: the expected variance, or None to skip.

  Returns:
    ``(z_mean, z_var)``; a z-score is None when its expectation was not given.
    For complex samples ``z_mean`` is ``|m - mean| / SE``.

  Examples:
    >>> import jax, jaxinit
    >>> from jaxinit import testing
    >>> w = jaxinit.normal(stddev=0.1)(jax.random.key(1), (10**6,))
    >>> z_mean, z_var = testing.moment_z_scores(w, mean=0.0, var=0.01)
    >>> abs(z_mean) < 6 and abs(z_var) < 6
    True
  """
  return _z_scores("testing.moment_z_scores", samples, mean, var)


def _z_scores(fn: str, samples: Any, mean: Any, var: Any) -> tuple[float | None, float | None]:
  x = _samples(fn, samples).ravel()
  mean = _expected(fn, "mean", mean, complex_ok=True)
  var = _expected(fn, "var", var, complex_ok=False, nonnegative=True)
  x = x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)
  n = x.size
  if n < 2:
    raise fail(fn, f"`samples` must hold at least 2 values for a moment check, got {n}.")
  m = x.mean()
  d = np.abs(x - m) ** 2
  s2 = float(d.mean())
  z_mean = z_var = None
  if mean is not None:
    se = math.sqrt(s2 / n)
    z_mean = float(abs(m - mean) / se) if np.iscomplexobj(x) else float((m.real - mean) / se)
    if se == 0:
      z_mean = 0.0 if m == mean else math.inf
  if var is not None:
    se = float(d.std()) / math.sqrt(n)
    z_var = float((s2 - var) / se) if se > 0 else (0.0 if s2 == var else math.inf)
  return z_mean, z_var


def assert_moments(
  samples: Any,
  *,
  mean: complex | None = None,
  var: float | None = None,
  k: float = 6.0,
  name: str = "samples",
) -> None:
  """Asserts the sample mean and variance are within ``k`` standard errors.

  With ``k = 6`` a correct initializer fails by chance with probability about
  2e-9 per check, while a constant that is wrong by 1% in the standard deviation
  is caught from about 10^5 draws on (the variance is then 2% off, and its
  standard error is sqrt(2/n) = 0.45% for a normal at n = 10^5).

  Args:
    samples: an array of draws.
    mean: the expected mean (None to skip).
    var: the expected variance ``E|w - E w|^2`` (None to skip).
    k: how many standard errors are tolerated.
    name: a label for the message.

  Raises:
    AssertionError: with the estimate, the expectation and the z-score.

  Examples:
    >>> import jax, jaxinit
    >>> from jaxinit import testing
    >>> w = jaxinit.he_normal()(jax.random.key(3), (1000, 1000))
    >>> testing.assert_moments(w, mean=0.0, var=2 / 1000)
    >>> testing.assert_moments(w, var=2.1 / 1000)
    Traceback (most recent call last):
    AssertionError: samples: variance 0.0020... expected 0.0021, z = -... standard errors
    (limit 6.0; n = 1000000)
  """
  fn = "testing.assert_moments"
  k = check_real(fn, "k", k, positive=True)
  z_mean, z_var = _z_scores(fn, samples, mean, var)
  x = _samples(fn, samples)
  n = x.size
  problems = []
  if z_mean is not None and not abs(z_mean) <= k:
    est = (
      complex(np.mean(x.astype(np.complex128)))
      if np.iscomplexobj(x)
      else float(np.mean(x.astype(np.float64)))
    )
    problems.append(f"mean {est:.6g} expected {mean:.6g}, z = {z_mean:.2f}")
  if z_var is not None and not abs(z_var) <= k:
    xs = x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)
    est = float(np.mean(np.abs(xs - xs.mean()) ** 2))
    problems.append(f"variance {est:.6g} expected {var:.6g}, z = {z_var:.2f}")
  if problems:
    raise AssertionError(
      f"{name}: " + "; ".join(problems) + f" standard errors (limit {k}; n = {n})"
    )


def assert_ks(
  samples: Any,
  distribution: str | Callable[[np.ndarray], np.ndarray],
  args: Sequence[float] = (),
  *,
  alpha: float = 1e-6,
  name: str = "samples",
) -> float:
  """Kolmogorov–Smirnov test of the samples against a named distribution.

  Args:
    samples: real draws (any shape; flattened, compared in float64).
    distribution: a ``scipy.stats`` continuous distribution name with its
      ``args`` (``"norm"`` with ``(loc, scale)``, ``"uniform"`` with ``(loc,
      width)``, ``"truncnorm"`` with ``(a, b, loc, scale)``, ...), or a CDF.
    args: the distribution's parameters.
    alpha: fail when the p-value is below this (default 1e-6: with fixed keys a
      correct initializer essentially never fails). KS tests the shape of the
      distribution — a normal where a uniform or a truncated normal is due, a
      truncation without its std correction (12% in scale) — while small scale
      errors (1%) are caught far more sharply by :func:`assert_moments`.
    name: a label for the message.

  Returns:
    The p-value.

  Raises:
    AssertionError: with the KS statistic, n and the p-value.

  Examples:
    >>> import jax, jaxinit
    >>> from jaxinit import testing
    >>> w = jaxinit.uniform(-1.0, 1.0)(jax.random.key(0), (200_000,))
    >>> testing.assert_ks(w, "uniform", (-1.0, 2.0)) > 1e-6
    True
  """
  fn = "testing.assert_ks"
  x = _samples(fn, samples)
  if np.iscomplexobj(x):
    raise fail(fn, "`samples` must be real; test the real and imaginary parts apart.", TypeError)
  x = x.astype(np.float64).ravel()
  alpha = check_real(fn, "alpha", alpha, positive=True)
  if not alpha < 1:
    raise fail(fn, f"`alpha` must lie in (0, 1), got {alpha!r}.")
  if isinstance(distribution, str):
    if not isinstance(getattr(stats, distribution, None), stats.rv_continuous):
      raise fail(
        fn,
        f"`distribution` {short_repr(distribution)} is not a scipy.stats continuous "
        "distribution ('norm', 'uniform', 'truncnorm', ...).",
      )
  elif not callable(distribution):
    raise fail(
      fn,
      "`distribution` must be a scipy.stats distribution name or a CDF callable, got "
      f"{short_repr(distribution)}.",
      TypeError,
    )
  if isinstance(args, str | bytes) or not isinstance(args, Sequence):
    raise fail(fn, f"`args` must be a sequence of numbers, got {short_repr(args)}.", TypeError)
  args = tuple(check_real(fn, "args", a) for a in args)
  result = stats.kstest(x, distribution, args=tuple(args))
  if not result.pvalue >= alpha:
    label = (
      distribution if isinstance(distribution, str) else getattr(distribution, "__name__", "cdf")
    )
    raise AssertionError(
      f"{name}: Kolmogorov–Smirnov test against {label}{tuple(args)} fails: "
      f"D = {result.statistic:.3g} with n = {x.size}, p = {result.pvalue:.3g} < {alpha}"
    )
  return float(result.pvalue)


def _as_matrices(w: np.ndarray, column_axis: int, batch_axis: Sequence[int]) -> np.ndarray:
  """(batch, rows, cols) where cols is ``column_axis`` and rows the other axes."""
  ndim = w.ndim
  batch = [a % ndim for a in batch_axis]
  col = column_axis % ndim
  rest = [a for a in range(ndim) if a not in batch and a != col]
  moved = np.transpose(w, batch + rest + [col])
  nb = math.prod(w.shape[a] for a in batch)
  return moved.reshape(nb, -1, w.shape[col])


def assert_orthonormal(
  w: Any,
  *,
  column_axis: int = -1,
  batch_axis: Sequence[int] = (),
  scale: float = 1.0,
  atol: float | None = None,
  name: str = "w",
) -> float:
  """Asserts that ``w`` is (semi-)orthogonal up to ``scale``.

  ``w`` is viewed as matrices with ``column_axis`` as columns and all other
  non-batch axes flattened into rows, the flattening of
  ``jax.nn.initializers.orthogonal`` (for a Flax kernel ``(..., in, out)``:
  rows are inputs, columns are outputs). A tall matrix must have orthonormal
  columns (``W^T W = scale^2 I``), a wide one orthonormal rows (``W W^T =
  scale^2 I``). Complex matrices use the conjugate transpose.

  The products are formed in float64 from the stored values, so the measured
  error is that of ``w`` itself. The default tolerance is ``10 * eps * n`` of
  the dtype of ``w`` (``n`` the smaller side), the error of a backward-stable
  orthogonalization.

  Args:
    w: the array.
    column_axis: the axis holding the columns.
    batch_axis: axes of independent matrices.
    scale: the expected singular value.
    atol: absolute tolerance on ``|W^T W / scale^2 - I|`` (max entry).
    name: a label for the message.

  Returns:
    The largest deviation found.

  Raises:
    AssertionError: with the deviation and the tolerance.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxinit import testing
    >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (64, 16)))
    >>> testing.assert_orthonormal(q) < 1e-5
    True
  """
  fn = "testing.assert_orthonormal"
  arr = _samples(fn, w, "w")
  scale = check_real(fn, "scale", scale, positive=True)
  if atol is not None:
    atol = check_real(fn, "atol", atol, nonnegative=True)
  if arr.ndim < 2:
    raise AssertionError(f"{name}: orthonormality needs a matrix, got shape {arr.shape}")
  col = normalize_axes(fn, "column_axis", check_axes(fn, "column_axis", column_axis), arr.shape)
  batch = normalize_axes(fn, "batch_axis", check_axes(fn, "batch_axis", batch_axis), arr.shape)
  if col[0] in batch or len(col) != 1:
    raise fail(fn, f"`column_axis`={column_axis!r} must be one axis, not a batch axis.")
  if arr.ndim - len(batch) < 2:
    raise fail(fn, f"`batch_axis`={batch_axis!r} leaves no matrix in the shape {arr.shape}.")
  mats = _as_matrices(arr, col[0], batch)
  m = mats.astype(np.complex128 if np.iscomplexobj(arr) else np.float64)
  rows, cols = m.shape[1:]
  mh = np.conj(np.swapaxes(m, 1, 2))
  gram = mh @ m if rows >= cols else m @ mh
  n = min(rows, cols)
  err = float(np.max(np.abs(gram / (scale * scale) - np.eye(n)))) if n else 0.0
  if atol is None:
    eps = float(jnp.finfo(arr.dtype).eps)
    atol = 10.0 * eps * max(n, 1)
  if not err <= atol:
    side = "columns" if rows >= cols else "rows"
    raise AssertionError(
      f"{name}: {side} are not orthonormal (scale {scale}): max |Gram - I| = {err:.3g} "
      f"> atol {atol:.3g} for {mats.shape[0]} matrices of {rows}x{cols}"
    )
  return err
