"""TLS certificates from Kubernetes Secrets, validated the way OpenSSL will use them.

The proxy terminates TLS with a certificate per host, chosen by SNI (exact host, then
wildcard, then a default certificate). This module turns a ``kubernetes.io/tls`` Secret
(a plain dict as parsed from YAML or JSON) into a :class:`Certificate`, or raises a
:class:`CertificateError` naming the Secret and saying what is wrong with it, so that a
bad Secret is reported when the configuration is built rather than found by a failed
handshake. It also makes the self-signed certificate served when no other one applies.

Pure: no files, no network. ``cryptography`` parses and generates; pyOpenSSL confirms
that OpenSSL itself accepts the certificate and key together.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

from fastroute.errors import FastrouteError

__all__ = [
    "DEFAULT_SOURCE",
    "Certificate",
    "CertificateError",
    "load_tls_secret",
    "self_signed_certificate",
    "tls_secret",
]

DEFAULT_SOURCE = "default (self-signed)"
TLS_TYPE = "kubernetes.io/tls"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"

# One PEM block: its label and its body (headers and base64).
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"})
# A name that can be a DNS host name (optionally a wildcard): what a subject CN must look
# like to count as one of the certificate's names.
_HOST_NAME = re.compile(
    r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)
# Key types that sign TLS handshakes (what OpenSSL, through pyOpenSSL, takes as a server key).
_TlsKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | dsa.DSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
# Base64 of "-----BEGIN": what a value base64-encoded twice starts with once decoded.
_PEM_TWICE = b"LS0tLS1CRUdJTi"


class CertificateError(FastrouteError, ValueError):
    """A TLS Secret or certificate is unusable.

    A ``ValueError`` like every rejected input in fastroute, so the controller can skip the
    Secret, report the reason and keep serving the rest.

    Attributes:
        source: the Secret it came from, "namespace/name" ("?/?" when it has no name).
        reason: what is wrong, in words.
        validity: for a certificate refused as not yet valid or expired, when it is
            valid (its not-before and not-after times).
    """

    source: str
    reason: str
    validity: tuple[datetime, datetime] | None = None

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"TLS secret {source}: {reason}")


# Builds the CertificateError for the Secret being loaded, from a reason.
_Fail = Callable[[str], CertificateError]


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate chain and its key, checked to work together, and the names it covers.

    The PEM fields are left out of ``repr`` so that logging a certificate never logs its key.
    """

    source: str  # "namespace/name" of the Secret, or "default (self-signed)"
    chain_pem: bytes = field(repr=False)  # leaf first, then any intermediates, as given (PEM)
    key_pem: bytes = field(repr=False)  # the private key, unencrypted PKCS#8 PEM
    names: tuple[str, ...]  # DNS names covered, lower-case: SAN DNS entries, else a host-like CN
    not_before: datetime  # timezone-aware UTC
    not_after: datetime

    def covers(self, host: str) -> bool:
        """Whether a TLS client connecting to ``host`` accepts this certificate's names.

        RFC 6125 as clients apply it: an exact name, or a wildcard ``*.example.com`` covering
        exactly one more non-empty label (``a.example.com``, not ``example.com`` nor
        ``a.b.example.com``). Case-insensitive; a trailing dot is ignored. A wildcard needs at
        least two labels after the ``*`` (``*.com`` covers nothing), as OpenSSL and browsers
        require. A rule host ``*.foo.com`` is covered only by the name ``*.foo.com``.
        """
        wanted = _fold(host)
        if not wanted:
            return False
        label, _, parent = wanted.partition(".")
        for name in self.names:
            if name == wanted:
                return True
            if (
                name.startswith("*.")
                and name[2:] == parent
                and "." in parent
                and label
                and label != "*"
            ):
                return True
        return False

    def uncovered(self, hosts: Iterable[str]) -> tuple[str, ...]:
        """The hosts, as given and without repeats, that this certificate does not cover.

        An Ingress TLS section lists the hosts its Secret is for; the ones left here would get
        a certificate their clients reject.
        """
        return tuple(dict.fromkeys(h for h in hosts if not self.covers(h)))

    def expires_within(self, seconds: float, *, now: datetime | None = None) -> bool:
        """Whether the certificate is no longer valid ``seconds`` from ``now`` (default: now).

        True for a certificate already expired; used to warn before clients start failing.
        """
        return _utc_now(now) + timedelta(seconds=seconds) > self.not_after


