"""Taking client connections: the accept loop, connection slots, the TLS handshake.

Each accepted connection gets a slot (``Limits.max_connections``) and a task, which
terminates TLS on an HTTPS listener and hands the connection to the HTTP/1 front end
(``http1``). When the config has passthrough hosts or hosts that ask for client
certificates, the ClientHello is peeked at first: its SNI says whether the connection is
relayed undecrypted (``passthrough``), terminated by OpenSSL asking for a certificate
(``client_tls``), or terminated as any other.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
from contextlib import suppress

import trio
from trio.lowlevel import notify_closing, wait_readable

from fastroute.errors import ProxyProtocolError
from fastroute.ingress.model import RouteConfig, Target
from fastroute.proxy.channel import Channel, SocketChannel, StreamChannel
from fastroute.proxy.client_certs import PeerCertificate
from fastroute.proxy.client_hello import ClientHello
from fastroute.proxy.client_tls import client_auth_handshake
from fastroute.proxy.headers import Client, TrustedProxies
from fastroute.proxy.http1 import Http1
from fastroute.proxy.listener import (
    DESCRIPTOR_ERRORS,
    AcceptBackoff,
    LogThrottle,
    error_name,
    warn_about_descriptor_limit,
)
from fastroute.proxy.passthrough import Passthrough, peek_client_hello
from fastroute.proxy.proxy_protocol_socket import accept_proxy_header
from fastroute.proxy.state import Phase, ProxyState
from fastroute.proxy.tls import ClientAuthContext, send_handshake_alert

__all__ = ["Acceptor"]

log = logging.getLogger("fastroute.proxy")

RECLAIM_INTERVAL = 0.25  # at --max-connections, how often to look for idle connections
_RECLAIMS_LOG = LogThrottle(log, interval=60.0)  # idle connections closed for room
_PROXY_PROTOCOL_LOG = LogThrottle(log, interval=10.0)  # connections without a good header


@functools.lru_cache(maxsize=8)
def _proxy_peers(cidrs: tuple[str, ...]) -> TrustedProxies:
    """The peers whose PROXY header is believed (``proxy-real-ip-cidr``).

    ingress-nginx's default, ``0.0.0.0/0``, means any peer; it is read so for IPv6 peers
    too, as a dual-stack listener sees them.
    """
    if "0.0.0.0/0" in cidrs:
        cidrs = (*cidrs, "::/0")
    return TrustedProxies(cidrs)


class Acceptor:
    """Accepts connections on listening sockets and hands them to ``http1``."""

    def __init__(self, state: ProxyState, http1: Http1) -> None:
        self.state = state
        self.limits = state.limits
        self.http1 = http1
        self._connection_slots = trio.CapacityLimiter(state.limits.max_connections)
        self.passthrough = Passthrough(state, http1.forwarder.balancer)

    async def accept(self, sock: socket.socket, scheme: str, nursery: trio.Nursery) -> None:
        """Accept connections while a slot is free (``Limits.max_connections``).

        At the limit, the oldest idle connection is closed to make room (``_reclaim``); when
        none is idle, accepting stops and new connections wait in the kernel's backlog, as
        nginx does, so open connections never exceed the limit. Out of descriptors or
        memory, accepting pauses (longer while it goes on), with a log line per episode;
        out of descriptors, the oldest idle connection is closed as well, so that clients
        with a request to make get in rather than idle ones holding every descriptor.
        """
        state = self.state
        metrics = state.metrics
        local_port = sock.getsockname()[1]
        warn_about_descriptor_limit(self.limits.max_connections, log)
        backoff = AcceptBackoff(log, f"{scheme} listener on port {local_port}")
        slots = self._connection_slots
        while not state.draining:
            try:
                await wait_readable(sock)
            except trio.ClosedResourceError:
                return
            # a connection is waiting: worth a slot, even one an idle connection gives up
            slot: object | None = object()  # the slot's borrower; _handle releases it
            await self._take_slot(slot)
            while slot is not None and not state.draining:
                try:
                    client_sock, peer = sock.accept()
                except BlockingIOError:
                    break
                except OSError as error:
                    if state.draining:
                        break  # drain closed the listening socket
                    if metrics is not None:
                        metrics.accept_error(error_name(error))
                    if backoff.retry(error):
                        continue  # that connection went away; the next one may be fine
                    slots.release_on_behalf_of(slot)
                    slot = None
                    if error.errno in DESCRIPTOR_ERRORS:
                        self._reclaim("descriptors")  # the descriptor limit bounds them too
                    await trio.sleep(backoff.failed(error))
                    break
                backoff.succeeded()
                with suppress(OSError):  # a client gone already: _handle finds out
                    client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client = Client(address=peer[0], scheme=scheme, port=local_port)
                nursery.start_soon(self._handle, client_sock, client, slot)
                slot = object()
                try:  # more of the burst while slots are free; at the limit, wait again
                    slots.acquire_on_behalf_of_nowait(slot)
                except trio.WouldBlock:
                    slot = None
            if slot is not None:
                slots.release_on_behalf_of(slot)

    async def _take_slot(self, borrower: object) -> None:
        """Take a connection slot for ``borrower``, reclaiming idle connections at the limit."""
        slots = self._connection_slots
        while True:
            try:
                slots.acquire_on_behalf_of_nowait(borrower)
                return
            except trio.WouldBlock:
                pass
            self._reclaim("max_connections")
            # a reclaimed connection frees its slot as soon as its task ends; else a
            # connection may turn idle meanwhile: look again now and then
            with trio.move_on_after(RECLAIM_INTERVAL):
                await slots.acquire_on_behalf_of(borrower)
                return

    def _reclaim(self, limit: str) -> None:
        """Close the connection idle the longest (keep-alive, or no request sent yet).

        ``limit`` says which was reached: ``max_connections`` or ``descriptors`` (the
        process's). nginx does the same with its "reusable" connections when it runs out.
        Connections in the middle of a request are never closed for room: they end by
        their timeouts.
        """
        idle = [
            c
            for c in self.http1.open
            # no head: between requests (after an error answer, IDLE means lingering)
            if c.phase is Phase.IDLE and c.head is None and not c.scope.cancel_called
        ]
        if not idle:
            return
        oldest = min(idle, key=lambda c: c.expires)  # idle since the earliest
        oldest.scope.cancel()  # _timed_out: an idle connection just closes
        if self.state.metrics is not None:
            self.state.metrics.idle_connection_closed(limit)
        _RECLAIMS_LOG.log(
            logging.WARNING,
            "closing idle client connections to make room for new ones: %s",
            f"{self.limits.max_connections} open (--max-connections)"
            if limit == "max_connections"
            else "out of file descriptors",
        )

    async def _handle(self, sock: socket.socket, client: Client, slot: object) -> None:
        try:
            if self.state.draining:
                return
            config = self.state.config
            if config is not None and config.settings.use_proxy_protocol:
                # the balancer in front says who the client is, before TLS or HTTP
                try:
                    client = await accept_proxy_header(
                        sock, client, _proxy_peers(config.settings.proxy_real_ip_cidr)
                    )
                except ProxyProtocolError as error:
                    _PROXY_PROTOCOL_LOG.log(
                        logging.INFO, "closed a connection from %s", f"{client.address}: {error}"
                    )
                    return
            channel: Channel
            if client.scheme == "https":
                deadline = trio.current_time() + self.limits.head_timeout
                if config is not None and (config.passthrough or config.client_auth):
                    hello = await peek_client_hello(sock, deadline)
                    if hello is None:
                        return  # closed before its ClientHello was whole
                    name = hello.server_name if isinstance(hello, ClientHello) else None
                    target = _passthrough_target(config, name)
                    if target is not None and name is not None:
                        config = None  # a relay can last for hours: it keeps no config alive
                        await self.passthrough.relay(sock, client, name, target)
                        return
                    if config.client_auth:
                        server_name = (name or "").lower().rstrip(".")
                        found = self._client_auth_context(server_name)
                        if found is not None:
                            auth_channel = await client_auth_handshake(
                                sock, found.context, found.auth, server_name, deadline
                            )
                            if auth_channel is None:
                                return
                            client = dataclasses.replace(client, peer=auth_channel.peer)
                            config = None  # each request reads the config in force
                            await self.http1.serve(auth_channel, client)
                            return
                        # the request's host may ask for one: it is told the SNI was not its
                        peer = PeerCertificate(server_name, None)
                        client = dataclasses.replace(client, peer=peer)
                tls_stream = await self._tls_handshake(sock, deadline)
                if tls_stream is None:
                    return
                channel = StreamChannel(tls_stream, sock)
            else:
                channel = SocketChannel(sock)
            # each request reads the config in force: an idle keep-alive connection must not
            # keep the one it began under alive
            config = None
            await self.http1.serve(channel, client)
        finally:
            if sock.fileno() >= 0:  # the channel closes it, unless it never got one
                notify_closing(sock)
                sock.close()
            self._connection_slots.release_on_behalf_of(slot)

    def _client_auth_context(self, server_name: str) -> ClientAuthContext | None:
        """The context of a handshake that asks for a client certificate, if SNI
        ``server_name`` names a host that asks for one; None for the usual handshake."""
        tls = self.state.tls
        return tls.client_auth_for(server_name) if tls is not None and server_name else None

    async def _tls_handshake(
        self, sock: socket.socket, deadline: float
    ) -> trio.SSLStream[trio.SocketStream] | None:
        tls = self.state.tls
        assert tls is not None
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        tls_stream = trio.SSLStream(
            stream, tls.listener_context, server_side=True, https_compatible=True
        )
        with trio.move_on_at(deadline):
            try:
                await tls_stream.do_handshake()
            except trio.BrokenResourceError:
                await send_handshake_alert(tls_stream)  # refused: tell the client why
            except (trio.ClosedResourceError, OSError):
                pass
            else:
                return tls_stream
        await stream.aclose()
        return None


def _passthrough_target(config: RouteConfig, name: str | None) -> Target | None:
    """Where a connection with SNI ``name`` is relayed undecrypted, if it is: without a
    name (or a hello), it is terminated here, and the handshake says what is wrong."""
    if not config.passthrough or name is None:
        return None
    return config.passthrough_for(name)
