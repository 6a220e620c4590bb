"""The trio server: the only module of the proxy that touches sockets.

One task per client connection reads request heads with the compiled codec
(``fastroute._http``), asks ``decide`` what to do with each, and either answers it
(redirect or error status) or forwards it to an endpoint. Heads are rewritten once;
bodies pass through as they came, chunked framing included; only a small one (up to
``BODY_BUFFER``) is read whole before an upstream connection is taken. Upstream
connections are kept alive in a ``Pool`` and chosen by the ``Balancer``; one that
received anything while idle is never reused.
A request that asks for a protocol upgrade (WebSocket) and gets ``101`` becomes a
two-way byte tunnel.

Each request uses the RouteConfig that was current when its head arrived. ``swap``
replaces the reference for the requests that come after; requests in flight and open
tunnels finish on the config they started with.

Timeouts cost one float per phase: each connection records when its current phase
expires, and one watchdog task per proxy cancels the connections past theirs, a few times
per shortest timeout (registering a trio deadline per read costs more than the read).
The phase a connection was in says what the client is told (408 for a slow client, 504
for a slow upstream, nothing for an idle keep-alive connection).
"""

from __future__ import annotations

import enum
import logging
import math
import socket
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import notify_closing, wait_readable

from fastroute._http import (
    ChunkedError,
    ChunkedScanner,
    RequestHead,
    ResponseHead,
    parse_request,
    parse_response,
)
from fastroute.errors import (
    BadGatewayError,
    BadRequestError,
    GatewayTimeoutError,
    PayloadTooLargeError,
    ProxyError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from fastroute.ingress.model import Endpoint, RouteConfig
from fastroute.proxy.balancer import Balancer, may_retry
from fastroute.proxy.channel import Channel, SocketChannel, StreamChannel, connect
from fastroute.proxy.decide import Forward, Redirect, decide
from fastroute.proxy.headers import Client, TrustedProxies, response_headers
from fastroute.proxy.listener import (
    DESCRIPTOR_ERRORS,
    AcceptBackoff,
    LogThrottle,
    error_name,
    warn_about_descriptor_limit,
)
from fastroute.proxy.listener import listening_sockets as _listening_sockets
from fastroute.proxy.pool import Pool
from fastroute.proxy.tls import TLSContexts, send_handshake_alert

if TYPE_CHECKING:
    from fastroute.proxy.metrics import Metrics

__all__ = ["Limits", "Proxy"]

log = logging.getLogger("fastroute.proxy")
access_log = logging.getLogger("fastroute.access")

SWEEP_INTERVAL = 5.0  # seconds between closing upstream connections idle too long
ERROR_SEND_TIMEOUT = 5.0  # for writing an error answer after a timeout
# After an error answer to a request whose body was not read (413, ...), how long the
# client may go on sending before the close: long enough to finish an upload in flight.
LINGER = 2.0
# A request body up to this size is read whole before an upstream connection is taken
# (nginx's client_body_buffer_size on 64-bit), so a slow client holds none while it
# sends one, and a failed attempt can be sent again elsewhere.
BODY_BUFFER = 16 * 1024
BODY_RATE_GRACE = 5.0  # seconds of body before Limits.min_body_rate applies
CLIENT_CLOSED = 499  # nginx's status for a client that left before its response
RECLAIM_INTERVAL = 0.25  # at --max-connections, how often to look for idle connections
_RECLAIMS_LOG = LogThrottle(log, interval=60.0)  # idle connections closed for room


class _ClientGoneError(Exception):
    """The client's connection broke, or must close: nothing more can be sent to it."""


class _UpstreamFailedError(Exception):
    """The exchange with an upstream failed before its response head arrived."""


# A connection (client or upstream) that broke: the exchange cannot go on on it.
CONNECTION_FAILURES = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(frozen=True)
class Limits:
    """Every limit the proxy enforces, with defaults close to nginx's."""

    max_head_bytes: int = 32 * 1024  # request line and headers: 431 beyond
    max_body_bytes: int = 100 * 1024 * 1024  # request body: 413 beyond
    head_timeout: float = 60.0  # to receive a request head: 408 beyond (idle keep-alive: close)
    connect_timeout: float = 5.0  # to connect to an endpoint: the next one is tried
    upstream_timeout: float = 60.0  # between reads from an upstream: 504 beyond
    # client connections open at once; at the limit the idle ones close to make room,
    # else more wait in the kernel's backlog (not accepted)
    max_connections: int = 10_000
    # A request body must average this many bytes per second once BODY_RATE_GRACE has
    # passed (0: no minimum), so a client trickling a body cannot hold an upstream
    # connection for as long as it likes: 408 beyond.
    min_body_rate: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_head_bytes", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_body_rate < 0:
            raise ValueError(f"min_body_rate must be 0 or more, got {self.min_body_rate}")
        for name in ("head_timeout", "connect_timeout", "upstream_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")


class _Phase(enum.Enum):
    """Where a client connection is: what a passed deadline means there."""

    IDLE = "idle"  # between requests: close quietly
    HEAD = "head"  # part of a head received: 408
    BODY = "body"  # reading the request body: 408
    UPSTREAM = "upstream"  # waiting for the upstream: 504 (if nothing was answered yet)
    RESPONSE = "response"  # relaying: the response is cut off


class _Connection:
    """One client connection's state, shared with ``drain`` and the timeout handling."""

    __slots__ = (
        "channel",
        "client",
        "client_left",
        "expires",
        "forwarded",
        "head",
        "ingress",
        "phase",
        "responded",
        "scope",
        "service",
        "started",
        "upstream",
    )

    def __init__(
        self, channel: Channel, client: Client, scope: trio.CancelScope, trusted: bool
    ) -> None:
        self.channel = channel
        self.client = client
        self.scope = scope
        self.phase = _Phase.IDLE
        self.expires = math.inf
        # what X-Forwarded-* say about this connection, encoded once
        self.forwarded = (
            client.address.encode("ascii"),
            client.scheme.encode("ascii"),
            str(client.port).encode("ascii"),
            trusted,
        )
        self.responded = False  # a response head went out for the current request
        self.client_left = False  # the client closed while its request was upstream
        self.head: RequestHead | None = None
        self.ingress = "-"  # the current request's route, once it has one (metrics, logs)
        self.service = "-"
        self.started = 0.0  # when the current request's head was parsed
        self.upstream: _Upstream | None = None

    def deadline(self, phase: _Phase, seconds: float) -> None:
        """Enter ``phase``, which the watchdog ends after ``seconds``."""
        self.phase = phase
        self.expires = trio.current_time() + seconds


class _Upstream:
    """One connection to an endpoint."""

    __slots__ = ("channel", "endpoint", "reused")

    def __init__(self, channel: SocketChannel, endpoint: Endpoint) -> None:
        self.channel = channel
        self.endpoint = endpoint
        self.reused = False


class _RequestBody:
    """The request body of one forwarded request, as far as the proxy has taken it."""

    __slots__ = (
        "buffered",
        "complete",
        "continued",
        "received",
        "remaining",
        "rest",
        "scanner",
        "started",
    )

    def __init__(self, started: float) -> None:
        self.started = started  # when the head was in: the body's rate counts from here
        self.received = 0  # body bytes read after the head
        self.buffered = b""  # the start of the body (all of it if ``complete``), not yet sent
        self.complete = True  # ``buffered`` is the whole body: it can be sent again
        self.rest = b""  # what followed the body on the connection (once complete)
        self.remaining = 0  # Content-Length bytes still to read
        self.scanner: ChunkedScanner | None = None  # a chunked body's framing
        self.continued = False  # 100 Continue went out


class Proxy:
    """Serves one RouteConfig at a time over HTTP and HTTPS (``serve``), swapped with ``swap``.

    Args:
        config: the first RouteConfig, or None: then every request is answered 503 until
            ``swap`` installs one (``ready`` says which).
        limits: sizes and timeouts.
        trusted: peers whose X-Forwarded-* headers are believed.
        tls: certificates for HTTPS listeners (SNI picks one; else the default).
        https_redirect_port: where HTTP-to-HTTPS redirects point (clients see it: behind a
            load balancer that maps 443 to the HTTPS listener, leave it at 443).
        metrics: where requests, upstream errors and their latency are counted.
    """

    def __init__(
        self,
        config: RouteConfig | None = None,
        *,
        limits: Limits | None = None,
        trusted: TrustedProxies | None = None,
        tls: TLSContexts | None = None,
        https_redirect_port: int = 443,
        metrics: Metrics | None = None,
    ) -> None:
        self.tls = tls
        self.https_redirect_port = https_redirect_port
        if config is not None and tls is not None:
            tls.install(config)
        self._config = config
        self.limits = limits or Limits()
        self.trusted = trusted or TrustedProxies()
        self.metrics = metrics
        self.balancer = Balancer()
        self.pool: Pool[_Upstream] = Pool(max_idle=320)
        self._connection_slots = trio.CapacityLimiter(self.limits.max_connections)
        self._open: set[_Connection] = set()
        self._listeners: list[trio.SocketListener] = []
        self._draining = False
        self._housekeeping = False
        self._all_closed = trio.Event()

    @property
    def config(self) -> RouteConfig | None:
        return self._config

    @property
    def ready(self) -> bool:
        """Whether requests can be served: a config is loaded and no drain has begun."""
        return self._config is not None and not self._draining

    def swap(self, config: RouteConfig) -> None:
        """Serve ``config`` from the next request on; requests in flight keep theirs.

        Its certificates are loaded here, synchronously; ``load`` does that part in a
        worker thread, which is what a running proxy should use.
        """
        if self.tls is not None:
            self.tls.install(config)
        self._config = config

    async def load(self, config: RouteConfig) -> None:
        """``swap``, with the certificates loaded off the event loop.

        Both references change in one step of the event loop, after the await: no
        handshake or request can see the new certificates with the old config, or the
        other way round.
        """
        if self.tls is not None:
            prepared = await trio.to_thread.run_sync(self.tls.prepare, config)
            self.tls.use(prepared)
        self._config = config

    async def serve(
        self,
        host: str,
        port: int,
        *,
        scheme: str = "http",
        reuse_port: bool = False,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``host:port`` (0: an ephemeral port) until cancelled.

        ``scheme="https"`` terminates TLS (the proxy needs ``tls``). ``reuse_port`` lets
        several processes listen on the same port (SO_REUSEPORT), the kernel spreading
        connections among them. ``task_status.started`` gets the listeners, so a caller
        learns the bound port: ``listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)``.
        """
        if scheme == "https" and self.tls is None:
            raise ValueError("an https listener needs the proxy's tls contexts")
        sockets = _listening_sockets(host, port, reuse_port=reuse_port)
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        self._listeners.extend(listeners)
        async with trio.open_nursery() as nursery:
            if not self._housekeeping:  # one watchdog and sweeper for all listeners
                self._housekeeping = True
                nursery.start_soon(self._watchdog)
                nursery.start_soon(self._sweep_pool)
            for sock in sockets:
                nursery.start_soon(self._accept, sock, scheme, nursery)
            task_status.started(listeners)

    async def drain(self, grace: float) -> None:
        """Stop taking connections and let the ones open finish, for up to ``grace`` s.

        ``ready`` turns False at once. Idle keep-alive connections close now; the others
        close after the response in flight (with ``Connection: close``). Returns when none
        are left or the grace period ends; then the caller cancels what runs ``serve``.
        """
        self._draining = True
        for listener in self._listeners:
            await listener.aclose()
        for connection in list(self._open):
            if connection.phase is _Phase.IDLE:
                connection.scope.cancel()
        with trio.move_on_after(grace):
            if self._open:
                await self._all_closed.wait()
        for upstream in self.pool.drain():
            upstream.channel.close()

    # ------------------------------------------------------------ client side

    async def _accept(self, sock: socket.socket, scheme: str, nursery: trio.Nursery) -> None:
        """Accept connections while a slot is free (``Limits.max_connections``).

        At the limit, the oldest idle connection is closed to make room (``_reclaim``); when
        none is idle, accepting stops and new connections wait in the kernel's backlog, as
        nginx does, so open connections never exceed the limit. Out of descriptors or
        memory, accepting pauses (longer while it goes on), with a log line per episode;
        out of descriptors, the oldest idle connection is closed as well, so that clients
        with a request to make get in rather than idle ones holding every descriptor.
        """
        local_port = sock.getsockname()[1]
        warn_about_descriptor_limit(self.limits.max_connections, log)
        backoff = AcceptBackoff(log, f"{scheme} listener on port {local_port}")
        slots = self._connection_slots
        while not self._draining:
            try:
                await wait_readable(sock)
            except trio.ClosedResourceError:
                return
            # a connection is waiting: worth a slot, even one an idle connection gives up
            slot: object | None = object()  # the slot's borrower; _handle releases it
            await self._take_slot(slot)
            while slot is not None and not self._draining:
                try:
                    client_sock, peer = sock.accept()
                except BlockingIOError:
                    break
                except OSError as error:
                    if self._draining:
                        break  # drain closed the listening socket
                    if self.metrics is not None:
                        self.metrics.accept_error(error_name(error))
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
            for c in self._open
            # no head: between requests (after an error answer, IDLE means lingering)
            if c.phase is _Phase.IDLE and c.head is None and not c.scope.cancel_called
        ]
        if not idle:
            return
        oldest = min(idle, key=lambda c: c.expires)  # idle since the earliest
        oldest.scope.cancel()  # _timed_out: an idle connection just closes
        if self.metrics is not None:
            self.metrics.idle_connection_closed(limit)
        _RECLAIMS_LOG.log(
            logging.WARNING,
            "closing idle client connections to make room for new ones: %s",
            f"{self.limits.max_connections} open (--max-connections)"
            if limit == "max_connections"
            else "out of file descriptors",
        )

    async def _handle(self, sock: socket.socket, client: Client, slot: object) -> None:
        try:
            if self._draining:
                return
            channel: Channel
            if client.scheme == "https":
                tls_stream = await self._tls_handshake(sock)
                if tls_stream is None:
                    return
                channel = StreamChannel(tls_stream, sock)
            else:
                channel = SocketChannel(sock)
            await self._connection(channel, client)
        finally:
            if sock.fileno() >= 0:  # the channel closes it, unless it never got one
                notify_closing(sock)
                sock.close()
            self._connection_slots.release_on_behalf_of(slot)

    async def _tls_handshake(self, sock: socket.socket) -> trio.SSLStream[trio.SocketStream] | None:
        assert self.tls is not None
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        tls_stream = trio.SSLStream(
            stream, self.tls.listener_context, server_side=True, https_compatible=True
        )
        with trio.move_on_after(self.limits.head_timeout):
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

    async def _connection(self, channel: Channel, client: Client) -> None:
        trusted = self.trusted.trusts(client.address)
        connection = _Connection(channel, client, trio.CancelScope(), trusted)
        self._open.add(connection)
        try:
            with connection.scope:
                try:
                    await self._serve_requests(connection)
                except ProxyError as error:
                    await self._respond_error(connection, error)
                except (_ClientGoneError, *CONNECTION_FAILURES):
                    pass  # the client went away, or a response was cut off: close
                except Exception:
                    # a bug must cost one connection and a log line, never the server
                    log.exception("unexpected error serving %s", client.address)
            if connection.scope.cancelled_caught:
                await self._timed_out(connection)
        finally:
            if connection.upstream is not None:
                connection.upstream.channel.close()
            channel.close()
            self._open.discard(connection)
            if not self._open:
                self._all_closed.set()
                self._all_closed = trio.Event()

    async def _timed_out(self, connection: _Connection) -> None:
        """Tell the client what the passed deadline means for the phase it was in."""
        error: ProxyError
        if connection.client_left:
            upstream = connection.upstream
            log.info(
                "%s closed the connection while %s had its request: given up",
                connection.client.address,
                upstream.endpoint if upstream else "the upstream",
            )
            self._done(
                connection,
                CLIENT_CLOSED,
                connection.started,
                connection.ingress,
                connection.service,
                str(upstream.endpoint) if upstream else "-",
            )
            return
        if connection.phase is _Phase.HEAD:
            error = RequestTimeoutError("request head too slow")
        elif connection.phase is _Phase.BODY:
            error = RequestTimeoutError("request body too slow")
        elif connection.phase is _Phase.UPSTREAM:
            upstream = connection.upstream
            where = str(upstream.endpoint) if upstream else "the upstream"
            error = GatewayTimeoutError(
                f"{where} sent nothing for {self.limits.upstream_timeout:g} s"
            )
            if upstream is not None:
                self._upstream_error(upstream.endpoint, connection, "timeout")
        else:
            return  # idle, draining, or mid-response: the connection just closes
        with trio.move_on_after(ERROR_SEND_TIMEOUT):
            await self._respond_error(connection, error)

    async def _serve_requests(self, connection: _Connection) -> None:
        limits = self.limits
        channel = connection.channel
        buffer = b""
        while not self._draining or buffer:
            connection.deadline(_Phase.HEAD if buffer else _Phase.IDLE, limits.head_timeout)
            connection.head = None
            connection.responded = False
            connection.ingress = connection.service = "-"
            head = parse_request(buffer, limits.max_head_bytes)
            while head is None:
                # after a response, the client's next request cannot be here yet
                data = await (channel.recv() if buffer else channel.recv_reply())
                if not data:
                    return
                first = not buffer
                buffer = buffer + data if buffer else data
                connection.phase = _Phase.HEAD
                head = parse_request(buffer, limits.max_head_bytes)
                if head is None and first:  # the head's time runs from its first byte
                    connection.deadline(_Phase.HEAD, limits.head_timeout)
            connection.head = head
            rest = await self._request(connection, head, buffer[head.size :])
            if rest is None:
                return
            buffer = rest

    async def _request(
        self, connection: _Connection, head: RequestHead, body: bytes
    ) -> bytes | None:
        """Answer one request; what follows it on the connection, or None to close."""
        config = self._config  # this request's config, whatever swap does meanwhile
        started = connection.started = trio.current_time()
        try:
            if config is None:
                raise ServiceUnavailableError("no configuration loaded yet")
            if head.content_length > self.limits.max_body_bytes:
                raise PayloadTooLargeError(
                    f"body of {head.content_length} bytes is over the limit of "
                    f"{self.limits.max_body_bytes}"
                )
            decision = decide(
                config,
                method=head.method,
                target=head.target,
                host=head.host,
                scheme=connection.client.scheme,
                https_port=self.https_redirect_port,
            )
        except ProxyError as error:
            await self._respond_error(connection, error)
            return None
        if isinstance(decision, Redirect):
            bodyless = head.content_length <= 0 and not head.chunked
            close = not bodyless or not head.keep_alive or self._draining
            await _answer(
                connection.channel,
                decision.status,
                b"",
                [(b"Location", decision.location)],
                close=close,
            )
            self._done(connection, decision.status, started, "-", "-", "redirect")
            return None if close else body
        return await self._forward(connection, head, body, decision, started)

    async def _respond_error(self, connection: _Connection, error: ProxyError) -> None:
        if connection.responded:
            return  # a response is already on its way: the connection just closes
        log.info("%s: %s", type(error).__name__, error.detail)
        connection.responded = True
        text = f"{error.status} {_reason(error.status)}\n".encode()
        try:
            await _answer(connection.channel, error.status, text, [], close=True)
        except (*CONNECTION_FAILURES, _ClientGoneError):
            return
        # a request refused before its head parsed took no time the proxy can measure
        head = connection.head
        started = connection.started if head is not None else trio.current_time()
        self._done(
            connection,
            error.status,
            started,
            connection.ingress,
            connection.service,
            type(error).__name__,
        )
        if head is not None and (head.chunked or head.content_length > 0):
            # the client may still be sending the body: let it, so it reads the answer
            connection.deadline(_Phase.IDLE, LINGER + 1.0)
            await connection.channel.linger(LINGER)

    def _done(
        self,
        connection: _Connection,
        status: int,
        started: float,
        ingress: str,
        service: str,
        upstream: str,
    ) -> None:
        """Count and log one answered request."""
        took = trio.current_time() - started
        if self.metrics is not None:
            self.metrics.request(ingress, service, status, took)
        if access_log.isEnabledFor(logging.INFO):
            head = connection.head
            access_log.info(
                '%s "%s %s" %d %.1fms %s %s',
                connection.client.address,
                head.method.decode("latin-1") if head else "-",
                head.target.decode("latin-1") if head else "-",
                status,
                took * 1000,
                ingress,
                upstream,
            )

    def _upstream_error(self, endpoint: Endpoint, connection: _Connection, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_error(connection.service, str(endpoint), reason)

    # ------------------------------------------------------------ upstream side

    async def _forward(
        self,
        connection: _Connection,
        head: RequestHead,
        body: bytes,
        decision: Forward,
        started: float,
    ) -> bytes | None:
        route = decision.route
        connection.ingress = route.ingress
        connection.service = route.backend.name
        request_body = (
            await self._start_body(connection, head, body)
            if head.chunked or head.content_length > 0
            else None  # the common case: nothing to read, nothing to time
        )
        if decision.host_from_target:
            outgoing = head.forward_head(
                decision.target, *connection.forwarded, decision.host, override_host=True
            )
        else:
            outgoing = head.forward_head(decision.target, *connection.forwarded, decision.host)
        last_error: ProxyError | None = None
        attempts = self.balancer.attempts(route.backend, now=trio.current_time())
        pooled = True  # False: a pooled connection just failed; the next one is new
        while attempts:
            endpoint = attempts[0]
            try:
                upstream = await self._checkout(endpoint, pooled=pooled, connection=connection)
            except ProxyError as error:
                last_error = error
                attempts.pop(0)  # nothing was sent: the next endpoint may take it
                continue
            connection.upstream = upstream
            try:
                response, received, rest = await self._exchange(
                    connection, upstream, outgoing, head, request_body, body
                )
            except _UpstreamFailedError as failure:
                upstream.channel.close()
                connection.upstream = None
                retry = may_retry(
                    head.method,
                    request_sent=True,
                    body_replayable=request_body is None or request_body.complete,
                )
                if upstream.reused and retry:
                    # the upstream closed it while it sat idle: not the endpoint's fault
                    pooled = False
                    continue
                reason = str(failure.__cause__ or failure) or "connection closed"
                self.balancer.failed(endpoint, now=trio.current_time(), reason=reason)
                self._upstream_error(endpoint, connection, "broken")
                last_error = BadGatewayError(f"{endpoint}: {reason}")
                if not retry:
                    break
                attempts.pop(0)
                pooled = True
                continue
            if response.status == 101 and head.upgrade is None:
                # a switch nobody asked for would make the rest of the connection a tunnel
                # past routing (or desync it): the client gets a 502, the upstream a close
                upstream.channel.close()
                connection.upstream = None
                self._upstream_error(endpoint, connection, "unasked-upgrade")
                last_error = BadGatewayError(f"{endpoint} switched protocols unasked")
                break
            self.balancer.succeeded(endpoint)
            after = await self._relay(connection, upstream, head, response, received, rest)
            self._done(
                connection,
                response.status,
                started,
                connection.ingress,
                connection.service,
                str(endpoint),
            )
            return after
        if last_error is None:  # decide saw endpoints: they went away since
            last_error = ServiceUnavailableError(route.backend.problem or "no endpoints")
        await self._respond_error(connection, last_error)
        return None

    async def _checkout(
        self, endpoint: Endpoint, *, pooled: bool, connection: _Connection
    ) -> _Upstream:
        """An idle pooled connection to ``endpoint`` (if ``pooled``), or a new one.

        A pooled connection that received anything while idle (bytes nobody asked for, or
        the upstream's close) is closed, never used: a late or extra response left on it
        would become the next client's answer, and every answer after it off by one.
        """
        now = trio.current_time()
        while pooled:
            upstream, expired = self.pool.take(endpoint, now=now)
            for old in expired:
                old.channel.close()
            if upstream is None:
                break
            if upstream.channel.stale():
                upstream.channel.close()
                continue
            upstream.reused = True
            return upstream
        # connecting is the upstream's time: a slow connect is a 504, never a 408
        limits = self.limits
        connection.deadline(_Phase.UPSTREAM, limits.connect_timeout + limits.upstream_timeout)
        with trio.move_on_after(limits.connect_timeout):
            try:
                channel = await connect(endpoint.address, endpoint.port)
            except OSError as error:
                self.balancer.failed(endpoint, now=trio.current_time(), reason=f"connect: {error}")
                self._upstream_error(endpoint, connection, "connect")
                raise BadGatewayError(f"connect to {endpoint}: {error}") from None
            return _Upstream(channel, endpoint)
        self.balancer.failed(endpoint, now=trio.current_time(), reason="connect timed out")
        self._upstream_error(endpoint, connection, "connect")
        # ingress-nginx answers a connect timeout 504 (after trying the next endpoint)
        raise GatewayTimeoutError(f"connect to {endpoint} timed out")

    async def _start_body(
        self, connection: _Connection, head: RequestHead, body: bytes
    ) -> _RequestBody:
        """Take the start of a request body: all of it when it is small (``BODY_BUFFER``).

        ``body`` is what came after the head (the request has a body: Content-Length or
        chunked). The body limit is checked here on every byte
        in hand, however the bytes were split, so nothing over it is ever forwarded.
        """
        state = _RequestBody(trio.current_time())
        if head.chunked:
            scanner = state.scanner = ChunkedScanner()
            end, state.buffered = self._relay_body(scanner, body)
            state.rest = body[end:]
            while not scanner.done and state.received < BODY_BUFFER:
                await self._continue(connection, head, state)
                data = await self._recv_body(connection, state)
                end, out = self._relay_body(scanner, data)
                state.buffered += out
                state.rest = data[end:]
            state.complete = scanner.done
        else:
            state.buffered, state.rest = body[: head.content_length], body[head.content_length :]
            missing = head.content_length - len(state.buffered)
            if missing and head.content_length <= BODY_BUFFER:
                await self._continue(connection, head, state)
                pieces = [state.buffered]
                while missing:
                    data = await self._recv_body(connection, state)
                    pieces.append(data[:missing])
                    state.rest = data[missing:]
                    missing -= len(pieces[-1])
                state.buffered = b"".join(pieces)
            state.complete = not missing
            state.remaining = missing
        return state

    def _relay_body(self, scanner: ChunkedScanner, data: bytes) -> tuple[int, bytes]:
        """Where a chunked request body ends in ``data`` and the bytes to send on.

        Refuses malformed framing (400) and a body over the limit (413), declared chunk
        sizes included, before any byte of it is sent.
        """
        try:
            end, out = scanner.relay(data)
        except ChunkedError as error:
            raise BadRequestError(f"malformed chunked request body: {error}") from None
        if scanner.payload > self.limits.max_body_bytes:
            raise PayloadTooLargeError(
                f"chunked body over the limit of {self.limits.max_body_bytes} bytes"
            )
        return end, out

    async def _continue(
        self, connection: _Connection, head: RequestHead, body: _RequestBody
    ) -> None:
        """Send ``100 Continue`` once, before the proxy first waits for the body."""
        if head.expect_continue and not body.continued:
            body.continued = True
            await _send_client(connection, b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _recv_body(self, connection: _Connection, body: _RequestBody) -> bytes:
        """The next piece of the request body, within both body deadlines.

        Each read must come within ``head_timeout`` (nginx's client_body_timeout), and
        the body as a whole must keep up ``min_body_rate`` after a grace period: a client
        sending a byte now and then cannot keep the slot and the upstream connection.
        """
        limits = self.limits
        expires = trio.current_time() + limits.head_timeout
        if limits.min_body_rate:
            expires = min(
                expires, body.started + BODY_RATE_GRACE + body.received / limits.min_body_rate
            )
        connection.phase = _Phase.BODY
        connection.expires = expires
        data = await _recv_client(connection)
        body.received += len(data)
        return data

    async def _exchange(
        self,
        connection: _Connection,
        upstream: _Upstream,
        outgoing: bytes,
        head: RequestHead,
        body: _RequestBody | None,
        after: bytes,
    ) -> tuple[ResponseHead, bytes, bytes]:
        """Send the request and read the response head.

        ``body`` is the request body as far as taken (None: the request has none), and
        ``after`` what followed the head on the client connection. Returns the response
        head, what the upstream sent after it, and what follows the request on the client
        connection. Raises _UpstreamFailedError when the upstream connection fails before
        the response head arrived.
        """
        channel = upstream.channel
        limits = self.limits
        try:
            connection.deadline(_Phase.UPSTREAM, limits.upstream_timeout)
            if body is None:
                rest = after
                await channel.send(outgoing)
            else:
                rest = body.rest
                await channel.send(outgoing + body.buffered if body.buffered else outgoing)
                if not body.complete:
                    await self._continue(connection, head, body)
                    if body.scanner is not None:
                        rest = await self._copy_chunked(connection, channel, body)
                    else:
                        rest = await self._copy_length(connection, channel, body)
                    connection.deadline(_Phase.UPSTREAM, limits.upstream_timeout)
            data = await channel.recv_reply()
            received = data
            is_head = head.method == b"HEAD"
            while True:
                response = parse_response(received, limits.max_head_bytes, is_head)
                if response is None:
                    if not data:
                        raise _UpstreamFailedError("closed before a response")
                    connection.deadline(_Phase.UPSTREAM, limits.upstream_timeout)
                    data = await channel.recv()
                    received += data
                    continue
                received = received[response.size :]
                if response.status >= 200 or response.status == 101:
                    break
        except CONNECTION_FAILURES as error:
            raise _UpstreamFailedError(str(error) or type(error).__name__) from error
        except BadGatewayError as error:
            raise _UpstreamFailedError(error.detail) from error
        return response, received, rest

    async def _copy_length(
        self, connection: _Connection, upstream: SocketChannel, body: _RequestBody
    ) -> bytes:
        """Relay the rest of a Content-Length body; what follows it on the client side."""
        while body.remaining:
            data = await self._recv_body(connection, body)
            if len(data) > body.remaining:
                await upstream.send(data[: body.remaining])
                rest = data[body.remaining :]
                body.remaining = 0
                return rest
            await upstream.send(data)
            body.remaining -= len(data)
        return b""

    async def _copy_chunked(
        self, connection: _Connection, upstream: SocketChannel, body: _RequestBody
    ) -> bytes:
        """Relay the rest of a chunked body as it came; what follows it on the client side."""
        scanner = body.scanner
        assert scanner is not None
        while not scanner.done:
            data = await self._recv_body(connection, body)
            end, out = self._relay_body(scanner, data)
            if out:  # nothing while a trailer section is held
                await upstream.send(out)
            if scanner.done:
                return data[end:]
        return b""

    async def _relay(
        self,
        connection: _Connection,
        upstream: _Upstream,
        head: RequestHead,
        response: ResponseHead,
        received: bytes,
        rest: bytes,
    ) -> bytes | None:
        """Send the response to the client; ``rest`` back, or None to close."""
        client_gone = False
        upgraded = response.status == 101 and head.upgrade is not None
        close = (
            not head.keep_alive
            or self._draining
            or response.until_close
            or (head.version == 10 and response.chunked)
        )
        dechunk = head.version == 10 and response.chunked
        out = response.client_head(close) if not dechunk else _unchunked_head(response)
        connection.responded = True
        connection.phase = _Phase.RESPONSE
        channel = upstream.channel
        reusable = response.keep_alive and not response.until_close
        try:
            if upgraded:
                await _send_client(connection, out + received)
                connection.upstream = None
                await _tunnel(connection, channel, rest, self.limits.upstream_timeout)
                channel.close()
                return None
            if response.bodyless:
                await _send_client(connection, out)
                reusable = reusable and not received
            elif response.chunked:
                scanner = ChunkedScanner()
                reusable = await self._relay_chunked(
                    connection, channel, scanner, out, received, dechunk
                )
            elif response.content_length >= 0:
                reusable = await self._relay_length(
                    connection, channel, response.content_length, out, received
                )
            else:
                await _send_client(connection, out + received)
                while True:
                    connection.deadline(_Phase.RESPONSE, self.limits.upstream_timeout)
                    data = await channel.recv()
                    if not data:
                        break
                    await _send_client(connection, data)
                reusable = False
        except _ClientGoneError:
            client_gone = True
            reusable = False
        except BadGatewayError:
            # nothing of the response reached the client yet: it gets a 502 instead
            connection.responded = False
            connection.upstream = None
            channel.close()
            self._upstream_error(upstream.endpoint, connection, "broken")
            raise
        except (*CONNECTION_FAILURES, ChunkedError) as error:
            log.info("%s failed mid-response: %s", upstream.endpoint, error)
            self._upstream_error(upstream.endpoint, connection, "broken")
            client_gone = True  # the client sees the response cut off rather than a wrong one
            reusable = False
        connection.upstream = None
        if reusable:
            for old in self.pool.give(upstream.endpoint, upstream, now=trio.current_time()):
                old.channel.close()
        else:
            channel.close()
        if client_gone:
            raise _ClientGoneError()
        return None if close else rest

    async def _relay_length(
        self,
        connection: _Connection,
        upstream: SocketChannel,
        remaining: int,
        out: bytes,
        received: bytes,
    ) -> bool:
        """Relay a Content-Length body; whether the upstream connection can be reused."""
        first = received[:remaining]
        await _send_client(connection, out + first)
        remaining -= len(first)
        extra = len(received) > len(first)
        while remaining:
            connection.deadline(_Phase.RESPONSE, self.limits.upstream_timeout)
            data = await upstream.recv()
            if not data:
                raise trio.BrokenResourceError("upstream closed mid-body")
            if len(data) > remaining:
                data = data[:remaining]
                extra = True
            await _send_client(connection, data)
            remaining -= len(data)
        return not extra

    async def _relay_chunked(
        self,
        connection: _Connection,
        upstream: SocketChannel,
        scanner: ChunkedScanner,
        out: bytes,
        received: bytes,
        dechunk: bool,
    ) -> bool:
        """Relay a chunked body (decoded for an HTTP/1.0 client); whether to reuse."""
        data = received
        while True:
            try:
                if dechunk:
                    end, payload = scanner.decode(data)
                else:
                    end, payload = scanner.relay(data)
            except ChunkedError as error:
                if out:  # the head has not gone out: the client can still get a 502
                    raise BadGatewayError(
                        f"upstream sent malformed chunked framing: {error}"
                    ) from None
                raise
            if out or payload:  # nothing while a trailer section is held
                await _send_client(connection, out + payload if out else payload)
            out = b""
            if scanner.done:
                return end == len(data)
            connection.deadline(_Phase.RESPONSE, self.limits.upstream_timeout)
            data = await upstream.recv()
            if not data:
                raise trio.BrokenResourceError("upstream closed mid-body")

    async def _watchdog(self) -> None:
        """Cancel the connections whose phase has lasted past its timeout, and the ones
        whose client left while their request was upstream.

        nginx notices a client's close while it waits for the upstream and gives the
        upstream request up; so does this, within a tick: otherwise clients that send a
        request to a slow endpoint and reset would keep their slot and an upstream
        connection until ``upstream_timeout``.
        """
        limits = self.limits
        tick = min(0.5, limits.head_timeout / 4, limits.upstream_timeout / 4)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for connection in list(self._open):
                if connection.expires <= now:
                    connection.scope.cancel()
                elif connection.phase is _Phase.UPSTREAM and connection.channel.peer_gone():
                    connection.client_left = True
                    connection.scope.cancel()

    async def _sweep_pool(self) -> None:
        """Close upstream connections that sat idle past the pool's timeout."""
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            for old in self.pool.sweep(now=trio.current_time()):
                old.channel.close()


# ---------------------------------------------------------------- helpers


async def _recv_client(connection: _Connection) -> bytes:
    try:
        data = await connection.channel.recv()
    except CONNECTION_FAILURES:
        raise _ClientGoneError() from None
    if not data:
        raise _ClientGoneError()
    return data


async def _send_client(connection: _Connection, data: bytes) -> None:
    try:
        await connection.channel.send(data)
    except CONNECTION_FAILURES:
        raise _ClientGoneError() from None


async def _tunnel(
    connection: _Connection, upstream: SocketChannel, first: bytes, idle_timeout: float
) -> None:
    """Copy bytes both ways until either side closes (an upgraded connection).

    Like nginx's proxy timeouts on a WebSocket, the tunnel closes after ``idle_timeout``
    seconds with nothing sent either way.
    """

    async def pump(source: Channel, sink: Channel, nursery: trio.Nursery) -> None:
        try:
            while data := await source.recv():
                connection.deadline(_Phase.RESPONSE, idle_timeout)
                await sink.send(data)
        except CONNECTION_FAILURES:
            pass
        nursery.cancel_scope.cancel()

    connection.deadline(_Phase.RESPONSE, idle_timeout)
    if first:
        await upstream.send(first)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, connection.channel, upstream, nursery)
        nursery.start_soon(pump, upstream, connection.channel, nursery)


def _unchunked_head(response: ResponseHead) -> bytes:
    """The head for an HTTP/1.0 client of a chunked response: decoded, ended by a close."""
    lines = [b"HTTP/1.1 %d %s" % (response.status, response.reason)]
    lines += [name + b": " + value for name, value in response_headers(response.headers)]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


async def _answer(
    channel: Channel,
    status: int,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    close: bool,
) -> None:
    """A complete response the proxy writes itself (redirects and errors)."""
    lines = [b"HTTP/1.1 %d %s" % (status, _reason(status).encode())]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: %d" % len(body))
    if body:
        lines.append(b"Content-Type: text/plain; charset=utf-8")
    if close:
        lines.append(b"Connection: close")
    await channel.send(b"\r\n".join([*lines, b"", body]))


def _reason(status: int) -> str:
    """The standard reason phrase of a status code ("" for an unknown one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
