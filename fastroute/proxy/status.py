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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus

import h11
import trio

from fastroute.proxy.metrics import CONTENT_TYPE

__all__ = ["serve_status"]

log = logging.getLogger("fastroute.status")

HEAD_TIMEOUT = 10.0  # a probe's request arrives at once; a slow one is not a probe
MAX_HEAD_BYTES = 8 * 1024
MAX_CONNECTIONS = 64  # probes and scrapes are few; more wait to be accepted
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
    listeners = await trio.open_tcp_listeners(port, host=host)
    connections = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        async with connections, stream:
            try:
                await _answer(stream, ready, metrics_text)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the prober went away
            except Exception:
                # a bug must cost one probe and a log line, never the listener
                log.exception("unexpected error answering a status request")

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _answer(
    stream: trio.SocketStream, ready: Callable[[], bool], metrics_text: Callable[[], bytes]
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    with trio.move_on_after(HEAD_TIMEOUT):
        try:
            request = await _next_request(stream, conn)
        except h11.RemoteProtocolError as error:
            await _respond(stream, conn, error.error_status_hint, b"bad request\n", TEXT, False)
            return
        if request is None:
            return
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
