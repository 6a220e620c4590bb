"""PROXY protocol headers (HAProxy's, versions 1 and 2): who the client really is.

A TCP load balancer in front of the proxy (an AWS NLB, HAProxy) connects on the client's
behalf and starts the connection with one header naming the client; the client's own
bytes (HTTP, or a TLS handshake) follow. ``parse_proxy_header`` reads that header from the
bytes received so far and does no I/O, so it works on a raw socket before any TLS;
``read_proxy_header`` drives it from any async ``recv``.

The rules, from the spec (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt):

- v1 is one ASCII line, ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n``, single
  spaces, at most 107 bytes with its CRLF; or ``PROXY UNKNOWN`` and anything up to the CRLF.
- v2 is binary: a 12-byte signature, a version/command byte, a family/transport byte, a
  16-bit length, then that many bytes: the addresses, then TLVs (skipped here, each one's
  length checked). The spec allows 64 KiB; no balancer sends more than a few hundred
  bytes, so the header is capped (``V2_MAX``) rather than buffered whole.
- "Use the real peer" (``source`` is None): v1 ``UNKNOWN``; v2 ``LOCAL`` (the balancer's own
  health checks); v2 ``PROXY`` with AF_UNSPEC or AF_UNIX (a client with no IP address).

Every outcome is bounded: the parser asks for more bytes only while what it has is
shorter than the largest header it would accept, so a reader that stops at the first
non-``NEED_MORE`` answer never buffers more than ``V2_MAX`` bytes.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal

import trio

from fastroute.errors import ProxyProtocolError
from fastroute.proxy.headers import Client, TrustedProxies

__all__ = [
    "HEADER_TIMEOUT",
    "NEED_MORE",
    "V1_MAX",
    "V2_MAX",
    "V2_SIGNATURE",
    "Kind",
    "NeedMore",
    "ProxiedConnection",
    "ProxyHeader",
    "parse_proxy_header",
    "proxied_client",
    "read_proxy_header",
    "trusts_peer",
]

V1_PREFIX: Final = b"PROXY "
V1_MAX: Final = 107  # the spec's worst case: "PROXY TCP6 " + two full IPv6 + two ports + CRLF
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED: Final = 16  # signature, version/command, family/transport, length
V2_MAX: Final = 4096  # whole v2 header, TLVs included
HEADER_TIMEOUT: Final = 5.0  # ingress-nginx's proxy-protocol-header-timeout default

_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM, _DGRAM = 0x1, 0x2
# The family/transport bytes the spec defines; any other must be refused.
_DEFINED_FAMILIES = frozenset({0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32})
_ADDRESS_BLOCK = {_INET: 12, _INET6: 36, _UNIX: 216}  # two addresses (and two ports)
_FAMILY_NAMES = {_UNSPEC: "AF_UNSPEC", _INET: "AF_INET", _INET6: "AF_INET6", _UNIX: "AF_UNIX"}
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")  # decimal, no sign, no leading zeros


class NeedMore(enum.Enum):
    """The bytes so far are the start of a header; call again with more."""

    NEED_MORE = "need more bytes"


NEED_MORE: Final = NeedMore.NEED_MORE

Kind = Literal["TCP4", "TCP6", "UNKNOWN", "LOCAL"]


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header.

    ``kind`` uses v1's words for both versions: ``TCP4``/``TCP6`` carry addresses;
    ``UNKNOWN`` (v1 UNKNOWN, v2 AF_UNSPEC or AF_UNIX) and ``LOCAL`` (v2) do not, and the
    connection's real peer stays the client.
    """

    version: Literal[1, 2]
    kind: Kind
    length: int  # bytes the header took; what follows is the client's own
    source: tuple[str, int] | None = None  # (address, port), None for UNKNOWN and LOCAL
    destination: tuple[str, int] | None = None

    def client_address(self, peer_address: str) -> str:
        """The client's address: the header's source, else the real peer's."""
        return self.source[0] if self.source is not None else peer_address


def parse_proxy_header(data: bytes, *, v2_max: int = V2_MAX) -> ProxyHeader | NeedMore:
    """Read the PROXY header at the start of ``data`` (the bytes received so far).

    Returns:
        ``NEED_MORE`` while ``data`` is a proper prefix of a header that could still be
        valid; else the header, whose ``length`` says where the client's bytes start.

    Raises:
        ProxyProtocolError: no signature, a malformed header, or one over the caps
            (``V1_MAX``; ``v2_max`` bytes for v2, TLVs included), with the reason.
    """
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data, v2_max)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]) or V1_PREFIX.startswith(
        data[: len(V1_PREFIX)]
    ):
        return NEED_MORE  # shorter than either signature, and the start of one
    raise ProxyProtocolError(
        f"no PROXY protocol signature: the connection starts with {data[:16]!r}"
        f"{_looks_like(data)}, not 'PROXY ' (v1) or the v2 signature"
    )


