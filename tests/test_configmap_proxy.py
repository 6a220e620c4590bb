"""The controller ConfigMap end to end: each key, read by ``build_config(..., configmap=...)``,
changes what a client or a backend of the real proxy sees, over real sockets on 127.0.0.1.

A site has two hosts routed to one backend: ``plain.example.com`` (no TLS) and
``secure.example.com`` (a TLS host, served on the HTTPS listener too). Clients are raw
(``raw.py``) or the stdlib ``ssl`` client, so a test sees exactly the fields sent.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pytest
import trio

from fastroute.ingress import build_config
from fastroute.ingress.certs import self_signed_certificate, tls_secret
from fastroute.ingress.model import RouteConfig
from fastroute.ingress.settings import DEFAULT_SETTINGS
from fastroute.proxy.real_ip import ClientTrust
from fastroute.proxy.server import Limits, Proxy
from fastroute.proxy.tls import TLSContexts
from tests.objects import config_map, endpoint_slice
from tests.objects import service as service_object
from tests.polling import DEADLINE, wait_for
from tests.polling import run_within as run
from tests.raw import (
    BackendConnection,
    RawBackend,
    RawClient,
    Reply,
    Request,
    response,
    unanswered_port,
)

CM = "ingress/controller"
PLAIN = b"plain.example.com"
SECURE = b"secure.example.com"
PREFIX = "nginx.ingress.kubernetes.io/"
CERTIFICATE = self_signed_certificate([SECURE.decode()])  # EC P-256
DEFAULT_CERTIFICATE = self_signed_certificate(["default.invalid"])


def configmap(ref: str, data: Mapping[str, str]) -> dict[str, Any]:
    namespace, _, name = ref.partition("/")
    return config_map(name, data, namespace)


def service(name: str, *ports: int) -> list[dict[str, Any]]:
    """A Service whose endpoints are 127.0.0.1 on each of ``ports`` (one slice each)."""
    slices = (endpoint_slice(name, port, name=f"{name}-{i}") for i, port in enumerate(ports))
    return [service_object(name), *slices]


def ingress(
    name: str, hosts: tuple[bytes, ...], annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    spec: dict[str, Any] = {
        "ingressClassName": "fastroute",
        "rules": [
            {
                "host": host.decode(),
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
            for host in hosts
        ],
    }
    if SECURE in hosts:
        spec["tls"] = [{"hosts": [SECURE.decode()], "secretName": "secure"}]
    annotations = {PREFIX + key: value for key, value in (annotations or {}).items()}
    return {
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec,
    }


def site_config(
    ports: tuple[int, ...],
    data: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    extra: tuple[dict[str, Any], ...] = (),
) -> RouteConfig:
    """Both hosts to the ``web`` Service, the controller ConfigMap holding ``data``."""
    return build_config(
        [
            *service("web", *ports),
            tls_secret("default", "secure", CERTIFICATE),
            ingress("site", (PLAIN, SECURE), annotations),
            configmap(CM, data),
            *extra,
        ],
        configmap=CM,
    )


@dataclass
class Site:
    proxy: Proxy
    config: RouteConfig
    http: int  # the HTTP listener's port
    https: int  # the HTTPS listener's port
    backend: RawBackend

    async def client(self) -> RawClient:
        return await RawClient.connect(self.http)

    async def tls_client(self, server_name: bytes = SECURE) -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", self.https)
        tls = trio.SSLStream(stream, _client_context(), server_hostname=server_name.decode())
        await tls.do_handshake()
        return RawClient(stream, over=tls)

    async def ask(self, data: bytes, client: RawClient | None = None) -> Reply:
        """The answer to ``data`` on a new plain connection (or ``client``), which must come."""
        own = client is None
        client = client or await self.client()
        try:
            await client.send(data)
            reply = await client.reply()
            assert reply is not None, "the proxy closed without an answer"
            return reply
        finally:
            if own:
                await client.aclose()

    async def ask_tls(self, data: bytes) -> Reply:
        client = await self.tls_client()
        try:
            return await self.ask(data, client)
        finally:
            await client.aclose()


@asynccontextmanager
async def serving(
    data: Mapping[str, str],
    backend: RawBackend | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    extra: tuple[dict[str, Any], ...] = (),
    ports: Callable[[int], tuple[int, ...]] | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[Site]:
    """The proxy (HTTP and HTTPS) in front of ``backend``, with the ConfigMap ``data``."""
    backend = backend or RawBackend()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(backend.serve)
        config = site_config(ports(port) if ports else (port,), data, annotations, extra)
        proxy = Proxy(config, limits=limits, tls=TLSContexts(DEFAULT_CERTIFICATE))
        http = await nursery.start(proxy.serve, "127.0.0.1", 0)
        https = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
        yield Site(
            proxy,
            config,
            http[0].socket.getsockname()[1],
            https[0].socket.getsockname()[1],
            backend,
        )
        nursery.cancel_scope.cancel()


def get(host: bytes = PLAIN, extra: bytes = b"", path: bytes = b"/") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)


def _client_context(
    maximum: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str] | str:
    """(TLS version, cipher) of a handshake with the proxy, or the error that refused it."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock,
            context.wrap_socket(sock, server_hostname=SECURE.decode()) as tls,
        ):
            version, cipher = tls.version(), tls.cipher()
            assert version is not None
            assert cipher is not None
            return version, cipher[0]
    except (ssl.SSLError, ConnectionError) as error:
        return f"refused: {error}"


