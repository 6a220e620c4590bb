"""The compiled HTTP/1.1 codec (``fastroute._http``) against h11 and ``proxy/headers.py``.

h11 is the reference HTTP/1.1 parser: heads the codec accepts must mean to h11 what they
mean to the codec (method, target, fields, framing, where the head ends, keep-alive), and
what the proxy sends on must be what ``request_headers``/``response_headers`` say, read back
by h11 as a peer would. The codec is stricter than h11 on purpose (a proxy that reads
framing differently from its upstream is how requests get smuggled); where h11 is more
lenient only the codec's refusal is asserted, and where the two deliberately differ the
generators stay clear of it and a test names the difference.

Deliberate differences from h11 (the tests below name each one):
- leading blank lines before a request line are skipped (RFC 9112 §2.2); h11 refuses them;
- refused by the codec, taken by h11: obs-fold (h11 unfolds it), control characters
  other than HTAB in values (h11 takes \\x01-\\x08, \\x1b, \\x7f...), Content-Length with
  Transfer-Encoding (h11 lets chunked win), Transfer-Encoding in HTTP/1.0, versions other
  than 1.0/1.1, ``Content-Length: 1, 1``, Content-Lengths of 19 or 20 digits, a
  Connection header listing more than 16 field names;
- refused by the codec, taken by h11: a Host value that is not ``host[:port]`` (empty
  included; ``valid_host`` in headers.py is the rule), so generated hosts are valid ones;
- h11 keeps no HTTP/1.0 connection alive; the codec follows ``Connection: keep-alive``;
- h11 collapses identical repeated Content-Length fields and lower-cases the
  Transfer-Encoding value; the codec reports fields as they came;
- chunked framing: the codec refuses bare-LF line ends in trailers and after the last
  chunk, 16+ hex digits in a size, control characters in extensions and over 64 KiB of
  extensions and trailers, all of which h11 takes; h11 refuses whitespace before a chunk
  extension's ``;`` (RFC 9112's BWS), which the codec takes; ``relay`` drops trailer
  fields h11 passes on (``trailer_kept`` in headers.py is the rule), so h11 reads what
  ``relay`` passes on; ``relay`` drops framing and hop-by-hop trailer fields whatever their
  value, where h11 refuses a malformed one (``Content-Length: x`` in a trailer);
- a response without a body (HEAD, 1xx, 204, 304) has none whatever its Transfer-Encoding
  says, and the field is not passed on; h11 refuses any coding but chunked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import accumulate, pairwise

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute._http import (
    ChunkedError,
    ChunkedScanner,
    RequestHead,
    ResponseHead,
    parse_request,
    parse_response,
)
from fastroute.errors import BadGatewayError, BadRequestError, HeadersTooLargeError
from fastroute.proxy.headers import (
    FORWARDED,
    HOP_BY_HOP,
    IDENTITY,
    Client,
    TrustedProxies,
    request_headers,
    response_headers,
    trailer_kept,
    valid_host,
    websocket_upgrade,
)
from tests.http_oracle import (
    Headers,
    as_h11,
    h11_consumed,
    naive_relay,
    response_summary,
    trailer_section,
)

# One shrunk counterexample per test is enough, and keeps a failing run short.
SETTINGS = settings(max_examples=150, deadline=None, report_multiple_bugs=False)
REFUSALS = settings(max_examples=50, deadline=None, report_multiple_bugs=False)
FEW = settings(max_examples=15, deadline=None, report_multiple_bugs=False)
FUZZ = settings(max_examples=250, deadline=None, report_multiple_bugs=False)

MAX_HEAD = 1 << 20

# --------------------------------------------------------------------------- generators

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VISIBLE = bytes(range(0x21, 0x7F))
# Field value bytes: mostly visible ASCII, some interior whitespace, some obs-text.
VALUE_ALPHABET = [*VISIBLE, *[0x20] * 12, *[0x09] * 3, 0x80, 0xA0, 0xC3, 0xE9, 0xFF]
OWS = [b"", b"", b"", b" ", b"\t", b"  ", b" \t "]

# Names the codec treats specially. Random names stay clear of them, and of "close":
# a field named like a connection option is kept by the codec when ``Connection: close``
# is sent but dropped by headers.py's ``_end_to_end`` (reported; not pinned here).
SPECIAL_NAMES = frozenset(
    {
        b"host",
        b"content-length",
        b"expect",
        b"x-real-ip",
        b"close",
        *HOP_BY_HOP,
        *FORWARDED,
        *IDENTITY,
    }
)
NEVER_LISTED = [b"Host", b"Content-Length", b"Transfer-Encoding", b"X-Forwarded-For", b"X-Real-IP"]
HOP_FIELDS = [
    (b"Keep-Alive", b"timeout=5, max=100"),
    (b"TE", b"trailers"),
    (b"Trailer", b"Expires"),
    (b"Proxy-Connection", b"keep-alive"),
    (b"Proxy-Authorization", b"Basic YTpi"),
    (b"Proxy-Authenticate", b"Basic realm=x"),
    (b"HTTP2-Settings", b"AAMAAABkAARAAAAAAAIAAAAA"),
]
IDENTITY_FIELDS = [
    (b"Forwarded", b"for=10.9.9.9;proto=https"),
    (b"X-Original-URL", b"/admin"),
    (b"X-Rewrite-URL", b"/admin"),
    (b"ssl-client-verify", b"SUCCESS"),
    (b"SSL-Client-Cert", b"-----BEGIN%20CERTIFICATE-----"),
    (b"ssl-client-subject-dn", b"CN=admin"),
    (b"ssl-client-issuer-dn", b"CN=Corp CA"),
]
UNDERSCORE_FIELDS = [
    (b"X_Forwarded_For", b"10.9.9.9"),
    (b"X_Real_IP", b"10.9.9.9"),
    (b"X_Forwarded_Host", b"admin.example.com"),
    (b"_", b"x"),
    (b"x-trace_id", b"1"),
]
UPGRADES = [
    b"websocket", b"WebSocket", b"websocket, websocket", b"websocket ,\tWEBSOCKET,", b"h2c", b"H2C",
    b"websocket, h2c", b"h2c, websocket", b"TLS/1.0", b"websocket/13", b"", b",",
]  # fmt: skip
IPS = [b"203.0.113.9", b"10.0.0.2", b"2001:db8::7", b"unknown", b""]


def any_case(word: bytes) -> st.SearchStrategy[bytes]:
    """``word`` spelled in some letter case."""
    mixed = bytes(c ^ 0x20 if i % 2 and chr(c).isalpha() else c for i, c in enumerate(word))
    return st.sampled_from([word.lower(), word.upper(), word.title(), mixed, mixed.swapcase()])


tokens = st.text(alphabet=TCHARS, min_size=1, max_size=10).map(str.encode)
plain_names = st.one_of(
    st.sampled_from([b"Accept", b"accept", b"Cookie", b"X-Trace", b"x-trace", b"A", b"b"]),
    tokens,
).filter(lambda name: name.lower() not in SPECIAL_NAMES)
values = st.lists(st.sampled_from(VALUE_ALPHABET), max_size=16).map(
    lambda codes: bytes(codes).strip(b" \t")
)
HOST_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
host_values = st.one_of(
    st.sampled_from(
        [b"example.com", b"a.example:8080", b"[::1]:80", b"example.com.", b"xn--bcher-kva.example",
         b"10.0.0.1:", b"[2001:db8::7]", b"a_b.example:65535", b"localhost:0"]
    ),
    st.tuples(
        st.lists(st.text(HOST_NAME_CHARS, min_size=1, max_size=8), min_size=1, max_size=3),
        st.sampled_from(["", "."]),
        st.sampled_from(["", ":", ":80", ":08080"]),
    ).map(lambda parts: (".".join(parts[0]) + parts[1] + parts[2]).encode()),
)  # fmt: skip
methods = st.one_of(
    st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"]),
    tokens,
).filter(lambda method: method != b"CONNECT")  # h11 reads CONNECT as a switch proposal
targets = st.one_of(
    st.sampled_from([b"/", b"*", b"/a/b?c=d&e", b"http://x.example/p", b"/%2F/~"]),
    st.text(alphabet=VISIBLE.decode(), min_size=1, max_size=24).map(str.encode),
)


@st.composite
def content_lengths(draw: st.DrawFn, max_value: int) -> bytes:
    """A Content-Length value, now and then with leading zeros (at most 18 digits)."""
    digits = str(draw(st.integers(0, max_value)))
    zeros = draw(st.integers(0, 18 - len(digits))) if draw(st.integers(0, 3)) == 0 else 0
    return b"0" * zeros + digits.encode()


@st.composite
def connection_values(draw: st.DrawFn, names: Sequence[bytes]) -> bytes:
    """A Connection value: options, the names of fields present or not, odd separators."""
    choices = [st.sampled_from([b"close", b"keep-alive", b"upgrade"]), plain_names]
    if names:
        choices.append(st.sampled_from(list(names)))
    choices.append(st.sampled_from([n for n, _ in HOP_FIELDS]))
    choices.append(st.sampled_from(NEVER_LISTED))  # which a Connection header cannot drop
    listed = draw(st.lists(st.one_of(*choices), max_size=5))
    listed = [draw(any_case(token)) for token in listed]
    out = b""
    for i, token in enumerate(listed):
        if i:
            out += draw(st.sampled_from([b",", b", ", b" , ", b",\t", b", ,"]))
        out += token
    return out


@dataclass(frozen=True)
class Head:
    """A generated head, with the structure it was built from (the oracle's view)."""

    lead: bytes  # blank lines before the start line
    start: bytes  # the request or status line, without its line end
    lines: tuple[bytes, ...]  # the field lines as sent, without their line ends
    eols: tuple[bytes, ...]  # line ends: the start line's, each field line's, the blank line
    fields: tuple[tuple[bytes, bytes], ...]  # (name as sent, value without OWS)
    version: int  # 10 or 11

    @property
    def raw(self) -> bytes:
        out = self.lead + self.start + self.eols[0]
        for line, eol in zip(self.lines, self.eols[1:-1], strict=True):
            out += line + eol
        return out + self.eols[-1]

    @property
    def headers(self) -> Headers:
        """As h11 and headers.py have them: lower-case names, values."""
        return [(name.lower(), value) for name, value in self.fields]

    def with_lines(self, lines: Sequence[bytes]) -> bytes:
        """The raw head with other field lines (all ending in CRLF)."""
        body = b"".join(line + b"\r\n" for line in lines)
        return self.lead + self.start + b"\r\n" + body + b"\r\n"


@st.composite
def assemble(
    draw: st.DrawFn, start: bytes, fields: list[tuple[bytes, bytes]], version: int
) -> Head:
    ordered = draw(st.permutations(fields))
    lines = tuple(
        name + b":" + draw(st.sampled_from(OWS)) + value + draw(st.sampled_from(OWS))
        for name, value in ordered
    )
    if draw(st.booleans()):
        eols = (b"\r\n",) * (len(lines) + 2)
    else:
        eols = tuple(
            draw(st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=len(lines) + 2,
                          max_size=len(lines) + 2))
        )  # fmt: skip
    return Head(b"", start, lines, eols, tuple(ordered), version)


