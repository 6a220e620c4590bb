"""CORS: which requests get the headers, which preflights the proxy answers, and with what.

The cases follow ingress-nginx's e2e tests (test/e2e/annotations/cors.go) and its
template's CORS block: ``*`` answers everyone with a literal ``*``; a list echoes a
matching origin and says nothing to the others; a wildcard takes exactly one label.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastroute.ingress.model import Cors
from fastroute.proxy.cors import CorsRules, cors_rules

DEFAULT_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
DEFAULT_HEADERS = (
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
    "Content-Type,Range,Authorization"
)


def fields(lines: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of header lines, in order; each line must end in CRLF."""
    assert not lines or lines.endswith(b"\r\n")
    out = []
    for line in lines.split(b"\r\n")[:-1]:
        name, _, value = line.decode("latin-1").partition(": ")
        out.append((name, value))
    return out


def field(lines: bytes, name: str) -> str | None:
    values = [v for n, v in fields(lines) if n.lower() == name.lower()]
    assert len(values) <= 1, f"{name} written {len(values)} times"
    return values[0] if values else None


def test_the_defaults_answer_every_origin_with_a_literal_star() -> None:
    rules = cors_rules(Cors())
    for origin in (b"https://origin.example", b"http://book.origin.com", None):
        lines = rules.response_headers(origin)
        assert fields(lines) == [
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Allow-Methods", DEFAULT_METHODS),
            ("Access-Control-Allow-Headers", DEFAULT_HEADERS),
            ("Access-Control-Max-Age", "1728000"),
        ]


def test_star_with_credentials_never_echoes_the_origin() -> None:
    lines = cors_rules(Cors(origins=("*",), credentials=True)).response_headers(
        b"https://evil.test"
    )
    assert field(lines, "Access-Control-Allow-Origin") == "*"
    assert b"evil" not in lines


def test_star_among_other_origins_means_every_origin() -> None:
    rules = cors_rules(Cors(origins=("https://a.example", "*")))
    assert field(rules.response_headers(b"https://b.example"), "Access-Control-Allow-Origin") == "*"


def test_no_origins_given_means_every_origin() -> None:
    rules = cors_rules(Cors(origins=("  ",)))
    assert field(rules.response_headers(b"http://origin.com"), "Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize(
    ("allowed", "origin", "matches"),
    [
        # exact origins, port included
        (("https://origin.cors.com:8080",), "https://origin.cors.com:8080", True),
        (
            ("https://origin.cors.com:8080", "https://origin2.cors.com"),
            "https://origin2.cors.com",
            True,
        ),
        (("http://origin2.cors.com", "https://origin.com"), "http://no.origin.com", False),
        (("https://origin2.cors.com", "http://origin.com"), "http://origin.com:8080", False),
        (("http://origin.cors.com:8080", "http://origin.com:8080"), "http://origin.com", False),
        (("https://origin.com",), "http://origin.com", False),  # the scheme counts
        (("https://origin.com",), "https://origin.com.evil.test", False),
        (("https://origin.com",), "https://evil.test/https://origin.com", False),
        (("https://origin.com",), "HTTPS://Origin.COM", True),  # case does not matter
        (("test://localhost", "tauri://localhost:3000"), "tauri://localhost:3000", True),
        (("null",), "null", True),
        # one-label wildcards
        (("http://*.origin.cors.com",), "http://foo.origin.cors.com", True),
        (("http://*.origin.cors.com",), "http://bar-foo.origin.cors.com", True),
        (("http://*.origin.cors.com",), "http://bar.foo.origin.cors.com", False),
        (("http://*.origin.cors.com",), "http://origin.cors.com", False),
        (("http://*.origin.cors.com",), "http://.origin.cors.com", False),
        (("http://*.origin.cors.com",), "https://foo.origin.cors.com", False),
        (("http://*.origin.cors.com",), "http://foo_bar.origin.cors.com", False),
        (("http://*.origin.com:8080",), "http://abc.origin.com:8080", True),
        (("http://*.origin.com:8080",), "http://abc.origin.com", False),
        (("http://*.origin.com:8080",), "http://bar.origin.com:8081", False),
        (("http://*.origin.com",), "http://evilorigin.com", False),
    ],
)
def test_which_origins_a_list_takes(allowed: tuple[str, ...], origin: str, matches: bool) -> None:
    rules = cors_rules(Cors(origins=allowed))
    lines = rules.response_headers(origin.encode())
    if matches:
        assert field(lines, "Access-Control-Allow-Origin") == origin  # echoed as sent
        assert rules.preflight(b"OPTIONS", origin.encode()) == lines
    else:
        assert lines == b""
        assert rules.preflight(b"OPTIONS", origin.encode()) is None


