"""Runs a fuzz target: ``python -m fuzz.run TARGET --runs N [-- libFuzzer flags...]``.

Builds the instrumented extensions first (``fuzz.build``) and runs the target in a
process that imports them, with atheris's sanitizer runtime preloaded. New inputs go to
``build/fuzz/corpus/TARGET`` (the committed ``fuzz/corpus/TARGET`` is read, never
written); ``--merge`` minimizes both into a fresh committed corpus instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fuzz import build

TARGETS = ("codec", "matcher")
LAUNCHER = "FUZZ_LAUNCHER"  # the command a target gives libFuzzer as its argv[0]
FUZZ = build.ROOT / "fuzz"
DICTIONARIES = {"codec": FUZZ / "http.dict"}
# Inputs stay short so that 10^7 of them take an hour, not a day: a matcher input is a
# dozen operations at most; a head over 512 bytes is no different to the parser from a
# shorter one (the codec target's smaller max_head values make 431s and 502s reachable).
MAX_LEN = {"codec": 512, "matcher": 96}


def committed_corpus(target: str) -> Path:
    return FUZZ / "corpus" / target


def work_corpus(target: str) -> Path:
    return build.BUILD / "corpus" / target


def fuzz_environment(*, instrumented: bool) -> dict[str, str]:
    """The environment of a fuzzing process: the instrumented build and the sanitizers."""
    env = dict(os.environ)
    paths = [str(build.ROOT)]
    if instrumented:
        import atheris

        paths.insert(0, str(build.build()))
        env["LD_PRELOAD"] = str(Path(atheris.path()) / "asan_with_fuzzer.so")
        # CPython frees little at exit (leaks are noise); every allocation through malloc,
        # so ASan sees the bytes objects the codec reads and the tables it allocates.
        # No allocation stacks and a small quarantine: 2-3x the inputs per second; a
        # report still shows where the bad access is (run its input again for the rest).
        env["ASAN_OPTIONS"] = (
            "detect_leaks=0:allocator_may_return_null=1:malloc_context_size=0:quarantine_size_mb=16"
        )
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        env["PYTHONMALLOC"] = "malloc"
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def command(target: str, corpora: list[Path], flags: list[str]) -> list[str]:
    options = [f"-artifact_prefix={build.BUILD / 'artifacts' / target}/", "-print_final_stats=1"]
    if target in MAX_LEN:
        options.append(f"-max_len={MAX_LEN[target]}")
    if target in DICTIONARIES:
        options.append(f"-dict={DICTIONARIES[target]}")
    # -P: the source tree (the working directory) does not come before PYTHONPATH
    return [sys.executable, "-P", "-m", f"fuzz.{target}", *options, *flags, *map(str, corpora)]


def run(
    target: str, runs: int, flags: list[str], *, instrumented: bool = True, work: Path | None = None
) -> int:
    """Run ``target`` for ``runs`` inputs, new ones written to ``work``; libFuzzer's status."""
    work = work or work_corpus(target)
    work.mkdir(parents=True, exist_ok=True)
    (build.BUILD / "artifacts" / target).mkdir(parents=True, exist_ok=True)
    argv = command(target, [work, committed_corpus(target)], [f"-runs={runs}", *flags])
    env = fuzz_environment(instrumented=instrumented)
    return subprocess.run(argv, env=env, cwd=build.ROOT, check=False).returncode


def launcher(target: str) -> Path:
    """An executable that starts ``target``: libFuzzer's merge runs its argv[0] again."""
    path = build.BUILD / "bin" / target
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -P -m fuzz.{target} "$@"\n')
    path.chmod(0o755)
    return path


def merge(target: str, flags: list[str]) -> int:
    """Minimize the committed and the working corpus into a fresh committed corpus.

    Inputs named ``regression-*`` (each found a defect) are kept as they are.
    """
    fresh = build.BUILD / "merged" / target
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    sources = [committed_corpus(target), work_corpus(target)]
    argv = command(target, [fresh, *(s for s in sources if s.is_dir())], ["-merge=1", *flags])
    env = fuzz_environment(instrumented=True)
    env[LAUNCHER] = str(launcher(target))
    status = subprocess.run(argv, env=env, cwd=build.ROOT, check=False).returncode
    if status == 0 and not any(fresh.iterdir()):
        print(f"the merge of {target}'s corpus kept nothing: not replaced", file=sys.stderr)
        return 1
    if status == 0:
        # the inputs that found a defect stay, by name, whatever coverage they add
        for kept in committed_corpus(target).glob("regression-*"):
            shutil.copy(kept, fresh / kept.name)
        shutil.rmtree(committed_corpus(target), ignore_errors=True)
        shutil.copytree(fresh, committed_corpus(target))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__)
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to run (-runs=N)")
    parser.add_argument("--merge", action="store_true", help="minimize the corpus instead")
    parser.add_argument(
        "--uninstrumented",
        action="store_true",
        help="use the normal build: no sanitizers, no native coverage (a smoke run)",
    )
    parser.add_argument(
        "--work", type=Path, help=f"where new inputs go (default: {build.BUILD}/corpus/TARGET)"
    )
    parser.epilog = "libFuzzer flags go after --, e.g. -- -max_total_time=600"
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.flags = argv[split + 1 :]
    if args.merge:
        return merge(args.target, args.flags)
    instrumented = not args.uninstrumented
    return run(args.target, args.runs, args.flags, instrumented=instrumented, work=args.work)


if __name__ == "__main__":
    sys.exit(main())