def seen(request: Request, name: bytes) -> bytes | None:
    """The one value of the field ``name`` the backend received (None: absent)."""
    values = request.header(name)
    assert len(values) <= 1, values
    return values[0] if values else None


def problems_about(config: RouteConfig, key: str) -> list[str]:
    """What the config says about the ConfigMap key ``key``."""
    return [
        p.reason for p in config.problems if p.kind == "ConfigMap" and p.field == f"data[{key}]"
    ]


# ------------------------------------------------------------------ who the client is


FORWARDED = (
    b"X-Forwarded-For: 203.0.113.7\r\n"
    b"X-Forwarded-Proto: myproto\r\n"
    b"X-Forwarded-Host: myhost\r\n"
    b"X-Forwarded-Port: 1234\r\n"
)


@pytest.mark.e2e
def test_use_forwarded_headers_believes_the_peers_x_forwarded_fields() -> None:
    async def scenario() -> None:
        async with serving({"use-forwarded-headers": "true"}) as site:
            assert (await site.ask(get(extra=FORWARDED))).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"203.0.113.7"
            assert seen(request, b"x-real-ip") == b"203.0.113.7"
            assert seen(request, b"x-forwarded-proto") == b"myproto"
            assert seen(request, b"x-forwarded-host") == b"myhost"
            assert seen(request, b"x-forwarded-port") == b"1234"

    run(scenario)


@pytest.mark.e2e
def test_without_use_forwarded_headers_the_x_forwarded_fields_are_the_proxys_own() -> None:
    async def scenario() -> None:
        async with serving({"use-forwarded-headers": "false"}) as site:
            assert (await site.ask(get(extra=FORWARDED))).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"127.0.0.1"
            assert seen(request, b"x-real-ip") == b"127.0.0.1"
            assert seen(request, b"x-forwarded-proto") == b"http"
            assert seen(request, b"x-forwarded-host") == PLAIN
            assert seen(request, b"x-forwarded-port") == str(site.http).encode()

    run(scenario)


@pytest.mark.e2e
def test_forwarded_fields_from_a_peer_outside_proxy_real_ip_cidr_are_not_believed() -> None:
    async def scenario() -> None:
        data = {"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8"}
        async with serving(data) as site:
            assert (await site.ask(get(extra=FORWARDED))).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"127.0.0.1"
            assert seen(request, b"x-real-ip") == b"127.0.0.1"
            assert seen(request, b"x-forwarded-proto") == b"http"

    run(scenario)


@pytest.mark.e2e
def test_the_real_client_is_the_rightmost_address_not_in_proxy_real_ip_cidr() -> None:
    """nginx's real_ip_recursive: trusted proxies on the way are skipped, from the right."""

    async def scenario() -> None:
        data = {"use-forwarded-headers": "true", "proxy-real-ip-cidr": "127.0.0.1/32,10.0.0.0/8"}
        chain = b"X-Forwarded-For: 198.51.100.9, 203.0.113.7, 10.1.2.3\r\n"
        async with serving(data) as site:
            assert (await site.ask(get(extra=chain))).status == 200
            [request] = site.backend.requests
            # compute-full-forwarded-for off: the chain is replaced by the real client
            assert seen(request, b"x-forwarded-for") == b"203.0.113.7"
            assert seen(request, b"x-real-ip") == b"203.0.113.7"

    run(scenario)


