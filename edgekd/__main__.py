"""``python -m edgekd ...`` (and ``torchrun ... -m edgekd distill RECIPE``): the same command line as ``edgekd``."""

import sys

from edgekd.cli import main

if __name__ == "__main__":
    sys.exit(main())