def test_a_list_says_nothing_to_a_request_without_origin() -> None:
    rules = cors_rules(Cors(origins=("https://a.example",)))
    assert rules.response_headers(None) == b""
    assert rules.preflight(b"OPTIONS", None) is None


def test_settings_are_written_as_given_and_optional_ones_only_when_set() -> None:
    cors = Cors(
        origins=("https://app.example",),
        methods="PUT, GET",
        headers="X-Forwarded-For, X-app123-XPTO",
        expose_headers="X-CustomResponseHeader, X-CustomSecondHeader",
        credentials=False,
        max_age=200,
    )
    rules = cors_rules(cors)
    assert fields(rules.response_headers(b"https://app.example")) == [
        ("Access-Control-Allow-Origin", "https://app.example"),
        ("Access-Control-Allow-Methods", "PUT, GET"),
        ("Access-Control-Allow-Headers", "X-Forwarded-For, X-app123-XPTO"),
        ("Access-Control-Expose-Headers", "X-CustomResponseHeader, X-CustomSecondHeader"),
        ("Access-Control-Max-Age", "200"),
    ]
    assert rules.names == {
        b"access-control-allow-origin",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-expose-headers",
        b"access-control-max-age",
    }


def test_the_names_dropped_are_exactly_the_names_written() -> None:
    for cors in (Cors(), Cors(expose_headers="X-A", credentials=False), Cors(max_age=0)):
        rules = cors_rules(cors)
        written = {n.lower().encode() for n, _ in fields(rules.response_headers(b"https://x"))}
        assert rules.names == written


@pytest.mark.parametrize("origins", [("*",), ("https://app.example",), ("https://*.example",)])
def test_only_options_is_answered_by_the_proxy(origins: tuple[str, ...]) -> None:
    rules = cors_rules(Cors(origins=origins))
    origin = b"https://app.example"
    preflight = rules.preflight(b"OPTIONS", origin)
    assert preflight is not None
    assert preflight == rules.response_headers(origin)
    for method in (b"GET", b"POST", b"options", b"HEAD"):
        assert rules.preflight(method, origin) is None


def test_a_preflight_has_no_body_fields() -> None:
    preflight = cors_rules(Cors()).preflight(b"OPTIONS", b"https://a.example")
    assert preflight is not None
    names = {n.lower() for n, _ in fields(preflight)}
    assert "content-length" not in names
    assert "content-type" not in names


def test_star_answers_options_without_any_origin() -> None:
    # ingress-nginx's "*" sets the headers on every request, so every OPTIONS is its own
    assert cors_rules(Cors()).preflight(b"OPTIONS", None) is not None


def test_a_header_value_that_could_split_the_head_is_refused() -> None:
    with pytest.raises(ValueError, match="Access-Control-Allow-Headers"):
        CorsRules(Cors(headers="X-A\r\nSet-Cookie: a=b"))
    with pytest.raises(ValueError, match="Access-Control-Expose-Headers"):
        CorsRules(Cors(expose_headers="X-\u20ac"))


def test_the_same_cors_is_compiled_once_and_an_equal_new_one_gives_the_same_answer() -> None:
    cors = Cors(origins=("https://a.example",))
    assert cors_rules(cors) is cors_rules(cors)
    again = Cors(origins=("https://a.example",))
    assert cors_rules(again).response_headers(b"https://a.example") == cors_rules(
        cors
    ).response_headers(b"https://a.example")


def test_many_distinct_origins_keep_their_answers() -> None:
    rules = cors_rules(Cors(origins=("https://*.example",)))
    for i in range(2000):
        good = b"https://a%d.example" % i
        bad = b"https://a%d.other" % i
        assert field(rules.response_headers(good), "Access-Control-Allow-Origin") == good.decode()
        assert rules.response_headers(bad) == b""


labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(label=labels, extra=st.lists(labels, max_size=2), port=st.none() | st.integers(1, 65535))
def test_a_wildcard_takes_exactly_one_label(label: str, extra: list[str], port: int | None) -> None:
    suffix = "" if port is None else f":{port}"
    rules = cors_rules(Cors(origins=(f"https://*.example.com{suffix}",)))
    origin = ".".join([label, *extra]) + f".example.com{suffix}"
    lines = rules.response_headers(f"https://{origin}".encode())
    assert bool(lines) is (not extra)
