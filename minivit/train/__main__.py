"""``python -m minivit.train``: the training command line (see minivit/train/cli.py)."""

import sys

from ..common.cli import run
from .cli import main

if __name__ == "__main__":
    sys.exit(run(main))
