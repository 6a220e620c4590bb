"""Who may use a route, how often, from which origins, and who the client is behind a
load balancer: the protection annotations and PROXY protocol, end to end.

Each test gives Ingress annotations to ``build_config``, serves the result with the real
proxy on 127.0.0.1 (an HTTP and an HTTPS listener) in front of a raw backend, and asserts
what a client and the backend see. Client addresses other than 127.0.0.1 are presented
with PROXY protocol headers that the tests write with ``struct`` from the spec's layout
(https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt), independently of the
proxy's parser. The cases follow ingress-nginx's e2e tests (``test/e2e/annotations/
ipallowlist.go``, ``ipdenylist.go``, ``cors.go``, ``limit*.go``) and its documentation.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio

from fastroute.ingress import build_config
from fastroute.ingress.certs import self_signed_certificate, tls_secret
from fastroute.ingress.settings import Settings
from fastroute.proxy.server import Proxy
from fastroute.proxy.tls import TLSContexts
from tests.objects import service_at
from tests.polling import DEADLINE, wait_for
from tests.polling import run_within as run
from tests.raw import BackendConnection, RawBackend, RawClient, Reply, Request, response

pytestmark = pytest.mark.e2e

HOST = b"site.example.com"
SECURE = b"secure.example.com"  # the same backend, under TLS
CERTIFICATE = self_signed_certificate([SECURE.decode()])
PREFIX = "nginx.ingress.kubernetes.io/"
PROXIED = Settings(use_proxy_protocol=True)  # ingress-nginx's proxy-real-ip-cidr: anyone


def _objects(port: int, annotations: dict[str, str]) -> list[dict[str, Any]]:
    """A Service with one endpoint on 127.0.0.1:port, and an Ingress with ``annotations``
    routing HOST (plain) and SECURE (TLS) to it."""

    def rule(host: bytes) -> dict[str, Any]:
        path = {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}},
        }
        return {"host": host.decode(), "http": {"paths": [path]}}

    return [
        tls_secret("default", "secure", CERTIFICATE),
        *service_at(port),
        {
            "kind": "Ingress",
            "metadata": {"name": "site", "annotations": annotations},
            "spec": {
                "ingressClassName": "fastroute",
                "tls": [{"hosts": [SECURE.decode()], "secretName": "secure"}],
                "rules": [rule(HOST), rule(SECURE)],
            },
        },
    ]


def _annotated(**values: str) -> dict[str, str]:
    """``limit_rps="1"`` -> ``{"nginx.ingress.kubernetes.io/limit-rps": "1"}``."""
    return {PREFIX + name.replace("_", "-"): value for name, value in values.items()}


@dataclass
class Site:
    http: int  # the proxy's HTTP listener
    https: int  # its HTTPS listener
    backend: RawBackend

    async def send(
        self,
        request: bytes,
        *,
        header: bytes = b"",
        tls: bool = False,
        method: bytes = b"GET",
    ) -> Reply | None:
        """One request on a new connection, after ``header`` (a PROXY protocol header);
        the answer, or None if the proxy closed without one."""
        async with connected(self, header=header, tls=tls) as client:
            await client.send(request)
            return await client.reply(method)

    async def status(self, request: bytes, *, header: bytes = b"", tls: bool = False) -> int:
        reply = await self.send(request, header=header, tls=tls)
        assert reply is not None, "the proxy closed without an answer"
        return reply.status


@asynccontextmanager
async def connected(
    site: Site, *, header: bytes = b"", tls: bool = False
) -> AsyncIterator[RawClient]:
    """A client connection to the proxy: ``header`` first, then TLS if ``tls``."""
    stream = await trio.open_tcp_stream("127.0.0.1", site.https if tls else site.http)
    async with stream:
        if header:
            await stream.send_all(header)
        if not tls:
            yield RawClient(stream)
            return
        context = ssl.create_default_context(cadata=CERTIFICATE.chain_pem.decode("ascii"))
        tls_stream = trio.SSLStream(stream, context, server_hostname=SECURE.decode())
        yield RawClient(stream, tls_stream)


@asynccontextmanager
async def serving(
    annotations: dict[str, str],
    *,
    settings: Settings | None = None,
    configmap: dict[str, str] | None = None,
    answer: Callable[[BackendConnection, Request], Awaitable[None]] | None = None,
    clean: bool = True,
) -> AsyncIterator[Site]:
    """The proxy serving an Ingress with ``annotations``, under the controller ConfigMap
    holding ``configmap`` (or, for what the proxy reads itself, ``settings``);
    ``clean``: every annotation is accepted whole."""
    backend = RawBackend(answer) if answer is not None else RawBackend()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(backend.serve)
        objects = _objects(port, annotations)
        if configmap is not None:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "controller", "namespace": "ingress-nginx"},
                    "data": configmap,
                }
            )
        config = build_config(objects, configmap="ingress-nginx/controller")
        assert not clean or not config.rejected(), config.rejected()
        if settings is not None:
            config = dataclasses.replace(config, settings=settings)
        proxy = Proxy(config, tls=TLSContexts())
        http = await nursery.start(partial(proxy.serve, scheme="http"), "127.0.0.1", 0)
        https = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
        yield Site(http[0].socket.getsockname()[1], https[0].socket.getsockname()[1], backend)
        nursery.cancel_scope.cancel()


def get(host: bytes = HOST, extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return b"%s / HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (method, host, extra)


# ------------------------------------------------------------------ PROXY protocol headers

V2_SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def v1(source: str, destination: str = "", source_port: int = 40000, port: int = 80) -> bytes:
    """A v1 (text) header saying a TCP connection came from ``source``."""
    ipv6 = _family(source) == socket.AF_INET6
    destination = destination or ("2001:db8::ffff" if ipv6 else "203.0.113.1")
    protocol = b"TCP6" if ipv6 else b"TCP4"
    line = b"PROXY %s %s %s %d %d\r\n"
    return line % (protocol, source.encode(), destination.encode(), source_port, port)


def v2(source: str, destination: str = "", source_port: int = 40000, port: int = 80) -> bytes:
    """A v2 (binary) PROXY command for a TCP connection from ``source``."""
    family = _family(source)
    if family == socket.AF_INET6:
        destination = destination or "2001:db8::ffff"
        layout, transport = "!16s16sHH", 0x21  # TCP over IPv6
    else:
        destination = destination or "203.0.113.1"
        layout, transport = "!4s4sHH", 0x11  # TCP over IPv4
    block = struct.pack(
        layout,
        socket.inet_pton(family, source),
        socket.inet_pton(family, destination),
        source_port,
        port,
    )
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, transport, len(block)) + block


HEADERS = {"v1": v1, "v2": v2}


# ------------------------------------------------------------------ PROXY protocol


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("source", ["192.0.2.33", "2001:db8:1::33"])
def test_the_proxy_header_names_the_client_the_backend_is_told_of(
    version: str, tls: bool, source: str
) -> None:
    """The load balancer's header, before HTTP or before the TLS ClientHello, gives the
    address the backend receives in X-Forwarded-For and X-Real-IP."""

    async def scenario() -> None:
        async with serving({}, settings=PROXIED) as site:
            host = SECURE if tls else HOST
            # the balancer's own port, as the client connected to it
            port = 8443 if tls else 8080
            header = HEADERS[version](source, port=port)
            assert await site.status(get(host), header=header, tls=tls) == 200
            [request] = site.backend.requests
            assert request.header(b"x-forwarded-for") == [source.encode()]
            assert request.header(b"x-real-ip") == [source.encode()]
            assert request.header(b"x-forwarded-proto") == [b"https" if tls else b"http"]
            assert request.header(b"x-forwarded-port") == [b"%d" % port]

    run(scenario)


def test_every_request_on_a_proxied_connection_keeps_the_header_s_client() -> None:
    async def scenario() -> None:
        async with serving({}, settings=PROXIED) as site:
            async with connected(site, header=v1("198.51.100.9")) as client:
                for _ in range(3):
                    await client.send(get())
                    reply = await client.reply()
                    assert reply is not None
                    assert reply.status == 200
            sources = [r.header(b"x-real-ip") for r in site.backend.requests]
            assert sources == [[b"198.51.100.9"]] * 3

    run(scenario)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize(
    "header",
    [
        b"",  # no header at all: the request itself comes first
        b"PROXY TCP4 192.0.2.1 203.0.113.1 40000\r\n",  # a port missing
        b"PROXY TCP4 192.0.2.300 203.0.113.1 40000 80\r\n",  # not an address
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 signature
    ],
    ids=["none", "v1-short", "v1-bad-address", "v2-bad-version"],
)
def test_a_connection_without_a_valid_header_is_closed_unanswered(tls: bool, header: bytes) -> None:
    async def scenario() -> None:
        async with serving({}, settings=PROXIED) as site:
            stream = await trio.open_tcp_stream("127.0.0.1", site.https if tls else site.http)
            async with stream:
                # no header: what the client sends first is its request (or its ClientHello)
                await stream.send_all(header or get())
                client = RawClient(stream)
                assert await client.closed()
            assert site.backend.requests == []

    run(scenario)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_header_from_a_peer_outside_proxy_real_ip_cidr_is_refused(tls: bool) -> None:
    """Only the load balancers may say who the client is: 127.0.0.1 is not in 10.0.0.0/8."""
    settings = Settings(use_proxy_protocol=True, proxy_real_ip_cidr=("10.0.0.0/8",))

    async def scenario() -> None:
        async with serving({}, settings=settings) as site:
            stream = await trio.open_tcp_stream("127.0.0.1", site.https if tls else site.http)
            async with stream:
                await stream.send_all(v1("192.0.2.1") + get())
                assert await RawClient(stream).closed()
            assert site.backend.requests == []

    run(scenario)


def test_a_header_from_a_peer_inside_proxy_real_ip_cidr_is_believed() -> None:
    settings = Settings(use_proxy_protocol=True, proxy_real_ip_cidr=("127.0.0.0/8",))

    async def scenario() -> None:
        async with serving({}, settings=settings) as site:
            assert await site.status(get(), header=v2("192.0.2.1")) == 200
            assert site.backend.requests[0].header(b"x-real-ip") == [b"192.0.2.1"]

    run(scenario)


def test_without_use_proxy_protocol_a_header_is_not_read_as_one() -> None:
    """Off (the default), a PROXY line is not trusted: it is a malformed request."""

    async def scenario() -> None:
        async with serving({}) as site:
            reply = await site.send(v1("192.0.2.1") + get())
            assert reply is None or reply.status == 400
            assert site.backend.requests == []

    run(scenario)


# ------------------------------------------------------------------ allow and deny lists


@pytest.mark.parametrize(
    "name", ["whitelist-source-range", "allowlist-source-range", "fastroute.io/allowlist"]
)
def test_an_allowlist_lets_in_its_networks_and_refuses_the_rest_with_403(name: str) -> None:
    key = "fastroute.io/allowlist-source-range" if name.startswith("fastroute") else PREFIX + name

    async def scenario() -> None:
        async with serving({key: "192.0.2.0/24, 127.0.0.1"}) as site:
            assert await site.status(get()) == 200  # 127.0.0.1, listed as a bare address
        async with serving({key: "192.0.2.0/24,10.0.0.0/8"}) as site:
            reply = await site.send(get())
            assert reply is not None
            assert reply.status == 403
            assert site.backend.requests == []  # refused before the backend

    run(scenario)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize(
    ("allow", "deny", "client", "status"),
    [
        # ipallowlist.go: the listed networks only
        ("18.0.0.0/8, 56.0.0.0/8", "", "18.1.2.3", 200),
        ("18.0.0.0/8, 56.0.0.0/8", "", "56.0.0.1", 200),
        ("18.0.0.0/8, 56.0.0.0/8", "", "19.0.0.1", 403),
        # ipdenylist.go: everyone but the listed networks
        ("", "18.0.0.0/8, 56.0.0.0/8", "18.1.2.3", 403),
        ("", "18.0.0.0/8, 56.0.0.0/8", "19.0.0.1", 200),
        # the denylist wins where both hold the client
        ("192.0.2.0/24", "192.0.2.128/25", "192.0.2.7", 200),
        ("192.0.2.0/24", "192.0.2.128/25", "192.0.2.200", 403),
        ("192.0.2.0/24", "192.0.2.200", "192.0.2.200", 403),
        # IPv6 networks and clients
        ("2001:db8::/32", "", "2001:db8:abcd::1", 200),
        ("2001:db8::/32", "", "2001:db9::1", 403),
        ("2001:db8::/32", "2001:db8:bad::/48", "2001:db8:bad::1", 403),
        ("", "2001:db8::/32", "2001:db8::1", 403),
        ("", "2001:db8::/32", "192.0.2.1", 200),
        # a list of one family says nothing of the other: an allowlist refuses it
        ("192.0.2.0/24", "", "2001:db8::1", 403),
        ("2001:db8::/32", "", "192.0.2.1", 403),
    ],
)
def test_the_lists_judge_the_address_the_proxy_header_gives(
    tls: bool, allow: str, deny: str, client: str, status: int
) -> None:
    annotations = {}
    if allow:
        annotations[PREFIX + "whitelist-source-range"] = allow
    if deny:
        annotations[PREFIX + "denylist-source-range"] = deny

    async def scenario() -> None:
        async with serving(annotations, settings=PROXIED) as site:
            host = SECURE if tls else HOST
            assert await site.status(get(host), header=v2(client), tls=tls) == status
            assert len(site.backend.requests) == (status == 200)

    run(scenario)


def test_a_denylist_refuses_the_real_client_not_the_load_balancer() -> None:
    """The balancer (127.0.0.1) is denied, the client it names is not: it is let in."""

    async def scenario() -> None:
        annotations = {PREFIX + "denylist-source-range": "127.0.0.0/8"}
        async with serving(annotations, settings=PROXIED) as site:
            assert await site.status(get(), header=v1("192.0.2.1")) == 200
            assert await site.status(get(), header=v1("127.0.0.2")) == 403

    run(scenario)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("whitelist-source-range", "10.0.0.0/33"),
        ("denylist-source-range", "192.0.2.0/24, nonsense"),
        ("limit-rps", "ten"),
        ("limit-connections", "-1"),
        ("limit-rpm", "1.5"),
    ],
)
def test_a_malformed_protection_closes_its_ingress_rather_than_open_it(
    name: str, value: str
) -> None:
    """Fail closed: a protection fastroute cannot read answers 503, it never serves
    everyone unprotected."""

    async def scenario() -> None:
        backend = RawBackend()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(backend.serve)
            config = build_config(_objects(port, {PREFIX + name: value}))
            assert any(name in str(p) for p in config.rejected())
            proxy = Proxy(config)
            [listener] = await nursery.start(proxy.serve, "127.0.0.1", 0)
            site = Site(listener.socket.getsockname()[1], 0, backend)
            assert await site.status(get()) == 503
            assert backend.requests == []
            nursery.cancel_scope.cancel()

    run(scenario)


# ------------------------------------------------------------------ rate and connection limits


async def _statuses(site: Site, count: int, *, header: bytes = b"") -> list[int]:
    """The statuses of ``count`` requests sent one after another on one connection."""
    statuses = []
    async with connected(site, header=header) as client:
        for _ in range(count):
            await client.send(get())
            reply = await client.reply()
            assert reply is not None, "the proxy closed without an answer"
            statuses.append(reply.status)
    return statuses


@pytest.mark.parametrize(
    ("annotations", "admitted"),
    [
        # limit-rps 1 x multiplier 2: a burst of 2 on top of the first request
        (_annotated(limit_rps="1", limit_burst_multiplier="2"), 3),
        # the multiplier's default is 5
        (_annotated(limit_rps="1"), 6),
        # per minute: what drains in a second is 1/60 of a request
        (_annotated(limit_rpm="2", limit_burst_multiplier="2"), 5),
        # both: the stricter one decides
        (_annotated(limit_rps="10", limit_rpm="1", limit_burst_multiplier="1"), 2),
    ],
    ids=["rps", "rps-default-multiplier", "rpm", "rps-and-rpm"],
)
def test_a_burst_beyond_rate_times_multiplier_plus_one_gets_503(
    annotations: dict[str, str], admitted: int
) -> None:
    """Requests at once (well under the rate's period): rate x multiplier + 1 go through,
    the next one is refused with the default status, and never reaches the backend."""

    async def scenario() -> None:
        async with serving(annotations) as site:
            statuses = await _statuses(site, admitted + 2)
            assert statuses == [200] * admitted + [503, 503]
            assert len(site.backend.requests) == admitted

    run(scenario)


def test_the_limit_status_is_the_configmap_s_limit_req_status_code() -> None:
    """``limit-req-status-code: "429"``: the annotations are read over that ConfigMap."""

    async def scenario() -> None:
        annotations = _annotated(limit_rps="1", limit_burst_multiplier="1")
        async with serving(annotations, configmap={"limit-req-status-code": "429"}) as site:
            assert await _statuses(site, 3) == [200, 200, 429]

    run(scenario)


def test_an_exempt_network_is_never_limited() -> None:
    async def scenario() -> None:
        annotations = _annotated(
            limit_rps="1", limit_burst_multiplier="1", limit_whitelist="10.0.0.0/8, 127.0.0.1/32"
        )
        async with serving(annotations) as site:
            assert await _statuses(site, 8) == [200] * 8

    run(scenario)


def test_each_client_address_has_its_own_bucket_and_exemptions_follow_the_header() -> None:
    """Behind a load balancer, every client would share its address without the header."""

    async def scenario() -> None:
        annotations = _annotated(
            limit_rps="1", limit_burst_multiplier="1", limit_whitelist="198.51.100.0/24"
        )
        async with serving(annotations, settings=PROXIED) as site:
            assert await _statuses(site, 3, header=v1("192.0.2.1")) == [200, 200, 503]
            assert await _statuses(site, 3, header=v2("192.0.2.2")) == [200, 200, 503]
            assert await _statuses(site, 3, header=v2("2001:db8::2")) == [200, 200, 503]
            # a new connection from a limited client is still limited
            assert await _statuses(site, 1, header=v2("192.0.2.1")) == [503]
            assert await _statuses(site, 5, header=v1("198.51.100.7")) == [200] * 5

    run(scenario)


class SlowBackend:
    """Answers each request when the test releases it, so requests stay in progress."""

    def __init__(self) -> None:
        self.release = trio.Event()

    async def answer(self, connection: BackendConnection, request: Request) -> None:
        await self.release.wait()
        await connection.send(response(b"done"))


def test_limit_connections_counts_requests_in_progress_per_client() -> None:
    """One request in progress (a slow backend holds it): a second from that address is
    refused, another address's is not; once the first is answered, there is room again."""
    slow = SlowBackend()

    async def scenario() -> None:
        annotations = _annotated(limit_connections="1")
        async with serving(annotations, settings=PROXIED, answer=slow.answer) as site:
            replies: dict[str, Reply | None] = {}

            async def ask(name: str, header: bytes) -> None:
                replies[name] = await site.send(get(), header=header)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "first", v1("192.0.2.1"))
                await wait_for(lambda: len(site.backend.requests) == 1, "the first request held")
                nursery.start_soon(ask, "other client", v2("192.0.2.2"))
                await wait_for(lambda: len(site.backend.requests) == 2, "the other client's")
                refused = await site.send(get(), header=v2("192.0.2.1"))
                assert refused is not None
                assert refused.status == 503
                assert len(site.backend.requests) == 2  # the refused one never got there
                slow.release.set()
            assert {name: r.status if r else None for name, r in replies.items()} == {
                "first": 200,
                "other client": 200,
            }
            # done: the first client may send one again
            assert await site.status(get(), header=v1("192.0.2.1")) == 200

    run(scenario)