def _common_fields(draw: st.DrawFn, plain: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Connection fields naming some of ``plain``, and fixed hop-by-hop ones."""
    fields: list[tuple[bytes, bytes]] = []
    names = [name for name, _ in plain]
    for _ in range(draw(st.integers(0, 2))):
        fields.append((draw(any_case(b"Connection")), draw(connection_values(names))))
    fields += draw(st.lists(st.sampled_from(HOP_FIELDS), max_size=2))
    return fields


@st.composite
def requests(draw: st.DrawFn, *, host: bool | None = None, framing: str | None = None) -> Head:
    """A valid request head.

    ``host``: whether it has a Host field (default: always in HTTP/1.1, which h11 insists
    on, sometimes in HTTP/1.0). ``framing``: "none", "length", "lengths" (two identical
    Content-Lengths) or "chunked"; default: any the version allows.
    """
    version = draw(st.sampled_from([10, 11]))
    if framing is None:
        framing = draw(
            st.sampled_from(["none", "length", "lengths", *(["chunked"] if version == 11 else [])])
        )
    if framing == "chunked":
        version = 11
    start = draw(methods) + b" " + draw(targets) + b" HTTP/1." + str(version - 10).encode()
    plain = draw(st.lists(st.tuples(plain_names, values), max_size=5))
    fields = plain + _common_fields(draw, plain)
    if host if host is not None else (version == 11 or draw(st.booleans())):
        fields.append((draw(any_case(b"Host")), draw(host_values)))
    if framing in ("length", "lengths"):
        length = draw(content_lengths(10**18 - 1))
        fields += [(draw(any_case(b"Content-Length")), length)] * (1 + (framing == "lengths"))
    elif framing == "chunked":
        fields.append((draw(any_case(b"Transfer-Encoding")), draw(any_case(b"chunked"))))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        fields.append((draw(any_case(b"Upgrade")), draw(st.sampled_from(UPGRADES))))
    fields += draw(st.lists(st.sampled_from(IDENTITY_FIELDS + UNDERSCORE_FIELDS), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        fields.append((draw(any_case(b"Expect")), draw(any_case(b"100-continue"))))
    for name in (b"X-Forwarded-For", b"X-Forwarded-For", b"X-Real-IP"):
        if draw(st.integers(0, 3)) == 0:
            fields.append((draw(any_case(name)), draw(st.sampled_from(IPS))))
    for name, choices in (
        (b"X-Forwarded-Proto", [b"https", b"http"]),
        (b"X-Forwarded-Host", [b"up.example", b""]),
        (b"X-Forwarded-Port", [b"443", b"8443"]),
    ):
        if draw(st.integers(0, 3)) == 0:
            fields.append((draw(any_case(name)), draw(st.sampled_from(choices))))
    head = draw(assemble(start, fields, version))
    lead = b"".join(draw(st.lists(st.sampled_from([b"\r\n", b"\n"]), max_size=2)))
    return replace(head, lead=lead)


@st.composite
def responses(draw: st.DrawFn) -> Head:
    """A valid response head (status 100-599), framing fields in any combination."""
    status = draw(
        st.one_of(st.sampled_from([100, 101, 103, 200, 204, 304, 404]), st.integers(100, 599))
    )
    version = 11 if status == 101 else draw(st.sampled_from([10, 11]))
    reason = draw(st.one_of(st.sampled_from([b"OK", b"Not Found", b" odd  one "]), values))
    start = b"HTTP/1.%d %d" % (version - 10, status)
    if reason or draw(st.booleans()):
        start += b" " + reason
    plain = draw(st.lists(st.tuples(plain_names, values), max_size=5))
    fields = list(plain)
    if status == 101:
        # A 101 keeps its Connection field. Listing other fields in it is left out: the
        # codec drops them (RFC 9110 §7.6.1), response_headers(upgraded=True) keeps them.
        fields.append((b"Connection", draw(any_case(b"upgrade"))))
        fields.append((b"Upgrade", b"websocket"))
        fields += draw(st.lists(st.sampled_from(HOP_FIELDS), max_size=2))
    else:
        fields += _common_fields(draw, plain)
        if draw(st.integers(0, 4)) == 0:
            fields.append((b"Upgrade", b"h2c"))
    if draw(st.booleans()):
        length = draw(content_lengths(40))
        fields += [(draw(any_case(b"Content-Length")), length)] * draw(st.integers(1, 2))
    if draw(st.integers(0, 2)) == 0:
        fields.append((draw(any_case(b"Transfer-Encoding")), draw(any_case(b"chunked"))))
    return draw(assemble(start, fields, version))


def status_of(head: Head) -> int:
    return int(head.start[9:12])


# --------------------------------------------------------------------------- oracles


def connection_tokens(headers: Headers) -> set[bytes]:
    return {
        token.strip(b" \t").lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
        if token.strip(b" \t")
    }


def rfc_keep_alive(version: int, headers: Headers) -> bool:
    """RFC 9112 §9.3: close wins; HTTP/1.1 persists; HTTP/1.0 only with keep-alive.

    An HTTP/1.0 message with Transfer-Encoding is faulty framing (§6.1): close after it.
    """
    listed = connection_tokens(headers)
    if b"close" in listed:
        return False
    if version == 10 and any(n == b"transfer-encoding" for n, _ in headers):
        return False
    return version == 11 or b"keep-alive" in listed


def first(headers: Headers, name: bytes) -> bytes | None:
    return next((v for n, v in headers if n == name), None)


def asked_upgrade(version: int, headers: Headers) -> bytes | None:
    """The protocol a request asks to switch to and the proxy passes on: WebSocket only."""
    return b"websocket" if version == 11 and websocket_upgrade(headers) else None


def h11_request(data: bytes) -> tuple[h11.Request, h11.Connection]:
    """h11 as a server reading ``data``: the request and the connection (for its state)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    return event, conn


def h11_try_request(data: bytes) -> tuple[h11.Request, h11.Connection] | None:
    """What h11 reads from ``data``: None when it refuses it or wants more."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return (event, conn) if isinstance(event, h11.Request) else None


def h11_framing(headers: Headers) -> tuple[bool, int]:
    """(chunked, Content-Length or -1), as h11 frames a body with ``headers``."""
    if any(n == b"transfer-encoding" for n, _ in headers):
        return True, -1
    length = first(headers, b"content-length")
    return False, -1 if length is None else int(length)


def h11_rejects_request(data: bytes) -> bool:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        conn.next_event()
    except h11.RemoteProtocolError:
        return True
    return False


def h11_client(method: bytes, *, upgrade: bool = False) -> h11.Connection:
    """h11 as a client that has sent ``method`` and now waits for the response."""
    conn = h11.Connection(h11.CLIENT)
    headers = [(b"host", b"up.example")]
    if upgrade:
        headers += [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
    conn.send(h11.Request(method=method, target=b"/", headers=headers))
    conn.send(h11.EndOfMessage())
    return conn


def h11_response(
    data: bytes, method: bytes, *, upgrade: bool = False
) -> tuple[h11.Response | h11.InformationalResponse, h11.Connection]:
    conn = h11_client(method, upgrade=upgrade)
    conn.receive_data(data)
    event = conn.next_event()
    assert isinstance(event, h11.Response | h11.InformationalResponse), event
    return event, conn


def h11_body(conn: h11.Connection, more: bytes, *, eof: bool) -> bytes:
    """The body h11 reads from ``more`` (then EOF, if ``eof``) up to its EndOfMessage."""
    conn.receive_data(more)
    if eof:
        conn.receive_data(b"")
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.EndOfMessage):
            return body
        assert isinstance(event, h11.Data), event
        body += event.data


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
        head.upgrade,
        head.host,
    )


def parsed_request(data: bytes) -> RequestHead:
    head = parse_request(data, MAX_HEAD)
    assert head is not None, data
    return head


def parsed_response(data: bytes, head_request: bool = False) -> ResponseHead:
    head = parse_response(data, MAX_HEAD, head_request)
    assert head is not None, data
    return head


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


H = b"Host: a.example\r\n"


def post(*lines: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST / " + version + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# --------------------------------------------------------------------------- 1. request heads


@SETTINGS
@given(req=requests(), body=st.binary(max_size=40))
def test_a_request_head_means_to_the_codec_what_it_means_to_h11(req: Head, body: bytes) -> None:
    raw = req.raw
    head = parsed_request(raw + body)
    headers = req.headers

    fed = raw[len(req.lead) :] + body  # h11 refuses blank lines before the request line
    event, conn = h11_request(fed)
    assert head.method == event.method
    assert head.target == event.target
    assert head.version == (10 if event.http_version == b"1.0" else 11)
    assert head.headers == headers
    assert as_h11(head.headers) == list(event.headers)
    assert head.size == len(raw) == len(req.lead) + h11_consumed(conn, fed)

    lengths = [v for n, v in headers if n == b"content-length"]
    assert head.content_length == (int(lengths[0]) if lengths else -1)
    assert head.chunked == any(n == b"transfer-encoding" for n, _ in headers)
    assert head.host == first(headers, b"host")
    assert head.upgrade == asked_upgrade(req.version, headers)
    for name, _ in req.fields:
        assert head.header(name.swapcase()) == first(headers, name.lower())
    assert head.header(b"x-not-sent") is None

    # 100-continue: h11 ignores it in HTTP/1.0 requests, as RFC 9110 §10.1.1 says to.
    assert head.expect_continue == conn.they_are_waiting_for_100_continue
    assert head.keep_alive == rfc_keep_alive(req.version, headers)
    if req.version == 11:  # h11 keeps no HTTP/1.0 connection alive
        conn.send(h11.Response(status_code=204, headers=[]))
        conn.send(h11.EndOfMessage())
        assert head.keep_alive == (conn.our_state is h11.DONE)


@pytest.mark.parametrize("lead", [b"\r\n", b"\n", b"\r\n\n\r\n"])
def test_blank_lines_before_a_request_line_are_skipped(lead: bytes) -> None:
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request
    # line. h11 refuses any, so the properties above hand it the bytes after them.
    raw = lead + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert h11_rejects_request(raw)
    head = parsed_request(raw + b"next")
    assert (head.method, head.target, head.size) == (b"GET", b"/", len(raw))


@pytest.mark.slow
@SETTINGS
@given(req=requests(), body=st.binary(min_size=1, max_size=40))
def test_a_request_head_arriving_in_pieces_is_read_once_complete(req: Head, body: bytes) -> None:
    raw = req.raw
    for cut in range(len(raw)):
        assert parse_request(raw[:cut], MAX_HEAD) is None, raw[:cut]
    assert request_summary(parsed_request(raw)) == request_summary(parsed_request(raw + body))


# --------------------------------------------------------------------------- 2. forwarding

CLIENT_IPS = st.sampled_from(["203.0.113.9", "10.1.2.3", "2001:db8::1"])


def expected_forward(
    req: Head, client: Client, trusted: bool, authority: bytes | None = None
) -> tuple[Headers, list[bytes]]:
    """The fields the upstream must get (lower-case names), and the end-to-end ones' lines.

    ``authority``: the target was absolute-form, with this authority.
    """
    headers = req.headers
    peers = TrustedProxies([client.address] if trusted else [])
    upgrade = asked_upgrade(req.version, headers)
    out = request_headers(
        headers,
        client,
        peers,
        upgrade=upgrade,
        host=authority or b"",
        override_host=authority is not None,
    )
    out = [(n, v) for n, v in out if n != b"expect"]  # the proxy answers 100-continue itself
    tail = 0 if upgrade is None else 2  # Connection: upgrade, Upgrade: ...
    chunked = any(n == b"transfer-encoding" for n, _ in headers)
    if chunked:
        out.insert(len(out) - tail, (b"transfer-encoding", b"chunked"))
    # The end-to-end fields come first, each as it was sent (name case kept): they are a
    # subsequence of the fields received, and a greedy match finds it.
    # (Content-Length is written again once, and a missing Host is added: not the client's)
    end_to_end = [f for f in out[: len(out) - 5 - chunked - tail] if f[0] != b"content-length"]
    if authority is not None or not any(name.lower() == b"host" for name, _ in req.fields):
        end_to_end = end_to_end[1:]
    lines: list[bytes] = []
    for name, value in req.fields:
        if len(lines) < len(end_to_end) and (name.lower(), value) == end_to_end[len(lines)]:
            lines.append(name + b": " + value)
    assert len(lines) == len(end_to_end)
    return out, lines


@pytest.mark.slow
@SETTINGS
@given(
    req=requests(host=True),
    ip=CLIENT_IPS,
    scheme=st.sampled_from(["http", "https"]),
    port=st.integers(1, 65535),
    target=targets,
    trusted=st.booleans(),
    authority=st.none() | host_values.filter(bool),
)
def test_the_forwarded_head_carries_what_request_headers_computes(
    req: Head,
    ip: str,
    scheme: str,
    port: int,
    target: bytes,
    trusted: bool,
    authority: bytes | None,
) -> None:
    head = parsed_request(req.raw)
    forwarded = (target, ip.encode(), scheme.encode(), str(port).encode(), trusted)
    if authority is None:
        out = head.forward_head(*forwarded)
    else:
        out = head.forward_head(*forwarded, authority, override_host=True)
    expected, lines = expected_forward(req, Client(ip, scheme, port), trusted, authority)

    event, conn = h11_request(out)
    assert h11_consumed(conn, out) == len(out)
    assert (event.method, event.target, event.http_version) == (head.method, target, b"1.1")
    assert list(event.headers) == as_h11(expected)
    sent = out.split(b"\r\n")
    assert sent[0] == head.method + b" " + target + b" HTTP/1.1"
    assert [line for line in sent[1:] if line in lines] == lines
    again = parsed_request(out)  # and the codec reads its own output the same way
    assert again.headers == expected
    assert again.size == len(out)
    assert (again.content_length, again.chunked) == (head.content_length, head.chunked)


@pytest.mark.slow
@SETTINGS
@given(
    req=requests(host=True),
    trusted=st.booleans(),
    vhost=st.none() | host_values.filter(bool),
    dropped=st.lists(plain_names, max_size=3),
    extra=st.lists(st.tuples(plain_names, values), max_size=3),
)
def test_a_route_plan_sets_the_host_drops_and_adds_fields_upstream(
    req: Head,
    trusted: bool,
    vhost: bytes | None,
    dropped: list[bytes],
    extra: list[tuple[bytes, bytes]],
) -> None:
    # upstream-vhost, proxy-set-headers and x-forwarded-prefix: the plan's fields replace
    # the client's of the same name, everything else is what a plain route sends
    head = parsed_request(req.raw)
    forwarded = (b"/t", b"203.0.113.9", b"http", b"80", trusted)
    drop = frozenset(name.lower() for name in dropped)
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in extra)
    out = head.forward_head(*forwarded, vhost=vhost or b"", extra=lines, drop=drop)
    plain = parsed_request(head.forward_head(*forwarded)).headers
    expected = [(n, v) for n, v in plain if n not in drop or n == b"host"]
    assert dict(plain)[b"x-forwarded-host"] in (head.host, head.header(b"x-forwarded-host"))
    if vhost is not None:  # written first, as a Host the proxy sets always is
        expected = [(b"host", vhost)] + [(n, v) for n, v in expected if n != b"host"]
    expected += [(name.lower(), value) for name, value in extra]
    _, conn = h11_request(out)
    assert h11_consumed(conn, out) == len(out)
    assert parsed_request(out).headers == expected
    # the upstream still learns the host the client asked for
    assert dict(expected)[b"x-forwarded-host"] == dict(plain)[b"x-forwarded-host"]


@pytest.mark.slow
@SETTINGS
@given(req=requests(host=True), trusted=st.booleans())
def test_an_http_1_0_route_is_sent_an_http_1_0_request_that_closes(
    req: Head, trusted: bool
) -> None:
    # proxy-http-version "1.0": the same fields, one request per connection, no upgrade,
    # and no chunked body (HTTP/1.0 has no such framing)
    head = parsed_request(req.raw)
    forwarded = (b"/t", b"203.0.113.9", b"http", b"80", trusted)
    if head.chunked:
        with pytest.raises(ValueError, match="chunked"):
            head.forward_head(*forwarded, http10=True)
        return
    out = head.forward_head(*forwarded, http10=True)
    event, conn = h11_request(out)
    assert event.http_version == b"1.0"
    assert h11_consumed(conn, out) == len(out)
    plain, _ = h11_request(head.forward_head(*forwarded))
    hop = (b"connection", b"upgrade")
    assert [f for f in event.headers if f[0] not in hop] == [
        f for f in plain.headers if f[0] not in hop
    ]
    assert [v for n, v in event.headers if n in hop] == [b"close"]


@pytest.mark.slow
@SETTINGS
@given(
    resp=responses(),
    close=st.booleans(),
    dropped=st.lists(plain_names, max_size=3),
    extra=st.lists(st.tuples(plain_names, values), max_size=3),
)
def test_a_route_plan_sets_response_fields_for_the_client(
    resp: Head, close: bool, dropped: list[bytes], extra: list[tuple[bytes, bytes]]
) -> None:
    # custom-headers, CORS, HSTS: the plan's fields replace the upstream's of that name
    head = parsed_response(resp.raw)
    drop = frozenset(name.lower() for name in dropped)
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in extra)
    out = head.client_head(close, lines, drop)
    plain = parsed_response(head.client_head(close)).headers
    expected = [(n, v) for n, v in plain if n not in drop]
    expected += [(name.lower(), value) for name, value in extra]
    again = parsed_response(out)
    assert again.headers == expected
    assert again.size == len(out)
    assert (again.status, again.chunked, again.content_length) == (
        head.status,
        head.chunked,
        head.content_length,
    )


@pytest.mark.parametrize(
    ("listed", "field"),
    [
        (b"host", (b"host", b"a.example")),
        (b"Content-Length", (b"content-length", b"3")),
        (b"transfer-encoding", (b"transfer-encoding", b"chunked")),
    ],
)
def test_connection_cannot_strip_host_or_framing_from_a_forwarded_request(
    listed: bytes, field: tuple[bytes, bytes]
) -> None:
    # A client must not be able to strip the Host or the body's framing from what the
    # upstream gets, so that it frames the body as the proxy does.
    framing = (
        b"Content-Length: 3" if field[0] != b"transfer-encoding" else b"Transfer-Encoding: chunked"
    )
    raw = b"POST / HTTP/1.1\r\nHost: a.example\r\nConnection: %s\r\n%s\r\n\r\n" % (listed, framing)
    head = parsed_request(raw)
    event, _ = h11_request(head.forward_head(b"/", b"203.0.113.9", b"http", b"80", False))
    assert field in list(event.headers)
    client = Client("203.0.113.9", "http", 80)
    passed_on = request_headers(head.headers, client, TrustedProxies())
    if head.chunked:
        passed_on.append((b"transfer-encoding", b"chunked"))  # which the proxy adds back
    assert field in passed_on


def test_a_forwarded_http10_request_without_host_is_valid_http11() -> None:
    # HTTP/1.0 needs no Host, but it is forwarded as HTTP/1.1, which must carry one
    # (RFC 9112 §3.2; empty is allowed); nginx and h11 answer 400 without it.
    head = parsed_request(b"GET / HTTP/1.0\r\n\r\n")
    out = head.forward_head(b"/", b"203.0.113.9", b"http", b"80", False)
    assert not h11_rejects_request(out), out


def test_an_http11_request_without_host_is_refused() -> None:
    # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    # HTTP/1.1 request message that lacks a Host header field". h11 does.
    raw = b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"
    assert h11_rejects_request(raw)
    with pytest.raises(BadRequestError):
        parse_request(raw, MAX_HEAD)


@pytest.mark.parametrize("lengths", [(b"5", b"05"), (b"0", b"00"), (b"7", b"0007")])
def test_equal_content_lengths_spelled_differently_never_reach_the_upstream(
    lengths: tuple[bytes, bytes],
) -> None:
    # The codec compares Content-Lengths as numbers and forwards both fields as they came;
    # an upstream that compares them as text (h11) then refuses the request with a 400.
    # Either refusing them here or forwarding one Content-Length would do.
    raw = post(H + b"Content-Length: " + lengths[0], b"Content-Length: " + lengths[1])
    try:
        head = parse_request(raw, MAX_HEAD)
    except BadRequestError:
        return
    assert head is not None
    out = head.forward_head(b"/", b"203.0.113.9", b"http", b"80", False)
    assert not h11_rejects_request(out), out


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
def test_100_continue_is_awaited_only_by_http11_clients(version: bytes) -> None:
    # RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0
    # request, and §15.2: it MUST NOT send a 1xx response to an HTTP/1.0 client. The proxy
    # sends "100 Continue" whenever expect_continue is set.
    raw = b"POST / " + version + b"\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    _, conn = h11_request(raw)
    assert parsed_request(raw).expect_continue == conn.they_are_waiting_for_100_continue
    assert parsed_request(raw).expect_continue == (version == b"HTTP/1.1")


@pytest.mark.parametrize("connection", [b"keep-alive, close", b"close, keep-alive"])
def test_close_wins_over_keep_alive_in_http10(connection: bytes) -> None:
    # RFC 9112 §9.3: "close" ends the connection whatever else Connection says.
    request = b"GET / HTTP/1.0\r\nConnection: " + connection + b"\r\n\r\n"
    response = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: " + connection + b"\r\n\r\n"
    assert not parsed_request(request).keep_alive
    assert not parsed_response(response).keep_alive


def test_the_last_trusted_forwarded_value_wins_as_in_request_headers() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\nX-Forwarded-For: 1.1.1.1\r\n"
        b"x-forwarded-proto: https\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n"
    )
    head = parsed_request(raw)
    out = head.forward_head(b"/", b"10.0.0.1", b"http", b"80", True)
    event, _ = h11_request(out)
    peers = TrustedProxies(["10.0.0.1"])
    assert list(event.headers) == request_headers(
        head.headers, Client("10.0.0.1", "http", 80), peers
    )


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("chain", [False, True])
@pytest.mark.parametrize("real_ip", [b"", b"198.51.100.4"])
def test_the_chain_and_real_ip_options_match_request_headers(
    trusted: bool, chain: bool, real_ip: bytes
) -> None:
    """``use-forwarded-headers`` without ``compute-full-forwarded-for`` drops a trusted
    peer's chain; the real client address replaces any X-Real-IP."""
    raw = (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 10.0.0.2\r\n"
        b"X-Real-IP: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    head = parsed_request(raw)
    out = head.forward_head(
        b"/", b"10.0.0.1", b"http", b"80", trusted, chain=chain, real_ip=real_ip
    )
    event, _ = h11_request(out)
    peers = TrustedProxies(["10.0.0.1"] if trusted else [])
    expected = request_headers(
        head.headers, Client("10.0.0.1", "http", 80), peers, chain=chain, real_ip=real_ip
    )
    assert list(event.headers) == expected
    sent = dict(expected)
    assert sent[b"x-forwarded-for"] == (
        b"1.1.1.1, 10.0.0.2, 10.0.0.1" if trusted and chain else b"10.0.0.1"
    )
    assert sent[b"x-real-ip"] == (real_ip or (b"1.1.1.1" if trusted else b"10.0.0.1"))


# --------------------------------------------------------------------------- 2b. spoofing


def forwarded(
    raw: bytes, *, trusted: bool = False, host: bytes = b"", override_host: bool = False
) -> Headers:
    """The fields the upstream gets for the request head ``raw``, as h11 reads them."""
    head = parsed_request(raw)
    client = (b"203.0.113.9", b"https", b"443", trusted, host)
    out = head.forward_head(b"/", *client, override_host=override_host)
    event, conn = h11_request(out)
    assert h11_consumed(conn, out) == len(out)
    return list(event.headers)


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize(("name", "value"), UNDERSCORE_FIELDS)
def test_a_request_field_named_with_an_underscore_never_reaches_the_upstream(
    name: bytes, value: bytes, trusted: bool
) -> None:
    # nginx's default (underscores_in_headers off, ignore_invalid_headers on), which
    # ingress-nginx keeps: behind a backend that reads "_" as "-" (CGI, PHP, WSGI)
    # X_Forwarded_For would pass for the X-Forwarded-For the proxy sets.
    raw = b"GET / HTTP/1.1\r\nHost: a.example\r\n%s: %s\r\nX-Kept: 1\r\n\r\n" % (name, value)
    sent = forwarded(raw, trusted=trusted)
    assert name.lower() not in [n for n, _ in sent]
    assert (b"x-kept", b"1") in sent
    assert (b"x-forwarded-for", b"203.0.113.9") in sent
    assert parsed_request(raw).header(name) == value  # parsed, only not passed on


def test_a_response_field_named_with_an_underscore_is_passed_on() -> None:
    raw = reply(OK, b"X_Backend_Id: 7", b"Content-Length: 0")
    event, _ = h11_response(parsed_response(raw).client_head(False), b"GET")
    assert (b"x_backend_id", b"7") in list(event.headers)


@pytest.mark.parametrize(("name", "value"), IDENTITY_FIELDS)
def test_identity_fields_reach_the_upstream_from_a_trusted_peer_only(
    name: bytes, value: bytes
) -> None:
    # A client must not be able to say its certificate was verified (ssl-client-verify:
    # SUCCESS) or which URL it asked for (X-Original-URL, past the Ingress's path rules).
    raw = b"GET / HTTP/1.1\r\nHost: a.example\r\n%s: %s\r\n\r\n" % (name.swapcase(), value)
    assert name.lower() not in [n for n, _ in forwarded(raw)]
    assert (name.lower(), value) in forwarded(raw, trusted=True)
    # and a Connection header listing them changes neither
    listed = raw.replace(b"\r\n\r\n", b"\r\nConnection: %s\r\n\r\n" % name)
    assert name.lower() not in [n for n, _ in forwarded(listed)]
    assert (name.lower(), value) in forwarded(listed, trusted=True)


def test_identity_fields_in_a_response_are_passed_on() -> None:
    raw = reply(OK, b"Forwarded: for=x", b"X-Original-URL: /a", b"Content-Length: 0")
    event, _ = h11_response(parsed_response(raw).client_head(False), b"GET")
    assert (b"forwarded", b"for=x") in list(event.headers)
    assert (b"x-original-url", b"/a") in list(event.headers)


UPGRADE_REQUEST = b"GET /chat HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, Upgrade\r\n"


@pytest.mark.parametrize(
    ("upgrade", "websocket"),
    [
        (b"websocket", True),
        (b"WebSocket", True),
        (b"websocket, websocket", True),
        (b"websocket ,\t", True),
        (b"h2c", False),
        (b"h2c, websocket", False),
        (b"websocket, h2c", False),
        (b"TLS/1.0", False),
        (b"websocket/13", False),
        (b"", False),
        (b",", False),
    ],
)
def test_only_a_websocket_upgrade_is_asked_for_again(upgrade: bytes, websocket: bool) -> None:
    # Any other upgrade is a tunnel past routing (h2c above all: its HTTP/2 requests
    # would reach the backend unrouted); it goes on as a plain request.
    raw = UPGRADE_REQUEST + b"Upgrade: %s\r\nHTTP2-Settings: AAMAAABk\r\n\r\n" % upgrade
    head = parsed_request(raw)
    sent = forwarded(raw)
    names = [n for n, _ in sent]
    assert b"http2-settings" not in names
    if websocket:
        assert head.upgrade == b"websocket"
        assert sent[-2:] == [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
    else:
        assert head.upgrade is None
        assert b"upgrade" not in names
        assert b"connection" not in names


def test_every_upgrade_field_must_ask_for_websocket_alone() -> None:
    raw = UPGRADE_REQUEST + b"Upgrade: websocket\r\nUpgrade: h2c\r\n\r\n"
    assert parsed_request(raw).upgrade is None
    assert parsed_request(raw.replace(b"h2c", b"WEBSOCKET")).upgrade == b"websocket"


ABSOLUTE = b"GET http://admin.example.com/x HTTP/1.1\r\nHost: site.example.com\r\n"


def test_an_absolute_form_target_names_the_host_sent_upstream() -> None:
    # RFC 9112 §3.2.2: the server MUST ignore the Host header; the target's authority
    # is what decide() routed on, so it is what the upstream and X-Forwarded-Host say.
    sent = forwarded(ABSOLUTE + b"\r\n", host=b"admin.example.com", override_host=True)
    assert sent[0] == (b"host", b"admin.example.com")
    assert [v for n, v in sent if n == b"host"] == [b"admin.example.com"]
    assert (b"x-forwarded-host", b"admin.example.com") in sent
    assert b"site.example.com" not in b"".join(v for _, v in sent)


def test_an_absolute_form_target_keeps_a_trusted_forwarded_host() -> None:
    raw = ABSOLUTE + b"X-Forwarded-Host: lb.example\r\n\r\n"
    sent = forwarded(raw, trusted=True, host=b"admin.example.com", override_host=True)
    assert sent[0] == (b"host", b"admin.example.com")
    assert (b"x-forwarded-host", b"lb.example") in sent


def test_without_override_host_the_clients_host_is_sent() -> None:
    sent = forwarded(ABSOLUTE + b"\r\n", host=b"admin.example.com")
    assert sent[0] == (b"host", b"site.example.com")


def test_override_host_needs_a_host() -> None:
    head = parsed_request(ABSOLUTE + b"\r\n")
    with pytest.raises(ValueError, match="override_host"):
        head.forward_head(b"/", b"203.0.113.9", b"https", b"443", False, override_host=True)


# --------------------------------------------------------------------------- 3. refusals

# (request, whether h11 refuses it too): the codec answers 400 to every one.
REFUSED_REQUESTS = [
    pytest.param(post(b"Host: a", b"X: a", b" b"), False, id="obs-fold"),
    pytest.param(post(b"Host: a", b"X: a", b"\tb"), False, id="obs-fold-tab"),
    pytest.param(post(b" Host: a"), True, id="fold-first-line"),
    pytest.param(post(b"Host : a"), True, id="space-before-colon"),
    pytest.param(post(b"Host\t: a"), True, id="tab-before-colon"),
    pytest.param(post(H + b"X(y): a"), True, id="paren-in-name"),
    pytest.param(post(H + b"X@y: a"), True, id="at-in-name"),
    pytest.param(post(H + b"\xc3\xa9: a"), True, id="non-ascii-name"),
    pytest.param(post(H + b": a"), True, id="empty-name"),
    pytest.param(post(H + b"no-colon"), True, id="no-colon"),
    pytest.param(post(H + b"X: a\x00b"), True, id="nul-in-value"),
    pytest.param(post(H + b"X: a\rb"), True, id="bare-cr-in-value"),
    pytest.param(post(H + b"X: a\r"), True, id="cr-cr-lf"),
    pytest.param(post(H + b"X: a\x0bb"), True, id="vt-in-value"),
    pytest.param(post(H + b"X: a\x01b"), False, id="soh-in-value"),
    pytest.param(post(H + b"X: a\x1bb"), False, id="esc-in-value"),
    pytest.param(post(H + b"X: a\x7fb"), False, id="del-in-value"),
    pytest.param(post(H + b"Content-Length: 1", b"Content-Length: 2"), True, id="two-lengths"),
    pytest.param(post(H + b"Content-Length: 1, 2"), True, id="length-list"),
    pytest.param(post(H + b"Content-Length: 1, 1"), False, id="length-list-same"),
    pytest.param(post(H + b"Content-Length: abc"), True, id="length-letters"),
    pytest.param(post(H + b"Content-Length: 0x10"), True, id="length-hex"),
    pytest.param(post(H + b"Content-Length: -1"), True, id="length-negative"),
    pytest.param(post(H + b"Content-Length: +1"), True, id="length-plus"),
    pytest.param(post(H + b"Content-Length:"), True, id="length-empty"),
    pytest.param(post(H + b"Content-Length: 1 2"), True, id="length-space"),
    pytest.param(post(H + b"Content-Length: 1" + b"0" * 18), False, id="length-19-digits"),
    pytest.param(post(H + b"Content-Length: 1" + b"0" * 20), True, id="length-21-digits"),
    pytest.param(post(H + b"Content-Length: 3", b"Transfer-Encoding: chunked"), False, id="cl-te"),
    pytest.param(post(H + b"Transfer-Encoding: chunked", b"Content-Length: 3"), False, id="te-cl"),
    pytest.param(post(H + b"Transfer-Encoding: gzip"), True, id="te-gzip"),
    pytest.param(post(H + b"Transfer-Encoding: gzip, chunked"), True, id="te-gzip-chunked"),
    pytest.param(post(H + b"Transfer-Encoding: chunked, chunked"), True, id="te-list"),
    pytest.param(post(H + b"Transfer-Encoding: identity"), True, id="te-identity"),
    pytest.param(post(H + b"Transfer-Encoding:"), True, id="te-empty"),
    pytest.param(
        post(H + b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), True, id="te-twice"
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", version=b"HTTP/1.0"), False, id="te-in-http10"
    ),
    pytest.param(post(b"Host: a", b"Host: a"), True, id="two-hosts"),
    pytest.param(post(b"Host: a", b"host: b"), True, id="two-hosts-differ"),
    pytest.param(post(H, version=b"HTTP/1.2"), False, id="http12"),
    pytest.param(post(H, version=b"HTTP/2.0"), False, id="http20"),
    pytest.param(post(H, version=b"HTTP/0.9"), False, id="http09"),
    pytest.param(post(H, version=b"HTTP/1.10"), True, id="http110"),
    pytest.param(post(H, version=b"http/1.1"), True, id="lower-case-http"),
    pytest.param(post(H, version=b"HTTP/1"), True, id="http1"),
    pytest.param(post(H, version=b"HTTP/1.1 "), True, id="space-after-version"),
    pytest.param(post(H, version=b"HTTP/1.1 x"), True, id="word-after-version"),
    pytest.param(b"GET /\r\n\r\n", True, id="http09-simple"),
    pytest.param(b"GET  / HTTP/1.1\r\n" + H + b"\r\n", True, id="two-spaces"),
    pytest.param(b" GET / HTTP/1.1\r\n" + H + b"\r\n", True, id="space-first"),
    pytest.param(b"GET/ HTTP/1.1\r\n" + H + b"\r\n", True, id="no-space"),
    pytest.param(b"G(T / HTTP/1.1\r\n" + H + b"\r\n", True, id="bad-method"),
    pytest.param(b"GET /\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", True, id="non-ascii-target"),
    pytest.param(b"GET /\x01 HTTP/1.1\r\n" + H + b"\r\n", True, id="control-in-target"),
    pytest.param(b"GET /\tx HTTP/1.1\r\n" + H + b"\r\n", True, id="tab-in-target"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", True, id="tls-hello"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False, id="h2-preface"),
    pytest.param(
        post(H + b"Connection: " + b", ".join(b"x%d" % i for i in range(17))), False, id="17-tokens"
    ),
]


@pytest.mark.parametrize(("raw", "h11_refuses"), REFUSED_REQUESTS)
def test_malformed_requests_are_refused_with_400(raw: bytes, h11_refuses: bool) -> None:
    with pytest.raises(BadRequestError) as refused:
        parse_request(raw, MAX_HEAD)
    assert refused.value.status == 400
    if h11_refuses:  # where h11 is more lenient, only the codec's answer is asserted
        assert h11_rejects_request(raw)


REFUSED_HOSTS = [
    pytest.param(
        b"site.example.com:80@admin.example.com", "invalid character in the port", id="port-user"
    ),
    pytest.param(b"admin@site.example.com", "invalid character in the host", id="userinfo"),
    pytest.param(b"site.example.com:x/../evil", "invalid character in the port", id="path-in-port"),
    pytest.param(b"a/b", "invalid character in the host", id="slash"),
    pytest.param(b"a\\b", "invalid character in the host", id="backslash"),
    pytest.param(b"a b", "invalid character in the host", id="space"),
    pytest.param(b"a\tb", "invalid character in the host", id="tab"),
    pytest.param(b"a?b", "invalid character in the host", id="query"),
    pytest.param(b"a#b", "invalid character in the host", id="fragment"),
    pytest.param(b"a%2eb", "invalid character in the host", id="percent"),
    pytest.param(b"caf\xc3\xa9.example", "invalid character in the host", id="non-ascii"),
    pytest.param(b"[::1", "malformed IP literal", id="open-literal"),
    pytest.param(b"[::1]x", "invalid character in the host", id="after-literal"),
    pytest.param(b"[::g]", "malformed IP literal", id="literal-letter"),
    pytest.param(b"[]", "empty IP literal", id="empty-literal"),
    pytest.param(b"host:99999x", "invalid character in the port", id="port-letter"),
    pytest.param(b"host:99999", "port over 65535", id="port-range"),
    pytest.param(b"host:123456", "port of more than 5 digits", id="port-digits"),
    pytest.param(b"host:80:80", "invalid character in the port", id="two-ports"),
    pytest.param(b"a..b", "empty label", id="empty-label"),
    pytest.param(b"[::ffff:10..1]", "empty label", id="empty-label-in-literal"),
    pytest.param(b".", "no host name", id="dot"),
    pytest.param(b":80", "no host name", id="port-only"),
    pytest.param(b"", "empty", id="empty"),
]  # fmt: skip


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
@pytest.mark.parametrize(("host", "reason"), REFUSED_HOSTS)
def test_a_malformed_host_is_refused_with_400_naming_why(
    host: bytes, reason: str, version: bytes
) -> None:
    # The router matches on Host and the upstream gets it: what could read as a user, a
    # path or a second host must not get that far. nginx answers 400 too (except where
    # ngx_http_validate_host is more lenient: "%", "@"; the codec's docstring lists them).
    raw = b"GET / " + version + b"\r\nHost: " + host + b"\r\n\r\n"
    with pytest.raises(BadRequestError, match="invalid Host header: " + reason) as refused:
        parse_request(raw, MAX_HEAD)
    assert refused.value.status == 400
    assert not valid_host(host)


@pytest.mark.parametrize(
    "host",
    [b"a", b"A.EXAMPLE", b"example.com.", b"under_score.example", b"-x-", b".lead",
     b"a.example:", b"a.example:0", b"a.example:65535", b"a.example:00080", b"10.0.0.1:80",
     b"[::1]", b"[2001:DB8::7]:443", b"[::ffff:10.0.0.1]", b"xn--bcher-kva.example"],
)  # fmt: skip
def test_well_formed_hosts_are_taken(host: bytes) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    assert parsed_request(raw).host == host
    assert valid_host(host)


@SETTINGS
@given(
    host=st.one_of(
        st.lists(st.sampled_from(b"aZ09-._:[]/@%x \x80"), max_size=14).map(bytes),
        host_values,
    )
)
def test_the_codec_takes_a_host_exactly_when_the_reference_does(host: bytes) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    host = host.strip(b" ")  # the field's OWS
    if valid_host(host):
        assert parsed_request(raw).host == host
    else:
        with pytest.raises(BadRequestError, match="invalid Host header"):
            parse_request(raw, MAX_HEAD)


@pytest.mark.parametrize(
    "raw",
    [
        post(H + b"Content-Length: 5", b"content-length: 5"),
        post(H + b"Content-Length: 18", b"X: y", b"CONTENT-LENGTH:18 "),
        post(H + b"Content-Length: 999999999999999999"),
        post(H + b"Transfer-Encoding: ChUnKeD"),
        post(H + b"Connection: " + b", ".join(b"x%d" % i for i in range(16))),
        post(H + b"X:", b"Y: \t "),
        post(H + b"X: \x80\xff obs-text \t kept"),
    ],
    ids=["same-length-twice", "same-length-spelled", "18-digits", "chunked-any-case",
         "16-tokens", "empty-values", "obs-text"],
)  # fmt: skip
def test_what_the_codec_and_h11_both_take(raw: bytes) -> None:
    head = parsed_request(raw)
    event, _ = h11_request(raw)
    assert as_h11(head.headers) == list(event.headers)


@REFUSALS
@given(
    req=requests(),
    data=st.data(),
    control=st.sampled_from([c for c in range(0x20) if c not in (0x09, 0x0A)] + [0x7F]),
)
def test_a_control_character_in_any_field_value_is_refused(
    req: Head, data: st.DataObject, control: int
) -> None:
    lines = [*req.lines, b"X-Last: value"]
    index = data.draw(st.integers(0, len(lines) - 1))
    line = lines[index]
    at = data.draw(st.integers(line.index(b":") + 1, len(line)))
    lines[index] = line[:at] + bytes([control]) + b"x" + line[at:]  # never a CRLF's CR
    with pytest.raises(BadRequestError):
        parse_request(req.with_lines(lines), MAX_HEAD)


@REFUSALS
@given(req=requests(), data=st.data())
def test_obs_fold_anywhere_is_refused(req: Head, data: st.DataObject) -> None:
    lines = list(req.lines)
    at = data.draw(st.integers(0, len(lines)))
    fold = data.draw(st.sampled_from([b" ", b"\t", b"  "])) + data.draw(values)
    lines.insert(at, fold)
    with pytest.raises(BadRequestError):
        parse_request(req.with_lines(lines), MAX_HEAD)


@REFUSALS
@given(
    req=requests(framing="none", host=True),
    lengths=st.lists(st.integers(0, 10**6), min_size=2, max_size=3, unique=True),
)
def test_differing_content_lengths_are_refused_by_both(req: Head, lengths: list[int]) -> None:
    raw = req.with_lines([*req.lines, *(b"Content-Length: %d" % n for n in lengths)])
    with pytest.raises(BadRequestError):
        parse_request(raw, MAX_HEAD)
    assert h11_rejects_request(raw[len(req.lead) :])


@REFUSALS
@given(req=requests(framing="chunked"), length=st.integers(0, 99), first=st.booleans())
def test_content_length_with_chunked_is_refused(req: Head, length: int, first: bool) -> None:
    extra = b"Content-Length: %d" % length
    lines = [extra, *req.lines] if first else [*req.lines, extra]
    with pytest.raises(BadRequestError):
        parse_request(req.with_lines(lines), MAX_HEAD)


@REFUSALS
@given(req=requests(), data=st.data())
def test_a_head_over_max_head_is_431_complete_or_not(req: Head, data: st.DataObject) -> None:
    raw = req.raw
    assert parsed_request(raw).size == len(raw)
    assert parse_request(raw, len(raw)) is not None
    with pytest.raises(HeadersTooLargeError) as refused:
        parse_request(raw, data.draw(st.integers(0, len(raw) - 1)))
    assert refused.value.status == 431
    cut = data.draw(st.integers(1, len(raw) - 1))
    assert parse_request(raw[:cut], cut) is None
    with pytest.raises(HeadersTooLargeError):
        parse_request(raw[:cut], data.draw(st.integers(0, cut - 1)))


def test_endless_blank_lines_or_an_endless_field_are_431() -> None:
    with pytest.raises(HeadersTooLargeError):
        parse_request(b"\r\n" * 600, 1000)
    with pytest.raises(HeadersTooLargeError):
        parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, 1000)


MUTATION_BYTES = b"\r\n \t:,;\x00\x7f\x80aA0-"


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes inserted, replaced or deleted."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        byte = draw(st.sampled_from(MUTATION_BYTES))
        if op == 0:
            data.insert(at, byte)
        elif at < len(data):
            if op == 1:
                data[at] = byte
            else:
                del data[at]
    return bytes(data)


def fuzzed_requests() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        (st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.0\n"]) | st.just(b"")).flatmap(
            lambda start: st.binary(max_size=100).map(lambda tail: start + tail)
        ),
        requests().flatmap(lambda r: mutated(r.raw)),
    )


@pytest.mark.slow
@FUZZ
@given(data=fuzzed_requests(), trusted=st.booleans())
def test_any_bytes_are_a_request_head_or_a_400_or_431(data: bytes, trusted: bool) -> None:
    try:
        head = parse_request(data, 1000)
    except (BadRequestError, HeadersTooLargeError):
        return
    if head is None:
        return
    assert 0 < head.size <= len(data)
    # Whatever is accepted is forwarded as a head that frames the body the same way, for
    # the codec and for h11 (which both read exactly the head the proxy wrote).
    # (the server always has a host for a request without one: decide() refuses it else)
    out = head.forward_head(b"/x", b"10.0.0.1", b"https", b"443", trusted, b"fallback.example")
    again = parsed_request(out)
    assert again.size == len(out)
    assert (again.method, again.chunked, again.content_length) == (
        head.method,
        head.chunked,
        head.content_length,
    )
    event, conn = h11_request(out)
    assert h11_consumed(conn, out) == len(out)
    assert h11_framing(list(event.headers)) == (head.chunked, head.content_length)
    # Where h11 reads the same bytes too, it sees the same head and the same framing.
    lead = len(data) - len(data.lstrip(b"\r\n"))
    read = h11_try_request(data[lead:])
    if read is not None:
        event, conn = read
        assert head.size == lead + h11_consumed(conn, data[lead:])
        assert (event.method, event.target) == (head.method, head.target)
        assert h11_framing(list(event.headers)) == (head.chunked, head.content_length)


# --------------------------------------------------------------------------- 4. responses


def response_framing(status: int, headers: Headers, head_request: bool) -> tuple[bool, bool, int]:
    """RFC 9112 §6.3: (bodyless, chunked, Content-Length or -1)."""
    bodyless = head_request or status < 200 or status in (204, 304)
    coded = any(n == b"transfer-encoding" for n, _ in headers)  # overrides Content-Length
    length = first(headers, b"content-length")
    return bodyless, coded and not bodyless, -1 if coded or length is None else int(length)


@pytest.mark.slow
@SETTINGS
@given(resp=responses(), head_request=st.booleans(), payload=st.binary(max_size=60))
def test_a_response_head_means_to_the_codec_what_it_means_to_h11(
    resp: Head, head_request: bool, payload: bytes
) -> None:
    raw = resp.raw
    status = status_of(resp)
    head = parsed_response(raw, head_request)
    headers = resp.headers
    method = b"HEAD" if head_request and status != 101 else b"GET"
    event, conn = h11_response(raw, method, upgrade=status == 101)

    assert (head.status, head.reason) == (event.status_code, event.reason) == (status, head.reason)
    assert head.version == (10 if event.http_version == b"1.0" else 11)
    assert head.headers == headers
    assert as_h11(head.headers) == list(event.headers)
    assert head.size == len(raw) == h11_consumed(conn, raw)
    bodyless, chunked, length = response_framing(status, headers, method == b"HEAD")
    assert (head.bodyless, head.chunked, head.content_length) == (bodyless, chunked, length)
    assert head.until_close == (not bodyless and not chunked and length < 0)
    assert head.keep_alive == rfc_keep_alive(resp.version, headers)

    if isinstance(event, h11.InformationalResponse):
        return
    # h11 reads the body where the codec's framing says it is.
    if bodyless:
        framed = b""
    elif chunked:
        framed = chunk(payload) + b"0\r\n\r\n"
        assert ChunkedScanner().decode(framed) == (len(framed), payload)
    elif length >= 0:
        payload = (payload * (length // max(len(payload), 1) + 1))[:length] or b"\0" * length
        framed = payload
    else:
        framed = payload
    assert h11_body(conn, framed, eof=head.until_close) == (b"" if bodyless else payload)
    if resp.version == 11 and not head.until_close:
        assert head.keep_alive == (conn.their_state is h11.DONE)


@SETTINGS
@given(
    resp=responses(),
    head_request=st.booleans(),
    payload=st.binary(max_size=60),
    received_as=st.sampled_from(["whole", "short", "more"]),
)
def test_an_answer_is_complete_with_what_came_only_if_h11_reads_all_of_it_and_no_more(
    resp: Head, head_request: bool, payload: bytes, received_as: str
) -> None:
    """What the short way relies on to pass an answer on at once and pool its connection:
    the body is all there, nothing follows it, the upstream keeps the connection open,
    and its framing need not change (a chunked body goes the general way)."""
    status = status_of(resp)
    if status < 200:
        return  # not a final answer: the short way reads on
    head = parsed_response(resp.raw, head_request)
    _, conn = h11_response(resp.raw, b"HEAD" if head_request else b"GET")
    bodyless, chunked, length = response_framing(status, resp.headers, head_request)
    if bodyless:
        body = b""
    elif chunked:
        body = chunk(payload) + b"0\r\n\r\n"
    elif length >= 0:  # a long one is sent in part only: it is not all there
        body = (payload or b"\0") * (min(length, 4096) // max(len(payload), 1) + 1)
        body = body[: min(length, 4096)]
    else:
        body = payload
    received = {"whole": body, "short": body[:-1], "more": body + b"X"}[received_as]
    assert head.complete_with(received) == (
        h11_reads_all_and_no_more(conn, received) and head.keep_alive and not chunked
    )


def h11_reads_all_and_no_more(conn: h11.Connection, received: bytes) -> bool:
    """Whether h11, given ``received`` after a response head, finds the whole message in
    it and nothing after it."""
    if received:  # (none would tell h11 the connection closed)
        conn.receive_data(received)
    try:
        event = conn.next_event()
        while event not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.ConnectionClosed):
                return False
            event = conn.next_event()
    except h11.RemoteProtocolError:  # bytes after a message that ends the connection
        return False
    # (h11 closes after every HTTP/1.0 message: whether it keeps the connection open is
    # ``keep_alive``'s to say, checked against RFC 9112 above)
    return conn.their_state in (h11.DONE, h11.MUST_CLOSE) and not conn.trailing_data[0]


@SETTINGS
@given(resp=responses(), head_request=st.booleans(), more=st.binary(min_size=1, max_size=40))
def test_a_response_head_arriving_in_pieces_is_read_once_complete(
    resp: Head, head_request: bool, more: bytes
) -> None:
    raw = resp.raw
    for cut in range(len(raw)):
        assert parse_response(raw[:cut], MAX_HEAD, head_request) is None, raw[:cut]
    whole = response_summary(parsed_response(raw, head_request))
    assert whole == response_summary(parsed_response(raw + more, head_request))
    assert parse_response(raw, len(raw), head_request) is not None
    with pytest.raises(BadGatewayError):
        parse_response(raw, len(raw) - 1, head_request)
    with pytest.raises(BadGatewayError):
        parse_response(raw[:-1], len(raw) - 2, head_request)


@pytest.mark.slow
@SETTINGS
@given(resp=responses(), head_request=st.booleans(), close=st.booleans())
def test_the_head_sent_to_the_client_is_what_response_headers_computes(
    resp: Head, head_request: bool, close: bool
) -> None:
    status = status_of(resp)
    head = parsed_response(resp.raw, head_request)
    out = head.client_head(close)

    switching = status == 101
    expected = response_headers(resp.headers, upgraded=switching)
    if head.chunked:
        expected = [(n, v) for n, v in expected if n != b"content-length"]
        expected.append((b"transfer-encoding", b"chunked"))
    if close and not switching:
        expected.append((b"connection", b"close"))
    method = b"HEAD" if head_request and not switching else b"GET"
    event, conn = h11_response(out, method, upgrade=switching)
    assert h11_consumed(conn, out) == len(out)
    assert (event.status_code, event.reason, event.http_version) == (status, head.reason, b"1.1")
    assert list(event.headers) == as_h11(expected)
    assert out.split(b"\r\n")[0] == b"HTTP/1.1 %d %s" % (status, head.reason)
    again = parsed_response(out, head_request)
    assert again.headers == expected
    assert (again.status, again.reason, again.size) == (status, head.reason, len(out))
    assert (again.bodyless, again.chunked, again.content_length, again.until_close) == (
        head.bodyless,
        head.chunked,
        head.content_length,
        head.until_close,
    )
    if switching:
        assert again.header(b"connection") == head.header(b"connection")
        assert again.header(b"upgrade") == b"websocket"
    else:
        assert again.keep_alive == (not close) or not head.keep_alive


def test_a_101_drops_the_fields_its_connection_header_lists() -> None:
    # RFC 9110 §7.6.1, as for any other response; response_headers(upgraded=True) keeps
    # them (reported), so this pins the codec alone.
    raw = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\n"
        b"Upgrade: websocket\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-End: 2\r\n\r\n"
    )
    out = parsed_response(raw).client_head(True)
    event, _ = h11_response(out, b"GET", upgrade=True)
    assert list(event.headers) == [
        (b"connection", b"Upgrade, X-Hop"),
        (b"upgrade", b"websocket"),
        (b"x-end", b"2"),
    ]


def reply(status_line: bytes, *lines: bytes) -> bytes:
    return status_line + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


OK = b"HTTP/1.1 200 OK"

REFUSED_RESPONSES = [
    pytest.param(reply(b"HTTP/1.1 20 OK"), id="two-digit-status"),
    pytest.param(reply(b"HTTP/1.1 2000 OK"), id="four-digit-status"),
    pytest.param(reply(b"HTTP/1.1 099 Low"), id="status-under-100"),
    pytest.param(reply(b"HTTP/1.1 2x0 OK"), id="status-letters"),
    pytest.param(reply(b"HTTP/1.1  200 OK"), id="two-spaces"),
    pytest.param(reply(b"HTTP/1.1200 OK"), id="no-space"),
    pytest.param(reply(b"HTTP/1.1 200OK"), id="no-space-before-reason"),
    pytest.param(reply(b"HTTP/2 200 OK"), id="http2"),
    pytest.param(reply(b"HTTP/1.2 200 OK"), id="http12"),
    pytest.param(reply(b"HTTP/2.0 200 OK"), id="http20"),
    pytest.param(reply(b"http/1.1 200 OK"), id="lower-case-http"),
    pytest.param(reply(b"ICY 200 OK"), id="icy"),
    pytest.param(reply(b"HTTP/1.1 200 O\x00K"), id="nul-in-reason"),
    pytest.param(reply(b"HTTP/1.1 200 O\rK"), id="cr-in-reason"),
    pytest.param(reply(b"\r\nHTTP/1.1 200 OK"), id="blank-line-first"),
    pytest.param(reply(OK, b"X: a", b" b"), id="obs-fold"),
    pytest.param(reply(OK, b"X : a"), id="space-before-colon"),
    pytest.param(reply(OK, b"X(y): a"), id="bad-name"),
    pytest.param(reply(OK, b"X: a\rb"), id="bare-cr"),
    pytest.param(reply(OK, b"X: a\x01b"), id="control-in-value"),
    pytest.param(reply(OK, b"Content-Length: 1", b"Content-Length: 2"), id="two-lengths"),
    pytest.param(reply(OK, b"Content-Length: -1"), id="negative-length"),
    pytest.param(reply(OK, b"Content-Length: 1" + b"0" * 20), id="huge-length"),
    pytest.param(reply(OK, b"Content-Length: x"), id="letters-length"),
    pytest.param(reply(OK, b"Transfer-Encoding: gzip"), id="te-gzip"),
    pytest.param(reply(OK, b"Transfer-Encoding: gzip, chunked"), id="te-gzip-chunked"),
    pytest.param(reply(OK, b"Transfer-Encoding: identity"), id="te-identity"),
    pytest.param(
        reply(OK, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), id="te-twice"
    ),
    pytest.param(b"<html><body>hello</body></html>", id="not-http-yet"),
    pytest.param(b"HTTX/", id="not-http-five-bytes"),
]


@pytest.mark.parametrize("raw", REFUSED_RESPONSES)
def test_malformed_responses_are_502(raw: bytes) -> None:
    with pytest.raises(BadGatewayError) as refused:
        parse_response(raw, MAX_HEAD, False)
    assert refused.value.status == 502


def test_an_endless_response_head_is_502() -> None:
    with pytest.raises(BadGatewayError):
        parse_response(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2000, 1000, False)


@pytest.mark.slow
@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=100).map(lambda tail: b"HTTP/1.1 " + tail),
        responses().flatmap(lambda r: mutated(r.raw)),
    ),
    head_request=st.booleans(),
    close=st.booleans(),
)
def test_any_bytes_are_a_response_head_or_a_502(
    data: bytes, head_request: bool, close: bool
) -> None:
    try:
        head = parse_response(data, 1000, head_request)
    except BadGatewayError:
        return
    if head is None:
        return
    out = head.client_head(close)
    again = parsed_response(out, head_request)
    assert (again.status, again.size) == (head.status, len(out))
    assert (again.bodyless, again.chunked, again.content_length) == (
        head.bodyless,
        head.chunked,
        head.content_length,
    )


