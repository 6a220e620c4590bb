"""A plain route's request on a kept upstream connection goes the short way through the
proxy: in its connection's task (``Forwarder.forward_plain``), or, once the connection's
requests went that way, from the plain loop (``fastroute.proxy.plain_loop``). A first
request, or an annotated route's, goes the general way (``Forwarder.forward``). Each
awkward answer here is sent all three ways, and the client must see the same; the kept
connection's own failures are retried as ingress-nginx retries them, either short way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from fastroute.ingress import build_config
from fastroute.proxy.server import Limits, Proxy
from tests.objects import endpoint_slice, ingress, service
from tests.polling import run_within as run
from tests.polling import wait_for
from tests.raw import BackendConnection, RawBackend, RawClient, Reply, Request, response

pytestmark = pytest.mark.e2e

HOST = b"site.example.com"
WARM = b"/warm"  # answered plainly: it leaves the upstream connection in the pool
# a warm-up for the path under test: answered plainly, and its plan is kept for that path
WARM_UP = b"X-Warm-Up: yes"
# the request under test on a new upstream connection, on a kept one from its connection's
# task, or on a kept one from the plain loop
WAYS = ["new", "kept", "loop"]
KEPT = ["kept", "loop"]


def _objects(*ports: int) -> list[dict[str, Any]]:
    """Service web with one endpoint per port, and a plain Ingress routing to it."""
    slices = [endpoint_slice("web", port, name=f"web-{i}") for i, port in enumerate(ports)]
    return [service("web"), *slices, ingress("site")]


def get(path: bytes = b"/x", method: bytes = b"GET", *fields: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: " + HOST, *fields, b"", b""]
    return b"\r\n".join(lines)


def warm(request: Request) -> bool:
    """Whether ``request`` is a warm-up, to be answered plainly."""
    return request.target == WARM or bool(request.header(b"x-warm-up"))


@dataclass
class Site:
    port: int
    backends: list[RawBackend]
    proxy: Proxy

    async def ask(self, way: str, path: bytes = b"/x", method: bytes = b"GET") -> Reply:
        """The reply to ``path``. For "kept", warm-up requests for it go first on the
        same client connection, one per endpoint, so its plan is kept and an idle upstream
        connection to each endpoint waits; they carry a body, which takes them the
        general way, so the request under test is the first to go the short way, in the
        connection's task. For "loop", two per endpoint without a body: the connection's
        requests went the short way, and the plain loop carries it when the request
        under test comes."""
        client = await RawClient.connect(self.port)
        try:
            if way == "kept":
                body = b"Content-Length: 1"
                warm_ups = [get(path, b"POST", WARM_UP, body) + b"x"] * len(self.backends)
            else:
                warm_ups = [get(path, b"GET", WARM_UP)] * (2 * len(self.backends))
            for warm_up in warm_ups if way != "new" else []:
                await client.send(warm_up)
                warmed = await client.reply()
                assert warmed is not None
                assert (warmed.status, warmed.body) == (200, b"warm")
            loop = self.proxy.plain_loop
            assert loop is not None
            began = loop.requests
            await client.send(get(path, method))
            reply = await client.reply(method)
            # the loop took the request under test on its way only
            assert (loop.requests > began) == (way == "loop")
        finally:
            await client.aclose()
        assert reply is not None, "the proxy closed without an answer"
        return reply


@asynccontextmanager
async def serving(*backends: RawBackend, limits: Limits | None = None) -> AsyncIterator[Site]:
    async with trio.open_nursery() as nursery:
        ports = [await nursery.start(backend.serve) for backend in backends]
        proxy = Proxy(build_config(_objects(*ports)), limits=limits)
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Site(listeners[0].socket.getsockname()[1], list(backends), proxy)
        nursery.cancel_scope.cancel()


def backend_answering(answer_x: bytes | list[bytes], *, close: bool = False) -> RawBackend:
    """A backend that answers the warm-up plainly and ``/x`` with ``answer_x`` (a list:
    written in pieces, the scheduler running between them), then closes if ``close``."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        if warm(request):
            await connection.send(response(b"warm"))
            return
        for piece in [answer_x] if isinstance(answer_x, bytes) else answer_x:
            await connection.send(piece)
            await trio.lowlevel.checkpoint()
        if close:
            await connection.stream.aclose()

    return RawBackend(answer)


def _connection_of(backend: RawBackend, target: bytes) -> BackendConnection:
    (found,) = [
        c
        for c in backend.connections
        if any(r.target == target and not warm(r) for r in c.requests)
    ]
    return found


# ------------------------------------------------------------------ the same both ways


