"""What one publisher pass costs the controller's CPU, with 10,000 Ingresses published.

In process, without an API server: the ``Publisher`` leads (a stand-in elector), is fed
the Ingresses as the watch would feed them, and is handed configs as ``KubeSource``
hands them after a rebuild. Timed in CPU seconds of the whole process (worker threads
included), which a busy machine barely changes:

* the first list of the Ingresses, one ``on_ingress`` each (before ready);
* a pass after one Ingress changed (its watch event, then a config with the same
  Ingresses served): what each update in ``controller_scale.py`` costs the publisher;
* a sweep, every Ingress checked (on taking the lead, every ``--status-update-interval``).

Usage: ``python bench/status_pass.py [--ingresses 10000] [--passes 50]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from statistics import median
from typing import Any

import trio

from bench.controller_scale import cluster_objects
from controller.kube.ingress_status import StatusWriter
from controller.kube.publisher import Publisher
from controller.kube.store import Change
from fastroute.ingress import build_config

ADDRESS = "203.0.113.10"


class _Leading:
    """An elector that leads from the start, for as long as it runs."""

    is_leader = True

    async def run(self) -> None:
        await trio.sleep_forever()

    async def wait_for(self, leading: bool) -> None:
        if not leading:
            await trio.sleep_forever()


class _Silent:
    async def rejected(self, *args: object) -> None:
        """No rejection here to post."""


def _change(obj: dict[str, Any], kind: str = "MODIFIED") -> Change:
    meta = obj["metadata"]
    return Change(kind, "Ingress", (meta["namespace"], meta["name"]), obj)  # type: ignore[arg-type]


async def _measure(ingresses: int, passes: int) -> dict[str, float]:
    ports = {"blue": 1, "green": 2}
    objects = list(cluster_objects(ingresses, 1, ports, published=ADDRESS))
    for n, obj in enumerate(objects):
        obj["metadata"]["resourceVersion"] = str(n + 1)
    config = build_config(objects)
    publisher = Publisher(
        None,  # type: ignore[arg-type]  # nothing is written: every status is published
        _Leading(),  # type: ignore[arg-type]
        publish_service=None,
        publish_addresses=[ADDRESS],
        recorder=_Silent(),  # type: ignore[arg-type]
        writer=StatusWriter(None),  # type: ignore[arg-type]
    )
    results: dict[str, float] = {}
    cpu = time.process_time()
    for obj in objects:
        if obj["kind"] == "Ingress":
            publisher.on_ingress(_change(obj, "ADDED"))
    results["the first list's watch events, every Ingress"] = time.process_time() - cpu
    sample = next(o for o in objects if o["kind"] == "Ingress")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        cpu = time.process_time()
        await publisher.on_config(config, objects)
        while publisher.published is not config:  # bounded: the first pass ends
            await trio.sleep(0)
        results["first pass (a sweep of every Ingress)"] = time.process_time() - cpu
        costs = []
        for n in range(passes):
            rebuilt = dataclasses.replace(config)  # the same Ingresses served, as a rebuild
            changed = {**sample, "metadata": {**sample["metadata"]}}
            changed["metadata"]["resourceVersion"] = str(10**9 + n)
            cpu = time.process_time()
            publisher.on_ingress(_change(changed))
            await publisher.on_config(rebuilt, objects)
            while publisher.published is not rebuilt:  # bounded: the pass ends
                await trio.sleep(0)
            costs.append(time.process_time() - cpu)
        results["a pass after one Ingress changed, median"] = median(costs)
        results["a pass after one Ingress changed, max"] = max(costs)
        nursery.cancel_scope.cancel()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ingresses", type=int, default=10_000, help="Ingresses (10000)")
    parser.add_argument("--passes", type=int, default=50, help="passes timed (50)")
    args = parser.parse_args(argv)
    if min(args.ingresses, args.passes) < 1:
        parser.error("--ingresses and --passes must be positive")
    results = trio.run(_measure, args.ingresses, args.passes)
    print(f"publisher CPU with {args.ingresses:,} Ingresses published")
    print("| measure | CPU |")
    print("| --- | ---: |")
    for measure, seconds in results.items():
        print(f"| {measure} | {seconds * 1000:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
