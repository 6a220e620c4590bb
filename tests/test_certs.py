"""TLS Secrets to certificates: what loads, what is refused and why, and that it serves TLS.

Every certificate here is real, generated in the test: with ``self_signed_certificate``,
or with ``cryptography`` directly for the odd cases (chains, CN-only, expired, RSA, ...).
The handshake tests run the stdlib ``ssl`` module (the proxy's TLS) in memory.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.errors import FastrouteError
from fastroute.ingress.certs import (
    Certificate,
    CertificateError,
    load_tls_secret,
    self_signed_certificate,
    tls_secret,
)
from tests.certgen import CA_KEY_USAGE

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)

# --------------------------------------------------------------------------- helpers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(
    key: PrivateKeyTypes,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    password: bytes | None = None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


class Validity(TypedDict):
    not_before: datetime
    not_after: datetime


def valid_today() -> Validity:
    """Validity around the real clock, for certificates a real TLS client must accept."""
    today = datetime.now(UTC)
    return {"not_before": today - DAY, "not_after": today + 90 * DAY}


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    *,
    sans: list[str] | None = None,
    issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None,
    ca: bool = False,
    not_before: datetime = NOW - DAY,
    not_after: datetime = NOW + 90 * DAY,
) -> x509.Certificate:
    """A certificate for ``key``, self-signed unless ``issuer`` (its cert and key) is given."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(CA_KEY_USAGE, critical=True)
    if sans is not None:
        names = x509.SubjectAlternativeName([x509.DNSName(n) for n in sans])
        builder = builder.add_extension(names, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def secret(
    crt: bytes | str | None,
    key: bytes | str | None,
    *,
    namespace: str = "prod",
    name: str = "web-tls",
    type_: str | None = "kubernetes.io/tls",
) -> dict[str, Any]:
    """A Secret dict; bytes are base64-encoded into ``data``, str values are put there as is."""
    data: dict[str, Any] = {}
    for field, value in (("tls.crt", crt), ("tls.key", key)):
        if value is not None:
            data[field] = b64(value) if isinstance(value, bytes) else value
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }
    if type_ is not None:
        obj["type"] = type_
    return obj


@dataclass
class Pair:
    """A certificate made with cryptography directly, with its key, as PEM."""

    cert: x509.Certificate
    crt: bytes
    key: bytes


def pair(sans: list[str] | None = None, **kwargs: Any) -> Pair:
    key = new_key()
    cert = make_cert(
        key, "web.example.com", sans=["web.example.com"] if sans is None else sans, **kwargs
    )
    return Pair(cert, pem_of(cert), key_pem(key))


def expect_error(obj: Any, source: str = "prod/web-tls", **kwargs: Any) -> CertificateError:
    """Load ``obj`` and return the CertificateError it must raise, checked for its form."""
    with pytest.raises(CertificateError) as info:
        load_tls_secret(obj, now=NOW, **kwargs)
    error = info.value
    assert isinstance(error, ValueError)
    assert isinstance(error, FastrouteError)
    assert error.source == source
    assert str(error) == f"TLS secret {source}: {error.reason}"
    return error


