"""The plain loop (``fastroute.proxy.plain_loop``): one task serves the plain requests of
the client connections between requests. What it changes must not show: every answer
reaches its own client in order, counted and logged; requests that are not plain, a new
configuration, timeouts, a drain and the client's close behave as they do in a
connection's own task; a bug costs one connection, not the loop.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from fastroute.ingress import build_config
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.plain_loop import PlainLoop
from fastroute.proxy.server import Proxy
from tests.objects import endpoint_slice, ingress, service
from tests.polling import run_within as run
from tests.polling import wait_for
from tests.raw import BackendConnection, RawBackend, RawClient, Reply, Request, response

pytestmark = pytest.mark.e2e

HOST = b"site.example.com"
CARRIED_AFTER = 2  # requests on a connection before the loop carries it: plan, then task
KEPT = b"/kept"  # a path whose plan the warm-ups had kept: the loop serves it


def get(path: bytes = b"/x", *fields: bytes) -> bytes:
    lines = [b"GET %s HTTP/1.1" % path, b"Host: " + HOST, *fields, b"", b""]
    return b"\r\n".join(lines)


async def echo_id(connection: BackendConnection, request: Request) -> None:
    """Answers with the request's X-Id (and its target), so a reply names its request."""
    (given,) = request.header(b"x-id") or [b"-"]
    await connection.send(response(given + b" " + request.target))


def _objects(port: int, *, cors_on: str = "/cors") -> list[dict[str, Any]]:
    """A plain Ingress for ``/``, and one with CORS (not plain) for ``cors_on``."""
    cors = {"nginx.ingress.kubernetes.io/enable-cors": "true"}
    return [
        service("web"),
        endpoint_slice("web", port),
        ingress("site"),
        ingress("cors", paths=[(cors_on, "Prefix", "web")], annotations=cors),
    ]


@dataclass
class Site:
    port: int
    proxy: Proxy
    backend: RawBackend
    metrics: Metrics

    @property
    def loop(self) -> PlainLoop:
        loop = self.proxy.plain_loop
        assert loop is not None, "the plain loop runs while the proxy serves"
        return loop

    async def carried_client(self) -> RawClient:
        """A client connection whose requests went the short way: the loop carries it."""
        client = await RawClient.connect(self.port)
        for i in range(CARRIED_AFTER):
            await client.send(get(KEPT, b"X-Id: warm%d" % i))
            assert await _ok(client) == b"warm%d /kept" % i
        await wait_for(lambda: len(self.loop) >= 1, "the loop carries the connection")
        return client


async def _ok(client: RawClient) -> bytes:
    reply = await client.reply()
    assert reply is not None, "the proxy closed without an answer"
    assert reply.status == 200, reply
    return reply.body


@asynccontextmanager
async def serving(backend: RawBackend, **settings: Any) -> AsyncIterator[Site]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(backend.serve)
        config = build_config(_objects(port))
        if settings:
            config = dataclasses.replace(
                config, settings=dataclasses.replace(config.settings, **settings)
            )
        metrics = Metrics()
        proxy = Proxy(config, metrics=metrics)
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        await wait_for(lambda: proxy.plain_loop is not None, "the plain loop runs")
        yield Site(listeners[0].socket.getsockname()[1], proxy, backend, metrics)
        nursery.cancel_scope.cancel()


def test_many_connections_each_get_their_own_answers_in_order_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections, each = 40, 6

    async def scenario() -> None:
        async with serving(RawBackend(echo_id)) as site:
            began = site.loop.requests

            async def talk(n: int) -> None:
                client = await RawClient.connect(site.port)
                try:
                    for i in range(each):
                        path = b"/p%d" % (i % 3)
                        await client.send(get(path, b"X-Id: %d-%d" % (n, i)))
                        assert await _ok(client) == b"%d-%d %s" % (n, i, path)
                finally:
                    await client.aclose()

            with caplog.at_level(logging.INFO, logger="fastroute.access"):
                async with trio.open_nursery() as nursery:
                    for n in range(connections):
                        nursery.start_soon(talk, n)
            # each connection's requests after its first two went from the loop
            assert site.loop.requests - began >= connections * (each - CARRIED_AFTER)
            text = site.metrics.text().decode()
            counted = [
                line
                for line in text.splitlines()
                if line.startswith('fastroute_requests_total{ingress="default/site"')
            ]
            assert counted == [
                'fastroute_requests_total{ingress="default/site",service="default/web:80",'
                f'status="200"}} {connections * each:.1f}'
            ]
        logged = [r for r in caplog.records if r.name == "fastroute.access"]
        assert len(logged) == connections * each

    run(scenario)


def test_pipelined_requests_on_a_carried_connection_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with serving(RawBackend(echo_id)) as site:
            client = await site.carried_client()
            await client.send(b"".join(get(KEPT, b"X-Id: %d" % i) for i in range(3)))
            for i in range(3):
                assert await _ok(client) == b"%d /kept" % i
            before = site.loop.requests
            await client.send(get(KEPT, b"X-Id: after"))  # and it goes on, in the loop
            assert await _ok(client) == b"after /kept"
            assert site.loop.requests == before + 1

    run(scenario)


