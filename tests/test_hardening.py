"""The proxy under attack: pool poisoning, path tricks, body limits, slow and vanishing clients,
misbehaving backends. Each test drives the real proxy over real sockets on 127.0.0.1, with a
raw client and a raw backend (``raw.py``), so it sees exactly what the backend received and
what the client was sent.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio

from fastroute.ingress import build_config
from fastroute.proxy import http1
from fastroute.proxy.headers import TrustedProxies
from fastroute.proxy.server import Limits, Proxy
from fastroute.proxy.tls import TLSContexts
from tests.objects import service_at
from tests.polling import DEADLINE, wait_for
from tests.polling import run_within as run
from tests.raw import BackendConnection, RawBackend, RawClient, Request, response, unanswered_port

pytestmark = pytest.mark.e2e

HOST = b"site.example.com"


def _objects(routes: list[tuple[str, str, str, int]]) -> list[dict[str, Any]]:
    """One Service per distinct name (its one endpoint on 127.0.0.1:port) and an Ingress
    routing (host, Prefix path) to it."""
    objects: list[dict[str, Any]] = []
    for name, port in sorted({(name, port) for _, _, name, port in routes}):
        objects += service_at(port, name)
    rules = [
        {
            "host": host,
            "http": {
                "paths": [
                    {
                        "path": path,
                        "pathType": "Prefix",
                        "backend": {"service": {"name": name, "port": {"number": 80}}},
                    }
                ]
            },
        }
        for host, path, name, _ in routes
    ]
    ingress = {"ingressClassName": "fastroute", "tls": [{"hosts": ["secure.example.com"]}]}
    ingress["rules"] = rules
    objects.append({"kind": "Ingress", "metadata": {"name": "site"}, "spec": ingress})
    return objects


@dataclass
class Site:
    proxy: Proxy
    port: int
    backend: RawBackend

    async def client(self) -> RawClient:
        return await RawClient.connect(self.port)

    async def status(self, data: bytes, method: bytes = b"GET") -> int:
        """The status of the answer to one request on a new connection (which must come)."""
        reply = await self.ask(data, method)
        assert reply is not None, "the proxy closed without an answer"
        return reply[0]

    async def ask(self, data: bytes, method: bytes = b"GET") -> tuple[int, bytes] | None:
        """One request on a new connection: the status and body, or None if closed."""
        client = await self.client()
        try:
            await client.send(data)
            reply = await client.reply(method)
            return None if reply is None else (reply.status, reply.body)
        finally:
            await client.aclose()


@asynccontextmanager
async def serving(
    backend: RawBackend | None = None,
    limits: Limits | None = None,
    routes: Callable[[int], list[tuple[str, str, str, int]]] | None = None,
) -> AsyncIterator[Site]:
    """The proxy in front of ``backend``, routing site.example.com/ to it (or ``routes``)."""
    backend = backend or RawBackend()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(backend.serve)
        table = routes(port) if routes else [(HOST.decode(), "/", "web", port)]
        proxy = Proxy(build_config(_objects(table)), limits=limits)
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Site(proxy, listeners[0].socket.getsockname()[1], backend)
        nursery.cancel_scope.cancel()


def get(path: bytes = b"/", host: bytes = HOST, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)


# ------------------------------------------------------------------ pool poisoning


def test_a_late_extra_response_on_an_idle_upstream_connection_never_reaches_another_client() -> (
    None
):
    """A backend that writes a second response later must not answer the next client."""
    release, extra_sent = trio.Event(), trio.Event()

    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.send(response(b"c%d-r%d" % (connection.index, len(connection.requests))))
        if connection.index == 0 and len(connection.requests) == 1:
            await release.wait()
            await connection.send(response(b"EVIL"))
            extra_sent.set()

    async def scenario() -> None:
        async with serving(RawBackend(answer)) as site:
            assert await site.ask(get()) == (200, b"c0-r1")
            release.set()
            await extra_sent.wait()
            # the extra bytes are in the proxy's socket buffer now (loopback delivers at once)
            second = await site.client()
            await second.send(get())
            reply = await second.reply()
            assert reply is not None
            assert (reply.status, reply.body) == (200, b"c1-r1")
            await second.send(get())
            reply = await second.reply()
            assert reply is not None
            assert (reply.status, reply.body) == (200, b"c1-r2")  # and nothing is off by one
            await wait_for(site.backend.connections[0].closed.is_set, "the poisoned one closed")
            await second.aclose()

    run(scenario)


def test_a_body_sent_after_a_head_answer_never_reaches_the_next_client() -> None:
    """HEAD answered, then a body in a separate write: the next GET gets its own answer."""
    release, body_sent = trio.Event(), trio.Event()

    async def answer(connection: BackendConnection, request: Request) -> None:
        if request.method == b"HEAD":
            await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
            await release.wait()
            # the body a HEAD answer must not have, shaped like the next answer
            await connection.send(response(b"EVIL"))
            body_sent.set()
        else:
            await connection.send(response(b"c%d" % connection.index))

    async def scenario() -> None:
        async with serving(RawBackend(answer)) as site:
            head = b"HEAD / HTTP/1.1\r\nHost: site.example.com\r\n\r\n"
            assert await site.ask(head, method=b"HEAD") == (200, b"")
            release.set()
            await body_sent.wait()
            for _ in range(3):
                assert await site.ask(get()) == (200, b"c1")

    run(scenario)


# ------------------------------------------------------------------ paths


def _public_only(port: int) -> list[tuple[str, str, str, int]]:
    return [(HOST.decode(), "/public", "public", port)]


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"/admin/../public", b"/public"),
        (b"/admin/%2e%2e/public", b"/public"),
        (b"/admin/%2E%2e/public/x?q=/../admin", b"/public/x?q=/../admin"),
        (b"/public//./x", b"/public/x"),
    ],
)
def test_the_upstream_receives_the_path_the_route_was_chosen_on(
    target: bytes, forwarded: bytes
) -> None:
    """Only /public is routed: its Service must never see a path that starts /admin."""

    async def scenario() -> None:
        async with serving(routes=_public_only) as site:
            assert await site.ask(get(target)) == (200, b"c0-r0")
            assert [r.target for r in site.backend.requests] == [forwarded]

    run(scenario)


@pytest.mark.parametrize(
    "target", [b"/admin/..%2fpublic", b"/admin%2f..%2fpublic", b"/admin%2F..%2Fpublic"]
)
def test_an_encoded_slash_with_dot_segments_is_refused_before_any_backend(target: bytes) -> None:
    async def scenario() -> None:
        async with serving(routes=_public_only) as site:
            assert await site.status(get(target)) == 400
            assert site.backend.connections == []

    run(scenario)


# ------------------------------------------------------------------ body limits


def _chunked(body: bytes, chunk: int = 4096) -> bytes:
    pieces = [
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk])
        for i in range(0, len(body), chunk)
    ]
    return b"".join(pieces) + b"0\r\n\r\n"


def _post_chunked(body: bytes) -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: site.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + _chunked(body)


async def _body_bytes_received(backend: RawBackend) -> int:
    """Request body bytes that reached the backend, complete requests or not, once the
    proxy has closed every connection to it."""
    for connection in backend.connections:
        await wait_for(connection.closed.is_set, "the proxy's close of the upstream")
    total = 0
    for connection in backend.connections:
        data = bytes(connection.received)
        head_end = data.find(b"\r\n\r\n")
        total += len(data) - (head_end + 4) if head_end >= 0 else 0
    return total


@pytest.mark.parametrize("size", [10 * 1024, 60 * 1024, 200 * 1024])
def test_a_chunked_body_over_the_limit_is_refused_however_it_arrives(size: int) -> None:
    """Sent in the same write as the head: 413, and at most the limit reached the backend."""

    async def scenario() -> None:
        async with serving(limits=Limits(max_body_bytes=1024)) as site:
            assert await site.status(_post_chunked(b"x" * size)) == 413
            assert await _body_bytes_received(site.backend) <= 1024

    run(scenario)


def test_a_large_body_over_the_limit_forwards_at_most_the_limit() -> None:
    """Past the buffered start, a streamed chunked body stops at the limit too."""

    async def scenario() -> None:
        limit = 40 * 1024
        async with serving(limits=Limits(max_body_bytes=limit)) as site:
            assert await site.status(_post_chunked(b"x" * 200 * 1024)) == 413
            # the framing counts too: the data forwarded stays under the limit
            assert await _body_bytes_received(site.backend) <= limit + 1024

    run(scenario)


def test_a_chunk_declaring_more_than_the_limit_is_refused_before_any_of_it_is_sent() -> None:
    async def scenario() -> None:
        async with serving(limits=Limits(max_body_bytes=1024)) as site:
            head = (
                b"POST / HTTP/1.1\r\nHost: site.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            assert await site.status(head + b"100000\r\n" + b"x" * 500) == 413
            assert site.backend.connections == []

    run(scenario)


def test_the_body_limit_holds_for_the_second_request_on_a_keep_alive_connection() -> None:
    async def scenario() -> None:
        async with serving(limits=Limits(max_body_bytes=1024)) as site:
            client = await site.client()
            small = _post_chunked(b"y" * 100)
            await client.send(small + _post_chunked(b"x" * 10 * 1024))
            first = await client.reply(b"POST")
            second = await client.reply(b"POST")
            assert first is not None
            assert second is not None
            assert (first.status, second.status) == (200, 413)
            assert [len(r.body) for r in site.backend.requests] == [100]
            await client.aclose()

    run(scenario)


# ------------------------------------------------------------------ slow and vanishing clients


def test_a_small_body_trickled_in_never_holds_an_upstream_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bodies up to 16 KiB are read whole first; one that stalls gets 408 (minimum rate)."""
    monkeypatch.setattr(http1, "BODY_RATE_GRACE", 0.3)

    async def scenario() -> None:
        async with serving(limits=Limits(min_body_rate=1024)) as site:
            clients = [await site.client() for _ in range(20)]
            head = b"POST / HTTP/1.1\r\nHost: site.example.com\r\nContent-Length: 100\r\n\r\nx"
            for client in clients:
                await client.send(head)
            for client in clients:
                reply = await client.reply(b"POST")
                assert reply is not None
                assert reply.status == 408
                await client.aclose()
            assert site.backend.connections == []

    run(scenario)