# ------------------------------------------------------------------ CORS

ALLOW_ORIGIN = b"access-control-allow-origin"
CORS_DEFAULTS = [
    (b"access-control-allow-credentials", b"true"),
    (b"access-control-allow-methods", b"GET, PUT, POST, DELETE, PATCH, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
        b"Content-Type,Range,Authorization",
    ),
    (b"access-control-max-age", b"1728000"),
]


def _cors_fields(reply: Reply) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in reply.headers if n.startswith(b"access-control-")]


def preflight(origin: bytes, host: bytes = HOST) -> bytes:
    extra = b"Origin: %s\r\nAccess-Control-Request-Method: PUT\r\n" % origin
    return get(host, extra, method=b"OPTIONS")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_preflight_is_answered_204_by_the_proxy_with_ingress_nginx_s_defaults(
    tls: bool,
) -> None:
    async def scenario() -> None:
        async with serving(_annotated(enable_cors="true")) as site:
            host = SECURE if tls else HOST
            reply = await site.send(
                preflight(b"https://app.example.org", host), tls=tls, method=b"OPTIONS"
            )
            assert reply is not None
            assert reply.status == 204
            assert reply.body == b""
            assert _cors_fields(reply) == [(ALLOW_ORIGIN, b"*"), *CORS_DEFAULTS]
            assert site.backend.requests == []  # the backend never sees it

    run(scenario)


