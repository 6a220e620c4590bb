"""The request target: which form it takes (RFC 9112 §3.2), and the path the router matches on.

Pure functions, no I/O. The proxy calls :func:`parse_target` once per request, before it asks
``Router.match(host, match_path)`` for a route, and forwards ``path`` (and ``query``) upstream.

The path forwarded is the one routing decided on. A proxy that routes on the normalized path but
forwards the raw one lets ``/admin/../public`` reach the ``/public`` Service as ``/admin/...``
(an application that routes on the raw path then serves its admin pages). So ``path`` is
normalized the way :func:`forward_path` says, and an encoded slash that would make a dot segment
once the upstream decodes it (``/admin%2F..%2Fpublic``) is a 400: no spelling of that path means
the same thing to the router and to every application.

Accepted forms:

- origin-form ``/path?query``, the normal case;
- absolute-form ``http://host[:port]/path?query`` (or ``https``; the scheme is case-insensitive),
  whose authority the proxy uses instead of the ``Host`` header (RFC 9112 §3.2.2);
- asterisk-form ``*``, only with ``OPTIONS``.

Everything else is a :class:`~fastroute.errors.BadRequestError` (400): authority-form (``CONNECT``
is not supported), an empty target, a target without a leading ``/``, a fragment (``#``), spaces,
control characters, non-ASCII bytes, userinfo (``user@host``) in an absolute-form authority.

The characters RFC 3986 leaves out of URIs but that real clients send unencoded (``|``, ``^``,
``{``, ``}``, ``"``, ``\\``, ...) are accepted, as nginx accepts them: rejecting them would break
clients that work behind ingress-nginx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from fastroute.errors import BadRequestError
from fastroute.proxy.headers import valid_host

__all__ = ["RequestTarget", "forward_path", "normalize_path", "parse_target", "simple_origin"]


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """A parsed request target.

    Attributes:
        path: the path forwarded upstream (:func:`forward_path` of the one sent), at least
            ``b"/"``; ``b"*"`` for the asterisk form.
        query: the query without the ``?``; ``b""`` if there is none. Not validated or decoded.
        match_path: the normalized path the router matches on (see :func:`normalize_path`);
            ``b"/"`` for the asterisk form.
        authority: ``host[:port]`` from an absolute-form target, as sent; ``b""`` otherwise.
        asterisk: the target is the ``*`` of ``OPTIONS *`` (or an absolute-form ``OPTIONS``
            target with an empty path and no query, which RFC 9112 §3.2.4 says is forwarded
            as ``*``).
    """

    path: bytes
    query: bytes
    match_path: bytes
    authority: bytes
    asterisk: bool = False


# Visible ASCII except "#": what may appear anywhere in a request target. Deleting these
# with bytes.translate leaves the culprits, at C speed.
_TARGET_CHARS: Final = bytes(range(0x21, 0x7F)).replace(b"#", b"")
_SLASH: Final = 0x2F
_DOT: Final = 0x2E
_PERCENT: Final = 0x25
_NUL: Final = 0x00
# RFC 3986 §2.3: escapes of these mean the character itself (§6.2.2.2), so decoding them
# changes nothing an application can tell apart. Every other escape is kept as sent.
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
# RFC 3986 §3.1 scheme, followed by ":".
_SCHEME: Final = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*):")
# RFC 3986 §3.2.2 host (IP-literal without IPvFuture or zone, or reg-name without
# percent-encoding) and §3.2.3 port (*DIGIT, at most five of them).
_AUTHORITY: Final = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=]+)(?::([0-9]{0,5}))?"
)

# "41" -> b"A", for every case spelling of every byte: a dict lookup is both strict
# (unlike bytes.fromhex, which skips whitespace) and fast.
_HEX_DIGITS: Final = [{f"{n:x}", f"{n:X}"} for n in range(16)]
_UNHEX: Final[dict[bytes, bytes]] = {
    (high + low).encode("ascii"): bytes([value])
    for value in range(256)
    for high in _HEX_DIGITS[value >> 4]
    for low in _HEX_DIGITS[value & 15]
}


def _show(data: bytes) -> str:
    """``data`` quoted for a log line: printable ASCII as is, everything else escaped."""
    return "'" + repr(data)[2:-1] + "'"


def _bad_character(target: bytes) -> BadRequestError:
    """The error for a target that is empty or has a byte outside ``_TARGET_CHARS``."""
    if not target:
        return BadRequestError("empty request target")
    for offset, byte in enumerate(target):
        if byte == 0x23:
            return BadRequestError(f"fragment ('#') in request target at offset {offset}")
        if byte == 0x20:
            return BadRequestError(f"space in request target at offset {offset}")
        if byte < 0x20 or byte == 0x7F:
            return BadRequestError(
                f"control character 0x{byte:02x} in request target at offset {offset}"
            )
        if byte > 0x7F:
            return BadRequestError(
                f"non-ASCII byte 0x{byte:02x} in request target at offset {offset}"
            )
    raise AssertionError("unreachable: the target was valid")  # pragma: no cover


def parse_target(method: bytes, target: bytes) -> RequestTarget:
    """Split a request target into what is forwarded and what the router matches on.

    Args:
        method: the request method, case-sensitive (RFC 9110 §9.1).
        target: the request target as it appeared on the request line.

    Raises:
        BadRequestError: the target cannot be served; ``detail`` says why.
    """
    if method == b"CONNECT":
        raise BadRequestError("CONNECT is not supported")
    if not target or target.translate(None, _TARGET_CHARS):
        raise _bad_character(target)

    if target[0] == _SLASH:  # origin-form, the normal case
        path, _, query = target.partition(b"?")
        forwarded, match_path = _paths(path)
        return RequestTarget(forwarded, query, match_path, b"")

    if target == b"*":
        if method != b"OPTIONS":
            raise BadRequestError(
                f"asterisk-form request target '*' is only allowed with OPTIONS, "
                f"not {_show(method[:32])}"
            )
        return RequestTarget(b"*", b"", b"/", b"", asterisk=True)

    return _parse_absolute(method, target)


def simple_origin(method: bytes, target: bytes) -> tuple[bytes, bytes] | None:
    """``(path, query)`` of an origin-form target that ``normalize_path`` leaves as it is.

    Most requests look like this: no escapes, no dot segments, no repeated slashes. For
    them ``parse_target`` would return ``match_path == path``; this says so in a few
    byte searches. None means: call ``parse_target``.
    """
    # ``find``, not ``in``: ``bytes in bytes`` first tries the needle as an integer and
    # raises (and clears) a TypeError inside, about 2,000 instructions per test
    if (
        target[:1] != b"/"
        or target.find(b"%") >= 0
        or target.find(b"/.") >= 0
        or target.find(b"//") >= 0
        or method == b"CONNECT"
        or target.translate(None, _TARGET_CHARS)
    ):
        return None
    path, _, query = target.partition(b"?")
    return path, query


def _parse_absolute(method: bytes, target: bytes) -> RequestTarget:
    """absolute-form (RFC 9112 §3.2.2): ``http[s]://authority[/path][?query]``."""
    scheme_match = _SCHEME.match(target)
    rest = target[scheme_match.end() :] if scheme_match else b""
    if scheme_match is None or not rest.startswith(b"//"):
        if scheme_match is not None and rest.isdigit():
            raise BadRequestError("authority-form request target ('host:port') is only for CONNECT")
        raise BadRequestError(
            f"request target {_show(target[:64])} is neither origin-form ('/path'), "
            f"absolute-form ('http://host/path') nor '*'"
        )
    scheme = scheme_match.group(1)
    if scheme.lower() not in (b"http", b"https"):
        raise BadRequestError(f"unsupported scheme {_show(scheme[:16])} in request target")
    rest = rest[2:]

    end = len(rest)
    for delimiter in (b"/", b"?"):
        found = rest.find(delimiter, 0, end)
        if found >= 0:
            end = found
    authority, path_and_query = rest[:end], rest[end:]
    _check_authority(authority)

    path, question, query = path_and_query.partition(b"?")
    if not path:
        # RFC 9112 §3.2.4: the last proxy forwards an OPTIONS to a bare authority as "*".
        if method == b"OPTIONS" and not question:
            return RequestTarget(b"*", b"", b"/", authority, asterisk=True)
        path = b"/"
    forwarded, match_path = _paths(path)
    return RequestTarget(forwarded, query, match_path, authority)


