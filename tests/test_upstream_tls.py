"""TLS from the proxy to the pods (``backend-protocol: HTTPS`` and ``proxy-ssl-*``), end to end.

A real TLS backend on 127.0.0.1 serves certificates made here (a CA, intermediates, a
pod certificate, a client certificate); the proxy is configured from Kubernetes objects
carrying ingress-nginx's annotations and a ``proxy-ssl-secret`` Secret, and real clients
talk to it. The backend answers each request with what its TLS layer saw: the SNI name,
the client certificate, which connection carried the request.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from typing import Any

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastroute.ingress import build_config
from fastroute.ingress.build import ConfigBuilder
from fastroute.ingress.model import Endpoint, Problem, RouteConfig, UpstreamTLS
from fastroute.proxy.channel import connect_tls
from fastroute.proxy.server import Proxy
from fastroute.proxy.tls import pem_path
from fastroute.proxy.upstream_tls import client_context, server_hostname
from tests.certgen import CA_KEY_USAGE
from tests.echo import Echo
from tests.objects import endpoint_slice, service
from tests.objects import secret as secret_object
from tests.polling import DEADLINE
from tests.polling import run_within as run

HOST = "app.example.com"
POD_NAME = "pods.internal"  # the DNS name in the pod's certificate (with IP 127.0.0.1)
PREFIX = "nginx.ingress.kubernetes.io/"

# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Issued:
    """A certificate, its key, and the chain a server sends with it (leaf first), in PEM."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    name: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    client: bool = False,
) -> Issued:
    """A certificate named ``name``, signed by ``issuer`` (self-signed without one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = issuer.key if issuer else key
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
    )
    if ca:
        builder = builder.add_extension(CA_KEY_USAGE, critical=True)
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(IPv4Address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(signer, hashes.SHA256())
    # a server sends the intermediates its certificate hangs from, never the root
    sent = (
        issuer.chain if issuer and issuer.certificate.issuer != issuer.certificate.subject else ()
    )
    return Issued(certificate, key, (certificate, *sent))


ROOT = issue("pods root CA", ca=True)
OTHER_ROOT = issue("someone else's CA", ca=True)
POD = issue("pod", ROOT, dns=(POD_NAME,), ips=("127.0.0.1",))
CLIENT_ROOT = issue("proxy clients CA", ca=True)
CLIENT = issue("the proxy", CLIENT_ROOT, client=True)


# ------------------------------------------------------------------ the TLS backend


@dataclass
class TLSBackend:
    """An HTTPS backend on 127.0.0.1 that answers with what its TLS layer saw.

    Each answer is JSON: ``connection`` (which accepted connection, from 1), ``sni`` (the
    server name the client sent, or None) and ``client`` (the client certificate's common
    name, or None). ``GET /bye`` is answered, then the backend ends that connection with a
    close_notify alert and sets ``said_bye``.
    """

    served: Issued
    client_ca: bytes = b""
    newest: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED  # the newest version spoken
    connections: int = 0
    said_bye: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.maximum_version = self.newest
        with pem_path(self.served.chain_pem + self.served.key_pem) as path:
            context.load_cert_chain(path)
        if self.client_ca:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=self.client_ca.decode())
        self._names: dict[int, str | None] = {}
        context.sni_callback = self._note_server_name
        self.context = context

    def _note_server_name(self, obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        self._names[id(obj)] = name

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, plain: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        stream = trio.SSLStream(plain, self.context, server_side=True)
        try:
            await stream.do_handshake()
            obj = stream._ssl_object  # the SNI callback saw this object
            peer = stream.getpeercert()
            seen = {
                "connection": number,
                "sni": self._names.get(id(obj)),
                "client": _common_name(peer) if peer else None,
            }
            received = b""
            while True:
                while b"\r\n\r\n" not in received:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    received += data
                head, _, received = received.partition(b"\r\n\r\n")
                length = _content_length(head)
                while len(received) < length:
                    received += await stream.receive_some(65536)
                received = received[length:]
                body = json.dumps(seen).encode()
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                if head.startswith(b"GET /bye "):
                    await stream.aclose()  # close_notify, then the TCP close
                    self.said_bye.set()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await plain.aclose()


def _common_name(peer: dict[str, Any]) -> str:
    return str(next(value for rdn in peer["subject"] for key, value in rdn if key == "commonName"))


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# ------------------------------------------------------------------ objects and proxy


def secret(name: str, ca: bytes = b"", client: Issued | None = None) -> dict[str, Any]:
    data = {"ca.crt": ca} if ca else {}
    if client is not None:
        data |= {"tls.crt": client.chain_pem, "tls.key": client.key_pem}
    return secret_object(name, data)


def objects(
    port: int, annotations: dict[str, str], *more: dict[str, Any], host: str = HOST
) -> list[dict[str, Any]]:
    """Service ``pods`` (one endpoint, 127.0.0.1:``port``) behind an Ingress for ``host``."""
    backend = {"service": {"name": "pods", "port": {"number": 443}}}
    return [
        service("pods", ports=[{"port": 443}]),
        endpoint_slice("pods", port),
        ingress(host, annotations, backend),
        *more,
    ]


def ingress(
    host: str, annotations: dict[str, str], backend: dict[str, Any], name: str = "app"
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "annotations": {PREFIX + key: value for key, value in annotations.items()},
        },
        "spec": {
            "ingressClassName": "fastroute",
            "rules": [
                {
                    "host": host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


HTTPS = {"backend-protocol": "HTTPS"}
VERIFY = HTTPS | {"proxy-ssl-verify": "on", "proxy-ssl-secret": "default/pods-ca"}


@dataclass
class Running:
    proxy: Proxy
    port: int

    async def get(self, path: str = "/", host: str = HOST, method: str = "GET") -> httpx.Response:
        def call() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                return client.request(
                    method, f"http://127.0.0.1:{self.port}{path}", headers={"host": host}
                )

        return await trio.to_thread.run_sync(call)

    async def seen(self, path: str = "/", host: str = HOST) -> dict[str, Any]:
        """What the backend's TLS layer saw for a request that must succeed."""
        response = await self.get(path, host)
        assert response.status_code == 200, response.text
        seen: dict[str, Any] = response.json()
        return seen


