"""Metrics stay bounded: series follow the configuration, never the clients.

Served end to end: the proxy on 127.0.0.1, its status listener's ``/metrics`` scraped
with httpx, configurations swapped as the controller swaps them.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from controller.status import serve_status
from fastroute.ingress.build import ConfigBuilder, build_config
from fastroute.ingress.in_use import departed, in_use_of
from fastroute.ingress.model import Backend, Endpoint, InUse
from fastroute.proxy.balancer import Balancer
from fastroute.proxy.metrics import NO_ROUTE, OTHER, Metrics
from fastroute.proxy.server import Proxy
from tests.cli import run_controller
from tests.raw import DEADLINE, BackendConnection, RawBackend, Request, response, wait_for
from tests.sites import closed_port

Labels = dict[str, str]


def ingress(
    name: str,
    host: str,
    service: str,
    *,
    created: str = "",
    annotations: dict[str, str] | None = None,
    default: str | None = None,
) -> dict[str, Any]:
    """Ingress ``default/name`` routing ``host``'s ``/`` to Service ``service``."""
    backend = {"service": {"name": service, "port": {"number": 80}}}
    metadata: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    if created:
        metadata["creationTimestamp"] = created
    spec: dict[str, Any] = {
        "ingressClassName": "fastroute",
        "rules": [
            {
                "host": host,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
        ],
    }
    if default is not None:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    return {"kind": "Ingress", "metadata": metadata, "spec": spec}


def service(name: str, *ports: int) -> list[dict[str, Any]]:
    """Service ``default/name`` with one endpoint on 127.0.0.1 per port in ``ports``."""
    return [
        {"kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}},
        *(
            {
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-{port}",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "ports": [{"port": port}],
                "endpoints": [{"addresses": ["127.0.0.1"]}],
            }
            for port in ports
        ),
    ]


@dataclass
class Served:
    proxy: Proxy
    metrics: Metrics
    port: int
    status_port: int
    backend_port: int

    async def get(self, host: str, path: str = "/") -> int:
        async with httpx.AsyncClient(timeout=DEADLINE) as client:
            reply = await client.get(f"http://127.0.0.1:{self.port}{path}", headers={"Host": host})
            return reply.status_code

    async def series(self, name: str) -> list[Labels]:
        """The label sets of ``name``'s samples in ``/metrics`` (histograms: of ``_count``)."""
        async with httpx.AsyncClient(timeout=DEADLINE) as client:
            text = (await client.get(f"http://127.0.0.1:{self.status_port}/metrics")).text
        found = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (f"{name}_total", f"{name}_count"):
                    found.append(dict(sample.labels))
        return found

    async def ingress_labels(self) -> set[str]:
        return {labels["ingress"] for labels in await self.series("fastroute_requests")}


@asynccontextmanager
async def serving(
    objects: Callable[[int], list[dict[str, Any]]],
    metrics: Metrics | None = None,
    backend: RawBackend | None = None,
) -> AsyncIterator[Served]:
    """The proxy serving ``objects(backend_port)``, and its status listener."""
    metrics = metrics or Metrics()
    with trio.fail_after(DEADLINE * 3):
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start((backend or RawBackend()).serve)
            proxy = Proxy(build_config(objects(backend_port)), metrics=metrics)
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            status_port = await nursery.start(
                lambda task_status: serve_status(
                    "127.0.0.1",
                    0,
                    ready=lambda: proxy.ready,
                    metrics_text=metrics.text,
                    task_status=task_status,
                )
            )
            yield Served(
                proxy, metrics, listeners[0].socket.getsockname()[1], status_port, backend_port
            )
            nursery.cancel_scope.cancel()


def three_sites(port: int) -> list[dict[str, Any]]:
    return [
        *(ingress(name, f"{name}.example.com", f"web-{name}") for name in ("a", "b", "c")),
        *(object for name in ("a", "b", "c") for object in service(f"web-{name}", port)),
    ]


def only_site_a(port: int) -> list[dict[str, Any]]:
    return [ingress("a", "a.example.com", "web-a"), *service("web-a", port)]


# ------------------------------------------------------------------ removal on a swap


@pytest.mark.e2e
def test_series_of_deleted_ingresses_leave_metrics_and_the_others_keep_counting() -> None:
    async def scenario() -> None:
        async with serving(three_sites) as site:
            for name in ("a", "b", "c", "a"):
                assert await site.get(f"{name}.example.com") == 200
            assert await site.ingress_labels() == {"default/a", "default/b", "default/c"}
            durations = await site.series("fastroute_request_duration_seconds")
            assert {d["ingress"] for d in durations} == {"default/a", "default/b", "default/c"}

            await site.proxy.load(build_config(only_site_a(site.backend_port)))

            assert await site.ingress_labels() == {"default/a"}
            durations = await site.series("fastroute_request_duration_seconds")
            assert [d["ingress"] for d in durations] == ["default/a"]
            assert await site.get("a.example.com") == 200
            text = site.metrics.text().decode()
            assert (
                'fastroute_requests_total{ingress="default/a",service="default/web-a:80",'
                'status="200"} 3.0' in text
            )

    trio.run(scenario)


@pytest.mark.e2e
def test_one_builder_fed_changes_removes_the_series_of_what_it_deleted() -> None:
    builder = ConfigBuilder()

    async def scenario() -> None:
        async with serving(three_sites) as site:
            for obj in three_sites(site.backend_port):
                builder.put(obj)
            await site.proxy.load(builder.build())
            for name in ("a", "b", "c"):
                assert await site.get(f"{name}.example.com") == 200
            for obj in three_sites(site.backend_port):
                if obj["metadata"]["name"].startswith(("b", "web-b")):
                    builder.delete(obj)
            config = builder.build()
            assert config.in_use is not None
            assert config.in_use.departures is not None  # what left, as the builder saw it
            await site.proxy.load(config)
            assert await site.ingress_labels() == {"default/a", "default/c"}
            services = {s["service"] for s in await site.series("fastroute_requests")}
            assert services == {"default/web-a:80", "default/web-c:80"}

    trio.run(scenario)


@pytest.mark.e2e
def test_an_ingress_that_comes_back_starts_its_series_over() -> None:
    async def scenario() -> None:
        async with serving(three_sites) as site:
            assert await site.get("b.example.com") == 200
            await site.proxy.load(build_config(only_site_a(site.backend_port)))
            await site.proxy.load(build_config(three_sites(site.backend_port)))
            assert await site.get("b.example.com") == 200
            text = site.metrics.text().decode()
            assert (
                'fastroute_requests_total{ingress="default/b",service="default/web-b:80",'
                'status="200"} 1.0' in text
            )

    trio.run(scenario)


@pytest.mark.e2e
def test_a_service_an_ingress_no_longer_routes_to_loses_its_series() -> None:
    def moved(port: int) -> list[dict[str, Any]]:
        return [ingress("a", "a.example.com", "web-new"), *service("web-new", port)]

    async def scenario() -> None:
        async with serving(only_site_a) as site:
            assert await site.get("a.example.com") == 200
            await site.proxy.load(build_config(moved(site.backend_port)))
            assert await site.get("a.example.com") == 200
            services = {s["service"] for s in await site.series("fastroute_requests")}
            assert services == {"default/web-new:80"}

    trio.run(scenario)


@pytest.mark.e2e
def test_an_endpoint_that_left_loses_its_upstream_error_series() -> None:
    dead = closed_port()

    def failing(port: int) -> list[dict[str, Any]]:
        return [ingress("a", "a.example.com", "web-a"), *service("web-a", dead)]

    async def scenario() -> None:
        async with serving(failing) as site:
            assert await site.get("a.example.com") == 502
            errors = await site.series("fastroute_upstream_errors")
            assert {e["endpoint"] for e in errors} == {f"127.0.0.1:{dead}"}

            await site.proxy.load(build_config(only_site_a(site.backend_port)))

            assert await site.series("fastroute_upstream_errors") == []
            assert await site.get("a.example.com") == 200

    trio.run(scenario)


@pytest.mark.e2e
def test_a_request_that_ends_after_its_ingress_left_brings_no_series_back() -> None:
    release = trio.Event()

    async def slow(connection: BackendConnection, request: Request) -> None:
        if request.target == b"/slow":
            await release.wait()
        await connection.send(response(b"late"))

    backend = RawBackend(slow)

    async def scenario() -> None:
        async with serving(three_sites, backend=backend) as site:
            assert await site.get("b.example.com") == 200
            async with trio.open_nursery() as nursery:
                statuses: list[int] = []

                async def slow_request() -> None:
                    statuses.append(await site.get("b.example.com", "/slow"))

                nursery.start_soon(slow_request)
                await wait_for(
                    lambda: any(r.target == b"/slow" for r in backend.requests),
                    "the slow request upstream",
                )
                await site.proxy.load(build_config(only_site_a(site.backend_port)))
                release.set()
            assert statuses == [200]
            series = await site.series("fastroute_requests")
            assert sorted((s["ingress"], s["service"]) for s in series) == [(OTHER, OTHER)]
            assert f'ingress="{OTHER}",service="{OTHER}",status="200"}} 1.0' in (
                site.metrics.text().decode()
            )

    trio.run(scenario)


@pytest.mark.e2e
def test_nothing_is_removed_when_the_same_configuration_comes_again() -> None:
    async def scenario() -> None:
        async with serving(three_sites) as site:
            for name in ("a", "b", "c"):
                assert await site.get(f"{name}.example.com") == 200
            before = await site.series("fastroute_requests")
            await site.proxy.load(build_config(three_sites(site.backend_port)))
            assert await site.series("fastroute_requests") == before

    trio.run(scenario)


# ------------------------------------------------------------------ label values


@pytest.mark.e2e
def test_unknown_hosts_and_paths_share_one_label_value() -> None:
    def with_a_path(port: int) -> list[dict[str, Any]]:
        objects = only_site_a(port)
        objects[0]["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/app"
        return objects

    async def scenario() -> None:
        rng = random.Random(13)
        async with serving(with_a_path) as site:
            for i in range(30):
                host = f"h{rng.getrandbits(40):x}.example.com"
                assert await site.get(host, f"/p{i}") == 404
                assert await site.get("a.example.com", f"/other{i}") == 404
            assert await site.get("a.example.com", "/app/x") == 200
            series = await site.series("fastroute_requests")
            assert sorted((s["ingress"], s["service"], s["status"]) for s in series) == [
                (NO_ROUTE, NO_ROUTE, "404"),
                ("default/a", "default/web-a:80", "200"),
            ]

    trio.run(scenario)


@pytest.mark.e2e
def test_unknown_hosts_sent_to_the_default_backend_are_counted_under_its_ingress() -> None:
    def catch_all(port: int) -> list[dict[str, Any]]:
        return [
            ingress("a", "a.example.com", "web-a", default="fallback"),
            *service("web-a", port),
            *service("fallback", port),
        ]

    async def scenario() -> None:
        async with serving(catch_all) as site:
            for i in range(20):
                assert await site.get(f"unknown{i}.example.com", f"/x{i}") == 200
            series = await site.series("fastroute_requests")
            assert [(s["ingress"], s["service"]) for s in series] == [
                ("default/a", "default/fallback:80")
            ]

    trio.run(scenario)


# ------------------------------------------------------------------ the cap


@pytest.mark.e2e
def test_only_the_oldest_ingresses_have_series_of_their_own_under_a_cap() -> None:
    def dated(port: int) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = []
        for day, name in enumerate(("a", "b", "c"), start=1):
            created = f"2026-01-0{day}T00:00:00Z"
            objects += [ingress(name, f"{name}.example.com", f"web-{name}", created=created)]
            objects += service(f"web-{name}", port)
        return objects

    async def scenario() -> None:
        async with serving(dated, Metrics(max_ingresses=1)) as site:
            for name in ("a", "b", "c", "c"):
                assert await site.get(f"{name}.example.com") == 200
            series = await site.series("fastroute_requests")
            assert sorted((s["ingress"], s["service"]) for s in series) == [
                (OTHER, OTHER),
                ("default/a", "default/web-a:80"),
            ]
            assert f'ingress="{OTHER}",service="{OTHER}",status="200"}} 3.0' in (
                site.metrics.text().decode()
            )
            # the oldest one leaves: the next oldest gets series of its own
            await site.proxy.load(build_config(dated(site.backend_port)[2:]))
            assert await site.get("b.example.com") == 200
            assert await site.ingress_labels() == {OTHER, "default/b"}

    trio.run(scenario)


@pytest.mark.e2e
def test_per_ingress_detail_off_folds_every_ingress_into_one_label() -> None:
    async def scenario() -> None:
        async with serving(three_sites, Metrics(max_ingresses=0)) as site:
            for name in ("a", "b", "c"):
                assert await site.get(f"{name}.example.com") == 200
            assert await site.get("unknown.example.com") == 404
            assert await site.ingress_labels() == {OTHER, NO_ROUTE}

    trio.run(scenario)


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_ingresses must be 0 or more"):
        Metrics(max_ingresses=-1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--metrics-max-ingresses", "-1"], "must be 0 or more, got '-1'"),
        (["--metrics-per-ingress=maybe"], "not true or false: 'maybe'"),
        (
            ["--metrics-per-ingress=false", "--metrics-max-ingresses", "5"],
            "with --metrics-per-ingress=false none does",
        ),
    ],
)
@pytest.mark.e2e
def test_the_metrics_flags_name_what_is_wrong(arguments: list[str], message: str) -> None:
    result = run_controller("--manifests", ".", *arguments)
    assert result.returncode == 2
    assert message in result.stderr


# ------------------------------------------------------------------ per-endpoint state


def test_the_balancer_forgets_the_health_and_turns_of_what_left() -> None:
    gone, kept = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    backend = Backend("ns", "web", 80, endpoints=(gone, kept))
    balancer = Balancer()
    balancer.failed(gone, now=0.0, reason="refused")
    balancer.failed(kept, now=0.0, reason="refused")
    balancer.attempts(backend, now=0.0)
    balancer.forget([gone], ["ns/web:80"])
    assert not balancer.is_down(gone, 0.5)  # one that comes back starts healthy
    assert balancer.is_down(kept, 0.5)
    assert "ns/web:80" not in repr(balancer)


# ------------------------------------------------------------------ what a config uses


def _objects(ops: list[tuple[str, int, int]]) -> list[tuple[bool, dict[str, Any]]]:
    """Puts (True) and deletes (False) of Ingresses and Services drawn by hypothesis."""
    changes: list[tuple[bool, dict[str, Any]]] = []
    for op, i, j in ops:
        if op == "ingress":
            annotations = {"nginx.ingress.kubernetes.io/default-backend": f"svc{j % 3}"}
            changes.append(
                (True, ingress(f"i{i}", f"h{i % 3}.com", f"svc{j}", annotations=annotations))
            )
        elif op == "catch-all":
            changes.append((True, ingress(f"i{i}", f"h{i}.com", f"svc{j}", default=f"svc{i}")))
        elif op == "service":
            for obj in service(f"svc{i}", 8000 + j):
                changes.append((True, obj))
        elif op == "delete-ingress":
            changes.append((False, ingress(f"i{i}", "", "")))
        else:
            changes.extend((False, obj) for obj in service(f"svc{i}", 8000 + j))
    return changes


OPS = st.lists(
    st.tuples(
        st.sampled_from(["ingress", "catch-all", "service", "delete-ingress", "delete-service"]),
        st.integers(0, 4),
        st.integers(0, 4),
    ),
    max_size=25,
)


def _sets(in_use: InUse) -> tuple[frozenset[Any], ...]:
    return in_use.ingresses, in_use.backends, in_use.endpoints


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(1, 5))
def test_what_the_builder_counts_as_used_is_what_its_routes_use(
    ops: list[tuple[str, int, int]], every: int
) -> None:
    builder = ConfigBuilder()
    before = in_use_of(builder.build())
    for n, (put, obj) in enumerate(_objects(ops)):
        (builder.put if put else builder.delete)(obj)
        if n % every == 0 or n == len(ops) - 1:
            config = builder.build()
            after = in_use_of(config)
            assert _sets(after) == _sets(in_use_of(replace(config, in_use=None)))
            # what the builder says left is what a comparison of the sets finds
            gone = departed(before, after)
            assert (gone.ingresses, gone.backends, gone.endpoints) == tuple(
                old - new for old, new in zip(_sets(before), _sets(after), strict=True)
            )
            before = after


# ------------------------------------------------------------------ worker processes

MULTIPROCESS_SCRIPT = """
import warnings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from fastroute.ingress.model import Departures, InUse
from fastroute.proxy.metrics import Metrics

warnings.simplefilter("error")  # a warning per removed series would fail here
metrics = Metrics()
first = InUse(frozenset({"ns/a", "ns/b"}), frozenset({"ns/web:80"}), serial=1)
metrics.configure(("ns/a", "ns/b"), first)
metrics.request("ns/b", "ns/web:80", 200, 0.01)
second = InUse(frozenset({"ns/a"}), frozenset({"ns/web:80"}), serial=2)
removed = metrics.configure(("ns/a",), second, Departures(1, frozenset({"ns/b"})))
registry = CollectorRegistry()
MultiProcessCollector(registry)
text = generate_latest(registry).decode()
print(removed, 'ingress="ns/b"' in text)
"""


@pytest.mark.e2e
def test_with_worker_processes_a_removed_series_stays_in_the_files_without_warnings(
    tmp_path: Any,
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    # removed from the worker's memory, kept by prometheus_client's files (README)
    assert result.stdout.split() == ["2", "True"]


def test_a_snapshot_with_an_object_given_twice_keeps_its_regex_paths_and_what_it_uses() -> None:
    regex = ingress(
        "a",
        "a.example.com",
        "web-a",
        annotations={"nginx.ingress.kubernetes.io/use-regex": "true"},
    )
    regex["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/v[0-9]+/api"
    objects = [regex, *service("web-a", 8080), *service("web-a", 8080)]
    config = build_config(objects)
    assert any("given more than once" in str(problem) for problem in config.problems)
    found = config.match("a.example.com", "/v2/api")
    assert found is not None
    assert found.backend.name == "default/web-a:80"
    assert config.in_use is not None
    assert config.in_use.backends == {"default/web-a:80"}
