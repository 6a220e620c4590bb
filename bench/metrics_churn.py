"""Metrics and memory stay bounded while Ingresses come and go.

The real ``Proxy`` in this process on 127.0.0.1, with its status listener, a trio backend,
and a ``ConfigBuilder`` fed as the controller feeds it. Each round creates ``--ingresses``
new Ingresses (names and endpoints never used before) in ``--steps`` steps (one build and
``Proxy.load`` per step), sends ``--requests`` requests to each new one, then deletes them
in as many steps. Every Ingress
has its own Service with two endpoints: the backend, and an address on the loopback
network where nothing listens (127.0.x.y, the backend's port), so every Ingress also
writes upstream-error series and balancer health for an endpoint of its own.

Reported, from the ``/metrics`` text (sample lines; ``--scrape`` reads it from the status
listener) and the process's RSS (after ``gc.collect()``):
at the start, at baseline (after a warm-up round of ``--warmup`` Ingresses: imports,
caches and allocator arenas settle), at each round's peak, and after each round's
deletions. It passes when the series are back exactly at baseline after every round, and
RSS after the last round is within ``--rss-margin`` MB of baseline; else it exits 1.

Usage: ``python bench/metrics_churn.py [--ingresses 10000] [--rounds 1]``
(``--ingresses 500`` for a quick run).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import trio

from controller.status import serve_status
from fastroute.ingress.build import ConfigBuilder
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Proxy

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
CLIENTS = 16  # concurrent client connections


async def _backend(stream: trio.SocketStream) -> None:
    """Answers every request head it receives with ``RESPONSE``."""
    buffer = b""
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                buffer += data
                heads = buffer.count(b"\r\n\r\n")
                if heads:
                    buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :]
                    await stream.send_all(RESPONSE * heads)
        except trio.BrokenResourceError:
            pass


def _objects(i: int, backend_port: int) -> list[dict[str, Any]]:
    """Ingress ``churn/i{i}`` for host ``i{i}.churn``, its Service and EndpointSlice."""
    name = f"i{i}"
    if i >= 250 * 254:
        raise ValueError(f"at most {250 * 254} Ingresses over all rounds, got {i + 1}")
    dead = f"127.0.{1 + i // 250}.{1 + i % 250}"  # loopback, nothing listens: refused
    return [
        {
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": "churn"},
            "spec": {
                "ingressClassName": "fastroute",
                "rules": [
                    {
                        "host": f"{name}.churn",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": name, "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ],
            },
        },
        {
            "kind": "Service",
            "metadata": {"name": name, "namespace": "churn"},
            "spec": {"ports": [{"port": 80}]},
        },
        {
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": "churn",
                "labels": {"kubernetes.io/service-name": name},
            },
            "ports": [{"port": backend_port}],
            "endpoints": [{"addresses": ["127.0.0.1"]}, {"addresses": [dead]}],
        },
    ]


def rss_mb() -> float:
    """This process's resident set, after a full collection."""
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Point:
    what: str
    series: int
    rss: float
    ingresses: int


