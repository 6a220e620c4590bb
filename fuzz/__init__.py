"""Coverage-guided fuzzing of the compiled codec and matcher (atheris); see README.md.

The matcher's oracle is the reference in ``tests/reference.py``: that directory is
put on the import path here, as pytest does for the tests.
"""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.append(TESTS)
