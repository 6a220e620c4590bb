"""Body limits, upstream timeouts and retry rules set per route by Ingress annotations.

Each test builds its Ingresses from plain objects, serves them with the real proxy on
127.0.0.1 in front of real backends (``raw.RawBackend``), and checks what a client sees
(status, how long it waited, which backend answered) and what each backend received. The
cases follow ingress-nginx's e2e tests (test/e2e/annotations/proxy.go) and the nginx
directives those annotations set: client_max_body_size, proxy_*_timeout and
proxy_next_upstream*.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from fastroute.ingress import build_config
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.server import Limits, Proxy
from tests.objects import endpoint_slice
from tests.objects import service as service_object
from tests.polling import DEADLINE
from tests.raw import (
    BackendConnection,
    RawBackend,
    RawClient,
    Reply,
    Request,
    response,
    unanswered_port,
)
from tests.sites import closed_port

pytestmark = pytest.mark.e2e

HOST = b"site.example.com"
PREFIX = "nginx.ingress.kubernetes.io/"
Obj = dict[str, Any]


# ------------------------------------------------------------------ objects and serving


def service(name: str, *ports: int) -> list[Obj]:
    """Service ``name`` with one endpoint on 127.0.0.1 per port (one EndpointSlice each)."""
    slices = (endpoint_slice(name, port, name=f"{name}-{i}") for i, port in enumerate(ports))
    return [service_object(name), *slices]


def ingress(name: str, paths: dict[str, str], **annotations: str) -> Obj:
    """Ingress ``name`` routing site.example.com's Prefix paths to Services; annotations
    are given without their prefix, ``_`` standing for ``-``."""
    rule_paths = [
        {
            "path": path,
            "pathType": "Prefix",
            "backend": {"service": {"name": svc, "port": {"number": 80}}},
        }
        for path, svc in paths.items()
    ]
    metadata: Obj = {"name": name}
    if annotations:
        metadata["annotations"] = {
            PREFIX + key.replace("_", "-"): value for key, value in annotations.items()
        }
    return {
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {
            "ingressClassName": "fastroute",
            "rules": [{"host": HOST.decode(), "http": {"paths": rule_paths}}],
        },
    }


@dataclass
class Served:
    """The proxy serving some objects: where it listens and what it built."""

    port: int
    config: RouteConfig

    async def ask(self, data: bytes, method: bytes = b"GET") -> Reply:
        """One request on a new connection; its reply, which must come."""
        client = await RawClient.connect(self.port)
        try:
            await client.send(data)
            reply = await client.reply(method)
        finally:
            await client.aclose()
        assert reply is not None, "the proxy closed without an answer"
        return reply

    async def status(self, data: bytes, method: bytes = b"GET") -> int:
        return (await self.ask(data, method)).status

    async def timed(self, data: bytes) -> tuple[int, float]:
        """The status of one request and how long its answer took, in seconds."""
        started = trio.current_time()
        status = await self.status(data)
        return status, trio.current_time() - started

    def problems(self, annotation: str) -> list[tuple[str, bool]]:
        """(reason, warning) of every problem about ``annotation`` (without prefix)."""
        where = f"metadata.annotations[{PREFIX}{annotation}]"
        return [(p.reason, p.warning) for p in self.config.problems if p.field == where]


class Stack:
    """Backends and a proxy in one nursery, cancelled together when the test is done."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    async def backend(self, backend: RawBackend) -> int:
        port: int = await self.nursery.start(backend.serve)
        return port

    async def proxy(self, objects: list[Obj], limits: Limits | None = None) -> Served:
        config = build_config(objects)
        proxy = Proxy(config, limits=limits)
        listeners = await self.nursery.start(proxy.serve, "127.0.0.1", 0)
        return Served(listeners[0].socket.getsockname()[1], config)


@asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    async with trio.open_nursery() as nursery:
        yield Stack(nursery)
        nursery.cancel_scope.cancel()


