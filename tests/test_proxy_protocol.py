"""PROXY protocol headers: every valid form, every malformed one with its reason, the caps,
reads split anywhere, and real sockets where HTTP or TLS follows the header.

v2 headers are built here with ``struct`` from the spec's layout
(https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt, section 2.2), independently
of the parser.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.errors import ProxyProtocolError
from fastroute.ingress.certs import self_signed_certificate
from fastroute.proxy.headers import Client, TrustedProxies
from fastroute.proxy.proxy_protocol import (
    NEED_MORE,
    V1_MAX,
    V2_MAX,
    Kind,
    ProxiedConnection,
    ProxyHeader,
    parse_proxy_header,
    proxied_client,
    read_proxy_header,
)
from fastroute.proxy.proxy_protocol_socket import accept_proxy_header, recv_proxy_header
from tests.polling import DEADLINE

SETTINGS = settings(max_examples=200, deadline=None)
T = TypeVar("T")
REQUEST = b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"
PEER = "10.0.0.5"  # the load balancer

# --------------------------------------------------------------------------- v2, from the spec

SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
LOCAL, PROXY = 0x0, 0x1
TCP_OVER_IPV4, TCP_OVER_IPV6, UNIX_STREAM, UNSPEC = 0x11, 0x21, 0x31, 0x00


def v2(
    command: int = PROXY,
    family: int = TCP_OVER_IPV4,
    block: bytes = b"",
    *,
    version: int = 2,
    length: int | None = None,
) -> bytes:
    """Signature, version/command, family/transport, 16-bit length, then ``block``."""
    size = len(block) if length is None else length
    return SIGNATURE + struct.pack("!BBH", version << 4 | command, family, size) + block


def ipv4_block(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return struct.pack(
        "!4s4sHH",
        socket.inet_pton(socket.AF_INET, source),
        socket.inet_pton(socket.AF_INET, destination),
        source_port,
        destination_port,
    )


def ipv6_block(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return struct.pack(
        "!16s16sHH",
        socket.inet_pton(socket.AF_INET6, source),
        socket.inet_pton(socket.AF_INET6, destination),
        source_port,
        destination_port,
    )


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP, PP2_TYPE_AWS = 0x01, 0x02, 0x04, 0xEA
TLVS = tlv(PP2_TYPE_ALPN, b"h2") + tlv(PP2_TYPE_AUTHORITY, b"shop.example.com")
TLVS += tlv(PP2_TYPE_NOOP, b"") + tlv(PP2_TYPE_AWS, b"\x01vpce-0123456789abcdef0")

V4 = ("192.0.2.10", "198.51.100.20", 56324, 443)
V6 = ("2001:db8::10", "2001:db8:1::20", 40000, 8443)

# --------------------------------------------------------------------------- valid forms

VALID: list[tuple[str, bytes, ProxyHeader]] = [
    (
        "v1 TCP4",
        b"PROXY TCP4 192.0.2.10 198.51.100.20 56324 443\r\n",
        ProxyHeader(1, "TCP4", 47, ("192.0.2.10", 56324), ("198.51.100.20", 443)),
    ),
    (
        "v1 TCP6, written uncompressed and in capitals",
        b"PROXY TCP6 2001:DB8:0:0:0:0:0:10 2001:db8:1::20 0 65535\r\n",
        ProxyHeader(1, "TCP6", 57, ("2001:db8::10", 0), ("2001:db8:1::20", 65535)),
    ),
    ("v1 UNKNOWN alone", b"PROXY UNKNOWN\r\n", ProxyHeader(1, "UNKNOWN", 15)),
    (
        "v1 UNKNOWN with whatever follows on its line",
        b"PROXY UNKNOWN ::1 ::1 1 2\r\n",
        ProxyHeader(1, "UNKNOWN", 27),
    ),
    (
        "v2 PROXY over IPv4",
        v2(block=ipv4_block(*V4)),
        ProxyHeader(2, "TCP4", 28, ("192.0.2.10", 56324), ("198.51.100.20", 443)),
    ),
    (
        "v2 PROXY over IPv4 with TLVs",
        v2(block=ipv4_block(*V4) + TLVS),
        ProxyHeader(2, "TCP4", 28 + len(TLVS), ("192.0.2.10", 56324), ("198.51.100.20", 443)),
    ),
    (
        "v2 PROXY over IPv6",
        v2(family=TCP_OVER_IPV6, block=ipv6_block(*V6)),
        ProxyHeader(2, "TCP6", 52, ("2001:db8::10", 40000), ("2001:db8:1::20", 8443)),
    ),
    (
        "v2 PROXY over IPv6 with TLVs",
        v2(family=TCP_OVER_IPV6, block=ipv6_block(*V6) + TLVS),
        ProxyHeader(2, "TCP6", 52 + len(TLVS), ("2001:db8::10", 40000), ("2001:db8:1::20", 8443)),
    ),
    ("v2 LOCAL, no addresses", v2(LOCAL, UNSPEC), ProxyHeader(2, "LOCAL", 16)),
    (
        "v2 LOCAL with an address block, ignored",
        v2(LOCAL, TCP_OVER_IPV4, ipv4_block(*V4)),
        ProxyHeader(2, "LOCAL", 28),
    ),
    ("v2 PROXY with AF_UNSPEC", v2(PROXY, UNSPEC, b"\x00" * 8), ProxyHeader(2, "UNKNOWN", 24)),
    (
        "v2 PROXY over AF_UNIX",
        v2(PROXY, UNIX_STREAM, b"/run/client".ljust(108, b"\0") * 2 + TLVS),
        ProxyHeader(2, "UNKNOWN", 16 + 216 + len(TLVS)),
    ),
]


@pytest.mark.parametrize(("header", "expected"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_each_valid_form_parses_and_says_where_the_client_bytes_start(
    header: bytes, expected: ProxyHeader
) -> None:
    assert expected.length == len(header)
    assert parse_proxy_header(header + REQUEST) == expected


@pytest.mark.parametrize("header", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_every_proper_prefix_of_a_valid_header_asks_for_more(header: bytes) -> None:
    for size in range(len(header)):
        assert parse_proxy_header(header[:size]) is NEED_MORE, size


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 192.0.2.10 198.51.100.20 56324 443\r\n", "192.0.2.10"),
        (v2(family=TCP_OVER_IPV6, block=ipv6_block(*V6)), "2001:db8::10"),
        (b"PROXY UNKNOWN\r\n", PEER),
        (v2(LOCAL, UNSPEC), PEER),
        (v2(PROXY, UNIX_STREAM, b"\0" * 216), PEER),
    ],
    ids=["v1 TCP4", "v2 TCP6", "v1 UNKNOWN", "v2 LOCAL", "v2 AF_UNIX"],
)
def test_the_client_is_the_source_or_else_the_real_peer(header: bytes, client: str) -> None:
    result = parse_proxy_header(header)
    assert isinstance(result, ProxyHeader)
    assert result.client_address(PEER) == client


# --------------------------------------------------------------------------- malformed forms

V1_OK = b"PROXY TCP4 192.0.2.10 198.51.100.20 56324 443\r\n"

MALFORMED: list[tuple[str, bytes, str]] = [
    ("plain HTTP", REQUEST, "no PROXY protocol signature: the connection starts with b'GET"),
    ("plain HTTP, said so", REQUEST, "(an HTTP request)"),
    ("a TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "(a TLS handshake)"),
    ("v1 in lower case", V1_OK.lower(), "no PROXY protocol signature"),
    ("v1 with two spaces", V1_OK.replace(b"TCP4 ", b"TCP4  "), "one space between fields"),
    ("v1 with two spaces after PROXY", b"PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "exactly one space"),
    ("v1 with a trailing space", V1_OK.replace(b"443", b"443 "), "one space between fields"),
    ("v1 with a tab", V1_OK.replace(b" 56324", b"\t56324"), "malformed v1 line"),
    ("v1 missing a port", b"PROXY TCP4 192.0.2.10 198.51.100.20 56324\r\n", "malformed v1 line"),
    ("v1 ending in a bare LF", V1_OK[:-2] + b"\n", "a CR or LF that is not its final CRLF"),
    ("v1 ending in a bare CR", V1_OK[:-2] + b"\rGET", "a CR or LF that is not its final CRLF"),
    ("v1 with a CR before its CRLF", V1_OK[:-2] + b"\r\r\n", "that is not its final CRLF"),
    ("v1 UDP4", V1_OK.replace(b"TCP4", b"UDP4"), "b'UDP4' is not TCP4, TCP6 or UNKNOWN"),
    ("v1 TCP4 with IPv6", b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", "not an IPv4 address"),
    ("v1 TCP6 with IPv4", b"PROXY TCP6 192.0.2.1 2001:db8::1 1 2\r\n", "not an IPv6 address"),
    ("v1 octet with a zero", V1_OK.replace(b"192.0.2.10", b"192.0.2.010"), "not an IPv4"),
    ("v1 host name", V1_OK.replace(b"192.0.2.10", b"example.com"), "not an IPv4 address"),
    ("v1 IPv6 scope", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "not an IPv6 address"),
    ("v1 port over 65535", V1_OK.replace(b"56324", b"65536"), "port b'65536' is not"),
    ("v1 port with a zero", V1_OK.replace(b"443", b"0443"), "port b'0443' is not"),
    ("v1 negative port", V1_OK.replace(b"443", b"-1"), "port b'-1' is not"),
    ("v1 port with a sign", V1_OK.replace(b"443", b"+443"), "port b'+443' is not"),
    ("v2 version 1", v2(version=1, block=ipv4_block(*V4)), "version 1, not 2"),
    ("v2 version 3", v2(version=3, block=ipv4_block(*V4)), "version 3, not 2"),
    ("v2 command 2", v2(command=0x2, block=ipv4_block(*V4)), "command 0x2 is neither LOCAL"),
    ("v2 command 0xf", v2(command=0xF, block=ipv4_block(*V4)), "command 0xf is neither"),
    ("v2 family 4", v2(family=0x41, block=ipv4_block(*V4)), "byte 0x41 is not one the spec"),
    ("v2 transport 3", v2(family=0x13, block=ipv4_block(*V4)), "byte 0x13 is not one"),
    ("v2 AF_INET without transport", v2(family=0x10, block=ipv4_block(*V4)), "byte 0x10"),
    ("v2 UDP over IPv4", v2(family=0x12, block=ipv4_block(*V4)), "datagram (UDP)"),
    ("v2 UDP over IPv6", v2(family=0x22, block=ipv6_block(*V6)), "datagram (UDP)"),
    ("v2 IPv4 block short", v2(block=ipv4_block(*V4)[:11]), "11 bytes, AF_INET needs 12"),
    (
        "v2 IPv6 block short",
        v2(family=TCP_OVER_IPV6, block=ipv4_block(*V4)),
        "12 bytes, AF_INET6 needs 36",
    ),
    ("v2 AF_UNIX block short", v2(family=UNIX_STREAM, block=b"\0" * 215), "AF_UNIX needs 216"),
    ("v2 TLV cut off", v2(block=ipv4_block(*V4) + b"\x01\x00"), "TLV at offset 0 is cut off"),
    (
        "v2 TLV longer than the header",
        v2(block=ipv4_block(*V4) + tlv(1, b"h2") + struct.pack("!BH", 2, 10) + b"abc"),
        "TLV of type 0x02 claims 10 bytes, 3 are left",
    ),
    (
        "v2 AF_UNIX TLV longer than the header",
        v2(family=UNIX_STREAM, block=b"\0" * 216 + struct.pack("!BH", 4, 1)),
        "claims 1 bytes, 0 are left",
    ),
]


@pytest.mark.parametrize(
    ("data", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_each_malformed_form_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError, match="PROXY protocol: ") as caught:
        parse_proxy_header(data + REQUEST)
    assert reason in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_a_v2_header_is_refused_on_its_first_16_bytes_when_they_are_wrong() -> None:
    """A bad version or family is known before the address block arrives: no waiting for it."""
    for header in (v2(version=1, block=ipv4_block(*V4)), v2(family=0x12, block=b"")):
        with pytest.raises(ProxyProtocolError):
            parse_proxy_header(header[:16])


# --------------------------------------------------------------------------- caps


def test_a_v1_line_of_107_bytes_is_the_longest_taken() -> None:
    longest = b"PROXY UNKNOWN " + b" ".join([b"ffff:" * 7 + b"ffff"] * 2) + b" 65535 65535\r\n"
    assert len(longest) == V1_MAX == 107
    assert parse_proxy_header(longest) == ProxyHeader(1, "UNKNOWN", 107)
    one_more = longest.replace(b"UNKNOWN", b"UNKNOWN ")
    with pytest.raises(ProxyProtocolError, match="no CRLF within 107 bytes"):
        parse_proxy_header(one_more)


def test_a_v1_line_without_crlf_waits_up_to_107_bytes_then_is_refused() -> None:
    start = b"PROXY UNKNOWN " + b"x" * 200
    assert parse_proxy_header(start[: V1_MAX - 1]) is NEED_MORE
    with pytest.raises(ProxyProtocolError, match="no CRLF within 107 bytes"):
        parse_proxy_header(start[:V1_MAX])


def test_a_v2_header_up_to_the_cap_is_taken_and_one_byte_more_refused_from_its_length() -> None:
    room = V2_MAX - 16 - 12 - 3  # one TLV fills the header to exactly V2_MAX bytes
    largest = v2(block=ipv4_block(*V4) + tlv(PP2_TYPE_NOOP, b"\0" * room))
    assert len(largest) == V2_MAX
    parsed = parse_proxy_header(largest + REQUEST)
    assert isinstance(parsed, ProxyHeader)
    assert parsed.length == V2_MAX
    too_large = v2(block=ipv4_block(*V4) + tlv(PP2_TYPE_NOOP, b"\0" * (room + 1)))
    with pytest.raises(ProxyProtocolError, match=f"4097 bytes is over the {V2_MAX}-byte limit"):
        parse_proxy_header(too_large[:16])  # refused before the rest is received


def test_the_v2_cap_is_a_parameter() -> None:
    header = v2(block=ipv4_block(*V4) + TLVS)
    with pytest.raises(ProxyProtocolError, match="over the 64-byte limit"):
        parse_proxy_header(header, v2_max=64)
    assert isinstance(parse_proxy_header(header, v2_max=len(header)), ProxyHeader)


# --------------------------------------------------------------------------- round trips

ports = st.integers(0, 65535)
tlv_lists = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(lambda t: tlv(*t)), max_size=4
)


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A header built from the spec, and what it says."""
    ipv6 = draw(st.booleans())
    addresses = st.ip_addresses(v=6) if ipv6 else st.ip_addresses(v=4)
    source, destination = draw(addresses), draw(addresses)
    source_port, destination_port = draw(ports), draw(ports)
    kind: Kind = "TCP6" if ipv6 else "TCP4"
    version: Literal[1, 2]
    if draw(st.booleans()):
        text = f"PROXY {kind} {source} {destination} {source_port} {destination_port}\r\n"
        header, version = text.encode("ascii"), 1
    else:
        pack = ipv6_block if ipv6 else ipv4_block
        block = pack(str(source), str(destination), source_port, destination_port)
        family = TCP_OVER_IPV6 if ipv6 else TCP_OVER_IPV4
        header, version = v2(family=family, block=block + b"".join(draw(tlv_lists))), 2
    expected = ProxyHeader(
        version,
        kind,
        len(header),
        (str(source), source_port),
        (str(destination), destination_port),
    )
    return header, expected


