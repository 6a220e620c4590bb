"""Client certificates: what a connection's handshake said, and what a route makes of it.

A host with ``auth-tls-*`` settings asks for a certificate in its handshakes
(``client_tls``), and the handshake completes whatever the client sends, as nginx's does:
the verdict (``PeerCertificate``) is worked out once per connection and judged per
request by ``refusal`` and ``upstream_lines``, called from ``decide``, in nginx's order:

1. Over HTTPS, a connection whose handshake named (SNI) another host than the request's
   one, or was not made under the route's settings, is answered 421 Misdirected Request
   (nginx's answer when the Host names a server with ``ssl_verify_client`` other than the
   one SNI chose). Without SNI, nothing was asked: the request is judged as sent without
   a certificate, as nginx judges it.
2. ``on``: no certificate, or one that failed verification, is a 400 (nginx's 496 and
   495, which it sends as 400), or a 302 to ``auth-tls-error-page``. ``optional``: only a
   failed one is. ``optional_no_ca``: only a failure other than an unknown issuer is
   (nginx's ``ngx_ssl_verify_error_optional``). ``off``: nothing is asked or judged.
3. ``auth-tls-match-cn``: 403 unless the subject DN matches.

The upstream is told ``ssl-client-verify`` (``SUCCESS``, ``NONE`` or ``FAILED:<reason>``),
``ssl-client-subject-dn``, ``ssl-client-issuer-dn`` and, when asked,
``ssl-client-cert`` (the PEM, URL-encoded as nginx's ``$ssl_client_escaped_cert``); a
client's own copies of these fields are always dropped on such routes. Empty values are
not sent, as nginx's ``proxy_set_header`` sends none.

Distinguished names are written as nginx writes them since 1.11.6, OpenSSL's
``XN_FLAG_RFC2253``: the last RDN first, ``,`` between RDNs and ``+`` inside one, OpenSSL's
short attribute names (unknown ones as dotted OIDs with the value's DER in hex), the RFC 2253
specials escaped with ``\\``, and control and non-ASCII bytes (of the UTF-8) as ``\\XX``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier

from fastroute.ingress.canary import compile_pattern
from fastroute.ingress.model import ClientAuth

__all__ = [
    "CLIENT_CERT_FIELDS",
    "OPTIONAL_ERRORS",
    "PeerCertificate",
    "distinguished_name",
    "peer_certificate",
    "refusal",
    "upstream_lines",
]

# the fields the proxy sets on a client-certificate route; a client's copies never pass
CLIENT_CERT_FIELDS = frozenset(
    {b"ssl-client-verify", b"ssl-client-subject-dn", b"ssl-client-issuer-dn", b"ssl-client-cert"}
)
# X509_V_ERR_*: the issuer is not known (optional_no_ca lets these through, as nginx does)
OPTIONAL_ERRORS = frozenset({2, 18, 19, 20, 21})

# OpenSSL's short names (OBJ_nid2sn) of the attributes certificates carry
_SHORT_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.STREET_ADDRESS: "street",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "title",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.X500_UNIQUE_IDENTIFIER: "x500UniqueIdentifier",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.USER_ID: "UID",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
    NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
    NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.POSTAL_ADDRESS: "postalAddress",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.INN: "INN",
    NameOID.OGRN: "OGRN",
    NameOID.SNILS: "SNILS",
    NameOID.UNSTRUCTURED_NAME: "unstructuredName",
    NameOID.INITIALS: "initials",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}
_SPECIALS = frozenset(',+"\\<>;')


def _escaped(value: str) -> str:
    """An attribute value as OpenSSL's ``ASN1_STRFLGS_RFC2253`` writes it."""
    raw = value.encode("utf-8")
    out = []
    last = len(raw) - 1
    for i, byte in enumerate(raw):
        char = chr(byte)
        if byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:02X}")
        elif char in _SPECIALS or (i == 0 and char in "# ") or (i == last and char == " "):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    size = (length.bit_length() + 7) // 8
    return bytes([0x80 | size]) + length.to_bytes(size, "big")


def _attribute(attribute: x509.NameAttribute[Any]) -> str:
    value = attribute.value
    name = _SHORT_NAMES.get(attribute.oid)
    if name is None:  # unknown: the dotted OID and the value's DER in hex, as OpenSSL dumps it
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        tag = getattr(getattr(attribute, "_type", None), "value", 0x0C)  # UTF8String
        der = bytes([tag]) + _der_length(len(data)) + data
        return f"{attribute.oid.dotted_string}=#{der.hex().upper()}"
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return f"{name}={_escaped(text)}"


