"""``python -m minivit.evaluate``: the evaluation command line (see minivit/evaluate/cli.py)."""

import sys

from ..common.cli import run
from .cli import main

if __name__ == "__main__":
    sys.exit(run(main))
