"""minivit's version, stated once for the code: ``minivit.__version__`` and ``minivit --version``.

pyproject.toml states it for pip; tests/test_everyday.py keeps the two equal.
"""

__version__ = "0.1.0"