def distinguished_name(name: x509.Name) -> str:
    """``name`` as nginx's ``$ssl_client_s_dn``: RFC 2253, the last RDN first."""
    return ",".join(
        "+".join(_attribute(attribute) for attribute in reversed(list(rdn)))
        for rdn in reversed(name.rdns)
    )


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What one connection's handshake said about the client's certificate."""

    server_name: str  # the SNI, lower case ("" when there was none)
    auth: ClientAuth | None  # the settings the handshake asked under; None: nothing asked
    verify: str = "NONE"  # ssl-client-verify: SUCCESS, NONE or FAILED:<reason>
    error: int = 0  # the verification's X509_V_ERR_* code; 0: none
    subject: str = ""  # RFC 2253
    issuer: str = ""
    escaped_pem: str = ""  # the certificate's PEM, URL-encoded
    # derived once, for every request on the connection: whole header lines
    lines: bytes = field(init=False, repr=False, compare=False)
    cert_line: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (
            ("ssl-client-verify", self.verify),
            ("ssl-client-subject-dn", self.subject),
            ("ssl-client-issuer-dn", self.issuer),
        )
        lines = b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in fields if v)
        object.__setattr__(self, "lines", lines)
        cert = f"ssl-client-cert: {self.escaped_pem}\r\n".encode() if self.escaped_pem else b""
        object.__setattr__(self, "cert_line", cert)


def peer_certificate(
    server_name: str,
    auth: ClientAuth,
    certificate: x509.Certificate | None,
    error: int,
    reason: str,
) -> PeerCertificate:
    """The verdict on a handshake made under ``auth``: the client's certificate (None:
    it sent none) and the verification's error code and text (0: it verified)."""
    if certificate is None:
        return PeerCertificate(server_name, auth)
    pem = certificate.public_bytes(Encoding.PEM).decode("ascii")
    return PeerCertificate(
        server_name,
        auth,
        verify="SUCCESS" if not error else f"FAILED:{reason}",
        error=error,
        subject=distinguished_name(certificate.subject),
        issuer=distinguished_name(certificate.issuer),
        escaped_pem=quote(pem, safe=""),
    )


_UNVERIFIED = PeerCertificate("", None)


@lru_cache(maxsize=256)
def _pattern(match_cn: str) -> Any:
    return compile_pattern(match_cn)


def _as_judged(auth: ClientAuth, peer: PeerCertificate | None, scheme: str) -> PeerCertificate:
    """The verdict a route with ``auth`` judges: the handshake's own when it was made
    under ``auth`` over HTTPS, else that of a handshake that asked for nothing."""
    if scheme != "https" or auth.verify == "off" or peer is None or peer.auth != auth:
        return _UNVERIFIED
    return peer


def refusal(auth: ClientAuth, peer: PeerCertificate | None, scheme: str) -> tuple[int, str] | None:
    """Why a route with ``auth`` refuses a request on a connection whose handshake said
    ``peer`` (None: nothing was asked), as (status, reason); None: it does not."""
    if (
        scheme == "https"
        and auth.verify != "off"
        and peer is not None
        and peer.auth != auth
        and peer.server_name
    ):
        named = peer.server_name
        return 421, f"client certificates: the handshake was for {named}, not under this host's"
    judged = _as_judged(auth, peer, scheme)
    if judged.verify == "NONE":
        if auth.verify == "on" and scheme == "https":
            return _refused(auth, "no required SSL certificate was sent")
    elif judged.error and (auth.verify != "optional_no_ca" or judged.error not in OPTIONAL_ERRORS):
        return _refused(auth, f"client SSL certificate verify error: {judged.verify}")
    if auth.match_cn and _pattern(auth.match_cn).search(judged.subject) is None:
        return 403, "client certificate unauthorized (auth-tls-match-cn)"
    return None


def upstream_lines(auth: ClientAuth, peer: PeerCertificate | None, scheme: str) -> bytes:
    """The ``ssl-client-*`` lines a request ``refusal`` let through is forwarded with."""
    if scheme != "https":
        return b""
    judged = _as_judged(auth, peer, scheme)
    return judged.lines + judged.cert_line if auth.pass_certificate else judged.lines


def _refused(auth: ClientAuth, reason: str) -> tuple[int, str]:
    return (302 if auth.error_page else 400), reason
