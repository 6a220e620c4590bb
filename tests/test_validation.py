"""Rules the router refuses, why it says it refuses them, conflicts, and ``remove``."""

from __future__ import annotations

import re

import pytest

from fastroute import (
    FastrouteError,
    InvalidRuleError,
    Route,
    RouteConflictError,
    RouteError,
    RouteNotFoundError,
    Router,
)

# --------------------------------------------------------------------------- invalid hosts

# (host, a regex one of whose alternatives the reason must contain, case-insensitively)
INVALID_HOSTS = [
    pytest.param("*", r"wildcard|\*", id="star-alone"),
    pytest.param("*.", r"wildcard|\*|empty|label", id="star-dot"),
    pytest.param("foo.*.com", r"wildcard|\*", id="star-in-middle"),
    pytest.param("foo.com.*", r"wildcard|\*", id="star-last"),
    pytest.param("*foo.com", r"wildcard|\*", id="star-glued-to-label"),
    pytest.param("f*.com", r"wildcard|\*", id="star-inside-label"),
    pytest.param("*.*.foo.com", r"wildcard|\*", id="two-stars"),
    pytest.param("foo..com", r"empty|label", id="empty-label"),
    pytest.param(".foo.com", r"empty|label", id="leading-dot"),
    pytest.param("foo.com..", r"empty|label", id="two-trailing-dots"),
    pytest.param("1.2.3.4", r"\bIP|address", id="ipv4"),
    pytest.param("::1", r"\bIP|address|port|colon|:|character", id="ipv6-bare"),
    pytest.param("[::1]", r"\bIP|address|port|bracket|\[|character", id="ipv6-bracketed"),
    pytest.param("foo.com:8080", r"port|colon|:|character", id="with-port"),
    pytest.param("bücher.de", r"IDNA|xn--", id="non-ascii-suggests-idna"),
    pytest.param("foo\x00.com", r"control|character", id="nul"),
    pytest.param("foo\n.com", r"control|character|newline", id="newline"),
    pytest.param("foo\x7f.com", r"control|character", id="del"),
    pytest.param("foo bar.com", r"space|whitespace|character", id="space"),
    pytest.param("foo_bar.com", r"underscore|_|character", id="underscore"),
    pytest.param("-foo.com", r"hyphen|dash|-|start|begin", id="label-starts-with-hyphen"),
    pytest.param("foo-.com", r"hyphen|dash|-|end", id="label-ends-with-hyphen"),
    pytest.param("foo.-bar.com", r"hyphen|dash|-|start|begin", id="inner-label-hyphen"),
    pytest.param("a" * 64 + ".com", r"63|long|length|label", id="label-64-chars"),
    pytest.param(".".join(["a" * 50] * 5) + ".com", r"253|long|length", id="name-258-chars"),
    pytest.param("foo/bar.com", r"character|/", id="slash"),
]


@pytest.mark.parametrize(("host", "why"), INVALID_HOSTS)
def test_invalid_host_is_refused_with_a_reason(host: str, why: str) -> None:
    router = Router()
    with pytest.raises(InvalidRuleError) as info:
        router.add(host, "/", "Prefix", "svc")
    error = info.value
    assert isinstance(error, ValueError)
    assert isinstance(error, RouteError)
    assert isinstance(error, FastrouteError)
    assert error.host == host  # the rule as given
    assert repr(host) in str(error)  # the message names the offending host
    assert re.search(why, error.reason, re.IGNORECASE), error.reason
    assert error.reason in str(error)
    assert len(router) == 0


def test_non_ascii_host_message_gives_the_idna_form_or_says_idna() -> None:
    with pytest.raises(InvalidRuleError) as info:
        Router().add("bücher.de", "/", "Prefix", "svc")
    message = str(info.value)
    assert "xn--bcher-kva.de" in message or "IDNA" in message.upper()


@pytest.mark.parametrize(
    ("host", "normalized"),
    [
        pytest.param("localhost", "localhost", id="single-label"),
        pytest.param("a-b.example.com", "a-b.example.com", id="hyphen-inside"),
        pytest.param("123.example.com", "123.example.com", id="numeric-label"),
        pytest.param("xn--bcher-kva.de", "xn--bcher-kva.de", id="idna"),
        pytest.param("FOO.Example.COM", "foo.example.com", id="upper-case-folded"),
        pytest.param("foo.com.", "foo.com", id="trailing-dot-dropped"),
        pytest.param("*.foo.com", "*.foo.com", id="wildcard"),
        pytest.param("*.Foo.Com.", "*.foo.com", id="wildcard-folded"),
        pytest.param("*.com", "*.com", id="wildcard-one-label"),
        pytest.param("a" * 63 + ".com", "a" * 63 + ".com", id="label-63-chars"),
        pytest.param(
            ".".join(["a" * 63] * 4)[:253], ".".join(["a" * 63] * 4)[:253], id="name-253-chars"
        ),
        pytest.param("", "", id="any-host"),
    ],
)
def test_valid_host_is_accepted_and_normalized(host: str, normalized: str) -> None:
    router = Router()
    router.add(host, "/", "Prefix", "svc")
    assert list(router.routes()) == [Route(normalized, "/", "Prefix", "svc")]