def test_a_large_body_trickled_in_is_cut_off_and_its_upstream_connection_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "BODY_RATE_GRACE", 0.3)

    async def scenario() -> None:
        async with serving(limits=Limits(min_body_rate=1024)) as site:
            client = await site.client()
            head = b"POST / HTTP/1.1\r\nHost: site.example.com\r\nContent-Length: 1000000\r\n\r\n"
            await client.send(head + b"x" * 100)
            await wait_for(lambda: len(site.backend.connections) == 1, "the upstream connection")
            with trio.move_on_after(DEADLINE):  # a byte every 0.1 s: far under 1 KiB/s
                while not site.backend.connections[0].closed.is_set():
                    try:
                        await client.send(b"x")
                    except trio.BrokenResourceError:
                        break
                    await trio.sleep(0.1)
            await wait_for(site.backend.connections[0].closed.is_set, "the upstream closed")
            reply = await client.reply(b"POST")
            assert reply is not None
            assert reply.status == 408
            await client.aclose()

    run(scenario)


def _reset(client: RawClient) -> None:
    """Close with an RST, as a client that crashed or gave up does."""
    sock = client.stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_reset_while_their_request_is_upstream_free_their_slots() -> None:
    """Their upstream requests are given up at once, and a normal client is served."""
    given_up: list[int] = []

    async def answer(connection: BackendConnection, request: Request) -> None:
        if request.target == b"/slow":
            # a slow endpoint: it answers nothing, and sees the proxy give the request up
            if await connection.stream.receive_some(1) == b"":
                given_up.append(connection.index)
            return
        await connection.send(response(b"ok"))

    async def scenario() -> None:
        limits = Limits(max_connections=20, upstream_timeout=60.0)
        async with serving(RawBackend(answer), limits=limits) as site:
            clients = [await site.client() for _ in range(20)]
            for client in clients:
                await client.send(get(b"/slow"))
            await wait_for(lambda: len(site.backend.requests) == 20, "20 requests upstream")
            for client in clients:
                _reset(client)
            await wait_for(lambda: len(given_up) == 20, "every upstream request given up", 5.0)
            with trio.fail_after(5):
                assert await site.ask(get(b"/fast")) == (200, b"ok")

    run(scenario)


