"""The HTTP/1 front end: one task per client connection, requests in turn.

Between requests, a plain TCP connection whose requests go the short way is carried by
the plain loop (``plain_loop``), which serves those from one task for every connection;
the connection's task waits meanwhile, and goes on with whatever the loop hands back.

Request heads are read with the compiled codec (``fastroute._http``); ``decide`` says
what to do with each (``Http1._request``, the one place a decision is carried out):
answer it (redirect or error status) or forward it (``forwarding``). Heads are
rewritten once; bodies pass through as they came, chunked framing included; only a
small one (up to ``BODY_BUFFER``) is read whole before an upstream connection is taken.

Each request uses the RouteConfig that was current when its head arrived.

Timeouts cost one float per phase: each connection records when its current phase
expires (``Connection.deadline``) and the proxy's watchdog cancels the connections past
theirs. The phase a connection was in says what the client is told (``_timed_out``: 408
for a slow client, 504 for a slow upstream, nothing for an idle keep-alive connection).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING

import trio

from fastroute._http import ChunkedError, ChunkedScanner, RequestHead, parse_request
from fastroute.errors import (
    AccessCheckError,
    BadRequestError,
    GatewayTimeoutError,
    LengthRequiredError,
    PayloadTooLargeError,
    ProxyError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from fastroute.proxy import plain_loop
from fastroute.proxy.channel import Channel, SocketChannel
from fastroute.proxy.decide import Answer, Decision, Forward, decide
from fastroute.proxy.forwarding import Forwarder, Upstream
from fastroute.proxy.gate import Admitted, Asking, Gate, admitted_plan
from fastroute.proxy.headers import Client
from fastroute.proxy.limiter import ClientLimits
from fastroute.proxy.plain_loop import PlainLoop
from fastroute.proxy.plain_plans import Kept, PlainPlans
from fastroute.proxy.real_ip import ClientTrust, Identity
from fastroute.proxy.state import CONNECTION_FAILURES, ClientGoneError, Phase, ProxyState

if TYPE_CHECKING:
    from fastroute.ingress.settings import Settings

__all__ = ["Connection", "Http1"]

log = logging.getLogger("fastroute.proxy")
access_log = logging.getLogger("fastroute.access")

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
NO_BODY_LIMIT = 1 << 62  # proxy-body-size "0": no limit


class _RequestBody:
    """The request body of one forwarded request, as far as the proxy has taken it."""

    __slots__ = (
        "buffered",
        "complete",
        "continued",
        "max_bytes",
        "received",
        "remaining",
        "rest",
        "scanner",
        "started",
    )

    def __init__(self, started: float, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # the route's body limit
        self.started = started  # when the head was in: the body's rate counts from here
        self.received = 0  # body bytes read after the head
        self.buffered = b""  # the start of the body (all of it if ``complete``), not yet sent
        self.complete = True  # ``buffered`` is the whole body: it can be sent again
        self.rest = b""  # what followed the body on the connection (once complete)
        self.remaining = 0  # Content-Length bytes still to read
        self.scanner: ChunkedScanner | None = None  # a chunked body's framing
        self.continued = False  # 100 Continue went out


class Connection:
    """One client connection's state, shared with ``drain`` and the timeout handling.

    It is the ``forwarding.ClientSide`` of the request it is serving.
    """

    __slots__ = (
        "address",
        "body",
        "channel",
        "client",
        "client_left",
        "error_lines",
        "expires",
        "forwarded",
        "head",
        "ingress",
        "logged",
        "now",
        "phase",
        "responded",
        "scope",
        "service",
        "started",
        "state",
        "upstream",
    )

    def __init__(
        self,
        channel: Channel,
        client: Client,
        scope: trio.CancelScope,
        trusted: bool,
        state: ProxyState,
    ) -> None:
        self.channel = channel
        self.client = client
        self.scope = scope
        self.state = state
        # trio's clock, asked directly: trio.current_time() costs two more calls, and a
        # request reads the time several times
        self.now = trio.lowlevel.current_clock().current_time
        self.phase = Phase.IDLE
        self.expires = math.inf
        # what X-Forwarded-* say about this connection, encoded once
        self.forwarded = (
            client.address.encode("ascii"),
            client.scheme.encode("ascii"),
            str(client.port).encode("ascii"),
            trusted,
        )
        self.responded = False  # a response head went out for the current request
        # the current request's client: the peer, or who it says it forwards for
        # (``fastroute.proxy.real_ip``), for decisions and logs
        self.address = client.address
        # fields the proxy's own error answer to the current request carries (CORS)
        self.error_lines = b""
        self.client_left = False  # the client closed while its request was upstream
        self.head: RequestHead | None = None
        self.logged = True  # the current request goes to the access log (enable-access-log)
        self.ingress = "-"  # the current request's route, once it has one (metrics, logs)
        self.service = "-"
        self.started = 0.0  # when the current request's head was parsed
        self.upstream: Upstream | None = None
        # the current request's body, once ``start_body`` took its start
        self.body: _RequestBody | None = None

    def deadline(self, phase: Phase, seconds: float) -> None:
        """Enter ``phase``, which the watchdog ends after ``seconds``."""
        self.phase = phase
        self.expires = self.now() + seconds

    def await_request(self, phase: Phase, seconds: float) -> None:
        """Between requests: the last one's state cleared, the wait for the next one
        (``phase``: IDLE, or HEAD with some of it read) ended after ``seconds``."""
        self.deadline(phase, seconds)
        self.head = None
        self.responded = False
        self.error_lines = b""
        self.ingress = self.service = "-"
        self.logged = True

    def go_plain(self, head: RequestHead, kept: Kept) -> bytes:
        """Take ``head`` the short way, under the plain plan ``kept`` for it: the request
        starts now, as that plan's route's; its head as the upstream is sent it."""
        self.started = self.now()
        self.address = self.client.address
        self.ingress = kept.ingress
        self.service = kept.service
        self.logged = kept.logged
        return head.forward_head(
            kept.target, *self.forwarded, kept.host, override_host=kept.override_host
        )

    async def send(self, data: bytes) -> None:
        """Send ``data`` to the client (ClientGoneError: it is gone)."""
        try:
            await self.channel.send(data)
        except CONNECTION_FAILURES:
            raise ClientGoneError() from None

    async def recv(self) -> bytes:
        """The client's next bytes (ClientGoneError: it closed or broke the connection)."""
        try:
            data = await self.channel.recv()
        except CONNECTION_FAILURES:
            raise ClientGoneError() from None
        if not data:
            raise ClientGoneError()
        return data

    def finished(self, status: int, upstream: str) -> None:
        """Count and log the current request, answered ``status`` by ``upstream``."""
        took = self.now() - self.started
        metrics = self.state.metrics
        if metrics is not None:
            metrics.request(self.ingress, self.service, status, took)
        if self.logged and access_log.isEnabledFor(logging.INFO):
            head = self.head
            access_log.info(
                '%s "%s %s" %d %.1fms %s %s',
                self.address,
                head.method.decode("latin-1") if head else "-",
                head.target.decode("latin-1") if head else "-",
                status,
                took * 1000,
                self.ingress,
                upstream,
            )

    # ------------------------------------------------------------ request bodies

    async def start_body(self, head: RequestHead, body: bytes, max_body_bytes: int) -> _RequestBody:
        """Take the start of a request body: all of it when it is small (``BODY_BUFFER``).

        ``body`` is what came after the head (the request has a body: Content-Length or
        chunked). The body limit is checked here on every byte
        in hand, however the bytes were split, so nothing over it is ever forwarded.
        """
        state = self.body = _RequestBody(self.now(), max_body_bytes)
        if head.chunked:
            scanner = state.scanner = ChunkedScanner()
            end, state.buffered = _relay_chunks(scanner, body, max_body_bytes)
            state.rest = body[end:]
            while not scanner.done and state.received < BODY_BUFFER:
                await self._continue(head, state)
                data = await self._recv_body(state)
                end, out = _relay_chunks(scanner, data, max_body_bytes)
                state.buffered += out
                state.rest = data[end:]
            state.complete = scanner.done
        else:
            state.buffered, state.rest = body[: head.content_length], body[head.content_length :]
            missing = head.content_length - len(state.buffered)
            if missing and head.content_length <= BODY_BUFFER:
                await self._continue(head, state)
                pieces = [state.buffered]
                while missing:
                    data = await self._recv_body(state)
                    pieces.append(data[:missing])
                    state.rest = data[missing:]
                    missing -= len(pieces[-1])
                state.buffered = b"".join(pieces)
            state.complete = not missing
            state.remaining = missing
        return state

    async def read_body(self) -> bytes:
        """The next piece of the request body to send upstream, as it came (chunked
        framing included); b"" once it is all read, ``rest`` then holding what followed it.
        """
        body, head = self.body, self.head
        assert body is not None
        assert head is not None
        if not body.continued and head.expect_continue:
            await self._continue(head, body)
        scanner = body.scanner
        if scanner is not None:
            while not scanner.done:
                data = await self._recv_body(body)
                end, out = _relay_chunks(scanner, data, body.max_bytes)
                if scanner.done:
                    body.rest = data[end:]
                if out:  # nothing while a trailer section is held
                    return out
            return b""
        remaining = body.remaining
        if not remaining:
            return b""
        data = await self._recv_body(body)
        if len(data) > remaining:
            body.rest = data[remaining:]
            data = data[:remaining]
        body.remaining = remaining - len(data)
        return data

    async def _continue(self, head: RequestHead, body: _RequestBody) -> None:
        """Send ``100 Continue`` once, before the proxy first waits for the body."""
        if head.expect_continue and not body.continued:
            body.continued = True
            await self.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _recv_body(self, body: _RequestBody) -> bytes:
        """The next piece of the request body, within both body deadlines.

        Each read must come within ``head_timeout`` (nginx's client_body_timeout), and
        the body as a whole must keep up ``min_body_rate`` after a grace period: a client
        sending a byte now and then cannot keep the slot and the upstream connection.
        """
        limits = self.state.limits
        expires = self.now() + limits.head_timeout
        if limits.min_body_rate:
            expires = min(
                expires, body.started + BODY_RATE_GRACE + body.received / limits.min_body_rate
            )
        self.phase = Phase.BODY
        self.expires = expires
        data = await self.recv()
        body.received += len(data)
        return data


