"""The headers a request and a response carry across the proxy.

Connection-specific ("hop-by-hop") headers describe one connection and must not be
forwarded (RFC 9110 §7.6.1): the fixed ones below, plus any header the ``Connection``
header names. ``X-Forwarded-*`` and ``X-Real-IP`` tell the upstream who the client is. A
client can send them too, and they are only believed when the peer is a trusted proxy
(for example a load balancer in front of the cluster); otherwise they are replaced.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HOP_BY_HOP",
    "Client",
    "Headers",
    "TrustedProxies",
    "request_headers",
    "response_headers",
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
    }
)
FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port")


@dataclass(frozen=True, slots=True)
class Client:
    """What the proxy knows about the connection a request came in on."""

    address: str  # the peer's IP address
    scheme: str  # "http" or "https": the listener's
    port: int  # the listener's port


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
    {b"host", b"content-length", b"transfer-encoding", *FORWARDED, b"x-real-ip"}
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
) -> Headers:
    """The headers to send upstream for a request that came in with ``headers``.

    ``Host`` is passed through unchanged (the upstream may route on it too); a request
    without one (HTTP/1.0) is sent ``host`` first, as HTTP/1.1 requires a Host.
    ``X-Forwarded-For`` gets the client's address appended to what a trusted proxy sent,
    or replaces what anyone else sent. ``X-Forwarded-Proto``/``-Host``/``-Port`` and
    ``X-Real-IP`` keep a trusted proxy's values and are set from this connection
    otherwise. ``upgrade`` (e.g. ``b"websocket"``) keeps a protocol upgrade going:
    ``Upgrade`` is hop-by-hop, so it is sent again explicitly.
    """
    believed = trusted.trusts(client.address)
    incoming = {n: v for n, v in headers if n in (*FORWARDED, b"x-real-ip")}
    forwarded_for = [v for n, v in headers if n == b"x-forwarded-for"]
    sent_host = next((v for n, v in headers if n == b"host"), None)
    out = [(n, v) for n, v in _end_to_end(headers) if n not in FORWARDED and n != b"x-real-ip"]
    if sent_host is None:
        out.insert(0, (b"host", host))
    host = host if sent_host is None else sent_host

    address = client.address.encode("ascii")
    chain = b", ".join([*forwarded_for, address]) if believed and forwarded_for else address
    out.append((b"x-forwarded-for", chain))
    ours = {
        b"x-forwarded-proto": client.scheme.encode("ascii"),
        b"x-forwarded-host": host,
        b"x-forwarded-port": str(client.port).encode("ascii"),
        b"x-real-ip": address,
    }
    for name, value in ours.items():
        out.append((name, incoming[name] if believed and name in incoming else value))
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