def test_the_head_timeout_runs_from_the_first_byte_not_from_idle_time() -> None:
    async def scenario() -> None:
        async with serving(limits=Limits(head_timeout=2.0)) as site:
            client = await site.client()
            await client.send(get())
            assert (await client.reply()) is not None
            await trio.sleep(1.6)  # idle on keep-alive, within the idle timeout
            await client.send(b"G")
            await trio.sleep(1.0)  # 2.6 s after the last response, 1 s into the head
            await client.send(get()[1:])
            reply = await client.reply()
            assert reply is not None
            assert reply.status == 200
            await client.aclose()

    run(scenario)


# ------------------------------------------------------------------ slow and misbehaving upstreams


def test_a_connect_timeout_is_a_504_not_a_408_or_a_502() -> None:
    """Connect time is the upstream's: even past the client's head timeout it is a 504."""

    async def scenario() -> None:
        with unanswered_port() as port:
            limits = Limits(head_timeout=0.5, connect_timeout=1.0)
            async with serving(
                limits=limits, routes=lambda _: [(HOST.decode(), "/", "hung", port)]
            ) as site:
                assert await site.status(get()) == 504

    run(scenario)


def test_malformed_chunked_framing_before_anything_was_sent_is_a_502() -> None:
    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")

    async def scenario() -> None:
        async with serving(RawBackend(answer)) as site:
            assert await site.status(get()) == 502

    run(scenario)


