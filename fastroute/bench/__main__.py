"""Command line: ``python -m fastroute.bench [--sizes ...] [--repeat N] [--quick] [--json PATH]``.

Prints the report on stdout and progress on stderr. Exits 0 after a complete run,
even when a performance target is missed (the report says so); 1 when fastroute
routed a sampled request to the wrong backend, since its figures then mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fastroute.bench.report import render
from fastroute.bench.run import Config, run

__all__ = ["main"]

QUICK_SIZES = (10, 1000)


def _sizes(text: str) -> tuple[int, ...]:
    """Parse ``10,1000,100k``: rule counts, each at least 10."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        scale = 1000 if part.endswith("k") else 1
        try:
            size = int(part.removesuffix("k")) * scale
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a rule count: {part!r}") from None
        if size < 10:
            raise argparse.ArgumentTypeError(f"sizes must be at least 10, not {size}")
        sizes.append(size)
    return tuple(sizes)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastroute.bench",
        description="Time fastroute's Router (match, build, memory) beside a pure-Python "
        "trie and, when installed, http-router, werkzeug and starlette.",
    )
    parser.add_argument(
        "--sizes", type=_sizes, help="rule counts, comma-separated (default 10,1000,10000,100000)"
    )
    parser.add_argument("--repeat", type=_positive, help="timed repeats per figure (default 7)")
    parser.add_argument(
        "--quick", action="store_true", help="sizes 10,1000, 3 repeats, short repeats: for tests"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument(
        "--budget",
        type=float,
        default=Config.scenario_budget,
        metavar="SECONDS",
        help="longest a peer may take on one scenario before it is skipped (default 5)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = _parser().parse_args(argv)
    config = Config(
        sizes=args.sizes or (QUICK_SIZES if args.quick else Config.sizes),
        repeat=args.repeat or (3 if args.quick else Config.repeat),
        min_time=0.005 if args.quick else Config.min_time,
        seed=args.seed,
        scenario_budget=args.budget,
        quick=args.quick,
    )
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    results = run(config, progress)
    sys.stdout.write(render(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    return 1 if any(row.fastroute_wrong for row in results.match) else 0


if __name__ == "__main__":
    sys.exit(main())
