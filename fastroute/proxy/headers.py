"""The headers a request and a response carry across the proxy.

Connection-specific ("hop-by-hop") headers describe one connection and must not be
forwarded (RFC 9110 §7.6.1): the fixed ones below, plus any header the ``Connection``
header names. ``X-Forwarded-*`` and ``X-Real-IP`` tell the upstream who the client is. A
client can send them too, and they are only believed when the peer is a trusted proxy
(for example a load balancer in front of the cluster); otherwise they are replaced.
The ``IDENTITY`` headers are passed on from a trusted proxy only, and a request header
whose name has an underscore never is.

These are the reference rules: the compiled codec (``fastroute._http``) applies the
same ones, and the tests check the two against each other.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastroute.proxy.client_certs import PeerCertificate

__all__ = [
    "HOP_BY_HOP",
    "IDENTITY",
    "Client",
    "Headers",
    "TrustedProxies",
    "request_headers",
    "response_headers",
    "trailer_kept",
    "valid_host",
    "websocket_upgrade",
]

Headers = list[tuple[bytes, bytes]]  # as h11 has them: lower-case names, raw values

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",  # h2c's (RFC 7540 §3.2.1)
    }
)
FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port")
# Who the client is or what it asked for, as only a proxy in front should say it:
# RFC 7239's Forwarded; the URL some frameworks route on instead of the request target
# (past the Ingress's path rules); ingress-nginx's verified client certificate.
IDENTITY = frozenset(
    {
        b"forwarded",
        b"x-original-url",
        b"x-rewrite-url",
        b"ssl-client-verify",
        b"ssl-client-cert",
        b"ssl-client-subject-dn",
        b"ssl-client-issuer-dn",
    }
)


@dataclass(frozen=True, slots=True)
class Client:
    """What the proxy knows about the connection a request came in on."""

    address: str  # the peer's IP address
    scheme: str  # "http" or "https": the listener's
    port: int  # the listener's port
    # what the TLS handshake said of a client certificate; None: no host asks for one
    peer: PeerCertificate | None = None


class TrustedProxies:
    """The peers whose ``X-Forwarded-*`` headers are believed, by network.

    Args:
        networks: CIDR blocks or addresses, e.g. ``["10.0.0.0/8", "192.0.2.7"]``.

    Raises:
        ValueError: a network that does not parse, named in the message.
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        parsed = []
        for network in networks:
            try:
                parsed.append(ipaddress.ip_network(network.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted proxy {network!r} is not an IP address or network"
                ) from None
        self._networks = tuple(parsed)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The networks trusted, as parsed; empty when none was given."""
        return self._networks

    def trusts(self, address: str) -> bool:
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"


# A Connection header cannot make these hop-by-hop: a client could strip what the
# upstream relies on (framing, the host, who the client is).
NEVER_LISTED = frozenset(
    {b"host", b"content-length", b"transfer-encoding", *FORWARDED, b"x-real-ip", *IDENTITY}
)


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """The header names a ``Connection`` header lists (they are hop-by-hop too)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens - NEVER_LISTED


def _end_to_end(
    headers: Sequence[tuple[bytes, bytes]], keep: Collection[bytes] = frozenset()
) -> Headers:
    """The end-to-end fields (and those in ``keep``); Content-Length once, at their end.

    A client may repeat a Content-Length or pad it with zeros (``05``); sent on like
    that, an upstream could read it otherwise, so it is written again in plain decimal.
    """
    listed = _connection_tokens(headers)
    out = [
        (n, v)
        for n, v in headers
        if n in keep or (n not in HOP_BY_HOP and n not in listed and n != b"content-length")
    ]
    chunked = any(n == b"transfer-encoding" for n, _ in headers)
    length = next((v for n, v in headers if n == b"content-length"), None)
    if length is not None and not chunked:
        out.append((b"content-length", b"%d" % int(length)))
    return out


def request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    client: Client,
    trusted: TrustedProxies,
    *,
    upgrade: bytes | None = None,
    host: bytes = b"",
    override_host: bool = False,
    chain: bool = True,
    real_ip: bytes = b"",
) -> Headers:
    """The headers to send upstream for a request that came in with ``headers``.

    ``Host`` is passed through unchanged (the upstream may route on it too); a request
    without one (HTTP/1.0), or one whose target was absolute-form (``override_host``:
    its Host must be ignored, RFC 9112 §3.2.2), is sent ``host`` first instead.
    ``X-Forwarded-For`` gets the client's address appended to what a trusted proxy sent
    (without ``chain``: the address alone), or replaces what anyone else sent.
    ``X-Forwarded-Proto``/``-Host``/``-Port`` and ``X-Real-IP`` keep a trusted proxy's
    values and are set from this connection otherwise; ``real_ip``, when given, is the
    ``X-Real-IP`` sent whoever the peer is (``fastroute.proxy.real_ip``). ``IDENTITY``
    headers pass from a trusted proxy only; names with "_"
    never pass (nginx's ``underscores_in_headers off``: a backend that reads ``_`` as
    ``-`` would take ``X_Forwarded_For`` for ours). ``upgrade`` (``b"websocket"``, see
    ``websocket_upgrade``) keeps a protocol upgrade going: ``Upgrade`` is hop-by-hop, so
    it is sent again explicitly.
    """
    believed = trusted.trusts(client.address)
    incoming = {n: v for n, v in headers if n in (*FORWARDED, b"x-real-ip")}
    forwarded_for = [v for n, v in headers if n == b"x-forwarded-for"]
    sent_host = next((v for n, v in headers if n == b"host"), None)
    ours_only = (*FORWARDED, b"x-real-ip")
    out = [
        (n, v)
        for n, v in _end_to_end(headers)
        if n not in ours_only
        and b"_" not in n
        and (believed or n not in IDENTITY)
        and not (override_host and n == b"host")
    ]
    if sent_host is None or override_host:
        out.insert(0, (b"host", host))
    host = host if sent_host is None or override_host else sent_host

    address = client.address.encode("ascii")
    kept = believed and chain and forwarded_for
    out.append((b"x-forwarded-for", b", ".join([*forwarded_for, address]) if kept else address))
    ours = {
        b"x-forwarded-proto": client.scheme.encode("ascii"),
        b"x-forwarded-host": host,
        b"x-forwarded-port": str(client.port).encode("ascii"),
        b"x-real-ip": real_ip or address,
    }
    for name, value in ours.items():
        believed_value = believed and name in incoming and not (real_ip and name == b"x-real-ip")
        out.append((name, incoming[name] if believed_value else value))
    if upgrade is not None:
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", upgrade))
    return out