def run(test: Callable[[Stack], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(DEADLINE * 3):
            async with stack() as s:
                await test(s)

    trio.run(bounded)


def get(path: bytes = b"/") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, HOST)


def post(path: bytes, body: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
    return head % (path, HOST, len(body)) + body


def declared(path: bytes, length: int) -> bytes:
    """A POST head declaring a body of ``length`` bytes, none of which is sent."""
    return b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (path, HOST, length)


def chunked_head(path: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % (path, HOST)


def chunks(body: bytes, size: int = 4096) -> list[bytes]:
    """``body`` in chunked framing, one piece per chunk, the last chunk a piece too."""
    pieces = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return [*pieces, b"0\r\n\r\n"]


async def streamed(port: int, head: bytes, pieces: Sequence[bytes]) -> Reply:
    """Send ``head``, then each piece in its own write while reading the answer: a body
    that arrives over time, which the proxy may refuse before it is all sent."""
    client = await RawClient.connect(port)
    reply: Reply | None = None
    try:
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                try:
                    await client.send(head)
                    for piece in pieces:
                        await client.send(piece)
                        await trio.sleep(0)  # each piece its own segment
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # refused mid-body: the proxy stopped reading

            nursery.start_soon(send_all)
            reply = await client.reply(b"POST")
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
    assert reply is not None, "the proxy closed without an answer"
    return reply


def body_bytes(backend: RawBackend) -> int:
    """Request body bytes the backend read in complete requests."""
    return sum(len(r.body) for r in backend.requests)


# ------------------------------------------------------------------ proxy-body-size


def test_a_declared_body_over_the_route_limit_is_refused_before_the_backend() -> None:
    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_body_size="1k")]
        )
        assert await served.status(declared(b"/", 1025), b"POST") == 413
        assert backend.connections == []
        reply = await served.ask(post(b"/", b"x" * 1024), b"POST")
        assert reply.status == 200
        assert [len(r.body) for r in backend.requests] == [1024]

    run(scenario)


@pytest.mark.parametrize("size", [2 * 1024, 40 * 1024, 300 * 1024])
def test_a_chunked_body_over_the_route_limit_is_refused_however_it_is_streamed(size: int) -> None:
    """Chunks in their own writes, within the first 16 KiB the proxy buffers or past
    them (streamed upstream): 413, and nothing over the limit reached the backend."""

    async def scenario(s: Stack) -> None:
        limit = 1024 if size < 16 * 1024 else 32 * 1024
        backend = RawBackend()
        port = await s.backend(backend)
        size_text = "1k" if limit == 1024 else "32k"
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_body_size=size_text)]
        )
        reply = await streamed(served.port, chunked_head(b"/"), chunks(b"x" * size))
        assert reply.status == 413
        assert backend.requests == []  # no complete request was forwarded
        forwarded = sum(len(c.received) for c in backend.connections)
        assert forwarded <= limit + 4096  # the head and the framing of what went

    run(scenario)


def test_a_chunked_body_within_the_route_limit_is_forwarded_whole() -> None:
    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_body_size="64k")]
        )
        body = bytes(range(256)) * 200  # 51200 bytes: past the buffered start
        reply = await streamed(served.port, chunked_head(b"/"), chunks(body))
        assert reply.status == 200
        assert [r.body for r in backend.requests] == [body]

    run(scenario)


def test_zero_means_no_limit_even_over_the_proxy_limit_while_other_routes_keep_it() -> None:
    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        objects = [
            *service("web", port),
            ingress("open", {"/upload": "web"}, proxy_body_size="0"),
            ingress("plain", {"/": "web"}),
        ]
        served = await s.proxy(objects, Limits(max_body_bytes=1024))
        big = b"u" * 100 * 1024
        assert (await served.ask(post(b"/upload", big), b"POST")).status == 200
        reply = await streamed(served.port, chunked_head(b"/upload"), chunks(big))
        assert reply.status == 200
        assert [r.body for r in backend.requests] == [big, big]
        # the route without the annotation keeps the proxy's own limit
        assert await served.status(declared(b"/", 1025), b"POST") == 413
        assert (await streamed(served.port, chunked_head(b"/"), chunks(big))).status == 413
        assert (await served.ask(post(b"/", b"s" * 1024), b"POST")).status == 200
        assert len(backend.requests) == 3

    run(scenario)


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        ("2048", 2048),
        ("2k", 2048),
        ("2K", 2048),
        ("1m", 1024 * 1024),
        ("1M", 1024 * 1024),
        ("1g", 1024**3),
    ],
)
def test_the_limit_reads_nginx_size_units(value: str, limit: int) -> None:
    """At the limit the body is forwarded; one byte over it is refused (declared)."""

    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_body_size=value)],
            Limits(max_body_bytes=1024 * 1024 * 1024 * 4),
        )
        assert served.problems("proxy-body-size") == []
        assert await served.status(declared(b"/", limit + 1), b"POST") == 413
        assert backend.connections == []
        if limit <= 1024 * 1024:  # small enough to send
            assert (await served.ask(post(b"/", b"b" * limit), b"POST")).status == 200
            assert body_bytes(backend) == limit

    run(scenario)