def test_simple_requests_get_the_headers_on_the_backend_s_response_replacing_its_own() -> None:
    async def own_cors(connection: BackendConnection, request: Request) -> None:
        await connection.send(
            response(
                b"body",
                200,
                b"Access-Control-Allow-Origin: https://evil.example.net",
                b"Access-Control-Max-Age: 5",
                b"X-Backend: yes",
            )
        )

    async def scenario() -> None:
        annotations = _annotated(enable_cors="true", cors_allow_origin="https://app.example.org")
        async with serving(annotations, answer=own_cors) as site:
            reply = await site.send(get(extra=b"Origin: https://app.example.org\r\n"))
            assert reply is not None
            assert (reply.status, reply.body) == (200, b"body")
            assert reply.header(b"x-backend") == b"yes"
            assert _cors_fields(reply) == [
                (ALLOW_ORIGIN, b"https://app.example.org"),
                *CORS_DEFAULTS,
            ]
            # an origin not allowed gets nothing from the proxy: the backend's fields pass
            reply = await site.send(get(extra=b"Origin: https://other.example.org\r\n"))
            assert reply is not None
            assert _cors_fields(reply) == [
                (ALLOW_ORIGIN, b"https://evil.example.net"),
                (b"access-control-max-age", b"5"),
            ]

    run(scenario)