def response_headers(headers: Sequence[tuple[bytes, bytes]], *, upgraded: bool = False) -> Headers:
    """The headers to send the client for an upstream response with ``headers``.

    A ``101 Switching Protocols`` answer (``upgraded``) keeps ``Connection`` and
    ``Upgrade``: the client needs them to complete the switch.
    """
    return _end_to_end(headers, keep={b"connection", b"upgrade"} if upgraded else frozenset())


def websocket_upgrade(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether an HTTP/1.1 request with ``headers`` asks for WebSocket and only that.

    ``Connection`` lists ``upgrade`` and every ``Upgrade`` field lists ``websocket``
    alone (any case, repeats allowed). Any other protocol (``h2c``: HTTP/2 past the
    router) and the request goes on as a plain one.
    """
    if b"upgrade" not in {
        t.strip(b" \t").lower() for n, v in headers if n == b"connection" for t in v.split(b",")
    }:
        return False
    upgrades = [v for n, v in headers if n == b"upgrade"]
    return bool(upgrades) and all(
        {t.strip(b" \t").lower() for t in v.split(b",")} - {b""} == {b"websocket"} for v in upgrades
    )


# host[:port]: a reg-name of letters, digits, "-", "." and "_", or an IP-literal of hex
# digits, ":" and "."; a port of up to 5 digits (RFC 3986 §3.2.2, §3.2.3), at most 65535.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{0,5}))?")


def valid_host(value: bytes) -> bool:
    """Whether ``value`` is a Host header the proxy takes (else 400, as nginx answers).

    Not empty, no ``..`` (as nginx) and not ``.`` alone; a trailing dot is fine.
    """
    matched = _HOST.fullmatch(value)
    if matched is None:
        return False
    name, port = matched.groups()
    if b".." in name or name == b".":
        return False
    return not port or int(port) <= 65535


# Trailer fields never passed on: a recipient may merge trailers into the head (RFC 9110
# §6.5.2), so nothing a head field could not do may come in one (see ``trailer_kept``).
TRAILER_DROPPED = frozenset(
    {
        b"host",
        b"content-length",
        b"expect",
        *HOP_BY_HOP,
        *FORWARDED,
        b"x-real-ip",
        *IDENTITY,
    }
)


def trailer_kept(name: bytes) -> bool:
    """Whether a trailer field named ``name`` (any case) is passed on.

    Not framing, routing, hop-by-hop (``Proxy-*`` included), ``Expect``, what the proxy
    sets (X-Forwarded-*, X-Real-IP), identity fields or a name with "_", whoever sent it.
    """
    lower = name.lower()
    return not (b"_" in lower or lower.startswith(b"proxy-") or lower in TRAILER_DROPPED)
