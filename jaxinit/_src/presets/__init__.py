"""Published initializations of real architectures as ``reinit`` rules (``jaxinit.presets``)."""
