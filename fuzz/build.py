"""Builds fastroute with its extensions instrumented for fuzzing, apart from the normal build.

The extensions are compiled by clang with libFuzzer's coverage hooks
(``-fsanitize=fuzzer-no-link``) and AddressSanitizer and UndefinedBehaviorSanitizer,
into ``build/fuzz/lib``: a whole copy of the package, so that putting that directory
first on ``PYTHONPATH`` makes every ``fastroute`` import the instrumented one while the
editable install in the source tree stays as it is. The sanitizer runtime is not linked
in: atheris ships one with libFuzzer inside (``asan_with_fuzzer.so``), which the fuzzing
process preloads (``fuzz.run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "fuzz"
LIB = BUILD / "lib"
SANITIZERS = "address,undefined,fuzzer-no-link"
# UBSan stops at the first report (atheris then reports the crash and the input). Its
# pointer-overflow check is off: Cython's generated argument parsing computes ``NULL + 0``
# for every call without arguments; out-of-bounds accesses are ASan's to catch.
FLAGS = (
    f"-fsanitize={SANITIZERS} -fno-sanitize=pointer-overflow -fno-sanitize-recover=undefined"
    " -fno-omit-frame-pointer -g -O1"
)
MODULES = ("_match", "_http")


def extensions() -> list[Path]:
    """The instrumented extension files, once built."""
    found: list[Path] = []
    for module in MODULES:
        found.extend(sorted((LIB / "fastroute").glob(f"{module}.*.so")))
    return found


def build(*, quiet: bool = True) -> Path:
    """Build (or bring up to date) the instrumented package; returns the directory to import from.

    Raises:
        RuntimeError: clang is missing, or the build failed (its output is in the message).
    """
    clang = shutil.which("clang")
    if clang is None:
        raise RuntimeError("clang is not installed (Debian: apt-get install -y clang)")
    env = dict(os.environ)
    env.update(
        CC=clang,
        LDSHARED=f"{clang} -shared -pthread",
        CFLAGS=FLAGS,
        LDFLAGS=f"-fsanitize={SANITIZERS}",
    )
    # ``build`` copies the Python modules too; it rebuilds only what changed.
    # The C files Cython writes beside the .pyx are the normal build's: generated the same.
    command = [
        sys.executable,
        "setup.py",
        "--quiet" if quiet else "--verbose",
        "build",
        "--build-base",
        str(BUILD),
        "--build-lib",
        str(LIB),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"instrumented build failed:\n{done.stdout}\n{done.stderr}")
    built = extensions()
    if len(built) != len(MODULES):
        raise RuntimeError(f"instrumented build made {built}, expected one .so per {MODULES}")
    return LIB


if __name__ == "__main__":
    print(build(quiet=False))
