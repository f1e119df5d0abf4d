"""``python -m jaxinit``: the same as the ``jaxinit`` command."""

import sys

from jaxinit._src.cli import main

if __name__ == "__main__":
  sys.exit(main())