@asynccontextmanager
async def proxying(config: RouteConfig) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        proxy = Proxy(config)
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Running(proxy, listeners[0].socket.getsockname()[1])
        nursery.cancel_scope.cancel()


async def started(nursery: trio.Nursery, backend: TLSBackend | Echo) -> int:
    port: int = await nursery.start(backend.serve)
    return port


def rejected(config: RouteConfig) -> list[Problem]:
    return [p for p in config.rejected() if "proxy-ssl-secret" in p.field]


# ------------------------------------------------------------------ the tests


@pytest.mark.e2e
def test_requests_reach_the_pod_over_tls_on_one_pooled_connection() -> None:
    async def scenario() -> None:
        backend = TLSBackend(POD)
        async with trio.open_nursery() as nursery:
            port = await started(nursery, backend)
            async with proxying(build_config(objects(port, HTTPS))) as running:
                seen = [await running.seen() for _ in range(3)]
                seen.append(await running.seen(path="/upload", host=HOST))
            nursery.cancel_scope.cancel()
        assert [s["connection"] for s in seen] == [1, 1, 1, 1]
        assert backend.connections == 1

    run(scenario)


@pytest.mark.e2e
def test_without_verification_any_certificate_is_accepted_and_with_it_only_the_ca_s() -> None:
    """proxy-ssl-verify is off by default, as in ingress-nginx: a certificate no CA the
    proxy knows signed still serves. On, the Secret's ca.crt decides."""
    stranger = issue("stranger", OTHER_ROOT, dns=(POD_NAME,), ips=("127.0.0.1",))

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            trusted = await started(nursery, TLSBackend(POD))
            untrusted = await started(nursery, TLSBackend(stranger))
            ca = secret("pods-ca", ROOT.pem)
            for port, annotations, status in (
                (untrusted, HTTPS, 200),
                (trusted, VERIFY, 200),
                (untrusted, VERIFY, 502),
            ):
                async with proxying(build_config(objects(port, annotations, ca))) as running:
                    assert (await running.get()).status_code == status, (port, annotations)
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.e2e
def test_verification_without_a_secret_trusts_only_the_system_s_cas() -> None:
    """ingress-nginx ignores proxy-ssl-verify without proxy-ssl-secret and does not verify;
    fastroute verifies against the system's trust store, which a private CA is not in."""

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(POD))
            config = build_config(objects(port, HTTPS | {"proxy-ssl-verify": "on"}))
            assert not config.rejected()
            async with proxying(config) as running:
                assert (await running.get()).status_code == 502
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize("send_sni", [False, True])
@pytest.mark.parametrize(
    ("name", "status"),
    [
        (None, 200),  # the endpoint's address, 127.0.0.1, is in the certificate
        (POD_NAME, 200),
        ("other.internal", 502),
        ("internal", 502),
    ],
)
@pytest.mark.e2e
def test_verification_checks_proxy_ssl_name_or_the_endpoint_address(
    name: str | None, status: int, send_sni: bool
) -> None:
    annotations = dict(VERIFY)
    if name is not None:
        annotations["proxy-ssl-name"] = name
    if send_sni:
        annotations["proxy-ssl-server-name"] = "on"

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(POD))
            config = build_config(objects(port, annotations, secret("pods-ca", ROOT.pem)))
            async with proxying(config) as running:
                assert (await running.get()).status_code == status
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(
    ("annotations", "sni"),
    [
        (HTTPS, None),
        (HTTPS | {"proxy-ssl-name": POD_NAME}, None),
        (HTTPS | {"proxy-ssl-name": POD_NAME, "proxy-ssl-server-name": "on"}, POD_NAME),
        (VERIFY | {"proxy-ssl-name": POD_NAME, "proxy-ssl-server-name": "on"}, POD_NAME),
        # an IP address is never sent as SNI (RFC 6066)
        (HTTPS | {"proxy-ssl-server-name": "on"}, None),
    ],
)
@pytest.mark.e2e
def test_sni_is_sent_only_with_proxy_ssl_server_name(
    annotations: dict[str, str], sni: str | None
) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(POD))
            config = build_config(objects(port, annotations, secret("pods-ca", ROOT.pem)))
            async with proxying(config) as running:
                assert (await running.seen())["sni"] == sni
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(("client", "presented"), [(CLIENT, "the proxy"), (None, None)])
@pytest.mark.e2e
def test_the_secret_s_client_certificate_is_presented_to_the_pod(
    client: Issued | None, presented: str | None
) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(POD, client_ca=CLIENT_ROOT.pem))
            ca = secret("pods-ca", ROOT.pem, client)
            async with proxying(build_config(objects(port, VERIFY, ca))) as running:
                assert (await running.seen())["client"] == presented
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(("depth", "status"), [("1", 502), ("2", 200), (None, 502)])
@pytest.mark.e2e
def test_proxy_ssl_verify_depth_bounds_the_intermediates(depth: str | None, status: int) -> None:
    """Two intermediates between the pod's certificate and the CA: depth 2 allows them,
    1 (the default) does not, as OpenSSL counts depth in nginx."""
    first = issue("intermediate 1", ROOT, ca=True)
    second = issue("intermediate 2", first, ca=True)
    pod = issue("deep pod", second, dns=(POD_NAME,), ips=("127.0.0.1",))
    assert len(pod.chain) == 3
    annotations = dict(VERIFY)
    if depth is not None:
        annotations["proxy-ssl-verify-depth"] = depth

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(pod))
            config = build_config(objects(port, annotations, secret("pods-ca", ROOT.pem)))
            async with proxying(config) as running:
                assert (await running.get()).status_code == status
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.parametrize(
    ("protocols", "status"), [(None, 200), ("TLSv1.2 TLSv1.3", 200), ("TLSv1.3", 502)]
)
@pytest.mark.e2e
def test_proxy_ssl_protocols_bounds_the_versions_offered(
    protocols: str | None, status: int
) -> None:
    """A pod that speaks TLS 1.2 at most is refused only when TLSv1.3 alone is allowed."""
    annotations = dict(HTTPS)
    if protocols is not None:
        annotations["proxy-ssl-protocols"] = protocols

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(POD, newest=ssl.TLSVersion.TLSv1_2))
            async with proxying(build_config(objects(port, annotations))) as running:
                assert (await running.get()).status_code == status
            nursery.cancel_scope.cancel()

    run(scenario)


