"""One task that serves the plain requests of every client connection between requests.

A trio task per connection costs two scheduler turns per request (the wait for the
request, the wait for its answer), about as much as the rest of a plain request's work put
together; trio also runs each turn's tasks in a random order, which widens the latency
tail under load. So a plain TCP connection waiting for its next
request is carried by the ``PlainLoop`` instead: one task, waiting on an epoll of its own
(each socket registered once, edge-triggered), that serves the ready connections in the
order the kernel reports them, nginx's way.

It serves only what ``Forwarder.forward_plain`` serves the short way: a plain route's
request with no body, sent on an idle pooled connection, answered whole in one read.
Anything else goes back to the connection's own task where the loop left it, through
the same code the task would have run (``Forwarder.plain_exchange``, ``forward``...), or
as the bytes the task goes on with. The loop keeps the connection's phase, deadline and
upstream connection as the task keeps them, so the watchdog, ``drain`` and the timeout
answers work unchanged: a cancelled connection just leaves the loop.

epoll is Linux's: elsewhere (``AVAILABLE`` is False) every connection keeps its task.
"""

from __future__ import annotations

import logging
import select
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import outcome
import trio
from trio.lowlevel import (
    Abort,
    Task,
    current_task,
    reschedule,
    wait_readable,
    wait_task_rescheduled,
)

from fastroute._http import RequestHead, parse_request, parse_response
from fastroute.errors import ProxyError
from fastroute.proxy.channel import READ_SIZE, SocketChannel
from fastroute.proxy.decide import NO_FIELDS
from fastroute.proxy.forwarding import PlainRequest
from fastroute.proxy.state import CONNECTION_FAILURES, Phase

if TYPE_CHECKING:
    import socket

    from fastroute.proxy.forwarding import Forwarder
    from fastroute.proxy.http1 import Connection
    from fastroute.proxy.plain_plans import PlainPlans
    from fastroute.proxy.state import ProxyState

__all__ = ["AVAILABLE", "Carried", "PlainLoop"]

log = logging.getLogger("fastroute.proxy")

# what a connection's task goes on with: None (close), or the bytes the client sent next
# and their head when it was parsed (None: the task parses them)
Carried = tuple[bytes, RequestHead | None] | None
# the rest of a request that left the short way, run by its connection's task
Resume = Callable[[], Awaitable[bytes | None]]

AVAILABLE = hasattr(select, "epoll")
if AVAILABLE:
    _CLIENT = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    _UPSTREAM = select.EPOLLIN | select.EPOLLET
    _CLOSING = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR


class _Guest:
    """A connection the loop carries: its task waits until the loop hands it back."""

    __slots__ = (
        "connection",
        "expires",
        "fd",
        "request",
        "scheme",
        "sock",
        "spoke",
        "task",
        "upstream_fd",
    )

    def __init__(
        self, connection: Connection, sock: socket.socket, task: Task, scheme: str
    ) -> None:
        self.connection = connection
        self.sock = sock
        self.fd = sock.fileno()
        self.task = task
        self.scheme = scheme
        self.request: PlainRequest | None = None  # the request upstream, if any
        self.upstream_fd = -1
        self.expires = 0.0  # when its answer is late, if the loop times it
        self.spoke = False  # the client sent something while its request was upstream