class Churn:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.builder = ConfigBuilder()
        self.metrics = Metrics()
        self.proxy = Proxy(self.builder.build(), metrics=self.metrics)
        self.backend_port = 0
        self.proxy_port = 0
        self.status_port = 0
        self.points: list[Point] = []
        self.created = 0  # Ingresses created so far: each round's names are new
        self.requests = 0
        self.answers: dict[int, int] = {}
        self.clients: list[httpx.AsyncClient] = []  # made once: each loads CA files

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, _backend, 0, host="127.0.0.1"))
            self.backend_port = listeners[0].socket.getsockname()[1]
            listeners = await nursery.start(self.proxy.serve, "127.0.0.1", 0)
            self.proxy_port = listeners[0].socket.getsockname()[1]
            self.status_port = await nursery.start(
                lambda task_status: serve_status(
                    "127.0.0.1",
                    0,
                    ready=lambda: self.proxy.ready,
                    metrics_text=self.metrics.text,
                    task_status=task_status,
                )
            )
            self.clients = [httpx.AsyncClient(timeout=30.0, verify=False) for _ in range(CLIENTS)]
            await self.point("start")
            await self.round(self.args.warmup or self.args.ingresses, "warm-up")
            await self.point("baseline")
            for n in range(1, self.args.rounds + 1):
                await self.round(self.args.ingresses, f"round {n}")
            for http in self.clients:
                await http.aclose()
            nursery.cancel_scope.cancel()

    async def round(self, count: int, name: str) -> None:
        """Create ``count`` new Ingresses (names never used before), then delete them."""
        steps = max(1, min(self.args.steps, count))
        first, self.created = self.created, self.created + count
        bounds = [first + count * k // steps for k in range(steps + 1)]
        for lo, hi in itertools.pairwise(bounds):
            for i in range(lo, hi):
                for obj in _objects(i, self.backend_port):
                    self.builder.put(obj)
            await self.proxy.load(self.builder.build())
            await self.traffic(range(lo, hi))
        await self.point(f"{name}: peak")
        for lo, hi in itertools.pairwise(bounds):
            for i in range(lo, hi):
                for obj in _objects(i, self.backend_port):
                    self.builder.delete(obj)
            await self.proxy.load(self.builder.build())
        await self.traffic(range(first, first + 3))  # deleted hosts now: 404, under "-"
        await self.point(f"{name}: deleted")

    async def traffic(self, ingresses: range) -> None:
        """``--requests`` requests to each of ``ingresses``, over CLIENTS connections."""
        todo = [i for i in ingresses for _ in range(self.args.requests)]

        async def client(http: httpx.AsyncClient, share: list[int]) -> None:
            for i in share:
                reply = await http.get(
                    f"http://127.0.0.1:{self.proxy_port}/", headers={"Host": f"i{i}.churn"}
                )
                self.answers[reply.status_code] = self.answers.get(reply.status_code, 0) + 1
                self.requests += 1

        async with trio.open_nursery() as nursery:
            for k, http in enumerate(self.clients):
                nursery.start_soon(client, http, todo[k::CLIENTS])

    async def point(self, what: str) -> None:
        if self.args.scrape:
            url = f"http://127.0.0.1:{self.status_port}/metrics"
            text = (await self.clients[0].get(url)).text
        else:  # what /metrics answers, without the status listener's 10 s answer timeout
            text = (await trio.to_thread.run_sync(self.metrics.text)).decode()
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        config = self.proxy.config
        point = Point(what, series, rss_mb(), len(config.ingresses) if config else 0)
        self.points.append(point)
        print(
            f"{point.what:>20}: {point.series:>7} series  {point.rss:8.1f} MB RSS  "
            f"{point.ingresses:>6} Ingresses  ({self.requests} requests so far)",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingresses", type=int, default=10_000, help="per round")
    parser.add_argument("--rounds", type=int, default=1, help="measured after the warm-up")
    parser.add_argument("--steps", type=int, default=20, help="config swaps to create them")
    parser.add_argument("--requests", type=int, default=1, help="to each Ingress")
    parser.add_argument(
        "--warmup", type=int, default=0, help="Ingresses of the warm-up (default: --ingresses)"
    )
    parser.add_argument("--rss-margin", type=float, default=10.0, metavar="MB")
    parser.add_argument(
        "--scrape",
        action="store_true",
        help="count the series in GET /metrics (at 10,000 Ingresses, rendering them may "
        "take longer than the status listener's 10 s answer timeout on a busy machine)",
    )
    args = parser.parse_args()
    churn = Churn(args)
    started = time.monotonic()
    trio.run(churn.run)
    points = {p.what: p for p in churn.points}
    baseline = points["baseline"]
    last = points[f"round {args.rounds}: deleted"]
    print(f"answers: {dict(sorted(churn.answers.items()))}, {time.monotonic() - started:.0f} s")
    failures = [
        f"{p.what}: {p.series} series, baseline {baseline.series}"
        for p in churn.points
        if p.what.endswith("deleted") and p.series != baseline.series
    ]
    if last.rss > baseline.rss + args.rss_margin:
        failures.append(
            f"RSS after the last round {last.rss:.1f} MB, baseline {baseline.rss:.1f} MB "
            f"+ {args.rss_margin} MB margin"
        )
    peak = max(p.series for p in churn.points)
    print(
        f"series: baseline {baseline.series}, peak {peak}, after deletion {last.series} "
        f"(must equal baseline); RSS: baseline {baseline.rss:.1f} MB, after deletion "
        f"{last.rss:.1f} MB (margin {args.rss_margin} MB)"
    )
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
