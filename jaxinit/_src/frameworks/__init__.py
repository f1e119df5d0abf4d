"""Glue for the frameworks jaxinit works with, on top of the core; jaxinit needs none
of them installed.

``bind``: a model of any kind (linen, nnx, a pure function) as one
``apply(params, ...)`` for LSUV and the diagnostics. ``flax_init``:
``init_linen`` / ``init_nnx``, a whole Flax model born sharded. ``haiku``: an
adapter for haiku's initializer protocol. (Recognizing Flax boxes and equinox
modules inside trees is lower down, in ``framework_types``.)
"""
