"""A connection's PROXY header, read off its socket before HTTP or TLS touches it.

The header is looked at with ``MSG_PEEK`` and then exactly its bytes are taken, so what
follows it (an HTTP request, a TLS ClientHello) is still on the socket, untouched, for
the plain or TLS channel that reads it next: neither needs to know a header was there.
That costs one more ``recv`` than reading blindly would (a peek, then the take), and
saves pushing bytes back under a TLS stream.
"""

from __future__ import annotations

import socket

import trio
from trio.lowlevel import wait_readable

from fastroute.errors import ProxyProtocolError
from fastroute.proxy.headers import Client, TrustedProxies
from fastroute.proxy.proxy_protocol import (
    HEADER_TIMEOUT,
    V2_MAX,
    NeedMore,
    ProxyHeader,
    parse_proxy_header,
    proxied_client,
    trusts_peer,
)

__all__ = ["accept_proxy_header", "recv_proxy_header"]


async def accept_proxy_header(
    sock: socket.socket,
    client: Client,
    trusted: TrustedProxies | None = None,
    *,
    timeout: float = HEADER_TIMEOUT,
) -> Client:
    """The HTTP/1 connection handler's one call, first thing on a listener that requires headers.

    Returns the client as the header tells it (``proxied_client``), with the socket
    positioned at the client's first byte.

    Raises:
        ProxyProtocolError: the connection must be closed unanswered (the reason says why).
    """
    header = await recv_proxy_header(sock, client.address, trusted, timeout=timeout)
    return proxied_client(client, header)


async def recv_proxy_header(
    sock: socket.socket,
    peer_address: str,
    trusted: TrustedProxies | None = None,
    *,
    timeout: float = HEADER_TIMEOUT,
    v2_max: int = V2_MAX,
) -> ProxyHeader:
    """Read the PROXY header ``sock`` starts with, and not one byte past it.

    Raises:
        ProxyProtocolError: as ``read_proxy_header`` (untrusted peer, missing, malformed,
            too long, cut off or late header).
    """
    if not trusts_peer(trusted, peer_address):
        raise ProxyProtocolError(
            f"peer {peer_address} is outside proxy-real-ip-cidr {trusted!r}: "
            "its header is not believed"
        )
    sock.setblocking(False)
    taken = b""
    with trio.move_on_after(timeout):
        while True:  # bounded: each turn takes bytes of a header the parser caps
            peeked = await _peek(sock, v2_max - len(taken))
            if not peeked:
                raise ProxyProtocolError(
                    f"connection closed after {len(taken)} bytes, before a complete header"
                )
            header = parse_proxy_header(taken + peeked, v2_max=v2_max)
            if isinstance(header, NeedMore):
                # every byte so far belongs to the header: take them, wait for the rest
                taken += _take(sock, len(peeked))
                continue
            _take(sock, header.length - len(taken))
            return header
    raise ProxyProtocolError(f"no complete header within {timeout:g} s ({len(taken)} bytes taken)")


async def _peek(sock: socket.socket, size: int) -> bytes:
    """The bytes waiting on ``sock`` (up to ``size``), left there; ``b""`` once it closed."""
    while True:  # ends with data or a close; the caller's deadline cancels the wait
        try:
            return sock.recv(max(size, 1), socket.MSG_PEEK)
        except BlockingIOError:
            await wait_readable(sock)
        except ConnectionResetError:
            return b""


def _take(sock: socket.socket, size: int) -> bytes:
    """Take ``size`` bytes a peek has just seen (they are in the kernel's buffer already)."""
    data = sock.recv(size) if size else b""
    if len(data) != size:
        raise ProxyProtocolError(f"socket gave {len(data)} of the {size} bytes it had shown")
    return data
