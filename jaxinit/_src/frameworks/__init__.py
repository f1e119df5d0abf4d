"""Glue for the frameworks jaxinit works with; jaxinit itself needs none of them.

``boxes``: Flax's metadata boxes (linen ``AxisMetadata``, nnx ``Variable``), looked
through by every tree walk. ``bind``: a model of any kind (linen, nnx, a pure
function) as one ``apply(params, ...)`` for LSUV and the diagnostics.
``flax_init``: ``init_linen`` / ``init_nnx``, a whole Flax model born sharded.
``equinox`` / ``haiku``: their layouts and initializer adapters.
"""
