"""A small real HTTP/1.1 backend for end-to-end tests: trio + h11 on 127.0.0.1.

It answers every request with what it received, as JSON. A few paths misbehave on
purpose: ``/stream`` sends a first chunk and waits for ``release`` before the last one,
``/slow`` waits for ``release`` before answering, and ``/die`` promises a large body,
sends a little and drops the connection.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import trio


class Echo:
    """One backend; ``connections`` counts the TCP connections it accepted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.closed = 0  # connections that ended (closed by either side, or broken)
        self.release = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while await self._exchange(stream, conn):
                    conn.start_next_cycle()
            except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            finally:
                self.closed += 1

    async def _exchange(self, stream: trio.SocketStream, conn: h11.Connection) -> bool:
        request = await next_event(stream, conn)
        if not isinstance(request, h11.Request):
            return False
        body = b""
        while True:
            event = await next_event(stream, conn)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False
        path = request.target
        if path.startswith(b"/die"):
            await _send(
                stream,
                conn,
                h11.Response(status_code=200, headers=[(b"content-length", b"100000")]),
            )
            await _send(stream, conn, h11.Data(data=b"x" * 10))
            return False
        if path.startswith(b"/slow"):
            await self.release.wait()
        if path.startswith(b"/stream"):
            await _send(stream, conn, h11.Response(status_code=200, headers=[]))
            await _send(stream, conn, h11.Data(data=b"first\n"))
            await self.release.wait()
            await _send(stream, conn, h11.Data(data=b"last\n"))
            await _send(stream, conn, h11.EndOfMessage())
            return True
        answer = json.dumps(
            {
                "backend": self.name,
                "method": request.method.decode(),
                "target": request.target.decode(),
                "headers": [[n.decode(), v.decode()] for n, v in request.headers],
                "body_length": len(body),
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer)).encode()),
        ]
        await _send(stream, conn, h11.Response(status_code=200, headers=headers))
        await _send(stream, conn, h11.Data(data=answer))
        await _send(stream, conn, h11.EndOfMessage())
        return True


async def next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


async def _send(stream: trio.SocketStream, conn: h11.Connection, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)
