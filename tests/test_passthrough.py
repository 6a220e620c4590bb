"""SSL passthrough (``--enable-ssl-passthrough`` and ``ssl-passthrough``), end to end.

A real TLS backend on 127.0.0.1 serves its own certificate, made here; real clients
(the stdlib ``ssl`` client, ``openssl s_client`` where installed) connect to the proxy's
HTTPS listener and check whose certificate they get, and who answers. The ClientHello
reader is tested against hellos Python's ``ssl`` module really sends (captured with a
``MemoryBIO``), cut short, split over records, and against garbage.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.__main__ import _options, _parser
from controller.app import Controller
from fastroute.ingress import ConfigBuilder, build_config
from fastroute.ingress.certs import Certificate, self_signed_certificate, tls_secret
from fastroute.ingress.model import RouteConfig
from fastroute.ingress.settings import Settings
from fastroute.proxy.client_hello import (
    HELLO_LIMIT,
    ClientHello,
    NeedMore,
    NotClientHello,
    read_client_hello,
)
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Limits, Proxy
from fastroute.proxy.tls import TLSContexts, pem_path
from tests.echo import Echo
from tests.objects import endpoint_slice
from tests.objects import service as service_object
from tests.polling import DEADLINE, wait_for
from tests.polling import run_within as run
from tests.raw import unanswered_port
from tests.sites import closed_port

PASS = "pass.example.com"  # passed through to the TLS backend
PLAIN = "plain.example.com"  # terminated by the proxy, served by an HTTP backend
BACKEND_CERT = self_signed_certificate([PASS, "*.wild.example.com"], common_name="the backend")
PROXY_CERT = self_signed_certificate([PLAIN], common_name="the proxy")
PREFIX = "nginx.ingress.kubernetes.io/"


# ------------------------------------------------------------------ the ClientHello reader


def client_hello(server_name: str | None, tls13: bool = True) -> bytes:
    """The first flight Python's ssl client sends for ``server_name``: its ClientHello."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def split_into_records(hello: bytes, cuts: list[int]) -> bytes:
    """The same ClientHello, its handshake message split over several records at ``cuts``."""
    header, message = hello[:3], hello[5:]
    points = sorted({c for c in cuts if 0 < c < len(message)})
    pieces = [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]
    return b"".join(header + len(p).to_bytes(2) + p for p in pieces)


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOST_NAMES = (
    st.lists(LABEL, min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda n: len(n) < 254 and not _is_address(n))
)


def _is_address(name: str) -> bool:
    """OpenSSL reads four dotted numbers (``0.0.0.0``, ``01.2.3.4``) as an IP address and
    never sends one as SNI: not a host name for these tests."""
    return re.fullmatch(r"[0-9]+(\.[0-9]+){3}", name) is not None


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@FAST
@given(name=HOST_NAMES, tls13=st.booleans())
def test_the_reader_finds_the_name_a_real_client_sends(name: str, tls13: bool) -> None:
    hello = client_hello(name, tls13)
    assert read_client_hello(hello) == ClientHello(name, len(hello))


def test_a_hello_without_a_name_reads_as_none() -> None:
    for server_name in (None, "127.0.0.1"):  # an address is never sent as SNI
        hello = client_hello(server_name)
        assert read_client_hello(hello) == ClientHello(None, len(hello))


def test_an_internationalized_name_reads_as_its_a_label() -> None:
    hello = client_hello("bücher.example")
    assert read_client_hello(hello) == ClientHello("xn--bcher-kva.example", len(hello))


@pytest.mark.slow
@FAST
@given(name=HOST_NAMES, data=st.data())
def test_a_cut_short_hello_asks_for_no_more_than_it_needs(name: str, data: st.DataObject) -> None:
    hello = client_hello(name)
    cut = data.draw(st.integers(0, len(hello) - 1))
    reading = read_client_hello(hello[:cut])
    assert isinstance(reading, NeedMore)
    assert cut < reading.total <= len(hello)


