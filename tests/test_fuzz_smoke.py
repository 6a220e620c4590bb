"""A short run of each fuzz target (``fuzz/``): its committed corpus, then new inputs.

The normal build is used, not the instrumented one (no sanitizers, no native coverage
feedback): this shows that every committed input still passes and that the targets run;
the long instrumented runs are ``python -m fuzz.run TARGET --runs N`` (fuzz/README.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed (Linux x86_64 only)")

ROOT = Path(__file__).resolve().parent.parent
NEW_INPUTS = 3000


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["codec", "matcher"])
def test_a_fuzz_target_passes_its_corpus_and_new_inputs(target: str, tmp_path: Path) -> None:
    corpus = sorted((ROOT / "fuzz" / "corpus" / target).iterdir())
    assert corpus, f"fuzz/corpus/{target} is empty"
    runs = len(corpus) + NEW_INPUTS
    command = [sys.executable, "-m", "fuzz.run", target, "--uninstrumented"]
    command += ["--runs", str(runs), "--work", str(tmp_path), "--", "-seed=1"]
    # without native coverage libFuzzer keeps no input as interesting and would not grow
    # new ones past a few bytes: every length up to -max_len from the start
    command += ["-max_total_time=120", "-len_control=0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = done.stderr[-4000:]
    assert done.returncode == 0, report
    assert f"stat::number_of_executed_units: {runs}" in done.stderr, report
