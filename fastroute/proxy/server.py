"""The trio + h11 server: the only module of the proxy that touches sockets.

One task per client connection reads requests with h11, asks ``decide`` what to do with
each, and either answers it (redirect or error status) or forwards it to an endpoint.
Forwarding streams both bodies chunk by chunk; nothing is buffered whole. Upstream
connections are kept alive in a ``Pool`` and chosen by the ``Balancer``.

Each request uses the RouteConfig that was current when its head arrived. ``swap``
replaces the reference for the requests that come after, and requests in flight finish
on the config they started with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
import trio

from fastroute.errors import (
    BadGatewayError,
    BadRequestError,
    GatewayTimeoutError,
    HeadersTooLargeError,
    PayloadTooLargeError,
    ProxyError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from fastroute.ingress.model import Endpoint, RouteConfig
from fastroute.proxy.balancer import Balancer, may_retry
from fastroute.proxy.decide import Forward, Redirect, decide
from fastroute.proxy.headers import Client, TrustedProxies, request_headers, response_headers
from fastroute.proxy.pool import Pool
from fastroute.proxy.tls import TLSContexts

__all__ = ["Limits", "Proxy"]

log = logging.getLogger("fastroute.proxy")
access_log = logging.getLogger("fastroute.access")

READ_SIZE = 64 * 1024


class _ClientGoneError(Exception):
    """The client's connection broke: nothing more can be sent to it."""


# Connection-level failures of an upstream: the exchange cannot go on on this connection.
UPSTREAM_FAILURES = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError)


