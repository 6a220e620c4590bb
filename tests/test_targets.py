"""Request targets: which forms the proxy serves, what it forwards, and what the router matches on.

The normalization follows nginx (what ingress-nginx users get): decode every escape, merge
slashes, remove dot segments, answer 400 for what nginx answers 400 for.
"""

from __future__ import annotations

import re
import string
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute import Router
from fastroute.errors import BadRequestError
from fastroute.proxy.targets import (
    RequestTarget,
    forward_path,
    normalize_path,
    parse_target,
    simple_origin,
)

# ---------------------------------------------------------------------------------------------
# parse_target: the forms that are served


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(b"/", RequestTarget(b"/", b"", b"/", b""), id="root"),
        pytest.param(
            b"/a/b?x=1&y=2", RequestTarget(b"/a/b", b"x=1&y=2", b"/a/b", b""), id="path-and-query"
        ),
        pytest.param(
            b"/a?b=%zz", RequestTarget(b"/a", b"b=%zz", b"/a", b""), id="query-not-validated"
        ),
        pytest.param(b"/a?", RequestTarget(b"/a", b"", b"/a", b""), id="empty-query"),
        pytest.param(
            b"/a?b?c=/../", RequestTarget(b"/a", b"b?c=/../", b"/a", b""), id="query-after-first-?"
        ),
        pytest.param(
            b"/a%20b/../c%2Fd?q",
            RequestTarget(b"/c%2Fd", b"q", b"/c/d", b""),
            id="forwarded-path-normalized-keeping-reserved-escapes",
        ),
        pytest.param(
            b'/search|x^y?q={"a":[1]}',
            RequestTarget(b"/search|x^y", b'q={"a":[1]}', b"/search|x^y", b""),
            id="unencoded-unsafe-chars-accepted-as-nginx-does",
        ),
        pytest.param(
            b"//a//b?x", RequestTarget(b"/a/b", b"x", b"/a/b", b""), id="double-slash-merged"
        ),
    ],
)
def test_origin_form(target: bytes, expected: RequestTarget) -> None:
    """The router sees the path decoded and normalized; the upstream gets the same path."""
    assert parse_target(b"GET", target) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(
            b"HTTP://Foo.Example:8080/a/./b?q=1",
            RequestTarget(b"/a/b", b"q=1", b"/a/b", b"Foo.Example:8080"),
            id="uppercase-scheme-with-port",
        ),
        pytest.param(
            b"hTTpS://foo.com/x", RequestTarget(b"/x", b"", b"/x", b"foo.com"), id="mixed-https"
        ),
        pytest.param(
            b"http://foo.com", RequestTarget(b"/", b"", b"/", b"foo.com"), id="empty-path-is-root"
        ),
        pytest.param(
            b"http://foo.com?x=1",
            RequestTarget(b"/", b"x=1", b"/", b"foo.com"),
            id="empty-path-with-query",
        ),
        pytest.param(
            b"http://[::1]:8443/x",
            RequestTarget(b"/x", b"", b"/x", b"[::1]:8443"),
            id="ipv6-literal",
        ),
        pytest.param(
            b"http://10.0.0.1/x", RequestTarget(b"/x", b"", b"/x", b"10.0.0.1"), id="ipv4"
        ),
        pytest.param(
            b"http://foo.com:/x",
            RequestTarget(b"/x", b"", b"/x", b"foo.com:"),
            id="empty-port-rfc3986",
        ),
        pytest.param(
            b"http://foo.com/a//b/%2e%2e/c",
            RequestTarget(b"/a/c", b"", b"/a/c", b"foo.com"),
            id="path-normalized-for-matching-and-forwarding",
        ),
    ],
)
def test_absolute_form(target: bytes, expected: RequestTarget) -> None:
    """absolute-form carries the authority the proxy must route on instead of Host."""
    assert parse_target(b"GET", target) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(b"*", RequestTarget(b"*", b"", b"/", b"", asterisk=True), id="asterisk"),
        pytest.param(
            b"http://foo.com:80",
            RequestTarget(b"*", b"", b"/", b"foo.com:80", asterisk=True),
            id="absolute-empty-path-forwarded-as-asterisk",
        ),
        pytest.param(
            b"http://foo.com/",
            RequestTarget(b"/", b"", b"/", b"foo.com"),
            id="absolute-with-slash-is-not-asterisk",
        ),
        pytest.param(
            b"http://foo.com?x",
            RequestTarget(b"/", b"x", b"/", b"foo.com"),
            id="absolute-with-query-is-not-asterisk",
        ),
        pytest.param(b"/a", RequestTarget(b"/a", b"", b"/a", b""), id="origin-form"),
    ],
)
def test_options(target: bytes, expected: RequestTarget) -> None:
    """``OPTIONS *`` asks about the server; RFC 9112 §3.2.4 maps a bare authority to it."""
    assert parse_target(b"OPTIONS", target) == expected