class PlainLoop:
    """Serves, from one task (``run``), the plain requests of the connections it carries."""

    def __init__(self, state: ProxyState, forwarder: Forwarder, plain_plans: PlainPlans) -> None:
        self.state = state
        self.forwarder = forwarder
        self.plain_plans = plain_plans
        self.max_head_bytes = state.limits.max_head_bytes
        self._epoll = select.epoll()
        # the carried connections, by their client socket's fd, and again by the fd of the
        # upstream connection their request waits on
        self._guests: dict[int, _Guest] = {}
        # the requests whose answers the loop times (another endpoint to ask), oldest
        # first: all wait the same read timeout, so the first is the first to expire
        self._timed: OrderedDict[PlainRequest, _Guest] = OrderedDict()
        self._told = 0.0  # the keep-alive timeout the watchdog was last told of
        self.requests = 0  # requests taken the short way, served or handed on since

    def __len__(self) -> int:
        """How many connections the loop carries (counted: for tests and debugging)."""
        return sum(fd == guest.fd for fd, guest in self._guests.items())

    # ------------------------------------------------------------------ the task's side

    async def carry(self, connection: Connection, scheme: str) -> Carried:
        """Carry ``connection``, idle and with nothing of its next request read, until a
        request leaves the short way or the connection is to close; what its task goes
        on with then (``Carried``). A request the loop began is finished here first."""
        channel = connection.channel
        assert isinstance(channel, SocketChannel)
        guest = _Guest(connection, channel.sock, current_task(), scheme)
        try:
            # re-armed: bytes that came while the task had the connection are reported
            self._epoll.modify(guest.fd, _CLIENT)
        except FileNotFoundError:
            self._epoll.register(guest.fd, _CLIENT)
        self._guests[guest.fd] = guest

        def abort(_: object) -> Abort:
            self._leave(guest)  # cancelled (a deadline, drain): the task takes over as is
            return Abort.SUCCEEDED

        value = await wait_task_rescheduled(abort)
        if callable(value):
            rest = await value()
            return None if rest is None else (rest, None)
        return value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ the loop's task

    async def run(self) -> None:
        """Serve the carried connections until cancelled; they go back to their tasks."""
        epoll = self._epoll
        fileno = epoll.fileno()
        timed = self._timed
        try:
            while True:
                if timed:
                    with trio.move_on_at(timed[next(iter(timed))].expires):
                        await wait_readable(fileno)
                    self._expire()
                else:
                    await wait_readable(fileno)
                for fd, events in epoll.poll(0):
                    guest = self._guests.get(fd)
                    if guest is None:
                        continue  # a socket's task has it, or a pooled connection idles
                    try:
                        if fd == guest.fd:
                            self._client_ready(guest, events)
                        else:
                            self._answer_ready(guest)
                    except Exception as error:  # a bug costs its connection, not the loop
                        self._raise_in_task(guest, error)
        finally:
            for fd, guest in list(self._guests.items()):
                if fd == guest.fd:
                    self._hand_back(guest, (b"", None) if guest.request is None else None)
            epoll.close()

    def _client_ready(self, guest: _Guest, events: int) -> None:
        """The client sent its next request (or closed): serve it, or hand it back."""
        if guest.request is not None:
            guest.spoke = True  # read by the task, after the answer
            return
        try:
            data = guest.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._hand_back(guest, None)
            return
        connection = guest.connection
        connection.phase = Phase.HEAD
        if events & _CLOSING or len(data) == READ_SIZE:
            # a close after it, or more to read than edges say: the task reads on
            self._hand_back(guest, (data, None))
            return
        try:
            head = parse_request(data, self.max_head_bytes)
        except ProxyError:
            head = None  # the task parses it again and answers the error
        if head is None:
            self._hand_back(guest, (data, None))
            return
        kept = self.plain_plans.get(self.state.config, (head.target, head.host, guest.scheme))
        if kept is None or not kept.short or head.content_length > 0 or head.chunked:
            self._hand_back(guest, (data, head))
            return
        self.requests += 1
        connection.head = head
        outgoing = connection.go_plain(head, kept)
        plan = kept.plan
        after = data[head.size :]
        forwarder = self.forwarder
        attempts, upstream = forwarder.plain_upstream(connection, head, plan)
        if upstream is None:
            self._resume(
                guest,
                partial(
                    forwarder.forward,
                    connection,
                    head,
                    outgoing,
                    plan,
                    None,
                    after,
                    attempts=attempts,
                ),
            )
            return
        request = guest.request = PlainRequest(head, outgoing, plan, after, attempts, upstream)
        channel = upstream.channel
        sent = 0
        if isinstance(channel, SocketChannel):  # a plain route's upstream speaks no TLS
            try:
                sent = channel.send_some(outgoing)
            except CONNECTION_FAILURES:
                sent = 0  # sent again by the task: it fails there, and is retried
            if sent == len(outgoing):
                self._await_answer(guest, request, channel)
                return
        self._resume(
            guest, partial(forwarder.plain_exchange, connection, request, unsent=outgoing[sent:])
        )

    def _await_answer(self, guest: _Guest, request: PlainRequest, channel: SocketChannel) -> None:
        """``request`` went whole on ``channel``: its answer is read when the loop sees it."""
        fd = channel.sock.fileno()
        if not channel.in_loop:
            self._epoll.register(fd, _UPSTREAM)
            channel.in_loop = True
        guest.upstream_fd = fd
        self._guests[fd] = guest
        if len(request.attempts) > 1:  # a late answer goes to the next endpoint: timed here
            guest.expires = guest.connection.now() + self.forwarder.plain_timeouts.read
            self._timed[request] = guest

    def _answer_ready(self, guest: _Guest) -> None:
        """The upstream answered: a whole answer goes to the client, anything else to the
        connection's task."""
        request = guest.request
        assert request is not None
        upstream = request.upstream
        try:
            data = upstream.channel.sock.recv(READ_SIZE)
        except BlockingIOError:
            return  # an edge with nothing behind it
        except OSError:
            data = b""
        self._answered(guest, request)
        connection = guest.connection
        forwarder = self.forwarder
        head = request.head
        plan = request.plan
        response = None
        if data:
            try:
                response = parse_response(data, self.max_head_bytes, head.method == b"HEAD")
            except ProxyError:
                response = None  # parsed again by the task, which tries another connection
        received = b"" if response is None else data[response.size :]
        if (
            response is None
            or response.status < 200
            or response.status == 101
            or plan.fields is not NO_FIELDS
            or not response.complete_with(received)
        ):
            self._resume(guest, partial(forwarder.plain_exchange, connection, request, data=data))
            return
        forwarder.balancer.succeeded(upstream.endpoint)
        answer, close = forwarder.plain_answer(connection, head, response, received)
        status = response.status
        after = None if close else request.after
        try:
            sent = connection.channel.send_some(answer)
        except CONNECTION_FAILURES:
            sent = 0  # sent again by the task, which finds the client gone
        if sent < len(answer):
            self._resume(
                guest,
                partial(forwarder.plain_send, connection, upstream, answer[sent:], status, after),
            )
            return
        rest = forwarder.plain_done(connection, upstream, status, after)
        if rest is None or self.state.draining:
            self._hand_back(guest, None if rest is None else (rest, None))
        elif rest or guest.spoke:
            self._hand_back(guest, (rest, None))  # the next request, or bytes, came already
        else:
            self._between(connection)

    def _between(self, connection: Connection) -> None:
        """The connection waits for its next request, as its task would have."""
        kept_alive = self.state.keep_alive(self._told)
        if kept_alive is not None:
            idle, self._told = kept_alive
            connection.await_request(Phase.IDLE, idle)

    def _expire(self) -> None:
        """Answers later than the read timeout: the next endpoint is asked, by the task."""
        timed = self._timed
        now = trio.current_time()
        while timed:
            request = next(iter(timed))
            guest = timed[request]
            if guest.expires > now:
                return
            self._leave(guest)
            self._resume(guest, partial(self.forwarder.plain_timed_out, guest.connection, request))

    # ------------------------------------------------------------------ handing back

    def _leave(self, guest: _Guest) -> None:
        """``guest`` is no longer the loop's to serve (nor its request's answer to read)."""
        if self._guests.get(guest.fd) is guest:
            del self._guests[guest.fd]
        request = guest.request
        if request is not None:
            self._answered(guest, request)

    def _answered(self, guest: _Guest, request: PlainRequest) -> None:
        """``request``'s answer is no longer waited for here."""
        if self._guests.get(guest.upstream_fd) is guest:
            del self._guests[guest.upstream_fd]
        self._timed.pop(request, None)
        guest.request = None

    def _hand_back(self, guest: _Guest, value: Carried) -> None:
        self._leave(guest)
        reschedule(guest.task, outcome.Value(value))

    def _resume(self, guest: _Guest, rest: Resume) -> None:
        """The request goes on in the connection's task, with ``rest``."""
        self._leave(guest)
        reschedule(guest.task, outcome.Value(rest))

    def _raise_in_task(self, guest: _Guest, error: Exception) -> None:
        if self._guests.get(guest.fd) is not guest:
            log.exception("plain loop: unexpected error", exc_info=error)
            return
        self._leave(guest)
        reschedule(guest.task, outcome.Error(error))