@pytest.mark.e2e
def test_compute_full_forwarded_for_appends_the_peer_to_the_chain() -> None:
    async def scenario() -> None:
        data = {
            "use-forwarded-headers": "true",
            "compute-full-forwarded-for": "true",
            "proxy-real-ip-cidr": "127.0.0.1/32,10.0.0.0/8",
        }
        chain = b"X-Forwarded-For: 198.51.100.9, 10.1.2.3\r\n"
        async with serving(data) as site:
            assert (await site.ask(get(extra=chain))).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"198.51.100.9, 10.1.2.3, 127.0.0.1"
            assert seen(request, b"x-real-ip") == b"198.51.100.9"

    run(scenario)


@pytest.mark.e2e
def test_forwarded_for_header_names_the_field_that_holds_the_client() -> None:
    async def scenario() -> None:
        data = {"use-forwarded-headers": "true", "forwarded-for-header": "CF-Connecting-IP"}
        fields = b"CF-Connecting-IP: 203.0.113.7\r\nX-Forwarded-For: 192.0.2.1\r\n"
        async with serving(data) as site:
            assert (await site.ask(get(extra=fields))).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"203.0.113.7"
            assert seen(request, b"x-real-ip") == b"203.0.113.7"

    run(scenario)


@pytest.mark.e2e
def test_enable_real_ip_takes_the_address_and_nothing_else_from_the_peer() -> None:
    async def scenario() -> None:
        async with serving({"enable-real-ip": "true"}) as site:
            assert (await site.ask(get(extra=FORWARDED))).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"203.0.113.7"
            assert seen(request, b"x-real-ip") == b"203.0.113.7"
            assert seen(request, b"x-forwarded-proto") == b"http"
            assert seen(request, b"x-forwarded-host") == PLAIN
            assert seen(request, b"x-forwarded-port") == str(site.http).encode()

    run(scenario)


@pytest.mark.e2e
def test_allow_and_deny_lists_judge_the_real_client_address() -> None:
    async def scenario() -> None:
        data = {
            "enable-real-ip": "true",
            "whitelist-source-range": "203.0.113.0/24",
            "denylist-source-range": "203.0.113.66/32",
        }
        async with serving(data) as site:
            allowed = b"X-Forwarded-For: 203.0.113.7\r\n"
            assert (await site.ask(get(extra=allowed))).status == 200
            denied = b"X-Forwarded-For: 203.0.113.66\r\n"
            assert (await site.ask(get(extra=denied))).status == 403
            outside = b"X-Forwarded-For: 198.51.100.1\r\n"
            assert (await site.ask(get(extra=outside))).status == 403
            assert (await site.ask(get())).status == 403  # the peer itself: 127.0.0.1
            assert len(site.backend.requests) == 1

    run(scenario)


@pytest.mark.e2e
def test_rate_limits_count_per_real_client_address() -> None:
    async def scenario() -> None:
        annotations = {"limit-rps": "1", "limit-burst-multiplier": "1"}
        async with serving({"enable-real-ip": "true"}, annotations=annotations) as site:
            first = b"X-Forwarded-For: 203.0.113.7\r\n"
            second = b"X-Forwarded-For: 203.0.113.8\r\n"
            statuses = [(await site.ask(get(extra=first))).status for _ in range(4)]
            assert statuses[0] == 200
            assert 503 in statuses  # that client's budget is spent
            assert (await site.ask(get(extra=second))).status == 200  # another client's is not

    run(scenario)