# ---------------------------------------------------------------------------------------------
# parse_target: what is answered 400, and the log line that says why


@pytest.mark.parametrize(
    ("method", "target", "detail"),
    [
        pytest.param(b"GET", b"*", "only allowed with OPTIONS, not 'GET'", id="get-asterisk"),
        pytest.param(b"OPTIONS", b"*?x", "neither origin-form", id="asterisk-with-query"),
        pytest.param(b"CONNECT", b"foo.com:443", "CONNECT is not supported", id="connect"),
        pytest.param(b"CONNECT", b"/", "CONNECT is not supported", id="connect-origin-form"),
        pytest.param(b"GET", b"foo.com:443", "authority-form", id="authority-form-without-connect"),
        pytest.param(b"GET", b"", "empty request target", id="empty"),
        pytest.param(b"GET", b"#frag", "fragment ('#') in request target at offset 0", id="frag"),
        pytest.param(b"GET", b"/a#frag", "fragment ('#')", id="path-fragment"),
        pytest.param(b"GET", b"/a?x#frag", "fragment ('#')", id="query-fragment"),
        pytest.param(b"GET", b"/a b", "space in request target at offset 2", id="space"),
        pytest.param(b"GET", b"/a\tb", "control character 0x09", id="tab"),
        pytest.param(b"GET", b"/a\r\nX: y", "control character 0x0d", id="crlf"),
        pytest.param(b"GET", b"/a\x00", "control character 0x00", id="raw-nul"),
        pytest.param(b"GET", b"/a\x7f", "control character 0x7f", id="del"),
        pytest.param(b"GET", b"/caf\xc3\xa9", "non-ASCII byte 0xc3 in request", id="utf8"),
        pytest.param(b"GET", b"/a?q=\xff", "non-ASCII byte 0xff", id="non-ascii-query"),
        pytest.param(b"GET", b"a/b", "neither origin-form", id="no-leading-slash"),
        pytest.param(b"GET", b"?x=1", "neither origin-form", id="query-only"),
        pytest.param(b"GET", b"http:foo", "neither origin-form", id="http-without-slashes"),
        pytest.param(b"GET", b"ftp://foo.com/", "unsupported scheme 'ftp'", id="ftp"),
        pytest.param(b"GET", b"ws://foo.com/", "unsupported scheme 'ws'", id="ws"),
        pytest.param(b"GET", b"http://user:pw@foo.com/", "userinfo", id="userinfo"),
        pytest.param(b"GET", b"http://@foo.com/", "userinfo", id="empty-userinfo"),
        pytest.param(b"GET", b"http:///a", "empty host", id="empty-host"),
        pytest.param(b"GET", b"http://:80/", "empty host", id="port-without-host"),
        pytest.param(b"GET", b"http://foo.com:8o/", "invalid host or port", id="bad-port"),
        pytest.param(b"GET", b"http://foo.com:99999/", "port 99999 out of range", id="big-port"),
        pytest.param(
            b"GET", b"http://f%6fo.com/", "percent-encoding in request target host", id="pct-host"
        ),
        pytest.param(b"GET", b"http://[v1.x]/", "invalid host or port", id="ipvfuture"),
        pytest.param(b"GET", b"http://[::1/", "invalid host or port", id="unclosed-ipv6"),
        pytest.param(
            b"GET", b"http://a$b.com/", "invalid host in request target", id="not-a-host-header"
        ),
        pytest.param(b"GET", b"http://a..b/", "invalid host in request target", id="dot-dot-host"),
        pytest.param(b"GET", b"/%zz", "invalid percent-encoding '%zz' in path", id="bad-escape"),
        pytest.param(b"GET", b"/%", "truncated percent-encoding '%'", id="lone-percent"),
        pytest.param(b"GET", b"/..", "climbs above the root", id="dotdot-root"),
        pytest.param(b"GET", b"/%2e%2e/x", "climbs above the root", id="encoded-dotdot-root"),
        pytest.param(b"GET", b"http://foo.com/../x", "climbs above the root", id="absolute-dotdot"),
        pytest.param(b"GET", b"/a%00b", "NUL byte ('%00') in path", id="encoded-nul"),
    ],
)
def test_rejected(method: bytes, target: bytes, detail: str) -> None:
    """Each bad target is a 400 whose detail names what is wrong, for the log line."""
    with pytest.raises(BadRequestError, match=re.escape(detail)) as caught:
        parse_target(method, target)
    assert caught.value.status == 400


