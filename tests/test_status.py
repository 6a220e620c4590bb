"""The status listener (/healthz, /readyz, /metrics) and the metrics the proxy and controller keep.

Real listeners on 127.0.0.1 (the status listener, the proxy, an ``echo.Echo`` backend),
real clients (httpx in a worker thread, a raw socket for malformed requests), and
/metrics read back with prometheus_client's own parser. Every wait polls with a deadline.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controller.app import Controller, Options
from controller.reload_metrics import ReloadMetrics
from controller.status import serve_status
from fastroute.ingress import build_config
from fastroute.proxy.metrics import DURATION_BUCKETS, Metrics
from fastroute.proxy.server import Proxy
from tests.echo import Echo
from tests.polling import DEADLINE, wait_for
from tests.sites import closed_port, site_objects

SITE = "default/site"
WEB = "default/web:80"


def _get(port: int, path: str, host: str = "site.example.com") -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
        return client.get(f"http://127.0.0.1:{port}{path}", headers={"host": host})


async def get(port: int, path: str, host: str = "site.example.com") -> httpx.Response:
    return await trio.to_thread.run_sync(partial(_get, port, path, host))


async def head(port: int, path: str) -> httpx.Response:
    def call() -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
            return client.head(f"http://127.0.0.1:{port}{path}")

    return await trio.to_thread.run_sync(call)


async def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the server answers until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        answer = b""
        with trio.fail_after(DEADLINE):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    return answer


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as {(sample name, labels): value}, read with prometheus_client's parser."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


# ------------------------------------------------------------------- the listener


@pytest.mark.e2e
def test_the_status_listener_answers_probes_and_scrapes() -> None:
    async def scenario() -> None:
        ready = False
        metrics = Metrics()
        ReloadMetrics(metrics.registry).config_reload(True)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_status, ready=lambda: ready, metrics_text=metrics.text),
                "127.0.0.1",
                0,
            )
            healthz = await get(port, "/healthz")
            assert (healthz.status_code, healthz.text) == (200, "ok\n")
            assert (await get(port, "/readyz")).status_code == 503
            ready = True
            assert (await get(port, "/readyz")).status_code == 200
            assert (await get(port, "/readyz?verbose=1")).status_code == 200

            scrape = await get(port, "/metrics")
            assert scrape.status_code == 200
            assert scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert value(scrape.text, "fastroute_config_reloads_total", result="success") == 1
            assert value(scrape.text, "fastroute_config_reloads_total", result="failure") == 0

            probe = await head(port, "/healthz")
            assert (probe.status_code, probe.content) == (200, b"")
            assert probe.headers["content-length"] == "3"

            assert (await get(port, "/")).status_code == 404
            assert (await get(port, "/healthz/extra")).status_code == 404
            refused = await raw(
                port, b"POST /readyz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
            )
            assert refused.startswith(b"HTTP/1.1 405 ")
            assert b"allow: GET, HEAD" in refused
            assert (await raw(port, b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n")).startswith(
                b"HTTP/1.1 400 "
            )
            assert (await raw(port, b"\x16\x03\x01 not http\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
            # after all that, still alive
            assert (await get(port, "/healthz")).status_code == 200
            nursery.cancel_scope.cancel()

    trio.run(scenario)


@pytest.mark.e2e
def test_readyz_is_503_until_the_proxy_has_a_config() -> None:
    async def scenario() -> None:
        metrics = Metrics()
        proxy = Proxy(None, metrics=metrics)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_status, ready=lambda: proxy.ready, metrics_text=metrics.text),
                "127.0.0.1",
                0,
            )
            assert (await get(port, "/healthz")).status_code == 200  # alive, not ready
            assert (await get(port, "/readyz")).status_code == 503
            proxy.swap(build_config(site_objects(closed_port())))
            assert (await get(port, "/readyz")).status_code == 200
            nursery.cancel_scope.cancel()

    trio.run(scenario)


# ------------------------------------------------------------------- the proxy's metrics


@pytest.mark.e2e
def test_metrics_count_proxied_requests_by_ingress_service_and_status() -> None:
    async def scenario() -> None:
        metrics = Metrics()
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            proxy = Proxy(build_config(site_objects(backend_port)), metrics=metrics)
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            http = listeners[0].socket.getsockname()[1]
            status = await nursery.start(
                partial(serve_status, ready=lambda: proxy.ready, metrics_text=metrics.text),
                "127.0.0.1",
                0,
            )
            for _ in range(3):
                assert (await get(http, "/page")).status_code == 200
            assert (await get(http, "/", host="nowhere.example")).status_code == 404

            text = (await get(status, "/metrics")).text
            assert (
                value(text, "fastroute_requests_total", ingress=SITE, service=WEB, status="200")
                == 3
            )
            assert (
                value(text, "fastroute_requests_total", ingress="-", service="-", status="404") == 1
            )
            duration = "fastroute_request_duration_seconds"
            assert value(text, f"{duration}_count", ingress=SITE, service=WEB) == 3
            assert value(text, f"{duration}_bucket", ingress=SITE, service=WEB, le="+Inf") == 3
            buckets = {
                float(labels["le"])
                for (name, frozen), _ in samples(text).items()
                if name == f"{duration}_bucket"
                for labels in [dict(frozen)]
                if labels["le"] != "+Inf"
            }
            assert buckets == set(DURATION_BUCKETS)
            # a loopback echo answers well within a second
            assert value(text, f"{duration}_bucket", ingress=SITE, service=WEB, le="1.0") == 3
            nursery.cancel_scope.cancel()

    trio.run(scenario)


@pytest.mark.e2e
def test_metrics_count_upstream_errors_of_a_refused_endpoint() -> None:
    async def scenario() -> None:
        metrics = Metrics()
        dead = closed_port()
        async with trio.open_nursery() as nursery:
            proxy = Proxy(build_config(site_objects(dead)), metrics=metrics)
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            http = listeners[0].socket.getsockname()[1]
            status = await nursery.start(
                partial(serve_status, ready=lambda: proxy.ready, metrics_text=metrics.text),
                "127.0.0.1",
                0,
            )
            assert (await get(http, "/page")).status_code == 502

            text = (await get(status, "/metrics")).text
            errors = value(
                text,
                "fastroute_upstream_errors_total",
                service=WEB,
                endpoint=f"127.0.0.1:{dead}",
                reason="connect",
            )
            assert errors is not None
            assert errors >= 1
            assert (
                value(text, "fastroute_requests_total", ingress=SITE, service=WEB, status="502")
                == 1
            )
            nursery.cancel_scope.cancel()

    trio.run(scenario)


# ------------------------------------------------------------------- the controller


@pytest.mark.parametrize("ok", [True, False])
def test_a_reload_sets_the_last_reload_gauges(ok: bool) -> None:
    metrics = Metrics()
    ReloadMetrics(metrics.registry).config_reload(ok)
    text = metrics.text().decode()
    assert value(text, "fastroute_config_last_reload_successful") == (1 if ok else 0)
    stamp = value(text, "fastroute_config_last_reload_successful_timestamp_seconds")
    assert (stamp is not None and stamp > 0) is ok


@pytest.mark.e2e
def test_the_controller_serves_status_and_counts_reloads_and_failed_ones(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            manifest = tmp_path / "site.yaml"
            manifest.write_text(yaml.safe_dump_all(site_objects(backend_port, "/old")))
            controller = Controller(
                Options(
                    manifests=[tmp_path],
                    bind="127.0.0.1",
                    http_port=0,
                    https_port=0,
                    status_port=0,
                )
            )
            listening = await nursery.start(controller.run)
            assert listening.status_port is not None
            status, http = listening.status_port, listening.http_port
            assert (await get(status, "/healthz")).status_code == 200
            assert (await get(status, "/readyz")).status_code == 200

            async def reloads(result: str) -> float | None:
                text = (await get(status, "/metrics")).text
                return value(text, "fastroute_config_reloads_total", result=result)

            async def at_least(result: str, count: int) -> bool:
                # one save can reach the watch as several events: count reloads, not saves
                found = await reloads(result)
                return found is not None and found >= count

            assert await reloads("success") == 1
            assert await reloads("failure") == 0

            manifest.write_text("kind: Ingress\nspec: [broken\n")  # a reload that fails
            await wait_for(
                partial(at_least, "failure", 1), "a failed reload counted", interval=0.05
            )
            text = (await get(status, "/metrics")).text
            assert value(text, "fastroute_config_last_reload_successful") == 0
            assert (await get(http, "/old/x")).status_code == 200  # the last good config serves
            assert (await get(status, "/readyz")).status_code == 200

            manifest.write_text(yaml.safe_dump_all(site_objects(backend_port, "/new")))
            await wait_for(partial(at_least, "success", 2), "two reloads counted", interval=0.05)
            text = (await get(status, "/metrics")).text
            assert value(text, "fastroute_config_last_reload_successful") == 1
            assert (
                value(text, "fastroute_requests_total", ingress=SITE, service=WEB, status="200")
                == 1
            )

            with trio.fail_after(DEADLINE):
                await controller.drain(1.0)  # nothing in flight: returns at once
            assert (await get(status, "/readyz")).status_code == 503
            assert (await get(status, "/healthz")).status_code == 200
            nursery.cancel_scope.cancel()

    trio.run(scenario)
