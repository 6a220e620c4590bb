"""Byte channels the server reads and writes: plain sockets and TLS streams.

A plain TCP connection is driven directly: the non-blocking socket call is tried first,
and the task waits for readiness only when the kernel has nothing (trio's
``wait_readable``/``wait_writable``), so a request costs one trip through the scheduler
per wait instead of several per call. A channel that keeps finding data ready still
yields to the scheduler now and then, so one busy connection cannot starve the others.
TLS goes through ``trio.SSLStream``, behind the same two methods: client connections
(``StreamChannel``) and upstream ones (``TLSChannel``, from ``connect_tls``), which the
pool keeps like plain ones.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint,
    notify_closing,
    wait_readable,
    wait_writable,
)

__all__ = [
    "READ_SIZE",
    "Channel",
    "SocketChannel",
    "StreamChannel",
    "TLSChannel",
    "UpstreamChannel",
    "connect",
    "connect_tls",
]

READ_SIZE = 64 * 1024
_YIELD_EVERY = 32  # calls that found the socket ready before a forced checkpoint
# After a reply that was not in when tried (``recv_reply``), how many to wait for first
_WAIT_AFTER_MISS = 8


class Channel(Protocol):
    """What the server needs of a connection."""

    async def recv(self) -> bytes:
        """The next bytes received; ``b""`` once the peer has closed its side."""
        ...

    async def recv_reply(self) -> bytes:
        """``recv`` when the peer was just sent something and cannot have answered yet."""
        ...

    async def send(self, data: bytes) -> None:
        """Send all of ``data``; OSError or trio.BrokenResourceError if the peer is gone."""
        ...

    def send_some(self, data: bytes) -> int:
        """Send what of ``data`` can go without waiting; how many bytes went (OSError if
        the peer is gone). A request's small head and most answers go whole, and a call
        costs less than ``send``'s coroutine: ``send`` the rest."""
        ...

    def close(self) -> None:
        """Close at once (an abortive close for a half-finished exchange is fine)."""
        ...

    def peer_gone(self) -> bool:
        """Whether the peer has closed or reset the connection (checked without blocking)."""
        ...

    async def linger(self, seconds: float) -> None:
        """Before a close: read and drop what the peer still sends, for up to ``seconds``.

        Closing a socket with unread bytes sends an RST, and the peer may then lose the
        answer it was sent (a 413 to a client still uploading). nginx lingers the same way.
        """
        ...


class SocketChannel:
    """A non-blocking TCP socket, driven from a trio task."""

    __slots__ = ("_poller", "_ready_calls", "_waits_first", "in_loop", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.in_loop = False  # registered with the plain loop's epoll (``plain_loop``)
        self._ready_calls = 0
        self._waits_first = 0  # replies to wait for before trying first again
        self._poller: select.poll | None = None  # for ``stale``, made on first use

    async def recv(self) -> bytes:
        sock = self.sock
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                self._ready_calls = 0
                await wait_readable(sock)
                continue
            except ConnectionResetError:
                return b""
            self._ready_calls += 1
            if self._ready_calls >= _YIELD_EVERY:
                self._ready_calls = 0
                await checkpoint()
            return data

    def send_some(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    async def send(self, data: bytes) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            await wait_writable(sock)
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                continue

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            notify_closing(self.sock)
            self.sock.close()

    async def recv_reply(self) -> bytes:
        """The peer's answer to what was just sent: the rest of the scheduler's batch runs
        first (``checkpoint``), then the socket is tried, and waited for only if empty.

        Under load the answer is nearly always in by then, and a try that finds it saves
        the readiness wait: an ``epoll_ctl`` to re-arm the socket and trio's bookkeeping
        of it. A try that finds nothing costs a failed ``recv``; after one, the next
        ``_WAIT_AFTER_MISS`` replies on this channel wait first, as an idle channel should.
        """
        self._ready_calls = 0
        sock = self.sock
        if self._waits_first:
            self._waits_first -= 1
            await wait_readable(sock)
            return await self.recv()
        # a schedule point only: a cancelled task meets the cancellation at its next wait
        await cancel_shielded_checkpoint()
        try:
            return sock.recv(READ_SIZE)
        except BlockingIOError:
            self._waits_first = _WAIT_AFTER_MISS
            await wait_readable(sock)
            return await self.recv()
        except ConnectionResetError:
            return b""

    def stale(self) -> bool:
        """Whether an idle connection received anything (bytes or a close) since it went idle.

        Either way it cannot carry another exchange: bytes nobody asked for would be read
        as the next response. Checked without blocking, by a ``poll`` of this one socket,
        which costs a third of a ``recv(MSG_PEEK)`` that finds nothing and raises for it.
        """
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.sock, select.POLLIN)  # errors and hang-ups are always reported
        return bool(poller.poll(0))

    def peer_gone(self) -> bool:
        """Whether the peer closed or reset the connection (bytes it sent are no sign of that)."""
        return _peer_gone(self.sock)

    async def linger(self, seconds: float) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)  # the answer is complete: say so at once
        except OSError:
            return
        await _drain(self, seconds)