def test_detail_escapes_what_it_quotes() -> None:
    """A hostile target must not be able to forge log lines through the detail."""
    with pytest.raises(BadRequestError) as caught:
        normalize_path(b"/%\r\n")
    assert caught.value.detail == r"invalid percent-encoding '%\r\n' in path"


# ---------------------------------------------------------------------------------------------
# normalize_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(b"/", b"/", id="root"),
        pytest.param(b"/a/b", b"/a/b", id="plain"),
        pytest.param(b"/a/b/", b"/a/b/", id="trailing-slash-kept"),
        pytest.param(b"/A/b", b"/A/b", id="case-preserved"),
        pytest.param(b"/a/b/../c", b"/a/c", id="dotdot"),
        pytest.param(b"/a/b/../../c", b"/c", id="dotdot-twice"),
        pytest.param(b"/a/./b", b"/a/b", id="dot"),
        pytest.param(b"/a/..", b"/", id="trailing-dotdot-to-root"),
        pytest.param(b"/a/b/..", b"/a/", id="trailing-dotdot"),
        pytest.param(b"/a/.", b"/a/", id="trailing-dot"),
        pytest.param(b"/.", b"/", id="root-dot"),
        pytest.param(b"/./", b"/", id="root-dot-slash"),
        pytest.param(b"//a//b", b"/a/b", id="merge-slashes"),
        pytest.param(b"///", b"/", id="only-slashes"),
        pytest.param(b"/a//", b"/a/", id="trailing-double-slash"),
        pytest.param(b"/a//..", b"/", id="merge-before-dots"),
        pytest.param(b"/%61", b"/a", id="decode-unreserved"),
        pytest.param(b"/%4a%4A", b"/JJ", id="hex-case-insensitive"),
        pytest.param(b"/a%2fb", b"/a/b", id="decoded-slash-separates"),
        pytest.param(b"/a%2F%2Fb", b"/a/b", id="decoded-slashes-merge"),
        pytest.param(b"/a/%2e%2e/b", b"/b", id="decoded-dotdot"),
        pytest.param(b"/a/.%2E/b", b"/b", id="half-encoded-dotdot"),
        pytest.param(b"/a/%2e/b", b"/a/b", id="decoded-dot"),
        pytest.param(b"/a%2f..%2fb", b"/b", id="fully-encoded-traversal"),
        pytest.param(b"/a%20b", b"/a b", id="decoded-space"),
        pytest.param(b"/a%3Fb%23c", b"/a?b#c", id="decoded-delimiters-are-plain-bytes"),
        pytest.param(b"/%2541", b"/%41", id="decoded-once"),
        pytest.param(b"/%C3%A9t%C3%A9", "/été".encode(), id="utf8-bytes-kept"),
        pytest.param(b"/%ff", b"/\xff", id="invalid-utf8-kept"),
        pytest.param(b"/...", b"/...", id="three-dots-is-a-name"),
        pytest.param(b"/.a/..b/c..", b"/.a/..b/c..", id="dot-prefixed-names"),
        pytest.param(b"/.well-known/acme", b"/.well-known/acme", id="well-known"),
    ],
)
def test_normalize_path(path: bytes, expected: bytes) -> None:
    """The path the router matches on is the one nginx would match its locations on."""
    assert normalize_path(path) == expected


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        pytest.param(b"", "does not start with '/'", id="empty"),
        pytest.param(b"a/b", "path 'a/b' does not start with '/'", id="relative"),
        pytest.param(b"/..", "climbs above the root", id="dotdot-root"),
        pytest.param(b"/../a", "climbs above the root", id="dotdot-root-then-name"),
        pytest.param(b"/a/../..", "climbs above the root", id="dotdot-past-root"),
        pytest.param(b"/%2E%2E", "climbs above the root", id="encoded-dotdot"),
        pytest.param(b"/%", "truncated percent-encoding '%' at the end of the path", id="pct"),
        pytest.param(b"/x%4", "truncated percent-encoding '%4' at the end", id="pct-one-digit"),
        pytest.param(b"/%zz", "invalid percent-encoding '%zz' in path", id="not-hex"),
        pytest.param(b"/%G1", "invalid percent-encoding '%G1' in path", id="g-is-not-hex"),
        pytest.param(b"/% 1", "invalid percent-encoding '% 1' in path", id="space-is-not-hex"),
        pytest.param(b"/%a%41", "invalid percent-encoding '%a%' in path", id="short-then-escape"),
        pytest.param(b"/%00", "NUL byte ('%00') in path", id="encoded-nul"),
        pytest.param(b"/a\x00", "NUL byte in path", id="raw-nul"),
    ],
)
def test_normalize_path_rejects(path: bytes, detail: str) -> None:
    """What nginx refuses is refused, with the culprit quoted."""
    with pytest.raises(BadRequestError, match=re.escape(detail)) as caught:
        normalize_path(path)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(b"/api/users", "api", id="plain"),
        pytest.param(b"/public/../api/users", "api", id="dotdot-into-api"),
        pytest.param(b"/%61pi/users", "api", id="encoded-letter"),
        pytest.param(b"//api//users", "api", id="double-slashes"),
        pytest.param(b"/api%2Fusers", "api", id="encoded-slash"),
        pytest.param(b"/api/../public", "public", id="dotdot-out-of-api"),
        pytest.param(b"/ap%69x", "default", id="near-miss"),
        pytest.param(b"http://foo.com/./api", "api", id="absolute-form"),
        pytest.param(b"/API", "default", id="case-sensitive"),
    ],
)
def test_routes_like_ingress_nginx(target: bytes, expected: str) -> None:
    """End to end with the matcher: the request reaches the backend nginx would pick."""
    router = Router()
    router.add("", "/api", "Prefix", "api")
    router.add("", "/public", "Prefix", "public")
    router.set_default("default")
    assert router.match(b"foo.com", parse_target(b"GET", target).match_path) == expected


