"""The proxy's compiled HTTP/1.1 codec: request and response heads, chunked framing.

Parsing records where each field is in the received bytes; the head sent on is written
in one allocation. Bodies are passed through as they came: ``ChunkedScanner`` follows
chunked framing over raw bytes and says where the message ends.
"""

from typing_extensions import disjoint_base

__all__ = [
    "ChunkedError",
    "ChunkedScanner",
    "RequestHead",
    "ResponseHead",
    "parse_request",
    "parse_response",
]

class ChunkedError(ValueError):
    """Chunked framing that does not follow RFC 9112 §7.1."""

@disjoint_base
class _Head:
    @property
    def size(self) -> int:
        """Bytes the head took: the body (or the next message) starts here."""
    @property
    def version(self) -> int:
        """10 for HTTP/1.0, 11 for HTTP/1.1."""
    @property
    def content_length(self) -> int:
        """The Content-Length, or -1 when there is none (or chunked framing overrides it)."""
    @property
    def chunked(self) -> bool:
        """Whether the body is chunked."""
    @property
    def keep_alive(self) -> bool:
        """Whether the sender will keep the connection open after this message."""
    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every field as (lower-case name, value), in order."""
    def header(self, name: bytes) -> bytes | None:
        """The first field named ``name`` (any case), or None."""
    @property
    def upgrade(self) -> bytes | None:
        """``b"websocket"`` when that is asked for (``Connection: upgrade``), else None.

        An upgrade turns the connection into a tunnel that no later request on it is
        routed through, so only WebSocket (RFC 6455) is asked for again upstream; ``h2c``
        above all is not (its HTTP/2 requests would reach the backend unrouted). Every
        Upgrade field must list ``websocket`` alone (any case, optional whitespace,
        repeats); anything else and the request goes on as a plain one.
        """

@disjoint_base
class RequestHead(_Head):
    """A parsed request head (``parse_request``)."""

    @property
    def method(self) -> bytes: ...
    @property
    def target(self) -> bytes: ...
    @property
    def expect_continue(self) -> bool:
        """Whether the client waits for ``100 Continue`` before sending its body."""
    @property
    def host(self) -> bytes | None:
        """The Host field's value, or None."""
    def forward_head(
        self,
        target: bytes,
        client_ip: bytes,
        scheme: bytes,
        port: bytes,
        trusted: bool,
        host: bytes = b"",
        *,
        override_host: bool = False,
        vhost: bytes = b"",
        extra: bytes = b"",
        drop: frozenset[bytes] | None = None,
        chain: bool = True,
        real_ip: bytes = b"",
        http10: bool = False,
    ) -> bytes:
        """The head to send upstream: ``target`` instead of the original, HTTP/1.1.

        End-to-end fields pass as they came; ``host`` is the Host sent when the request
        has none (an HTTP/1.0 request: HTTP/1.1 requires one), or whatever it has when
        ``override_host``: for an absolute-form target, whose authority ``host`` is and
        whose Host field a server must ignore (RFC 9112 §3.2.2). Content-Length is sent
        once, in plain decimal, however the client repeated or padded it.
        ``X-Forwarded-For`` gets ``client_ip`` appended to a trusted peer's chain (or,
        without ``chain``, is ``client_ip`` alone), and replaces anyone else's;
        ``X-Forwarded-Proto``/``-Host``/``-Port`` and ``X-Real-IP`` keep a trusted peer's
        values and are set from this connection otherwise (``-Host`` from the Host
        sent); ``real_ip``, when given, is the ``X-Real-IP`` sent whoever the peer is.
        ``Forwarded``, ``X-Original-URL``, ``X-Rewrite-URL`` and ``ssl-client-*`` pass
        from a trusted peer only; fields named with ``_`` never do. ``Expect`` is
        answered by the proxy and dropped; a chunked body stays chunked; a WebSocket
        upgrade is asked for again (see ``upgrade``), no other.

        A route's plan adds to this: ``vhost`` is the Host sent instead (``-Host`` keeps
        the client's), ``extra`` is written as it is before the end of the head (whole
        ``Name: value\r\n`` lines, validated when the config was built), and fields whose
        lower-case name is in ``drop`` are not passed on (``extra`` sets them instead).
        ``http10`` writes an HTTP/1.0 request (``proxy-http-version: "1.0"``) with
        ``Connection: close`` and no upgrade; HTTP/1.0 has no chunked framing.

        Raises:
            ValueError: ``override_host`` without a ``host``; ``http10`` for a request
                with a chunked body.
        """