@pytest.mark.parametrize(
    ("allowed", "origin", "echoed"),
    [
        # cors.go, case by case
        ("https://origin.cors.com:8080", "https://origin.cors.com:8080", "same"),
        (
            "https://origin.cors.com:8080, https://origin2.cors.com",
            "https://origin.cors.com:8080",
            "same",
        ),
        ("http://origin2.cors.com, https://origin.com", "http://no.origin.com", None),
        (
            "origin.cors.com:8080, https://origin2.cors.com, https://origin.com",
            "origin.cors.com:8080",
            None,
        ),
        (
            "origin.cors.com:8080, https://origin2.cors.com, https://origin.com",
            "https://origin.com",
            "same",
        ),
        ("*", "http://anything.example", "*"),
        ("*, foo.bar.com", "http://anything.example", "*"),
        ("https://foo.bar.com", "https://fooxbar.com", None),
        ("http://origin.cors.com:8080, http://origin.com:8080", "http://origin.com:8080", "same"),
        ("https://origin2.cors.com, http://origin.com", "http://origin.com:8080", None),
        ("http://origin.cors.com:8080, http://origin.com:8080", "http://origin.com", None),
        (
            "http://*.origin.cors.com, http://*.origin.com:8080",
            "http://foo.origin.cors.com",
            "same",
        ),
        (
            "http://*.origin.cors.com, http://*.origin.com:8080",
            "http://bar-foo.origin.cors.com",
            "same",
        ),
        (
            "http://*.origin.cors.com, http://*.origin.com:8080",
            "http://bar.foo.origin.cors.com",
            None,
        ),
        (
            "http://origin.cors.com:8080, http://*.origin.com:8080",
            "http://abc.origin.com:8080",
            "same",
        ),
        ("http://origin.cors.com:8080, http://*.origin.com:8080", "http://abc.origin.com", None),
        ("http://origin.cors.com:8080, http://*.origin.com:8080", "http://origin.com:8080", None),
        ("      ", "http://book.origin.com", "*"),
        (
            "https://origin-123.cors.com:8080,   ,https://origin-321.cors.com:8080,",
            "https://origin-321.cors.com:8080",
            "same",
        ),
        (
            "https://origin-123.cors.com:8080,   ,https://origin-321.cors.com:8080,",
            "https://unknown.cors.com:8080",
            None,
        ),
        ("test://localhost, tauri://localhost:3000", "tauri://localhost:3000", "same"),
        # the form: one label under the domain, the scheme must match
        ("https://*.example.com", "https://api.example.com", "same"),
        ("https://*.example.com", "https://API.Example.com", "same"),
        ("https://*.example.com", "http://api.example.com", None),
        ("https://*.example.com", "https://example.com", None),
        ("https://*.example.com", "https://api.example.com.evil.net", None),
    ],
)
def test_which_origins_get_the_headers_on_preflights_and_responses(
    allowed: str, origin: str, echoed: str | None
) -> None:
    expected = origin.encode() if echoed == "same" else echoed.encode() if echoed else None

    async def scenario() -> None:
        annotations = _annotated(enable_cors="true", cors_allow_origin=allowed)
        # a malformed origin is reported and dropped, the others kept
        async with serving(annotations, clean=False) as site:
            reply = await site.send(get(extra=b"Origin: %s\r\n" % origin.encode()))
            assert reply is not None
            assert reply.status == 200
            assert reply.header(ALLOW_ORIGIN) == expected
            answer = await site.send(preflight(origin.encode()), method=b"OPTIONS")
            assert answer is not None
            if expected is None:  # not ours to answer: the backend gets the OPTIONS
                assert answer.status == 200
                assert [r.method for r in site.backend.requests] == [b"GET", b"OPTIONS"]
                assert _cors_fields(answer) == []
            else:
                assert answer.status == 204
                assert answer.header(ALLOW_ORIGIN) == expected
                assert [r.method for r in site.backend.requests] == [b"GET"]

    run(scenario)


