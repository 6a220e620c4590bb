"""Where the time of a prefix hit goes as the rule count grows.

``python -m fastroute.bench`` times 1,000 distinct requests spread over the whole rule
set, each rule with a backend object of its own. At 100,000 rules that sample touches
about ten thousand cache lines of router, plus a thousand backend objects whose
reference counts ``match`` must write, so the figure measures the memory hierarchy as
much as the matcher. This script varies the two things that decide it, side by side
in one run:

- how many distinct requests the sample holds (1 to 10,000): the hot set;
- whether every rule has its own backend object or all share one.

Usage: ``python -m bench.breakdown [--rules 100000] [--repeat 9]``
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastroute import Router
from fastroute.bench.measure import Timed, time_side_by_side
from fastroute.bench.workload import make_workload

HOT_SETS = (1, 10, 100, 1000, 10000)
SAMPLE = 10000


def build(rules: list[Any], *, shared: object | None) -> Router:
    router = Router()
    for host, path, path_type, backend in rules:
        router.add(host, path, path_type, backend if shared is None else shared)
    return router


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()

    small = make_workload(10, sample=SAMPLE)
    large = make_workload(args.rules, sample=SAMPLE)
    routers = {
        "10 rules": build(small.rules, shared=None),
        f"{args.rules:,} rules, a backend per rule": build(large.rules, shared=None),
        f"{args.rules:,} rules, one shared backend": build(large.rules, shared=object()),
    }
    samples = {
        "10 rules": small.scenarios["prefix_hit"].bytes_pairs,
        f"{args.rules:,} rules, a backend per rule": large.scenarios["prefix_hit"].bytes_pairs,
        f"{args.rules:,} rules, one shared backend": large.scenarios["prefix_hit"].bytes_pairs,
    }
    timed = []
    for name, router in routers.items():
        pairs = samples[name]
        for hot in HOT_SETS:
            distinct = pairs[: min(hot, len(pairs))]
            calls = (distinct * (SAMPLE // len(distinct) + 1))[:SAMPLE]
            timed.append(((name, len(distinct)), Timed(router.match, calls, 2)))
    figures = time_side_by_side([t for _, t in timed], repeat=args.repeat, min_time=0.05)

    print(f"prefix hit, median ns per match over {SAMPLE:,} calls; python {sys.version.split()[0]}")
    print(f"{'router':<40} " + " ".join(f"{f'{h:,} hot':>10}" for h in HOT_SETS))
    rows: dict[str, list[str]] = {}
    for ((name, _), _), figure in zip(timed, figures, strict=True):
        if isinstance(figure, Exception):
            raise figure
        rows.setdefault(name, []).append(f"{figure.median_ns:10.1f}")
    for name, cells in rows.items():
        print(f"{name:<40} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
