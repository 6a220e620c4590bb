"""Raw-socket peers for hostile tests: they see and send exactly the bytes on the wire.

``RawBackend`` records every byte each connection received and answers each request by a
callback that writes whatever bytes the test wants (a late second response, a body after
a HEAD answer, broken chunked framing). h11 reads the requests it receives, as an oracle
independent of the proxy's codec. ``RawClient`` sends exact bytes and reads the proxy's
answers with h11.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h11
import trio

# the one deadline and polling helper, importable from here too (as the peers' tests did)
from tests.polling import DEADLINE as DEADLINE
from tests.polling import wait_for as wait_for


@dataclass
class Request:
    """One request as the backend received it, read by h11."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        """Every value of the field ``name`` (lower case), in order."""
        return [value for key, value in self.headers if key == name]


@dataclass
class BackendConnection:
    """One connection the backend accepted."""

    index: int
    stream: trio.SocketStream
    received: bytearray = field(default_factory=bytearray)
    requests: list[Request] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


def response(body: bytes, status: int = 200, *headers: bytes) -> bytes:
    """A complete response with a Content-Length."""
    lines = [b"HTTP/1.1 %d X" % status, *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join([*lines, b"", body])


async def numbered(connection: BackendConnection, request: Request) -> None:
    """The default answer: which connection and which request on it, e.g. ``c0-r1``."""
    body = b"c%d-r%d" % (connection.index, len(connection.requests) - 1)
    await connection.send(response(body))


Answer = Callable[[BackendConnection, Request], Awaitable[None]]


class RawBackend:
    """A backend on 127.0.0.1 that answers each request through ``answer``."""

    def __init__(self, answer: Answer = numbered) -> None:
        self.answer = answer
        self.connections: list[BackendConnection] = []
        self.accepted = trio.Condition()

    @property
    def requests(self) -> list[Request]:
        return [request for c in self.connections for request in c.requests]

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        connection = BackendConnection(len(self.connections), stream)
        self.connections.append(connection)
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                while True:
                    request = await self._read(connection, conn)
                    if request is None:
                        return
                    connection.requests.append(request)
                    await self.answer(connection, request)
                    # the answer was written by hand: a new h11 reads the next request
                    leftover = conn.trailing_data[0]
                    conn = h11.Connection(h11.SERVER)
                    if leftover:
                        conn.receive_data(leftover)
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            connection.closed.set()

    async def _read(self, connection: BackendConnection, conn: h11.Connection) -> Request | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await connection.stream.receive_some(65536)
                connection.received += data
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Request(head.method, head.target, list(head.headers), body)
            else:
                return None  # closed


@dataclass
class Reply:
    """A response the proxy sent, read by h11."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class RawClient:
    """A client connection to the proxy that sends exact bytes.

    Requests and replies go over ``over`` when given (TLS on top of ``stream``), else
    over the TCP connection ``stream`` itself.
    """

    def __init__(self, stream: trio.SocketStream, over: trio.abc.Stream | None = None) -> None:
        self.stream = stream
        self.io: trio.abc.Stream = over if over is not None else stream
        self._conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.io.send_all(data)

    async def reply(self, method: bytes = b"GET") -> Reply | None:
        """The next response (to a request with ``method``), or None if the proxy closed."""
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        # h11 must believe it sent the request the test wrote by hand
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, [], b""
        with trio.fail_after(DEADLINE):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError:
                    return None
                if event is h11.NEED_DATA:
                    try:
                        data = bytes(await self.io.receive_some(65536))
                    except trio.BrokenResourceError:
                        data = b""
                    conn.receive_data(data)
                elif isinstance(event, h11.InformationalResponse):
                    continue
                elif isinstance(event, h11.Response):
                    status, headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return Reply(status, headers, body)
                else:
                    return None  # closed before a whole response

    async def closed(self) -> bool:
        """Whether the proxy closes the connection with nothing more to say (within DEADLINE)."""
        with trio.fail_after(DEADLINE):
            try:
                return await self.io.receive_some(65536) == b""
            except trio.BrokenResourceError:
                return True

    async def aclose(self) -> None:
        await self.io.aclose()


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose TCP connects hang: a listener with a full backlog that never accepts."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