class StreamChannel:
    """A trio stream (TLS) behind the channel methods.

    ``sock`` is the TCP socket under the stream, when there is one: a look at it tells
    whether the peer is still there, which the TLS layer cannot say without reading.
    """

    __slots__ = ("sock", "stream")

    def __init__(self, stream: trio.abc.Stream, sock: socket.socket | None = None) -> None:
        self.stream = stream
        self.sock = sock

    async def recv(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(READ_SIZE))
        except trio.BrokenResourceError:
            return b""

    async def recv_reply(self) -> bytes:
        return await self.recv()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def send_some(self, data: bytes) -> int:
        return 0  # TLS records are written by the stream: all of it goes through ``send``

    def close(self) -> None:
        if isinstance(self.stream, trio.SSLStream):
            transport = self.stream.transport_stream
            if isinstance(transport, trio.SocketStream):
                transport.socket.close()

    def peer_gone(self) -> bool:
        """Whether the peer closed or reset the TCP connection under the stream."""
        return self.sock is not None and self.sock.fileno() >= 0 and _peer_gone(self.sock)

    async def linger(self, seconds: float) -> None:
        await _drain(self, seconds)


class TLSChannel(StreamChannel):
    """A TLS connection the proxy opened to an upstream: a StreamChannel that can be pooled.

    ``stale`` is ``SocketChannel.stale`` for TLS: an idle connection that received
    anything is not reused, a close_notify alert or a renegotiation included, and neither
    is one with bytes the TLS layer already took off the socket but nobody read.
    """

    __slots__ = ("_poller",)

    stream: trio.SSLStream[trio.SocketStream]
    sock: socket.socket

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], sock: socket.socket) -> None:
        super().__init__(stream, sock)
        self._poller: select.poll | None = None

    def stale(self) -> bool:
        if self.stream.pending():  # decrypted, unread
            return True
        incoming = getattr(self.stream, "_incoming", None)  # received, not yet decrypted
        if isinstance(incoming, ssl.MemoryBIO) and incoming.pending:
            return True
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))


UpstreamChannel = SocketChannel | TLSChannel


async def _drain(channel: SocketChannel | StreamChannel, seconds: float) -> None:
    """Read and drop until the peer closes, ``seconds`` pass, or the connection breaks."""
    with trio.move_on_after(seconds):
        try:
            while await channel.recv():
                pass
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _peer_gone(sock: socket.socket) -> bool:
    """A non-blocking look at a socket: has the peer's FIN or RST arrived?

    Pipelined bytes waiting to be read mean the peer is still there; only end of file
    or an error say it left.
    """
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def connect(address: str, port: int) -> SocketChannel:
    """A new TCP connection to ``address`` (an IP, or a name resolved off the loop)."""
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        socket.inet_pton(family, address)
        target: tuple[str, int] = (address, port)
    except OSError:  # a name (ExternalName Services): resolve in a thread
        infos = await trio.socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(errno.EHOSTUNREACH, f"{address} does not resolve") from None
        family, *_, sockaddr = infos[0]
        target = (str(sockaddr[0]), int(sockaddr[1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(target)
        if code == errno.EINPROGRESS:
            await wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, errno.errorcode.get(code, str(code)))
    except BaseException:
        if sock.fileno() >= 0:
            notify_closing(sock)
        sock.close()
        raise
    return SocketChannel(sock)


async def connect_tls(
    address: str,
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None,
    check: Callable[[trio.SSLStream[trio.SocketStream]], None] | None = None,
) -> TLSChannel:
    """A new TLS connection to ``address``, its handshake done and ``check`` passed.

    ``server_hostname`` is sent as SNI (unless it is an IP address) and checked against
    the certificate when ``context`` checks host names. ``check`` sees the finished
    handshake and raises OSError to refuse the connection.

    Raises:
        OSError: the TCP connection failed, the handshake failed (an ``ssl.SSLError``
            saying why, or the peer closed), or ``check`` refused.
    """
    plain = await connect(address, port)
    sock = plain.sock
    try:
        stream = trio.SSLStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
            context,
            server_hostname=server_hostname,
            https_compatible=True,  # an HTTP response ends by its framing, not close_notify
        )
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as error:
            cause = error.__cause__
            if isinstance(cause, OSError):
                raise cause from None
            raise ssl.SSLError(
                f"TLS handshake: {cause or 'the peer closed the connection'}"
            ) from None
        if check is not None:
            check(stream)
    except BaseException:
        plain.close()
        raise
    return TLSChannel(stream, sock)