@pytest.mark.parametrize("value", ["15r", "1.5m", "-1", "big", ""])
def test_a_malformed_body_size_falls_back_to_the_default_and_says_why(value: str) -> None:
    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_body_size=value)],
            Limits(max_body_bytes=4096),
        )
        problems = served.problems("proxy-body-size")
        assert len(problems) == 1
        reason, warning = problems[0]
        assert not warning
        assert repr(value) in reason
        # the proxy's limit applies, neither the value's nor none
        assert await served.status(declared(b"/", 4097), b"POST") == 413
        assert (await served.ask(post(b"/", b"d" * 4096), b"POST")).status == 200
        assert body_bytes(backend) == 4096

    run(scenario)


# ------------------------------------------------------------------ accepted, no effect


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("client-body-buffer-size", "1m"),
        ("proxy-request-buffering", "off"),
        ("proxy-buffering", "on"),
        ("proxy-buffer-size", "8k"),
        ("proxy-buffers-number", "4"),
        ("proxy-max-temp-file-size", "1024m"),
    ],
)
def test_buffering_annotations_are_accepted_with_a_warning_and_the_route_serves(
    annotation: str, value: str
) -> None:
    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, **{annotation: value})]
        )
        problems = served.problems(annotation)
        assert len(problems) == 1
        reason, warning = problems[0]
        assert warning, reason
        assert "stream" in reason
        assert served.config.ingresses == ("default/a",)
        body = b"p" * 20 * 1024
        reply = await served.ask(post(b"/", body), b"POST")
        assert reply.status == 200
        assert [r.body for r in backend.requests] == [body]

    run(scenario)


# ------------------------------------------------------------------ timeouts


def answering_after(seconds: float) -> RawBackend:
    """A backend that answers each request ``seconds`` after it arrived."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        await trio.sleep(seconds)
        await connection.send(response(b"late"))

    return RawBackend(answer)


def test_a_read_timeout_shorter_than_the_proxy_one_is_a_504_for_that_route_only() -> None:
    async def scenario(s: Stack) -> None:
        port = await s.backend(answering_after(1.5))
        objects = [
            *service("web", port),
            ingress("quick", {"/quick": "web"}, proxy_read_timeout="1"),
            ingress("patient", {"/": "web"}),
        ]
        served = await s.proxy(objects, Limits(upstream_timeout=30.0))
        results: dict[bytes, tuple[int, float]] = {}

        async def one(path: bytes) -> None:
            results[path] = await served.timed(get(path))

        async with trio.open_nursery() as nursery:  # at once, on the same proxy
            nursery.start_soon(one, b"/quick")
            nursery.start_soon(one, b"/")
        status, took = results[b"/quick"]
        assert status == 504
        assert 0.9 <= took < 1.5
        assert results[b"/"][0] == 200

    run(scenario)


def test_the_watchdog_honours_a_route_timeout_far_below_the_proxy_ones() -> None:
    """A 200 ms read timeout is kept to within a fraction of itself, from the first
    request on, though the proxy's own timeouts are a minute."""

    async def scenario(s: Stack) -> None:
        port = await s.backend(answering_after(2.0))
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_read_timeout="200ms")],
            Limits(head_timeout=60.0, upstream_timeout=60.0),
        )
        for _ in range(3):
            status, took = await served.timed(get())
            assert status == 504
            assert 0.15 <= took < 0.45

    run(scenario)


