"""Fuzz target: the compiled HTTP/1.1 codec (``fastroute._http``), with h11 as the oracle.

An input is ``mode, flags, payload``: ``mode`` picks a request head, a response head or
a chunked body; ``flags`` picks ``max_head``, ``HEAD``, trust, the parts of a route's
plan the head is forwarded with, and where a chunked body is cut in two. Whatever the
codec does with the payload must be one of what its stub documents (a head, None while
incomplete, or its own error type: anything else is a crash). What it accepts must mean
the same to h11 (method, target, status, fields, framing, where the head or body ends),
apart from the deliberate differences ``tests/test_http_codec.py`` lists: where h11 is
more lenient nothing is asserted, and the few inputs the codec takes and h11 refuses are
named below where they are allowed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import h11

from fastroute._http import (
    ChunkedError,
    ChunkedScanner,
    RequestHead,
    parse_request,
    parse_response,
)
from fastroute.errors import BadGatewayError, BadRequestError, HeadersTooLargeError
from fastroute.proxy.headers import valid_host, websocket_upgrade
from tests.http_oracle import Headers, as_h11, h11_consumed, naive_relay, response_summary

MAX_HEADS = (48, 128, 320, 1 << 20)
BIG = 1 << 20
# a POST whose chunked body h11 then reads, to compare with the scanner
CHUNKED_REQUEST = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


# --------------------------------------------------------------------------- h11's view


def h11_framing(headers: Headers) -> tuple[bool, int]:
    """(chunked, Content-Length or -1), as h11 frames a request body with ``headers``."""
    if any(n == b"transfer-encoding" for n, _ in headers):
        return True, -1
    length = next((v for n, v in headers if n == b"content-length"), None)
    return False, -1 if length is None else int(length)


def h11_request(data: bytes) -> tuple[h11.Request, h11.Connection] | None:
    """The request h11 (a server) reads from ``data``; None if it refuses or wants more."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return (event, conn) if isinstance(event, h11.Request) else None