@pytest.mark.slow
@FAST
@given(
    name=HOST_NAMES, cuts=st.lists(st.integers(1, 600), max_size=8), extra=st.binary(max_size=40)
)
def test_a_hello_split_over_records_reads_the_same(
    name: str, cuts: list[int], extra: bytes
) -> None:
    split = split_into_records(client_hello(name), cuts)
    assert read_client_hello(split + extra) == ClientHello(name, len(split))


@FAST
@given(garbage=st.binary(max_size=HELLO_LIMIT + 10))
def test_garbage_is_refused_or_asks_for_a_bounded_amount(garbage: bytes) -> None:
    reading = read_client_hello(garbage)
    if isinstance(reading, NeedMore):
        assert len(garbage) < reading.total <= HELLO_LIMIT
    else:
        assert isinstance(reading, NotClientHello | ClientHello)


@pytest.mark.slow
@FAST
@given(name=HOST_NAMES, data=st.data())
def test_a_corrupted_hello_never_breaks_the_reader(name: str, data: st.DataObject) -> None:
    hello = bytearray(client_hello(name))
    at = data.draw(st.integers(0, len(hello) - 1))
    hello[at] = data.draw(st.integers(0, 255))
    reading = read_client_hello(bytes(hello))
    assert isinstance(reading, NeedMore | NotClientHello | ClientHello)
    if isinstance(reading, NeedMore):
        assert reading.total <= HELLO_LIMIT


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: pass.example.com\r\n\r\n", "does not start a TLS record"),
        (b"\x16\x02\x00\x00\x10", "not TLS"),
        (b"\x16\x03\x01\x00\x00", "a record of 0 bytes"),
        (b"\x16\x03\x01\x40\x01", "a record of 16385 bytes"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "is not a ClientHello"),
    ],
    ids=["plain-http", "ssl2-version", "empty-record", "oversized-record", "server-hello"],
)
def test_what_is_not_a_client_hello_says_why(data: bytes, reason: str) -> None:
    reading = read_client_hello(data)
    assert isinstance(reading, NotClientHello)
    assert reason in reading.reason


def test_a_hello_with_two_server_name_extensions_is_refused() -> None:
    hello = client_hello(PASS)
    body = hello[9:]
    # the extensions block is the body's tail; find the server_name one and repeat it
    name = PASS.encode()
    entry = b"\x00" + len(name).to_bytes(2) + name
    extension = b"\x00\x00" + (len(entry) + 2).to_bytes(2) + (len(entry)).to_bytes(2) + entry
    assert extension in body
    doubled_body = body.replace(extension, extension + extension)
    at = body.index(extension)
    # grow the extensions' length, the message's and the record's by the extension's size
    grown = bytearray(doubled_body)
    length_at = _extensions_length_offset(body)
    assert length_at < at
    total = int.from_bytes(grown[length_at : length_at + 2]) + len(extension)
    grown[length_at : length_at + 2] = total.to_bytes(2)
    message = b"\x01" + len(grown).to_bytes(3) + bytes(grown)
    record = hello[:3] + len(message).to_bytes(2) + message
    reading = read_client_hello(record)
    assert isinstance(reading, NotClientHello)
    assert "appears twice" in reading.reason


def _extensions_length_offset(body: bytes) -> int:
    """Where a ClientHello body's extensions length is (after random, session, suites...)."""
    at = 2 + 32
    at += 1 + body[at]
    at += 2 + int.from_bytes(body[at : at + 2])
    at += 1 + body[at]
    return at


# ------------------------------------------------------------------ the TLS backend


class TLSBackend:
    """An HTTPS backend on 127.0.0.1 with its own certificate; every answer says so.

    It answers one request per connection with JSON: ``backend`` ("tls"), ``sni`` (the
    server name its TLS layer saw) and ``first`` (the first bytes of the request, which
    a PROXY header would have come before), then closes the connection.
    """

    def __init__(self, certificate: Certificate) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with pem_path(certificate.chain_pem + b"\n" + certificate.key_pem) as path:
            context.load_cert_chain(path)
        self._names: dict[int, str | None] = {}
        context.sni_callback = self._note
        self.context = context
        self.handshakes = 0

    def _note(self, obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        self._names[id(obj)] = name

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, plain: trio.SocketStream) -> None:
        stream = trio.SSLStream(plain, self.context, server_side=True)
        try:
            await stream.do_handshake()
            self.handshakes += 1
            received = b""
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some(65536)
                if not data:
                    return
                received += data
            body = json.dumps(
                {
                    "backend": "tls",
                    "sni": self._names.get(id(stream._ssl_object)),
                    "first": received[:16].decode("latin-1"),
                }
            ).encode()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await plain.aclose()


