"""The server name (SNI) of a TLS ClientHello, read from the bytes a connection starts with.

Sans-I/O, as h11: ``read_client_hello(data)`` is given every byte received so far (it
keeps nothing between calls) and answers one of three things:

- ``NeedMore(total)``: the bytes end inside the ClientHello, which cannot be complete
  before ``total`` bytes in all have arrived (the caller waits for that many).
- ``NotClientHello(reason)``: these bytes are not a TLS ClientHello (plain HTTP on the
  TLS port, garbage, a malformed or oversized hello); the reason says what was wrong.
- ``ClientHello(server_name, length)``: the hello is complete; ``server_name`` is its
  ``host_name`` entry (RFC 6066 §3) as sent, ``None`` when the client sent none, and
  ``length`` the bytes the hello's records take.

Why it is strict, and what bounds it (RFC 8446 §4.1.2 and §5.1, RFC 5246 §7.4.1.2):

- Records are of type handshake (22), with a protocol major version of 3, at most
  2^14 bytes long and never empty. A ClientHello may be split over several such records
  (it must be alone in them, before any other message); they are joined.
- The whole hello, record headers included, must fit in ``limit`` bytes (16 KiB by
  default, one maximal record: real hellos are well under 2 KiB). Nothing past that is
  ever asked for, so a caller never buffers more than ``limit`` bytes for one client.
- Every length inside the hello (session id, cipher suites, compression methods,
  extensions, the server name list) must fit exactly in the one around it; an extension
  type appears at most once. A hello that breaks any of these is refused with its reason
  rather than read loosely: a relay chosen by a name read from a malformed hello could
  disagree with the name the TLS server behind it reads.
- The server name must be ASCII (an internationalized name travels as its ``xn--``
  A-label), 1 to 255 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HELLO_LIMIT",
    "MAX_RECORD",
    "ClientHello",
    "HelloReading",
    "NeedMore",
    "NotClientHello",
    "read_client_hello",
]

MAX_RECORD = 1 << 14  # TLSPlaintext.length at most 2^14 (RFC 8446 §5.1)
HELLO_LIMIT = 5 + MAX_RECORD  # bytes a ClientHello may take, record headers included

_HANDSHAKE = 22  # ContentType.handshake
_CLIENT_HELLO = 1  # HandshakeType.client_hello
_SERVER_NAME = 0  # ExtensionType.server_name
_HOST_NAME = 0  # NameType.host_name
_RECORD_HEADER = 5  # type (1), version (2), length (2)
_MESSAGE_HEADER = 4  # type (1), length (3)
_MAX_NAME = 255  # a DNS name's longest text form


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The bytes end inside the hello: wait until ``total`` bytes have arrived in all."""

    total: int


@dataclass(frozen=True, slots=True)
class NotClientHello:
    """The bytes are not a (well-formed, bounded) TLS ClientHello, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A complete ClientHello: the server name it asks for, and the bytes it took."""

    server_name: str | None
    length: int


HelloReading = NeedMore | NotClientHello | ClientHello


class _MalformedError(Exception):
    """Inside the hello: a length or value that breaks the rules above."""


