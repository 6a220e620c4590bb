"""One reload pipeline: manifest files and the Kubernetes API reload the same way.

Every test runs twice, once per source: a real controller serving manifest files it
watches, and a real controller following the API emulator (``tests/kubeapi``). The test
changes what the source holds (an atomic rewrite of the manifest file, or creates,
updates and deletes through the emulator) and watches what a user sees: traffic through
the proxy to a real echo backend, ``/readyz``, and the reload metrics on ``/metrics``.

A build is broken on purpose by an annotation on the Ingress (``test/breaks-builds``): while the
source holds it, the builder raises (as a bug in it would), whichever source fed it. Each
step changes one object, so each step is one change to either source.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import yaml

from controller.app import Controller, Listening, Options
from controller.pipeline import Built, Pipeline
from controller.reload_metrics import ReloadMetrics
from fastroute.ingress import ConfigBuilder, RouteConfig, build_config
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Proxy
from tests.kubeapi import KubeAPI
from tests.polling import DEADLINE, wait_for
from tests.sites import site_objects
from tests.test_kube_source import (
    Reply,
    backends,
    fetch,
    plain_kubeconfig,
    readyz,
    running,
    served_by,
)
from tests.test_status import value

pytest_plugins = ["tests.kubeapi.fixtures"]
pytestmark = pytest.mark.e2e

SOURCES = ["manifests", "kubernetes"]
BREAKS_BUILDS = "test/breaks-builds"

Objects = list[dict[str, Any]]


def objects(port: int, path: str, *, broken: bool = False) -> Objects:
    """The site routing ``path`` to the backend on ``port``; ``broken``: its Ingress
    breaks builds."""
    found = []
    for obj in site_objects(port, path):
        metadata = {**obj["metadata"], "namespace": "default"}
        if broken and obj["kind"] == "Ingress":
            metadata["annotations"] = {BREAKS_BUILDS: "yes"}
        found.append({**obj, "metadata": metadata})
    return found


@pytest.fixture(autouse=True)
def builds_break_on_the_marked_service(monkeypatch: pytest.MonkeyPatch) -> None:
    real_put = ConfigBuilder.put

    def put(builder: ConfigBuilder, obj: Mapping[str, Any]) -> None:
        if BREAKS_BUILDS in (obj.get("metadata") or {}).get("annotations", {}):
            raise RuntimeError("a build that breaks")
        real_put(builder, obj)

    monkeypatch.setattr(ConfigBuilder, "put", put)


# -- a controller on either source ------------------------------------------------------


@dataclass
class Serving:
    """A running controller, and how to make its source hold other objects."""

    controller: Controller
    listening: Listening
    show: Callable[[Objects], Awaitable[None]]

    async def answer(self, path: str) -> Reply:
        return await fetch(self.listening.http_port, path)

    async def readyz(self) -> int:
        return await readyz(self.listening.status_port)

    async def metrics(self) -> Scraped:
        port = self.listening.status_port

        def scrape() -> str:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                return client.get(f"http://127.0.0.1:{port}/metrics").text

        text = await trio.to_thread.run_sync(scrape)
        return Scraped(
            success=value(text, "fastroute_config_reloads_total", result="success") or 0.0,
            failure=value(text, "fastroute_config_reloads_total", result="failure") or 0.0,
            last_successful=value(text, "fastroute_config_last_reload_successful"),
            ready=value(text, "fastroute_ready"),
        )


@dataclass(frozen=True)
class Scraped:
    """The reload and readiness metrics as ``/metrics`` shows them."""

    success: float
    failure: float
    last_successful: float | None
    ready: float | None


@asynccontextmanager
async def serving(
    source: str, initial: Objects, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Serving]:
    """A controller on ``source`` (``manifests`` or ``kubernetes``) holding ``initial``,
    its listeners open (ready or not)."""
    if source == "manifests":
        async with _on_manifests(initial, tmp_path) as running_controller:
            yield running_controller
    else:
        api: KubeAPI = request.getfixturevalue("kubeapi")
        async with _on_the_api(api, initial, tmp_path) as running_controller:
            yield running_controller


@asynccontextmanager
async def _on_manifests(initial: Objects, tmp_path: Path) -> AsyncIterator[Serving]:
    folder = tmp_path / "manifests"
    folder.mkdir()
    staging = tmp_path / "staging.yaml"

    def write(objs: Objects) -> None:
        # as editors save: a new file renamed over the old one, so no build reads half
        staging.write_text(yaml.safe_dump_all(objs))
        os.replace(staging, folder / "site.yaml")

    write(initial)
    options = Options(
        manifests=[folder], bind="127.0.0.1", http_port=0, https_port=0, status_port=0
    )
    controller = Controller(options)
    async with trio.open_nursery() as nursery:
        listening = await nursery.start(controller.run)

        async def show(objs: Objects) -> None:
            await trio.to_thread.run_sync(write, objs)

        yield Serving(controller, listening, show)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _on_the_api(api: KubeAPI, initial: Objects, tmp_path: Path) -> AsyncIterator[Serving]:
    shown: dict[tuple[str, str], dict[str, Any]] = {}

    def apply(objs: Objects) -> None:
        for obj in objs:  # only what changed: one change per object changed
            key = (obj["kind"], obj["metadata"]["name"])
            if shown.get(key) != obj:
                api.apply(obj)
                shown[key] = obj

    apply(initial)
    kubeconfig = plain_kubeconfig(api, tmp_path)

    async def show(objs: Objects) -> None:
        await trio.to_thread.run_sync(apply, objs)

    async with running(kubeconfig, {}, ready=False) as run:
        yield Serving(run.controller, run.listening, show)


async def until_metrics(site: Serving, check: Callable[[Scraped], bool], what: str) -> Scraped:
    """Poll ``/metrics`` until ``check`` holds; what it showed then."""
    seen: list[Scraped] = []

    async def holds() -> bool:
        seen.append(await site.metrics())
        return check(seen[-1])

    await wait_for(holds, what)
    return seen[-1]


# -- the tests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What a user sees after one step: which reload counters moved, the gauges, the probe."""

    moved: tuple[str, ...]
    last_successful: float | None
    ready: float | None
    readyz: int