def load_tls_secret(secret: Mapping[str, Any], *, now: datetime | None = None) -> Certificate:
    """Validate a Kubernetes TLS Secret dict and return its certificate.

    Checked here, once, so that a bad Secret is reported with its name and reason instead
    of failing handshakes later: the Secret's shape, base64, PEM, that the key is
    unencrypted and matches the first (leaf) certificate, that OpenSSL accepts the pair,
    and that the leaf is valid at ``now`` (default: the current UTC time).

    ``stringData`` (plain text) is accepted besides ``data`` (base64) and overrides it per
    key, as the API server does. Any Secret type with ``tls.crt`` and ``tls.key`` is
    accepted (ingress-nginx accepts ``Opaque`` ones, and users rely on it); the type is
    named in the error when the keys are missing.

    Raises:
        CertificateError: naming the Secret ("namespace/name") and saying what is wrong.
    """
    checked_now = _utc_now(now)
    if not isinstance(secret, Mapping):
        raise CertificateError("?/?", f"expected a Secret object (a mapping), got {_kind(secret)}")
    source = _source(secret)

    def fail(reason: str) -> CertificateError:
        return CertificateError(source, reason)

    metadata = secret.get("metadata")
    if not isinstance(metadata, Mapping) or not _nonempty_str(metadata.get("name")):
        raise fail("metadata.name is missing")
    kind = secret.get("kind")
    if kind is not None and kind != "Secret":
        raise fail(f"is a {kind!r}, not a Secret")
    secret_type = secret.get("type", "Opaque")
    if not isinstance(secret_type, str):
        raise fail(f"type must be a string, got {_kind(secret_type)}")

    values = _secret_values(secret, secret_type, fail)
    chain_pem = values[CERT_KEY]
    chain = _parse_chain(chain_pem, fail)
    key = _parse_key(values[KEY_KEY], fail)
    _check_pair(chain, key, fail)

    leaf = chain[0]
    certificate = _certificate(source, chain_pem, key, leaf)
    untimely = None
    if checked_now < certificate.not_before:
        untimely = fail(
            f"certificate is not yet valid: valid from {_when(certificate.not_before)} "
            f"to {_when(certificate.not_after)}"
        )
    elif checked_now > certificate.not_after:
        untimely = fail(
            f"certificate expired on {_when(certificate.not_after)} "
            f"(valid from {_when(certificate.not_before)})"
        )
    if untimely is not None:
        untimely.validity = (certificate.not_before, certificate.not_after)
        raise untimely
    return certificate


def self_signed_certificate(
    hosts: Sequence[str] = (),
    *,
    common_name: str = "fastroute default certificate",
    days: int = 365,
    now: datetime | None = None,
) -> Certificate:
    """A fresh self-signed certificate (EC P-256 key, SHA-256) for the given DNS hosts.

    The proxy serves it when no Secret's certificate applies (as ingress-nginx serves its
    "Fake Certificate"), and tests use it. ``hosts`` become its subjectAltName DNS entries
    (wildcards such as ``*.example.com`` allowed; folded to lower case, trailing dot
    dropped). It is valid from one hour before ``now``, so that a client whose clock is a
    little behind still accepts it, until ``days`` days after ``now``. Its source is
    "default (self-signed)".

    Raises:
        ValueError: a host that is empty or not ASCII (use its IDNA form), or ``days`` < 1.
        TypeError: ``hosts`` is a single string rather than a sequence of them.
    """
    if isinstance(hosts, str | bytes):
        raise TypeError(f"hosts must be a sequence of host names, not the single {hosts!r}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    names: dict[str, None] = {}
    for host in hosts:
        name = _fold(host)
        if not name:
            raise ValueError(f"host {host!r} is empty")
        if not name.isascii():
            raise ValueError(f"host {host!r} is not ASCII: use its IDNA form (xn--...)")
        names[name] = None
    start = _utc_now(now).replace(microsecond=0)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(hours=1))
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    if names:  # an empty subjectAltName is not valid X.509: leave it out
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    leaf = builder.sign(key, hashes.SHA256())
    return _certificate(DEFAULT_SOURCE, leaf.public_bytes(serialization.Encoding.PEM), key, leaf)


def tls_secret(namespace: str, name: str, certificate: Certificate) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret dict (base64 data) holding ``certificate``.

    For manifests, demos and tests: ``load_tls_secret`` of the result gives the
    certificate back.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": TLS_TYPE,
        "data": {
            CERT_KEY: base64.b64encode(certificate.chain_pem).decode("ascii"),
            KEY_KEY: base64.b64encode(certificate.key_pem).decode("ascii"),
        },
    }


# --------------------------------------------------------------------------- the Secret


def _source(secret: Mapping[str, Any]) -> str:
    """The Secret's "namespace/name"; no namespace means "default", as kubectl applies it."""
    metadata = secret.get("metadata")
    if not isinstance(metadata, Mapping):
        return "?/?"
    name = metadata.get("name")
    namespace = metadata.get("namespace")
    if not _nonempty_str(name):
        return f"{namespace}/?" if _nonempty_str(namespace) else "?/?"
    return f"{namespace if _nonempty_str(namespace) else 'default'}/{name}"


