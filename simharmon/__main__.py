"""``python -m simharmon``: the same CLI as the ``simharmon`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