def read_client_hello(
    data: bytes | bytearray | memoryview, limit: int = HELLO_LIMIT
) -> HelloReading:
    """What the bytes a connection starts with say about its ClientHello (see the module)."""
    view = memoryview(data)
    message = bytearray()  # the handshake message, joined from its records
    offset = 0
    needed = _MESSAGE_HEADER  # message bytes to collect, once its header is known
    while len(message) < needed:
        if offset + _RECORD_HEADER > limit:
            return NotClientHello(f"the ClientHello takes more than {limit} bytes")
        if offset >= len(view):
            return NeedMore(offset + _RECORD_HEADER)
        if view[offset] != _HANDSHAKE:
            what = "a TLS record" if offset == 0 else "a handshake record after the first"
            return NotClientHello(f"byte {view[offset]:#04x} does not start {what}")
        if offset + 1 < len(view) and view[offset + 1] != 3:
            return NotClientHello(f"record version {view[offset + 1]}.x is not TLS (3.x)")
        if len(view) < offset + _RECORD_HEADER:
            return NeedMore(offset + _RECORD_HEADER)
        length = int.from_bytes(view[offset + 3 : offset + 5])
        if length == 0 or length > MAX_RECORD:
            return NotClientHello(f"a record of {length} bytes (1 to {MAX_RECORD} allowed)")
        end = offset + _RECORD_HEADER + length
        if end > limit:
            return NotClientHello(f"the ClientHello takes more than {limit} bytes")
        if len(view) < end:
            return NeedMore(end)
        message += view[offset + _RECORD_HEADER : end]
        offset = end
        if needed == _MESSAGE_HEADER and len(message) >= _MESSAGE_HEADER:
            if message[0] != _CLIENT_HELLO:
                return NotClientHello(f"handshake message {message[0]} is not a ClientHello")
            needed = _MESSAGE_HEADER + int.from_bytes(message[1:4])
    if len(message) != needed:
        # a client's first flight is its ClientHello alone (RFC 8446 §4.1.2, RFC 5246
        # §7.3): no other handshake message can share its last record
        return NotClientHello("the record holding the ClientHello's end holds more than it")
    try:
        name = _server_name(memoryview(message)[_MESSAGE_HEADER:])
    except _MalformedError as error:
        return NotClientHello(f"malformed ClientHello: {error}")
    return ClientHello(name, offset)


class _Reader:
    """Lengths and values read in order from a bounded view, each checked to fit."""

    __slots__ = ("at", "view")

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.at = 0

    def left(self) -> int:
        return len(self.view) - self.at

    def take(self, size: int, what: str) -> memoryview:
        if size > self.left():
            raise _MalformedError(f"{what} needs {size} bytes, {self.left()} left")
        start, self.at = self.at, self.at + size
        return self.view[start : self.at]

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what))

    def vector(self, length_size: int, what: str) -> memoryview:
        return self.take(self.number(length_size, f"{what}'s length"), what)


def _server_name(body: memoryview) -> str | None:
    """The host name a ClientHello's body carries in its server_name extension."""
    hello = _Reader(body)
    hello.take(2 + 32, "version and random")
    if len(hello.vector(1, "session id")) > 32:
        raise _MalformedError("a session id longer than 32 bytes")
    suites = hello.vector(2, "cipher suites")
    if not suites or len(suites) % 2:
        raise _MalformedError(f"{len(suites)} bytes of cipher suites (a non-zero even count)")
    if not hello.vector(1, "compression methods"):
        raise _MalformedError("no compression method")
    if not hello.left():
        return None  # a hello without extensions (before TLS 1.2) names no server
    extensions = _Reader(hello.vector(2, "extensions"))
    if hello.left():
        raise _MalformedError(f"{hello.left()} bytes after the extensions")
    seen: set[int] = set()
    name: str | None = None
    while extensions.left():
        kind = extensions.number(2, "an extension's type")
        data = extensions.vector(2, f"extension {kind}")
        if kind in seen:
            raise _MalformedError(f"extension {kind} appears twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _host_name(data)
    return name


def _host_name(data: memoryview) -> str:
    """The host_name of a server_name extension (RFC 6066 §3): one, in ASCII."""
    extension = _Reader(data)
    names = _Reader(extension.vector(2, "the server name list"))
    if extension.left():
        raise _MalformedError(f"{extension.left()} bytes after the server name list")
    found: str | None = None
    while names.left():
        name_type = names.number(1, "a server name's type")
        raw = names.vector(2, "a server name")
        if name_type != _HOST_NAME:
            continue  # no other type is defined; a server ignores what it does not know
        if found is not None:
            raise _MalformedError("two host names")
        if not 1 <= len(raw) <= _MAX_NAME:
            raise _MalformedError(f"a host name of {len(raw)} bytes (1 to {_MAX_NAME} allowed)")
        try:
            found = bytes(raw).decode("ascii")
        except UnicodeDecodeError:
            raise _MalformedError("the host name is not ASCII") from None
    if found is None:
        raise _MalformedError("a server_name extension without a host name")
    return found