# --------------------------------------------------------------------------- invalid paths

ALL_TYPES = ["Exact", "Prefix", "ImplementationSpecific"]
K8S_TYPES = ["Exact", "Prefix"]

# (id, path, the path types it is invalid for, a regex the reason must match)
INVALID_PATHS: list[tuple[str, str, list[str], str]] = [
    ("empty", "", ALL_TYPES, r"/|slash|empty|start|begin"),
    ("no-leading-slash", "foo", ALL_TYPES, r"/|slash|start|begin|absolute"),
    ("star", "*", ALL_TYPES, r"/|slash|start|begin|absolute"),
    ("nul", "/foo\x00", ALL_TYPES, r"control|character"),
    ("unit-separator", "/foo\x1f", ALL_TYPES, r"control|character"),
    ("del", "/foo\x7f", ALL_TYPES, r"control|character"),
    ("tab", "/foo\tbar", ALL_TYPES, r"control|character|tab"),
    ("crlf", "/foo\r\n", ALL_TYPES, r"control|character|newline"),
    ("space", "/foo bar", ALL_TYPES, r"space|whitespace|character"),
    ("query", "/foo?x=1", ALL_TYPES, r"\?|query|character"),
    ("fragment", "/foo#top", ALL_TYPES, r"#|fragment|character"),
    ("double-slash-only", "//", K8S_TYPES, r"//|empty|segment|element"),
    ("double-slash", "/foo//bar", K8S_TYPES, r"//|empty|segment|element"),
    ("dot-segment", "/foo/./bar", K8S_TYPES, r"/\./|dot|segment|element"),
    ("dotdot-segment", "/foo/../bar", K8S_TYPES, r"/\.\./|dot|segment|element"),
    ("encoded-slash-lower", "/foo%2fbar", K8S_TYPES, r"%2f|encoded|percent"),
    ("encoded-slash-upper", "/foo%2Fbar", K8S_TYPES, r"%2f|encoded|percent"),
    ("ends-dotdot", "/foo/..", K8S_TYPES, r"\.\.|dot|segment|element"),
    ("ends-dot", "/foo/.", K8S_TYPES, r"/\.|dot|segment|element"),
    ("root-dotdot", "/..", K8S_TYPES, r"\.\.|dot|segment|element"),
    ("root-dot", "/.", K8S_TYPES, r"/\.|dot|segment|element"),
]


@pytest.mark.parametrize(
    ("path", "path_type", "why"),
    [
        pytest.param(path, path_type, why, id=f"{name}-{path_type}")
        for name, path, types, why in INVALID_PATHS
        for path_type in types
    ],
)
def test_invalid_path_is_refused_with_a_reason(path: str, path_type: str, why: str) -> None:
    router = Router()
    with pytest.raises(InvalidRuleError) as info:
        router.add("foo.com", path, path_type, "svc")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.path == path
    assert error.path_type == path_type
    assert repr(path) in str(error)  # the message names the offending path
    assert re.search(why, error.reason, re.IGNORECASE), error.reason
    assert len(router) == 0


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("//", id="double-slash-only"),
        pytest.param("/foo//bar", id="double-slash"),
        pytest.param("/foo/./bar", id="dot-segment"),
        pytest.param("/foo/../bar", id="dotdot-segment"),
        pytest.param("/foo%2fbar", id="encoded-slash"),
        pytest.param("/foo/..", id="ends-dotdot"),
        pytest.param("/foo/.", id="ends-dot"),
    ],
)
def test_implementation_specific_accepts_what_only_kubernetes_forbids(path: str) -> None:
    """ImplementationSpecific only needs a leading "/" and no control chars, space, ? or #."""
    router = Router()
    router.add("", path, "ImplementationSpecific", "svc")
    assert router.match("", path) == "svc"
    assert router.match("", path + "/more") == "svc"