def test_the_cors_settings_are_the_annotations() -> None:
    async def scenario() -> None:
        annotations = _annotated(
            enable_cors="true",
            cors_allow_origin="https://app.example.org",
            cors_allow_methods="POST, GET",
            cors_allow_headers="DNT, User-Agent",
            cors_expose_headers="X-CustomResponseHeader, X-CustomSecondHeader",
            cors_allow_credentials="false",
            cors_max_age="200",
        )
        async with serving(annotations) as site:
            for request, method in [
                (preflight(b"https://app.example.org"), b"OPTIONS"),
                (get(extra=b"Origin: https://app.example.org\r\n"), b"GET"),
            ]:
                reply = await site.send(request, method=method)
                assert reply is not None
                assert _cors_fields(reply) == [
                    (ALLOW_ORIGIN, b"https://app.example.org"),
                    (b"access-control-allow-methods", b"POST, GET"),
                    (b"access-control-allow-headers", b"DNT, User-Agent"),
                    (
                        b"access-control-expose-headers",
                        b"X-CustomResponseHeader, X-CustomSecondHeader",
                    ),
                    (b"access-control-max-age", b"200"),
                ]

    run(scenario)


def test_without_enable_cors_the_cors_annotations_change_nothing() -> None:
    async def scenario() -> None:
        annotations = _annotated(cors_allow_origin="https://app.example.org")
        async with serving(annotations) as site:
            reply = await site.send(preflight(b"https://app.example.org"), method=b"OPTIONS")
            assert reply is not None
            assert reply.status == 200
            assert _cors_fields(reply) == []
            assert [r.method for r in site.backend.requests] == [b"OPTIONS"]

    run(scenario)