@pytest.mark.e2e
def test_a_plain_http_backend_behind_backend_protocol_https_is_a_502_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, Echo("plain"))
            async with proxying(build_config(objects(port, HTTPS))) as running:
                assert (await running.get()).status_code == 502
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.INFO, logger="fastroute.proxy"):
        run(scenario)
    reasons = [r.getMessage() for r in caplog.records if "BadGatewayError" in r.getMessage()]
    assert reasons, caplog.text
    assert "SSL" in reasons[0]


@pytest.mark.e2e
def test_auto_http_speaks_plain_http() -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, Echo("plain"))
            config = build_config(objects(port, {"backend-protocol": "AUTO_HTTP"}))
            async with proxying(config) as running:
                response = await running.get()
            nursery.cancel_scope.cancel()
        assert response.status_code == 200
        assert response.json()["backend"] == "plain"

    run(scenario)


@pytest.mark.e2e
def test_routes_with_other_tls_settings_do_not_share_pooled_connections() -> None:
    """Connections are pooled by endpoint *and* TLS settings: one verified for a name is
    never handed to a route that asks for another check, or none."""

    async def scenario() -> None:
        backend = TLSBackend(POD)
        async with trio.open_nursery() as nursery:
            port = await started(nursery, backend)
            pods = {"service": {"name": "pods", "port": {"number": 443}}}
            config = build_config(
                [
                    *objects(port, HTTPS, secret("pods-ca", ROOT.pem)),
                    ingress("verified.example.com", VERIFY, pods, name="verified"),
                ]
            )
            async with proxying(config) as running:
                seen = []
                for host in (HOST, "verified.example.com") * 2:
                    seen.append((await running.seen(host=host))["connection"])
            nursery.cancel_scope.cancel()
        assert seen[0] != seen[1]
        assert seen[2:] == seen[:2]
        assert backend.connections == 2

    run(scenario)