# ------------------------------------------------------------------ objects and proxy


def service(name: str, port: int, *more_ports: int) -> list[dict[str, Any]]:
    """Service ``name`` on port 443 whose endpoints are 127.0.0.1 at ``port`` (and more)."""
    slices = (
        endpoint_slice(name, p, name=f"{name}-{i}") for i, p in enumerate((port, *more_ports))
    )
    return [service_object(name, ports=[{"port": 443}]), *slices]


def ingress(
    name: str,
    host: str,
    backend: str,
    annotations: dict[str, str] | None = None,
    paths: tuple[str, ...] = ("/",),
    tls_secret_name: str = "",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ingressClassName": "fastroute",
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": backend, "port": {"number": 443}}},
                        }
                        for path in paths
                    ]
                },
            }
        ],
    }
    if tls_secret_name:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


PASSTHROUGH = {PREFIX + "ssl-passthrough": "true"}


def site(tls_port: int, http_port: int, *more_tls_ports: int) -> list[dict[str, Any]]:
    """PASS passed through to the TLS backend, PLAIN terminated with PROXY_CERT."""
    return [
        *service("secure", tls_port, *more_tls_ports),
        *service("web", http_port),
        tls_secret("default", "plain-tls", PROXY_CERT),
        ingress("pass", PASS, "secure", PASSTHROUGH),
        ingress("plain", PLAIN, "web", tls_secret_name="plain-tls"),
    ]


@dataclass
class Seen:
    """What a client saw: the certificate's common name, whether it verified, the answer."""

    common_name: str
    answer: dict[str, Any]


def fetch(
    port: int, server_name: str | None, ca: Certificate | None = None, first: bytes = b""
) -> Seen:
    """A GET over TLS to the proxy (``first`` is sent before the ClientHello), verifying
    the server against ``ca`` when given; the certificate's CN and the JSON answer."""
    context = ssl.create_default_context(cadata=ca.chain_pem.decode() if ca else None)
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw:
        raw.sendall(first)
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            host = server_name or PLAIN
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
    assert der is not None
    common = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    head, _, body = received.partition(b"\r\n\r\n")
    answer = json.loads(body) if head.startswith(b"HTTP/1.1 200") else {"status": head[:12]}
    return Seen(str(common[0].value), answer)


@dataclass
class Running:
    https_port: int
    tls_backend: TLSBackend
    metrics: Metrics
    proxy: Proxy


@asynccontextmanager
async def running(
    *,
    enabled: bool = True,
    limits: Limits | None = None,
    configure: Any = None,
    more_tls_ports: tuple[int, ...] = (),
) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        tls_backend = TLSBackend(BACKEND_CERT)
        tls_port = await nursery.start(tls_backend.serve)
        http_port = await nursery.start(Echo("web").serve)
        config = build_config(site(tls_port, http_port, *more_tls_ports), ssl_passthrough=enabled)
        if configure is not None:
            config = configure(config)
        metrics = Metrics()
        proxy = Proxy(config, tls=TLSContexts(), limits=limits, metrics=metrics)
        listeners = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
        yield Running(listeners[0].socket.getsockname()[1], tls_backend, metrics, proxy)
        nursery.cancel_scope.cancel()


