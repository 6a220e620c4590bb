"""The proxy end to end: real backends, the real server and real clients, all on 127.0.0.1.

Each test runs one trio event loop holding the backends (``echo.Echo``) and the proxy, and
talks to the proxy with httpx (in a worker thread) or, for malformed requests, with a raw
socket. Every wait is bounded by a deadline; nothing sleeps to wait for a server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio

from fastroute.ingress import build_config
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.server import Limits, Proxy
from tests.echo import Echo
from tests.objects import service, service_at
from tests.polling import DEADLINE
from tests.polling import run_within as run
from tests.sites import closed_port

pytestmark = pytest.mark.e2e


def _objects(ports: dict[str, int]) -> list[dict[str, Any]]:
    """Services a, b (live backends), dead (refuses) and empty (no endpoints), and routes."""
    objects: list[dict[str, Any]] = []
    for name, port in ports.items():
        objects += service_at(port, name)
    objects.append(service("empty"))

    def rule(host: str, path: str, service: str) -> dict[str, Any]:
        return {
            "host": host,
            "http": {
                "paths": [
                    {
                        "path": path,
                        "pathType": "Prefix",
                        "backend": {"service": {"name": service, "port": {"number": 80}}},
                    }
                ]
            },
        }

    objects.append(
        {
            "kind": "Ingress",
            "metadata": {"name": "web"},
            "spec": {
                "ingressClassName": "fastroute",
                "tls": [{"hosts": ["secure.example.com"]}],
                "rules": [
                    rule("a.example.com", "/", "a"),
                    rule("b.example.com", "/", "b"),
                    rule("dead.example.com", "/", "dead"),
                    rule("empty.example.com", "/", "empty"),
                    rule("secure.example.com", "/", "a"),
                ],
            },
        }
    )
    return objects


@dataclass
class Setup:
    proxy: Proxy
    url: str
    port: int
    a: Echo
    b: Echo
    ports: dict[str, int]

    async def get(self, path: str, host: str, **options: Any) -> httpx.Response:
        """A request through the proxy, made by httpx in a worker thread."""

        def call() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                return client.request(
                    options.pop("method", "GET"), self.url + path, headers={"host": host}, **options
                )

        return await trio.to_thread.run_sync(call)

    async def raw(self, data: bytes) -> bytes:
        """Send raw bytes; return everything the proxy answers before closing."""
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            async with stream:
                await stream.send_all(data)
                received = b""
                while chunk := await stream.receive_some(65536):
                    received += chunk
                return received


@asynccontextmanager
async def running(limits: Limits | None = None) -> AsyncIterator[Setup]:
    async with trio.open_nursery() as nursery:
        a, b = Echo("a"), Echo("b")
        ports = {
            "a": await nursery.start(a.serve),
            "b": await nursery.start(b.serve),
            "dead": closed_port(),
        }
        proxy = Proxy(build_config(_objects(ports)), limits=limits)
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        yield Setup(proxy, f"http://127.0.0.1:{port}", port, a, b, ports)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ routing and headers


def test_host_and_path_route_to_the_right_backend_with_forwarded_headers() -> None:
    async def scenario() -> None:
        async with running() as setup:
            for host, backend in [("a.example.com", "a"), ("B.EXAMPLE.COM:8080", "b")]:
                response = await setup.get("/some/path?q=1", host)
                assert response.status_code == 200
                seen = response.json()
                assert seen["backend"] == backend
                assert seen["target"] == "/some/path?q=1"
                headers = dict(seen["headers"])
                assert headers["host"] == host
                assert headers["x-forwarded-for"] == "127.0.0.1"
                assert headers["x-real-ip"] == "127.0.0.1"
                assert headers["x-forwarded-proto"] == "http"
                assert headers["x-forwarded-host"] == host

    run(scenario)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("nowhere.example.com", 404),
        ("empty.example.com", 503),
        ("dead.example.com", 502),
        ("secure.example.com", 308),
    ],
    ids=["no-route", "no-endpoints", "connection-refused", "https-redirect"],
)
def test_what_cannot_be_forwarded_gets_a_clear_status(host: str, status: int) -> None:
    async def scenario() -> None:
        async with running() as setup:
            response = await setup.get("/x?y=1", host)
            assert response.status_code == status
            if status == 308:
                assert response.headers["location"] == "https://secure.example.com/x?y=1"
            else:
                assert response.text.startswith(f"{status} ")
                assert "Traceback" not in response.text

    run(scenario)


# ------------------------------------------------------------------ bodies and connections


def test_request_and_response_bodies_are_streamed_through() -> None:
    async def scenario() -> None:
        async with running() as setup:
            chunks = [b"x" * 65536] * 40  # 2.5 MiB, sent chunked by httpx

            response = await setup.get(
                "/upload", "a.example.com", method="POST", content=iter(chunks)
            )
            assert response.status_code == 200
            assert response.json()["body_length"] == 65536 * 40
            sized = await setup.get("/upload", "a.example.com", method="PUT", content=b"y" * 12345)
            assert sized.json()["body_length"] == 12345

    run(scenario)


def test_upstream_connections_are_kept_alive_and_reused() -> None:
    async def scenario() -> None:
        async with running() as setup:
            for i in range(20):
                assert (await setup.get(f"/n/{i}", "a.example.com")).status_code == 200
            assert setup.a.connections == 1

    run(scenario)


def test_expect_100_continue_is_answered_and_the_body_forwarded() -> None:
    async def scenario() -> None:
        async with running() as setup:
            head = (
                b"POST /e HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            with trio.fail_after(DEADLINE):
                stream = await trio.open_tcp_stream("127.0.0.1", setup.port)
                async with stream:
                    await stream.send_all(head)
                    first = await stream.receive_some(65536)
                    assert first.startswith(b"HTTP/1.1 100 ")
                    await stream.send_all(b"hello")
                    received = b""
                    while chunk := await stream.receive_some(65536):
                        received += chunk
            assert received.startswith(b"HTTP/1.1 200 ")
            assert b'"body_length": 5' in received

    run(scenario)


# ------------------------------------------------------------------ failures


def test_a_backend_dying_mid_response_cuts_that_response_only() -> None:
    async def scenario() -> None:
        async with running() as setup:
            with pytest.raises(httpx.HTTPError):
                await setup.get("/die", "a.example.com")
            assert (await setup.get("/after", "a.example.com")).json()["backend"] == "a"

    run(scenario)


def test_a_slow_upstream_gets_504() -> None:
    async def scenario() -> None:
        async with running(Limits(upstream_timeout=0.2)) as setup:
            response = await setup.get("/slow", "a.example.com")
            assert response.status_code == 504
            setup.a.release.set()

    run(scenario)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a.example.com\r\n"
            b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: a.example.com\r\nX-Big: " + b"z" * 40000 + b"\r\n\r\n", 431),
        (b"GET /%zz HTTP/1.1\r\nHost: a.example.com\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 999999999999\r\n\r\n", 413),
    ],
    ids=[
        "cl-and-te",
        "two-content-lengths",
        "head-too-large",
        "bad-escape",
        "garbage",
        "body-too-large",
    ],
)
def test_malformed_and_smuggling_requests_are_refused(request_bytes: bytes, status: int) -> None:
    async def scenario() -> None:
        async with running() as setup:
            answer = await setup.raw(request_bytes)
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
            assert setup.a.connections == 0  # nothing reached the backend

    run(scenario)


def test_a_slow_request_head_gets_408() -> None:
    async def scenario() -> None:
        async with running(Limits(head_timeout=0.3)) as setup:
            answer = await setup.raw(b"GET / HTTP/1.1\r\nHost: a.exa")
            assert answer.startswith(b"HTTP/1.1 408 ")

    run(scenario)


# ------------------------------------------------------------------ config swaps


def test_a_config_swap_lets_a_streaming_response_finish_on_the_old_config() -> None:
    async def scenario() -> None:
        async with running() as setup:
            first_chunk = trio.Event()
            result: dict[str, Any] = {}

            def stream_it(token: trio.lowlevel.TrioToken) -> None:
                with (
                    httpx.Client(trust_env=False, timeout=DEADLINE) as client,
                    client.stream(
                        "GET", setup.url + "/stream", headers={"host": "a.example.com"}
                    ) as response,
                ):
                    body = b""
                    for chunk in response.iter_bytes():
                        if not body:
                            trio.from_thread.run_sync(first_chunk.set, trio_token=token)
                        body += chunk
                    result["body"] = body
                    result["status"] = response.status_code

            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    trio.to_thread.run_sync, stream_it, trio.lowlevel.current_trio_token()
                )
                with trio.fail_after(DEADLINE):
                    await first_chunk.wait()
                setup.proxy.swap(build_config([]))  # a config without any route
                setup.a.release.set()
            assert result == {"status": 200, "body": b"first\nlast\n"}
            assert (await setup.get("/", "a.example.com")).status_code == 404

    run(scenario)


def test_not_ready_until_a_config_is_loaded() -> None:
    async def scenario() -> None:
        proxy = Proxy(None)
        assert not proxy.ready
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"

            def call() -> int:
                with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                    return client.get(url, headers={"host": "a.example.com"}).status_code

            assert await trio.to_thread.run_sync(call) == 503
            proxy.swap(_empty_config())
            assert proxy.ready
            assert await trio.to_thread.run_sync(call) == 404
            nursery.cancel_scope.cancel()

    run(scenario)


def _empty_config() -> RouteConfig:
    return build_config([])


# ------------------------------------------------------------------ framing


def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    async def scenario() -> None:
        async with running() as setup:
            one = b"GET /first HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
            two = b"GET /second HTTP/1.1\r\nHost: b.example.com\r\nConnection: close\r\n\r\n"
            answer = await setup.raw(one + two)
            assert answer.count(b"HTTP/1.1 200 ") == 2
            split = answer.index(b"HTTP/1.1 200 ", 1)
            first, second = answer[:split], answer[split:]
            assert b'"backend": "a"' in first
            assert b'"/first"' in first
            assert b'"backend": "b"' in second
            assert b'"/second"' in second

    run(scenario)


def test_a_chunked_request_body_reaches_the_backend_whole() -> None:
    async def scenario() -> None:
        async with running() as setup:
            body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
            answer = await setup.raw(
                b"POST /upload HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + body
            )
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b'"body_length": 11' in answer

    run(scenario)


def test_malformed_chunked_body_is_refused_with_400() -> None:
    async def scenario() -> None:
        async with running() as setup:
            answer = await setup.raw(
                b"POST / HTTP/1.1\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\nhello\n0\n\n"  # bare LF framing: a classic smuggling vector
            )
            assert answer.startswith(b"HTTP/1.1 400 ")

    run(scenario)


def test_an_http10_client_gets_a_chunked_response_decoded_and_closed() -> None:
    async def scenario() -> None:
        async with running() as setup:
            setup.a.release.set()  # /stream sends both chunks at once
            answer = await setup.raw(b"GET /stream HTTP/1.0\r\nHost: a.example.com\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"transfer-encoding" not in head.lower()
            assert b"connection: close" in head.lower()
            assert body == b"first\nlast\n"

    run(scenario)


def test_head_requests_get_no_body_and_keep_the_connection() -> None:
    async def scenario() -> None:
        async with running() as setup:
            answer = await setup.raw(
                b"HEAD / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
                b"GET /after HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n"
            )
            first, _, rest = answer.partition(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 200 ")
            assert b"content-length" in first.lower()
            assert rest.startswith(b"HTTP/1.1 200 ")  # no body bytes in between
            assert b'"/after"' in rest

    run(scenario)


# ------------------------------------------------------------------ draining


def test_drain_finishes_requests_in_flight_and_takes_no_new_ones() -> None:
    async def scenario() -> None:
        async with running() as setup:
            result: dict[str, Any] = {}

            async def slow_request() -> None:
                result["slow"] = (await setup.get("/slow", "a.example.com")).status_code

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_request)
                idle = await trio.open_tcp_stream("127.0.0.1", setup.port)  # keep-alive, idle
                with trio.fail_after(DEADLINE):
                    while setup.a.connections == 0:  # the slow request reached the backend
                        await trio.sleep(0.01)

                async def drain() -> None:
                    with trio.fail_after(DEADLINE):
                        await setup.proxy.drain(DEADLINE)
                    result["drained"] = True

                nursery.start_soon(drain)
                with trio.fail_after(DEADLINE):
                    assert await idle.receive_some(1) == b""  # the idle one is closed at once
                assert not setup.proxy.ready
                with pytest.raises(OSError, match="connect"):
                    await trio.open_tcp_stream("127.0.0.1", setup.port)
                assert "drained" not in result  # still waiting for the slow request
                setup.a.release.set()
            assert result == {"slow": 200, "drained": True}

    run(scenario)
