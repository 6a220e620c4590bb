"""Shared test setup: make ``tests/reference.py`` importable as ``reference``.

``tests/`` is deliberately not a package; pytest's default import mode already puts this
directory on ``sys.path``, and this makes that explicit for any other import mode.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