# ---------------------------------------------------------------------------------------------
# properties

# Pieces that exercise every rule, so random targets get past the first check often.
_PIECES = st.sampled_from(
    [
        *(b"/", b"//", b".", b"..", b"a", b"B", b"~", b"?", b"#", b"*", b":", b"@"),
        *(b"%", b"%2e", b"%2E", b"%2f", b"%2F", b"%25", b"%41", b"%00", b"%zz", b"%c3%a9"),
        *(b" ", b"\xff", b"\t", b"http://", b"HTTPS://", b"foo.com", b"[::1]", b":8080"),
    ]
)
_TARGETS = st.binary(max_size=40) | st.lists(_PIECES, max_size=12).map(b"".join)
_PATHS = st.lists(
    st.sampled_from([b"/", b"//", b".", b"..", b"a", b"b", b"%2e", b"%2F", b"%25", b"%41", b"%ff"]),
    max_size=14,
).map(lambda pieces: b"/" + b"".join(pieces))
_METHODS = st.sampled_from([b"GET", b"OPTIONS", b"CONNECT", b"POST"]) | st.binary(max_size=8)


@settings(max_examples=400, deadline=None)
@given(method=_METHODS, target=_TARGETS)
def test_any_target_is_served_or_a_400(method: bytes, target: bytes) -> None:
    """No input bytes may crash the proxy: it is a RequestTarget or a 400, nothing else."""
    error: BadRequestError | None = None
    try:
        result = parse_target(method, target)
    except BadRequestError as caught:
        error = caught
    if error is not None:
        assert error.status == 400
        assert error.detail
        return
    assert result.match_path.startswith(b"/")
    if result.asterisk:
        assert result.path == b"*"
        assert method == b"OPTIONS"
    else:
        assert result.path.startswith(b"/")
        assert result.match_path == normalize_path(result.path)
    if target.startswith(b"/"):
        assert result.authority == b""
        if simple_origin(method, target) is not None:
            # nothing to normalize: what is forwarded is exactly what was sent
            assert result.path + (b"?" + result.query if b"?" in target else b"") == target


