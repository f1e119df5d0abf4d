"""Keras 3 initializer configs, both ways: the mapping table between Keras's built-in
initializer classes and jaxinit's initializers.

This module works on plain data only: ``from_keras`` turns the ``class_name`` and
``config`` of a Keras config into a jaxinit config ``{"name": ..., **arguments}``
(the arguments still in their JSON form, decoded by ``serialization``), and
``to_keras`` turns a jaxinit initializer's name and arguments into the dict Keras 3's
``keras.saving.serialize_keras_object`` writes. ``serialization`` builds the objects.

The distributions are Keras's own, read from ``keras/src/initializers/*.py`` and
``keras/src/backend/jax/random.py`` of Keras 3.15 (the JAX backend):

==================================  ====================================================
Keras 3 class (and aliases)         jaxinit
==================================  ====================================================
``Zeros`` (``zeros``, ``zero``)     ``zeros()``
``Ones`` (``ones``, ``one``)        ``ones()``
``Constant(value=0.0)``             ``constant(value)``; a ``__numpy__``/``__tensor__``
                                    value is an array
``RandomNormal(mean=0.0,            ``normal(stddev, mean)``
stddev=0.05)`` (``normal``)
``RandomUniform(minval=-0.05,       ``uniform(minval, maxval)``
maxval=0.05)`` (``uniform``)
``TruncatedNormal(mean=0.0,         ``truncated_normal(stddev, mean, lower=-2.0,
stddev=0.05)``                      upper=2.0, exact_std=False)``: Keras cuts at
                                    ±2 stddev and does not rescale
``VarianceScaling(scale=1.0,        ``variance_scaling(scale, mode, distribution)``;
mode="fan_in", distribution=        Keras's ``truncated_normal`` (and its legacy
"truncated_normal")``               ``normal``) is jaxinit's ``truncated_normal``
                                    (cut at 2 sigma, rescaled by 1/0.87962566103423978),
                                    ``untruncated_normal`` is ``normal``
``GlorotNormal``, ``GlorotUniform``  ``glorot_normal()``, ``glorot_uniform()``
``HeNormal``, ``HeUniform``          ``he_normal()``, ``he_uniform()``
``LecunNormal``, ``LecunUniform``    ``lecun_normal()``, ``lecun_uniform()``
``Orthogonal(gain=1.0)``             ``orthogonal(scale=gain)`` (Haar; the matrix
(``OrthogonalInitializer``)          ``(prod(shape[:-1]), shape[-1])`` in both)
``Identity(gain=1.0)``               ``identity(scale=gain)`` (Keras: 2-D only)
(``IdentityInitializer``)
``STFT`` (``STFTInitializer``)       none: refused with a clear error
==================================  ====================================================

Every class is also known by its snake-case name (``random_normal``, ...), as in
Keras's ``ALL_OBJECTS_DICT``. ``seed`` is accepted and ignored: jaxinit draws from
the JAX key it is called with, so a Keras seed has no meaning here.

``input_axes``/``output_axes`` (the variance-scaling classes): when both are given,
Keras's fans are ``prod(shape[input_axes])`` and ``prod(shape[output_axes])`` and
every other axis counts in neither; jaxinit gets ``in_axis=input_axes,
out_axis=output_axes`` and, as ``batch_axis`` (the axes jaxinit counts in neither
fan), the other axes between the listed ones (``0 .. max`` when all are >= 0,
``min .. -1`` when all are < 0). An axis outside that span is unknown until the
shape is (a kernel of higher rank than the listed axes reach) and counts as
receptive field in jaxinit, so the two agree exactly when the listed axes reach
every axis of the kernel, as in Keras's own use (``EinsumDense`` kernels). When only
one of the two is given Keras ignores both, and so does this mapping.

Going back (``serialize(init, format="keras")``), a jaxinit initializer is written as
the Keras class above when its arguments are that class's; Glorot/He/LeCun with other
arguments become the ``VarianceScaling`` with the same ``scale``, ``mode`` and
``distribution``. Configurations Keras cannot express are refused: custom axes
(Keras's ``input_axes`` have no receptive field, so a torch-layout conv kernel would
get other fans), ``mode="fan_geo_avg"``, truncation bounds other than ±2, complex
constants, ``orthogonal``'s ``column_axis``/``batch_axis``, and the initializers Keras
does not have (``delta_orthogonal``, ``dirac``, ``sparse``, ``normalized``).
``orthogonal``'s ``method`` is not written (both methods draw the same Haar
distribution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from jaxinit._src.checks import fail
from jaxinit._src.gain import gain

#: The ``module`` Keras 3 writes for its built-in initializers.
KERAS_MODULE = "keras.initializers"

_MODES = ("fan_in", "fan_out", "fan_avg")
# Keras distribution name (lower-cased, as Keras does) -> jaxinit variance_scaling's.
_FROM_KERAS_DISTRIBUTION = {
  "truncated_normal": "truncated_normal",
  "normal": "truncated_normal",  # Keras's legacy name for the truncated normal
  "untruncated_normal": "normal",
  "uniform": "uniform",
}
_TO_KERAS_DISTRIBUTION = {
  "truncated_normal": "truncated_normal",
  "normal": "untruncated_normal",
  "uniform": "uniform",
}
_MAX_AXES = 32


@dataclasses.dataclass(frozen=True)
class KerasClass:
  """One Keras 3 built-in initializer class and how it maps to jaxinit.

  Attributes:
    name: the Keras class name.
    aliases: the other names Keras resolves to this class.
    defaults: Keras's constructor defaults (``seed`` aside).
    to_jaxinit: ``(fn, class name, Keras arguments with defaults filled in) ->``
      jaxinit config, or None when jaxinit has no equivalent.
  """

  name: str
  aliases: tuple[str, ...]
  defaults: Mapping[str, Any]
  to_jaxinit: Callable[[str, str, dict[str, Any]], dict[str, Any]] | None


def _snake(name: str) -> str:
  out = []
  for i, c in enumerate(name):
    if (
      c.isupper() and i and (name[i - 1].islower() or (i + 1 < len(name) and name[i + 1].islower()))
    ):
      out.append("_")
    out.append(c.lower())
  return "".join(out)


def _axes(fn: str, cls: str, arg: str, value: Any) -> tuple[int, ...]:
  ok = isinstance(value, (list, tuple)) and 0 < len(value) <= _MAX_AXES
  ok = ok and all(isinstance(a, int) and not isinstance(a, bool) for a in value)
  if not ok or not all(-_MAX_AXES <= a < _MAX_AXES for a in value):
    raise fail(
      fn,
      f"Keras {cls}: `{arg}` must be null or a list of 1 to {_MAX_AXES} axis indices "
      f"in [-{_MAX_AXES}, {_MAX_AXES}), got {short(value)}.",
    )
  return tuple(value)


def _keras_axes(fn: str, cls: str, args: Mapping[str, Any]) -> dict[str, Any]:
  """jaxinit's in_axis/out_axis/batch_axis for Keras's input_axes/output_axes."""
  ins, outs = args.get("input_axes"), args.get("output_axes")
  if ins is None or outs is None:  # Keras ignores one without the other
    return {}
  ins, outs = _axes(fn, cls, "input_axes", ins), _axes(fn, cls, "output_axes", outs)
  listed = {*ins, *outs}
  if all(a >= 0 for a in listed):
    batch = tuple(a for a in range(max(listed)) if a not in listed)
  elif all(a < 0 for a in listed):
    batch = tuple(a for a in range(min(listed), 0) if a not in listed)
  else:  # mixed signs: the axes between them depend on the rank
    batch = ()
  one = lambda axes: axes[0] if len(axes) == 1 else axes  # as jaxinit's factories store them
  return {"in_axis": one(ins), "out_axis": one(outs), "batch_axis": batch}


def _choice(fn: str, cls: str, arg: str, value: Any, choices) -> str:
  if not isinstance(value, str) or value.lower() not in choices:
    allowed = ", ".join(map(repr, choices))
    raise fail(fn, f"Keras {cls}: `{arg}` must be one of {allowed}, got {short(value)}.")
  return value.lower()


def _variance_scaling(fn: str, cls: str, a: dict[str, Any]) -> dict[str, Any]:
  dist = _choice(fn, cls, "distribution", a["distribution"], tuple(_FROM_KERAS_DISTRIBUTION))
  mode = a["mode"]
  if mode not in _MODES:  # Keras compares case-sensitively
    raise fail(
      fn,
      f"Keras {cls}: `mode` must be one of {', '.join(map(repr, _MODES))}, got {short(mode)}.",
    )
  out = {"name": "variance_scaling", "scale": a["scale"], "mode": mode}
  out["distribution"] = _FROM_KERAS_DISTRIBUTION[dist]
  return {**out, **_keras_axes(fn, cls, a)}


def _named(jaxinit_name: str):
  def convert(fn: str, cls: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"name": jaxinit_name, **_keras_axes(fn, cls, a)}

  return convert


_AXES_DEFAULTS = {"input_axes": None, "output_axes": None}

#: Keras 3's built-in initializer classes, in the order of the table above.
KERAS_CLASSES: tuple[KerasClass, ...] = (
  KerasClass("Zeros", ("zero",), {}, lambda fn, c, a: {"name": "zeros"}),
  KerasClass("Ones", ("one",), {}, lambda fn, c, a: {"name": "ones"}),
  KerasClass(
    "Constant", (), {"value": 0.0}, lambda fn, c, a: {"name": "constant", "value": a["value"]}
  ),
  KerasClass(
    "RandomNormal",
    ("normal",),
    {"mean": 0.0, "stddev": 0.05},
    lambda fn, c, a: {"name": "normal", "stddev": a["stddev"], "mean": a["mean"]},
  ),
  KerasClass(
    "RandomUniform",
    ("uniform",),
    {"minval": -0.05, "maxval": 0.05},
    lambda fn, c, a: {"name": "uniform", "minval": a["minval"], "maxval": a["maxval"]},
  ),
  KerasClass(
    "TruncatedNormal",
    (),
    {"mean": 0.0, "stddev": 0.05},
    lambda fn, c, a: {
      "name": "truncated_normal",
      "stddev": a["stddev"],
      "mean": a["mean"],
      "lower": -2.0,
      "upper": 2.0,
      "exact_std": False,
    },
  ),
  KerasClass(
    "VarianceScaling",
    (),
    {"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal", **_AXES_DEFAULTS},
    _variance_scaling,
  ),
  KerasClass("GlorotNormal", (), _AXES_DEFAULTS, _named("glorot_normal")),
  KerasClass("GlorotUniform", (), _AXES_DEFAULTS, _named("glorot_uniform")),
  KerasClass("HeNormal", (), _AXES_DEFAULTS, _named("he_normal")),
  KerasClass("HeUniform", (), _AXES_DEFAULTS, _named("he_uniform")),
  KerasClass("LecunNormal", (), _AXES_DEFAULTS, _named("lecun_normal")),
  KerasClass("LecunUniform", (), _AXES_DEFAULTS, _named("lecun_uniform")),
  KerasClass(
    "Orthogonal",
    ("OrthogonalInitializer",),
    {"gain": 1.0},
    lambda fn, c, a: {"name": "orthogonal", "scale": a["gain"], "column_axis": -1},
  ),
  KerasClass(
    "Identity",
    ("IdentityInitializer",),
    {"gain": 1.0},
    lambda fn, c, a: {"name": "identity", "scale": a["gain"]},
  ),
  KerasClass(
    "STFT",
    ("STFTInitializer",),
    {"side": "real", "window": "hann", "scaling": "density", "periodic": False},
    None,
  ),
)

_BY_NAME: dict[str, KerasClass] = {}
for _c in KERAS_CLASSES:
  for _n in (_c.name, _snake(_c.name), *_c.aliases):
    _BY_NAME[_n] = _c

#: Every name Keras 3 resolves to a built-in initializer class.
KERAS_NAMES: tuple[str, ...] = tuple(sorted(_BY_NAME))


def short(value: Any, n: int = 40) -> str:
  """A bounded repr of an untrusted value: a prefix of a string, a size for a large
  container or integer; never more than about ``n`` characters, cheap for huge values."""
  if isinstance(value, str):
    return repr(value[:n]) + ("..." if len(value) > n else "")
  if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
    return f"an integer of {value.bit_length()} bits"
  containers = (list, tuple, Mapping)
  if isinstance(value, containers) and (
    len(value) > 8 or any(isinstance(v, (*containers, str)) for v in value)
  ):
    return f"a {type(value).__name__} of {len(value)} items"
  try:
    text = repr(value)
  except Exception:
    text = f"<{type(value).__name__}>"
  return text if len(text) <= n else text[:n] + "..."


def is_keras_name(name: str) -> bool:
  return name in _BY_NAME


def from_keras(class_name: Any, config: Any, fn: str) -> dict[str, Any]:
  """The jaxinit config ``{"name": ..., **arguments}`` of a Keras class and its config."""
  cls = _BY_NAME.get(class_name) if isinstance(class_name, str) else None
  if cls is None:
    raise fail(
      fn,
      f"unknown Keras initializer class {short(class_name)}; Keras 3's built-in classes are "
      f"{', '.join(c.name for c in KERAS_CLASSES)}.",
    )
  if cls.to_jaxinit is None:
    raise fail(
      fn,
      f"Keras's {cls.name} initializer has no jaxinit equivalent (it builds short-time "
      "Fourier transform kernels).",
    )
  if config is None:
    config = {}
  if not isinstance(config, Mapping):
    raise fail(fn, f"Keras {cls.name}: `config` must be a dict, got {short(config)}.", TypeError)
  args = {k: v for k, v in config.items() if k != "seed"}  # Keras seeds: see the module doc
  unknown = [k for k in args if k not in cls.defaults]
  if unknown:
    takes = ", ".join(cls.defaults) or "no arguments"
    raise fail(
      fn,
      f"Keras {cls.name} got unexpected argument(s) {', '.join(short(k) for k in unknown[:5])}; "
      f"it takes {takes} (and seed).",
      TypeError,
    )
  return cls.to_jaxinit(fn, cls.name, {**cls.defaults, **args})


# ---------------------------------------------------------------------------
# jaxinit -> Keras
# ---------------------------------------------------------------------------

_DEFAULT_AXES = {"in_axis": -2, "out_axis": -1, "batch_axis": []}  # JSON form


def _keras_dict(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
  return {
    "module": KERAS_MODULE,
    "class_name": class_name,
    "config": config,
    "registered_name": None,
  }


def _vs_config(scale: float, mode: str, distribution: str) -> dict[str, Any]:
  return {
    "seed": None,
    "scale": scale,
    "mode": mode,
    "distribution": _TO_KERAS_DISTRIBUTION[distribution],
    "input_axes": None,
    "output_axes": None,
  }


def _he_scale(fn: str, c: Mapping[str, Any]) -> float:
  """He's variance scale gain**2, as jaxinit's he_normal/he_uniform compute it."""
  if c["nonlinearity"] == "leaky_relu":
    return gain(fn, "leaky_relu", c["negative_slope"]) ** 2
  return gain(fn, c["nonlinearity"], None) ** 2


def _family(fn: str, name: str, c: Mapping[str, Any]) -> tuple[str | None, tuple]:
  """(Keras named class or None, (scale, mode, distribution)) of the variance-scaling family."""
  dist = {True: "truncated_normal", False: "normal"}
  if name == "variance_scaling":
    return None, (c["scale"], c["mode"], c["distribution"])
  if name == "glorot_normal":
    named = "GlorotNormal" if c["gain"] == 1.0 and c["truncated"] else None
    return named, (c["gain"] ** 2, "fan_avg", dist[c["truncated"]])
  if name == "glorot_uniform":
    return ("GlorotUniform" if c["gain"] == 1.0 else None), (c["gain"] ** 2, "fan_avg", "uniform")
  if name in ("he_normal", "he_uniform"):
    default = (c["negative_slope"], c["mode"], c["nonlinearity"]) == (0.0, "fan_in", "leaky_relu")
    if name == "he_uniform":
      return ("HeUniform" if default else None), (_he_scale(fn, c), c["mode"], "uniform")
    named = "HeNormal" if default and c["truncated"] else None
    return named, (_he_scale(fn, c), c["mode"], dist[c["truncated"]])
  if name == "lecun_normal":
    return ("LecunNormal" if c["truncated"] else None), (1.0, "fan_in", dist[c["truncated"]])
  return "LecunUniform", (1.0, "fan_in", "uniform")


_FAMILY_FIELDS = {
  "variance_scaling": ("scale", "mode", "distribution"),
  "glorot_normal": ("gain", "truncated"),
  "glorot_uniform": ("gain",),
  "he_normal": ("negative_slope", "mode", "nonlinearity", "truncated"),
  "he_uniform": ("negative_slope", "mode", "nonlinearity"),
  "lecun_normal": ("truncated",),
  "lecun_uniform": (),
}


def _refuse(fn: str, what: str, why: str) -> Exception:
  return fail(fn, f"{what} has no Keras 3 form: {why}", ValueError)


def _to_keras_family(fn: str, name: str, c: Mapping[str, Any], what: str) -> dict[str, Any]:
  for k, v in _DEFAULT_AXES.items():
    if c.get(k, v) != v:
      raise _refuse(
        fn,
        what,
        f"`{k}`={c[k]!r}. Keras counts the fans on the default axes (in = shape[-2], out = "
        "shape[-1], receptive field = the rest) or on input_axes/output_axes with no "
        "receptive field, so custom axes would change the variance; use the default axes.",
      )
  named, (scale, mode, distribution) = _family(fn, name, c)
  if mode not in _MODES:
    raise _refuse(fn, what, f"`mode`={mode!r}; Keras has {', '.join(map(repr, _MODES))}.")
  if named is not None:
    return _keras_dict(named, {"seed": None, "input_axes": None, "output_axes": None})
  return _keras_dict("VarianceScaling", _vs_config(scale, mode, distribution))


def _to_keras_constant(fn: str, value: Any, what: str) -> dict[str, Any]:
  if isinstance(value, bool) or not isinstance(value, (int, float, Mapping)):
    raise _refuse(fn, what, "Keras's Constant takes a real number or a real array.")
  if isinstance(value, Mapping):  # serialization's array form
    if value.get("complex") or "array" not in value:
      raise _refuse(fn, what, "Keras's Constant takes a real number or a real array.")
    inner = {"value": value["array"], "dtype": value["dtype"]}
    return _keras_dict("Constant", {"value": {"class_name": "__numpy__", "config": inner}})
  return _keras_dict("Constant", {"value": value})


_HANDLED = {
  "zeros": (),
  "ones": (),
  "constant": ("value",),
  "normal": ("stddev", "mean"),
  "uniform": ("minval", "maxval"),
  "truncated_normal": ("stddev", "mean", "lower", "upper", "exact_std"),
  "orthogonal": ("scale", "column_axis", "batch_axis", "method"),
  "identity": ("scale",),
  **{k: (*v, *_DEFAULT_AXES) for k, v in _FAMILY_FIELDS.items()},
}


def to_keras(
  name: str, config: Mapping[str, Any], defaults: Mapping[str, Any], fn: str
) -> dict[str, Any]:
  """The Keras 3 config of the jaxinit initializer ``name`` with JSON arguments ``config``.

  ``defaults`` holds the jaxinit defaults of the arguments (JSON form); an argument
  this mapping does not handle must be at its default, or the initializer is refused.
  """
  c = {k: v for k, v in config.items() if k != "name"}
  changed = {k: v for k, v in c.items() if k not in defaults or defaults[k] != v}
  what = f"{name}({', '.join(f'{k}={short(v)}' for k, v in changed.items())})"
  if name not in _HANDLED:
    raise _refuse(fn, what, f"Keras 3 has no {name} initializer.")
  for k, v in changed.items():
    if k not in _HANDLED[name]:
      raise _refuse(fn, what, f"Keras has no argument for `{k}`={short(v)}.")
  if name in _FAMILY_FIELDS:
    return _to_keras_family(fn, name, c, what)
  if name == "constant":
    return _to_keras_constant(fn, c["value"], what)
  if name == "truncated_normal" and (c["lower"], c["upper"], c["exact_std"]) != (-2.0, 2.0, False):
    raise _refuse(
      fn,
      what,
      "Keras's TruncatedNormal cuts at ±2 stddev and does not rescale; only lower=-2.0, "
      "upper=2.0, exact_std=False.",
    )
  if name == "orthogonal" and (c["column_axis"] != -1 or c["batch_axis"]):
    raise _refuse(
      fn,
      what,
      "Keras's Orthogonal takes the last axis as the columns and draws one matrix; "
      "only column_axis=-1 and no batch_axis.",
    )
  seed = {"seed": None}
  simple = {
    "zeros": lambda: ("Zeros", {}),
    "ones": lambda: ("Ones", {}),
    "normal": lambda: ("RandomNormal", {**seed, "mean": c["mean"], "stddev": c["stddev"]}),
    "uniform": lambda: ("RandomUniform", {**seed, "minval": c["minval"], "maxval": c["maxval"]}),
    "truncated_normal": lambda: (
      "TruncatedNormal",
      {**seed, "mean": c["mean"], "stddev": c["stddev"]},
    ),
    "orthogonal": lambda: ("Orthogonal", {**seed, "gain": c["scale"]}),
    "identity": lambda: ("Identity", {"gain": c["scale"]}),
  }
  return _keras_dict(*simple[name]())