def h11_response(
    data: bytes, method: bytes, *, upgrade: bool
) -> tuple[h11.Response | h11.InformationalResponse, h11.Connection] | None:
    """The response h11 (a client that sent ``method``) reads; None if it refuses it."""
    conn = h11.Connection(h11.CLIENT)
    headers = [(b"host", b"up.example")]
    if upgrade:
        headers += [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
    conn.send(h11.Request(method=method, target=b"/", headers=headers))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if isinstance(event, h11.Response | h11.InformationalResponse):
        return event, conn
    return None


def h11_chunked_body(stream: bytes) -> tuple[bytes, int] | None:
    """The data h11 reads from a chunked ``stream`` and where it ends; None if it refuses."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(CHUNKED_REQUEST)
    conn.next_event()
    conn.receive_data(stream)
    body = b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                return body, h11_consumed(conn, stream)
            if not isinstance(event, h11.Data):
                return None  # NEED_DATA: h11 has not seen the end
            body += event.data
    except h11.RemoteProtocolError:
        return None


def lengths_spelled_differently(headers: Headers) -> bool:
    """Content-Lengths of one value written differently (``03``, ``3``): the codec takes
    them as one (and sends one), h11 compares them as text and refuses them."""
    return len({v for n, v in headers if n == b"content-length"}) > 1


# --------------------------------------------------------------------------- requests


def request_summary(head: RequestHead) -> tuple[object, ...]:
    return (
        head.method,
        head.target,
        head.version,
        head.headers,
        head.size,
        head.content_length,
        head.chunked,
        head.keep_alive,
        head.expect_continue,
        head.host,
        head.upgrade,
    )


def check_request(raw: bytes, flags: int) -> None:
    max_head = MAX_HEADS[flags & 3]
    trusted = bool(flags & 4)
    try:
        head = parse_request(raw, max_head)
    except HeadersTooLargeError:
        assert len(raw) > max_head, "431 for a head within max_head"
        return
    except BadRequestError:
        return
    if head is None:
        assert len(raw) <= max_head, "an incomplete head over max_head is not refused"
        return
    assert 0 < head.size <= min(len(raw), max_head)
    # the head is all there is to it: what follows does not change it, a byte less is not one
    whole = parse_request(raw[: head.size], max_head)
    assert whole is not None
    assert request_summary(whole) == request_summary(head)
    assert parse_request(raw[: head.size - 1], max_head) is None
    # the reference rules for Host and Upgrade (fastroute.proxy.headers)
    assert head.host is None or valid_host(head.host), head.host
    asked = head.version == 11 and websocket_upgrade(head.headers)
    assert head.upgrade == (b"websocket" if asked else None)

    # what is sent upstream is one head framing the body the same way, to h11 too
    out = head.forward_head(b"/x", b"10.0.0.1", b"https", b"443", trusted, b"fallback.example")
    again = parse_request(out, BIG)
    assert again is not None
    assert again.size == len(out)
    assert (again.method, again.chunked, again.content_length) == (
        head.method,
        head.chunked,
        head.content_length,
    )
    read = h11_request(out)
    assert read is not None, out
    event, conn = read
    assert h11_consumed(conn, out) == len(out)
    assert h11_framing(list(event.headers)) == (head.chunked, head.content_length)

    check_plan(head, flags)

    # where h11 reads the client's bytes too (past the blank lines it refuses), it reads
    # the same head
    lead = len(raw) - len(raw.lstrip(b"\r\n"))
    read = h11_request(raw[lead:])
    if read is None:  # h11 refuses it: only where the two deliberately differ
        assert lengths_spelled_differently(head.headers), raw
        return
    event, conn = read
    assert head.size == lead + h11_consumed(conn, raw[lead:])
    assert (event.method, event.target) == (head.method, head.target)
    assert as_h11(head.headers) == list(event.headers)
    assert h11_framing(list(event.headers)) == (head.chunked, head.content_length)


PLAN_FIELDS = b"X-Plan: 1\r\nX-Trace: a b\r\n"
PLAN_DROP = frozenset({b"x-plan", b"x-trace", b"accept", b"cookie", b"set-cookie"})


def check_plan(head: RequestHead, flags: int) -> None:
    """``forward_head`` with a route's plan (``flags`` choose which parts): one head,
    with the Host, fields and version the plan says, that h11 reads whole."""
    planned = bool(flags & 16)
    vhost = b"v.example" if flags & 8 else b""
    http10, override, real_ip = bool(flags & 32), bool(flags & 64), bool(flags & 128)
    options: dict[str, Any] = {
        "override_host": override,
        "vhost": vhost,
        "extra": PLAN_FIELDS if planned else b"",
        "drop": PLAN_DROP if planned else None,
        "chain": not real_ip,
        "real_ip": b"198.51.100.7" if real_ip else b"",
        "http10": http10,
    }
    args = (b"/y", b"2001:db8::1", b"http", b"80", bool(flags & 4), b"auth.example")
    if http10 and head.chunked:
        try:
            head.forward_head(*args, **options)
        except ValueError:
            return
        raise AssertionError("a chunked body forwarded as HTTP/1.0")
    out = head.forward_head(*args, **options)
    again = parse_request(out, BIG)
    assert again is not None
    assert again.size == len(out)
    assert (again.method, again.target, again.version) == (head.method, b"/y", 10 if http10 else 11)
    assert (again.chunked, again.content_length) == (head.chunked, head.content_length)
    if vhost:
        assert again.host == vhost
    elif override or head.host is None:
        assert again.host == b"auth.example"
    else:
        assert again.host == head.host
    names = [name for name, _ in again.headers]
    if planned:
        assert again.header(b"x-plan") == b"1"
        assert names.count(b"x-plan") == names.count(b"x-trace") == 1
        assert b"accept" not in names
        assert b"cookie" not in names
    if real_ip:
        assert again.header(b"x-real-ip") == b"198.51.100.7"
        assert again.header(b"x-forwarded-for") == b"2001:db8::1"
    if http10:
        assert not again.keep_alive
        assert again.upgrade is None
    read = h11_request(out)
    assert read is not None, out
    assert h11_consumed(read[1], out) == len(out)


# --------------------------------------------------------------------------- responses


def check_response(raw: bytes, flags: int) -> None:
    max_head = MAX_HEADS[flags & 3]
    head_request = bool(flags & 4)
    close = bool(flags & 8)
    try:
        head = parse_response(raw, max_head, head_request)
    except BadGatewayError:
        return
    if head is None:
        assert len(raw) <= max_head, "an incomplete head over max_head is not refused"
        return
    assert 0 < head.size <= min(len(raw), max_head)
    whole = parse_response(raw[: head.size], max_head, head_request)
    assert whole is not None
    assert response_summary(whole) == response_summary(head)
    assert parse_response(raw[: head.size - 1], max_head, head_request) is None
    assert head.until_close == (not head.bodyless and not head.chunked and head.content_length < 0)

    # the head sent to the client frames the body the same way, a plan's fields added
    planned = bool(flags & 16)
    extra = PLAN_FIELDS if planned else b""
    out = head.client_head(close, extra, PLAN_DROP if planned else None)
    again = parse_response(out, BIG, head_request)
    assert again is not None
    assert (again.status, again.size) == (head.status, len(out))
    assert (again.bodyless, again.chunked, again.content_length) == (
        head.bodyless,
        head.chunked,
        head.content_length,
    )
    names = [name for name, _ in again.headers]
    if planned:
        assert again.header(b"x-plan") == b"1"
        assert names.count(b"x-plan") == names.count(b"x-trace") == 1
        assert b"set-cookie" not in names
    if close and head.status != 101:
        assert not again.keep_alive
    method = b"HEAD" if head_request and head.status != 101 else b"GET"
    read = h11_response(out, method, upgrade=head.status == 101)
    assert read is not None, out
    assert h11_consumed(read[1], out) == len(out)

    # where h11 reads the upstream's bytes too, it reads the same head
    read = h11_response(raw, method, upgrade=head.status == 101)
    if read is None:  # h11 refuses it: only where the two deliberately differ
        # a response without a body has none whatever its Transfer-Encoding says (the
        # codec drops the field); h11 refuses any coding but chunked
        coded = any(n == b"transfer-encoding" for n, _ in head.headers)
        assert lengths_spelled_differently(head.headers) or (head.bodyless and coded), raw
        return
    event, conn = read
    assert (event.status_code, event.reason) == (head.status, head.reason)
    assert as_h11(head.headers) == list(event.headers)
    assert head.size == h11_consumed(conn, raw)


# --------------------------------------------------------------------------- chunked bodies


def scan_pieces(pieces: list[bytes]) -> tuple[int, bool] | None:
    """(bytes of the body, done) when ``pieces`` are scanned one by one; None: refused."""
    scanner = ChunkedScanner()
    consumed = 0
    try:
        for piece in pieces:
            end = scanner.scan(piece)
            assert 0 <= end <= len(piece)
            consumed += end
            if scanner.done:
                return consumed, True
            assert end == len(piece)
    except ChunkedError:
        return None
    return consumed, False


def relay_pieces(pieces: list[bytes], junk: bytes) -> tuple[bytes, int, bool] | None:
    """What ``relay`` passes on for ``pieces`` fed after ``junk``; None: refused."""
    scanner = ChunkedScanner()
    out, consumed = b"", 0
    try:
        for piece in pieces:
            fed = junk + piece
            end, passed = scanner.relay(fed, len(junk))
            assert len(junk) <= end <= len(fed)
            out += passed
            consumed += end - len(junk)
            if scanner.done:
                return out, consumed, True
            assert end == len(fed)
    except ChunkedError:
        return None
    return out, consumed, False


def without_bws(body: bytes) -> bytes:
    """A valid chunked ``body`` without the whitespace before its chunk extensions' ";"
    (RFC 9112's BWS, which the codec takes and h11 refuses)."""
    out, pos = b"", 0
    while True:
        eol = body.index(b"\r\n", pos)
        line = body[pos:eol]
        size = int(line.split(b";")[0].strip(b" \t"), 16)
        ext = line.find(b";")
        if ext >= 0:
            line = line[:ext].rstrip(b" \t") + line[ext:]
        out += line + b"\r\n"
        pos = eol + 2
        if size == 0:
            return out + body[pos:]
        out += body[pos : pos + size + 2]
        pos += size + 2


def check_chunked(stream: bytes, flags: int) -> None:
    cut = len(stream) * (flags >> 2) // 63
    pieces = [stream[:cut], stream[cut:]]
    junk = b"\r\n0;x\r\n"[: flags & 3]
    whole = scan_pieces([stream])
    # framing is read the same fed at once, in two pieces, or by relay() after other bytes
    assert scan_pieces(pieces) == whole
    relayed = relay_pieces(pieces, junk)
    assert (relayed and relayed[1:]) == whole
    if whole is None or not whole[1] or relayed is None:
        return
    consumed = whole[0]
    scanner = ChunkedScanner()
    end, data = scanner.decode(stream)
    assert (end, scanner.done, scanner.payload) == (consumed, True, len(data))
    assert relayed[0] == naive_relay(stream[:consumed])
    # an upstream (h11) reads the same data from what relay() passes on, and ends it where
    # relay() does. Not from the bytes as they came: relay() drops trailer fields that must
    # not come in a trailer whatever their value, where h11 refuses a malformed one
    # (``Content-Length: x``).
    body = without_bws(relayed[0])
    assert h11_chunked_body(body + stream[consumed:]) == (data, len(body))


# --------------------------------------------------------------------------- the target

CHECKS = (check_request, check_response, check_chunked)


def fuzz_one(data: bytes) -> None:
    if len(data) < 2:
        return
    CHECKS[data[0] % len(CHECKS)](data[2:], data[1])


def main() -> None:
    import atheris

    # libFuzzer runs argv[0] again to merge: fuzz.run gives an executable that starts this
    argv = [os.environ.get("FUZZ_LAUNCHER", sys.argv[0]), *sys.argv[1:]]
    atheris.Setup(argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
