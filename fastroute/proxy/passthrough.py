"""SSL passthrough: TLS connections relayed undecrypted to the backend their SNI names.

On an HTTPS listener whose config has passthrough hosts (``RouteConfig.passthrough``),
the ClientHello is looked at with ``MSG_PEEK`` before any TLS is done, so that it is
still on the socket, untouched, for the handshake of a connection that is terminated
here after all (its SNI names another host, it has none, or it is no ClientHello). While
the hello is incomplete, ``SO_RCVLOWAT`` makes the wait for the rest a single wake-up
(a peek consumes nothing, so the socket would otherwise stay readable and the wait spin).
The peek shares the handshake's deadline (``Limits.head_timeout``): a client that sends
half a hello, or nothing, is closed as one that stalls its handshake is.

A passthrough connection goes to an endpoint of the host's ``/`` backend, in the
balancer's order (``CONNECT_TRIES`` at most, each within ``Limits.connect_timeout``),
and is relayed byte for byte both ways: the client's TLS session is the backend's, and
its certificate is the one the client checks. When one side closes, the other is told
(``shutdown``) and the rest of the other direction still flows; either side resetting,
or ``IDLE_TIMEOUT`` without a byte either way, closes both. No PROXY header is sent to
the backend, as ingress-nginx sends none to its passthrough backends (one the listener
received is read, and taken off, before the hello).
"""

from __future__ import annotations

import logging
import select
import socket
from contextlib import suppress

import trio
from trio.lowlevel import wait_readable

from fastroute.ingress.model import Backend, Endpoint, Target
from fastroute.proxy.balancer import Balancer
from fastroute.proxy.channel import SocketChannel, connect
from fastroute.proxy.client_hello import HELLO_LIMIT, HelloReading, NeedMore, read_client_hello
from fastroute.proxy.headers import Client
from fastroute.proxy.listener import LogThrottle
from fastroute.proxy.state import CONNECTION_FAILURES, ProxyState

__all__ = ["CONNECT_TRIES", "IDLE_TIMEOUT", "Passthrough", "peek_client_hello"]

# ingress-nginx's proxy-next-upstream-tries default: endpoints tried before giving up
CONNECT_TRIES = 3
# nginx's stream proxy_timeout default: a relay with no byte either way for this long ends
IDLE_TIMEOUT = 600.0

log = logging.getLogger("fastroute.proxy")
access_log = logging.getLogger("fastroute.access")
_UNREACHABLE_LOG = LogThrottle(log, interval=10.0)
_CLOSED = select.POLLRDHUP | select.POLLHUP | select.POLLERR


async def peek_client_hello(sock: socket.socket, deadline: float) -> HelloReading | None:
    """What ``sock``'s first bytes say about a ClientHello, leaving them on the socket.

    Returns None when the client closed, or sent too little by ``deadline``.
    """
    sock.setblocking(False)
    low_water = 1
    seen = -1
    try:
        with trio.move_on_at(deadline):
            while True:  # bounded: each turn sees more bytes, at most HELLO_LIMIT of them
                peeked = await _peek(sock)
                if len(peeked) <= seen and _closed(sock):
                    return None  # the client stopped writing halfway through
                seen = len(peeked)
                if not peeked:
                    return None
                reading = read_client_hello(peeked)
                if not isinstance(reading, NeedMore):
                    return reading
                if reading.total != low_water:
                    low_water = reading.total
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low_water)
                await wait_readable(sock)
        return None
    finally:
        if low_water != 1:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def _peek(sock: socket.socket) -> bytes:
    """The bytes waiting on ``sock`` (a hello's worth at most), left there; b"": closed."""
    while True:  # ends with data or a close; the caller's deadline cancels the wait
        try:
            return sock.recv(HELLO_LIMIT, socket.MSG_PEEK)
        except BlockingIOError:
            await wait_readable(sock)
        except ConnectionResetError:
            return b""


def _closed(sock: socket.socket) -> bool:
    """Whether the peer shut its side down (bytes still waiting hide that from a peek)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(events & _CLOSED for _, events in poller.poll(0))


class Passthrough:
    """Relays passthrough connections to their backends (one per proxy)."""

    def __init__(self, state: ProxyState, balancer: Balancer) -> None:
        self.state = state
        self.balancer = balancer
        self.idle_timeout = IDLE_TIMEOUT  # seconds a relay may carry no byte either way
        self.open = 0  # relays in progress: a drain waits for them as for requests
        self.all_closed = trio.Event()  # set (and replaced) each time ``open`` drops to 0

    async def relay(
        self, sock: socket.socket, client: Client, server_name: str, target: Target
    ) -> None:
        """Relay ``sock`` to an endpoint of ``target``'s backend until either side ends it.

        The caller closes ``sock``.
        """
        started = trio.current_time()
        backend = target.backend
        connected = await self._connect(backend)
        if connected is None:
            result = "unreachable" if backend.usable() else "no_endpoints"
            why = backend.problem or f"no endpoint of {backend.name} took the connection"
            _UNREACHABLE_LOG.log(
                logging.WARNING,
                "ssl-passthrough: closed a connection for %s",
                f"{server_name}: {why}",
            )
            self._count(target, result)
            return
        endpoint, upstream = connected
        self.open += 1
        try:
            sent, received = await _pipe(SocketChannel(sock), upstream, self.idle_timeout)
        finally:
            upstream.close()
            self.open -= 1
            if not self.open:
                self.all_closed.set()
                self.all_closed = trio.Event()
        self._count(target, "relayed")
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s "TLS %s" passthrough %.1fms %s %s %d %d',
                client.address,
                server_name,
                (trio.current_time() - started) * 1000,
                target.ingress,
                endpoint,
                sent,
                received,
            )

    async def _connect(self, backend: Backend) -> tuple[Endpoint, SocketChannel] | None:
        """A connection to the first endpoint of ``backend`` that takes one, or None."""
        balancer = self.balancer
        timeout = self.state.limits.connect_timeout
        for endpoint in balancer.attempts(backend, now=trio.current_time())[:CONNECT_TRIES]:
            reason = "connect timed out"
            with trio.move_on_after(timeout):
                try:
                    channel = await connect(endpoint.address, endpoint.port)
                except OSError as error:
                    reason = f"connect: {error}"
                else:
                    balancer.succeeded(endpoint)
                    return endpoint, channel
            balancer.failed(endpoint, now=trio.current_time(), reason=reason)
            self.state.upstream_error(backend.name, endpoint, "connect")
        return None

    def _count(self, target: Target, result: str) -> None:
        metrics = self.state.metrics
        if metrics is not None:
            metrics.passthrough_connection(target.ingress, target.backend.name, result)


async def _pipe(client: SocketChannel, upstream: SocketChannel, idle: float) -> tuple[int, int]:
    """Copy bytes both ways until both sides have closed, one resets, or ``idle`` seconds
    pass without a byte; the bytes (client to upstream, upstream to client)."""
    counts = [0, 0]
    with trio.CancelScope(deadline=trio.current_time() + idle) as scope:

        async def pump(source: SocketChannel, sink: SocketChannel, which: int) -> None:
            try:
                while data := await source.recv():
                    scope.deadline = trio.current_time() + idle
                    await sink.send(data)
                    counts[which] += len(data)
                sink.sock.shutdown(socket.SHUT_WR)  # the close goes on; the other way flows
            except CONNECTION_FAILURES:
                scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream, 0)
            nursery.start_soon(pump, upstream, client, 1)
    return counts[0], counts[1]