def test_a_connect_timeout_shorter_than_the_proxy_one_moves_on_to_the_next_endpoint() -> None:
    async def scenario(s: Stack) -> None:
        good = RawBackend()
        good_port = await s.backend(good)
        with unanswered_port() as hung:
            objects = [
                *service("two", hung, good_port),
                *service("hung", hung),
                ingress("a", {"/two": "two", "/hung": "hung"}, proxy_connect_timeout="1"),
            ]
            served = await s.proxy(objects, Limits(connect_timeout=20.0))
            # two endpoints: the request that meets the hung one first waits the route's
            # second for it, then gets the live one's answer
            times = []
            for _ in range(2):
                status, took = await served.timed(get(b"/two"))
                assert status == 200
                times.append(took)
            assert max(times) >= 0.9
            assert max(times) < 2.0
            # the hung endpoint alone: 504 after the route's second, not the proxy's 20
            status, took = await served.timed(get(b"/hung"))
            assert status == 504
            assert 0.9 <= took < 2.0
            assert len(good.requests) == 2

    run(scenario)


def test_a_send_timeout_shorter_than_the_proxy_one_ends_an_upload_nobody_reads() -> None:
    """A backend that accepts and never reads: once the buffers are full, the route's
    send timeout (1 s) ends the upload with a 504, not the proxy's (30 s)."""
    accepted: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    async def silent(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(hold, listeners)

    async def scenario(s: Stack) -> None:
        port: int = await s.nursery.start(silent)
        served = await s.proxy(
            [
                *service("web", port),
                ingress("a", {"/": "web"}, proxy_send_timeout="1", proxy_body_size="0"),
            ],
            Limits(upstream_timeout=30.0, min_body_rate=0),
        )
        size = 256 * 1024 * 1024  # far more than any socket buffers hold
        piece = b"s" * 256 * 1024
        started = trio.current_time()
        reply = await streamed(served.port, declared(b"/", size), [piece] * (size // len(piece)))
        assert reply.status == 504
        assert trio.current_time() - started < 10.0
        assert len(accepted) == 1

    run(scenario)


@pytest.mark.parametrize("value", ["soon", "-5", "0", "1.5"])
def test_a_malformed_timeout_keeps_the_proxy_one_and_says_why(value: str) -> None:
    async def scenario(s: Stack) -> None:
        port = await s.backend(answering_after(1.2))
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_read_timeout=value)],
            Limits(upstream_timeout=30.0),
        )
        problems = served.problems("proxy-read-timeout")
        assert len(problems) == 1
        assert not problems[0][1]
        assert repr(value) in problems[0][0]
        assert await served.status(get()) == 200

    run(scenario)


# ------------------------------------------------------------------ retries


def answering(status: int) -> RawBackend:
    """A backend that answers every request with ``status`` and its own port-free name."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.send(response(b"status %d" % status, status))

    return RawBackend(answer)


def hanging_up() -> RawBackend:
    """A backend that reads each request and closes without an answer."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.stream.aclose()

    return RawBackend(answer)


async def statuses(served: Served, data: bytes, count: int, method: bytes = b"GET") -> list[int]:
    """The statuses of ``count`` requests in turn (each starting at the next endpoint)."""
    return sorted([(await served.ask(data, method)).status for _ in range(count)])


@pytest.mark.parametrize("failing", [502, 503])
def test_with_http_5xx_listed_the_client_gets_the_other_backends_answer(failing: int) -> None:
    async def scenario(s: Stack) -> None:
        bad, good = answering(failing), answering(200)
        ports = [await s.backend(bad), await s.backend(good)]
        served = await s.proxy(
            [
                *service("web", *ports),
                ingress("a", {"/": "web"}, proxy_next_upstream=f"error timeout http_{failing}"),
            ]
        )
        assert await statuses(served, get(), 4) == [200] * 4
        # each request started at the next endpoint: half were asked of the failing one
        assert (len(bad.requests), len(good.requests)) == (2, 4)

    run(scenario)