@pytest.mark.e2e
def test_the_access_log_names_the_real_client(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving({"enable-real-ip": "true"}) as site:
            with caplog.at_level(logging.INFO, "fastroute.access"):
                assert (
                    await site.ask(get(extra=b"X-Forwarded-For: 203.0.113.7\r\n"))
                ).status == 200
        [line] = [r.getMessage() for r in caplog.records if r.name == "fastroute.access"]
        assert line.startswith('203.0.113.7 "GET /" 200 '), line

    run(scenario)


@pytest.mark.e2e
def test_without_the_keys_the_client_sent_chain_is_replaced_and_the_peer_judged() -> None:
    async def scenario() -> None:
        async with serving({"whitelist-source-range": "203.0.113.0/24"}) as site:
            spoofed = b"X-Forwarded-For: 203.0.113.7\r\n"
            assert (await site.ask(get(extra=spoofed))).status == 403
        async with serving({}) as site:
            assert (
                await site.ask(get(extra=b"X-Real-IP: 203.0.113.7\r\n" + FORWARDED))
            ).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"127.0.0.1"
            assert seen(request, b"x-real-ip") == b"127.0.0.1"

    run(scenario)


# ------------------------------------------------------------------ TLS


@pytest.mark.e2e
def test_ssl_protocols_tls13_refuses_a_client_that_stops_at_tls12() -> None:
    async def scenario() -> None:
        async with serving({}) as site:
            old = _client_context(maximum=ssl.TLSVersion.TLSv1_2)
            assert await trio.to_thread.run_sync(handshake, site.https, old) == (
                "TLSv1.2",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
            )
        async with serving({"ssl-protocols": "TLSv1.3"}) as site:
            old = _client_context(maximum=ssl.TLSVersion.TLSv1_2)
            refused = await trio.to_thread.run_sync(handshake, site.https, old)
            assert isinstance(refused, str)
            assert refused.startswith("refused"), refused
            version = await trio.to_thread.run_sync(handshake, site.https, _client_context())
            assert version[0] == "TLSv1.3"
            assert (await site.ask_tls(get(SECURE))).status == 200

    run(scenario)


@pytest.mark.e2e
def test_ssl_ciphers_are_the_only_tls12_ciphers_offered() -> None:
    async def scenario() -> None:
        data = {"ssl-protocols": "TLSv1.2", "ssl-ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"}
        async with serving(data) as site:
            tls12 = ssl.TLSVersion.TLSv1_2
            other = _client_context(tls12, "ECDHE-ECDSA-AES128-GCM-SHA256")
            refused = await trio.to_thread.run_sync(handshake, site.https, other)
            assert isinstance(refused, str)
            assert refused.startswith("refused"), refused
            both = _client_context(
                tls12, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
            )
            assert await trio.to_thread.run_sync(handshake, site.https, both) == (
                "TLSv1.2",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
            )

    run(scenario)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.e2e
def test_openssl_s_client_tls12_is_refused_under_ssl_protocols_tls13() -> None:
    def s_client(port: int, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-servername",
                SECURE.decode(),
                *flags,
            ],
            input="",
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    async def scenario() -> None:
        async with serving({"ssl-protocols": "TLSv1.3"}) as site:
            refused = await trio.to_thread.run_sync(s_client, site.https, "-tls1_2")
            assert refused.returncode != 0
            accepted = await trio.to_thread.run_sync(s_client, site.https, "-tls1_3")
            assert accepted.returncode == 0, accepted.stderr
            assert "TLSv1.3" in accepted.stdout

    run(scenario)


@pytest.mark.e2e
def test_a_cipher_list_openssl_refuses_keeps_the_one_offered_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reader checks the list; the listener checks again and keeps what worked."""

    async def scenario() -> None:
        data = {"ssl-protocols": "TLSv1.2", "ssl-ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"}
        async with serving(data) as site:
            settings = replace(site.config.settings, ssl_ciphers="NO-SUCH-CIPHER")
            with caplog.at_level(logging.ERROR, "fastroute.proxy"):
                await site.proxy.load(replace(site.config, settings=settings))
            assert "NO-SUCH-CIPHER" in caplog.text
            tls12 = ssl.TLSVersion.TLSv1_2
            other = _client_context(tls12, "ECDHE-ECDSA-AES128-GCM-SHA256")
            refused = await trio.to_thread.run_sync(handshake, site.https, other)
            assert isinstance(refused, str)
            assert refused.startswith("refused")
            assert (await site.ask_tls(get(SECURE))).status == 200

    run(scenario)


# ------------------------------------------------------------------ keep-alive


@pytest.mark.e2e
def test_keep_alive_closes_an_idle_client_connection_after_its_seconds() -> None:
    async def scenario() -> None:
        async with serving({"keep-alive": "1"}) as site:
            client = await site.client()
            assert (await site.ask(get(), client)).status == 200
            answered = trio.current_time()
            assert await client.closed()
            idle = trio.current_time() - answered
            assert 0.8 <= idle < 3.0, idle
            await client.aclose()

    run(scenario)


@pytest.mark.e2e
def test_keep_alive_zero_closes_after_every_response_saying_so() -> None:
    async def scenario() -> None:
        async with serving({"keep-alive": "0"}) as site:
            client = await site.client()
            reply = await site.ask(get(), client)
            assert reply.status == 200
            assert reply.header(b"connection") == b"close"
            assert await client.closed()
            await client.aclose()
            refused = await site.ask(get(path=b"/nowhere", host=b"unknown.example.com"))
            assert refused.header(b"connection") == b"close"

    run(scenario)


@pytest.mark.e2e
def test_upstream_connections_are_reused_unless_upstream_keepalive_connections_is_zero() -> None:
    async def scenario() -> None:
        for data, connections in (({}, 1), ({"upstream-keepalive-connections": "0"}, 3)):
            async with serving(data) as site:
                for _ in range(3):
                    assert (await site.ask(get())).status == 200
                assert len(site.backend.connections) == connections, data

    run(scenario)


@pytest.mark.e2e
def test_upstream_keepalive_timeout_closes_idle_upstream_connections() -> None:
    async def scenario() -> None:
        async with serving({"upstream-keepalive-timeout": "1"}) as site:
            assert (await site.ask(get())).status == 200
            [first] = site.backend.connections
            started = trio.current_time()
            await wait_for(first.closed.is_set, "the idle upstream connection closed")
            assert trio.current_time() - started >= 0.5
            assert (await site.ask(get())).status == 200
            assert len(site.backend.connections) == 2

    run(scenario)


# ------------------------------------------------------------------ CORS on the proxy's errors

ORIGIN = b"Origin: https://app.example.com\r\n"


@contextmanager
def closed_port() -> Iterator[int]:
    """A port nobody listens on: connecting is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port


@pytest.mark.e2e
def test_cors_fields_are_on_the_proxys_502_and_413_for_a_cors_route() -> None:
    async def scenario() -> None:
        annotations = {"enable-cors": "true"}
        with closed_port() as dead:
            async with serving({}, annotations=annotations, ports=lambda _: (dead,)) as site:
                reply = await site.ask(get(extra=ORIGIN))
                assert reply.status == 502
                assert reply.header(b"access-control-allow-origin") == b"*"
        async with serving({"proxy-body-size": "1k"}, annotations=annotations) as site:
            body = b"x" * 2048
            big = b"POST / HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n%s" % (
                PLAIN,
                ORIGIN,
                len(body),
                body,
            )
            reply = await site.ask(big)
            assert reply.status == 413
            assert reply.header(b"access-control-allow-origin") == b"*"
        async with serving({"proxy-body-size": "1k"}) as site:
            reply = await site.ask(big)
            assert reply.status == 413
            assert reply.header(b"access-control-allow-origin") is None

    run(scenario)


@pytest.mark.e2e
def test_cors_fields_are_on_the_proxys_504() -> None:
    async def silent(connection: BackendConnection, request: Request) -> None:
        await trio.sleep_forever()

    async def scenario() -> None:
        data = {"proxy-read-timeout": "1"}
        async with serving(data, RawBackend(silent), annotations={"enable-cors": "true"}) as site:
            reply = await site.ask(get(extra=ORIGIN))
            assert reply.status == 504
            assert reply.header(b"access-control-allow-origin") == b"*"

    run(scenario)


# ------------------------------------------------------------------ route-level keys


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, b"max-age=31536000; includeSubDomains"),
        ({"hsts-max-age": "100"}, b"max-age=100; includeSubDomains"),
        ({"hsts-include-subdomains": "false"}, b"max-age=31536000"),
        ({"hsts-preload": "true"}, b"max-age=31536000; includeSubDomains; preload"),
        ({"hsts": "false", "hsts-max-age": "100"}, None),
    ],
)
@pytest.mark.e2e
def test_hsts_keys_shape_the_header_on_https_responses_of_tls_hosts(
    data: dict[str, str], expected: bytes | None
) -> None:
    async def scenario() -> None:
        async with serving({**data, "ssl-redirect": "false"}) as site:
            secure = await site.ask_tls(get(SECURE))
            assert secure.status == 200
            assert secure.header(b"strict-transport-security") == expected
            plain = await site.ask(get(SECURE))  # the same host over HTTP: never
            assert plain.status == 200
            assert plain.header(b"strict-transport-security") is None

    run(scenario)