def _check_authority(authority: bytes) -> None:
    """Reject what is not ``host[:port]`` (RFC 3986 §3.2), naming the problem."""
    if b"@" in authority:
        raise BadRequestError("userinfo ('user@') in request target authority is not allowed")
    if not authority or authority[0] == 0x3A:  # ":"
        raise BadRequestError("empty host in absolute-form request target")
    matched = _AUTHORITY.fullmatch(authority)
    if matched is None:
        if b"%" in authority:
            raise BadRequestError(
                f"percent-encoding in request target host {_show(authority[:64])}"
            )
        raise BadRequestError(f"invalid host or port in request target {_show(authority[:64])}")
    port = matched.group(1)
    if port and int(port) > 65535:
        raise BadRequestError(f"port {port.decode('ascii')} out of range in request target")
    if not valid_host(authority):
        # it would be the Host sent upstream: the same rule as for a Host header
        raise BadRequestError(f"invalid host in request target {_show(authority[:64])}")


def _paths(path: bytes) -> tuple[bytes, bytes]:
    """``(forward_path(path), normalize_path(path))``, or a 400 where they cannot agree."""
    match_path = normalize_path(path)
    if _PERCENT not in path:
        return match_path, match_path  # nothing decoded: the two normalizations are one
    forwarded = forward_path(path)
    if path.find(b"%2F") >= 0 or path.find(b"%2f") >= 0:
        # The upstream may decode %2F into "/" before it resolves dot segments; routing
        # did not. Where that order changes the path ("..%2F", "/a%2Fb/.."), no spelling
        # means one thing to every application, so the request is refused.
        decoded = _percent_decode(forwarded)
        segments = decoded.split(b"/")
        if b"." in segments or b".." in segments or _merge_and_remove_dots(decoded) != match_path:
            raise BadRequestError("encoded slash ('%2F') in a path with dot segments")
    return forwarded, match_path