class Http1:
    """Serves HTTP/1 client connections; forwards their requests through ``forwarder``."""

    def __init__(self, state: ProxyState, forwarder: Forwarder, gate: Gate) -> None:
        self.state = state
        self.limits = state.limits
        self.forwarder = forwarder
        self.gate = gate  # a gated route's access checks (auth)
        self.client_limits = ClientLimits()  # limit-rps, limit-connections: per replica
        self.open: set[Connection] = set()  # every connection being served
        # who the client is, as the settings in use say: parsed once per Settings object
        self._trust: tuple[Settings | None, ClientTrust | None] = (None, None)
        self.all_closed = trio.Event()  # set (and replaced) each time ``open`` empties
        self.plain_plans = PlainPlans()  # plain routes' plans, for the config in force
        self.loop: PlainLoop | None = None  # the plain loop, while it runs

    async def serve(self, channel: Channel, client: Client) -> None:
        """Serve ``channel`` until the client or the proxy closes it; close it then."""
        trusted = self.state.trusted.trusts(client.address)
        connection = Connection(channel, client, trio.CancelScope(), trusted, self.state)
        self.open.add(connection)
        try:
            with connection.scope:
                try:
                    await self._serve_requests(connection)
                except ProxyError as error:
                    await self._respond_error(connection, error)
                except (ClientGoneError, *CONNECTION_FAILURES):
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
            self.open.discard(connection)
            if not self.open:
                self.all_closed.set()
                self.all_closed = trio.Event()

    async def _timed_out(self, connection: Connection) -> None:
        """Tell the client what the passed deadline means for the phase it was in."""
        error: ProxyError
        if connection.client_left:
            upstream = connection.upstream
            log.info(
                "%s closed the connection while %s had its request: given up",
                connection.client.address,
                upstream.endpoint if upstream else "the upstream",
            )
            connection.finished(CLIENT_CLOSED, str(upstream.endpoint) if upstream else "-")
            return
        if connection.phase is Phase.HEAD:
            error = RequestTimeoutError("request head too slow")
        elif connection.phase is Phase.BODY:
            error = RequestTimeoutError("request body too slow")
        elif connection.phase is Phase.AUTH:
            error = AccessCheckError("the route's access checks did not answer in time")
        elif connection.phase is Phase.UPSTREAM:
            upstream = connection.upstream
            where = str(upstream.endpoint) if upstream else "the upstream"
            # the route's own timeouts may be shorter than the proxy's: no number here
            error = GatewayTimeoutError(f"{where} was too slow for the route's timeouts")
            if upstream is not None:
                self.state.upstream_error(connection.service, upstream.endpoint, "timeout")
        else:
            return  # idle, draining, or mid-response: the connection just closes
        with trio.move_on_after(ERROR_SEND_TIMEOUT):
            await self._respond_error(connection, error)

    async def _serve_requests(self, connection: Connection) -> None:
        limits = self.limits
        state = self.state
        channel = connection.channel
        plain_plans = self.plain_plans
        forward_plain = self.forwarder.forward_plain
        scheme = connection.client.scheme
        buffer = b""
        idle_timeout = limits.head_timeout  # before the first request: the head's time
        told = 0.0  # the keep-alive timeout the watchdog was last told of
        # its requests go the short way: the plain loop may carry it between them
        loopable = looping = isinstance(channel, SocketChannel)
        while not state.draining or buffer:
            if buffer:
                connection.await_request(Phase.HEAD, limits.head_timeout)
                head = parse_request(buffer, limits.max_head_bytes)
            else:
                connection.await_request(Phase.IDLE, idle_timeout)
                head = None
                loop = self.loop
                if looping and loop is not None:
                    carried = await loop.carry(connection, scheme)
                    if carried is None:
                        return
                    buffer, head = carried
                    if head is None:  # a request served, or bytes to read on from
                        kept_alive = state.keep_alive(told)
                        if kept_alive is not None:
                            idle_timeout, told = kept_alive
                        continue
                    looping = False  # its requests leave the short way: served here
            while head is None:
                # after a response, the client's next request cannot be here yet
                data = await (channel.recv() if buffer else channel.recv_reply())
                if not data:
                    return
                first = not buffer
                buffer = buffer + data if buffer else data
                connection.phase = Phase.HEAD
                head = parse_request(buffer, limits.max_head_bytes)
                if head is None and first:  # the head's time runs from its first byte
                    connection.deadline(Phase.HEAD, limits.head_timeout)
            connection.head = head
            # a plain route's plan, made for this target, Host and scheme under the config
            # in force, if any
            kept = plain_plans.get(state.config, (head.target, head.host, scheme))
            if kept is None:
                rest = await self._request(connection, head, buffer[head.size :], None)
            elif kept.short and head.content_length <= 0 and not head.chunked:
                # the commonest request: no plan to make, nothing to read, nothing to check
                outgoing = connection.go_plain(head, kept)
                rest = await forward_plain(
                    connection, head, outgoing, kept.plan, buffer[head.size :]
                )
                looping = loopable
            else:
                rest = await self._request(connection, head, buffer[head.size :], kept.plan)
            if rest is None:
                return
            buffer = rest
            kept_alive = state.keep_alive(told)
            if kept_alive is not None:
                idle_timeout, told = kept_alive

    async def run_plain_loop(self) -> None:
        """Run the plain loop (``plain_loop``): the connections' plain requests are served
        from it while it runs (on Linux; elsewhere this returns at once)."""
        if not plain_loop.AVAILABLE:
            return
        loop = PlainLoop(self.state, self.forwarder, self.plain_plans)
        self.loop = loop
        try:
            await loop.run()
        finally:
            self.loop = None

    async def _request(
        self, connection: Connection, head: RequestHead, body: bytes, kept: Forward | None
    ) -> bytes | None:
        """Carry out ``decide``'s plan for one request; what follows it on the connection,
        or None to close. ``kept`` is the plain plan kept for it (None: decide)."""
        state = self.state
        config = state.config  # this request's config, whatever swap does meanwhile
        connection.started = now = connection.now()
        identity: Identity | None = None
        client = connection.address = connection.client.address
        try:
            if config is None:
                raise ServiceUnavailableError("no configuration loaded yet")
            if ClientTrust.wanted(config.settings):
                trust = self._client_trust(config.settings)
                identity = trust.identify(client, lambda name: _joined(head, name))
                client = connection.address = identity.address
            scheme = connection.client.scheme
            plan: Decision | None = kept
            if plan is None:
                plan = decide(
                    config,
                    method=head.method,
                    target=head.target,
                    host=head.host,
                    scheme=scheme,
                    https_port=state.https_redirect_port,
                    client=client,
                    header=head.header,
                    limits=self.client_limits,
                    now=now,
                    peer=connection.client.peer,
                )
                self.plain_plans.keep(config, (head.target, head.host, scheme), plan)
        except ProxyError as error:
            await self._respond_error(connection, error)
            return None
        if isinstance(plan, Answer):
            return await self._answer_plan(connection, head, body, plan)
        # Forward: a ProxyError raised from here on (413, 502, 504...) is the answer (serve)
        route = plan.route
        policy = route.policy
        connection.ingress = route.ingress
        connection.service = route.backend.name
        connection.logged = policy.access_log
        if policy.plain and identity is None and head.content_length <= 0 and not head.chunked:
            # a plain route, nothing to read, nothing to check
            outgoing = head.forward_head(
                plan.target, *connection.forwarded, plan.host, override_host=plan.host_from_target
            )
            return await self.forwarder.forward_plain(connection, head, outgoing, plan, body)
        connection.error_lines = plan.fields.error_lines
        try:
            max_body = self.limits.max_body_bytes
            if policy.max_body_bytes is not None:
                max_body = policy.max_body_bytes or NO_BODY_LIMIT
            if head.content_length > max_body:
                raise PayloadTooLargeError(
                    f"body of {head.content_length} bytes is over the limit of {max_body}"
                )
            if head.chunked and not policy.plain and policy.proxy_http_version == "1.0":
                # HTTP/1.0 has no chunked framing, and a body of unknown length is not
                # held in memory to count it: the client can send its length instead
                raise LengthRequiredError(
                    f"{route.ingress} speaks HTTP/1.0 to its upstream: a chunked request "
                    "body needs a Content-Length"
                )
            if policy.gated and not plan.granted:  # access checks that wait, before the body
                verdict = await self._admit(connection, head, plan)
                if isinstance(verdict, Answer):
                    return await self._answer_plan(connection, head, body, verdict)
                plan = admitted_plan(plan, verdict)
            request_body = (
                await connection.start_body(head, body, max_body)
                if head.chunked or head.content_length > 0
                else None  # the common case: nothing to read, nothing to time
            )
            if identity is not None:
                outgoing = head.forward_head(
                    plan.target,
                    identity.client_ip,
                    connection.forwarded[1],
                    connection.forwarded[2],
                    identity.trusted,
                    plan.host,
                    override_host=plan.host_from_target,
                    vhost=plan.fields.vhost,
                    extra=plan.fields.upstream_lines,
                    drop=plan.fields.upstream_drop,
                    chain=identity.chain,
                    real_ip=identity.real_ip,
                    http10=policy.proxy_http_version == "1.0",
                )
            elif policy.plain:
                outgoing = head.forward_head(
                    plan.target,
                    *connection.forwarded,
                    plan.host,
                    override_host=plan.host_from_target,
                )
            else:
                outgoing = head.forward_head(
                    plan.target,
                    *connection.forwarded,
                    plan.host,
                    override_host=plan.host_from_target,
                    vhost=plan.fields.vhost,
                    extra=plan.fields.upstream_lines,
                    drop=plan.fields.upstream_drop,
                    http10=policy.proxy_http_version == "1.0",
                )
            if request_body is None and policy.plain:
                after = await self.forwarder.forward_plain(connection, head, outgoing, plan, body)
            else:
                after = await self.forwarder.forward(
                    connection, head, outgoing, plan, request_body, body
                )
        finally:
            if plan.held is not None:
                plan.held.release()
        if request_body is not None:
            connection.body = None  # its bytes are not kept while the connection idles
        return after

    async def _admit(
        self, connection: Connection, head: RequestHead, plan: Forward
    ) -> Admitted | Answer:
        """The gated route's checks, as the request is (``gate.py``)."""
        asking = Asking(
            method=head.method,
            target=head.target,
            host=plan.host,
            scheme=connection.client.scheme,
            client=connection.address,
            headers=head.headers,
            header=head.header,
            ingress=plan.route.ingress,
            path=plan.route.path,
        )
        connection.deadline(Phase.AUTH, self.limits.upstream_timeout)
        return await self.gate.admit(plan.route.policy, asking)

    def _client_trust(self, settings: Settings) -> ClientTrust:
        """The trust rules of ``settings``, made once per Settings object."""
        cached_settings, trust = self._trust
        if cached_settings is not settings or trust is None:
            trust = ClientTrust(settings)
            self._trust = (settings, trust)
        return trust

    async def _answer_plan(
        self, connection: Connection, head: RequestHead, body: bytes, plan: Answer
    ) -> bytes | None:
        """Write an answer the plan made (redirect, preflight, 403, 503...)."""
        if plan.route is not None:
            connection.ingress = plan.route.ingress
            connection.logged = plan.route.policy.access_log
        if plan.status >= 400:
            log.info("%d for %s: %s", plan.status, connection.address, plan.reason)
        bodyless = head.content_length <= 0 and not head.chunked
        close = not bodyless or self.state.closes_after(head.keep_alive)
        if plan.body or plan.status >= 400:
            text = plan.body or f"{plan.status} {_reason(plan.status)}\n".encode()
        else:
            text = b""
        await _answer(
            connection.channel, plan.status, text, plan.headers, close=close, lines=plan.lines
        )
        connection.finished(plan.status, plan.reason or "answered")
        return None if close else body

    async def _respond_error(self, connection: Connection, error: ProxyError) -> None:
        if connection.responded:
            return  # a response is already on its way: the connection just closes
        log.info("%s: %s", type(error).__name__, error.detail)
        connection.responded = True
        text = f"{error.status} {_reason(error.status)}\n".encode()
        try:
            await _answer(
                connection.channel, error.status, text, [], close=True, lines=connection.error_lines
            )
        except (*CONNECTION_FAILURES, ClientGoneError):
            return
        head = connection.head
        if head is None:  # refused before its head parsed: no time the proxy can measure
            connection.started = connection.now()
        connection.finished(error.status, type(error).__name__)
        if head is not None and (head.chunked or head.content_length > 0):
            # the client may still be sending the body: let it, so it reads the answer
            connection.deadline(Phase.IDLE, LINGER + 1.0)
            await connection.channel.linger(LINGER)