def test_implementation_specific_double_slash_matches_as_prefix() -> None:
    router = Router()
    router.add("", "/a//b", "ImplementationSpecific", "svc")
    assert router.match("", "/a//b/c") == "svc"
    assert router.match("", "/a/b") is None
    assert router.match("", "/a//bc") is None


@pytest.mark.parametrize("path_type", ALL_TYPES)
@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/.well-known/acme", id="dot-prefixed-element"),
        pytest.param("/...", id="three-dots"),
        pytest.param("/a.b/c..d", id="dots-inside-elements"),
        pytest.param("/foo%20bar", id="encoded-space"),
        pytest.param("/foo%2", id="truncated-escape"),
        pytest.param("/café", id="non-ascii"),
        pytest.param("/a/b/", id="trailing-slash"),
        pytest.param("/~user/$x;y=1,z", id="sub-delims"),
    ],
)
def test_valid_path_is_accepted(path: str, path_type: str) -> None:
    router = Router()
    router.add("", path, path_type, "svc")
    assert router.match("", path) == "svc"
    assert list(router.routes()) == [Route("", path, path_type, "svc")]


@pytest.mark.parametrize(
    "path_type",
    [
        pytest.param("prefix", id="lower-case"),
        pytest.param("EXACT", id="upper-case"),
        pytest.param("Regex", id="unknown"),
        pytest.param("", id="empty"),
        pytest.param("Prefix ", id="trailing-space"),
    ],
)
def test_unknown_path_type_is_refused(path_type: str) -> None:
    router = Router()
    with pytest.raises(InvalidRuleError) as info:
        router.add("", "/", path_type, "svc")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.path_type == path_type
    assert re.search(r"type|Exact|Prefix", error.reason, re.IGNORECASE), error.reason
    assert len(router) == 0


@pytest.mark.parametrize(
    ("host", "path", "path_type"),
    [
        pytest.param(1, "/", "Prefix", id="int-host"),
        pytest.param(None, "/", "Prefix", id="none-host"),
        pytest.param("", b"/", "Prefix", id="bytes-path"),
        pytest.param("", None, "Prefix", id="none-path"),
        pytest.param("", "/", None, id="none-path-type"),
    ],
)
def test_add_with_wrong_types_is_refused(host: object, path: object, path_type: object) -> None:
    router = Router()
    with pytest.raises((TypeError, InvalidRuleError)):
        router.add(host, path, path_type, "svc")  # type: ignore[arg-type]
    assert len(router) == 0


# --------------------------------------------------------------------------- conflicts

CONFLICTS = [
    pytest.param(("", "/a", "Prefix"), ("", "/a/", "Prefix"), id="prefix-trailing-slash"),
    pytest.param(("", "/a/", "Prefix"), ("", "/a", "Prefix"), id="prefix-trailing-slash-rev"),
    pytest.param(("", "/a", "Prefix"), ("", "/a", "ImplementationSpecific"), id="prefix-vs-is"),
    pytest.param(("", "/a/", "ImplementationSpecific"), ("", "/a", "Prefix"), id="is-vs-prefix"),
    pytest.param(("", "/a", "Exact"), ("", "/a", "Exact"), id="exact-twice"),
    pytest.param(("", "/", "Prefix"), ("", "/", "Prefix"), id="root-twice"),
    pytest.param(("Foo.com", "/a", "Prefix"), ("foo.com", "/a", "Prefix"), id="host-case"),
    pytest.param(("foo.com.", "/a", "Exact"), ("FOO.COM", "/a", "Exact"), id="host-dot"),
    pytest.param(("*.Foo.com", "/a", "Prefix"), ("*.foo.com.", "/a/", "Prefix"), id="wildcard"),
]