def test_a_switch_of_protocols_nobody_asked_for_is_a_502_and_the_upstream_closed() -> None:
    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.send(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
        )

    async def scenario() -> None:
        async with serving(RawBackend(answer)) as site:
            assert await site.status(get()) == 502
            await wait_for(site.backend.connections[0].closed.is_set, "the upstream closed")

    run(scenario)


# ------------------------------------------------------------------ what the upstream is told


def _two_sites(port: int) -> list[tuple[str, str, str, int]]:
    return [
        (HOST.decode(), "/", "site", port),
        ("admin.example.com", "/", "admin", port),
        ("secure.example.com", "/", "secure", port),
    ]


def test_an_absolute_form_target_names_the_host_the_upstream_is_sent() -> None:
    """RFC 9112 §3.2.2: the target's authority, not the Host field, says which host it is."""

    async def scenario() -> None:
        async with serving(routes=_two_sites) as site:
            request = b"GET http://admin.example.com/x HTTP/1.1\r\nHost: site.example.com\r\n\r\n"
            assert await site.ask(request) == (200, b"c0-r0")
            (received,) = site.backend.requests
            assert received.header(b"host") == [b"admin.example.com"]
            assert received.header(b"x-forwarded-host") == [b"admin.example.com"]

    run(scenario)


def test_an_absolute_form_target_for_a_tls_host_is_redirected_like_its_host() -> None:
    async def scenario() -> None:
        async with serving(routes=_two_sites) as site:
            client = await site.client()
            await client.send(
                b"GET http://secure.example.com/x HTTP/1.1\r\nHost: site.example.com\r\n\r\n"
            )
            reply = await client.reply()
            assert reply is not None
            assert reply.status == 308
            assert reply.header(b"location") == b"https://secure.example.com/x"
            assert site.backend.connections == []
            await client.aclose()

    run(scenario)


SPOOFED = [
    (b"X_Forwarded_For", b"6.6.6.6"),
    (b"X_Real_IP", b"6.6.6.6"),
    (b"X_Forwarded_Host", b"admin.example.com"),
    (b"Forwarded", b"for=6.6.6.6;host=admin.example.com"),
    (b"X-Original-URL", b"/admin"),
    (b"X-Rewrite-URL", b"/admin"),
    (b"ssl-client-verify", b"SUCCESS"),
    (b"SSL-Client-Cert", b"-----BEGIN%20CERTIFICATE-----"),
    (b"ssl-client-subject-dn", b"CN=admin"),
    (b"ssl-client-issuer-dn", b"CN=ca"),
]


def _spoofing_request() -> bytes:
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in SPOOFED)
    return get(extra=fields + b"X-Kept: yes\r\n")