@pytest.mark.parametrize(
    ("guard", "status"),
    [
        (_annotated(limit_rps="1", limit_burst_multiplier="1"), 503),
        (_annotated(denylist_source_range="127.0.0.0/8"), 403),
    ],
    ids=["limited", "denied"],
)
def test_the_proxy_s_refusals_carry_the_cors_headers_so_a_page_can_read_them(
    guard: dict[str, str], status: int
) -> None:
    """ingress-nginx sets the CORS fields on whatever the location answers (its 503 or
    429 of a rate limit, its 403): without them, a browser hides the status from the
    page, which sees only a CORS failure and cannot back off."""

    async def scenario() -> None:
        annotations = _annotated(enable_cors="true", cors_allow_origin="https://app.example.org")
        async with serving({**annotations, **guard}) as site:
            replies = []
            async with connected(site) as client:
                for _ in range(3):
                    await client.send(get(extra=b"Origin: https://app.example.org\r\n"))
                    reply = await client.reply()
                    assert reply is not None
                    replies.append(reply)
            refused = replies[-1]
            assert refused.status == status
            assert _cors_fields(refused) == [
                (ALLOW_ORIGIN, b"https://app.example.org"),
                *CORS_DEFAULTS,
            ]

    run(scenario)


def test_a_client_that_gives_up_frees_its_connection_slot() -> None:
    """A request abandoned while the backend is slow stops counting once the client is
    gone (nginx ends it with 499): a stuck backend never locks the client out."""
    never = trio.Event()

    async def first_never_answered(connection: BackendConnection, request: Request) -> None:
        if connection.index == 0:
            await never.wait()
        await connection.send(response(b"done"))

    async def scenario() -> None:
        annotations = _annotated(limit_connections="1")
        async with serving(annotations, answer=first_never_answered) as site:
            async with connected(site) as client:
                await client.send(get())
                await wait_for(lambda: len(site.backend.requests) == 1, "the held request")
                assert await site.status(get()) == 503
            statuses: list[int] = []
            with trio.move_on_after(DEADLINE):
                while not statuses or statuses[-1] != 200:
                    statuses.append(await site.status(get()))
                    await trio.sleep(0.05)
            assert statuses[-1:] == [200], statuses
            never.set()

    run(scenario)