@pytest.mark.parametrize(("first", "second"), CONFLICTS)
def test_conflicting_rule_is_refused_and_names_the_existing_rule(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    router = Router()
    router.set_default("default")
    existing_backend = ["first"]  # unhashable, compared by identity below
    router.add(*first, existing_backend)
    before = list(router.routes())
    with pytest.raises(RouteConflictError) as info:
        router.add(*second, "second")
    error = info.value
    assert isinstance(error, ValueError)
    # .existing is the rule as the router holds it
    assert error.existing == before[0]
    assert error.existing.backend is existing_backend
    assert error.existing.path == first[1]
    assert error.existing.path_type == first[2]
    assert error.new.path == second[1]
    assert error.new.path_type == second[2]
    assert error.new.backend == "second"
    assert error.new.host == error.existing.host  # the same host, once normalized
    # the message names the existing rule
    message = str(error)
    assert repr(first[1]) in message
    assert first[2] in message
    # and the router is unchanged
    assert len(router) == 1
    assert list(router.routes()) == before
    assert router.match(first[0].replace("*", "x"), first[1]) is existing_backend


NOT_CONFLICTS = [
    pytest.param(("", "/a", "Exact"), ("", "/a", "Prefix"), id="exact-vs-prefix"),
    pytest.param(("", "/a", "Exact"), ("", "/a", "ImplementationSpecific"), id="exact-vs-is"),
    pytest.param(("", "/a", "Exact"), ("", "/a/", "Exact"), id="exact-trailing-slash"),
    pytest.param(("", "/", "Exact"), ("", "/", "Prefix"), id="root-exact-vs-prefix"),
    pytest.param(("", "/a", "Prefix"), ("foo.com", "/a", "Prefix"), id="other-host"),
    pytest.param(("foo.com", "/a", "Prefix"), ("*.foo.com", "/a", "Prefix"), id="wildcard"),
    pytest.param(("*.foo.com", "/a", "Prefix"), ("*.bar.com", "/a", "Prefix"), id="wildcards"),
    pytest.param(("", "/a", "Prefix"), ("", "/A", "Prefix"), id="path-case"),
    pytest.param(("", "/a", "Prefix"), ("", "/a/b", "Prefix"), id="longer"),
]


@pytest.mark.parametrize(("first", "second"), NOT_CONFLICTS)
def test_rules_matching_different_requests_coexist(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    router = Router()
    router.add(*first, "first")
    router.add(*second, "second")
    assert len(router) == 2
    assert [r.backend for r in router.routes()] == ["first", "second"]


def test_failed_add_on_a_new_host_does_not_select_that_host() -> None:
    """A refused rule must not leave an empty host entry that hides the host-less rules."""
    router = Router()
    router.add("", "/", "Prefix", "any")
    with pytest.raises(InvalidRuleError):
        router.add("foo.com", "no-slash", "Prefix", "foo")
    with pytest.raises(InvalidRuleError):
        router.add("*.foo.com", "/", "Regex", "wild")
    assert router.match("foo.com", "/x") == "any"
    assert router.match("bar.foo.com", "/x") == "any"
    assert len(router) == 1
    assert list(router.routes()) == [Route("", "/", "Prefix", "any")]
    explanation = router.explain("foo.com", "/x")
    assert explanation.scope == "any"


def test_failed_add_keeps_existing_rules_of_the_host() -> None:
    router = Router()
    router.add("foo.com", "/a", "Prefix", "a")
    with pytest.raises(RouteConflictError):
        router.add("FOO.com", "/a/", "Prefix", "a2")
    with pytest.raises(InvalidRuleError):
        router.add("foo.com", "/a//b", "Prefix", "ab")
    assert router.match("foo.com", "/a/b") == "a"
    assert router.match("foo.com", "/a//b") == "a"
    assert len(router) == 1


# --------------------------------------------------------------------------- remove


def test_remove_returns_the_backend_and_forgets_the_rule() -> None:
    router = Router()
    backend = object()
    router.add("foo.com", "/a", "Prefix", backend)
    router.add("foo.com", "/", "Prefix", "root")
    assert router.remove("foo.com", "/a", "Prefix") is backend
    assert len(router) == 1
    assert list(router.routes()) == [Route("foo.com", "/", "Prefix", "root")]
    assert router.match("foo.com", "/a") == "root"


@pytest.mark.parametrize(
    ("added", "removed"),
    [
        pytest.param(("", "/a", "Prefix"), ("", "/a/", "Prefix"), id="trailing-slash"),
        pytest.param(("", "/a/", "Prefix"), ("", "/a", "ImplementationSpecific"), id="as-is"),
        pytest.param(("", "/a", "ImplementationSpecific"), ("", "/a", "Prefix"), id="is-as-px"),
        pytest.param(("Foo.com.", "/a", "Exact"), ("foo.COM", "/a", "Exact"), id="host-spelling"),
        pytest.param(("*.foo.com", "/", "Prefix"), ("*.FOO.com.", "/", "Prefix"), id="wildcard"),
    ],
)
def test_remove_finds_the_effective_rule(
    added: tuple[str, str, str], removed: tuple[str, str, str]
) -> None:
    router = Router()
    router.add(*added, "svc")
    assert router.remove(*removed) == "svc"
    assert len(router) == 0
    assert list(router.routes()) == []
    assert router.match("x.foo.com", added[1]) is None


@pytest.mark.parametrize(
    "removed",
    [
        pytest.param(("", "/a", "Exact"), id="exact-does-not-remove-prefix"),
        pytest.param(("foo.com", "/a", "Prefix"), id="other-host"),
        pytest.param(("*.com", "/a", "Prefix"), id="wildcard-host"),
        pytest.param(("", "/a/b", "Prefix"), id="longer-path"),
        pytest.param(("", "/", "Prefix"), id="shorter-path"),
    ],
)
def test_remove_of_an_absent_rule_raises_not_found(removed: tuple[str, str, str]) -> None:
    router = Router()
    router.add("", "/a", "Prefix", "svc")
    with pytest.raises(RouteNotFoundError) as info:
        router.remove(*removed)
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, FastrouteError)
    assert repr(removed[1]) in str(info.value)
    assert len(router) == 1
    assert router.match("", "/a") == "svc"


def test_remove_twice_raises_the_second_time() -> None:
    router = Router()
    router.add("", "/a", "Exact", "svc")
    router.remove("", "/a", "Exact")
    with pytest.raises(RouteNotFoundError):
        router.remove("", "/a", "Exact")


@pytest.mark.parametrize(
    ("host", "path", "path_type"),
    [
        pytest.param("", "a", "Prefix", id="no-leading-slash"),
        pytest.param("", "/a", "Regex", id="unknown-type"),
        pytest.param("foo.*.com", "/a", "Prefix", id="bad-host"),
    ],
)
def test_remove_of_a_malformed_rule_raises_invalid(host: str, path: str, path_type: str) -> None:
    router = Router()
    router.add("", "/a", "Prefix", "svc")
    with pytest.raises(InvalidRuleError):
        router.remove(host, path, path_type)
    assert len(router) == 1


def test_removing_the_last_rule_of_a_host_unselects_it() -> None:
    router = Router()
    router.add("", "/", "Prefix", "any")
    router.add("foo.com", "/api", "Prefix", "foo-api")
    router.add("*.foo.com", "/api", "Prefix", "wild-api")
    assert router.match("foo.com", "/other") is None
    assert router.match("bar.foo.com", "/other") is None
    router.remove("foo.com", "/api", "Prefix")
    router.remove("*.foo.com", "/api", "Prefix")
    assert router.match("foo.com", "/other") == "any"
    assert router.match("bar.foo.com", "/other") == "any"
    assert router.match("foo.com", "/api") == "any"
    assert router.explain("foo.com", "/api").scope == "any"


def test_removing_the_exact_host_falls_back_to_the_wildcard() -> None:
    router = Router()
    router.add("*.foo.com", "/", "Prefix", "wild")
    router.add("bar.foo.com", "/api", "Prefix", "bar")
    assert router.match("bar.foo.com", "/x") is None
    router.remove("bar.foo.com", "/api/", "Prefix")
    assert router.match("bar.foo.com", "/x") == "wild"


def test_a_removed_rule_can_be_added_again_and_goes_last() -> None:
    router = Router()
    router.add("", "/a", "Prefix", "a1")
    router.add("", "/b", "Prefix", "b")
    router.remove("", "/a", "Prefix")
    router.add("", "/a/", "Prefix", "a2")
    assert router.match("", "/a/x") == "a2"
    assert [(r.path, r.backend) for r in router.routes()] == [("/b", "b"), ("/a/", "a2")]


def test_routes_are_listed_in_insertion_order_with_normalized_hosts() -> None:
    router = Router()
    rules = [
        ("Foo.COM.", "/z", "Prefix"),
        ("", "/", "Exact"),
        ("*.Bar.com", "/a/", "ImplementationSpecific"),
        ("foo.com", "/a", "Exact"),
        ("", "/y/", "Prefix"),
    ]
    for i, (host, path, path_type) in enumerate(rules):
        router.add(host, path, path_type, i)
    assert len(router) == len(rules)
    assert list(router.routes()) == [
        Route("foo.com", "/z", "Prefix", 0),
        Route("", "/", "Exact", 1),
        Route("*.bar.com", "/a/", "ImplementationSpecific", 2),
        Route("foo.com", "/a", "Exact", 3),
        Route("", "/y/", "Prefix", 4),
    ]
    assert all(type(r) is Route for r in router.routes())


def test_default_backend() -> None:
    router = Router()
    assert router.default is None
    marker = object()
    router.set_default(marker)
    assert router.default is marker
    assert router.match("x.com", "/anything") is marker
    router.set_default(None)
    assert router.default is None
    assert router.match("x.com", "/anything") is None
    assert len(router) == 0  # the default is not a rule