@disjoint_base
class ResponseHead(_Head):
    """A parsed response head (``parse_response``)."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> bytes: ...
    @property
    def bodyless(self) -> bool:
        """HEAD, 1xx, 204, 304: no body whatever the fields say."""
    @property
    def until_close(self) -> bool:
        """Whether the body is delimited by the upstream closing the connection."""
    def complete_with(self, received: bytes) -> bool:
        """Whether ``received``, what came after the head, is the whole body of an answer
        that keeps the connection open: nothing to wait for, nothing left over."""
    def client_head(
        self, close: bool, extra: bytes = b"", drop: frozenset[bytes] | None = None
    ) -> bytes:
        """The head to send the client: end-to-end fields as they came, status kept.

        A chunked body is passed on chunked (its Content-Length, if any, dropped);
        ``close`` says this is the connection's last response. A ``101 Switching
        Protocols`` keeps ``Connection`` and ``Upgrade``: the client needs them.
        A route's plan adds ``extra`` (whole ``Name: value\r\n`` lines) and leaves out
        the fields whose lower-case name is in ``drop`` (the ones ``extra`` sets).
        """

def parse_request(data: bytes, max_head: int) -> RequestHead | None:
    """The request head at the start of ``data``, or None while it is incomplete.

    Raises:
        HeadersTooLargeError: the head is (or will be) over ``max_head`` bytes.
        BadRequestError: anything malformed, named in the message; a Host that is not
            ``host[:port]`` (reg-name of letters, digits, "-", "." and "_", or an IP
            literal; port of up to 5 digits, at most 65535), empty included.
    """

def parse_response(data: bytes, max_head: int, head_request: bool) -> ResponseHead | None:
    """The response head at the start of ``data``, or None while it is incomplete.

    Raises:
        BadGatewayError: not a valid response head, one over ``max_head`` bytes, or
            framing the proxy cannot pass on.
    """

@disjoint_base
class ChunkedScanner:
    """Follows chunked framing over raw bytes passed on unchanged.

    Trailer fields follow a head's field rules (else ``ChunkedError``); ``relay`` passes
    the trailer section on without the fields that must not come in a trailer.
    """

    def __init__(self) -> None: ...
    @property
    def payload(self) -> int:
        """Data bytes seen so far (for body limits)."""
    @property
    def done(self) -> bool:
        """Whether the final chunk and trailers have been seen."""
    def scan(self, data: bytes, start: int = 0) -> int:
        """Where the body ends in ``data[start:]``: ``len(data)`` unless ``done``.

        Raises:
            ChunkedError: malformed framing (trailer fields included: a token, a colon
                straight after it, a value of visible characters), or extensions and
                trailers over 64 KiB.
            ValueError: ``start`` outside ``data``.
        """
    def decode(self, data: bytes, start: int = 0) -> tuple[int, bytes]:
        """``scan``, plus the data bytes the framing carries."""
    def relay(self, data: bytes, start: int = 0) -> tuple[int, bytes]:
        """``scan``, plus the bytes of ``data[start:end]`` to pass on: ``(end, out)``.

        ``out`` is ``data[start:end]`` itself (``data`` when that is all of it) until the
        trailer section (what follows the last chunk's line ``0\\r\\n``, up to the final
        CRLF). That section is held (within the 64 KiB limit on extensions and trailers)
        and passed on when the body ends, without its Content-Length, Transfer-Encoding,
        Host, Expect, hop-by-hop (Connection, Keep-Alive, TE, Trailer, Upgrade, Proxy-*,
        HTTP2-Settings), X-Forwarded-*, X-Real-IP and identity fields and names with
        ``_``. A body without trailers costs what ``scan`` does.

        Raises:
            ChunkedError: as ``scan``; nothing of a trailer section is passed on before
                all of it is seen valid.
        """