def test_a_request_sent_while_the_last_is_upstream_is_answered_after_it() -> None:
    """The loop sees the second request come while the first is upstream; it reads it
    after the first answer went out, not never."""
    second_sent = trio.Event()
    first_arrived = trio.Event()

    async def answer(connection: BackendConnection, request: Request) -> None:
        if request.header(b"x-id") == [b"1"]:
            first_arrived.set()
            await second_sent.wait()
        await echo_id(connection, request)

    async def scenario() -> None:
        async with serving(RawBackend(answer)) as site:
            client, other = await site.carried_client(), await site.carried_client()
            before = site.loop.requests
            await client.send(get(KEPT, b"X-Id: 1"))
            await first_arrived.wait()
            await client.send(get(KEPT, b"X-Id: 2"))
            # a request and its answer through the loop on another connection: the loop
            # has looked at the second request's arrival by the time that answer is out
            await other.send(get(KEPT, b"X-Id: o"))
            assert await _ok(other) == b"o /kept"
            assert site.loop.requests == before + 2  # the first request, and the other
            second_sent.set()
            assert await _ok(client) == b"1 /kept"
            assert await _ok(client) == b"2 /kept"

    run(scenario)


def test_a_request_that_is_not_plain_goes_its_own_way_and_the_connection_goes_on() -> None:
    """A CORS route's answer carries its fields; plain requests after it are served too."""

    async def scenario() -> None:
        async with serving(RawBackend(echo_id)) as site:
            client = await site.carried_client()
            await client.send(get(b"/cors/a", b"X-Id: c", b"Origin: https://a.example"))
            reply = await client.reply()
            assert reply is not None
            assert (reply.status, reply.body) == (200, b"c /cors/a")
            assert reply.header(b"access-control-allow-origin") == b"*"
            await client.send(get(KEPT, b"X-Id: task"))  # the short way, in its task
            assert await _ok(client) == b"task /kept"
            before = site.loop.requests
            await client.send(get(KEPT, b"X-Id: back"))
            assert await _ok(client) == b"back /kept"
            assert site.loop.requests == before + 1  # carried again

    run(scenario)


def test_a_new_configuration_reaches_the_connections_the_loop_carries() -> None:
    other = RawBackend(echo_id)

    async def scenario() -> None:
        async with serving(RawBackend(echo_id)) as site, trio.open_nursery() as nursery:
            other_port = await nursery.start(other.serve)
            client = await site.carried_client()
            await site.proxy.load(build_config(_objects(other_port)))
            await client.send(get(KEPT, b"X-Id: new"))
            assert await _ok(client) == b"new /kept"
            assert [r.target for r in other.requests] == [KEPT]
            nursery.cancel_scope.cancel()

    run(scenario)


def test_a_carried_connection_idle_past_the_keep_alive_timeout_is_closed() -> None:
    async def scenario() -> None:
        async with serving(RawBackend(echo_id), keep_alive=1.0) as site:
            client = await site.carried_client()
            before = site.loop.requests
            await client.send(get(KEPT, b"X-Id: last"))  # served from the loop
            assert await _ok(client) == b"last /kept"
            assert site.loop.requests == before + 1
            started = trio.current_time()
            assert await client.closed()
            assert 0.9 <= trio.current_time() - started < 4.0
            await wait_for(lambda: len(site.loop) == 0, "the loop let it go")

    run(scenario)


def test_a_drain_closes_the_idle_connections_the_loop_carries() -> None:
    async def scenario() -> None:
        async with serving(RawBackend(echo_id)) as site:
            client = await site.carried_client()
            with trio.fail_after(5):
                await site.proxy.drain(grace=10)
            assert await client.closed()
            assert len(site.loop) == 0

    run(scenario)


def test_a_client_that_closes_while_carried_leaves_the_loop() -> None:
    async def scenario() -> None:
        async with serving(RawBackend(echo_id)) as site:
            client = await site.carried_client()
            await client.aclose()
            await wait_for(lambda: len(site.loop) == 0, "the loop let it go")

    run(scenario)


def test_a_failure_inside_the_loop_costs_its_connection_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with serving(RawBackend(echo_id)) as site:
            forwarder = site.loop.forwarder
            plain_upstream = forwarder.plain_upstream

            def failing(client: Any, head: Any, plan: Any) -> Any:
                if head.header(b"x-boom"):
                    raise RuntimeError("a bug")
                return plain_upstream(client, head, plan)

            doomed, fine = await site.carried_client(), await site.carried_client()
            forwarder.plain_upstream = failing  # type: ignore[method-assign]
            await doomed.send(get(KEPT, b"X-Boom: yes"))
            reply: Reply | None = await doomed.reply()
            assert reply is None  # closed, as a bug in a connection's task closes it
            await fine.send(get(KEPT, b"X-Id: fine"))
            assert await _ok(fine) == b"fine /kept"
            assert any("a bug" in str(r.exc_info) for r in caplog.records if r.exc_info)

    with caplog.at_level(logging.ERROR, logger="fastroute.proxy"):
        run(scenario)
