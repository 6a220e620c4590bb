"""The upstream side of a request: endpoints tried in turn, the exchange, the relay back.

Nothing here knows how the client speaks: the front end (``http1`` today) hands over
the request head to send upstream, the start of its body, and itself as a ``ClientSide``
(send bytes to the client, read the next piece of request body, enter a phase with a
deadline, say the request is done). Upstream connections speak HTTP/1.1; they are kept
alive in a ``Pool`` and chosen by the ``Balancer``; one that received anything while
idle is never reused. A route with ``backend-protocol: HTTPS`` speaks TLS to its
endpoints (``upstream_tls``); its connections are pooled apart from plain ones, and apart
from those made with other TLS settings. A request that asks for a protocol upgrade
(WebSocket) and gets ``101`` becomes a two-way byte tunnel. A response whose status the
route's ``custom-http-errors`` lists is not relayed: the route's error backend is asked
for the page instead (``_error_page``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import trio

from fastroute._http import (
    ChunkedError,
    ChunkedScanner,
    RequestHead,
    ResponseHead,
    parse_response,
)
from fastroute.errors import (
    BadGatewayError,
    GatewayTimeoutError,
    ProxyError,
    ServiceUnavailableError,
)
from fastroute.ingress.model import Endpoint, UpstreamTLS
from fastroute.proxy.balancer import IDEMPOTENT_METHODS, Balancer, may_retry
from fastroute.proxy.channel import Channel, TLSChannel, UpstreamChannel, connect, connect_tls
from fastroute.proxy.choosing import Chooser
from fastroute.proxy.decide import ADD_HEADER_STATUSES, NO_FIELDS
from fastroute.proxy.error_pages import error_request
from fastroute.proxy.headers import response_headers
from fastroute.proxy.memo import ByIdentity
from fastroute.proxy.pool import Pool
from fastroute.proxy.state import CONNECTION_FAILURES, ClientGoneError, Phase, ProxyState
from fastroute.proxy.upstream_tls import UpstreamContexts, check_peer, server_hostname

if TYPE_CHECKING:
    from fastroute.ingress.model import Policy
    from fastroute.proxy.decide import Forward

__all__ = ["ClientSide", "Forwarder", "PlainRequest", "RequestBodyStart", "Upstream"]

log = logging.getLogger("fastroute.proxy")


class _UpstreamFailedError(Exception):
    """The exchange with an upstream failed before its response head arrived.

    ``condition`` is the proxy-next-upstream condition it meets: "error" for a connection
    that broke or closed, "invalid_header" for a response that is not valid HTTP.
    """

    def __init__(self, reason: str, condition: str = "error") -> None:
        super().__init__(reason)
        self.condition = condition


class _UpstreamTimedOutError(Exception):
    """An upstream sent no response head within the read timeout, and another may be asked."""


# ingress-nginx's proxy-next-upstream default: another endpoint after a connection error
# or a timeout (to connect, or waiting for the response head)
DEFAULT_NEXT_UPSTREAM = frozenset({"error", "timeout"})
# When a response head that is late may go to the next endpoint, a timer in the exchange
# ends the wait; the watchdog's deadline is this much later, as a backstop only.
BACKSTOP = 1.0


class Timeouts(NamedTuple):
    """One route's upstream timeouts, in seconds."""

    connect: float  # to connect (the next endpoint is tried)
    send: float  # between two writes of the request
    read: float  # between two reads of the response


class Upstream:
    """One connection to an endpoint; ``key`` is where the pool keeps it."""

    __slots__ = ("channel", "endpoint", "key", "name", "reused")

    def __init__(self, channel: UpstreamChannel, endpoint: Endpoint, key: Hashable) -> None:
        self.channel = channel
        self.endpoint = endpoint
        self.name = str(endpoint)  # for logs and metrics: made once, not per request
        self.key = key  # the endpoint; with TLS, the endpoint and the TLS settings
        self.reused = False


class PlainRequest:
    """A plain request on its short way, sent on ``upstream``: what the rest of its
    exchange needs, and what goes to the next endpoint if that one fails it."""

    __slots__ = ("after", "attempts", "head", "outgoing", "plan", "upstream")

    def __init__(
        self,
        head: RequestHead,
        outgoing: bytes,
        plan: Forward,
        after: bytes,
        attempts: list[Endpoint],
        upstream: Upstream,
    ) -> None:
        self.head = head
        self.outgoing = outgoing  # its head as sent upstream
        self.plan = plan
        self.after = after  # what followed it on the client connection
        self.attempts = attempts  # the endpoints to try, ``upstream``'s first
        self.upstream = upstream