def _secret_values(secret: Mapping[str, Any], secret_type: str, fail: _Fail) -> dict[str, bytes]:
    """tls.crt and tls.key as bytes, from stringData (wins) or base64 data."""
    data = secret.get("data")
    string_data = secret.get("stringData")
    for field_name, value in (("data", data), ("stringData", string_data)):
        if value is not None and not isinstance(value, Mapping):
            raise fail(f"{field_name} must be a mapping, got {_kind(value)}")
    data = data or {}
    string_data = string_data or {}
    missing = [k for k in (CERT_KEY, KEY_KEY) if k not in data and k not in string_data]
    if missing:
        what = " and ".join(missing)
        if secret_type != TLS_TYPE:
            raise fail(
                f"type is {secret_type!r}, not {TLS_TYPE!r}, and it has no {what}: "
                f"a TLS secret needs {CERT_KEY} and {KEY_KEY}"
            )
        raise fail(f"{what} is missing (a {TLS_TYPE} secret needs {CERT_KEY} and {KEY_KEY})")
    values: dict[str, bytes] = {}
    for key in (CERT_KEY, KEY_KEY):
        if key in string_data:
            values[key] = _plain(string_data[key], f"stringData.{key}", fail)
        else:
            values[key] = _unbase64(data[key], f"data.{key}", fail)
        if not values[key].strip():
            raise fail(f"{key} is empty")
    return values


def _plain(value: object, where: str, fail: _Fail) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise fail(f"{where} must be a string, got {_kind(value)}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates
        raise fail(f"{where} is not valid text: {error.reason}") from None


def _unbase64(value: object, where: str, fail: _Fail) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str | bytes):
        raise fail(f"{where} must be a base64 string, got {_kind(value)}")
    raw = value.encode("utf-8", "replace") if isinstance(value, str) else value
    if b"-----BEGIN" in raw:
        raise fail(
            f"{where} is not valid base64: it holds PEM text as is; base64-encode it, "
            "or put it under stringData"
        )
    try:
        # Go's decoder, which the API server uses, skips line breaks: YAML block scalars have them.
        return base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise fail(f"{where} is not valid base64: {error}") from None


# --------------------------------------------------------------------------- PEM


def _blocks(pem: bytes) -> list[tuple[str, bytes]]:
    """(label, whole block) for each complete PEM block, in order."""
    return [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(pem)]


def _not_pem(what: str, content: bytes, labels: list[str], convert: str) -> str | None:
    """Why ``content`` of ``what`` is not PEM when the cause is recognizable, else None."""
    if content.lstrip().startswith(_PEM_TWICE):
        return (
            f"{what} holds base64 text, not PEM: it was base64-encoded twice, or base64 was put "
            "under stringData (which takes the PEM as is)"
        )
    begun = [m.group(1).decode("ascii") for m in _PEM_BEGIN.finditer(content)]
    if len(begun) > len(labels):
        return f"{what} is truncated: a '-----BEGIN {begun[len(labels)]}-----' has no END line"
    if not begun and content[:1] == b"\x30":
        return f"{what} is DER (binary), not PEM: convert it with '{convert}'"
    return None


def _parse_chain(pem: bytes, fail: _Fail) -> list[x509.Certificate]:
    blocks = _blocks(pem)
    labels = [label for label, _ in blocks]
    problem = _not_pem(CERT_KEY, pem, labels, "openssl x509 -inform DER -in cert.der")
    if problem:
        raise fail(problem)
    certs = [block for label, block in blocks if label == "CERTIFICATE"]
    if not certs:
        if any(label in _KEY_LABELS or "PRIVATE KEY" in label for label in labels):
            raise fail(
                f"{CERT_KEY} holds a private key, not a certificate "
                f"(are {CERT_KEY} and {KEY_KEY} swapped?)"
            )
        found = f" (found: {', '.join(labels)})" if labels else ""
        raise fail(f"{CERT_KEY} has no PEM certificate ('-----BEGIN CERTIFICATE-----'){found}")
    chain: list[x509.Certificate] = []
    for number, block in enumerate(certs, 1):
        try:
            chain.append(x509.load_pem_x509_certificate(block))
        except ValueError as error:
            raise fail(
                f"certificate #{number} of {len(certs)} in {CERT_KEY} does not parse: {error}"
            ) from None
    return chain


