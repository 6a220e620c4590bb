"""What matching one request costs: a host with literal rules only, a host with regex paths.

``route_cost.py`` counts what a whole request costs the proxy; this isolates the match
(``RouteConfig.match``: the compiled trie, then the regex paths of the host if it has
any) on the bench's manifests (``proxy_peers.write_manifests``: plain hosts, and a host
whose Ingress has ingress-nginx's capture-rewrite paths). The same config is also built
without the regex Ingress, so the plain hosts' figure is shown with and without regex
paths elsewhere in the config. Rounds are interleaved and each figure is the median.

Usage: ``python -m bench.match_cost [--rounds 7] [--calls 200000]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.proxy_peers import PROBES, REGEX_HOST, REGEX_PROBES, write_manifests


def _config(with_regex: bool) -> Any:
    from controller.manifests import load_manifests
    from fastroute.ingress import ClassPolicy, build_config

    folder = Path(tempfile.mkdtemp(prefix="fastroute-match-cost-"))
    try:
        write_manifests(folder, 8080)
        objects = load_manifests([folder]).objects
    finally:
        shutil.rmtree(folder)
    if not with_regex:
        objects = [o for o in objects if o["metadata"]["name"] != "regex"]
    config = build_config(objects, classes=ClassPolicy(adopt_classless=True))
    assert (config.regex is not None) == with_regex
    return config


def _per_call(config: Any, probes: tuple[tuple[str, str], ...], calls: int) -> float:
    """Nanoseconds per ``config.match`` over ``calls`` calls rotating over ``probes``."""
    requests = [(host.encode(), path.encode()) for host, path in probes]
    match = config.match
    rounds = calls // len(requests)
    start = time.perf_counter_ns()
    for _ in range(rounds):
        for host, path in requests:
            match(host, path)
    return (time.perf_counter_ns() - start) / (rounds * len(requests))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args(argv)
    with_regex, without = _config(True), _config(False)
    for host, path in REGEX_PROBES:  # every probe reaches a route of its own kind
        found = with_regex.match(host, path)
        assert found is not None, (host, path)
        assert found.ingress == "bench/regex", (host, path, found)
    cases = {
        "plain hosts, no regex in the config": (without, PROBES),
        "plain hosts, regex paths on another host": (with_regex, PROBES),
        f"regex paths ({REGEX_HOST})": (with_regex, REGEX_PROBES),
    }
    figures: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (config, probes) in cases.items():
            figures[name].append(_per_call(config, probes, args.calls))
    base = statistics.median(figures["plain hosts, no regex in the config"])
    print("| case | ns per match (median) | range | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in figures.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
            f"| {median / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