def _looks_like(data: bytes) -> str:
    """A hint for the log line when a client skipped the balancer (or it sends no header)."""
    if data[:1] == b"\x16":
        return " (a TLS handshake)"
    if re.match(rb"[A-Z]{3,7} ", data):
        return " (an HTTP request)"
    return ""


def _parse_v1(data: bytes) -> ProxyHeader | NeedMore:
    end = data.find(b"\r\n", 0, V1_MAX)
    # before the CRLF, or until it arrives (a last CR may be its first half)
    line = data[:end] if end >= 0 else data[:V1_MAX].removesuffix(b"\r")
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError("v1 header line has a CR or LF that is not its final CRLF")
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError(f"v1 header line has no CRLF within {V1_MAX} bytes")
        return NEED_MORE
    fields = line.split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":  # the spec: ignore whatever else is on the line
        return ProxyHeader(version=1, kind="UNKNOWN", length=end + 2)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(
            f"v1 protocol {protocol!r} is not TCP4, TCP6 or UNKNOWN"
            + (" (fields are separated by exactly one space)" if protocol == b"" else "")
        )
    if len(fields) != 6 or b"" in fields:
        raise ProxyProtocolError(
            f"malformed v1 line {line!r}: expected 'PROXY {protocol.decode()} <source> "
            "<destination> <source port> <destination port>', one space between fields"
        )
    version = 4 if protocol == b"TCP4" else 6
    source = _v1_address(fields[2], version, "source")
    destination = _v1_address(fields[3], version, "destination")
    source_port = _v1_port(fields[4], "source")
    destination_port = _v1_port(fields[5], "destination")
    return ProxyHeader(
        version=1,
        kind="TCP4" if version == 4 else "TCP6",
        length=end + 2,
        source=(source, source_port),
        destination=(destination, destination_port),
    )


def _v1_address(field: bytes, version: int, role: str) -> str:
    try:
        text = field.decode("ascii")
        address = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
        if "%" in text:  # a scope ID names an interface of the sender's, not an address
            raise ValueError
    except ValueError:
        raise ProxyProtocolError(
            f"v1 {role} address {field!r} is not an IPv{version} address"
        ) from None
    return str(address)


def _v1_port(field: bytes, role: str) -> int:
    if _PORT.fullmatch(field) is None or int(field) > 65535:
        raise ProxyProtocolError(
            f"v1 {role} port {field!r} is not a decimal number from 0 to 65535"
        )
    return int(field)


def _parse_v2(data: bytes, v2_max: int) -> ProxyHeader | NeedMore:
    if len(data) < V2_FIXED:
        return NEED_MORE
    version, command = data[12] >> 4, data[12] & 0xF
    if version != 2:
        raise ProxyProtocolError(f"v2 signature with version {version}, not 2")
    if command not in (_LOCAL, _PROXY):
        raise ProxyProtocolError(f"v2 command {command:#x} is neither LOCAL (0x0) nor PROXY (0x1)")
    family_byte = data[13]
    family, transport = family_byte >> 4, family_byte & 0xF
    length = int.from_bytes(data[14:16], "big")
    total = V2_FIXED + length
    if total > v2_max:
        raise ProxyProtocolError(f"v2 header of {total} bytes is over the {v2_max}-byte limit")
    if command == _PROXY:  # LOCAL: the spec says to ignore family and addresses
        if family_byte not in _DEFINED_FAMILIES:
            raise ProxyProtocolError(
                f"v2 family/transport byte {family_byte:#04x} is not one the spec defines"
            )
        if transport == _DGRAM:
            raise ProxyProtocolError("v2 header is for a datagram (UDP) connection")
        needed = _ADDRESS_BLOCK.get(family, 0)
        if length < needed:
            raise ProxyProtocolError(
                f"v2 address block is {length} bytes, {_FAMILY_NAMES[family]} needs {needed}"
            )
    if len(data) < total:
        return NEED_MORE
    if command == _LOCAL:
        return ProxyHeader(version=2, kind="LOCAL", length=total)
    if family == _UNSPEC:  # no address block to find the TLVs after: all of it is skipped
        return ProxyHeader(version=2, kind="UNKNOWN", length=total)
    if family == _UNIX:
        _check_tlvs(data[V2_FIXED + _ADDRESS_BLOCK[_UNIX] : total])
        return ProxyHeader(version=2, kind="UNKNOWN", length=total)
    block = data[V2_FIXED:total]
    size = 4 if family == _INET else 16
    source = ipaddress.ip_address(block[:size])
    destination = ipaddress.ip_address(block[size : 2 * size])
    ports = block[2 * size : 2 * size + 4]
    _check_tlvs(block[_ADDRESS_BLOCK[family] :])
    return ProxyHeader(
        version=2,
        kind="TCP4" if family == _INET else "TCP6",
        length=total,
        source=(str(source), int.from_bytes(ports[:2], "big")),
        destination=(str(destination), int.from_bytes(ports[2:], "big")),
    )