def _parse_key(pem: bytes, fail: _Fail) -> _TlsKey:
    blocks = _blocks(pem)
    labels = [label for label, _ in blocks]
    problem = _not_pem(KEY_KEY, pem, labels, "openssl pkey -inform DER -in key.der")
    if problem:
        raise fail(problem)
    keys = [(label, block) for label, block in blocks if "PRIVATE KEY" in label]
    if not keys:
        if "CERTIFICATE" in labels:
            raise fail(
                f"{KEY_KEY} holds a certificate, not a private key "
                f"(are {CERT_KEY} and {KEY_KEY} swapped?)"
            )
        found = f" (found: {', '.join(labels)})" if labels else ""
        raise fail(f"{KEY_KEY} has no PEM private key ('-----BEGIN PRIVATE KEY-----'){found}")
    if len(keys) > 1:
        raise fail(f"{KEY_KEY} holds {len(keys)} private keys: keep only the certificate's")
    label, block = keys[0]
    if "ENCRYPTED" in label or b"Proc-Type: 4,ENCRYPTED" in block:
        raise fail(
            f"{KEY_KEY} is encrypted (password-protected); a TLS secret needs the key "
            "unencrypted: decrypt it with 'openssl pkey -in key.pem -out key-plain.pem'"
        )
    if label not in _KEY_LABELS:
        raise fail(
            f"{KEY_KEY} is a '{label}' block, which OpenSSL cannot use for TLS: it needs "
            "'BEGIN PRIVATE KEY' (PKCS#8), 'BEGIN RSA PRIVATE KEY' or 'BEGIN EC PRIVATE KEY'"
        )
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except UnsupportedAlgorithm as error:
        raise fail(f"{KEY_KEY} uses an unsupported key type: {error}") from None
    except (ValueError, TypeError) as error:
        raise fail(f"{KEY_KEY} does not parse: {error}") from None
    if not isinstance(key, _TlsKey):
        raise fail(
            f"{KEY_KEY} holds a key of type {type(key).__name__}, which cannot sign TLS "
            "handshakes: use an RSA, ECDSA or Ed25519 key"
        )
    return key


# --------------------------------------------------------------------------- checks


def _spki(key: object) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key, for comparing keys of any type."""
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:  # pragma: no cover - every x509 public key type has it
        return b""
    der: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _check_pair(chain: list[x509.Certificate], key: _TlsKey, fail: _Fail) -> None:
    """The key belongs to the leaf, and OpenSSL accepts them together with the chain."""
    try:
        public = [_spki(cert.public_key()) for cert in chain]
    except (ValueError, UnsupportedAlgorithm) as error:
        raise fail(f"the certificate's public key cannot be read: {error}") from None
    mine = _spki(key.public_key())
    if public[0] != mine:
        leaf = chain[0].subject.rfc4514_string() or "empty subject"
        for number, other in enumerate(public[1:], 2):
            if other == mine:
                raise fail(
                    f"{KEY_KEY} matches certificate #{number} in {CERT_KEY} "
                    f"({chain[number - 1].subject.rfc4514_string()}), not the first ({leaf}): "
                    "the server (leaf) certificate must come first, then its intermediates"
                )
        raise fail(f"{KEY_KEY} does not match the certificate in {CERT_KEY} ({leaf})")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        context.use_certificate(chain[0])
        context.use_privatekey(key)
        context.check_privatekey()
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)
    except SSL.Error as error:
        raise fail(f"OpenSSL refuses the certificate and key: {_openssl_reason(error)}") from None
    except (TypeError, ValueError) as error:
        raise fail(f"OpenSSL cannot use this certificate or key: {error}") from None


def _openssl_reason(error: SSL.Error) -> str:
    """The reason strings of an OpenSSL error queue, without the library/function noise."""
    reasons: list[str] = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(item, tuple) and item:
            reasons.append(str(item[-1]))
    return "; ".join(reasons) or str(error)


def _certificate(
    source: str,
    chain_pem: bytes,
    key: _TlsKey,
    leaf: x509.Certificate,
) -> Certificate:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Certificate(
        source=source,
        chain_pem=chain_pem,
        key_pem=key_pem,
        names=_names(source, leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def _names(source: str, leaf: x509.Certificate) -> tuple[str, ...]:
    """SAN DNS names; the subject CN only without a SAN extension, and only if host-like."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    except ValueError as error:
        raise CertificateError(source, f"certificate extensions do not parse: {error}") from None
    else:
        dns = san.value.get_values_for_type(x509.DNSName)
        return tuple(dict.fromkeys(n for n in map(_fold, dns) if n))
    try:
        common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as error:
        raise CertificateError(source, f"certificate subject does not parse: {error}") from None
    cns = (_fold(a.value) for a in common if isinstance(a.value, str))
    return tuple(dict.fromkeys(n for n in cns if _HOST_NAME.fullmatch(n)))


# --------------------------------------------------------------------------- small helpers


def _fold(host: str) -> str:
    """A host name as compared: lower case, surrounding spaces and one trailing dot dropped."""
    folded = host.strip().lower()
    return folded[:-1] if folded.endswith(".") else folded


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise TypeError(f"now must be timezone-aware (e.g. datetime.now(UTC)), got {now!r}")
    return now.astimezone(UTC)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