@pytest.mark.e2e
def test_ssl_redirect_sends_plain_http_requests_for_tls_hosts_to_https() -> None:
    async def scenario() -> None:
        async with serving({}) as site:
            reply = await site.ask(get(SECURE, path=b"/page?q=1"))
            assert reply.status == 308
            assert reply.header(b"location") == b"https://secure.example.com/page?q=1"
            assert (await site.ask(get(PLAIN))).status == 200  # not a TLS host
        async with serving({"ssl-redirect": "false"}) as site:
            assert (await site.ask(get(SECURE))).status == 200
        async with serving({"ssl-redirect": "false", "force-ssl-redirect": "true"}) as site:
            reply = await site.ask(get(PLAIN))
            assert reply.status == 308
            assert reply.header(b"location") == b"https://plain.example.com/"
        assert not site.backend.requests[1:]

    run(scenario)


@pytest.mark.e2e
def test_proxy_connect_timeout_bounds_a_hanging_connect() -> None:
    async def scenario() -> None:
        limits = Limits(connect_timeout=30.0)
        with unanswered_port() as hung:
            data = {"proxy-connect-timeout": "1"}
            async with serving(data, ports=lambda _: (hung,), limits=limits) as site:
                started = trio.current_time()
                assert (await site.ask(get())).status == 504
                assert 0.8 <= trio.current_time() - started < 5.0

    run(scenario)