def forward_path(path: bytes) -> bytes:
    """The path sent upstream: the one the router matched, spelled as the client spelled it.

    1. escapes of unreserved characters (letters, digits, ``-._~``) are decoded, so
       ``%2e%2e`` is the ``..`` it means; every other escape (``%2F``, ``%25``, ``%3F``,
       non-ASCII, ...) is kept as sent, since decoding it would change what the path says;
    2. runs of ``/`` are merged, as they are for matching;
    3. ``.`` and ``..`` segments are removed (RFC 3986 §5.2.4).

    So the upstream never sees a dot segment the router did not resolve, and decoding the
    result fully gives :func:`normalize_path` of the original (except for encoded slashes
    next to dot segments, which :func:`parse_target` refuses).

    Raises:
        BadRequestError: as :func:`normalize_path`.
    """
    if not path or path[0] != _SLASH:
        raise BadRequestError(f"path {_show(path[:64])} does not start with '/'")
    if _PERCENT in path:
        path = _decode_unreserved(path)
    if path.find(b"//") < 0 and path.find(b"/.") < 0:
        return path
    return _merge_and_remove_dots(path)


def _decode_unreserved(path: bytes) -> bytes:
    """Decode the escapes of unreserved characters; check (and keep) every other escape."""
    decoded = _percent_decode(path)  # validates every escape, and refuses NUL
    if _NUL in decoded:
        raise BadRequestError("NUL byte ('%00') in path")
    pieces = path.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        byte = _UNHEX[piece[:2]]
        if byte[0] in _UNRESERVED:
            out.append(byte)
            out.append(piece[2:])
        else:
            out.append(b"%")
            out.append(piece)
    return b"".join(out)


