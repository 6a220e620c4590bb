"""The Kubernetes Ingress documentation's examples, row by row, plus the cases it leaves open.

Source: https://kubernetes.io/docs/concepts/services-networking/ingress/ -- the "Examples"
table under "Multiple matches"/"Path types" and the "Hostname wildcards" table. Every rule in
a row gets its own backend, so each row asserts *which* rule wins, not only that one matched.
The open cases follow ingress-nginx: the host is selected first and there is no fallthrough.
"""

from __future__ import annotations

import pytest

from fastroute import Router

DEFAULT = "default-backend"

# (rules as (path_type, path), request path, winning rule or None for the default backend)
Rule = tuple[str, str]

PATH_TABLE = [
    # Prefix "/" -- "(all paths)": a sample of quite different paths.
    pytest.param([("Prefix", "/")], "/", ("Prefix", "/"), id="prefix-root-vs-root"),
    pytest.param([("Prefix", "/")], "/foo", ("Prefix", "/"), id="prefix-root-vs-foo"),
    pytest.param([("Prefix", "/")], "/foo/", ("Prefix", "/"), id="prefix-root-vs-foo-slash"),
    pytest.param([("Prefix", "/")], "/aaa/bbb/ccc", ("Prefix", "/"), id="prefix-root-vs-deep"),
    pytest.param([("Prefix", "/")], "//x", ("Prefix", "/"), id="prefix-root-vs-double-slash"),
    # Exact
    pytest.param([("Exact", "/foo")], "/foo", ("Exact", "/foo"), id="exact-foo-vs-foo"),
    pytest.param([("Exact", "/foo")], "/bar", None, id="exact-foo-vs-bar"),
    pytest.param([("Exact", "/foo")], "/foo/", None, id="exact-foo-vs-foo-slash"),
    pytest.param([("Exact", "/foo/")], "/foo", None, id="exact-foo-slash-vs-foo"),
    # Prefix, trailing slashes
    pytest.param([("Prefix", "/foo")], "/foo", ("Prefix", "/foo"), id="prefix-foo-vs-foo"),
    pytest.param([("Prefix", "/foo")], "/foo/", ("Prefix", "/foo"), id="prefix-foo-vs-foo-slash"),
    pytest.param([("Prefix", "/foo/")], "/foo", ("Prefix", "/foo/"), id="prefix-foo-slash-vs-foo"),
    pytest.param(
        [("Prefix", "/foo/")], "/foo/", ("Prefix", "/foo/"), id="prefix-foo-slash-vs-foo-slash"
    ),
    # Prefix, element-wise
    pytest.param([("Prefix", "/aaa/bb")], "/aaa/bbb", None, id="prefix-bb-vs-bbb"),
    pytest.param(
        [("Prefix", "/aaa/bbb")], "/aaa/bbb", ("Prefix", "/aaa/bbb"), id="prefix-bbb-vs-bbb"
    ),
    pytest.param(
        [("Prefix", "/aaa/bbb/")],
        "/aaa/bbb",
        ("Prefix", "/aaa/bbb/"),
        id="prefix-bbb-slash-vs-bbb-ignores-trailing-slash",
    ),
    pytest.param(
        [("Prefix", "/aaa/bbb")],
        "/aaa/bbb/",
        ("Prefix", "/aaa/bbb"),
        id="prefix-bbb-vs-bbb-slash-matches-trailing-slash",
    ),
    pytest.param(
        [("Prefix", "/aaa/bbb")],
        "/aaa/bbb/ccc",
        ("Prefix", "/aaa/bbb"),
        id="prefix-bbb-vs-subpath",
    ),
    pytest.param([("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None, id="prefix-bbb-vs-string-prefix"),
    # Several rules: the longest match wins
    pytest.param(
        [("Prefix", "/"), ("Prefix", "/aaa")],
        "/aaa/ccc",
        ("Prefix", "/aaa"),
        id="prefixes-root-aaa-vs-aaa-ccc",
    ),
    pytest.param(
        [("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        "/aaa/bbb",
        ("Prefix", "/aaa/bbb"),
        id="prefixes-root-aaa-bbb-vs-aaa-bbb",
    ),
    pytest.param(
        [("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        "/ccc",
        ("Prefix", "/"),
        id="prefixes-root-aaa-bbb-vs-ccc",
    ),
    pytest.param([("Prefix", "/aaa")], "/ccc", None, id="prefix-aaa-vs-ccc-default"),
    # Mixed: on equal length Exact beats Prefix, whatever the insertion order
    pytest.param(
        [("Prefix", "/foo"), ("Exact", "/foo")],
        "/foo",
        ("Exact", "/foo"),
        id="mixed-prefix-then-exact",
    ),
    pytest.param(
        [("Exact", "/foo"), ("Prefix", "/foo")],
        "/foo",
        ("Exact", "/foo"),
        id="mixed-exact-then-prefix",
    ),
    # The rules above, read carefully: lengths of the normalized paths
    pytest.param(
        [("Prefix", "/foo/"), ("Exact", "/foo")],
        "/foo",
        ("Exact", "/foo"),
        id="mixed-prefix-slash-vs-exact-equal-length",
    ),
    pytest.param(
        [("Exact", "/foo/"), ("Prefix", "/foo/")],
        "/foo/",
        ("Exact", "/foo/"),
        id="mixed-exact-slash-longer-than-prefix-slash",
    ),
    pytest.param(
        [("Exact", "/foo"), ("Prefix", "/foo")],
        "/foo/",
        ("Prefix", "/foo"),
        id="mixed-exact-misses-prefix-takes-trailing-slash",
    ),
    pytest.param(
        [("Exact", "/"), ("Prefix", "/")], "/", ("Exact", "/"), id="mixed-root-exact-wins"
    ),
    pytest.param(
        [("Exact", "/"), ("Prefix", "/")], "/x", ("Prefix", "/"), id="mixed-root-prefix-rest"
    ),
    pytest.param(
        [("Exact", "/aaa/bbb/ccc"), ("Prefix", "/aaa/bbb")],
        "/aaa/bbb/ccc",
        ("Exact", "/aaa/bbb/ccc"),
        id="longer-exact-beats-shorter-prefix",
    ),
    pytest.param(
        [("Exact", "/aaa"), ("Prefix", "/aaa/bbb")],
        "/aaa/bbb/ccc",
        ("Prefix", "/aaa/bbb"),
        id="longer-prefix-beats-non-matching-exact",
    ),
    pytest.param(
        [("Prefix", "/aaa/bbb")], "/aaa/bbb//x", ("Prefix", "/aaa/bbb"), id="prefix-vs-empty-elem"
    ),
    pytest.param([("Prefix", "/aaa/bbb")], "/aaa//bbb", None, id="prefix-vs-split-by-empty-elem"),
    pytest.param([("Prefix", "/Foo")], "/foo", None, id="prefix-is-case-sensitive"),
    pytest.param([("Exact", "/Foo")], "/foo", None, id="exact-is-case-sensitive"),
]


def _backend(path_type: str, path: str) -> str:
    return f"{path_type} {path}"


def _swap_prefix(rule: Rule, prefix_type: str) -> Rule:
    path_type, path = rule
    return (prefix_type if path_type == "Prefix" else path_type, path)


@pytest.mark.parametrize("prefix_type", ["Prefix", "ImplementationSpecific"])
@pytest.mark.parametrize(("rules", "request_path", "winner"), PATH_TABLE)
def test_path_table(
    rules: list[Rule], request_path: str, winner: Rule | None, prefix_type: str
) -> None:
    """Each row of the docs' path table; ImplementationSpecific must behave as Prefix."""
    router = Router()
    router.set_default(DEFAULT)
    for rule in rules:
        path_type, path = _swap_prefix(rule, prefix_type)
        router.add("", path, path_type, _backend(path_type, path))
    expected = DEFAULT if winner is None else _backend(*_swap_prefix(winner, prefix_type))
    assert router.match("example.com", request_path) == expected
    assert router.match(b"example.com", request_path.encode()) == expected


@pytest.mark.parametrize(("rules", "request_path", "winner"), PATH_TABLE)
def test_path_table_on_a_named_host(
    rules: list[Rule], request_path: str, winner: Rule | None
) -> None:
    """The same table holds when the rules belong to a host instead of any host."""
    router = Router()
    for path_type, path in rules:
        router.add("foo.bar.com", path, path_type, _backend(path_type, path))
    expected = None if winner is None else _backend(*winner)
    assert router.match("foo.bar.com", request_path) == expected


@pytest.mark.parametrize(
    ("rule_host", "host_header", "matches"),
    [
        pytest.param("*.foo.com", "bar.foo.com", True, id="wildcard-shared-suffix"),
        pytest.param("*.foo.com", "baz.bar.foo.com", False, id="wildcard-one-label-only"),
        pytest.param("*.foo.com", "foo.com", False, id="wildcard-not-apex"),
        pytest.param("foo.bar.com", "foo.bar.com", True, id="exact-host"),
        pytest.param("foo.bar.com", "bar.com", False, id="exact-host-not-parent"),
        pytest.param("foo.bar.com", "x.foo.bar.com", False, id="exact-host-not-child"),
        pytest.param("*.foo.com", ".foo.com", False, id="wildcard-needs-nonempty-label"),
        pytest.param("*.foo.com", "barfoo.com", False, id="wildcard-is-label-wise"),
    ],
)
def test_hostname_wildcard_table(rule_host: str, host_header: str, matches: bool) -> None:
    router = Router()
    router.set_default(DEFAULT)
    router.add(rule_host, "/", "Prefix", "svc")
    assert router.match(host_header, "/x") == ("svc" if matches else DEFAULT)


def test_the_docs_example_ingress_with_two_hosts() -> None:
    """The docs' wildcard Ingress: foo.bar.com -> service1, *.foo.com -> service2."""
    router = Router()
    router.add("foo.bar.com", "/bar", "Prefix", "service1")
    router.add("*.foo.com", "/foo", "Prefix", "service2")
    assert router.match("foo.bar.com", "/bar") == "service1"
    assert router.match("baz.foo.com", "/foo") == "service2"
    assert router.match("foo.bar.com", "/foo") is None
    assert router.match("baz.foo.com", "/bar") is None
    assert router.match("foo.com", "/foo") is None


def test_nothing_matches_and_no_default_gives_none() -> None:
    router = Router()
    router.add("", "/aaa", "Prefix", "aaa")
    assert router.match("x.com", "/ccc") is None
    router.set_default(DEFAULT)
    assert router.match("x.com", "/ccc") == DEFAULT


# --------------------------------------------------------------------------- open cases


def _layered_router() -> Router:
    """One rule set with every host layer: exact, wildcard and host-less."""
    router = Router()
    router.set_default(DEFAULT)
    router.add("", "/", "Prefix", "any-root")
    router.add("", "/shared", "Prefix", "any-shared")
    router.add("*.foo.com", "/wild", "Prefix", "wild")
    router.add("*.foo.com", "/shared", "Prefix", "wild-shared")
    router.add("bar.foo.com", "/bar", "Prefix", "bar")
    router.add("bar.foo.com", "/shared", "Prefix", "bar-shared")
    return router


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        # exact host selected: only its rules, no fallthrough to wildcard or host-less
        pytest.param("bar.foo.com", "/bar/x", "bar", id="exact-own-rule"),
        pytest.param("bar.foo.com", "/shared", "bar-shared", id="exact-beats-wildcard-same-path"),
        pytest.param("bar.foo.com", "/wild", DEFAULT, id="exact-no-fallthrough-to-wildcard"),
        pytest.param("bar.foo.com", "/other", DEFAULT, id="exact-no-fallthrough-to-hostless"),
        # wildcard host selected: only its rules
        pytest.param("baz.foo.com", "/wild", "wild", id="wildcard-own-rule"),
        pytest.param("baz.foo.com", "/shared/1", "wild-shared", id="wildcard-beats-hostless"),
        pytest.param("baz.foo.com", "/bar", DEFAULT, id="wildcard-no-exact-rules-of-sibling"),
        pytest.param("baz.foo.com", "/other", DEFAULT, id="wildcard-no-fallthrough-hostless"),
        # hosts with no rules of their own: the host-less rules
        pytest.param("foo.com", "/wild", "any-root", id="apex-not-covered-by-wildcard"),
        pytest.param("a.bar.foo.com", "/bar", "any-root", id="two-labels-not-covered"),
        pytest.param("other.org", "/shared", "any-shared", id="unknown-host-hostless"),
        pytest.param("", "/bar", "any-root", id="empty-host-hostless"),
    ],
)
def test_host_is_selected_first_without_fallthrough(host: str, path: str, expected: str) -> None:
    assert _layered_router().match(host, path) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("foo.com", "foo", id="plain"),
        pytest.param("FOO.com:8080", "foo", id="case-and-port"),
        pytest.param("foo.com.", "foo", id="trailing-dot"),
        pytest.param("foo.com.:443", "foo", id="trailing-dot-and-port"),
        pytest.param("FOO.COM.", "foo", id="upper-and-trailing-dot"),
        pytest.param("foo.com:", "foo", id="empty-port"),
        pytest.param("Bar.Foo.Com:80", "wild", id="wildcard-case-and-port"),
        pytest.param("bar.foo.com.", "wild", id="wildcard-trailing-dot"),
        pytest.param("[::1]:80", "any", id="ipv6-literal-and-port"),
        pytest.param("[::1]", "any", id="ipv6-literal"),
        pytest.param("127.0.0.1", "any", id="ipv4"),
        pytest.param("127.0.0.1:8080", "any", id="ipv4-and-port"),
        pytest.param(":80", "any", id="port-only"),
        pytest.param("foo.com..", "any", id="two-trailing-dots-is-another-name"),
        pytest.param("xfoo.com", "any", id="other-name"),
    ],
)
def test_request_host_normalization(host: str, expected: str) -> None:
    router = Router()
    router.add("foo.com", "/", "Prefix", "foo")
    router.add("*.foo.com", "/", "Prefix", "wild")
    router.add("", "/", "Prefix", "any")
    assert router.match(host, "/x") == expected
    assert router.match(host.encode(), b"/x") == expected


def test_rule_host_is_normalized_like_the_request_host() -> None:
    router = Router()
    router.add("Foo.COM.", "/", "Prefix", "foo")
    router.add("*.Bar.Com", "/", "Prefix", "bar")
    assert router.match("foo.com", "/") == "foo"
    assert router.match("x.bar.com", "/") == "bar"
    assert [r.host for r in router.routes()] == ["foo.com", "*.bar.com"]


def test_ip_literal_hosts_do_not_select_a_numeric_wildcard() -> None:
    """An IP address selects no named host, even one whose labels look like its tail."""
    router = Router()
    router.add("*.0.0.1", "/", "Prefix", "numeric-wildcard")
    router.add("", "/", "Prefix", "any")
    assert router.match("x.0.0.1", "/") == "numeric-wildcard"
    assert router.match("127.0.0.1", "/") == "any"
    assert router.match("127.0.0.1:8080", "/") == "any"