def _reference_normalize(path: bytes) -> bytes:
    """A literal transcription of the rules: decode, merge slashes, RFC 3986 §5.2.4.

    Raises ValueError where normalize_path must answer 400.
    """
    decoded = bytearray()
    i = 0
    while i < len(path):
        if path[i] == ord("%"):
            escape = path[i + 1 : i + 3].decode("latin-1")
            if len(escape) != 2 or not all(c in string.hexdigits for c in escape):
                raise ValueError(escape)
            decoded.append(int(escape, 16))
            i += 3
        else:
            decoded.append(path[i])
            i += 1
    if 0 in decoded:
        raise ValueError("nul")
    buffer = re.sub(rb"/+", b"/", bytes(decoded))
    output = b""
    while buffer:  # RFC 3986 §5.2.4 step 2; the buffer always starts with "/"
        if buffer.startswith(b"/./") or buffer == b"/.":
            buffer = b"/" + buffer[3:]
        elif buffer.startswith(b"/../") or buffer == b"/..":
            if not output:
                raise ValueError("above root")
            buffer = b"/" + buffer[4:]
            output = output[: output.rfind(b"/")]
        else:
            end = buffer.find(b"/", 1)
            end = len(buffer) if end < 0 else end
            output, buffer = output + buffer[:end], buffer[end:]
    return output or b"/"


@settings(max_examples=400, deadline=None)
@given(path=_PATHS)
def test_normalize_path_agrees_with_a_literal_reading_of_the_rules(path: bytes) -> None:
    """The segment-based implementation routes exactly like the RFC's buffer algorithm."""
    try:
        expected = _reference_normalize(path)
    except ValueError:
        with pytest.raises(BadRequestError):
            normalize_path(path)
        return
    assert normalize_path(path) == expected


@settings(max_examples=400, deadline=None)
@given(path=_PATHS)
def test_normalized_paths_are_stable(path: bytes) -> None:
    """A normalized path has nothing left to normalize, so no rule can be reached two ways.

    Decoding happens once: a ``%`` in the result came from ``%25`` and is a literal percent
    sign, so the result is stable once those are escaped again.
    """
    try:
        normalized = normalize_path(path)
    except BadRequestError:
        return
    assert normalized.startswith(b"/")
    assert b"//" not in normalized
    assert b"." not in normalized.split(b"/")
    assert b".." not in normalized.split(b"/")
    assert normalized.count(b"%") <= path.count(b"%25")  # ".." may have removed some
    assert normalize_path(normalized.replace(b"%", b"%25")) == normalized
    if b"%" not in normalized:
        assert normalize_path(normalized) == normalized


_UNRESERVED = string.ascii_letters + string.digits + "-._~"


@settings(max_examples=300, deadline=None)
@given(
    segments=st.lists(
        st.text(_UNRESERVED, min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
        max_size=8,
    ),
    trailing_slash=st.booleans(),
)
def test_plain_paths_are_unchanged(segments: list[str], trailing_slash: bool) -> None:
    """The common case (nothing to decode, merge or remove) is matched exactly as sent."""
    path = ("/" + "/".join(segments) + ("/" if trailing_slash and segments else "")).encode()
    assert normalize_path(path) == path
    assert parse_target(b"GET", path).match_path == path


@settings(max_examples=500, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"OPTIONS", b"CONNECT"]),
    target=st.lists(
        st.sampled_from([b"/", b"//", b".", b"..", b"%", b"%2e", b"a", b"?", b"#", b"\x00", b" "]),
        max_size=8,
    ).map(b"".join),
)
def test_the_fast_path_agrees_with_parse_target(method: bytes, target: bytes) -> None:
    """``simple_origin`` answers only for targets that parse to an unchanged match path."""
    simple = simple_origin(method, target)
    if simple is None:
        return
    parsed = parse_target(method, target)
    assert simple == (parsed.path, parsed.query)
    assert parsed.match_path == parsed.path
    assert parsed.authority == b""