def normalize_path(path: bytes) -> bytes:
    """The path the router matches on: decoded, slashes merged, dot segments removed.

    This is what nginx matches ``location`` blocks on, so it is what ingress-nginx users expect:

    1. every ``%XX`` is decoded (an invalid or truncated escape is a 400, and so is a NUL byte,
       decoded or raw); decoded bytes >= 0x80 are kept as they are, since the router matches
       bytes; case is preserved;
    2. runs of ``/`` are merged into one (nginx ``merge_slashes on``, its default);
    3. ``.`` and ``..`` segments are removed (RFC 3986 §5.2.4); a ``..`` that would climb above
       the root is a 400, as nginx answers; a trailing ``/.`` or ``/..`` leaves a trailing ``/``.

    Decoding comes first, so ``/a/%2e%2e/b`` matches as ``/b`` and ``/a%2F%2Fb`` as ``/a/b``.
    That is nginx's behaviour, and the reason the Kubernetes API refuses ``%2f`` (and ``//``,
    ``/./``, ``/../``) in Exact and Prefix rule paths: the path matched on is decoded and
    normalized, so a rule spelled that way would never match what a client means by it.

    Decoding happens once: ``/%2541`` matches as ``/%41``, never as ``/A``. So the result is
    stable under normalization only if its ``%`` signs are escaped again as ``%25``.

    This is for matching only; :func:`forward_path` is what is sent upstream. The raw bytes
    are expected to have passed :func:`parse_target`; apart from NUL, they are not checked
    again here.

    Raises:
        BadRequestError: the path does not start with ``/``, has a bad escape or a NUL byte, or
            climbs above the root.
    """
    if not path or path[0] != _SLASH:
        raise BadRequestError(f"path {_show(path[:64])} does not start with '/'")
    # Single bytes are looked up as ints (a memchr); a substring search costs several times more.
    if _NUL in path:
        raise BadRequestError("NUL byte in path")
    if _PERCENT in path:
        path = _percent_decode(path)
        if _NUL in path:
            raise BadRequestError("NUL byte ('%00') in path")
    elif (_DOT not in path or path.find(b"/.") < 0) and path.find(b"//") < 0:
        return path  # the common case: nothing to decode, merge or remove
    if path.find(b"//") < 0 and path.find(b"/.") < 0:
        return path
    return _merge_and_remove_dots(path)


def _percent_decode(path: bytes) -> bytes:
    """Decode every ``%XX``, strictly."""
    pieces = path.split(b"%")
    last = len(pieces) - 1
    decoded = [pieces[0]]
    for index in range(1, last + 1):
        piece = pieces[index]
        byte = _UNHEX.get(piece[:2])
        if byte is None:
            if index == last and len(piece) < 2:
                raise BadRequestError(
                    f"truncated percent-encoding {_show(b'%' + piece)} at the end of the path"
                )
            escape = (b"%" + piece + b"%")[:3]  # a short piece is followed by the next "%"
            raise BadRequestError(f"invalid percent-encoding {_show(escape)} in path")
        decoded.append(byte)
        decoded.append(piece[2:])
    return b"".join(decoded)


def _merge_and_remove_dots(path: bytes) -> bytes:
    """Merge runs of ``/``, then remove dot segments; ``path`` starts with ``/``.

    Dropping empty segments is merging slashes; the last segment being empty, ``.`` or ``..``
    means the result ends with ``/`` (RFC 3986 §5.2.4 step 2).
    """
    segments = path.split(b"/")
    kept: list[bytes] = []
    for segment in segments[1:]:
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if not kept:
                raise BadRequestError("path climbs above the root with '..'")
            kept.pop()
        else:
            kept.append(segment)
    if not kept:
        return b"/"
    result = b"/" + b"/".join(kept)
    if segments[-1] in (b"", b".", b".."):
        result += b"/"
    return result