@pytest.mark.e2e
def test_proxy_read_timeout_bounds_the_wait_for_a_response() -> None:
    async def silent(connection: BackendConnection, request: Request) -> None:
        await trio.sleep_forever()

    async def scenario() -> None:
        limits = Limits(upstream_timeout=30.0)
        data = {"proxy-read-timeout": "1"}
        async with serving(data, RawBackend(silent), limits=limits) as site:
            started = trio.current_time()
            assert (await site.ask(get())).status == 504
            assert 0.8 <= trio.current_time() - started < 5.0

    run(scenario)


@pytest.mark.e2e
def test_proxy_send_timeout_bounds_a_request_body_the_upstream_does_not_read() -> None:
    async def scenario() -> None:
        limits = Limits(upstream_timeout=30.0, head_timeout=30.0)
        data = {"proxy-send-timeout": "1", "proxy-body-size": "0"}
        async with trio.open_nursery() as nursery:
            accepted: list[trio.SocketStream] = []  # held open, never read

            async def hold(stream: trio.SocketStream) -> None:
                accepted.append(stream)
                await trio.sleep_forever()

            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, hold, listeners)
            deaf = listeners[0].socket.getsockname()[1]
            async with serving(data, ports=lambda _: (deaf,), limits=limits) as site:
                size = 256 * 1024 * 1024
                client = await site.client()
                await client.send(
                    b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (PLAIN, size)
                )

                async def upload() -> None:
                    piece = b"x" * 65536
                    with trio.move_on_after(DEADLINE):
                        for _ in range(size // len(piece)):
                            try:
                                await client.send(piece)
                            except (trio.BrokenResourceError, trio.ClosedResourceError):
                                return  # the proxy answered and closed

                started = trio.current_time()
                nursery.start_soon(upload)
                reply = await client.reply(b"POST")
                assert reply is not None
                assert reply.status == 504
                assert trio.current_time() - started < 8.0
                assert accepted
                await client.aclose()
            nursery.cancel_scope.cancel()

    run(scenario)


async def _two_backends(
    nursery: trio.Nursery,
) -> tuple[RawBackend, int]:
    """A backend that answers 502 to everything, and its port."""

    async def bad_gateway(connection: BackendConnection, request: Request) -> None:
        await connection.send(response(b"down", 502))

    failing = RawBackend(bad_gateway)
    return failing, await nursery.start(failing.serve)


@pytest.mark.parametrize(
    ("data", "all_ok"),
    [
        ({}, False),
        ({"proxy-next-upstream": "error timeout http_502"}, True),
        (
            {"proxy-next-upstream": "error timeout http_502", "proxy-next-upstream-tries": "1"},
            False,
        ),
    ],
)
@pytest.mark.e2e
def test_proxy_next_upstream_asks_the_next_endpoint_after_a_502(
    data: dict[str, str], all_ok: bool
) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            failing, failing_port = await _two_backends(nursery)
            async with serving(data, ports=lambda good: (failing_port, good)) as site:
                statuses = [(await site.ask(get())).status for _ in range(4)]
            assert failing.requests  # the failing endpoint was asked
            assert set(statuses) == ({200} if all_ok else {200, 502}), statuses
            nursery.cancel_scope.cancel()

    run(scenario)


OTHER = b"other.example.com"


@pytest.mark.parametrize(
    ("key", "global_list", "own_list"),
    [
        ("whitelist-source-range", "10.0.0.0/8", "127.0.0.1/32"),
        ("denylist-source-range", "127.0.0.1/32", "10.0.0.0/8"),
    ],
)
@pytest.mark.e2e
def test_a_global_source_range_applies_unless_an_ingress_has_its_own(
    key: str, global_list: str, own_list: str
) -> None:
    async def scenario() -> None:
        own = ingress("own", (OTHER,), {key: own_list})
        async with serving({key: global_list}, extra=(own,)) as site:
            assert (await site.ask(get(PLAIN))).status == 403
            assert (await site.ask(get(OTHER))).status == 200
            assert len(site.backend.requests) == 1

    run(scenario)


@pytest.mark.e2e
def test_limit_req_status_code_is_the_status_of_a_request_over_the_rate() -> None:
    async def scenario() -> None:
        annotations = {"limit-rps": "1", "limit-burst-multiplier": "1"}
        async with serving({"limit-req-status-code": "429"}, annotations=annotations) as site:
            statuses = [(await site.ask(get())).status for _ in range(4)]
            assert statuses[0] == 200
            assert set(statuses) == {200, 429}

    run(scenario)


@pytest.mark.e2e
def test_limit_conn_status_code_is_the_status_of_a_connection_over_the_limit() -> None:
    release = trio.Event()

    async def held(connection: BackendConnection, request: Request) -> None:
        await release.wait()
        await connection.send(response(b"done"))

    async def scenario() -> None:
        data = {"limit-conn-status-code": "429"}
        async with serving(data, RawBackend(held), annotations={"limit-connections": "1"}) as site:
            first = await site.client()
            await first.send(get())
            await wait_for(lambda: len(site.backend.requests) == 1, "the first request upstream")
            assert (await site.ask(get())).status == 429
            release.set()
            reply = await first.reply()
            assert reply is not None
            assert reply.status == 200
            await first.aclose()

    run(scenario)


@pytest.mark.e2e
def test_add_headers_and_proxy_set_headers_name_configmaps_of_fields() -> None:
    async def scenario() -> None:
        data = {
            "add-headers": "ingress/response-fields",
            "proxy-set-headers": "ingress/request-fields",
        }
        extra = (
            configmap("ingress/response-fields", {"X-Served-By": "fastroute"}),
            configmap("ingress/request-fields", {"X-Team": "web"}),
        )
        async with serving(data, extra=extra) as site:
            reply = await site.ask(get())
            assert reply.status == 200
            assert reply.header(b"x-served-by") == b"fastroute"
            [request] = site.backend.requests
            assert seen(request, b"x-team") == b"web"
            assert seen(request, b"x-served-by") is None

    run(scenario)


@pytest.mark.e2e
def test_use_proxy_protocol_takes_the_client_from_the_proxy_header() -> None:
    async def scenario() -> None:
        async with serving({"use-proxy-protocol": "true"}) as site:
            header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n"
            assert (await site.ask(header + get())).status == 200
            [request] = site.backend.requests
            assert seen(request, b"x-forwarded-for") == b"203.0.113.7"
            assert seen(request, b"x-real-ip") == b"203.0.113.7"
            client = await site.client()
            await client.send(get())  # no PROXY header: closed unanswered
            assert await client.closed()
            await client.aclose()
            assert len(site.backend.requests) == 1

    run(scenario)


@pytest.mark.e2e
def test_allow_snippet_annotations_is_accepted_and_snippets_still_never_run() -> None:
    async def scenario() -> None:
        snippet = {"configuration-snippet": 'more_set_headers "X-Snippet: ran";'}
        data = {"allow-snippet-annotations": "true"}
        async with serving(data, annotations=snippet) as site:
            [note] = problems_about(site.config, "allow-snippet-annotations")
            assert "never executed" in note
            reply = await site.ask(get())
            assert reply.status == 200
            assert reply.header(b"x-snippet") is None

    run(scenario)


@pytest.mark.e2e
def test_a_rejected_key_keeps_its_default_and_the_other_keys_apply() -> None:
    async def scenario() -> None:
        data = {
            "keep-alive": "forever",  # rejected: 75 s
            "ssl-protocols": "TLSv9",  # rejected: TLSv1.2 and TLSv1.3
            "limit-req-status-code": "700",  # rejected: 503
            "hsts-max-age": "100",  # applies
            "proxy-set-headers": "ingress/missing",  # rejected: no fields
            "add-headers": "ingress/response-fields",  # applies
        }
        limited = ingress("limited", (OTHER,), {"limit-rps": "1", "limit-burst-multiplier": "1"})
        extra = (configmap("ingress/response-fields", {"X-Served-By": "fastroute"}), limited)
        async with serving(data, extra=extra) as site:
            for key in (
                "keep-alive",
                "ssl-protocols",
                "limit-req-status-code",
                "proxy-set-headers",
            ):
                assert problems_about(site.config, key), key
            assert not problems_about(site.config, "hsts-max-age")
            secure = await site.ask_tls(get(SECURE))
            assert secure.header(b"strict-transport-security") == b"max-age=100; includeSubDomains"
            assert secure.header(b"x-served-by") == b"fastroute"
            statuses = {(await site.ask(get(OTHER))).status for _ in range(4)}
            assert statuses == {200, 503}  # the limit's default status
            old = _client_context(maximum=ssl.TLSVersion.TLSv1_2)
            version = await trio.to_thread.run_sync(handshake, site.https, old)
            assert version[0] == "TLSv1.2"
            client = await site.client()
            assert (await site.ask(get(), client)).status == 200
            assert (await site.ask(get(), client)).status == 200  # still kept alive
            await client.aclose()

    run(scenario)


# ------------------------------------------------------------------ the realip walk


@pytest.mark.parametrize(
    ("peer", "chain", "client"),
    [
        ("127.0.0.1", b"203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", b"198.51.100.9, 203.0.113.7, 10.1.2.3", "203.0.113.7"),
        ("127.0.0.1", b"10.0.0.9, 10.1.2.3", "10.0.0.9"),  # all trusted: the leftmost
        ("127.0.0.1", b"203.0.113.7:5000", "203.0.113.7"),  # a port is not the address
        ("127.0.0.1", b"[2001:db8::7]:5000", "2001:db8::7"),
        ("127.0.0.1", b"2001:db8::7", "2001:db8::7"),
        ("127.0.0.1", b"198.51.100.9, unknown, 10.1.2.3", "10.1.2.3"),  # the walk stops
        ("127.0.0.1", b"garbage", "127.0.0.1"),
        ("127.0.0.1", b"", "127.0.0.1"),
        ("192.0.2.1", b"203.0.113.7", "192.0.2.1"),  # an untrusted peer is the client
    ],
)
def test_the_real_client_walk_matches_nginx_real_ip_recursive(
    peer: str, chain: bytes, client: str
) -> None:
    settings = replace(
        DEFAULT_SETTINGS, enable_real_ip=True, proxy_real_ip_cidr=("127.0.0.1/32", "10.0.0.0/8")
    )
    assert ClientTrust(settings).real_client(peer, chain) == client