def test_the_fast_path_takes_the_common_targets() -> None:
    assert simple_origin(b"GET", b"/api/v1/items?page=2") == (b"/api/v1/items", b"page=2")
    assert simple_origin(b"GET", b"/a/../b") is None
    assert simple_origin(b"GET", b"/a%2Fb") is None


# ---------------------------------------------------------------------------------------------
# the forwarded path: what the upstream receives is what the router decided on


@pytest.mark.parametrize(
    ("target", "forwarded", "match_path"),
    [
        pytest.param(b"/admin/../public", b"/public", b"/public", id="dot-dot"),
        pytest.param(b"/admin/%2e%2e/public", b"/public", b"/public", id="encoded-dot-dot"),
        pytest.param(b"/admin/%2E./public", b"/public", b"/public", id="half-encoded-dot-dot"),
        pytest.param(b"/public/./x", b"/public/x", b"/public/x", id="dot"),
        pytest.param(b"/public//x", b"/public/x", b"/public/x", id="merged-slashes"),
        pytest.param(b"/%7Euser/%41", b"/~user/A", b"/~user/A", id="unreserved-decoded"),
        pytest.param(
            b"/api/group%2Fproject", b"/api/group%2Fproject", b"/api/group/project", id="slash-kept"
        ),
        pytest.param(b"/a%25b/../c", b"/c", b"/c", id="percent-kept-dots-resolved"),
        pytest.param(b"/caf%c3%a9/", b"/caf%c3%a9/", b"/caf\xc3\xa9/", id="non-ascii-kept"),
        pytest.param(b"/a%3Fb", b"/a%3Fb", b"/a?b", id="question-mark-kept"),
    ],
)
def test_the_forwarded_path_is_the_one_routed(
    target: bytes, forwarded: bytes, match_path: bytes
) -> None:
    """Routing on ``/public`` while the upstream reads ``/admin/..`` is how rules get bypassed."""
    parsed = parse_target(b"GET", target)
    assert (parsed.path, parsed.match_path) == (forwarded, match_path)


@pytest.mark.parametrize(
    "target",
    [
        b"/admin/..%2fpublic",
        b"/admin%2f..%2fpublic",
        b"/admin%2F..%2Fpublic",
        b"/public%2f..",
        b"/a/b/..%2F..%2Fadmin",
        b"/a%2f.%2fb",
        b"/a%2Fa/..",
    ],
)
def test_an_encoded_slash_next_to_a_dot_segment_is_refused(target: bytes) -> None:
    """Whether the upstream decodes ``%2F`` before resolving dots decides where it lands."""
    with pytest.raises(BadRequestError) as caught:
        parse_target(b"GET", target)
    assert caught.value.detail == "encoded slash ('%2F') in a path with dot segments"


def _decode_all(path: bytes) -> bytes:
    """What an application that decodes every escape reads."""
    return urllib.parse.unquote_to_bytes(path)


@settings(max_examples=500, deadline=None)
@given(path=_PATHS)
def test_every_reading_of_the_forwarded_path_is_the_routed_one(path: bytes) -> None:
    """Decoded or not, with dot segments resolved before or after, the upstream's path is
    the one the router matched: nothing left to normalize, no dot segment to climb out by."""
    try:
        parsed = parse_target(b"GET", path)
    except BadRequestError:
        return
    forwarded = parsed.path
    for reading in (forwarded, _decode_all(forwarded)):
        segments = reading.split(b"/")
        assert b"." not in segments
        assert b".." not in segments
    assert b"//" not in forwarded
    assert normalize_path(forwarded) == parsed.match_path
    assert forward_path(forwarded) == forwarded  # stable: forwarding it again changes nothing
    escapes = {
        forwarded[i + 1 : i + 3].upper() for i in range(len(forwarded)) if forwarded[i] == 37
    }
    assert not escapes & {b"2E", b"41", b"7E"}  # unreserved characters are sent plainly