@pytest.mark.e2e
def test_a_pooled_connection_the_pod_closed_with_close_notify_is_not_reused() -> None:
    """The pod ends an idle connection with close_notify: the next request, a POST that
    cannot be sent twice, goes on a new connection instead of failing on the old one."""

    async def scenario() -> None:
        backend = TLSBackend(POD)
        async with trio.open_nursery() as nursery:
            port = await started(nursery, backend)
            async with proxying(build_config(objects(port, HTTPS))) as running:
                assert (await running.seen("/bye"))["connection"] == 1
                await backend.said_bye.wait()
                response = await running.get(method="POST")
            nursery.cancel_scope.cancel()
        assert response.status_code == 200
        assert response.json()["connection"] == 2

    run(scenario)


@pytest.mark.e2e
def test_tls_channel_is_stale_once_the_peer_sent_close_notify() -> None:
    settings = UpstreamTLS()
    endpoint = Endpoint("127.0.0.1", 0)

    async def scenario() -> None:
        backend = TLSBackend(POD)
        async with trio.open_nursery() as nursery:
            port = await started(nursery, backend)
            channel = await connect_tls(
                "127.0.0.1", port, client_context(settings), server_hostname(settings, endpoint)
            )
            await channel.send(b"GET /bye HTTP/1.1\r\nhost: x\r\n\r\n")
            assert b"200 OK" in await channel.recv_reply()
            await backend.said_bye.wait()
            stale_when_idle = channel.stale()
            channel.close()
            nursery.cancel_scope.cancel()
        assert stale_when_idle

    run(scenario)


# ------------------------------------------------------------------ proxy-ssl-secret


def _route(config: RouteConfig, host: str = HOST) -> Any:
    return config.router.match(host, "/")