@dataclass(frozen=True)
class Limits:
    """Every limit the proxy enforces, with defaults close to nginx's."""

    max_head_bytes: int = 32 * 1024  # request line and headers: 431 beyond
    max_body_bytes: int = 100 * 1024 * 1024  # request body: 413 beyond
    head_timeout: float = 60.0  # to receive a request head: 408 beyond (idle keep-alive: close)
    connect_timeout: float = 5.0  # to connect to an endpoint: the next one is tried
    upstream_timeout: float = 60.0  # between reads from an upstream: 504 beyond
    max_connections: int = 10_000  # client connections served at once; more wait to be accepted

    def __post_init__(self) -> None:
        for name in ("max_head_bytes", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("head_timeout", "connect_timeout", "upstream_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")


class _Upstream:
    """One connection to an endpoint and its h11 client state."""

    def __init__(self, stream: trio.SocketStream, endpoint: Endpoint) -> None:
        self.stream = stream
        self.endpoint = endpoint
        self.h11 = h11.Connection(h11.CLIENT)

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self, timeout: float) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(timeout) as scope:
                data = await self.stream.receive_some(READ_SIZE)
            if scope.cancelled_caught:
                raise GatewayTimeoutError(f"{self.endpoint} sent nothing for {timeout:g} s")
            self.h11.receive_data(data)

    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and the connection can carry another."""
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE


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
    """

    def __init__(
        self,
        config: RouteConfig | None = None,
        *,
        limits: Limits | None = None,
        trusted: TrustedProxies | None = None,
        tls: TLSContexts | None = None,
        https_redirect_port: int = 443,
    ) -> None:
        self.tls = tls
        self.https_redirect_port = https_redirect_port
        if config is not None and tls is not None:
            tls.install(config)
        self._config = config
        self.limits = limits or Limits()
        self.trusted = trusted or TrustedProxies()
        self.balancer = Balancer()
        self.pool: Pool[_Upstream] = Pool()
        self._connections = trio.CapacityLimiter(self.limits.max_connections)

    @property
    def config(self) -> RouteConfig | None:
        return self._config

    @property
    def ready(self) -> bool:
        """Whether a config has been loaded (what ``/readyz`` reports)."""
        return self._config is not None

    def swap(self, config: RouteConfig) -> None:
        """Serve ``config`` from the next request on; requests in flight keep theirs.

        Its certificates are loaded here, synchronously; ``load`` does that part in a
        worker thread, which is what a running proxy should use.
        """
        if self.tls is not None:
            self.tls.install(config)
        self._config = config

    async def load(self, config: RouteConfig) -> None:
        """``swap``, with the certificates loaded off the event loop."""
        if self.tls is not None:
            await trio.to_thread.run_sync(self.tls.install, config)
        self._config = config

    async def serve(
        self,
        host: str,
        port: int,
        *,
        scheme: str = "http",
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``host:port`` (0: an ephemeral port) until cancelled.

        ``scheme="https"`` terminates TLS (the proxy needs ``tls``). ``task_status.started``
        gets the listeners, so a caller learns the bound port:
        ``listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)``.
        """
        if scheme == "https" and self.tls is None:
            raise ValueError("an https listener needs the proxy's tls contexts")
        listeners = await trio.open_tcp_listeners(port, host=host)
        async with trio.open_nursery() as nursery:
            task_status.started(listeners)

            async def handle(stream: trio.SocketStream) -> None:
                peer, local = stream.socket.getpeername(), stream.socket.getsockname()
                client = Client(address=peer[0], scheme=scheme, port=local[1])
                if scheme == "https":
                    await self._tls_connection(stream, client)
                else:
                    await self._connection(stream, client)

            await trio.serve_listeners(handle, listeners, handler_nursery=nursery)

    # ------------------------------------------------------------ client side

    async def _tls_connection(self, stream: trio.SocketStream, client: Client) -> None:
        assert self.tls is not None
        tls_stream = trio.SSLStream(
            stream, self.tls.listener_context, server_side=True, https_compatible=True
        )
        with trio.move_on_after(self.limits.head_timeout) as scope:
            try:
                await tls_stream.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.aclose()
                return
        if scope.cancelled_caught:
            await stream.aclose()
            return
        await self._connection(tls_stream, client)

    async def _connection(self, stream: trio.abc.Stream, client: Client) -> None:
        async with self._connections, stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
            try:
                await self._serve_requests(stream, conn, client)
            except h11.RemoteProtocolError as error:
                problem = BadRequestError(f"malformed request: {error}")
                problem.status = error.error_status_hint  # 400, or 431 for an oversized head
                await self._respond_error(stream, conn, client, None, problem)
            except (_ClientGoneError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the client went away, or a response was cut off: the connection closes
            except Exception:
                # a bug must cost one connection and a log line, never the server
                log.exception("unexpected error serving %s", client.address)

    async def _serve_requests(
        self, stream: trio.abc.Stream, conn: h11.Connection, client: Client
    ) -> None:
        while True:
            with trio.move_on_after(self.limits.head_timeout) as scope:
                event = await _next_event(stream, conn)
            if scope.cancelled_caught:
                if conn.trailing_data[0] or conn.their_state is not h11.IDLE:
                    await self._respond_error(
                        stream, conn, client, None, RequestTimeoutError("request head too slow")
                    )
                return  # an idle keep-alive connection simply closes
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise h11.RemoteProtocolError(
                    f"unexpected {type(event).__name__}", error_status_hint=400
                )
            await self._request(stream, conn, client, event)
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                return  # the exchange could not end cleanly (e.g. body left unread): close

    async def _request(
        self, stream: trio.abc.Stream, conn: h11.Connection, client: Client, request: h11.Request
    ) -> None:
        config = self._config  # this request's config, whatever swap does meanwhile
        started = trio.current_time()
        host = _header(request.headers, b"host")
        try:
            _check_head(request, self.limits)
            if config is None:
                raise ServiceUnavailableError("no configuration loaded yet")
            length = _header(request.headers, b"content-length")
            if length is not None and int(length) > self.limits.max_body_bytes:
                raise PayloadTooLargeError(
                    f"body of {int(length)} bytes is over the limit of {self.limits.max_body_bytes}"
                )
            decision = decide(
                config,
                method=request.method,
                target=request.target,
                host=host,
                scheme=client.scheme,
                https_port=self.https_redirect_port,
            )
        except ProxyError as error:
            await self._respond_error(stream, conn, client, request, error)
            return
        if isinstance(decision, Redirect):
            await _respond(
                stream,
                conn,
                decision.status,
                b"",
                [(b"location", decision.location)],
                close=_unread_body(conn),
            )
            _log_access(client, request, decision.status, started, "", "redirect")
            return
        await self._forward(stream, conn, client, request, decision, started)

    async def _respond_error(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        client: Client,
        request: h11.Request | None,
        error: ProxyError,
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already on its way: the connection just closes
        body = f"{error.status} {_reason(error.status)}\n".encode()
        log.info("%s: %s", type(error).__name__, error.detail)
        try:
            await _respond(stream, conn, error.status, body, [], close=True)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            h11.LocalProtocolError,
        ):
            return
        if request is not None:
            _log_access(client, request, error.status, None, "", type(error).__name__)

    # ------------------------------------------------------------ upstream side

    async def _forward(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        client: Client,
        request: h11.Request,
        decision: Forward,
        started: float,
    ) -> None:
        route = decision.route
        headers = request_headers(request.headers, client, self.trusted)
        headers = [(n, v) for n, v in headers if n != b"expect"]  # 100 Continue is answered here
        chunked = any(n == b"transfer-encoding" for n, _ in request.headers)
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        has_body = chunked or _header(request.headers, b"content-length") not in (None, b"0")
        outgoing = h11.Request(method=request.method, target=decision.target, headers=headers)
        body_sent = False
        last_error: ProxyError = ServiceUnavailableError(route.backend.problem or "no endpoints")
        for endpoint in self.balancer.attempts(route.backend, now=trio.current_time()):
            try:
                upstream = await self._checkout(endpoint)
            except BadGatewayError as error:
                last_error = error
                continue  # nothing was sent: the next endpoint may take it
            try:
                await upstream.send(outgoing)
                if has_body:
                    body_sent = True
                    await self._copy_request_body(stream, conn, upstream)
                else:
                    await upstream.send(h11.EndOfMessage())
                    await _drain_empty_body(stream, conn)
                response = await upstream.next_event(self.limits.upstream_timeout)
            except ProxyError as error:  # the upstream timed out, or the request body is bad
                upstream.stream.socket.close()
                await self._respond_error(stream, conn, client, request, error)
                return
            except _ClientGoneError:
                upstream.stream.socket.close()
                raise
            except UPSTREAM_FAILURES as error:
                upstream.stream.socket.close()
                self.balancer.failed(
                    endpoint, now=trio.current_time(), reason=str(error) or type(error).__name__
                )
                last_error = BadGatewayError(f"{endpoint}: {error or type(error).__name__}")
                if may_retry(request.method, request_sent=body_sent, body_replayable=not has_body):
                    continue
                break
            self.balancer.succeeded(endpoint)
            await self._relay_response(stream, conn, upstream, response)
            _log_access(
                client, request, response.status_code, started, route.ingress, str(endpoint)
            )
            return
        await self._respond_error(stream, conn, client, request, last_error)

    async def _checkout(self, endpoint: Endpoint) -> _Upstream:
        """An idle pooled connection to ``endpoint``, or a new one."""
        connection, expired = self.pool.take(endpoint, now=trio.current_time())
        for old in expired:
            old.stream.socket.close()
        if connection is not None:
            return connection
        with trio.move_on_after(self.limits.connect_timeout) as scope:
            try:
                socket_stream = await trio.open_tcp_stream(endpoint.address, endpoint.port)
            except OSError as error:
                self.balancer.failed(endpoint, now=trio.current_time(), reason=f"connect: {error}")
                raise BadGatewayError(f"connect to {endpoint}: {error}") from None
        if scope.cancelled_caught:
            self.balancer.failed(endpoint, now=trio.current_time(), reason="connect timed out")
            raise BadGatewayError(f"connect to {endpoint} timed out") from None
        return _Upstream(socket_stream, endpoint)

    async def _copy_request_body(
        self, stream: trio.abc.Stream, conn: h11.Connection, upstream: _Upstream
    ) -> None:
        if conn.they_are_waiting_for_100_continue:
            await _send(
                stream,
                conn,
                h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"),
            )
        received = 0
        while True:
            with trio.move_on_after(self.limits.head_timeout) as scope:
                try:
                    event = await _next_event(stream, conn)
                except h11.RemoteProtocolError as error:
                    raise BadRequestError(f"malformed request body: {error}") from None
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    raise _ClientGoneError() from None
            if scope.cancelled_caught:
                raise RequestTimeoutError("request body too slow")
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > self.limits.max_body_bytes:
                    raise PayloadTooLargeError("request body over the limit")
                await upstream.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await upstream.send(h11.EndOfMessage(headers=event.headers))
                return
            else:
                raise BadRequestError(f"unexpected {type(event).__name__} in the request body")

    async def _relay_response(
        self, stream: trio.abc.Stream, conn: h11.Connection, upstream: _Upstream, response: Any
    ) -> None:
        while isinstance(response, h11.InformationalResponse):
            response = await upstream.next_event(self.limits.upstream_timeout)
        if not isinstance(response, h11.Response):
            raise trio.BrokenResourceError(f"upstream sent {type(response).__name__}")
        headers = response_headers(response.headers)
        try:
            await _send(
                stream, conn, h11.Response(status_code=response.status_code, headers=headers)
            )
            while True:
                try:
                    event = await upstream.next_event(self.limits.upstream_timeout)
                except (*UPSTREAM_FAILURES, GatewayTimeoutError):
                    # half the response is sent: all a proxy can do is close, so the client
                    # sees the response cut off rather than a wrong one
                    log.info("%s failed mid-response", upstream.endpoint)
                    raise _ClientGoneError() from None
                if isinstance(event, h11.Data):
                    await _send(stream, conn, h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    await _send(stream, conn, h11.EndOfMessage())
                    break
                else:
                    raise _ClientGoneError()
        except BaseException:
            upstream.stream.socket.close()
            raise
        if upstream.reusable():
            upstream.h11.start_next_cycle()
            for old in self.pool.give(upstream.endpoint, upstream, now=trio.current_time()):
                old.stream.socket.close()
        else:
            upstream.stream.socket.close()


async def _drain_empty_body(stream: trio.abc.Stream, conn: h11.Connection) -> None:
    """Read the EndOfMessage h11 yields for a request without a body."""
    if conn.their_state is h11.SEND_BODY:
        event = await _next_event(stream, conn)
        if not isinstance(event, h11.EndOfMessage):
            raise BadRequestError(f"unexpected {type(event).__name__} after a request without body")


async def _send(stream: trio.abc.Stream, conn: h11.Connection, event: Any) -> None:
    """Send an event to the client; a broken client connection is _ClientGoneError."""
    data = conn.send(event)
    if data:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise _ClientGoneError() from None


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))


async def _respond(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    close: bool,
) -> None:
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    if body:
        all_headers.append((b"content-type", b"text/plain; charset=utf-8"))
    if close:
        all_headers.append((b"connection", b"close"))
    reason = _reason(status).encode()
    data = conn.send(h11.Response(status_code=status, headers=all_headers, reason=reason)) or b""
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


def _check_head(request: h11.Request, limits: Limits) -> None:
    """Refuse what h11 lets through but a proxy must not forward.

    h11 limits the size of a head still being received; one that arrives whole in a
    single read is not limited, so its size is checked here too. A request with both
    Content-Length and Transfer-Encoding is what request smuggling looks like (RFC 9112
    §6.3 says to treat it as an error), and so is anything but plain ``chunked``.
    """
    size = (
        len(request.method)
        + len(request.target)
        + sum(len(n) + len(v) + 4 for n, v in request.headers)
    )
    if size > limits.max_head_bytes:
        raise HeadersTooLargeError(f"request head of {size} bytes is over {limits.max_head_bytes}")
    encodings = [v.strip().lower() for n, v in request.headers if n == b"transfer-encoding"]
    if encodings:
        if _header(request.headers, b"content-length") is not None:
            raise BadRequestError("both Content-Length and Transfer-Encoding: refused as smuggling")
        if encodings != [b"chunked"]:
            raise BadRequestError(f"unsupported Transfer-Encoding {b', '.join(encodings)!r}")


def _unread_body(conn: h11.Connection) -> bool:
    """Whether the request's body is still unread (then the connection must close)."""
    return conn.their_state is not h11.DONE


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


def _reason(status: int) -> str:
    """The standard reason phrase of a status code ("" for an unknown one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _log_access(
    client: Client,
    request: h11.Request,
    status: int,
    started: float | None,
    ingress: str,
    upstream: str,
) -> None:
    took = f"{(trio.current_time() - started) * 1000:.1f}ms" if started is not None else "-"
    access_log.info(
        '%s "%s %s" %d %s %s %s',
        client.address,
        request.method.decode("latin-1"),
        request.target.decode("latin-1"),
        status,
        took,
        ingress or "-",
        upstream or "-",
    )