@pytest.mark.parametrize(
    ("client", "status"), [("::ffff:192.0.2.9", 200), ("::ffff:198.51.100.9", 403)]
)
def test_an_ipv4_mapped_source_is_judged_as_the_ipv4_address_it_carries(
    client: str, status: int
) -> None:
    async def scenario() -> None:
        annotations = _annotated(whitelist_source_range="192.0.2.0/24")
        async with serving(annotations, settings=PROXIED) as site:
            assert await site.status(get(), header=v2(client)) == status

    run(scenario)


def test_a_client_s_own_x_forwarded_for_never_passes_for_its_address() -> None:
    """Behind PROXY protocol, only the header says who the client is: a forged
    X-Forwarded-For neither opens an allowlist nor reaches the backend as the client."""

    async def scenario() -> None:
        annotations = _annotated(whitelist_source_range="203.0.113.0/24")
        async with serving(annotations, settings=PROXIED) as site:
            forged = get(extra=b"X-Forwarded-For: 203.0.113.5\r\nX-Real-IP: 203.0.113.5\r\n")
            assert await site.status(forged, header=v1("192.0.2.1")) == 403
            assert await site.status(forged, header=v1("203.0.113.77")) == 200
            [request] = site.backend.requests
            assert request.header(b"x-forwarded-for") == [b"203.0.113.77"]
            assert request.header(b"x-real-ip") == [b"203.0.113.77"]

    run(scenario)