def test_the_secret_s_ca_and_client_certificate_go_into_the_route_s_tls_settings() -> None:
    config = build_config(objects(1, VERIFY, secret("pods-ca", ROOT.pem, CLIENT)))
    tls = _route(config).policy.upstream_tls
    assert tls.verify
    assert tls.ca == ROOT.pem
    assert tls.certificate == CLIENT.chain_pem
    assert b"PRIVATE KEY" in tls.key
    assert not rejected(config)
    assert not _route(config).policy.refused


@pytest.mark.parametrize(
    ("reference", "extra", "reason"),
    [
        ("default/absent", [], "Secret default/absent not found"),
        ("default/pods-ca", [secret("pods-ca")], "ca.crt is missing"),
        ("default/pods-ca", [secret("pods-ca", b"not a certificate")], "not a PEM certificate"),
        (
            "default/pods-ca",
            [secret("pods-ca", ROOT.pem) | {"data": {"ca.crt": "%%%"}}],
            "not valid base64",
        ),
        ("kube-system/pods-ca", [], "another namespace"),
        ("default/Bad_Name", [], "expected 'namespace/name'"),
        (
            "default/pods-ca",
            [secret("pods-ca", ROOT.pem, Issued(CLIENT.certificate, POD.key, CLIENT.chain))],
            "client certificate is unusable",
        ),
    ],
)
def test_an_unusable_proxy_ssl_secret_refuses_the_ingress_s_routes(
    reference: str, extra: list[dict[str, Any]], reason: str
) -> None:
    annotations = HTTPS | {"proxy-ssl-verify": "on", "proxy-ssl-secret": reference}
    config = build_config(objects(1, annotations, *extra))
    problems = rejected(config)
    assert len(problems) == 1, problems
    assert reason in problems[0].reason
    assert problems[0].name == "default/app"
    assert reason in _route(config).policy.refused


@pytest.mark.e2e
def test_the_ingress_with_the_unusable_secret_answers_503_and_the_others_serve() -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(POD))
            pods = {"service": {"name": "pods", "port": {"number": 443}}}
            missing = HTTPS | {"proxy-ssl-verify": "on", "proxy-ssl-secret": "absent"}
            config = build_config(
                [*objects(port, HTTPS), ingress("refused.example.com", missing, pods, "refused")]
            )
            assert [p.name for p in rejected(config)] == ["default/refused"]
            async with proxying(config) as running:
                assert (await running.get(host="refused.example.com")).status_code == 503
                assert (await running.get()).status_code == 200
            nursery.cancel_scope.cancel()

    run(scenario)


def test_proxy_ssl_secret_without_backend_protocol_https_is_a_warning() -> None:
    config = build_config(objects(1, {"proxy-ssl-secret": "pods-ca"}, secret("pods-ca", ROOT.pem)))
    warnings = [p for p in config.warnings() if "proxy-ssl-secret" in p.field]
    assert len(warnings) == 1
    assert "backend-protocol: HTTPS" in warnings[0].reason
    assert _route(config).policy.upstream_tls is None
    assert not rejected(config)


@pytest.mark.e2e
def test_a_secret_change_rebuilds_the_routes_that_use_it() -> None:
    """The Secret comes after the Ingress, then gets the right CA, then goes: each change
    reaches the routes with the next build, and the pod is verified with the CA of the
    moment."""

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            port = await started(nursery, TLSBackend(POD))
            builder = ConfigBuilder()
            for obj in objects(port, VERIFY):
                builder.put(obj)
            missing = builder.build()
            assert "not found" in _route(missing).policy.refused
            builder.put(secret("pods-ca", OTHER_ROOT.pem))
            wrong = builder.build()
            assert not _route(wrong).policy.refused
            assert not rejected(wrong)
            async with proxying(wrong) as running:
                assert (await running.get()).status_code == 502
                builder.put(secret("pods-ca", ROOT.pem))
                running.proxy.swap(builder.build())
                assert (await running.get()).status_code == 200
                builder.delete(secret("pods-ca"))
                gone = builder.build()
                assert len(rejected(gone)) == 1
                running.proxy.swap(gone)
                assert (await running.get()).status_code == 503
            nursery.cancel_scope.cancel()

    run(scenario)
