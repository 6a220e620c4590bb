"""The HTTP side: a listener thread, one thread per connection, watch streams.

Why threads on the standard library rather than trio or asyncio: the emulator runs inside the
test process next to code under test that may use trio, asyncio or plain blocking calls, and
a test hook (``api.create(...)``) must work from any of them without an event loop of its own.
Blocking connection threads make a watch stream a plain loop that waits on the store's
condition variable, and let another thread end it at once by shutting its socket down.
``http.server`` parses requests and keeps connections alive (HTTP/1.1); responses always carry
Content-Length, or are chunked for watches, as kube-apiserver's are.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .routing import Discovery, ResourceRequest, route
from .selectors import Selector, parse_selector
from .status import ApiError, bad_request, status, success
from .store import Event, Stored

if TYPE_CHECKING:
    from .api import KubeAPI

__all__ = ["Listener"]

log = logging.getLogger("kubeapi")

_HANDSHAKE_SECONDS = 5.0  # a TLS client that says nothing for this long is dropped
_IDLE_SECONDS = 120.0  # an idle keep-alive connection, or a watch client that stops reading
_JOIN_SECONDS = 5.0  # how long stop() waits for connection threads to finish
_MAX_BODY = 16 * 1024 * 1024  # like --max-request-bytes' order of magnitude
_BATCH = 256  # watch lines written per chunk when sending many at once


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _event_line(kind: str, stored: Stored) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + stored.full() + b"}\n"


class _AbortedError(Exception):
    """The watch was dropped on purpose (``drop_watches``) or the server is stopping."""


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests one after another (keep-alive), until it closes."""

    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-emulator"
    sys_version = ""
    disable_nagle_algorithm = True  # watch events are small and must leave at once
    server: Listener  # type: ignore[assignment]  # set by BaseRequestHandler

    def log_message(self, format: str, *args: Any) -> None:  # stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815  # stdlib dispatch names

    # -- one request ---------------------------------------------------------------------

    def _handle(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            body = self._read_body()
        except ValueError as error:
            self._send_status(bad_request(f"unreadable request body: {error}"))
            self.close_connection = True
            return
        try:
            target = route(self.command, url.path, query, f"{api.host}:{api.port}")
        except ApiError as error:
            api._record(self.command.lower(), url.path)
            self._send_status(error)
            return
        verb = target.verb if isinstance(target, ResourceRequest) else "get"
        api._record(verb, url.path)
        try:
            user = api._authenticate(self.headers.get("Authorization"), self._peer())
            if isinstance(target, Discovery):
                if isinstance(target.body, str):
                    self._send(200, target.body.encode(), "text/plain; charset=utf-8")
                else:
                    self._send(200, _dumps(target.body))
                return
            api._authorize(user, target)
            api._fault(target)
            if target.verb == "watch":
                self._watch(target, query)
                return
            code, payload = self._execute(target, query, body)
        except ApiError as error:
            if isinstance(target, ResourceRequest) and target.verb not in ("get", "list", "watch"):
                api._log_write(target.verb, url.path, _parsed(body), error.code)
            self._send_status(error)
            return
        if target.verb not in ("get", "list"):
            api._log_write(target.verb, url.path, _parsed(body), code)
        self._send(code, payload)

    def _execute(
        self, request: ResourceRequest, query: dict[str, str], raw: bytes
    ) -> tuple[int, bytes]:
        store = self.server.api.store
        rt, namespace, name, sub = request.rt, request.namespace, request.name, request.subresource
        dry_run = query.get("dryRun") == "All"
        if request.verb == "get":
            assert name is not None
            found = store.get(rt, namespace, name)
            self.server.api._serve([found])
            return 200, found.full()
        if request.verb == "list":
            selector = _selector(request, query)
            limit = _int(query.get("limit"), "limit") or 0
            page = store.list_page(
                rt, namespace, selector, limit=limit, continue_token=query.get("continue", "")
            )
            meta: dict[str, Any] = {"resourceVersion": str(page.rv)}
            if page.continue_token:
                meta["continue"] = page.continue_token
            if page.remaining is not None:
                meta["remainingItemCount"] = page.remaining
            head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
            self.server.api._serve(page.items)
            items = b",".join(stored.item for stored in page.items)
            return 200, head[:-1] + b',"items":[' + items + b"]}"
        if request.verb == "deletecollection":
            store.delete_collection(rt, namespace, _selector(request, query))
            return 200, _dumps(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            )
        body = _json_body(raw, required=request.verb != "delete")
        if request.verb == "create":
            return 201, store.create(rt, namespace, body, dry_run=dry_run).full()
        assert name is not None
        if request.verb == "update":
            stored = store.replace(rt, namespace, name, body, subresource=sub, dry_run=dry_run)
            return 200, stored.full()
        if request.verb == "patch":
            content_type = self.headers.get("Content-Type", "")
            stored = store.patch(
                rt, namespace, name, content_type, body, subresource=sub, dry_run=dry_run
            )
            return 200, stored.full()
        # delete: DeleteOptions may carry preconditions on uid and resourceVersion.
        options = body if isinstance(body, dict) else {}
        gone = store.delete(
            rt, namespace, name, preconditions=options.get("preconditions"), dry_run=dry_run
        )
        if rt.return_deleted:
            return 200, gone.full()
        uid = gone.obj["metadata"]["uid"]
        return 200, _dumps(success(gone.key[1], rt.group, rt.plural, uid))

    # -- watch ---------------------------------------------------------------------------

    def _watch(self, request: ResourceRequest, query: dict[str, str]) -> None:
        api = self.server.api
        store = api.store
        selector = _selector(request, query)
        timeout = _int(query.get("timeoutSeconds"), "timeoutSeconds")
        seconds = float(timeout) if timeout else api.max_watch_seconds
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        try:
            start = store.watch_start(request.rt, query.get("resourceVersion", ""))
        except ApiError as error:
            if error.code != 410 or api.gone != "event":
                raise
            # The other form of 410: a 200 stream whose one event is an ERROR Status.
            self._start_stream()
            self._chunk(_dumps({"type": "ERROR", "object": error.body}) + b"\n")
            self._end_stream()
            return
        self._start_stream()
        watch = api._open_watch(
            request.rt, self.connection, request.namespace, query.get("fieldSelector", "")
        )
        try:
            self._stream(
                request, selector, start.initial, start.position, seconds, bookmarks, watch
            )
            self._end_stream()
        except (_AbortedError, OSError):
            # Dropped mid-stream: no terminating chunk, the client sees the body cut short.
            self.close_connection = True
        finally:
            api._close_watch(watch)

    def _stream(
        self,
        request: ResourceRequest,
        selector: Selector,
        initial: Iterable[Stored],
        position: int,
        seconds: float,
        bookmarks: bool,
        watch: Any,
    ) -> None:
        api = self.server.api
        store = api.store
        namespace = request.namespace
        sent = [
            stored
            for stored in initial
            if (namespace is None or stored.key[0] == namespace)
            and (selector.empty or selector.matches(stored))
        ]
        api._serve(sent)
        self._write_lines([_event_line("ADDED", stored) for stored in sent])
        now = time.monotonic()
        deadline = now + seconds
        next_bookmark = now + api.bookmark_interval
        while now < deadline:  # bounded: the deadline, or an abort from another thread
            with store.cond:
                while True:
                    if watch.dropped or self.server.closing:
                        raise _AbortedError
                    found = store.events_since(request.rt, position)
                    if found is None:
                        return  # fell out of the window: end it, the re-watch gets 410
                    events, position = found
                    rv = store.rv
                    now = time.monotonic()
                    due = next_bookmark if bookmarks else deadline
                    if events or now >= deadline or now >= due:
                        break
                    store.cond.wait(min(deadline, due) - now)
            lines = []
            for event in events:
                translated = _translate(event, namespace, selector)
                if translated is not None:
                    api._serve([translated[1]])
                    lines.append(_event_line(*translated))
            if bookmarks and now >= next_bookmark:
                bookmark = {
                    "kind": request.rt.kind,
                    "apiVersion": request.rt.api_version,
                    "metadata": {"resourceVersion": str(rv)},
                }
                lines.append(_dumps({"type": "BOOKMARK", "object": bookmark}) + b"\n")
                next_bookmark = now + api.bookmark_interval
            self._write_lines(lines)

    # -- wire helpers --------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            total = 0
            while True:  # bounded by _MAX_BODY
                size = int(self.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(8192).strip():
                        pass  # trailers
                    return b"".join(parts)
                total += size
                if total > _MAX_BODY:
                    raise ValueError("request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(8)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _peer(self) -> tuple[str, tuple[str, ...]] | None:
        if not isinstance(self.connection, ssl.SSLSocket):
            return None
        cert = self.connection.getpeercert()
        if not cert:
            return None
        # subject: ((("organizationName", "g"),), (("commonName", "user"),))
        subject: Any = cert.get("subject", ())
        names = [(str(key), str(value)) for rdn in subject for key, value in rdn]
        user = next((value for key, value in names if key == "commonName"), "")
        groups = tuple(value for key, value in names if key == "organizationName")
        return user, groups

    def _send(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        # Exactly "application/json", no charset: lightkube only turns an error response
        # into ApiError when the Content-Type header is that string.
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_status(self, error: ApiError) -> None:
        self._send(error.code, _dumps(error.body))

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_lines(self, lines: list[bytes]) -> None:
        for start in range(0, len(lines), _BATCH):
            self._chunk(b"".join(lines[start : start + _BATCH]))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _translate(
    event: Event, namespace: str | None, selector: Selector
) -> tuple[str, Stored] | None:
    """What one watcher sees of an event: selector moves become ADDED or DELETED.

    An object modified into a selector is ADDED for that watcher, one modified out of it is
    DELETED, as the watch cache reports them.
    """
    if namespace is not None and event.new.key[0] != namespace:
        return None
    if selector.empty:
        return event.type, event.new
    new_in = selector.matches(event.new)
    if event.type == "MODIFIED" and event.old is not None:
        old_in = selector.matches(event.old)
        if new_in and not old_in:
            return "ADDED", event.new
        if old_in and not new_in:
            return "DELETED", event.new
    return (event.type, event.new) if new_in else None


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{name}: invalid integer {value!r}") from None
    if number < 0:
        raise bad_request(f"{name}: must not be negative")
    return number


def _selector(request: ResourceRequest, query: dict[str, str]) -> Selector:
    fields = query.get("fieldSelector", "")
    if request.name is not None:
        # A watch on one object (the deprecated .../name?watch=true) is a name selector.
        fields = ",".join(filter(None, [fields, f"metadata.name={request.name}"]))
    return parse_selector(query.get("labelSelector", ""), fields, request.rt)


def _json_body(raw: bytes, *, required: bool) -> Any:
    if not raw:
        if required:
            raise bad_request("the request has no body")
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ApiError(status(400, "BadRequest", f"the body is not JSON: {error}")) from None


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


class Listener:
    """A listening socket and its connections; ``close()`` ends every one of them."""

    def __init__(self, api: KubeAPI, host: str, port: int, context: ssl.SSLContext | None) -> None:
        self.api = api
        self.closing = False
        self._context = context
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        # create_server sets SO_REUSEADDR, so a restart can bind the same port at once.
        self._socket = socket.create_server((host, port))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._accept, name=f"kubeapi-accept-{self.port}", daemon=True
        )
        self._thread.start()

    def _accept(self) -> None:
        while True:  # ends when close() shuts the listening socket down
            try:
                conn, address = self._socket.accept()
            except OSError:
                return
            with self._lock:
                if self.closing:
                    conn.close()
                    return
                thread = threading.Thread(
                    target=self._serve, args=(conn, address), name="kubeapi-conn", daemon=True
                )
                self._connections.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket, address: Any) -> None:
        try:
            if self._context is not None:
                conn.settimeout(_HANDSHAKE_SECONDS)
                wrapped = self._context.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._connections.discard(conn)
                    self._connections.add(wrapped)
                conn = wrapped
            conn.settimeout(_IDLE_SECONDS)
            _Handler(conn, address, self)  # type: ignore[arg-type]  # a Listener, not a server
        except (OSError, ValueError) as error:
            # Handshake failures, resets and sockets shut by close(): the connection ends.
            log.debug("connection from %s ended: %s", address, error)
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._threads.discard(threading.current_thread())
            _shutdown(conn)
            conn.close()

    def drop(self, sockets: Iterable[socket.socket]) -> None:
        """Shut connections down now (their threads see the end and finish)."""
        for conn in sockets:
            _shutdown(conn)

    def close(self) -> None:
        """Stop accepting, cut every connection and wait (bounded) for their threads."""
        with self._lock:
            self.closing = True
            connections = list(self._connections)
        _shutdown(self._socket)  # wakes accept() on Linux
        self._socket.close()
        self.drop(connections)
        with self.api.store.cond:
            self.api.store.cond.notify_all()  # watch threads wake up and see `closing`
        deadline = time.monotonic() + _JOIN_SECONDS
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _shutdown(conn: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops the TLS object
    # under a thread that may be using it; this only ends the TCP stream.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(conn, socket.SHUT_RDWR)