def test_a_status_not_listed_is_passed_on() -> None:
    async def scenario(s: Stack) -> None:
        bad, good = answering(503), answering(200)
        ports = [await s.backend(bad), await s.backend(good)]
        served = await s.proxy(
            [*service("web", *ports), ingress("a", {"/": "web"}, proxy_next_upstream="http_502")]
        )
        assert await statuses(served, get(), 4) == [200, 200, 503, 503]
        assert (len(bad.requests), len(good.requests)) == (2, 2)

    run(scenario)


def test_with_off_the_client_gets_the_first_failure() -> None:
    async def scenario(s: Stack) -> None:
        bad, good = answering(503), answering(200)
        ports = [await s.backend(bad), await s.backend(good)]
        refused = closed_port()
        objects = [
            *service("answers", *ports),
            *service("refuses", refused, await s.backend(RawBackend())),
            ingress("a", {"/": "answers", "/refuses": "refuses"}, proxy_next_upstream="off"),
        ]
        served = await s.proxy(objects)
        assert await statuses(served, get(), 2) == [200, 503]
        assert (len(bad.requests), len(good.requests)) == (1, 1)
        # a refused connection is not retried either: 502 for the request that met it
        assert await statuses(served, get(b"/refuses"), 2) == [200, 502]

    run(scenario)


def test_a_refused_connection_is_retried_by_default() -> None:
    async def scenario(s: Stack) -> None:
        good = RawBackend()
        ports = [closed_port(), await s.backend(good)]
        served = await s.proxy([*service("web", *ports), ingress("a", {"/": "web"})])
        assert await statuses(served, get(), 2) == [200, 200]
        assert len(good.requests) == 2

    run(scenario)


@pytest.mark.parametrize(("tries", "asked"), [("1", 1), ("2", 2), ("0", 3)])
def test_tries_caps_how_many_endpoints_are_asked(tries: str, asked: int) -> None:
    async def scenario(s: Stack) -> None:
        backends = [answering(503) for _ in range(3)]
        ports = [await s.backend(b) for b in backends]
        served = await s.proxy(
            [
                *service("web", *ports),
                ingress(
                    "a",
                    {"/": "web"},
                    proxy_next_upstream="http_503",
                    proxy_next_upstream_tries=tries,
                ),
            ]
        )
        assert await served.status(get()) == 503
        received = [len(b.requests) for b in backends]
        assert sorted(received) == [0] * (3 - asked) + [1] * asked

    run(scenario)


def test_a_post_answered_with_a_listed_status_is_not_retried() -> None:
    async def scenario(s: Stack) -> None:
        bad, good = answering(503), answering(200)
        ports = [await s.backend(bad), await s.backend(good)]
        served = await s.proxy(
            [*service("web", *ports), ingress("a", {"/": "web"}, proxy_next_upstream="http_503")]
        )
        assert await statuses(served, post(b"/", b"order=1"), 2, b"POST") == [200, 503]
        assert (len(bad.requests), len(good.requests)) == (1, 1)
        # an idempotent method on the same route is retried
        assert await statuses(served, get(), 2) == [200, 200]

    run(scenario)


def test_non_idempotent_lets_a_post_be_retried() -> None:
    async def scenario(s: Stack) -> None:
        bad, good = answering(503), answering(200)
        ports = [await s.backend(bad), await s.backend(good)]
        served = await s.proxy(
            [
                *service("web", *ports),
                ingress("a", {"/": "web"}, proxy_next_upstream="http_503 non_idempotent"),
            ]
        )
        assert await statuses(served, post(b"/", b"order=1"), 2, b"POST") == [200, 200]
        assert (len(bad.requests), len(good.requests)) == (1, 2)
        assert [r.body for r in good.requests] == [b"order=1", b"order=1"]

    run(scenario)