def _moved(before: Scraped, after: Scraped) -> tuple[str, ...]:
    return tuple(
        result
        for result, was, now in (
            ("success", before.success, after.success),
            ("failure", before.failure, after.failure),
        )
        if now != was
    )


@pytest.mark.parametrize("source", SOURCES)
def test_readiness_failures_and_recoveries_move_the_same_way_for_both_sources(
    source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Start with a source whose build breaks, mend it, break it again, mend it, drain:
    the same traffic, probes and reload metrics at every step, whichever the source."""
    seen: list[Seen] = []

    async def scenario() -> None:
        async with backends("a") as ports:
            port = ports["a"]
            async with serving(
                source, objects(port, "/one", broken=True), request, tmp_path
            ) as site:
                zero = Scraped(0.0, 0.0, None, None)

                async def step(before: Scraped, result: str, what: str) -> Scraped:
                    after = await until_metrics(
                        site, lambda m: getattr(m, result) > getattr(before, result), what
                    )
                    seen.append(
                        Seen(
                            _moved(before, after),
                            after.last_successful,
                            after.ready,
                            await site.readyz(),
                        )
                    )
                    return after

                # never a good build yet: not ready, nothing served
                metrics = await step(zero, "failure", "the first build fails")
                assert (await site.answer("/one/x")).status == 503

                # mended: ready only now, and serving
                await site.show(objects(port, "/one"))
                await served_by(site.listening.http_port, "a", "/one/x")
                metrics = await step(metrics, "success", "the mended build is installed")

                # broken again: the last good config keeps serving, and the failure counts
                await site.show(objects(port, "/two", broken=True))
                metrics = await step(metrics, "failure", "the broken build is counted")
                assert await site.answer("/one/x") == Reply(200, "a")
                assert (await site.answer("/two/x")).status == 404

                # mended again
                await site.show(objects(port, "/two"))
                await served_by(site.listening.http_port, "a", "/two/x")
                metrics = await step(metrics, "success", "the new route is installed")

                with trio.fail_after(DEADLINE):
                    await site.controller.drain(0.0)
                now = await site.metrics()
                seen.append(
                    Seen(_moved(metrics, now), now.last_successful, now.ready, await site.readyz())
                )

    trio.run(scenario)
    assert seen == [
        Seen(("failure",), last_successful=0.0, ready=0.0, readyz=503),
        Seen(("success",), last_successful=1.0, ready=1.0, readyz=200),
        Seen(("failure",), last_successful=0.0, ready=1.0, readyz=200),
        Seen(("success",), last_successful=1.0, ready=1.0, readyz=200),
        Seen((), last_successful=1.0, ready=0.0, readyz=503),
    ]


@pytest.mark.parametrize("source", SOURCES)
def test_a_burst_of_changes_reloads_a_few_times_and_the_last_state_wins(
    source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with backends("a") as ports:
            port = ports["a"]
            async with serving(source, objects(port, "/v0"), request, tmp_path) as site:
                await served_by(site.listening.http_port, "a", "/v0/x")
                before = await until_metrics(site, lambda m: m.success >= 1, "the first load")
                for version in range(1, 31):
                    await site.show(objects(port, f"/v{version}"))
                await served_by(site.listening.http_port, "a", "/v30/x")
                assert (await site.answer("/v29/x")).status == 404
                after = await site.metrics()
                reloads = after.success - before.success
                assert 1 <= reloads <= 10, f"{reloads} reloads for 30 changes"
                assert after.failure == before.failure

    trio.run(scenario)


@pytest.mark.parametrize("source", SOURCES)
def test_reloads_asked_for_at_once_share_one_build(
    source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Twenty SIGHUPs at once (``Controller.reload``, what SIGHUP calls) cost one build,
    not twenty, and each returns once a build that started after it is in."""

    async def scenario() -> None:
        async with backends("a") as ports:
            port = ports["a"]
            async with serving(source, objects(port, "/v0"), request, tmp_path) as site:
                await served_by(site.listening.http_port, "a", "/v0/x")
                before = await until_metrics(site, lambda m: m.success >= 1, "the first load")
                installed: list[bool] = []

                async def sighup() -> None:
                    installed.append(await site.controller.reload())

                with trio.fail_after(DEADLINE):
                    async with trio.open_nursery() as nursery:
                        for _ in range(20):
                            nursery.start_soon(sighup)
                after = await site.metrics()
                assert installed == [True] * 20
                assert 1 <= after.success - before.success <= 2
                assert await site.answer("/v0/x") == Reply(200, "a")

    trio.run(scenario)


class Scripted:
    """A source whose builds the test holds back: each reads ``objects`` when it starts,
    then waits for ``gate`` (when there is one)."""

    ready = True

    def __init__(self, objs: Objects) -> None:
        self.objects = objs
        self.gate: trio.Event | None = None
        self.building = trio.Event()  # set when a build waits at the gate
        self.builds: list[str] = []  # the path each build read

    async def watch(self, changed: Callable[[], None]) -> None:
        await trio.sleep_forever()

    async def build(self, current: RouteConfig | None) -> Built:
        objs = self.objects
        self.builds.append(objs[-1]["spec"]["rules"][0]["http"]["paths"][0]["path"])
        if self.gate is not None:
            self.building.set()
            await self.gate.wait()
        return Built(build_config(objs), objs)


def test_a_reload_asked_for_during_a_build_gets_a_build_of_its_own_that_reads_later_state() -> None:
    """A SIGHUP that arrives while a build runs is not lost in it: it returns once a
    build that started after it is in, so what the files said at the SIGHUP is served
    when it returns; the SIGHUPs that arrived during that one build share one more."""

    async def scenario() -> None:
        async with backends("a") as ports:
            port = ports["a"]
            metrics = Metrics()
            proxy = Proxy(None, metrics=metrics)
            pipeline = Pipeline(proxy, ReloadMetrics(metrics.registry))
            source = Scripted(objects(port, "/v0"))
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
                http_port = listeners[0].socket.getsockname()[1]
                await nursery.start(pipeline.follow, source)
                assert await fetch(http_port, "/v0/x") == Reply(200, "a")

                installed: dict[str, bool] = {}

                async def sighup(name: str) -> None:
                    installed[name] = await pipeline.reload()

                source.gate = trio.Event()
                source.objects = objects(port, "/v1")
                with trio.fail_after(DEADLINE):
                    async with trio.open_nursery() as sighups:
                        sighups.start_soon(sighup, "first")
                        await source.building.wait()  # the first reload's build read /v1
                        source.objects = objects(port, "/v2")
                        sighups.start_soon(sighup, "second")
                        sighups.start_soon(sighup, "third")
                        await trio.testing.wait_all_tasks_blocked()
                        source.gate.set()
                assert await fetch(http_port, "/v2/x") == Reply(200, "a")  # no waiting
                assert installed == {"first": True, "second": True, "third": True}
                assert source.builds == ["/v0", "/v1", "/v2"]
                assert pipeline.reloads == 3
                nursery.cancel_scope.cancel()

    trio.run(scenario)