@pytest.mark.parametrize("way", WAYS)
def test_a_switch_of_protocols_nobody_asked_for_is_a_502_either_way(way: str) -> None:
    backend = backend_answering(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")

    async def scenario() -> None:
        async with serving(backend) as site:
            assert (await site.ask(way)).status == 502
            await wait_for(_connection_of(backend, b"/x").closed.is_set, "the upstream closed")

    run(scenario)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    "answer",
    [
        [b"HTTP/1.1 100 Continue\r\n\r\n", response(b"done")],  # an interim answer first
        [b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 4\r\n\r\n", b"done"],  # in pieces
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndone\r\n0\r\n\r\n"],
    ],
    ids=["interim", "pieces", "chunked"],
)
def test_an_answer_that_is_not_whole_in_one_read_arrives_whole_either_way(
    way: str, answer: list[bytes]
) -> None:
    """And the upstream connection, left clean, is kept: the next request reuses it."""
    backend = backend_answering(answer)

    async def scenario() -> None:
        async with serving(backend) as site:
            reply = await site.ask(way)
            assert (reply.status, reply.body) == (200, b"done")
            assert (await site.ask("new", WARM)).body == b"warm"
            assert len(backend.connections) == 1

    run(scenario)


@pytest.mark.parametrize("way", WAYS)
def test_a_large_body_arrives_whole_either_way(way: str) -> None:
    body = bytes(range(256)) * 1200  # 300 KiB: many reads
    backend = backend_answering(response(body))

    async def scenario() -> None:
        async with serving(backend) as site:
            reply = await site.ask(way)
            assert (reply.status, reply.body) == (200, body)
            assert len(backend.connections) == 1

    run(scenario)


@pytest.mark.parametrize("way", WAYS)
def test_a_head_answer_has_no_body_and_leaves_the_connection_usable_either_way(way: str) -> None:
    backend = backend_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")

    async def scenario() -> None:
        async with serving(backend) as site:
            reply = await site.ask(way, method=b"HEAD")
            assert (reply.status, reply.body, reply.header(b"content-length")) == (200, b"", b"4")
            assert (await site.ask("new", WARM)).body == b"warm"
            assert len(backend.connections) == 1

    run(scenario)


@pytest.mark.parametrize("way", WAYS)
def test_bytes_after_the_answer_never_reach_the_next_client_either_way(way: str) -> None:
    """The upstream connection that sent more than its answer is closed, not kept."""
    backend = backend_answering(response(b"done") + response(b"extra"))

    async def scenario() -> None:
        async with serving(backend) as site:
            assert (await site.ask(way)).body == b"done"
            await wait_for(_connection_of(backend, b"/x").closed.is_set, "the upstream closed")
            assert (await site.ask("new", WARM)).body == b"warm"

    run(scenario)


@pytest.mark.parametrize("way", WAYS)
def test_an_answer_ended_by_a_close_arrives_whole_either_way(way: str) -> None:
    backend = backend_answering(b"HTTP/1.0 200 OK\r\n\r\ndone", close=True)

    async def scenario() -> None:
        async with serving(backend) as site:
            reply = await site.ask(way)
            assert (reply.status, reply.body) == (200, b"done")

    run(scenario)


# ------------------------------------------------------------------ a kept connection's failures


def _failing_once(failure: bytes | None) -> RawBackend:
    """A backend whose first connection fails on ``/x`` (``failure`` sent, then a close;
    None: closed without a word); a new connection answers it."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        if request.target == b"/x" and not warm(request) and connection.index == 0:
            if failure is not None:
                await connection.send(failure)
            await connection.stream.aclose()
            return
        await connection.send(response(b"warm" if warm(request) else b"fresh"))

    return RawBackend(answer)


@pytest.mark.parametrize("way", KEPT)
@pytest.mark.parametrize(
    "failure", [None, b"SPAM 200 nonsense\r\n\r\n"], ids=["closed", "invalid-head"]
)
def test_a_kept_connection_that_fails_before_its_answer_is_retried_on_a_new_one(
    failure: bytes | None, way: str
) -> None:
    """As nginx does for a kept connection: the upstream may have closed it while idle,
    which says nothing of the endpoint, and an idempotent request may go again."""
    backend = _failing_once(failure)

    async def scenario() -> None:
        async with serving(backend) as site:
            reply = await site.ask(way)
            assert (reply.status, reply.body) == (200, b"fresh")
            warm_ups = 2 if way == "loop" else 1
            assert [len(c.requests) for c in backend.connections] == [warm_ups + 1, 1]

    run(scenario)


def _never_answering_x() -> RawBackend:
    async def answer(connection: BackendConnection, request: Request) -> None:
        if warm(request):
            await connection.send(response(b"warm"))
            return
        while await connection.stream.receive_some(1024):  # until the proxy gives up
            pass

    return RawBackend(answer)


@pytest.mark.parametrize("way", KEPT)
def test_a_kept_connection_whose_answer_is_late_sends_the_request_to_the_next_endpoint(
    way: str,
) -> None:
    """ingress-nginx's default proxy-next-upstream ("error timeout") on a plain route."""
    slow, good = _never_answering_x(), backend_answering(response(b"done"))

    async def scenario() -> None:
        async with serving(slow, good, limits=Limits(upstream_timeout=1.0)) as site:
            # the round robin takes turns: one of the two requests asks the slow one first
            for _ in range(2):
                started = trio.current_time()
                reply = await site.ask(way)
                assert (reply.status, reply.body) == (200, b"done")
                assert trio.current_time() - started < 2.5
            assert len([r for r in slow.requests if not warm(r)]) == 1
            assert len([r for r in good.requests if not warm(r)]) == 2
            await wait_for(_connection_of(slow, b"/x").closed.is_set, "the slow one closed")

    run(scenario)


@pytest.mark.parametrize("way", KEPT)
def test_a_kept_connection_whose_answer_is_late_is_a_504_with_one_endpoint(way: str) -> None:
    slow = _never_answering_x()

    async def scenario() -> None:
        async with serving(slow, limits=Limits(upstream_timeout=1.0)) as site:
            assert (await site.ask(way)).status == 504
            await wait_for(_connection_of(slow, b"/x").closed.is_set, "the upstream closed")

    run(scenario)


@pytest.mark.parametrize("way", KEPT)
def test_a_post_is_not_sent_again_when_its_kept_connection_fails(way: str) -> None:
    """The upstream may have acted on it (RFC 9110 §9.2.2): the client gets the 502."""
    backend = _failing_once(None)

    async def scenario() -> None:
        async with serving(backend) as site:
            assert (await site.ask(way, method=b"POST")).status == 502
            assert [len(c.requests) for c in backend.connections] == [3 if way == "loop" else 2]

    run(scenario)