async def in_thread(function: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(function, *args)


def closed_by_the_proxy(sock: socket.socket) -> bool:
    """Whether the proxy closes ``sock`` (a close with bytes unread is a reset) before
    the socket's timeout."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def counted(metrics: Metrics, result: str) -> float:
    """``fastroute_ssl_passthrough_connections_total`` for ``result``, over every label."""
    total = 0.0
    for line in metrics.text().decode().splitlines():
        name, _, labels = line.partition("{")
        if name == "fastroute_ssl_passthrough_connections_total" and f'result="{result}"' in labels:
            total += float(line.rpartition(" ")[2])
    return total


# ------------------------------------------------------------------ end to end


@pytest.mark.e2e
def test_a_passthrough_host_gets_the_backends_certificate_and_answer() -> None:
    async def scenario() -> None:
        async with running() as setup:
            seen = await in_thread(fetch, setup.https_port, PASS, BACKEND_CERT)
            assert seen.common_name == "the backend"  # verified against the backend's own
            assert seen.answer["backend"] == "tls"
            assert seen.answer["sni"] == PASS

    run(scenario)


@pytest.mark.e2e
def test_other_hosts_on_the_listener_are_still_terminated_by_the_proxy() -> None:
    async def scenario() -> None:
        async with running() as setup:
            seen = await in_thread(fetch, setup.https_port, PLAIN, PROXY_CERT)
            assert seen.common_name == "the proxy"
            assert seen.answer["backend"] == "web"
            without_sni = await in_thread(fetch, setup.https_port, None)
            assert without_sni.common_name == "fastroute default certificate"
            assert setup.tls_backend.handshakes == 0

    run(scenario)


@pytest.mark.e2e
def test_the_sni_is_matched_without_regard_to_case() -> None:
    async def scenario() -> None:
        async with running() as setup:
            seen = await in_thread(fetch, setup.https_port, "PASS.Example.com")
            assert seen.common_name == "the backend"

    run(scenario)


@pytest.mark.e2e
def test_without_the_flag_the_annotation_passes_nothing_through() -> None:
    async def scenario() -> None:
        async with running(enabled=False) as setup:
            seen = await in_thread(fetch, setup.https_port, PASS)
            assert seen.common_name == "fastroute default certificate"
            assert setup.tls_backend.handshakes == 0

    run(scenario)


def test_without_the_flag_the_ingress_is_warned() -> None:
    config = build_config(site(1, 2))
    reasons = [p.reason for p in config.warnings() if p.name == "default/pass"]
    assert any("--enable-ssl-passthrough" in reason for reason in reasons)
    assert build_config(site(1, 2), ssl_passthrough=True).passthrough_for(PASS) is not None


@pytest.mark.e2e
def test_a_connection_is_counted_and_logged_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running() as setup:
            with caplog.at_level(logging.INFO, logger="fastroute.access"):
                await in_thread(fetch, setup.https_port, PASS, BACKEND_CERT)
                await wait_for(lambda: counted(setup.metrics, "relayed") == 1, "the count")
            lines = [r.getMessage() for r in caplog.records if r.name == "fastroute.access"]
            assert any(f"TLS {PASS}" in line and "default/pass" in line for line in lines)

    run(scenario)


@pytest.mark.e2e
def test_an_endpoint_that_refuses_is_skipped_for_the_next() -> None:
    async def scenario() -> None:
        refusing = closed_port()
        async with running(more_tls_ports=(refusing,)) as setup:
            for _ in range(3):  # every turn of the round robin, the refusing one's too
                seen = await in_thread(fetch, setup.https_port, PASS, BACKEND_CERT)
                assert seen.answer["sni"] == PASS
            assert b'reason="connect"' in setup.metrics.text()

    run(scenario)


@pytest.mark.e2e
def test_a_backend_with_no_endpoint_closes_the_connection() -> None:
    async def scenario() -> None:
        def unreachable(config: RouteConfig) -> RouteConfig:
            target = config.passthrough[PASS]
            assert target is not None
            gone = replace(target, backend=replace(target.backend, endpoints=()))
            return replace(config, passthrough={PASS: gone})

        async with running(configure=unreachable) as setup:
            with pytest.raises((ssl.SSLError, OSError)):
                await in_thread(fetch, setup.https_port, PASS)
            assert counted(setup.metrics, "no_endpoints") == 1
            seen = await in_thread(fetch, setup.https_port, PLAIN, PROXY_CERT)
            assert seen.answer["backend"] == "web"

    run(scenario)


@pytest.mark.e2e
def test_with_proxy_protocol_the_header_is_read_and_not_passed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ingress-nginx reads the load balancer's PROXY header on the TLS port and sends its
    passthrough backends none: the backend's handshake would fail on one."""

    def proxy_protocol(config: RouteConfig) -> RouteConfig:
        return replace(config, settings=Settings(use_proxy_protocol=True))

    async def scenario() -> None:
        async with running(configure=proxy_protocol) as setup:
            header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n"
            with caplog.at_level(logging.INFO, logger="fastroute.access"):
                seen = await in_thread(fetch, setup.https_port, PASS, BACKEND_CERT, header)
                assert seen.answer["first"].startswith("GET / HTTP/1.1")
                await wait_for(
                    lambda: any("203.0.113.7" in r.getMessage() for r in caplog.records),
                    "the access log line with the client's address",
                )
            terminated = await in_thread(fetch, setup.https_port, PLAIN, PROXY_CERT, header)
            assert terminated.answer["backend"] == "web"

    run(scenario)


@pytest.mark.e2e
def test_a_truncated_hello_is_closed_at_the_deadline_and_blocks_no_one() -> None:
    half = client_hello(PASS)[:100]

    async def scenario() -> None:
        async with running(limits=Limits(head_timeout=1.0)) as setup:

            def stalled() -> bool:
                with socket.create_connection(("127.0.0.1", setup.https_port), DEADLINE) as s:
                    s.sendall(half)
                    return closed_by_the_proxy(s)

            async with trio.open_nursery() as nursery:
                results: list[bool] = []

                async def stall() -> None:
                    results.append(await in_thread(stalled))

                nursery.start_soon(stall)
                seen = await in_thread(fetch, setup.https_port, PASS, BACKEND_CERT)
                assert seen.answer["sni"] == PASS  # served while the other one stalls
            assert results == [True]

    run(scenario)


@pytest.mark.e2e
def test_a_hello_cut_short_by_the_client_closes_at_once() -> None:
    """A client that sends part of a hello and shuts its side down is not waited for
    until the deadline (which is far off here)."""
    half = client_hello(PASS)[:100]

    async def scenario() -> None:
        async with running(limits=Limits(head_timeout=DEADLINE * 10)) as setup:

            def cut_short() -> bool:
                with socket.create_connection(("127.0.0.1", setup.https_port), DEADLINE) as s:
                    s.sendall(half)
                    s.shutdown(socket.SHUT_WR)
                    return closed_by_the_proxy(s)

            assert await in_thread(cut_short)

    run(scenario)


@pytest.mark.e2e
def test_garbage_on_the_tls_port_is_refused_without_waiting() -> None:
    async def scenario() -> None:
        async with running(limits=Limits(head_timeout=DEADLINE * 10)) as setup:

            def plain_http() -> bytes:
                with socket.create_connection(("127.0.0.1", setup.https_port), DEADLINE) as s:
                    s.sendall(f"GET / HTTP/1.1\r\nHost: {PASS}\r\n\r\n".encode())
                    received = b""
                    while chunk := s.recv(100):
                        received += chunk
                    return received

            answer = await in_thread(plain_http)
            assert b"HTTP/1.1 200" not in answer  # a TLS alert at most, then the close
            assert setup.tls_backend.handshakes == 0

    run(scenario)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.e2e
def test_openssl_s_client_sees_the_backends_certificate() -> None:
    async def scenario() -> None:
        async with running() as setup:

            def s_client(name: str) -> str:
                result = subprocess.run(
                    [
                        "openssl",
                        "s_client",
                        "-connect",
                        f"127.0.0.1:{setup.https_port}",
                        "-servername",
                        name,
                    ],
                    input=b"",
                    capture_output=True,
                    timeout=DEADLINE,
                    check=False,
                )
                return result.stdout.decode(errors="replace")

            assert "CN = the backend" in await in_thread(s_client, PASS)
            assert "CN = the proxy" in await in_thread(s_client, PLAIN)

    run(scenario)


# ------------------------------------------------------------------ what is passed through


def test_a_wildcard_host_passes_through_except_the_exact_hosts_it_covers() -> None:
    objects = [
        *service("secure", 1),
        *service("web", 2),
        ingress("wild", "*.wild.example.com", "secure", PASSTHROUGH),
        ingress("exact", "own.wild.example.com", "web"),
    ]
    config = build_config(objects, ssl_passthrough=True)
    found = config.passthrough_for("any.wild.example.com")
    assert found is not None
    assert found.ingress == "default/wild"
    assert config.passthrough_for("own.wild.example.com") is None
    assert config.passthrough_for("wild.example.com") is None
    assert config.passthrough_for("a.b.wild.example.com") is None


def test_the_roots_backend_serves_and_the_other_paths_are_warned() -> None:
    objects = [
        *service("secure", 1),
        *service("api", 2),
        ingress("pass", PASS, "secure", PASSTHROUGH, paths=("/",)),
        ingress("more", PASS, "api", paths=("/api",)),
    ]
    config = build_config(objects, ssl_passthrough=True)
    found = config.passthrough_for(PASS)
    assert found is not None
    assert found.backend.service == "secure"
    warned = [p for p in config.warnings() if p.name == "default/more"]
    assert [p.field for p in warned] == ["spec.rules[0].http.paths[0]"]
    assert "not reached over HTTPS" in warned[0].reason


def test_a_host_without_a_root_rule_is_not_passed_through() -> None:
    objects = [*service("secure", 1), ingress("pass", PASS, "secure", PASSTHROUGH, ("/api",))]
    config = build_config(objects, ssl_passthrough=True)
    assert config.passthrough_for(PASS) is None
    assert any("no rule for path '/'" in p.reason for p in config.warnings())


def test_the_fastroute_prefix_and_false_are_read_too() -> None:
    def passed(annotations: dict[str, str]) -> bool:
        objects = [*service("secure", 1), ingress("pass", PASS, "secure", annotations)]
        return build_config(objects, ssl_passthrough=True).passthrough_for(PASS) is not None

    assert passed({"fastroute.io/ssl-passthrough": "true"})
    assert not passed({PREFIX + "ssl-passthrough": "false"})


# ------------------------------------------------------------------ the controller's flag


@pytest.mark.parametrize("flag", [True, False], ids=["with-flag", "without-flag"])
@pytest.mark.e2e
def test_the_controller_flag_turns_passthrough_on(tmp_path: Path, flag: bool) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            tls_backend = TLSBackend(BACKEND_CERT)
            tls_port = await nursery.start(tls_backend.serve)
            http_port = await nursery.start(Echo("web").serve)
            (tmp_path / "site.yaml").write_text(yaml.safe_dump_all(site(tls_port, http_port)))
            argv = ["--manifests", str(tmp_path), "--no-watch"]
            args = _parser().parse_args(argv + (["--enable-ssl-passthrough"] if flag else []))
            options = replace(
                _options(args, args.manifests), bind="127.0.0.1", http_port=0, https_port=0
            )
            listening = await nursery.start(Controller(options).run)
            seen = await in_thread(fetch, listening.https_port, PASS)
            expected = "the backend" if flag else "fastroute default certificate"
            assert seen.common_name == expected
            nursery.cancel_scope.cancel()

    run(scenario)


# ------------------------------------------------------------------ the incremental builder

POOL_HOSTS = ["p.example.com", "*.example.com", "*.example.com", "q.example.com", ""]


@st.composite
def passthrough_ingresses(draw: st.DrawFn) -> dict[str, Any]:
    annotations = draw(st.sampled_from([PASSTHROUGH, PASSTHROUGH, {}]))
    made = ingress(
        draw(st.sampled_from(["one", "two", "three"])),
        draw(st.sampled_from(POOL_HOSTS)),
        draw(st.sampled_from(["secure", "web"])),
        annotations,
        paths=tuple(draw(st.lists(st.sampled_from(["/", "/", "/api"]), min_size=1, max_size=2))),
    )
    if not made["spec"]["rules"][0]["host"]:
        del made["spec"]["rules"][0]["host"]
    return made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([True, True, True, False]),
            passthrough_ingresses() | st.sampled_from(service("secure", 1)),
        ),
        min_size=1,
        max_size=16,
    )
)
def test_the_builder_keeps_the_passthrough_hosts_a_full_build_finds(
    changes: list[tuple[bool, dict[str, Any]]],
) -> None:
    builder = ConfigBuilder(ssl_passthrough=True)
    held: dict[tuple[str, str], dict[str, Any]] = {}
    for put, obj in changes:
        where = (obj["kind"], obj["metadata"]["name"])
        if put:
            builder.put(obj)
            held[where] = obj
        else:
            builder.delete(obj)
            held.pop(where, None)
        built = builder.build()
        expected = build_config(held.values(), ssl_passthrough=True)
        assert dict(built.passthrough) == dict(expected.passthrough)
        assert built.problems == expected.problems