def test_the_connection_limit_status_is_the_configmap_s_limit_conn_status_code() -> None:
    slow = SlowBackend()

    async def scenario() -> None:
        annotations = _annotated(limit_connections="1")
        configmap = {"limit-conn-status-code": "429"}
        async with (
            serving(annotations, configmap=configmap, answer=slow.answer) as site,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(site.send, get())
            await wait_for(lambda: len(site.backend.requests) == 1, "the held request")
            assert await site.status(get()) == 429
            slow.release.set()

    run(scenario)


def test_an_ingress_s_guards_cover_its_own_paths_not_another_ingress_s_on_the_same_host() -> None:
    """ingress-nginx applies annotations per Ingress: /admin's allowlist and rate limit
    leave /open, from another Ingress on the same host, alone."""
    guarded = _annotated(
        whitelist_source_range="10.0.0.0/8", limit_rps="1", limit_burst_multiplier="1"
    )

    async def scenario() -> None:
        backend = RawBackend()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(backend.serve)
            objects = _objects(port, guarded)
            ingress = objects[-1]
            ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/admin"
            ingress["spec"]["rules"] = ingress["spec"]["rules"][:1]
            open_ingress = {
                "kind": "Ingress",
                "metadata": {"name": "open"},
                "spec": {
                    "ingressClassName": "fastroute",
                    "rules": [
                        {
                            "host": HOST.decode(),
                            "http": {
                                "paths": [
                                    {
                                        "path": "/open",
                                        "pathType": "Prefix",
                                        "backend": {
                                            "service": {"name": "web", "port": {"number": 80}}
                                        },
                                    }
                                ]
                            },
                        }
                    ],
                },
            }
            config = build_config([*objects, open_ingress])
            assert not config.rejected(), config.rejected()
            proxy = Proxy(config)
            [listener] = await nursery.start(proxy.serve, "127.0.0.1", 0)
            site = Site(listener.socket.getsockname()[1], 0, backend)
            admin = b"GET /admin HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST
            assert await site.status(admin) == 403
            for _ in range(4):
                assert await site.status(b"GET /open HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST) == 200
            assert [r.target for r in backend.requests] == [b"/open"] * 4
            nursery.cancel_scope.cancel()

    run(scenario)


def test_a_header_and_pipelined_requests_in_one_write_are_all_served_as_that_client() -> None:
    async def scenario() -> None:
        async with serving({}, settings=PROXIED) as site:
            stream = await trio.open_tcp_stream("127.0.0.1", site.http)
            client = RawClient(stream)
            try:
                await client.send(v2("192.0.2.44") + get() + get())
                for _ in range(2):
                    reply = await client.reply()
                    assert reply is not None
                    assert reply.status == 200
            finally:
                await client.aclose()
            assert [r.header(b"x-real-ip") for r in site.backend.requests] == [[b"192.0.2.44"]] * 2

    run(scenario)


def test_a_client_s_rate_is_counted_across_both_listeners() -> None:
    """One bucket per client address, as nginx keys its zone on the address alone."""

    async def scenario() -> None:
        annotations = _annotated(limit_rps="1", limit_burst_multiplier="1")
        async with serving(annotations, settings=PROXIED) as site:
            header = v1("192.0.2.8")
            assert await site.status(get(), header=header) == 200
            assert await site.status(get(SECURE), header=header, tls=True) == 200
            assert await site.status(get(SECURE), header=header, tls=True) == 503
            assert await site.status(get(), header=header) == 503

    run(scenario)


@pytest.mark.parametrize(
    ("extra", "first", "request_"),
    [
        ({}, 502, get()),
        (
            _annotated(proxy_body_size="1k"),
            413,
            b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 5000\r\n\r\n" % HOST,
        ),
        (_annotated(proxy_read_timeout="1"), 504, get()),
    ],
    ids=["bad-gateway", "too-large", "timeout"],
)
def test_a_request_that_fails_frees_its_connection_slot(
    extra: dict[str, str], first: int, request_: bytes
) -> None:
    """limit-connections counts requests in progress: one the proxy gave up on (a bad
    upstream answer, a body over the limit, a timeout) is over, and counts no more."""
    never = trio.Event()

    async def answer(connection: BackendConnection, request: Request) -> None:
        if connection.index == 0 and first == 504:
            await never.wait()  # the first request times out
        if connection.index == 0 and first == 502:
            await connection.send(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            await connection.send(response(b"fine"))

    async def scenario() -> None:
        annotations = {**_annotated(limit_connections="1"), **extra}
        async with serving(annotations, answer=answer) as site:
            assert await site.status(request_) == first
            assert await site.status(get()) == 200
            never.set()

    run(scenario)


def test_a_route_without_endpoints_answers_503_with_its_cors_fields() -> None:
    """As its refusals do: the page reads 503 (and may retry), not a CORS failure."""

    async def scenario() -> None:
        annotations = _annotated(enable_cors="true", cors_allow_origin="https://app.example.org")
        objects = [
            o for o in _objects(1, annotations) if o["kind"] != "EndpointSlice"
        ]  # the Service has no endpoints
        config = build_config(objects)
        async with trio.open_nursery() as nursery:
            proxy = Proxy(config)
            [listener] = await nursery.start(proxy.serve, "127.0.0.1", 0)
            site = Site(listener.socket.getsockname()[1], 0, RawBackend())
            reply = await site.send(get(extra=b"Origin: https://app.example.org\r\n"))
            assert reply is not None
            assert reply.status == 503
            assert reply.header(ALLOW_ORIGIN) == b"https://app.example.org"
            other = await site.send(get(extra=b"Origin: https://other.example.org\r\n"))
            assert other is not None
            assert other.status == 503
            assert _cors_fields(other) == []
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(
    "header",
    [
        V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0),  # v2 LOCAL: the balancer's own
        b"PROXY UNKNOWN\r\n",  # v1: the balancer does not know
    ],
    ids=["v2-local", "v1-unknown"],
)
def test_a_header_that_names_no_client_leaves_the_peer_as_the_client(header: bytes) -> None:
    """A balancer's health check says nothing of a client: the peer is the client."""

    async def scenario() -> None:
        async with serving(
            _annotated(whitelist_source_range="127.0.0.1"), settings=PROXIED
        ) as site:
            assert await site.status(get(), header=header) == 200
            assert site.backend.requests[0].header(b"x-real-ip") == [b"127.0.0.1"]

    run(scenario)