def test_identity_headers_a_client_can_spoof_never_reach_the_upstream() -> None:
    async def scenario() -> None:
        async with serving() as site:
            assert await site.ask(_spoofing_request()) == (200, b"c0-r0")
            (received,) = site.backend.requests
            names = {name for name, _ in received.headers}
            assert not names & {name.lower() for name, _ in SPOOFED}
            assert received.header(b"x-kept") == [b"yes"]
            assert received.header(b"x-forwarded-for") == [b"127.0.0.1"]

    run(scenario)


def test_a_trusted_proxy_may_send_identity_headers_but_never_underscored_ones() -> None:
    async def scenario() -> None:
        backend = RawBackend()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(backend.serve)
            proxy = Proxy(
                build_config(_objects([(HOST.decode(), "/", "web", port)])),
                trusted=TrustedProxies(["127.0.0.1"]),
            )
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            site = Site(proxy, listeners[0].socket.getsockname()[1], backend)
            assert await site.ask(_spoofing_request()) == (200, b"c0-r0")
            (received,) = backend.requests
            names = {name for name, _ in received.headers}
            assert b"ssl-client-verify" in names
            assert b"forwarded" in names
            assert not {n for n in names if b"_" in n}
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(
    "host",
    [
        b"site.example.com:80@admin.example.com",
        b"site.example.com:x/../evil",
        b"site.example.com/admin",
        b"site.example.com:99999x",
        b"[::1",
    ],
)
def test_a_malformed_host_is_refused_before_any_backend(host: bytes) -> None:
    async def scenario() -> None:
        async with serving() as site:
            assert await site.status(get(host=host)) == 400
            assert site.backend.connections == []

    run(scenario)


def test_an_h2c_upgrade_is_not_tunnelled_past_routing() -> None:
    """An h2c connection would carry requests the proxy never routes: it is a plain request."""

    async def scenario() -> None:
        async with serving() as site:
            extra = (
                b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
            )
            assert await site.ask(get(extra=extra)) == (200, b"c0-r0")
            (received,) = site.backend.requests
            names = {name for name, _ in received.headers}
            assert not names & {b"upgrade", b"http2-settings", b"connection"}

    run(scenario)


def test_trailers_follow_the_head_rules_and_lose_their_framing_fields() -> None:
    async def scenario() -> None:
        async with serving() as site:
            head = (
                b"POST / HTTP/1.1\r\nHost: site.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            trailers = b"X-Checksum: abc\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n"
            assert await site.ask(head + b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n", b"POST") == (
                200,
                b"c0-r0",
            )
            await wait_for(lambda: len(site.backend.requests) == 1, "the request")
            received = bytes(site.backend.connections[0].received)
            assert b"X-Checksum: abc\r\n" in received
            assert b"Content-Length: 5" not in received
            assert b"gzip" not in received

    run(scenario)


def test_a_trailer_line_without_a_colon_is_a_400() -> None:
    async def scenario() -> None:
        async with serving() as site:
            head = (
                b"POST / HTTP/1.1\r\nHost: site.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            assert (
                await site.status(head + b"3\r\nabc\r\n0\r\nGET /admin HTTP/1.1\r\n\r\n", b"POST")
                == 400
            )

    run(scenario)


def test_the_body_limit_holds_over_tls_too() -> None:
    """The same 10 KiB chunked body in one TLS record with its head: 413, nothing forwarded."""

    def post_over_tls(port: int) -> bytes:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the proxy's self-signed default certificate
        with (
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
            context.wrap_socket(raw, server_hostname=HOST.decode()) as tls,
        ):
            tls.sendall(_post_chunked(b"x" * 10 * 1024))
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            return answer

    async def scenario() -> None:
        backend = RawBackend()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(backend.serve)
            proxy = Proxy(
                build_config(_objects([(HOST.decode(), "/", "web", port)])),
                limits=Limits(max_body_bytes=1024),
                tls=TLSContexts(),
            )
            listeners = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
            https_port = listeners[0].socket.getsockname()[1]
            answer = await trio.to_thread.run_sync(post_over_tls, https_port)
            assert answer.startswith(b"HTTP/1.1 413 ")
            assert backend.connections == []
            nursery.cancel_scope.cancel()

    run(scenario)