@pytest.mark.e2e
def test_a_relay_with_no_byte_either_way_is_closed_after_the_idle_timeout() -> None:
    async def scenario() -> None:
        async with running() as setup:
            setup.proxy.passthrough.idle_timeout = 0.5

            def idle() -> bool:
                context = ssl.create_default_context(cadata=BACKEND_CERT.chain_pem.decode())
                with (
                    socket.create_connection(("127.0.0.1", setup.https_port), DEADLINE) as raw,
                    context.wrap_socket(raw, server_hostname=PASS) as tls,
                ):
                    try:
                        return tls.recv(100) == b""  # nothing sent: the close is all that comes
                    except (ssl.SSLEOFError, ConnectionResetError):
                        return True

            assert await in_thread(idle)
            await wait_for(lambda: counted(setup.metrics, "relayed") == 1, "the count")

    run(scenario)


@pytest.mark.e2e
def test_a_drain_lets_a_relay_in_progress_finish() -> None:
    async def scenario() -> None:
        async with running() as setup:
            context = ssl.create_default_context(cadata=BACKEND_CERT.chain_pem.decode())
            raw = socket.create_connection(("127.0.0.1", setup.https_port), DEADLINE)
            tls = await in_thread(partial(context.wrap_socket, raw, server_hostname=PASS))
            await wait_for(lambda: setup.proxy.passthrough.open == 1, "the relay")
            drained = trio.Event()

            async def drain() -> None:
                await setup.proxy.drain(DEADLINE * 2)
                drained.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await wait_for(lambda: not setup.proxy.ready, "the drain to begin")
                assert not drained.is_set()  # the relay holds it

                def request() -> bytes:
                    with tls:
                        tls.sendall(f"GET / HTTP/1.1\r\nHost: {PASS}\r\n\r\n".encode())
                        received = b""
                        while chunk := tls.recv(65536):
                            received += chunk
                        return received

                assert (await in_thread(request)).startswith(b"HTTP/1.1 200")
                with trio.fail_after(DEADLINE):
                    await drained.wait()

    run(scenario)


