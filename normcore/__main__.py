"""Entry point for ``python -m normcore``."""

import sys

from normcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