@SETTINGS
@given(valid_headers(), st.binary(max_size=64))
def test_a_generated_valid_header_round_trips(
    built: tuple[bytes, ProxyHeader], after: bytes
) -> None:
    header, expected = built
    assert parse_proxy_header(header + after) == expected


@SETTINGS
@given(st.binary(min_size=1, max_size=300))
def test_arbitrary_bytes_give_a_header_more_or_a_refusal_never_anything_else(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    assert result is NEED_MORE or (isinstance(result, ProxyHeader) and result.length <= len(data))


# --------------------------------------------------------------------------- read_proxy_header


class ScriptedPeer:
    """A ``recv`` that hands out the given chunks in order, then ``b""``; counts its calls."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.calls = 0

    async def recv(self) -> bytes:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        return self.chunks[self.calls - 1] if self.calls <= len(self.chunks) else b""

    def unread(self) -> bytes:
        return b"".join(self.chunks[self.calls :])


def run(call: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        with trio.fail_after(DEADLINE):
            return await call()

    return trio.run(bounded)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=len(data) - 1)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@SETTINGS
@given(st.data(), valid_headers())
def test_any_split_of_the_header_reads_the_same_and_keeps_every_later_byte(
    data: st.DataObject, built: tuple[bytes, ProxyHeader]
) -> None:
    header, expected = built
    chunks = data.draw(split(header + REQUEST))
    peer = ScriptedPeer(chunks)
    result = run(lambda: read_proxy_header(peer.recv, PEER))
    assert result.header == expected
    assert result.client_address == expected.client_address(PEER)
    assert result.leftover + peer.unread() == REQUEST
    # no recv past the one that completed the header
    completed_by = next(
        i for i in range(len(chunks)) if sum(map(len, chunks[: i + 1])) >= len(header)
    )
    assert peer.calls == completed_by + 1


def test_a_header_that_arrives_whole_takes_one_recv() -> None:
    peer = ScriptedPeer([V1_OK + REQUEST])
    result = run(lambda: read_proxy_header(peer.recv, PEER))
    assert peer.calls == 1
    assert result.client_address == "192.0.2.10"
    assert result.leftover == REQUEST


def test_a_close_before_the_header_ends_is_refused_with_how_far_it_got() -> None:
    peer = ScriptedPeer([V1_OK[:20]])
    with pytest.raises(ProxyProtocolError, match="connection closed after 20 bytes"):
        run(lambda: read_proxy_header(peer.recv, PEER))


def test_a_header_that_never_completes_is_refused_at_the_timeout() -> None:
    sent = iter(V1_OK[:-2])  # a line that never ends, one byte a second

    async def trickle() -> bytes:
        await trio.sleep(1)
        return bytes([next(sent)])

    async def read() -> ProxiedConnection:
        return await read_proxy_header(trickle, PEER, timeout=4.5)

    clock = trio.testing.MockClock(autojump_threshold=0)
    with pytest.raises(ProxyProtocolError, match=r"no complete header within 4.5 s \(4 bytes"):
        trio.run(read, clock=clock)


def test_a_malformed_header_is_refused_without_reading_on() -> None:
    peer = ScriptedPeer([b"PROXY TCP4 192.0.2.10\n", REQUEST])
    with pytest.raises(ProxyProtocolError, match="not its final CRLF"):
        run(lambda: read_proxy_header(peer.recv, PEER))
    assert peer.calls == 1


# --------------------------------------------------------------------------- trust


@pytest.mark.parametrize(
    ("trusted", "peer", "believed"),
    [
        (None, "198.51.100.7", True),
        (TrustedProxies(), "2001:db8::7", True),
        (TrustedProxies(["10.0.0.0/8"]), PEER, True),
        (TrustedProxies(["10.0.0.0/8", "2001:db8::/32"]), "2001:db8::7", True),
        (TrustedProxies(["10.0.0.0/8"]), "198.51.100.7", False),
        # ingress-nginx's default written out is an IPv4 network: IPv6 peers fall outside
        (TrustedProxies(["0.0.0.0/0"]), "2001:db8::7", False),
        (TrustedProxies(["0.0.0.0/0"]), "198.51.100.7", True),
    ],
)
def test_a_header_is_believed_only_from_a_trusted_peer_and_refused_unread_otherwise(
    trusted: TrustedProxies | None, peer: str, believed: bool
) -> None:
    script = ScriptedPeer([V1_OK + REQUEST])
    if believed:
        result = run(lambda: read_proxy_header(script.recv, peer, trusted))
        assert result.client_address == "192.0.2.10"
    else:
        with pytest.raises(ProxyProtocolError, match=f"peer {peer} is outside proxy-real-ip-cidr"):
            run(lambda: read_proxy_header(script.recv, peer, trusted))
        assert script.calls == 0


# --------------------------------------------------------------------------- the client


@pytest.mark.parametrize(
    ("header", "listener", "client"),
    [
        # ingress-nginx's e2e settings/proxy_protocol.go: the port reached on the balancer
        # is X-Forwarded-Port, and 443 there means the client spoke HTTPS to it
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 1234\r\n",
            Client("10.0.0.5", "http", 80),
            Client("192.168.0.1", "http", 1234),
        ),
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            Client("10.0.0.5", "http", 80),
            Client("192.168.0.1", "https", 443),
        ),
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 1234\r\n",
            Client("10.0.0.5", "https", 443),
            Client("192.168.0.1", "https", 1234),
        ),
        (b"PROXY UNKNOWN\r\n", Client(PEER, "http", 80), Client(PEER, "http", 80)),
        (v2(LOCAL, UNSPEC), Client(PEER, "https", 443), Client(PEER, "https", 443)),
    ],
    ids=["http", "443 on the balancer is https", "https listener", "v1 UNKNOWN", "v2 LOCAL"],
)
def test_the_client_becomes_the_one_the_header_names(
    header: bytes, listener: Client, client: Client
) -> None:
    parsed = parse_proxy_header(header)
    assert isinstance(parsed, ProxyHeader)
    assert proxied_client(listener, parsed) == client


# --------------------------------------------------------------------------- real sockets


def test_the_socket_reader_takes_exactly_the_header_however_it_arrives() -> None:
    """Pieces sent while the reader waits: it takes them, and leaves the request unread."""
    header = v2(family=TCP_OVER_IPV6, block=ipv6_block(*V6) + TLVS)
    pieces = [header[:5], header[5:16], header[16:40], header[40:] + REQUEST[:10]]

    async def main() -> None:
        server, client = socket.socketpair()
        with server, client, trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:

                async def send_pieces() -> None:
                    for piece in pieces:
                        await trio.testing.wait_all_tasks_blocked()
                        client.sendall(piece)

                nursery.start_soon(send_pieces)
                read = await accept_proxy_header(server, Client(PEER, "https", 443))
            assert read == Client("2001:db8::10", "https", 8443)
            client.sendall(REQUEST[10:])
            received = b""
            while len(received) < len(REQUEST):  # bounded by the deadline above
                await trio.lowlevel.wait_readable(server)
                received += server.recv(1024)
            assert received == REQUEST

    trio.run(main)


def test_the_socket_reader_refuses_what_is_not_a_header_and_reads_no_further() -> None:
    async def main() -> None:
        server, client = socket.socketpair()
        with server, client, trio.fail_after(DEADLINE):
            client.sendall(REQUEST)
            with pytest.raises(ProxyProtocolError, match=r"\(an HTTP request\)"):
                await recv_proxy_header(server, PEER)
            assert server.recv(1024) == REQUEST  # nothing was taken

    trio.run(main)


def test_the_socket_reader_refuses_a_close_mid_header() -> None:
    async def main() -> None:
        server, client = socket.socketpair()
        with server, trio.fail_after(DEADLINE):
            client.sendall(V1_OK[:30])
            client.close()
            with pytest.raises(ProxyProtocolError, match="closed after 30 bytes"):
                await recv_proxy_header(server, PEER)

    trio.run(main)


@pytest.mark.e2e
def test_tls_after_a_header_on_a_loopback_listener(tmp_path: Path) -> None:
    """The TLS handshake that follows the header finds its ClientHello on the socket intact."""
    certificate = self_signed_certificate(["shop.example.com"])
    (tmp_path / "chain.pem").write_bytes(certificate.chain_pem)
    (tmp_path / "key.pem").write_bytes(certificate.key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    client_context = ssl.create_default_context(cadata=certificate.chain_pem.decode("ascii"))
    header = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    seen: list[tuple[Client, bytes]] = []

    async def serve(listener: trio.socket.SocketType) -> None:
        accepted, (peer, _) = await listener.accept()
        sock = socket.socket(fileno=accepted.detach())
        client = await accept_proxy_header(
            sock, Client(peer, "http", 80), TrustedProxies(["127.0.0.0/8"])
        )
        stream = trio.SSLStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
            server_context,
            server_side=True,
        )
        request = b""
        while not request.endswith(b"\r\n\r\n"):  # bounded by the deadline
            request += await stream.receive_some(1024)
        seen.append((client, request))
        await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        await stream.aclose()

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            listener = trio.socket.socket()
            with listener:
                await listener.bind(("127.0.0.1", 0))
                listener.listen()
                port = listener.getsockname()[1]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve, listener)
                    tcp = await trio.open_tcp_stream("127.0.0.1", port)
                    await tcp.send_all(header)
                    tls = trio.SSLStream(tcp, client_context, server_hostname="shop.example.com")
                    await tls.send_all(REQUEST)
                    answer = b""
                    while not answer.endswith(b"\r\n\r\n"):  # bounded by the deadline
                        answer += await tls.receive_some(1024)
                    assert answer.startswith(b"HTTP/1.1 204")
                    await tcp.aclose()

    trio.run(main)
    assert seen == [(Client("192.168.0.1", "https", 443), REQUEST)]