def verifying_client(trust: bytes, *, strict: bool = False) -> ssl.SSLContext:
    """A client that trusts ``trust`` (PEM) and checks the host name, as browsers do."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=trust.decode("ascii"))
    if strict:  # the default of ssl.create_default_context from Python 3.13
        client.verify_flags |= ssl.VERIFY_X509_STRICT
    return client


def handshake(
    server: ssl.SSLContext, trust: bytes | ssl.SSLContext, server_name: str, *, strict: bool = False
) -> ssl.SSLObject:
    """An in-memory TLS handshake, then one message; returns the client's end.

    ``trust`` is the PEM the client trusts, or a whole client context. Raises
    ``ssl.SSLCertVerificationError`` when the client rejects the certificate.
    """
    client = trust if isinstance(trust, ssl.SSLContext) else verifying_client(trust, strict=strict)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for _ in range(10):
        if not client_done:
            try:
                tls_client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            try:
                tls_server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if client_done and server_done:
            break
    assert client_done, "the handshake did not complete"
    assert server_done, "the handshake did not complete"
    tls_client.write(b"GET / HTTP/1.1\r\n\r\n")
    s_in.write(c_out.read())
    assert tls_server.read(100) == b"GET / HTTP/1.1\r\n\r\n"
    return tls_client


def server_context(certificate: Certificate, directory: Path) -> ssl.SSLContext:
    """What the proxy does with a Certificate: a server context from its PEM (via files)."""
    chain_file, key_file = directory / "chain.pem", directory / "key.pem"
    chain_file.write_bytes(certificate.chain_pem)
    key_file.write_bytes(certificate.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)
    return context


def dns_names(tls_client: ssl.SSLObject) -> set[str]:
    """The DNS names of the certificate the server presented, as the client saw it."""
    peer = tls_client.getpeercert()
    assert peer is not None
    entries = peer.get("subjectAltName", ())
    assert isinstance(entries, tuple)
    return {str(entry[1]) for entry in entries if entry[0] == "DNS"}


# --------------------------------------------------------------------------- round trip


def test_secret_round_trip_gives_the_same_certificate() -> None:
    original = self_signed_certificate(["shop.example.com", "*.api.example.com"], now=NOW)
    obj = tls_secret("prod", "shop-tls", original)
    assert obj["type"] == "kubernetes.io/tls"
    assert obj["kind"] == "Secret"
    assert obj["metadata"] == {"name": "shop-tls", "namespace": "prod"}
    assert base64.b64decode(obj["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")

    loaded = load_tls_secret(obj, now=NOW)

    assert loaded.source == "prod/shop-tls"
    assert loaded.names == ("shop.example.com", "*.api.example.com")
    assert loaded.chain_pem == original.chain_pem
    assert loaded.key_pem == original.key_pem
    assert (loaded.not_before, loaded.not_after) == (original.not_before, original.not_after)


def test_loaded_certificate_serves_a_real_handshake(tmp_path: Path) -> None:
    original = self_signed_certificate(["shop.example.com", "*.api.example.com"])
    loaded = load_tls_secret(tls_secret("prod", "shop-tls", original))
    server = server_context(loaded, tmp_path)

    for name in ("shop.example.com", "v1.api.example.com"):
        tls_client = handshake(server, loaded.chain_pem, name, strict=True)
        assert dns_names(tls_client) == {"shop.example.com", "*.api.example.com"}

    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server, loaded.chain_pem, "other.example.com")


def test_intermediate_chain_is_kept_in_order_and_served(tmp_path: Path) -> None:
    root_key, intermediate_key, leaf_key = new_key(), new_key(), new_key()
    root = make_cert(root_key, "Test Root CA", ca=True, **valid_today())
    intermediate = make_cert(
        intermediate_key, "Test Intermediate CA", ca=True, issuer=(root, root_key), **valid_today()
    )
    leaf = make_cert(
        leaf_key,
        "shop.example.com",
        sans=["shop.example.com"],
        issuer=(intermediate, intermediate_key),
        **valid_today(),
    )
    chain = pem_of(leaf) + pem_of(intermediate)

    loaded = load_tls_secret(secret(chain, key_pem(leaf_key)))

    assert loaded.chain_pem == chain
    assert loaded.names == ("shop.example.com",)
    # A client that trusts only the root needs the intermediate from the server.
    tls_client = handshake(server_context(loaded, tmp_path), pem_of(root), "shop.example.com")
    assert dns_names(tls_client) == {"shop.example.com"}


def test_chain_with_the_intermediate_first_is_refused_with_a_hint() -> None:
    root_key, leaf_key = new_key(), new_key()
    root = make_cert(root_key, "Test Root CA", ca=True)
    leaf = make_cert(
        leaf_key, "shop.example.com", sans=["shop.example.com"], issuer=(root, root_key)
    )

    error = expect_error(secret(pem_of(root) + pem_of(leaf), key_pem(leaf_key)))

    assert "#2" in error.reason
    assert "first" in error.reason


def test_rsa_key_in_pkcs1_form_loads_and_serves(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make_cert(key, "rsa.example.com", sans=["rsa.example.com"], **valid_today())
    pkcs1 = key_pem(key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")

    loaded = load_tls_secret(secret(pem_of(cert), pkcs1))

    assert loaded.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, any reader takes it
    assert loaded.names == ("rsa.example.com",)
    tls_client = handshake(server_context(loaded, tmp_path), pem_of(cert), "rsa.example.com")
    assert dns_names(tls_client) == {"rsa.example.com"}


def test_repr_never_shows_the_private_key() -> None:
    certificate = self_signed_certificate(["a.example.com"])
    text = repr(certificate)
    assert "PRIVATE KEY" not in text
    assert "BEGIN" not in text
    assert "a.example.com" in text


# --------------------------------------------------------------------------- names


def test_names_come_from_san_and_the_cn_is_then_ignored() -> None:
    key = new_key()
    cert = make_cert(key, "cn.example.com", sans=["San.Example.com", "*.Apps.example.com"])
    loaded = load_tls_secret(secret(pem_of(cert), key_pem(key)), now=NOW)
    assert loaded.names == ("san.example.com", "*.apps.example.com")
    assert not loaded.covers("cn.example.com")


def test_cn_only_certificate_uses_its_cn() -> None:
    key = new_key()
    cert = make_cert(key, "Legacy.Example.com", sans=None)
    loaded = load_tls_secret(secret(pem_of(cert), key_pem(key)), now=NOW)
    assert loaded.names == ("legacy.example.com",)
    assert loaded.covers("legacy.example.com")


def test_cn_that_is_not_a_host_name_covers_nothing() -> None:
    key = new_key()
    cert = make_cert(key, "My Company Server", sans=None)
    loaded = load_tls_secret(secret(pem_of(cert), key_pem(key)), now=NOW)
    assert loaded.names == ()
    assert not loaded.covers("my company server")


NAMES = ["example.com", "*.apps.example.com", "*.com", "a.b.example.com"]

COVERS = [
    pytest.param("example.com", True, id="exact"),
    pytest.param("EXAMPLE.Com", True, id="exact-any-case"),
    pytest.param("example.com.", True, id="exact-trailing-dot"),
    pytest.param("www.example.com", False, id="exact-does-not-cover-subdomain"),
    pytest.param("a.apps.example.com", True, id="wildcard-one-label"),
    pytest.param("Shop-1.APPS.example.com.", True, id="wildcard-case-and-dot"),
    pytest.param("apps.example.com", False, id="wildcard-not-its-parent"),
    pytest.param("a.b.apps.example.com", False, id="wildcard-not-two-labels"),
    pytest.param(".apps.example.com", False, id="wildcard-not-an-empty-label"),
    pytest.param("foo.com", False, id="star-dot-tld-covers-nothing"),
    pytest.param("a.b.example.com", True, id="deep-exact"),
    pytest.param("b.example.com", False, id="parent-of-deep-exact"),
    pytest.param("*.apps.example.com", True, id="rule-wildcard-same-name"),
    pytest.param("*.example.com", False, id="rule-wildcard-not-covered-by-exact-names"),
    pytest.param("*.b.example.com", False, id="rule-wildcard-not-covered-by-one-host"),
    pytest.param("", False, id="empty"),
]


@pytest.fixture(scope="module")
def named() -> Certificate:
    return self_signed_certificate(NAMES)


@pytest.mark.parametrize(("host", "covered"), COVERS)
def test_covers(named: Certificate, host: str, covered: bool) -> None:
    assert named.covers(host) is covered


def test_uncovered_lists_the_hosts_left_out_in_order_once() -> None:
    certificate = self_signed_certificate(["foo.com", "*.foo.com"])
    hosts = ["a.foo.com", "bar.com", "foo.com", "*.foo.com", "a.b.foo.com", "bar.com", "FOO.COM."]
    assert certificate.uncovered(hosts) == ("bar.com", "a.b.foo.com")
    assert certificate.uncovered([]) == ()
    # A wildcard rule host needs the same wildcard on the certificate.
    exact_only = self_signed_certificate(["a.foo.com", "b.foo.com"])
    assert exact_only.uncovered(["*.foo.com", "a.foo.com"]) == ("*.foo.com",)


@pytest.fixture(scope="module")
def named_server(named: Certificate, tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    return server_context(named, tmp_path_factory.mktemp("named"))


def client_accepts(named: Certificate, server: ssl.SSLContext, host: str) -> bool:
    try:
        handshake(server, named.chain_pem, host)
    except ssl.SSLCertVerificationError:
        return False
    return True


# Hosts a client can ask for: not empty, no empty label, no "*". And no trailing dot:
# OpenSSL's hostname check keeps it (curl and browsers drop it before checking).
CLIENT_HOSTS = [p for p in COVERS if re.fullmatch(r"[\w-]+(\.[\w-]+)*", str(p.values[0]))]


@pytest.mark.parametrize(("host", "covered"), CLIENT_HOSTS)
def test_covers_agrees_with_a_real_tls_client(
    named: Certificate, named_server: ssl.SSLContext, host: str, covered: bool
) -> None:
    assert client_accepts(named, named_server, host) is covered


# Hosts near the certificate's names: a few labels in front of one of their suffixes.
HOSTS = st.builds(
    lambda front, suffix: ".".join([*front, suffix]),
    st.lists(st.sampled_from(["a", "B", "apps", "xn--p1ai", "x-1"]), max_size=3),
    st.sampled_from(
        ["example.com", "apps.example.com", "Apps.EXAMPLE.com", "b.example.com", "com"]
    ),
)


@settings(max_examples=80, deadline=None)
@given(host=HOSTS)
def test_covers_agrees_with_a_real_tls_client_on_any_host(
    named: Certificate, named_server: ssl.SSLContext, host: str
) -> None:
    assert named.covers(host) is client_accepts(named, named_server, host)


# --------------------------------------------------------------------------- validity


def test_expired_certificate_is_refused_with_its_dates() -> None:
    p = pair(
        not_before=datetime(2029, 1, 1, tzinfo=UTC), not_after=datetime(2030, 1, 1, tzinfo=UTC)
    )
    error = expect_error(secret(p.crt, p.key))
    assert "expired" in error.reason
    assert "2030-01-01 00:00:00 UTC" in error.reason
    # the reason does not change with the clock: it is reported (and posted as an Event)
    # once, not again at every rebuild
    assert "2030-06-01" not in error.reason
    assert error.validity == (datetime(2029, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    # The same Secret was fine while it was valid.
    assert load_tls_secret(secret(p.crt, p.key), now=datetime(2029, 6, 1, tzinfo=UTC))


def test_not_yet_valid_certificate_is_refused_with_its_dates() -> None:
    p = pair(
        not_before=datetime(2031, 1, 1, tzinfo=UTC), not_after=datetime(2032, 1, 1, tzinfo=UTC)
    )
    error = expect_error(secret(p.crt, p.key))
    assert "not yet valid" in error.reason
    assert "2031-01-01 00:00:00 UTC" in error.reason


def test_validity_defaults_to_the_current_time() -> None:
    current = pair(not_before=datetime.now(UTC) - DAY, not_after=datetime.now(UTC) + DAY)
    assert load_tls_secret(secret(current.crt, current.key)).names == ("web.example.com",)
    old = pair(
        not_before=datetime(2001, 1, 1, tzinfo=UTC), not_after=datetime(2002, 1, 1, tzinfo=UTC)
    )
    with pytest.raises(CertificateError, match="expired"):
        load_tls_secret(secret(old.crt, old.key))


def test_expires_within() -> None:
    certificate = self_signed_certificate(["a.example.com"], days=30, now=NOW)
    assert certificate.not_after == NOW + 30 * DAY
    assert not certificate.expires_within(29 * 86400, now=NOW)
    assert certificate.expires_within(31 * 86400, now=NOW)
    assert not certificate.expires_within(0, now=certificate.not_after)  # valid to the second
    assert certificate.expires_within(1, now=certificate.not_after)
    assert certificate.expires_within(0, now=NOW + 40 * DAY)  # already expired
    assert not certificate.expires_within(86400)  # made just now: not within a day


def test_naive_now_is_refused() -> None:
    certificate = self_signed_certificate(["a.example.com"])
    with pytest.raises(TypeError, match="timezone"):
        load_tls_secret(tls_secret("prod", "a", certificate), now=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="timezone"):
        certificate.expires_within(10, now=datetime(2030, 1, 1))


# --------------------------------------------------------------------------- Secret forms


def test_string_data_is_accepted() -> None:
    p = pair()
    obj = secret(None, None)
    del obj["data"]
    obj["stringData"] = {"tls.crt": p.crt.decode(), "tls.key": p.key.decode()}
    assert load_tls_secret(obj, now=NOW).chain_pem == p.crt


def test_string_data_overrides_data_per_key() -> None:
    p = pair()
    obj = secret(b"not a certificate", p.key)
    obj["stringData"] = {"tls.crt": p.crt.decode()}
    assert load_tls_secret(obj, now=NOW).chain_pem == p.crt
    # ... and a bad stringData value wins over a good data value.
    obj = secret(p.crt, p.key)
    obj["stringData"] = {"tls.key": ""}
    error = expect_error(obj)
    assert "tls.key" in error.reason
    assert "empty" in error.reason


def test_base64_under_string_data_is_refused() -> None:
    p = pair()
    obj = secret(None, p.key)
    obj["stringData"] = {"tls.crt": b64(p.crt)}
    error = expect_error(obj)
    assert "stringData" in error.reason
    assert "base64" in error.reason


@pytest.mark.parametrize("type_", ["Opaque", None], ids=["opaque", "no-type"])
def test_opaque_secret_with_the_keys_is_accepted(type_: str | None) -> None:
    p = pair()
    assert load_tls_secret(secret(p.crt, p.key, type_=type_), now=NOW).source == "prod/web-tls"


def test_base64_with_line_breaks_is_accepted() -> None:
    p = pair()
    wrapped = "\n".join(re.findall(".{1,76}", b64(p.crt))) + "\n"
    assert load_tls_secret(secret(wrapped, p.key), now=NOW).chain_pem == p.crt


def test_secret_without_namespace_is_named_in_default() -> None:
    p = pair()
    obj = secret(p.crt, p.key)
    del obj["metadata"]["namespace"]
    assert load_tls_secret(obj, now=NOW).source == "default/web-tls"


def test_chain_pem_is_kept_as_given() -> None:
    p = pair()
    given_pem = b"subject=CN=web.example.com\r\n" + p.crt.replace(b"\n", b"\r\n")
    assert load_tls_secret(secret(given_pem, p.key), now=NOW).chain_pem == given_pem


# --------------------------------------------------------------------------- refusals


def test_not_a_mapping() -> None:
    error = expect_error(["not", "a", "secret"], source="?/?")
    assert "mapping" in error.reason


@pytest.mark.parametrize(
    ("metadata", "source"),
    [(None, "?/?"), ({}, "?/?"), ({"namespace": "prod"}, "prod/?"), ({"name": ""}, "?/?")],
)
def test_missing_name(metadata: dict[str, str] | None, source: str) -> None:
    p = pair()
    obj = secret(p.crt, p.key)
    if metadata is None:
        del obj["metadata"]
    else:
        obj["metadata"] = metadata
    error = expect_error(obj, source=source)
    assert "metadata.name" in error.reason


def test_other_secret_type_without_the_keys_names_its_type() -> None:
    obj = secret(None, None, type_="kubernetes.io/service-account-token")
    obj["data"] = {"token": b64(b"abc")}
    error = expect_error(obj)
    assert "kubernetes.io/service-account-token" in error.reason
    assert "tls.crt" in error.reason


def test_opaque_secret_without_the_keys_names_its_type() -> None:
    error = expect_error(secret(None, None, type_="Opaque"))
    assert "'Opaque'" in error.reason


def key_of(p: Pair) -> bytes:
    return p.key


def other_key(_: Pair) -> bytes:
    return key_pem(new_key())


def encrypted_pkcs8(_: Pair) -> bytes:
    return key_pem(new_key(), password=b"hunter2")


def encrypted_traditional(_: Pair) -> bytes:
    return key_pem(new_key(), serialization.PrivateFormat.TraditionalOpenSSL, b"hunter2")


def der(p: Pair) -> bytes:
    return p.cert.public_bytes(serialization.Encoding.DER)


def der_key(_: Pair) -> bytes:
    return new_key().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def corrupt(p: Pair) -> bytes:
    lines = p.crt.splitlines(keepends=True)
    return lines[0] + b"QUJD" * 16 + b"\n" + lines[-1]


def two_keys(p: Pair) -> bytes:
    return p.key + key_pem(new_key())


def openssh(_: Pair) -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def x25519_key(_: Pair) -> bytes:
    return key_pem(x25519.X25519PrivateKey.generate())


Make = Callable[[Pair], bytes | str]

# (what tls.crt is made of, what tls.key is made of, what the reason must say)
REFUSED: list[Any] = [
    pytest.param(lambda p: "", key_of, r"tls\.crt is empty", id="empty-crt"),
    pytest.param(lambda p: p.crt, lambda p: "", r"tls\.key is empty", id="empty-key"),
    pytest.param(lambda p: "not base64!", key_of, r"data\.tls\.crt.*base64", id="bad-base64"),
    pytest.param(lambda p: p.crt, lambda p: "QUJ", r"data\.tls\.key.*base64", id="bad-padding"),
    pytest.param(
        lambda p: p.crt.decode(), key_of, r"base64.*stringData", id="pem-in-data-unencoded"
    ),
    pytest.param(lambda p: b64(p.crt).encode(), key_of, r"twice", id="crt-base64-twice"),
    pytest.param(lambda p: b"hello world\n", key_of, r"no PEM certificate", id="garbage-crt"),
    pytest.param(lambda p: p.crt, lambda p: b"hello", r"no PEM private key", id="garbage-key"),
    pytest.param(
        lambda p: b"-----BEGIN PUBLIC KEY-----\nQUJD\n-----END PUBLIC KEY-----\n",
        key_of,
        r"no PEM certificate.*PUBLIC KEY",
        id="crt-wrong-block",
    ),
    pytest.param(der, key_of, r"DER", id="der-crt"),
    pytest.param(lambda p: p.crt, der_key, r"DER", id="der-key"),
    pytest.param(lambda p: p.crt[:-30], key_of, r"truncated", id="truncated-crt"),
    pytest.param(corrupt, key_of, r"certificate #1 .*does not parse", id="corrupt-crt"),
    pytest.param(
        lambda p: p.crt + corrupt(p),
        key_of,
        r"certificate #2 of 2 .*does not parse",
        id="corrupt-2nd",
    ),
    pytest.param(lambda p: p.key, lambda p: p.crt, r"swapped", id="swapped"),
    pytest.param(lambda p: p.crt, other_key, r"does not match", id="mismatched-key"),
    pytest.param(lambda p: p.crt, encrypted_pkcs8, r"encrypted", id="encrypted-pkcs8"),
    pytest.param(lambda p: p.crt, encrypted_traditional, r"encrypted", id="encrypted-pkcs1"),
    pytest.param(lambda p: p.crt, two_keys, r"2 private keys", id="two-keys"),
    pytest.param(lambda p: p.crt, openssh, r"OPENSSH", id="openssh-key"),
    pytest.param(lambda p: p.crt, x25519_key, r"cannot sign", id="x25519-key"),
]


@pytest.mark.parametrize(("make_crt", "make_key", "why"), REFUSED)
def test_refused_with_the_secret_name_and_reason(make_crt: Make, make_key: Make, why: str) -> None:
    p = pair()
    error = expect_error(secret(make_crt(p), make_key(p)))
    assert re.search(why, error.reason, re.IGNORECASE), error.reason


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({"data": ["tls.crt"]}, r"data must be a mapping", id="data-list"),
        pytest.param({"stringData": "x"}, r"stringData must be a mapping", id="stringdata-str"),
        pytest.param({"kind": "ConfigMap"}, r"not a Secret", id="configmap"),
        pytest.param({"type": 7}, r"type must be a string", id="type-int"),
        pytest.param({"data": {"tls.crt": 5, "tls.key": "QUJD"}}, r"tls\.crt.*int", id="int-value"),
        pytest.param({"data": {"tls.crt": b64(b"x")}}, r"tls\.key is missing", id="no-key"),
        pytest.param({"data": None}, r"tls\.crt and tls\.key is missing", id="no-data"),
    ],
)
def test_malformed_secret(change: dict[str, Any], why: str) -> None:
    p = pair()
    obj = secret(p.crt, p.key)
    obj.update(change)
    error = expect_error(obj)
    assert re.search(why, error.reason), error.reason


def test_key_too_weak_for_openssl_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = make_cert(key, "weak.example.com", sans=["weak.example.com"])
    error = expect_error(secret(pem_of(cert), key_pem(key)))
    assert "OpenSSL" in error.reason
    assert "too small" in error.reason


# --------------------------------------------------------------------------- self-signed


def test_self_signed_defaults() -> None:
    before = datetime.now(UTC)
    certificate = self_signed_certificate()
    assert certificate.source == "default (self-signed)"
    assert certificate.names == ()  # the CN "fastroute default certificate" is not a host
    assert certificate.not_before <= before <= certificate.not_after
    assert timedelta(days=364) < certificate.not_after - before <= timedelta(days=365)
    cert = x509.load_pem_x509_certificate(certificate.chain_pem)
    assert cert.subject.rfc4514_string() == "CN=fastroute default certificate"
    assert cert.issuer == cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"


def test_self_signed_options() -> None:
    certificate = self_signed_certificate(
        ["Shop.Example.com.", "*.api.example.com", "shop.example.com"],
        common_name="demo",
        days=7,
        now=NOW,
    )
    assert certificate.names == ("shop.example.com", "*.api.example.com")
    assert certificate.not_after == NOW + 7 * DAY
    assert certificate.not_before == NOW - timedelta(hours=1)  # a client clock a little behind
    cert = x509.load_pem_x509_certificate(certificate.chain_pem)
    assert cert.subject.rfc4514_string() == "CN=demo"
    assert self_signed_certificate().key_pem != self_signed_certificate().key_pem  # fresh keys


@pytest.mark.parametrize(
    ("hosts", "days", "error", "why"),
    [
        pytest.param("shop.example.com", 365, TypeError, "single", id="hosts-str"),
        pytest.param(["bücher.de"], 365, ValueError, "IDNA", id="non-ascii"),
        pytest.param([""], 365, ValueError, "empty", id="empty-host"),
        pytest.param([], 0, ValueError, "days", id="zero-days"),
    ],
)
def test_self_signed_refuses(hosts: Any, days: int, error: type[Exception], why: str) -> None:
    with pytest.raises(error, match=why):
        self_signed_certificate(hosts, days=days)


def test_default_certificate_serves_a_client_that_does_not_verify(tmp_path: Path) -> None:
    certificate = self_signed_certificate()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE

    tls_client = handshake(server_context(certificate, tmp_path), client, "unknown.example.org")

    served = x509.load_der_x509_certificate(tls_client.getpeercert(binary_form=True) or b"")
    assert served.public_bytes(serialization.Encoding.PEM) == certificate.chain_pem