def test_a_post_sent_to_a_backend_that_hung_up_is_not_retried_unless_non_idempotent() -> None:
    async def scenario(s: Stack) -> None:
        broken, good = hanging_up(), RawBackend()
        ports = [await s.backend(broken), await s.backend(good)]
        objects = [
            *service("web", *ports),
            ingress("strict", {"/": "web"}, proxy_next_upstream="error"),
            ingress("lenient", {"/retry": "web"}, proxy_next_upstream="error non_idempotent"),
        ]
        served = await s.proxy(objects)
        assert await statuses(served, post(b"/", b"pay"), 2, b"POST") == [200, 502]
        assert await statuses(served, get(), 2) == [200, 200]
        assert await statuses(served, post(b"/retry", b"pay"), 2, b"POST") == [200, 200]

    run(scenario)


def test_next_upstream_timeout_stops_retrying_once_it_has_passed() -> None:
    """The first endpoint takes 1.2 s to answer 503: within a 1 s budget for all
    tries, that answer is passed on; without the budget the other endpoint is asked."""

    async def scenario(s: Stack) -> None:
        async def slow_503(connection: BackendConnection, request: Request) -> None:
            await trio.sleep(1.2)
            await connection.send(response(b"slow", 503))

        slow, good = RawBackend(slow_503), answering(200)
        ports = [await s.backend(slow), await s.backend(good)]
        objects = [
            *service("web", *ports),
            ingress(
                "budget",
                {"/budget": "web"},
                proxy_next_upstream="http_503",
                proxy_next_upstream_timeout="1",
            ),
            ingress("free", {"/free": "web"}, proxy_next_upstream="http_503"),
        ]
        served = await s.proxy(objects)
        assert await statuses(served, get(b"/budget"), 2) == [200, 503]
        assert await statuses(served, get(b"/free"), 2) == [200, 200]

    run(scenario)


# ------------------------------------------------------------------ one Ingress's mistakes


def test_a_malformed_annotation_on_one_ingress_leaves_another_on_the_same_host_served() -> None:
    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        objects = [
            *service("web", port),
            ingress("broken", {"/a": "web"}, proxy_body_size="lots", proxy_read_timeout="x"),
            ingress("fine", {"/b": "web"}, proxy_body_size="1k"),
        ]
        served = await s.proxy(objects, Limits(max_body_bytes=4096))
        assert set(served.config.ingresses) == {"default/broken", "default/fine"}
        assert [p.name for p in served.config.rejected()] == ["default/broken"] * 2
        assert await served.status(get(b"/a")) == 200
        assert await served.status(get(b"/b")) == 200
        # each keeps its own limit: the proxy's for the malformed one, 1k for the other
        assert (await served.ask(post(b"/a", b"a" * 2048), b"POST")).status == 200
        assert await served.status(declared(b"/b", 2048), b"POST") == 413

    run(scenario)


def test_a_rejected_protection_closes_only_its_own_ingress() -> None:
    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        objects = [
            *service("web", port),
            ingress("limited", {"/a": "web"}, limit_rps="ten"),
            ingress("open", {"/b": "web"}),
        ]
        served = await s.proxy(objects)
        problems = served.problems("limit-rps")
        assert len(problems) == 1
        assert not problems[0][1]
        assert "'ten'" in problems[0][0]
        assert await served.status(get(b"/a")) == 503
        assert await served.status(get(b"/b")) == 200
        assert [r.target for r in backend.requests] == [b"/b"]

    run(scenario)


def test_a_read_timeout_is_retried_on_the_next_endpoint_as_nginx_does_by_default() -> None:
    """ingress-nginx's default proxy-next-upstream is "error timeout": an endpoint that
    sends no response head within the read timeout is given up for the next one."""

    async def scenario(s: Stack) -> None:
        slow, good = answering_after(3.0), answering(200)
        ports = [await s.backend(slow), await s.backend(good)]
        objects = [
            *service("web", *ports),
            ingress("default", {"/": "web"}, proxy_read_timeout="1"),
            ingress(
                "errors", {"/errors": "web"}, proxy_read_timeout="1", proxy_next_upstream="error"
            ),
        ]
        served = await s.proxy(objects, Limits(upstream_timeout=30.0))
        # a POST may have been acted on: it is not sent again, the client gets the 504
        posted = [(await served.ask(post(b"/", b"once"), b"POST")).status for _ in range(2)]
        assert sorted(posted) == [200, 504]
        # without "timeout" in the rules the first endpoint's silence is the answer
        assert await statuses(served, get(b"/errors"), 2) == [200, 504]
        for _ in range(2):
            status, took = await served.timed(get())
            assert status == 200
            assert took < 2.5
        assert (len(slow.requests), len(good.requests)) == (3, 4)

    run(scenario)


