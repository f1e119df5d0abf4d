"""JAX's persistent compilation cache, switched on for jaxinit's programs.

On the CPU, a first call of :func:`jaxinit.lsuv` (or of a jitted ``reinit``) spends most of
its time in XLA's compiler, not in the computation. JAX can store every compiled program on
disk and load it in later processes instead of compiling again; this module sets the few
``jax.config`` options that make it do so for programs of any size and compile time.
"""

from __future__ import annotations

import os
import pathlib

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from jaxinit._src.checks import check_real, fail, short_repr

FN = "enable_compilation_cache"


def _default_dir() -> pathlib.Path:
  """``$XDG_CACHE_HOME/jaxinit/jax`` (``~/.cache/jaxinit/jax`` when unset)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "jaxinit" / "jax"


def _directory(path: str | os.PathLike[str] | None) -> pathlib.Path:
  """The cache directory, created if needed; a clear error if it cannot be used."""
  if path is None:
    target = _default_dir()
  elif isinstance(path, str | os.PathLike) and not isinstance(path, bytes):
    raw = os.fspath(path)
    if not isinstance(raw, str) or not raw:
      raise fail(FN, f"`path` must be a non-empty directory path, got {short_repr(path)}.")
    target = pathlib.Path(raw).expanduser()
  else:
    raise fail(
      FN, f"`path` must be a str, an os.PathLike or None, got {short_repr(path)}.", TypeError
    )
  target = target.absolute()
  if target.exists() and not target.is_dir():
    raise fail(FN, f"`path` {str(target)!r} exists and is not a directory.")
  try:
    target.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise fail(FN, f"`path` {str(target)!r} cannot be created: {e.strerror or e}.") from None
  if not os.access(target, os.R_OK | os.W_OK | os.X_OK):
    raise fail(FN, f"`path` {str(target)!r} is not a directory this process can write to.")
  return target


def enable_compilation_cache(
  path: str | os.PathLike[str] | None = None, *, min_compile_time_secs: float = 0.0
) -> pathlib.Path:
  """Turns on JAX's persistent compilation cache, so later processes skip XLA's compiler.

  Every program JAX compiles from then on (jaxinit's LSUV pieces, a jitted
  ``reinit``, your own ``jax.jit`` functions) is stored in ``path``, and a later
  process that compiles the same program with the same jax, jaxlib and
  backend loads it from there instead. On the CPU, where a first
  :func:`jaxinit.lsuv` call is bounded by XLA's compile time, a second process
  with a warm cache then pays only Python start-up, imports, tracing and the
  computation. Results are bit-identical: the stored program is the one that
  would have been compiled.

  It sets ``jax_compilation_cache_dir``,
  ``jax_persistent_cache_min_compile_time_secs`` and
  ``jax_persistent_cache_min_entry_size_bytes`` (0: no size limit) in
  ``jax.config``, and resets JAX's cache object so that a new ``path`` takes
  effect even after earlier compilations. Call it once, early (before the
  compilations you want to store). Programs already compiled in this process
  are not written retroactively.

  The cache is trusted input: a process that can write to ``path`` can make
  yours run arbitrary code. Do not share it with users you do not trust.

  Args:
    path: the cache directory; created (with its parents) if missing. None:
      ``$XDG_CACHE_HOME/jaxinit/jax`` (``~/.cache/jaxinit/jax``).
    min_compile_time_secs: store only programs whose compilation took at
      least this long. JAX's default is 1 s, which skips every piece of a
      small model's LSUV; 0 (the default here) stores them all.

  Returns:
    The absolute path of the cache directory.

  Raises:
    TypeError: ``path`` is not a str, an ``os.PathLike`` or None, or
      ``min_compile_time_secs`` is not a real number.
    ValueError: ``path`` exists and is not a directory, cannot be created or
      written to; ``min_compile_time_secs`` is negative or not finite.

  Examples:
    >>> import tempfile, jax, jax.numpy as jnp, jaxinit
    >>> cache_dir = tempfile.mkdtemp()
    >>> path = jaxinit.enable_compilation_cache(cache_dir)
    >>> path.is_dir() and jax.config.jax_compilation_cache_dir == str(path)
    True
    >>> _ = jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.arange(7.0))  # compiled and stored
    >>> len(list(path.iterdir())) > 0
    True
    >>> jaxinit.enable_compilation_cache(cache_dir, min_compile_time_secs=-1)
    Traceback (most recent call last):
    ...
    ValueError: jaxinit.enable_compilation_cache: `min_compile_time_secs` must be >= 0, got -1.0.

    Turning it off again (jax's defaults):

    >>> from jax.experimental.compilation_cache import compilation_cache
    >>> jax.config.update("jax_compilation_cache_dir", None)
    >>> jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    >>> compilation_cache.reset_cache()
  """
  secs = check_real(FN, "min_compile_time_secs", min_compile_time_secs, nonnegative=True)
  directory = _directory(path)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", secs)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  # jax opens its cache once, at the first compilation after a directory is set; forget
  # that one so the new directory is used from the next compilation on
  jax_cache.reset_cache()
  return directory