class RequestBodyStart(Protocol):
    """A request body as far as the client side took it before an upstream was chosen."""

    @property
    def buffered(self) -> bytes:
        """The start of the body (all of it if ``complete``), not yet sent."""

    @property
    def complete(self) -> bool:
        """``buffered`` is the whole body: it can be sent again to another endpoint."""

    @property
    def rest(self) -> bytes:
        """What followed the body on the client connection, once the body is all read."""


class ClientSide(Protocol):
    """The client side of one forwarded request, as the upstream side needs it.

    ``send`` and ``read_body`` raise ``ClientGoneError`` when the client is gone.
    """

    phase: Phase  # what a passed deadline means (the watchdog reads it)
    responded: bool  # a response head went out for the request
    upstream: Upstream | None  # the upstream connection in use, closed if the client goes
    service: str  # the backend's name, for metrics
    channel: Channel  # the client's byte stream: an upgraded request tunnels over it
    now: Callable[[], float]  # trio's clock, read directly (trio.current_time() costs more)
    started: float  # when the request's head was in, on that clock

    def deadline(self, phase: Phase, seconds: float) -> None:
        """Enter ``phase``, which ends after ``seconds``."""

    async def send(self, data: bytes) -> None:
        """Send ``data`` to the client."""

    async def read_body(self) -> bytes:
        """The next piece of request body to send upstream; b"" once it is all read."""

    def finished(self, status: int, upstream: str) -> None:
        """The response (``status``, from ``upstream``) went out: count and log it."""