def test_an_invalid_response_head_is_retried_under_invalid_header_not_under_error() -> None:
    """nginx tells the two apart: "error" is a connection that failed or closed early,
    "invalid_header" a response that is not HTTP."""

    async def garbage(connection: BackendConnection, request: Request) -> None:
        await connection.send(b"SPAM 200 nonsense\r\n\r\n")

    async def scenario(s: Stack) -> None:
        pairs = [(RawBackend(garbage), answering(200)) for _ in range(2)]
        objects = [
            *service("lenient", *[await s.backend(b) for b in pairs[0]]),
            *service("strict", *[await s.backend(b) for b in pairs[1]]),
            ingress("a", {"/": "lenient"}, proxy_next_upstream="invalid_header"),
            ingress("b", {"/strict": "strict"}, proxy_next_upstream="error"),
        ]
        served = await s.proxy(objects)
        assert await statuses(served, get(), 2) == [200, 200]
        assert await statuses(served, get(b"/strict"), 2) == [200, 502]
        assert [len(b.requests) for b in pairs[0]] == [1, 2]

    run(scenario)


def test_a_route_limit_above_the_proxy_one_is_honoured() -> None:
    """The annotation replaces the proxy's limit for its route, upwards too."""

    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        objects = [
            *service("web", port),
            ingress("big", {"/big": "web"}, proxy_body_size="64k"),
            ingress("plain", {"/": "web"}),
        ]
        served = await s.proxy(objects, Limits(max_body_bytes=1024))
        body = b"b" * 64 * 1024
        assert (await served.ask(post(b"/big", body), b"POST")).status == 200
        assert (await streamed(served.port, chunked_head(b"/big"), chunks(body))).status == 200
        assert await served.status(declared(b"/big", len(body) + 1), b"POST") == 413
        assert await served.status(declared(b"/", 1025), b"POST") == 413
        assert [r.body for r in backend.requests] == [body, body]

    run(scenario)


def test_a_read_timeout_between_two_reads_of_the_body_cuts_the_response_off() -> None:
    """The head came in time, then the body stalls: the route's read timeout (1 s, not
    the proxy's 30 s) closes the connection, and the client sees a truncated response."""

    async def stalling(connection: BackendConnection, request: Request) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf-")
        await trio.sleep(DEADLINE)

    async def scenario(s: Stack) -> None:
        port = await s.backend(RawBackend(stalling))
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_read_timeout="1")],
            Limits(upstream_timeout=30.0),
        )
        client = await RawClient.connect(served.port)
        started = trio.current_time()
        await client.send(get())
        assert await client.reply() is None  # closed before the whole response
        assert 0.9 <= trio.current_time() - started < 2.0
        await client.aclose()

    run(scenario)


def test_a_declared_body_over_the_limit_gets_413_instead_of_100_continue() -> None:
    """A client that waits for 100 Continue learns at once that its upload is too big,
    without sending any of it."""

    async def scenario(s: Stack) -> None:
        backend = RawBackend()
        port = await s.backend(backend)
        served = await s.proxy(
            [*service("web", port), ingress("a", {"/": "web"}, proxy_body_size="1k")]
        )
        client = await RawClient.connect(served.port)
        await client.send(declared(b"/", 2048)[:-2] + b"Expect: 100-continue\r\n\r\n")
        received = b""
        with trio.fail_after(DEADLINE):
            while b"\r\n\r\n" not in received:
                data = await client.stream.receive_some(65536)
                assert data, "closed without an answer"
                received += data
        assert received.startswith(b"HTTP/1.1 413 ")
        assert backend.connections == []
        await client.aclose()

    run(scenario)
