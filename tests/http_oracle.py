"""What the codec's tests and its fuzz target both ask of h11 and of chunked bodies."""

from __future__ import annotations

import h11

from fastroute._http import ResponseHead
from fastroute.proxy.headers import trailer_kept

Headers = list[tuple[bytes, bytes]]  # (lower-case name, value), as the codec gives them

__all__ = [
    "Headers",
    "as_h11",
    "h11_consumed",
    "naive_relay",
    "response_summary",
    "trailer_section",
]


def as_h11(headers: Headers) -> Headers:
    """What h11 reports for ``headers``: one Content-Length, Transfer-Encoding lower-cased."""
    out: Headers = []
    for name, value in headers:
        if name == b"content-length" and any(n == name for n, _ in out):
            continue
        out.append((name, value.lower() if name == b"transfer-encoding" else value))
    return out


def h11_consumed(conn: h11.Connection, fed: bytes) -> int:
    """How many of the bytes fed to ``conn`` h11 has used so far."""
    return len(fed) - len(conn.trailing_data[0])


def response_summary(head: ResponseHead) -> tuple[object, ...]:
    return (
        head.status,
        head.reason,
        head.version,
        head.headers,
        head.size,
        head.content_length,
        head.chunked,
        head.keep_alive,
        head.bodyless,
        head.until_close,
    )


def trailer_section(body: bytes) -> int:
    """Where the trailer section of a valid chunked ``body`` starts, chunk by chunk in Python."""
    pos = 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol].split(b";")[0].strip(b" \t"), 16)
        pos = eol + 2
        if size == 0:
            return pos
        pos += size + 2


def naive_relay(body: bytes) -> bytes:
    """What ``relay`` passes on for a whole, valid chunked ``body``."""
    pos = trailer_section(body)
    lines = body[pos:].split(b"\r\n")[:-2]  # the trailer fields, without the final CRLF
    kept = [line + b"\r\n" for line in lines if trailer_kept(line.split(b":")[0])]
    return body[:pos] + b"".join(kept) + b"\r\n"
