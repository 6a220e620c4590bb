"""Client certificates (``auth-tls-*``), end to end, as ingress-nginx's e2e tests expect.

Certificate authorities and client certificates are made here (a CA, a wrong CA, an
intermediate); real TLS clients (the stdlib ``ssl`` client, ``openssl s_client`` where
installed) connect to the proxy's HTTPS listener with or without a certificate, and the
tests check the status and what the backend received.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import unquote

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from fastroute.ingress import ConfigBuilder, build_config
from fastroute.ingress.certs import self_signed_certificate, tls_secret
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.client_certs import distinguished_name
from fastroute.proxy.decide import Answer, Forward, decide
from fastroute.proxy.server import Proxy
from fastroute.proxy.tls import TLSContexts, pem_path
from tests.certgen import CA_KEY_USAGE
from tests.echo import Echo
from tests.objects import secret, service_at
from tests.polling import DEADLINE
from tests.polling import run_within as run

MTLS = "mtls.example.com"  # asks for client certificates
OTHER = "other.example.com"  # asks too, under the same settings' Ingress of its own
PLAIN = "plain.example.com"  # never asks
NGINX = "nginx.ingress.kubernetes.io/"
SERVER_CERT = self_signed_certificate([MTLS, OTHER, PLAIN], common_name="the proxy")
OPENSSL = shutil.which("openssl")
# OpenSSL's texts for a certificate whose issuer it does not know
UNKNOWN_ISSUER = (
    "unable to verify the first certificate",
    "unable to get local issuer certificate",
)


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # the intermediates it is sent with

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def bundle(self) -> bytes:
        """What a client loads: its certificate, its intermediates, its key."""
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self.pem + chain + key


def _name(common_name: str, organization: str = "Example Org") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue(
    common_name: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    organization: str = "Example Org",
    expired: bool = False,
) -> Issued:
    """A certificate signed by ``issuer`` (self-signed without one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC) - (timedelta(days=3) if expired else timedelta())
    subject = _name(common_name, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(CA_KEY_USAGE, critical=True)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    signer = issuer.key if issuer else key
    certificate = builder.sign(signer, hashes.SHA256())
    chain: tuple[x509.Certificate, ...] = ()
    if issuer is not None and issuer.certificate.issuer != issuer.certificate.subject:
        chain = (issuer.certificate, *issuer.chain)  # an intermediate: sent along
    return Issued(certificate, key, chain)


ROOT = issue("Client Root CA", ca=True)
WRONG_ROOT = issue("Someone Else's CA", ca=True)
INTERMEDIATE = issue("Client Intermediate CA", ROOT, ca=True)
CLIENT = issue("authtls", ROOT, organization="Client, Inc.")
STRANGER = issue("authtls", WRONG_ROOT)
REVOKED = issue("revoked", ROOT)
EXPIRED = issue("authtls", ROOT, expired=True)
SECOND_INTERMEDIATE = issue("Client Second Intermediate CA", INTERMEDIATE, ca=True)
VIA_INTERMEDIATE = issue("one below", INTERMEDIATE)
VIA_TWO = issue("two below", SECOND_INTERMEDIATE)


# ------------------------------------------------------------------ objects and proxy


def _service(port: int) -> list[dict[str, Any]]:
    return service_at(port)


def ingress(name: str, host: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
        "spec": {
            "ingressClassName": "fastroute",
            "tls": [{"hosts": [host], "secretName": "site-tls"}],
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def ca_secret(name: str, pem: bytes, crl: bytes = b"") -> dict[str, Any]:
    """An Opaque Secret holding a CA bundle (and revocation lists), as ``kubectl create
    secret generic`` makes it."""
    data = {"ca.crt": pem}
    if crl:
        data["ca.crl"] = crl
    return secret(name, data)


def revoking(issuer: Issued, *revoked: Issued) -> bytes:
    """A PEM CRL of ``issuer`` that revokes ``revoked``."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=1))
    )
    for certificate in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(certificate.certificate.serial_number)
            .revocation_date(now - timedelta(minutes=5))
            .build()
        )
    crl = builder.sign(issuer.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def auth_tls(**settings: str) -> dict[str, str]:
    """``auth-tls-secret: default/client-ca`` and ``auth-tls-<name>`` for each setting."""
    annotations = {NGINX + "auth-tls-secret": "default/client-ca"}
    for name, value in settings.items():
        annotations[NGINX + "auth-tls-" + name.replace("_", "-")] = value
    return annotations


def site(
    port: int, annotations: dict[str, str], ca: bytes = ROOT.pem, crl: bytes = b""
) -> list[dict[str, Any]]:
    """MTLS with ``annotations``, PLAIN without any, one backend."""
    return [
        *_service(port),
        tls_secret("default", "site-tls", SERVER_CERT),
        ca_secret("client-ca", ca, crl),
        ingress("mtls", MTLS, annotations),
        ingress("plain", PLAIN),
    ]


@asynccontextmanager
async def running(
    objects: Callable[[int], list[dict[str, Any]]],
    configure: Callable[[RouteConfig], RouteConfig] | None = None,
) -> AsyncIterator[int]:
    """The proxy serving ``objects(backend_port)`` on an HTTPS listener: its port."""
    async with trio.open_nursery() as nursery:
        backend_port = await nursery.start(Echo("web").serve)
        config = build_config(objects(backend_port))
        if configure is not None:
            config = configure(config)
        proxy = Proxy(config, tls=TLSContexts())
        listeners = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    received: dict[str, str] = field(default_factory=dict)  # what the backend got (200)


def fetch(
    port: int,
    server_name: str | None,
    host: str,
    client: Issued | None = None,
    extra: str = "",
    requests: int = 1,
) -> list[Reply]:
    """``requests`` GETs on one TLS connection, with SNI ``server_name`` and ``Host: host``,
    presenting ``client``'s certificate when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client is not None:
        with pem_path(client.bundle) as path:
            context.load_cert_chain(path)
    replies = []
    with (
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        reader = tls.makefile("rb")
        for i in range(requests):
            close = "Connection: close\r\n" if i == requests - 1 else ""
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n{extra}{close}\r\n".encode())
            replies.append(_read_reply(reader))
    return replies


def _read_reply(reader: Any) -> Reply:
    status = int(reader.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    received = {}
    if status == 200:
        received = {n.lower(): v for n, v in json.loads(body)["headers"]}
    return Reply(status, headers, received)


def get(
    annotations: dict[str, str],
    client: Issued | None,
    *,
    server_name: str | None = MTLS,
    host: str = MTLS,
    extra: str = "",
    ca: bytes = ROOT.pem,
    crl: bytes = b"",
) -> Reply:
    """One request to a site whose MTLS host has ``annotations``."""
    replies: list[Reply] = []

    async def scenario() -> None:
        async with running(lambda port: site(port, annotations, ca, crl)) as port:
            found = await trio.to_thread.run_sync(
                partial(fetch, port, server_name, host, client, extra)
            )
            replies.extend(found)

    run(scenario)
    return replies[0]


def _dn(name: x509.Name) -> str:
    return name.rfc4514_string()


# ------------------------------------------------------------------ verify-client: on


@pytest.mark.e2e
def test_a_valid_certificate_reaches_the_backend_with_its_verdict_and_names() -> None:
    reply = get(auth_tls(), CLIENT)
    assert reply.status == 200
    assert reply.received["ssl-client-verify"] == "SUCCESS"
    assert reply.received["ssl-client-subject-dn"] == "CN=authtls,O=Client\\, Inc.,C=US"
    assert reply.received["ssl-client-issuer-dn"] == _dn(ROOT.certificate.subject)
    assert "ssl-client-cert" not in reply.received  # not asked for


@pytest.mark.e2e
def test_without_a_certificate_the_request_is_refused_with_400() -> None:
    reply = get(auth_tls(verify_client="on"), None)
    assert reply.status == 400


@pytest.mark.e2e
def test_a_certificate_of_another_ca_is_refused_with_400() -> None:
    assert get(auth_tls(), STRANGER).status == 400


@pytest.mark.e2e
def test_without_sni_a_request_for_the_host_is_judged_as_sent_without_a_certificate() -> None:
    # as ingress-nginx's e2e clients do: nothing was asked, so there is nothing to verify
    assert get(auth_tls(), CLIENT, server_name=None).status == 400
    reply = get(auth_tls(verify_client="optional"), CLIENT, server_name=None)
    assert reply.status == 200
    assert reply.received["ssl-client-verify"] == "NONE"


@pytest.mark.e2e
def test_the_error_page_gets_a_302_instead_of_the_400() -> None:
    error_page = "http://errors.example.com/error"
    missing = get(auth_tls(error_page=error_page), None)
    assert (missing.status, missing.headers["location"]) == (302, error_page)
    wrong = get(auth_tls(error_page=error_page), STRANGER)
    assert (wrong.status, wrong.headers["location"]) == (302, error_page)
    assert get(auth_tls(error_page=error_page), CLIENT).status == 200


# ------------------------------------------------------------------ the other modes


@pytest.mark.e2e
def test_optional_lets_a_client_without_a_certificate_through_as_none() -> None:
    reply = get(auth_tls(verify_client="optional"), None)
    assert reply.status == 200
    assert reply.received["ssl-client-verify"] == "NONE"
    assert "ssl-client-subject-dn" not in reply.received


@pytest.mark.e2e
def test_optional_still_refuses_a_certificate_that_fails() -> None:
    assert get(auth_tls(verify_client="optional"), STRANGER).status == 400
    assert get(auth_tls(verify_client="optional"), CLIENT).status == 200


@pytest.mark.e2e
def test_optional_no_ca_passes_an_unknown_issuer_and_says_so() -> None:
    reply = get(auth_tls(verify_client="optional_no_ca"), STRANGER)
    assert reply.status == 200
    verify = reply.received["ssl-client-verify"]
    # OpenSSL's reason, as nginx writes it
    assert verify in {f"FAILED:{reason}" for reason in UNKNOWN_ISSUER}
    assert reply.received["ssl-client-subject-dn"] == _dn(STRANGER.certificate.subject)


@pytest.mark.e2e
def test_optional_no_ca_still_refuses_an_expired_certificate() -> None:
    # only an unknown issuer is forgiven (nginx's ngx_ssl_verify_error_optional)
    assert get(auth_tls(verify_client="optional_no_ca"), EXPIRED).status == 400
    assert get(auth_tls(verify_client="on"), EXPIRED).status == 400


@pytest.mark.e2e
def test_a_certificate_the_secrets_crl_revokes_is_refused() -> None:
    crl = revoking(ROOT, REVOKED)
    assert get(auth_tls(), REVOKED, crl=crl).status == 400
    assert get(auth_tls(), REVOKED).status == 200  # the same, without the CRL
    assert get(auth_tls(), CLIENT, crl=crl).status == 200
    reply = get(auth_tls(verify_client="optional_no_ca"), REVOKED, crl=crl)
    assert reply.status == 400  # revoked is no unknown issuer


def test_a_crl_that_is_no_crl_answers_503() -> None:
    config = build_config(site(8080, auth_tls(), crl=b"-----BEGIN X509 CRL-----\nnope\n"))
    assert "ca.crl" in config.match(MTLS, "/").policy.refused


@pytest.mark.e2e
def test_off_asks_for_nothing_and_says_none() -> None:
    reply = get(auth_tls(verify_client="off"), CLIENT)
    assert reply.status == 200
    assert reply.received["ssl-client-verify"] == "NONE"
    assert "ssl-client-subject-dn" not in reply.received


# ------------------------------------------------------------------ what the upstream gets


@pytest.mark.e2e
def test_the_certificate_is_passed_url_encoded_when_asked() -> None:
    reply = get(auth_tls(pass_certificate_to_upstream="true"), CLIENT)
    assert reply.status == 200
    escaped = reply.received["ssl-client-cert"]
    assert escaped.startswith("-----BEGIN%20CERTIFICATE-----%0A")  # ingress-nginx's e2e check
    assert unquote(escaped).encode() == CLIENT.pem


@pytest.mark.e2e
def test_forged_client_certificate_fields_never_reach_the_backend() -> None:
    forged = (
        "ssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=admin\r\n"
        "ssl-client-cert: forged\r\n"
    )
    reply = get(auth_tls(verify_client="optional"), None, extra=forged)
    assert reply.status == 200
    assert reply.received["ssl-client-verify"] == "NONE"
    assert "ssl-client-subject-dn" not in reply.received
    assert "ssl-client-cert" not in reply.received


@pytest.mark.e2e
def test_the_plain_host_forwards_no_certificate_fields() -> None:
    reply = get(auth_tls(), CLIENT, server_name=PLAIN, host=PLAIN, extra="ssl-client-verify: x\r\n")
    assert reply.status == 200
    assert not {n for n in reply.received if n.startswith("ssl-client-")}


# ------------------------------------------------------------------ match-cn, depth, SNI


@pytest.mark.parametrize(
    ("match_cn", "status"),
    [
        ("CN=notgonnamatch", 403),
        ("CN=authtls", 200),
        ("CN=(itwillmatch|withthenextoption|authtls)", 200),
    ],
)
@pytest.mark.e2e
def test_match_cn_refuses_a_subject_it_does_not_match(match_cn: str, status: int) -> None:
    assert get(auth_tls(match_cn=match_cn), CLIENT).status == status


@pytest.mark.e2e
def test_the_depth_counts_the_intermediates_as_openssl_does_for_nginx() -> None:
    # depth N: the client's certificate, N CAs above it, then the trust anchor
    one_below = get(auth_tls(), VIA_INTERMEDIATE)
    assert one_below.status == 200
    assert one_below.received["ssl-client-issuer-dn"] == _dn(INTERMEDIATE.certificate.subject)
    assert get(auth_tls(), VIA_TWO).status == 400
    assert get(auth_tls(verify_depth="2"), VIA_TWO).status == 200
    # past the depth, OpenSSL looks no further: the issuer is unknown
    too_deep = get(auth_tls(verify_client="optional_no_ca"), VIA_TWO)
    assert too_deep.received["ssl-client-verify"].startswith("FAILED:")


@pytest.mark.e2e
def test_a_handshake_for_another_host_is_misdirected() -> None:
    # SNI of the plain host, Host of the mTLS one: its certificate was never asked for
    assert get(auth_tls(), CLIENT, server_name=PLAIN, host=MTLS).status == 421


@pytest.mark.e2e
def test_a_handshake_under_other_settings_is_misdirected() -> None:
    def objects(port: int) -> list[dict[str, Any]]:
        return [
            *site(port, auth_tls()),
            ca_secret("other-ca", WRONG_ROOT.pem),
            ingress("other", OTHER, {NGINX + "auth-tls-secret": "other-ca"}),
        ]

    replies: list[Reply] = []

    async def scenario() -> None:
        async with running(objects) as port:
            for server_name in (OTHER, MTLS):
                found = await trio.to_thread.run_sync(fetch, port, server_name, MTLS, STRANGER)
                replies.extend(found)

    run(scenario)
    assert [reply.status for reply in replies] == [421, 400]


@pytest.mark.e2e
def test_the_verdict_holds_for_every_request_on_the_connection() -> None:
    replies: list[Reply] = []

    async def scenario() -> None:
        async with running(lambda port: site(port, auth_tls())) as port:
            found = await trio.to_thread.run_sync(partial(fetch, port, MTLS, MTLS, CLIENT, "", 3))
            replies.extend(found)

    run(scenario)
    assert [r.received["ssl-client-verify"] for r in replies] == ["SUCCESS"] * 3


# ------------------------------------------------------------------ a host without it


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.e2e
def test_only_the_hosts_with_client_auth_ask_for_a_certificate() -> None:
    outputs: dict[str, str] = {}

    def s_client(port: int, name: str) -> str:
        assert OPENSSL is not None
        done = subprocess.run(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name],
            input=b"",
            capture_output=True,
            timeout=DEADLINE,
            check=False,
        )
        return done.stdout.decode("latin-1")

    async def scenario() -> None:
        async with running(lambda port: site(port, auth_tls())) as port:
            for name in (MTLS, PLAIN):
                outputs[name] = await trio.to_thread.run_sync(s_client, port, name)

    run(scenario)
    assert "Acceptable client certificate CA names" in outputs[MTLS]
    assert "Client Root CA" in outputs[MTLS]
    assert "No client certificate CA names sent" in outputs[PLAIN]
    assert "Acceptable client certificate CA names" not in outputs[PLAIN]


@pytest.mark.e2e
def test_a_client_with_a_certificate_on_the_plain_host_is_never_asked_for_it() -> None:
    # the stdlib server side never asks: the backend is told nothing of it
    reply = get(auth_tls(), CLIENT, server_name=PLAIN, host=PLAIN)
    assert reply.status == 200
    assert "ssl-client-verify" not in reply.received


# ------------------------------------------------------------------ failing closed


@pytest.mark.e2e
def test_a_missing_ca_secret_answers_503_and_leaves_the_other_host_serving() -> None:
    def objects(port: int) -> list[dict[str, Any]]:
        return [o for o in site(port, auth_tls()) if o["metadata"]["name"] != "client-ca"]

    replies: list[Reply] = []

    async def scenario() -> None:
        async with running(objects) as port:
            for host in (MTLS, PLAIN):
                found = await trio.to_thread.run_sync(fetch, port, host, host, CLIENT)
                replies.extend(found)

    run(scenario)
    assert [reply.status for reply in replies] == [503, 200]


def test_a_bundle_that_is_no_certificate_is_refused_with_its_reason() -> None:
    config = build_config(site(8080, auth_tls(), ca=b"not a certificate"))
    problems = [str(p) for p in config.rejected()]
    assert any("auth-tls-secret" in p and "ca.crt" in p for p in problems), problems
    target = config.match(MTLS, "/")
    assert "auth-tls-secret" in target.policy.refused
    assert not config.match(PLAIN, "/").policy.refused


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("verify-client", "sometimes"),
        ("verify-depth", "-1"),
        ("error-page", "/error"),
        ("match-cn", "authtls"),
        ("match-cn", "CN=(unclosed"),
        ("pass-certificate-to-upstream", "yes please"),
    ],
)
def test_a_malformed_setting_answers_503(name: str, value: str) -> None:
    config = build_config(site(8080, {**auth_tls(), NGINX + "auth-tls-" + name: value}))
    assert NGINX + "auth-tls-" + name in config.match(MTLS, "/").policy.refused
    assert repr(value) in " ".join(str(p) for p in config.rejected())


def test_a_secret_of_another_namespace_is_refused() -> None:
    annotations = {NGINX + "auth-tls-secret": "kube-system/client-ca"}
    config = build_config(site(8080, annotations))
    assert "another namespace" in config.match(MTLS, "/").policy.refused


def test_every_route_of_the_host_is_under_its_settings() -> None:
    # ingress-nginx's server block has one set of client certificate settings: the oldest
    # Ingress's; a younger one's own are ignored, with a warning
    def objects(port: int) -> list[dict[str, Any]]:
        younger = ingress("younger", MTLS, auth_tls(verify_client="optional"))
        younger["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
        younger["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/open"
        bare = ingress("bare", MTLS)
        bare["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
        bare["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/bare"
        return [*site(port, auth_tls()), younger, bare]

    config = build_config(objects(8080))
    host_auth = config.client_auth_for(MTLS)
    assert host_auth is not None
    assert host_auth.verify == "on"
    assert config.match(MTLS, "/open").policy.client_auth == host_auth
    assert config.match(MTLS, "/bare").policy.client_auth == host_auth
    assert config.match(PLAIN, "/").policy.plain
    warned = [p for p in config.warnings() if "auth-tls" in p.reason]
    assert [p.name for p in warned] == ["default/younger"]


def test_a_secret_that_arrives_later_is_used() -> None:
    builder = ConfigBuilder()
    for obj in site(8080, auth_tls()):
        if obj["metadata"]["name"] != "client-ca":
            builder.put(obj)
    assert builder.build().match(MTLS, "/").policy.refused
    builder.put(ca_secret("client-ca", ROOT.pem))
    config = builder.build()
    assert not config.match(MTLS, "/").policy.refused
    assert config.client_auth_for(MTLS) is not None
    assert config.client_auth_for(PLAIN) is None


# ------------------------------------------------------------------ distinguished names

_ATTRIBUTES = [
    NameOID.COMMON_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.STATE_OR_PROVINCE_NAME,
    NameOID.DOMAIN_COMPONENT,
]
_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=2, max_size=12)


@given(st.lists(st.tuples(st.sampled_from(_ATTRIBUTES), _PRINTABLE), min_size=1, max_size=5))
def test_an_ascii_name_is_written_as_rfc_4514_says(attributes: list[tuple[Any, str]]) -> None:
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    assert distinguished_name(name) == name.rfc4514_string()


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize(
    "attributes",
    [
        [(NameOID.COMMON_NAME, "plain")],
        [(NameOID.COUNTRY_NAME, "FR"), (NameOID.COMMON_NAME, 'Zoé, "the" <one>; +1')],
        [(NameOID.EMAIL_ADDRESS, "a@example.com"), (NameOID.COMMON_NAME, "#lead ")],
        [(NameOID.USER_ID, "u1"), (NameOID.DOMAIN_COMPONENT, "example")],
        [(NameOID.COMMON_NAME, "tab\there")],
    ],
)
@pytest.mark.e2e
def test_a_name_is_written_as_openssl_writes_it_for_nginx(attributes: list[Any]) -> None:
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert OPENSSL is not None
    shown = subprocess.run(
        [OPENSSL, "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
        input=certificate.public_bytes(serialization.Encoding.PEM),
        capture_output=True,
        timeout=DEADLINE,
        check=True,
    ).stdout.decode("ascii")
    assert shown.strip() == "subject=" + distinguished_name(name)


# ------------------------------------------------------------------ the connection itself


def _post(port: int, size: int) -> tuple[int, dict[str, Any]]:
    """A POST of ``size`` bytes over a client-certificate connection, then a GET on it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pem_path(CLIENT.bundle) as path:
        context.load_cert_chain(path)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=MTLS) as tls,
    ):
        reader = tls.makefile("rb")
        head = f"POST / HTTP/1.1\r\nHost: {MTLS}\r\nContent-Length: {size}\r\n\r\n"
        tls.sendall(head.encode() + b"x" * size)
        status = int(reader.readline().split()[1])
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        answer = json.loads(reader.read(length))
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {MTLS}\r\nConnection: close\r\n\r\n".encode())
        after = _read_reply(reader)
    assert after.received["ssl-client-verify"] == "SUCCESS"
    return status, answer


@pytest.mark.e2e
def test_a_large_body_crosses_the_client_certificate_connection_whole() -> None:
    size = 3 * 1024 * 1024 + 17
    answers: list[tuple[int, dict[str, Any]]] = []

    async def scenario() -> None:
        async with running(lambda port: site(port, auth_tls())) as port:
            answers.append(await trio.to_thread.run_sync(_post, port, size))

    run(scenario)
    status, answer = answers[0]
    assert (status, answer["body_length"]) == (200, size)


async def _exchange(stream: trio.SSLStream[trio.SocketStream], request: bytes) -> int:
    """Send one request and read its answer; its status."""
    await stream.send_all(request)
    received = b""
    while b"\r\n\r\n" not in received:  # bounded by the test's deadline
        received += await stream.receive_some(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive_some(65536)
    return int(head.split()[1])


@pytest.mark.e2e
def test_a_connection_verified_under_settings_since_replaced_is_misdirected() -> None:
    statuses: list[int] = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            proxy = Proxy(build_config(site(backend_port, auth_tls())), tls=TLSContexts())
            listeners = await nursery.start(partial(proxy.serve, scheme="https"), "127.0.0.1", 0)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with pem_path(CLIENT.bundle) as path:
                context.load_cert_chain(path)
            tcp = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
            stream = trio.SSLStream(tcp, context, server_hostname=MTLS)
            request = f"GET / HTTP/1.1\r\nHost: {MTLS}\r\n\r\n".encode()
            statuses.append(await _exchange(stream, request))
            replaced = site(backend_port, auth_tls(verify_client="optional"))
            proxy.swap(build_config(replaced))
            statuses.append(await _exchange(stream, request))
            await stream.aclose()
            nursery.cancel_scope.cancel()

    run(scenario)
    assert statuses == [200, 421]


# ------------------------------------------------------------------ plain HTTP, aliases


def test_plain_http_to_the_host_is_redirected_or_forwarded_without_certificate_fields() -> None:
    def plain_http(annotations: dict[str, str]) -> Answer | Forward:
        config = build_config(site(8080, annotations))
        return decide(config, method=b"GET", target=b"/", host=MTLS.encode(), scheme="http")

    redirected = plain_http(auth_tls())
    assert isinstance(redirected, Answer)
    assert redirected.status == 308
    forwarded = plain_http({**auth_tls(), NGINX + "ssl-redirect": "false"})
    assert isinstance(forwarded, Forward)
    assert b"ssl-client" not in forwarded.fields.upstream_lines
    assert forwarded.fields.upstream_drop is not None
    assert b"ssl-client-verify" in forwarded.fields.upstream_drop
    # nginx's match-cn is a server-level check: an empty subject does not match
    refused = plain_http({**auth_tls(match_cn="CN=authtls"), NGINX + "ssl-redirect": "false"})
    assert isinstance(refused, Answer)
    assert refused.status == 403


def test_an_alias_asks_as_its_host_does_and_a_wildcard_spares_exact_hosts() -> None:
    alias = {**auth_tls(), NGINX + "server-alias": "alias.example.com"}
    config = build_config(site(8080, alias))
    assert config.client_auth_for("alias.example.com") == config.client_auth_for(MTLS)
    assert config.client_auth_for(MTLS) is not None

    wildcard = [*site(8080, {}), ingress("wild", "*.wild.example.com", auth_tls())]
    wildcard.append(ingress("exact", "exact.wild.example.com"))
    config = build_config(wildcard)
    assert config.client_auth_for("any.wild.example.com") is not None
    assert config.client_auth_for("exact.wild.example.com") is None
    assert config.client_auth_for("a.b.wild.example.com") is None


def _resumed(port: int, server_name: str) -> bool:
    """Whether a second connection resumes the first one's TLS session."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is known after the handshake
    with pem_path(CLIENT.bundle) as path:
        context.load_cert_chain(path)
    session = None
    reused = []
    for _ in range(2):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
            context.wrap_socket(raw, server_hostname=server_name, session=session) as tls,
        ):
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\n\r\n".encode())
            assert _read_reply(tls.makefile("rb")).status == 200
            session = tls.session
            reused.append(bool(tls.session_reused))
    return reused[1]


@pytest.mark.e2e
def test_a_client_certificate_session_is_never_resumed_unverified() -> None:
    resumed: dict[str, bool] = {}

    async def scenario() -> None:
        async with running(lambda port: site(port, auth_tls())) as port:
            for name in (MTLS, PLAIN):
                resumed[name] = await trio.to_thread.run_sync(_resumed, port, name)

    run(scenario)
    assert resumed == {MTLS: False, PLAIN: True}  # the plain host's sessions resume as before
