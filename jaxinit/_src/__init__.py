"""Implementation of jaxinit. Import from ``jaxinit``, not from here."""
