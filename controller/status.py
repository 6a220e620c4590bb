"""The status listener: ``/healthz``, ``/readyz`` and ``/metrics`` for Kubernetes and Prometheus.

It runs on its own port (ingress-nginx uses 10254), apart from the traffic, so probes and
scrapes never queue behind client connections or count in the request metrics.

- ``GET /healthz``: 200 ``ok`` while the event loop answers (the liveness probe).
- ``GET /readyz``: 200 when ``ready()`` says so, else 503 (the readiness probe: a proxy
  with no config yet, or draining, should get no new traffic).
- ``GET /metrics``: the Prometheus text exposition.
- ``HEAD`` of each of those; any other path 404, another method 405, a malformed request 400.

One request per connection (``Connection: close``): probes and scrapes open a connection
per request anyway, and it keeps the listener trivially bounded.

Probes must get through whatever else connects here (a probe that misses its timeout a few
times restarts the pod, or takes it out of its Service), so:

- a connection has ``HEAD_TIMEOUT`` (2 s) from its accept to send a complete request head
  (a probe sends it at once), then ``ANSWER_TIMEOUT`` for the answer (/metrics may take a
  while to render);
- up to ``MAX_CONNECTIONS`` are open at once (a task and a descriptor each), and when all
  are taken, the oldest one that has not sent a complete request is closed to make room
  for the new one, rather than the new one waiting: a flood of idle or slow connections
  costs the flood, not the probe. nginx does the same with its "reusable" connections
  (idle ones, and those that have not sent a request yet) when it runs out of them. If
  every connection is busy answering, accepting waits: answers end within their timeout;
- ``RESERVE_DESCRIPTORS`` descriptors are held open, so that at the process's descriptor
  limit (the proxy's connections took them all) a probe can still be accepted: one is
  closed for it and taken back once it is answered.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from http import HTTPStatus

import h11
import trio
from trio.lowlevel import notify_closing, wait_readable

from fastroute.proxy.listener import (
    DESCRIPTOR_ERRORS,
    AcceptBackoff,
    LogThrottle,
    ReserveDescriptors,
    listening_sockets,
)
from fastroute.proxy.metrics import CONTENT_TYPE

__all__ = ["serve_status"]

log = logging.getLogger("fastroute.status")

HEAD_TIMEOUT = 2.0  # from accept to a complete request head: a probe sends it at once
ANSWER_TIMEOUT = 10.0  # from the head to the end of the answer (rendering /metrics)
MAX_HEAD_BYTES = 8 * 1024
MAX_CONNECTIONS = 256  # open at once; then the oldest without a request gives way
RESERVE_DESCRIPTORS = 4  # probes answered at the descriptor limit, at once
TEXT = "text/plain; charset=utf-8"


async def serve_status(
    host: str,
    port: int,
    *,
    ready: Callable[[], bool],
    metrics_text: Callable[[], bytes],
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer health, readiness and metrics requests on ``host:port`` until cancelled.

    Args:
        ready: whether the proxy should get traffic; called on every ``/readyz``, so cheap.
        metrics_text: the Prometheus text exposition; called in a worker thread, since
            rendering many series (or reading worker processes' files) takes a while.
        task_status: ``started`` gets the bound port (``port=0`` picks a free one).
    """
    sockets = listening_sockets(host, port)
    reserve = ReserveDescriptors(RESERVE_DESCRIPTORS)
    connections = _Connections(MAX_CONNECTIONS)
    backoff = AcceptBackoff(log, "status listener")

    async def handle(sock: socket.socket, scope: trio.CancelScope) -> None:
        def answering() -> None:
            connections.answering(scope)
            scope.deadline = trio.current_time() + ANSWER_TIMEOUT

        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            with scope:
                await _answer(stream, ready, metrics_text, answering)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the prober went away
        except Exception:
            # a bug must cost one probe and a log line, never the listener
            log.exception("unexpected error answering a status request")
        finally:
            # closed and its descriptor taken back into the reserve with no checkpoint in
            # between (``aclose`` has one), so no other listener can take it meanwhile
            notify_closing(sock)
            sock.close()
            reserve.refill()
            connections.closed(scope)

    async def accept(sock: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await wait_readable(sock)
            reserve.refill()  # in case a refill after a close found none free
            # a connection is waiting: worth closing the oldest idle one for it
            if not connections.make_room():
                await connections.wait_for_room()
                continue
            while True:
                try:
                    client, _ = _accept(sock, reserve)
                except BlockingIOError:
                    break
                except OSError as error:
                    if backoff.retry(error):
                        continue
                    await trio.sleep(backoff.failed(error))
                    break
                backoff.succeeded()
                # counted now, not when its task starts: a burst of accepts sees the limit
                scope = trio.CancelScope(deadline=trio.current_time() + HEAD_TIMEOUT)
                connections.opened(scope)
                nursery.start_soon(handle, client, scope)
                if connections.count >= connections.limit:
                    break  # room is made only for a connection seen waiting

    try:
        async with trio.open_nursery() as nursery:
            for sock in sockets:
                nursery.start_soon(accept, sock, nursery)
            task_status.started(sockets[0].getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
        reserve.close()


def _accept(sock: socket.socket, reserve: ReserveDescriptors) -> tuple[socket.socket, object]:
    """``sock.accept()``; out of descriptors, one reserve descriptor is given up for it."""
    try:
        return sock.accept()
    except OSError as error:
        if error.errno in DESCRIPTOR_ERRORS and reserve.release():
            return sock.accept()  # the descriptor just freed: nothing ran in between
        raise


class _Connections:
    """The open status connections; those without a complete request yet, oldest first.

    ``make_room`` closes the oldest of those when the limit is reached (by cancelling its
    scope: its task closes it at once), so a new connection never waits behind idle ones.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0  # open, not counting those already told to close
        self._waiting: dict[trio.CancelScope, None] = {}  # no request yet, in accept order
        self._evicted: set[trio.CancelScope] = set()  # closing to make room: not counted
        self._room = trio.Event()
        self._evictions = LogThrottle(log, interval=60.0)

    def opened(self, scope: trio.CancelScope) -> None:
        self.count += 1
        self._waiting[scope] = None

    def answering(self, scope: trio.CancelScope) -> None:
        """The connection sent its request: it is no longer one to close for room."""
        self._waiting.pop(scope, None)

    def closed(self, scope: trio.CancelScope) -> None:
        self._waiting.pop(scope, None)
        if scope in self._evicted:
            self._evicted.discard(scope)  # no longer counted since make_room closed it
        else:
            self.count -= 1
        self._room.set()

    def make_room(self) -> bool:
        """Whether one more connection may be accepted, closing the oldest waiting one if
        that is what it takes; False when every connection is busy answering."""
        if self.count < self.limit:
            return True
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        del self._waiting[oldest]
        oldest.cancel()
        self._evicted.add(oldest)
        self.count -= 1
        self._evictions.log(
            logging.WARNING,
            "status port: %d connections open; closed the oldest that had sent no request "
            "yet to make room (a flood of idle connections?)",
            self.limit,
        )
        return True

    async def wait_for_room(self) -> None:
        if self._room.is_set():
            self._room = trio.Event()
        await self._room.wait()


async def _answer(
    stream: trio.SocketStream,
    ready: Callable[[], bool],
    metrics_text: Callable[[], bytes],
    answering: Callable[[], None],
) -> None:
    """Read one request and answer it; ``answering()`` once its head is complete."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        request = await _next_request(stream, conn)
    except h11.RemoteProtocolError as error:
        answering()
        await _respond(stream, conn, error.error_status_hint, b"bad request\n", TEXT, False)
        return
    if request is None:
        return
    answering()
    head = request.method == b"HEAD"
    status, body, content_type = await _route(request, ready, metrics_text)
    await _respond(stream, conn, status, body, content_type, head)


async def _next_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(MAX_HEAD_BYTES))
            continue
        return None  # the connection closed before a request


async def _route(
    request: h11.Request, ready: Callable[[], bool], metrics_text: Callable[[], bytes]
) -> tuple[int, bytes, str]:
    """The status, body and content type that answer ``request``."""
    path = request.target.partition(b"?")[0]
    if path not in (b"/healthz", b"/readyz", b"/metrics"):
        return 404, b"not found: try /healthz, /readyz or /metrics\n", TEXT
    if request.method not in (b"GET", b"HEAD"):
        return 405, b"method not allowed: GET or HEAD\n", TEXT
    if path == b"/healthz":
        return 200, b"ok\n", TEXT
    if path == b"/readyz":
        return (200, b"ready\n", TEXT) if ready() else (503, b"not ready\n", TEXT)
    return 200, await trio.to_thread.run_sync(metrics_text), CONTENT_TYPE


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    content_type: str,
    head: bool,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    reason = HTTPStatus(status).phrase.encode()
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
    if not head and body:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
