"""Coverage-guided fuzzing of the compiled codec and matcher (atheris); see README.md.

The matcher's oracle is the reference in ``tests/reference.py``, imported as a package
from the checkout's root, as the tests and benches are.
"""