# --------------------------------------------------------------------------- 5. chunked bodies


@st.composite
def size_lines(draw: st.DrawFn, size: int, *, last: bool = False) -> bytes:
    """A chunk-size line for ``size``: any hex case, leading zeros, an extension or OWS."""
    digits = draw(any_case(b"%x" % size))
    digits = b"0" * draw(st.integers(0, 15 - len(digits))) + digits
    ext = draw(st.sampled_from([b"", b"", b";a=b", b";name", b';q="x y"', b";a=b;c", b" ", b"\t"]))
    return digits + ext + b"\r\n"


@dataclass(frozen=True)
class Chunked:
    body: bytes  # the chunked body, trailers and all
    data: bytes  # the data it carries


@st.composite
def chunked_bodies(draw: st.DrawFn) -> Chunked:
    pieces = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=5))
    body = b"".join(draw(size_lines(len(p))) + p + b"\r\n" for p in pieces)
    body += draw(size_lines(0))
    for name, value in draw(st.lists(st.tuples(plain_names, values), max_size=3)):
        body += name + b":" + draw(st.sampled_from(OWS)) + value + b"\r\n"
    return Chunked(body + b"\r\n", b"".join(pieces))


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into pieces at random points (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


@SETTINGS
@given(
    message=chunked_bodies(),
    after=st.binary(min_size=1, max_size=20),
    data=st.data(),
    junk=st.binary(max_size=4),
)
def test_a_chunked_body_ends_where_h11_says_fed_any_way(
    message: Chunked, after: bytes, data: st.DataObject, junk: bytes
) -> None:
    body = message.body
    stream = body + after
    pieces = data.draw(splits(stream))
    scanner, decoder = ChunkedScanner(), ChunkedScanner()
    decoded = b""
    consumed = 0
    for piece in pieces:
        assert not scanner.done
        assert not decoder.done
        fed = junk + piece  # ``start`` skips what is not body
        end = scanner.scan(fed, len(junk))
        decode_end, out = decoder.decode(fed, len(junk))
        decoded += out
        assert decode_end == end
        assert scanner.payload == decoder.payload <= len(message.data)
        if consumed + len(piece) < len(body):
            assert end == len(fed)
            assert not scanner.done
        else:
            assert end == len(junk) + len(body) - consumed  # not a byte of what follows
            assert scanner.done
            assert decoder.done
            break
        consumed += len(piece)
    assert scanner.done
    assert scanner.payload == len(message.data)
    assert decoded == message.data
    # h11 reads the same body the same way and leaves the same bytes over.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    assert h11_body(conn, stream, eof=False) == message.data
    assert conn.trailing_data[0] == after


def test_whitespace_before_a_chunk_extension_is_taken() -> None:
    # RFC 9112 §7.1.1 allows BWS before ";"; h11 refuses it (a deliberate difference).
    body = b"3 ;a=b\r\nabc\r\n0\t; last\r\n\r\n"
    assert ChunkedScanner().decode(body) == (len(body), b"abc")


def h11_rejects_chunked(body: bytes) -> bool:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.next_event()
    try:
        h11_body(conn, body, eof=True)
    except h11.RemoteProtocolError:
        return True
    return False


BIG = 70 * 1024
# (body, whether h11 refuses it too): the codec raises ChunkedError for every one.
MALFORMED_CHUNKED = [
    pytest.param(b"1\nA\r\n0\r\n\r\n", True, id="bare-lf-after-size"),
    pytest.param(b"1\r\nA\n0\r\n\r\n", True, id="bare-lf-after-data"),
    pytest.param(b"1\r\nA0\r\n\r\n", True, id="no-crlf-after-data"),
    pytest.param(b"1\r\nAB\r\n0\r\n\r\n", True, id="data-longer-than-size"),
    pytest.param(b"3\r\nA\r\n0\r\n\r\nXX", True, id="data-shorter-than-size"),
    pytest.param(b"1\r\nA\r\r\n0\r\n\r\n", True, id="cr-cr-lf-after-data"),
    pytest.param(b"g\r\nA\r\n0\r\n\r\n", True, id="non-hex-size"),
    pytest.param(b"0x1\r\nA\r\n0\r\n\r\n", True, id="0x-size"),
    pytest.param(b"-1\r\nA\r\n0\r\n\r\n", True, id="negative-size"),
    pytest.param(b"\r\n0\r\n\r\n", True, id="empty-size"),
    pytest.param(b" 1\r\nA\r\n0\r\n\r\n", True, id="space-before-size"),
    pytest.param(b"1 1\r\nA\r\n0\r\n\r\n", True, id="space-in-size"),
    pytest.param(b"0000000000000001\r\nA\r\n0\r\n\r\n", False, id="16-digit-size"),
    pytest.param(b"1000000000000000\r\n", False, id="16-digit-huge-size"),
    pytest.param(b"1" + b"0" * 20 + b"\r\n", True, id="21-digit-size"),
    pytest.param(b"1;a\x00\r\nA\r\n0\r\n\r\n", False, id="nul-in-extension"),
    pytest.param(b"1;a\rb\r\nA\r\n0\r\n\r\n", False, id="cr-in-extension"),
    pytest.param(b"1;" + b"e" * BIG + b"\r\nA\r\n0\r\n\r\n", False, id="extension-over-64k"),
    pytest.param(b"0\r\n\n", False, id="bare-lf-at-end"),
    pytest.param(b"0\n\r\n", True, id="bare-lf-after-last-size"),
    pytest.param(b"0\r\na: b\n\r\n", False, id="bare-lf-in-trailer"),
    pytest.param(b"0\r\n b: c\r\n\r\n", True, id="trailer-starts-with-space"),
    pytest.param(b"0\r\na: b\x00\r\n\r\n", True, id="nul-in-trailer"),
    pytest.param(b"0\r\nx: " + b"t" * BIG + b"\r\n\r\n", False, id="trailers-over-64k"),
    pytest.param(b"0\r\n" + b"x: yyyy\r\n" * (BIG // 7) + b"\r\n", False, id="many-trailers"),
    # trailer fields follow a head's field rules (RFC 9112 §7.1.2)
    pytest.param(b"0\r\nab\r\n\r\n", True, id="trailer-without-colon"),
    pytest.param(b"0\r\nGET / HTTP/1.1\r\n\r\n", True, id="request-line-in-trailer"),
    pytest.param(b"0\r\nHTTP/1.1 200 OK\r\n\r\n", True, id="status-line-in-trailer"),
    pytest.param(b"0\r\na : b\r\n\r\n", True, id="space-before-trailer-colon"),
    pytest.param(b"0\r\na\t: b\r\n\r\n", True, id="tab-before-trailer-colon"),
    pytest.param(b"0\r\na(b): c\r\n\r\n", True, id="bad-trailer-name"),
    pytest.param(b"0\r\n:b\r\n\r\n", True, id="empty-trailer-name"),
    pytest.param(b"0\r\na: b\x7f\r\n\r\n", False, id="del-in-trailer"),
]


@FEW
@pytest.mark.parametrize(("body", "h11_refuses"), MALFORMED_CHUNKED)
@given(data=st.data())
def test_malformed_chunked_framing_is_refused_fed_any_way(
    body: bytes, h11_refuses: bool, data: st.DataObject
) -> None:
    scanner = ChunkedScanner()
    with pytest.raises(ChunkedError):  # noqa: PT012 - one of the pieces raises
        for piece in data.draw(splits(body)):
            end = scanner.scan(piece)
            assert end == len(piece)
            assert not scanner.done
    if h11_refuses:
        assert h11_rejects_chunked(body)


def test_a_malformed_trailer_is_refused_before_any_of_the_trailers_is_passed_on() -> None:
    scanner = ChunkedScanner()
    start = b"1\r\nA\r\n0\r\nX-Ok: 1\r\n"
    assert scanner.relay(start) == (len(start), b"1\r\nA\r\n0\r\n")
    with pytest.raises(ChunkedError, match="trailer field"):
        scanner.relay(b"GET /admin HTTP/1.1\r\n\r\n")


def test_extensions_and_trailers_under_64k_are_taken() -> None:
    body = b"1;" + b"e" * 30000 + b"\r\nA\r\n0\r\nx: " + b"t" * 30000 + b"\r\n\r\n"
    assert ChunkedScanner().decode(body) == (len(body), b"A")


@FUZZ
@given(
    stream=st.one_of(
        st.binary(max_size=200),
        chunked_bodies().flatmap(lambda c: mutated(c.body)),
    ),
    data=st.data(),
)
def test_any_bytes_are_chunked_framing_or_a_chunked_error(
    stream: bytes, data: st.DataObject
) -> None:
    scanner = ChunkedScanner()
    consumed = 0
    try:
        for piece in data.draw(splits(stream)):
            end = scanner.scan(piece)
            consumed += end
            if scanner.done:
                break
            assert end == len(piece)
    except ChunkedError:
        return
    if not scanner.done:
        return
    # Where h11 reads the same bytes, it ends the body at the same place, with the same data.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    try:
        decoded = h11_body(conn, stream, eof=False)
    except (h11.RemoteProtocolError, AssertionError):
        return
    assert ChunkedScanner().decode(stream) == (consumed, decoded)
    assert h11_consumed(conn, stream) == consumed


# Trailer fields relay() leaves out, whoever sent them (any case in the tests).
DROPPED_TRAILERS = [
    b"Content-Length", b"Transfer-Encoding", b"Host", b"Trailer", b"Connection",
    b"Keep-Alive", b"Upgrade", b"TE", b"Expect", b"Proxy-Authorization", b"Proxy-Connection",
    b"Proxy-Authenticate", b"Proxy-Anything", b"HTTP2-Settings", b"X-Forwarded-For",
    b"X-Forwarded-Proto", b"X-Forwarded-Host", b"X-Forwarded-Port", b"X-Real-IP",
    b"Forwarded", b"X-Original-URL", b"X-Rewrite-URL", b"ssl-client-verify",
    b"ssl-client-cert", b"ssl-client-subject-dn", b"ssl-client-issuer-dn", b"X_Custom",
]  # fmt: skip
trailer_names = st.one_of(plain_names, st.sampled_from(DROPPED_TRAILERS).flatmap(any_case))


@dataclass(frozen=True)
class Trailered:
    body: bytes  # the chunked body, trailers and all
    data: bytes  # the data it carries
    trailers: tuple[tuple[bytes, bytes], ...]  # (name as sent, value without OWS)


@st.composite
def trailered_bodies(draw: st.DrawFn) -> Trailered:
    pieces = draw(st.lists(st.binary(min_size=1, max_size=100), max_size=4))
    body = b"".join(draw(size_lines(len(p))) + p + b"\r\n" for p in pieces)
    body += draw(size_lines(0))
    trailers = draw(st.lists(st.tuples(trailer_names, values), max_size=5))
    for name, value in trailers:
        body += name + b":" + draw(st.sampled_from(OWS)) + value + b"\r\n"
    return Trailered(body + b"\r\n", b"".join(pieces), tuple(trailers))


def relayed(scanner: ChunkedScanner, pieces: Sequence[bytes], junk: bytes) -> tuple[bytes, int]:
    """What relay() passes on for ``pieces`` fed one by one after ``junk``; bytes consumed."""
    out, consumed = b"", 0
    for piece in pieces:
        fed = junk + piece  # ``start`` skips what is not body
        end, passed = scanner.relay(fed, len(junk))
        assert len(junk) <= end <= len(fed)
        if not scanner.done:
            assert end == len(fed)
        out += passed
        consumed += end - len(junk)
        if scanner.done:
            break
    return out, consumed


@SETTINGS
@given(
    message=trailered_bodies(),
    after=st.binary(max_size=20),
    data=st.data(),
    junk=st.binary(max_size=4),
)
def test_relay_passes_on_what_the_naive_reference_does_fed_any_way(
    message: Trailered, after: bytes, data: st.DataObject, junk: bytes
) -> None:
    pieces = data.draw(splits(message.body + after))
    scanner = ChunkedScanner()
    out, consumed = relayed(scanner, pieces, junk)
    assert scanner.done
    assert consumed == len(message.body)  # not a byte of what follows
    assert out == naive_relay(message.body)
    assert scanner.payload == len(message.data)
    # scan() ends the body at the same place and passes every byte of it
    again = ChunkedScanner()
    assert again.scan(message.body + after) == len(message.body)

    # h11, as the upstream, reads the data and the trailers that were kept
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    conn.receive_data(out)
    body = b""
    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), event
        body += event.data
    assert body == message.data
    kept = [(n.lower(), v) for n, v in message.trailers if trailer_kept(n)]
    assert list(event.headers) == kept
    assert conn.trailing_data == (b"", False)


@SETTINGS
@given(message=chunked_bodies(), data=st.data())
def test_relay_passes_the_bytes_it_was_given_until_the_trailers(
    message: Chunked, data: st.DataObject
) -> None:
    # the common case costs what scan() does: the caller's bytes, not a copy
    body = message.body
    section = trailer_section(body)
    pieces = data.draw(splits(body))
    ends = set(accumulate(map(len, pieces)))
    # with no trailers, only a final CRLF cut in two is held (its "\r", one call)
    untouched = len(body) if body[section:] == b"\r\n" and len(body) - 1 not in ends else section
    scanner = ChunkedScanner()
    seen = 0
    for piece in pieces:
        _, out = scanner.relay(piece)
        seen += len(piece)
        if seen <= untouched:
            assert out is piece
    assert scanner.done


def test_a_body_without_trailers_is_passed_as_it_came() -> None:
    body = b"3\r\nabc\r\n0\r\n\r\n"
    assert ChunkedScanner().relay(body)[1] is body
    end, out = ChunkedScanner().relay(b"xx" + body + b"GET", 2)
    assert (end, out) == (2 + len(body), body)
    scanner = ChunkedScanner()
    assert scanner.relay(body[:-1]) == (len(body) - 1, body[:-2])  # "\r" held
    assert scanner.relay(body[-1:]) == (1, b"\r\n")


@pytest.mark.parametrize("name", DROPPED_TRAILERS)
def test_framing_routing_hop_by_hop_and_identity_trailers_are_dropped(name: bytes) -> None:
    # A recipient may merge trailers into the head (RFC 9110 §6.5.2): a Content-Length
    # or Host there would frame or route what the proxy did not.
    body = b"1\r\nA\r\n0\r\nX-Before: 1\r\n%s: 5\r\nx-after: 2\r\n\r\n" % name.swapcase()
    end, out = ChunkedScanner().relay(body)
    assert (end, out) == (len(body), b"1\r\nA\r\n0\r\nX-Before: 1\r\nx-after: 2\r\n\r\n")
    assert ChunkedScanner().scan(body) == len(body)  # scan() still takes them (unfiltered)


def test_relay_after_the_end_takes_nothing() -> None:
    scanner = ChunkedScanner()
    assert scanner.relay(b"0\r\nA: 1\r\n\r\n") == (11, b"0\r\nA: 1\r\n\r\n")
    assert scanner.relay(b"next", 0) == (0, b"")


@pytest.mark.parametrize("start", [-1, 5])
def test_a_start_outside_the_data_is_a_value_error(start: int) -> None:
    for method in (ChunkedScanner().scan, ChunkedScanner().relay, ChunkedScanner().decode):
        with pytest.raises(ValueError, match="outside"):
            method(b"0\r\n", start)


@pytest.mark.parametrize("status", [b"100 Continue", b"200 OK", b"204 No Content"])
def test_an_http10_response_with_transfer_encoding_closes_the_connection(status: bytes) -> None:
    # RFC 9112 §6.1: its framing is faulty, even when the status says there is no body.
    raw = (
        b"HTTP/1.0 " + status + b"\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert not parsed_response(raw, False).keep_alive