def _joined(head: RequestHead, name: bytes) -> bytes | None:
    """Every value of the request's fields named ``name``, joined by commas (None: none)."""
    if head.header(name) is None:
        return None
    return b", ".join(value for field, value in head.headers if field == name)


def _relay_chunks(scanner: ChunkedScanner, data: bytes, max_body_bytes: int) -> tuple[int, bytes]:
    """Where a chunked request body ends in ``data`` and the bytes to send on.

    Refuses malformed framing (400) and a body over the limit (413), declared chunk
    sizes included, before any byte of it is sent.
    """
    try:
        end, out = scanner.relay(data)
    except ChunkedError as error:
        raise BadRequestError(f"malformed chunked request body: {error}") from None
    if scanner.payload > max_body_bytes:
        raise PayloadTooLargeError(f"chunked body over the limit of {max_body_bytes} bytes")
    return end, out


async def _answer(
    channel: Channel,
    status: int,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    close: bool,
    lines: bytes = b"",
) -> None:
    """A complete response the proxy writes itself (redirects and errors); ``lines`` are
    more fields, whole."""
    head = [b"HTTP/1.1 %d %s" % (status, _reason(status).encode())]
    head += [name + b": " + value for name, value in headers]
    # a 204 has no Content-Length (RFC 9110 §8.6)
    if status != 204:
        head.append(b"Content-Length: %d" % len(body))
    if body:
        head.append(b"Content-Type: text/plain; charset=utf-8")
    if close:
        head.append(b"Connection: close")
    await channel.send(b"\r\n".join(head) + b"\r\n" + lines + b"\r\n" + body)


def _reason(status: int) -> str:
    """The standard reason phrase of a status code ("" for an unknown one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