class Forwarder:
    """Forwards requests to the endpoints of a backend, for every front end of one proxy."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self.limits = state.limits
        self.balancer = Balancer()
        self.chooser = Chooser(self.balancer)
        self.pool: Pool[Upstream] = Pool(max_idle=320)
        self.tls_contexts = UpstreamContexts()
        self._route_timeouts = ByIdentity(self._timeouts_of, size=4096)
        # the proxy's own, which a plain route has
        self.plain_timeouts = Timeouts(
            self.limits.connect_timeout, self.limits.upstream_timeout, self.limits.upstream_timeout
        )

    async def forward(
        self,
        client: ClientSide,
        head: RequestHead,
        outgoing: bytes,
        plan: Forward,
        body: RequestBodyStart | None,
        after: bytes,
        *,
        attempts: list[Endpoint] | None = None,
        pooled: bool = True,
        last_error: ProxyError | None = None,
    ) -> bytes | None:
        """Send the request to an endpoint of the plan's backend and its response to the
        client, under the route's timeouts and retry rules.

        ``outgoing`` is the head to send, ``body`` the start of the request body (None:
        the request has none), ``after`` what followed the head on the client connection.
        Returns what follows the request on the client connection, or None to close.
        Raises the ProxyError the client is to be answered with when no endpoint answered.

        ``forward_plain`` goes on here where its one attempt ended: with the endpoints
        left to try (``attempts``), whether the first may be a pooled connection, and
        the error the client gets if none answers.
        """
        backend = plan.route.backend
        policy = plan.route.policy
        timeouts = self._timeouts(policy)
        if attempts is None:
            # the balancer's failure windows last seconds: the request's start is enough
            attempts = self.balancer.attempts(backend, now=client.started)
        rules = DEFAULT_NEXT_UPSTREAM
        give_up = math.inf
        tls: UpstreamTLS | None = None
        ewma = False  # load-balance: ewma measures each exchange
        if not policy.plain:
            tls = policy.upstream_tls
            if policy.next_upstream is not None:
                rules = policy.next_upstream
            if plan.choice is not None or policy.load_balance == "ewma":
                now = trio.current_time()
                attempts = self.chooser.attempts(plan.route, plan.choice, attempts, now)
                ewma = plan.choice is None
            if policy.next_upstream_tries:
                del attempts[policy.next_upstream_tries :]
            if policy.next_upstream_timeout:
                give_up = trio.current_time() + policy.next_upstream_timeout
        replayable = body is None or body.complete
        resendable = replayable and (head.method in IDEMPOTENT_METHODS or "non_idempotent" in rules)
        # an HTTP/1.0 route sends one request per connection: never a pooled one
        poolable = policy.plain or policy.proxy_http_version != "1.0"
        pooled = pooled and poolable  # False: a pooled connection just failed; a new one
        while attempts:
            endpoint = attempts[0]
            try:
                upstream = await self._checkout(
                    endpoint, tls, pooled=pooled, client=client, timeouts=timeouts
                )
            except ProxyError as error:
                last_error = error
                kind = "timeout" if isinstance(error, GatewayTimeoutError) else "error"
                if kind not in rules or trio.current_time() >= give_up:
                    break
                attempts.pop(0)  # nothing was sent: the next endpoint may take it
                continue
            client.upstream = upstream
            # nginx's "timeout" covers a response head that is late: only then (and only
            # with an endpoint left to ask) does the exchange time its own wait
            timed = resendable and "timeout" in rules and len(attempts) > 1
            try:
                if ewma:  # load-balance: ewma times each exchange
                    with self.chooser.ewma.measuring(endpoint, trio.current_time):
                        response, received, rest = await self._exchange(
                            client, upstream, outgoing, head, body, after, timeouts, timed
                        )
                else:
                    response, received, rest = await self._exchange(
                        client, upstream, outgoing, head, body, after, timeouts, timed
                    )
            except _UpstreamTimedOutError:
                last_error = self._read_timed_out(client, upstream, timeouts)
                if trio.current_time() >= give_up:
                    break
                attempts.pop(0)
                pooled = poolable
                continue
            except _UpstreamFailedError as failure:
                upstream.channel.close()
                client.upstream = None
                if upstream.reused and may_retry(
                    head.method, request_sent=True, body_replayable=replayable
                ):
                    # the upstream closed it while it sat idle: not the endpoint's fault
                    pooled = False
                    continue
                reason = str(failure.__cause__ or failure) or "connection closed"
                self.balancer.failed(endpoint, now=trio.current_time(), reason=reason)
                self.state.upstream_error(client.service, endpoint, "broken")
                last_error = BadGatewayError(f"{endpoint}: {reason}")
                retry = failure.condition in rules and may_retry(
                    b"GET" if "non_idempotent" in rules else head.method,
                    request_sent=True,
                    body_replayable=replayable,
                )
                if not retry or trio.current_time() >= give_up:
                    break
                attempts.pop(0)
                pooled = poolable
                continue
            if response.status == 101 and head.upgrade is None:
                last_error = self._unasked_upgrade(client, upstream)
                break
            if (
                len(attempts) > 1
                and rules is not DEFAULT_NEXT_UPSTREAM  # which names no status
                and f"http_{response.status}" in rules
                and resendable
                and trio.current_time() < give_up
            ):
                # proxy-next-upstream http_5xx: this answer is not passed on, the next
                # endpoint is asked instead
                upstream.channel.close()
                client.upstream = None
                self.state.upstream_error(client.service, endpoint, f"http_{response.status}")
                attempts.pop(0)
                continue
            self.balancer.succeeded(endpoint)
            if (
                not policy.plain
                and response.status in policy.custom_http_errors
                and plan.route.error_backend is not None
            ):
                self._discard(upstream, response, received)
                client.upstream = None
                return await self._error_page(client, head, response.status, rest, plan, timeouts)
            if plan.choice is not None and policy.affinity is not None:
                plan = self._with_cookie(plan, endpoint)
            following = await self._relay(
                client, upstream, head, response, received, rest, plan, timeouts
            )
            client.finished(response.status, upstream.name)
            return following
        if last_error is None:  # decide saw endpoints: they went away since
            last_error = ServiceUnavailableError(backend.problem or "no endpoints")
        raise last_error

    async def forward_plain(
        self, client: ClientSide, head: RequestHead, outgoing: bytes, plan: Forward, after: bytes
    ) -> bytes | None:
        """``forward`` for the commonest request, in one frame: a plain route's, with no
        request body and no upgrade.

        The request goes on an idle pooled connection to the first endpoint, and an answer
        whose head and body came whole in the first read goes back to the client from
        here. Anything else continues in ``forward`` (no idle connection, a connection that
        failed, a late answer, a body still to read), from where this attempt ended, so
        the rules are the same.
        """
        attempts, upstream = self.plain_upstream(client, head, plan)
        if upstream is None:
            return await self.forward(client, head, outgoing, plan, None, after, attempts=attempts)
        request = PlainRequest(head, outgoing, plan, after, attempts, upstream)
        return await self.plain_exchange(client, request, unsent=outgoing)

    def plain_upstream(
        self, client: ClientSide, head: RequestHead, plan: Forward
    ) -> tuple[list[Endpoint], Upstream | None]:
        """The endpoints a plain request may go to, best first, and the idle pooled
        connection to the first that it goes the short way on, taken (None: it goes
        ``forward``'s way, to these endpoints). Its phase is the upstream's from here."""
        started = client.started
        attempts = self.balancer.attempts(plan.route.backend, now=started)
        if not attempts or head.upgrade is not None or head.method not in IDEMPOTENT_METHODS:
            return attempts, None
        upstream = self._idle(attempts[0], started)
        if upstream is not None:
            client.upstream = upstream
            # one deadline for the send and the wait: a plain route's send and read timeouts
            # are both the proxy's upstream timeout, and a head sent on an idle connection
            # does not wait for room; with another endpoint to ask, the exchange times the
            # wait itself and the watchdog's deadline is the backstop
            backstop = BACKSTOP if len(attempts) > 1 else 0.0
            client.deadline(Phase.UPSTREAM, self.plain_timeouts.read + backstop)
        return attempts, upstream

    async def plain_exchange(
        self, client: ClientSide, request: PlainRequest, *, unsent: bytes = b"", data: bytes = b""
    ) -> bytes | None:
        """``forward_plain`` from the connection ``plain_upstream`` took: ``unsent`` is
        what of the request's head has not gone yet, ``data`` what of the answer came
        (b"": nothing yet). The plain loop goes on here with a request that left its
        short way."""
        head, plan, after, attempts = request.head, request.plan, request.after, request.attempts
        upstream = request.upstream
        channel = upstream.channel
        timeouts = self.plain_timeouts
        timed = len(attempts) > 1  # a late answer goes to the next endpoint: timed here
        try:
            if unsent:
                sent = channel.send_some(unsent)
                if sent < len(unsent):
                    await channel.send(unsent[sent:])
            if not data:
                if timed:
                    data = await _timed_read(client, channel.recv_reply, timeouts.read)
                else:
                    data = await channel.recv_reply()
            response = parse_response(data, self.limits.max_head_bytes, head.method == b"HEAD")
            if response is not None and (response.status >= 200 or response.status == 101):
                received = data[response.size :]  # a final head, whole, as in ``_exchange``
            else:
                response, received = await self._rest_of_head(
                    client, channel, head, data, timeouts, timed
                )
        except (*CONNECTION_FAILURES, BadGatewayError, _UpstreamFailedError):
            # an idle connection the upstream closed, or one that went bad: the request is
            # idempotent and has no body, so it goes again on a new connection
            channel.close()
            client.upstream = None
            return await self.forward(
                client, head, request.outgoing, plan, None, after, attempts=attempts, pooled=False
            )
        except _UpstreamTimedOutError:
            return await self.plain_timed_out(client, request)
        status = response.status
        if status == 101:  # a switch nobody asked for
            raise self._unasked_upgrade(client, upstream)
        self.balancer.succeeded(upstream.endpoint)
        if plan.fields is NO_FIELDS and response.complete_with(received):  # no HSTS to add
            # the whole answer is here: the client gets it, the connection goes back
            answer, close = self.plain_answer(client, head, response, received)
            return await self.plain_send(client, upstream, answer, status, None if close else after)
        following = await self._relay(
            client, upstream, head, response, received, after, plan, timeouts
        )
        client.finished(status, upstream.name)
        return following

    async def plain_timed_out(self, client: ClientSide, request: PlainRequest) -> bytes | None:
        """A plain request's first endpoint sent no answer in time: the next is asked."""
        error = self._read_timed_out(client, request.upstream, self.plain_timeouts)
        attempts = request.attempts
        del attempts[0]
        return await self.forward(
            client,
            request.head,
            request.outgoing,
            request.plan,
            None,
            request.after,
            attempts=attempts,
            last_error=error,
        )

    def plain_answer(
        self, client: ClientSide, head: RequestHead, response: ResponseHead, received: bytes
    ) -> tuple[bytes, bool]:
        """What the client is sent of a plain answer that came whole (``received``: its
        body), and whether its connection closes after it. The response phase begins."""
        close = self.state.closes_after(head.keep_alive)
        client.responded = True
        client.phase = Phase.RESPONSE
        return response.client_head(close) + received, close

    async def plain_send(
        self,
        client: ClientSide,
        upstream: Upstream,
        answer: bytes,
        status: int,
        after: bytes | None,
    ) -> bytes | None:
        """Send ``answer``, a whole plain answer (what of it has not gone yet), then give
        its connection back to the pool; ``after`` is returned (None: close)."""
        try:
            sent = client.channel.send_some(answer)
            if sent < len(answer):
                await client.channel.send(answer[sent:])
        except CONNECTION_FAILURES:
            client.upstream = None
            upstream.channel.close()
            raise ClientGoneError() from None
        return self.plain_done(client, upstream, status, after)

    def plain_done(
        self, client: ClientSide, upstream: Upstream, status: int, after: bytes | None
    ) -> bytes | None:
        """A whole plain answer went out: its connection goes back to the pool, the
        request is counted; ``after`` is returned (None: the client connection closes)."""
        client.upstream = None
        for old in self.pool.give(upstream.key, upstream, now=client.now()):
            old.channel.close()
        client.finished(status, upstream.name)
        return after

    def _read_timed_out(
        self, client: ClientSide, upstream: Upstream, timeouts: Timeouts
    ) -> GatewayTimeoutError:
        """An upstream's answer was later than the read timeout: its connection is closed,
        the endpoint counted unwell; the error for the client if no other endpoint answers."""
        upstream.channel.close()
        client.upstream = None
        endpoint = upstream.endpoint
        self.balancer.failed(endpoint, now=trio.current_time(), reason="read timed out")
        self.state.upstream_error(client.service, endpoint, "timeout")
        return GatewayTimeoutError(f"{endpoint} sent no response for {timeouts.read:g} s")

    def _unasked_upgrade(self, client: ClientSide, upstream: Upstream) -> BadGatewayError:
        """An upstream answered 101 to a request that asked for no upgrade: the rest of the
        connection would be a tunnel past routing (or out of step), so it is closed and
        the client gets a 502."""
        upstream.channel.close()
        client.upstream = None
        self.state.upstream_error(client.service, upstream.endpoint, "unasked-upgrade")
        return BadGatewayError(f"{upstream.endpoint} switched protocols unasked")

    def _with_cookie(self, plan: Forward, endpoint: Endpoint) -> Forward:
        """The plan with the affinity cookie's Set-Cookie on the response, when one is due."""
        line = self.chooser.answered(plan.route, plan.choice, endpoint, time.time())
        if not line:
            return plan
        fields = plan.fields
        fields = dataclasses.replace(fields, client_lines=fields.client_lines + line)
        return dataclasses.replace(plan, fields=fields)

    def _discard(self, upstream: Upstream, response: ResponseHead, received: bytes) -> None:
        """Drop a response the client is not to get: its connection goes back to the pool
        when the whole response is already here, else it is closed (no body is read)."""
        whole = (
            response.keep_alive
            and not response.until_close
            and (
                not received
                if response.bodyless
                else not response.chunked and response.content_length == len(received)
            )
        )
        if whole:
            for old in self.pool.give(upstream.key, upstream, now=trio.current_time()):
                old.channel.close()
        else:
            upstream.channel.close()

    async def _error_page(
        self,
        client: ClientSide,
        head: RequestHead,
        code: int,
        rest: bytes,
        plan: Forward,
        timeouts: Timeouts,
    ) -> bytes | None:
        """``custom-http-errors``: the route's error backend answers instead of its upstream.

        As ingress-nginx's ``error_page CODE = @custom_...`` does, the client gets the
        error backend's response, status and all (with the route's response fields),
        asked for with ``error_pages.error_request``. Each endpoint of the error backend is
        tried once; when none answers, the client gets what a route whose backend fails
        gets (502, 504 for a timeout; 503 with no endpoints), as from nginx: the
        discarded response is gone.
        """
        route = plan.route
        error_backend = route.error_backend
        assert error_backend is not None
        outgoing = error_request(
            route,
            code,
            method=head.method,
            host=plan.host,
            original_uri=head.target,
            accept=head.header(b"accept"),
            request_id=head.header(b"x-request-id"),
        )
        last_error: ProxyError = ServiceUnavailableError(
            error_backend.problem or f"error backend {error_backend.name} has no endpoints"
        )
        attempts = self.balancer.attempts(error_backend, now=trio.current_time())
        pooled = True  # False: a pooled connection just failed; the next one is new
        while attempts:
            endpoint = attempts[0]
            try:
                upstream = await self._checkout(
                    endpoint, None, pooled=pooled, client=client, timeouts=timeouts
                )
            except ProxyError as error:
                last_error = error
                attempts.pop(0)
                continue
            client.upstream = upstream
            try:
                response, received, _ = await self._exchange(
                    client, upstream, outgoing, head, None, b"", timeouts, False
                )
            except _UpstreamFailedError as failure:
                upstream.channel.close()
                client.upstream = None
                if upstream.reused:  # closed while it sat idle: not the endpoint's fault
                    pooled = False
                    continue
                attempts.pop(0)
                pooled = True
                reason = str(failure.__cause__ or failure) or "connection closed"
                self.balancer.failed(endpoint, now=trio.current_time(), reason=reason)
                self.state.upstream_error(client.service, endpoint, "broken")
                last_error = BadGatewayError(f"error backend {endpoint}: {reason}")
                continue
            if response.status == 101:  # nothing asked for a switch: see forward
                upstream.channel.close()
                client.upstream = None
                last_error = BadGatewayError(f"error backend {endpoint} switched protocols")
                attempts.pop(0)
                continue
            self.balancer.succeeded(endpoint)
            following = await self._relay(
                client, upstream, head, response, received, rest, plan, timeouts
            )
            client.finished(response.status, upstream.name)
            return following
        raise last_error

    def _timeouts(self, policy: Policy) -> Timeouts:
        """The route's connect, send and read timeouts: its own, else the proxy's."""
        if policy.plain:
            return self.plain_timeouts
        return self._route_timeouts(policy)

    def _timeouts_of(self, policy: Policy) -> Timeouts:
        """``_timeouts`` for a route with a policy, worked out once per policy."""
        limits = self.limits
        timeouts = Timeouts(
            policy.connect_timeout or limits.connect_timeout,
            policy.send_timeout or limits.upstream_timeout,
            policy.read_timeout or limits.upstream_timeout,
        )
        self.state.shortest_timeout(min(timeouts))
        return timeouts

    async def _checkout(
        self,
        endpoint: Endpoint,
        tls: UpstreamTLS | None,
        *,
        pooled: bool,
        client: ClientSide,
        timeouts: Timeouts,
    ) -> Upstream:
        """An idle pooled connection to ``endpoint`` (if ``pooled``), or a new one.

        A pooled connection that received anything while idle (bytes nobody asked for, or
        the upstream's close) is closed, never used: a late or extra response left on it
        would become the next client's answer, and every answer after it off by one.
        """
        key: Hashable = endpoint if tls is None else (endpoint, tls)
        if pooled:
            upstream = self._idle(key, client.started)
            if upstream is not None:
                return upstream
        # connecting is the upstream's time: a slow connect is a 504, never a 408
        client.deadline(Phase.UPSTREAM, timeouts.connect + timeouts.read)
        with trio.move_on_after(timeouts.connect):
            try:
                channel: UpstreamChannel
                if tls is None:
                    channel = await connect(endpoint.address, endpoint.port)
                else:
                    channel = await self._connect_tls(endpoint, tls)
            except OSError as error:
                self.balancer.failed(endpoint, now=trio.current_time(), reason=f"connect: {error}")
                self.state.upstream_error(client.service, endpoint, "connect")
                raise BadGatewayError(f"connect to {endpoint}: {error}") from None
            return Upstream(channel, endpoint, key)
        self.balancer.failed(endpoint, now=trio.current_time(), reason="connect timed out")
        self.state.upstream_error(client.service, endpoint, "connect")
        # ingress-nginx answers a connect timeout 504 (after trying the next endpoint)
        raise GatewayTimeoutError(f"connect to {endpoint} timed out")

    def _idle(self, key: Hashable, now: float) -> Upstream | None:
        """An idle pooled connection for ``key`` that received nothing while idle, if any.

        ``now`` is the request's start: a retry's idle connections look younger by what it
        waited, and the poll before reuse sees an upstream's close all the same.
        """
        while True:
            upstream, expired = self.pool.take(key, now=now)
            for old in expired:
                old.channel.close()
            if upstream is None:
                return None
            if upstream.channel.stale():
                upstream.channel.close()
                continue
            upstream.reused = True
            return upstream

    async def _connect_tls(self, endpoint: Endpoint, tls: UpstreamTLS) -> TLSChannel:
        """A TLS connection to ``endpoint``, its certificate checked as ``tls`` says.

        Raises:
            OSError: connecting or the handshake failed, or the certificate was refused.
        """
        try:
            context = await self.tls_contexts.context(tls)
        except ValueError as error:
            raise OSError(f"backend TLS settings unusable: {error}") from None
        return await connect_tls(
            endpoint.address,
            endpoint.port,
            context,
            server_hostname(tls, endpoint),
            lambda stream: check_peer(stream, tls, endpoint),
        )

    async def _exchange(
        self,
        client: ClientSide,
        upstream: Upstream,
        outgoing: bytes,
        head: RequestHead,
        body: RequestBodyStart | None,
        after: bytes,
        timeouts: Timeouts,
        timed: bool,
    ) -> tuple[ResponseHead, bytes, bytes]:
        """Send the request and read the response head.

        ``body`` is the request body as far as taken (None: the request has none), and
        ``after`` what followed the head on the client connection. Returns the response
        head, what the upstream sent after it, and what follows the request on the client
        connection. Raises _UpstreamFailedError when the upstream connection fails before
        the response head arrived, and (if ``timed``) _UpstreamTimedOutError when the
        head is later than the read timeout.
        """
        channel = upstream.channel
        limits = self.limits
        try:
            client.deadline(Phase.UPSTREAM, timeouts.send)
            if body is None:
                rest = after
                await channel.send(outgoing)
            else:
                await channel.send(outgoing + body.buffered if body.buffered else outgoing)
                if not body.complete:
                    while data := await client.read_body():
                        client.deadline(Phase.UPSTREAM, timeouts.send)
                        await channel.send(data)
                rest = body.rest
            if timed:
                data = await _timed_read(client, channel.recv_reply, timeouts.read)
            else:  # the common case: the watchdog times it, no timer of its own
                client.deadline(Phase.UPSTREAM, timeouts.read)
                data = await channel.recv_reply()
            response = parse_response(data, limits.max_head_bytes, head.method == b"HEAD")
            if response is not None and (response.status >= 200 or response.status == 101):
                received = data[response.size :]  # the common case: a final head, whole
            else:
                response, received = await self._rest_of_head(
                    client, channel, head, data, timeouts, timed
                )
        except CONNECTION_FAILURES as error:
            raise _UpstreamFailedError(str(error) or type(error).__name__) from error
        except BadGatewayError as error:
            raise _UpstreamFailedError(error.detail, "invalid_header") from error
        return response, received, rest

    async def _rest_of_head(
        self,
        client: ClientSide,
        channel: UpstreamChannel,
        head: RequestHead,
        received: bytes,
        timeouts: Timeouts,
        timed: bool,
    ) -> tuple[ResponseHead, bytes]:
        """The final response head, when the first read (``received``: b"" for a close)
        did not hold it whole: more is read, and 1xx interim responses are skipped.
        Returns it and what the upstream sent after it.
        """
        data = received
        while True:
            response = parse_response(received, self.limits.max_head_bytes, head.method == b"HEAD")
            if response is None:
                if not data:
                    raise _UpstreamFailedError("closed before a response")
                if timed:
                    data = await _timed_read(client, channel.recv, timeouts.read)
                else:
                    client.deadline(Phase.UPSTREAM, timeouts.read)
                    data = await channel.recv()
                received += data
                continue
            received = received[response.size :]
            if response.status >= 200 or response.status == 101:
                return response, received

    async def _relay(
        self,
        client: ClientSide,
        upstream: Upstream,
        head: RequestHead,
        response: ResponseHead,
        received: bytes,
        rest: bytes,
        plan: Forward,
        timeouts: Timeouts,
    ) -> bytes | None:
        """Send the response to the client, with the plan's fields; ``rest`` back, or
        None to close."""
        client_gone = False
        upgraded = response.status == 101 and head.upgrade is not None
        close = (
            self.state.closes_after(head.keep_alive)
            or response.until_close
            or (head.version == 10 and response.chunked)
        )
        dechunk = head.version == 10 and response.chunked
        fields = plan.fields
        if dechunk or fields is not NO_FIELDS:
            lines = fields.client_lines
            if fields.success_lines and response.status in ADD_HEADER_STATUSES:
                lines += fields.success_lines  # an auth cookie (auth-always-set-cookie unset)
            if dechunk:
                out = _unchunked_head(response, lines, fields.client_drop)
            else:
                out = response.client_head(close, lines, fields.client_drop)
        else:
            out = response.client_head(close)
        read = timeouts.read
        client.responded = True
        client.phase = Phase.RESPONSE
        channel = upstream.channel
        reusable = response.keep_alive and not response.until_close
        try:
            if upgraded:
                await client.send(out + received)
                client.upstream = None
                await _tunnel(client, channel, rest, read)
                channel.close()
                return None
            if response.bodyless:
                await client.send(out)
                reusable = reusable and not received
            elif response.chunked:
                scanner = ChunkedScanner()
                reusable = await self._relay_chunked(
                    client, channel, scanner, out, received, dechunk, read
                )
            elif response.content_length >= 0:
                reusable = await self._relay_length(
                    client, channel, response.content_length, out, received, read
                )
            else:
                await client.send(out + received)
                while True:
                    client.deadline(Phase.RESPONSE, read)
                    data = await channel.recv()
                    if not data:
                        break
                    await client.send(data)
                reusable = False
        except ClientGoneError:
            client_gone = True
            reusable = False
        except BadGatewayError:
            # nothing of the response reached the client yet: it gets a 502 instead
            client.responded = False
            client.upstream = None
            channel.close()
            self.state.upstream_error(client.service, upstream.endpoint, "broken")
            raise
        except (*CONNECTION_FAILURES, ChunkedError) as error:
            log.info("%s failed mid-response: %s", upstream.endpoint, error)
            self.state.upstream_error(client.service, upstream.endpoint, "broken")
            client_gone = True  # the client sees the response cut off rather than a wrong one
            reusable = False
        client.upstream = None
        policy = plan.route.policy
        if reusable and (policy.plain or policy.proxy_http_version != "1.0"):
            for old in self.pool.give(upstream.key, upstream, now=client.now()):
                old.channel.close()
        else:
            channel.close()
        if client_gone:
            raise ClientGoneError()
        return None if close else rest

    async def _relay_length(
        self,
        client: ClientSide,
        upstream: UpstreamChannel,
        remaining: int,
        out: bytes,
        received: bytes,
        read: float,
    ) -> bool:
        """Relay a Content-Length body; whether the upstream connection can be reused."""
        first = received[:remaining]
        await client.send(out + first)
        remaining -= len(first)
        extra = len(received) > len(first)
        while remaining:
            client.deadline(Phase.RESPONSE, read)
            data = await upstream.recv()
            if not data:
                raise trio.BrokenResourceError("upstream closed mid-body")
            if len(data) > remaining:
                data = data[:remaining]
                extra = True
            await client.send(data)
            remaining -= len(data)
        return not extra

    async def _relay_chunked(
        self,
        client: ClientSide,
        upstream: UpstreamChannel,
        scanner: ChunkedScanner,
        out: bytes,
        received: bytes,
        dechunk: bool,
        read: float,
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
                await client.send(out + payload if out else payload)
            out = b""
            if scanner.done:
                return end == len(data)
            client.deadline(Phase.RESPONSE, read)
            data = await upstream.recv()
            if not data:
                raise trio.BrokenResourceError("upstream closed mid-body")


async def _timed_read(
    client: ClientSide, read: Callable[[], Awaitable[bytes]], seconds: float
) -> bytes:
    """The next bytes of a response head, within ``seconds``, or _UpstreamTimedOutError, so
    the next endpoint can be asked. (Untimed, the watchdog ends a wait past the deadline:
    a 504.)
    """
    client.deadline(Phase.UPSTREAM, seconds + BACKSTOP)
    with trio.move_on_after(seconds):
        return await read()
    raise _UpstreamTimedOutError()


async def _tunnel(
    client: ClientSide, upstream: UpstreamChannel, first: bytes, idle_timeout: float
) -> None:
    """Copy bytes both ways until either side closes (an upgraded connection).

    Like nginx's proxy timeouts on a WebSocket, the tunnel closes after ``idle_timeout``
    seconds with nothing sent either way.
    """

    async def pump(source: Channel, sink: Channel, nursery: trio.Nursery) -> None:
        try:
            while data := await source.recv():
                client.deadline(Phase.RESPONSE, idle_timeout)
                await sink.send(data)
        except CONNECTION_FAILURES:
            pass
        nursery.cancel_scope.cancel()

    client.deadline(Phase.RESPONSE, idle_timeout)
    if first:
        await upstream.send(first)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, client.channel, upstream, nursery)
        nursery.start_soon(pump, upstream, client.channel, nursery)


def _unchunked_head(response: ResponseHead, extra: bytes, drop: frozenset[bytes] | None) -> bytes:
    """The head for an HTTP/1.0 client of a chunked response: decoded, ended by a close."""
    lines = [b"HTTP/1.1 %d %s" % (response.status, response.reason)]
    lines += [
        name + b": " + value
        for name, value in response_headers(response.headers)
        if drop is None or name not in drop
    ]
    return b"\r\n".join([*lines, b"Connection: close", b""]) + extra + b"\r\n"