def _check_tlvs(tlvs: bytes) -> None:
    """Each TLV (type, 16-bit length, value) must fit in what the header has left."""
    at = 0
    while at < len(tlvs):  # each turn moves ``at`` forward by 3 bytes at least
        if len(tlvs) - at < 3:
            raise ProxyProtocolError(
                f"v2 TLV at offset {at} is cut off: {len(tlvs) - at} bytes left, a TLV takes 3"
            )
        size = int.from_bytes(tlvs[at + 1 : at + 3], "big")
        if at + 3 + size > len(tlvs):
            raise ProxyProtocolError(
                f"v2 TLV of type {tlvs[at]:#04x} claims {size} bytes, "
                f"{len(tlvs) - at - 3} are left in the header"
            )
        at += 3 + size


def proxied_client(client: Client, header: ProxyHeader) -> Client:
    """The connection's client as the header tells it, for every later decision.

    The address becomes the header's source (X-Forwarded-For, X-Real-IP, allowlists,
    rate limits). The port becomes the one the client reached on the balancer, and a
    client that reached port 443 came over HTTPS (the balancer terminated TLS): ingress-nginx
    sends both on as X-Forwarded-Port and X-Forwarded-Proto. LOCAL and UNKNOWN headers
    leave the client as the connection has it.
    """
    if header.source is None or header.destination is None:
        return client
    port = header.destination[1]
    return Client(
        address=header.source[0], scheme="https" if port == 443 else client.scheme, port=port
    )


def trusts_peer(trusted: TrustedProxies | None, peer_address: str) -> bool:
    """Whether a header from ``peer_address`` is believed (ingress-nginx's proxy-real-ip-cidr).

    No list, or an empty one, trusts every peer: ingress-nginx's default is
    ``0.0.0.0/0``, and a listener that requires the header has no other source for the
    client's address.
    """
    return trusted is None or not trusted.networks or trusted.trusts(peer_address)


@dataclass(frozen=True, slots=True)
class ProxiedConnection:
    """A connection's PROXY header, read; the client's own bytes start at ``leftover``."""

    client_address: str  # the header's source, or the real peer for LOCAL and UNKNOWN
    header: ProxyHeader
    leftover: bytes  # received after the header: the start of the HTTP request or TLS


async def read_proxy_header(
    recv: Callable[[], Awaitable[bytes]],
    peer_address: str,
    trusted: TrustedProxies | None = None,
    *,
    timeout: float = HEADER_TIMEOUT,
    v2_max: int = V2_MAX,
) -> ProxiedConnection:
    """Read the PROXY header a connection starts with, through ``recv``.

    Args:
        recv: returns the next bytes received, ``b""`` once the peer has closed. Called
            as few times as the header takes (once, when it arrived in one segment).
        peer_address: the real peer (the balancer), checked against ``trusted``.
        trusted: the peers whose header is believed; None or empty trusts every peer.
        timeout: seconds for the whole header (a dropped balancer connection must not
            hold a connection slot for ever).

    Returns:
        The client's address, the header, and the bytes ``recv`` returned past it.

    Raises:
        ProxyProtocolError: the peer is not trusted (checked before any read), or the
            header is missing, malformed, too long, cut off by a close, or late.
    """
    if not trusts_peer(trusted, peer_address):
        raise ProxyProtocolError(
            f"peer {peer_address} is outside proxy-real-ip-cidr {trusted!r}: "
            "its header is not believed"
        )
    received = b""
    with trio.move_on_after(timeout):
        while True:  # bounded: the parser raises before ``received`` passes its caps
            data = await recv()
            if not data:
                raise ProxyProtocolError(
                    f"connection closed after {len(received)} bytes, before a complete header"
                )
            received += data
            header = parse_proxy_header(received, v2_max=v2_max)
            if not isinstance(header, NeedMore):
                return ProxiedConnection(
                    header.client_address(peer_address), header, received[header.length :]
                )
    raise ProxyProtocolError(
        f"no complete header within {timeout:g} s ({len(received)} bytes received)"
    )