@pytest.mark.e2e
def test_a_client_that_closes_ends_the_relay_at_once() -> None:
    async def scenario() -> None:
        async with running() as setup:

            def hello_and_close() -> None:
                context = ssl.create_default_context(cadata=BACKEND_CERT.chain_pem.decode())
                with (
                    socket.create_connection(("127.0.0.1", setup.https_port), DEADLINE) as raw,
                    context.wrap_socket(raw, server_hostname=PASS),
                ):
                    pass

            await in_thread(hello_and_close)
            # far sooner than the idle timeout: the close went on to the backend
            await wait_for(lambda: counted(setup.metrics, "relayed") == 1, "the relay's end")
            assert setup.proxy.passthrough.open == 0

    run(scenario)


@pytest.mark.e2e
def test_an_endpoint_that_does_not_answer_is_left_at_the_connect_timeout() -> None:
    async def scenario() -> None:
        with unanswered_port() as silent:
            limits = Limits(connect_timeout=0.3)
            async with running(limits=limits, more_tls_ports=(silent,)) as setup:
                for _ in range(2):  # one of the two turns starts with the silent endpoint
                    seen = await in_thread(fetch, setup.https_port, PASS, BACKEND_CERT)
                    assert seen.answer["sni"] == PASS
                assert b'reason="connect"' in setup.metrics.text()

    run(scenario)
