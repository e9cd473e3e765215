"""Lets `python -m maestro.cli` behave like the `maestro` console script."""

import sys

from maestro.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
