"""Regex paths and capture rewrites (``use-regex``, ``rewrite-target``), scoped to the
Ingress that asks: RE2 patterns, precedence against literal rules on the same host
(checked against a naive reference), rewrites with captures, ``explain``, and the proxy
end to end over real sockets.

The expected behaviour is ingress-nginx's (docs ``ingress-path-matching.md``,
``examples/rewrite``, e2e ``annotations/rewrite.go``), except where a test says why
fastroute differs (regex applies only to the Ingress that asked; Exact paths stay exact).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute import InvalidRuleError, RouteConflictError
from fastroute.errors import NoRouteError
from fastroute.ingress import ConfigBuilder, build_config
from fastroute.ingress.explain import SCOPE_NOTE, explain_route
from fastroute.ingress.model import RouteConfig, Target
from fastroute.ingress.regex import compile_path, expand, literal_start, rewrite, searcher
from fastroute.proxy.decide import Forward, decide
from fastroute.proxy.server import Proxy
from fastroute.proxy.tls import TLSContexts
from tests.cli import run_controller
from tests.objects import ingress as ingress_object
from tests.objects import service_at
from tests.polling import run_within as _run
from tests.raw import RawBackend, RawClient, Reply, Request
from tests.reference import ReferenceRouter, normalize_request_host, wildcard_for

NGINX = "nginx.ingress.kubernetes.io/"
REGEX = {NGINX + "use-regex": "true"}
HOST = "app.example.com"

Path = tuple[str, str, str]  # (path, pathType, Service)


def _ingress(
    name: str,
    host: str,
    paths: Sequence[Path],
    annotations: Mapping[str, str] | None = None,
    created: str = "",
) -> dict[str, Any]:
    return ingress_object(
        name, host or None, paths=paths, annotations=annotations or {}, created=created
    )


def _service(name: str, port: int = 9) -> list[dict[str, Any]]:
    """Service ``name`` with one endpoint, 127.0.0.1:port."""
    return service_at(port, name)


def _service_of(config: RouteConfig, host: str, path: str) -> str | None:
    route = config.match(host, path)
    return route.backend.service if isinstance(route, Target) else None


def _decided_service(config: RouteConfig, host: str, path: str) -> str | None:
    """Where the proxy's ``decide`` sends a GET (it skips the regex index for a route the
    trie found on an exact host without regex paths: this checks that it may)."""
    try:
        plan = decide(
            config, method=b"GET", target=path.encode(), host=host.encode(), scheme="http"
        )
    except NoRouteError:
        return None
    assert isinstance(plan, Forward), plan
    return plan.route.backend.service


def _forward(config: RouteConfig, target: bytes, host: bytes = HOST.encode()) -> Forward:
    decision = decide(config, method=b"GET", target=target, host=host, scheme="http")
    assert isinstance(decision, Forward), decision
    return decision


# -- patterns ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"/(a)\1", "invalid escape sequence"),
        ("/a(?=b)", "invalid perl operator"),
        ("/a(?<!b)", "invalid perl operator"),
        ("/a(b", "missing )"),
        ("/a[b", "missing ]"),
    ],
)
def test_re2_refuses_backreferences_lookaround_and_malformed_patterns(
    pattern: str, reason: str
) -> None:
    with pytest.raises(ValueError, match="RE2") as error:
        compile_path(pattern)
    assert reason in str(error.value)
    assert repr(pattern) in str(error.value)


def test_a_pattern_is_searched_from_the_start_of_the_path_case_insensitively() -> None:
    pattern = compile_path("/foo/bar/[a-z]{3}")
    assert pattern.search(b"/FOO/Bar/BAZ/more") is not None
    assert pattern.search(b"/x/foo/bar/baz") is None


def test_a_path_is_matched_byte_by_byte_as_nginx_does() -> None:
    """Not UTF-8 (a decoded ``%FF``) still matches and is captured whole; non-ASCII
    letters are not folded (nginx's PCRE runs without its UTF mode)."""
    match = compile_path("/a/(.*)").search(b"/A/\xff\xfe/x")
    assert match is not None
    assert match.groups() == (b"\xff\xfe/x",)
    assert compile_path("/café").search("/café".encode()) is not None
    assert compile_path("/café").search("/CAFÉ".encode()) is None


def test_an_alternative_is_anchored_only_as_nginx_anchors_it() -> None:
    """``~* "^/a|/b"``: nginx's ``^`` binds to the first alternative only."""
    pattern = compile_path("/a|/b")
    assert pattern.search(b"/x/b") is not None
    assert pattern.search(b"/x/a") is None


# -- rewriting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "groups", "query", "expected"),
    [
        ("/$2", (b"/", b"new"), b"?x=1", b"/new?x=1"),
        ("/$2", (b"", b""), b"", b"/"),
        ("/$1/$3", (b"a",), b"", b"/a/"),  # a missing group is empty
        ("/new/$1", (b"a b?#%",), b"", b"/new/a%20b%3F%23%25"),  # from the decoded path
        ("/x?a=1", None, b"?q=2", b"/x?a=1&q=2"),  # nginx appends the request's arguments
        ("/x?a=1", None, b"", b"/x?a=1"),
        ("/x?", None, b"?q=2", b"/x"),  # a trailing "?" drops them
        ("/$9", tuple(b"%d" % i for i in range(1, 10)), b"", b"/9"),
    ],
)
def test_rewrite_replaces_the_path_with_the_template_and_its_captures(
    template: str, groups: tuple[bytes, ...] | None, query: bytes, expected: bytes
) -> None:
    filled = None if groups is None else groups + (b"",) * (9 - len(groups))
    path, new_query = rewrite(template, filled, query)
    assert path + new_query == expected


def test_expand_leaves_a_dollar_that_names_no_capture() -> None:
    assert expand(b"/a$b$", None) == b"/a$b$"


# -- which paths become regexes ------------------------------------------------------

THE_DOCS_EXAMPLE = ("/something(/|$)(.*)", "ImplementationSpecific", "http-svc")


def test_the_docs_rewrite_example_sends_the_second_capture() -> None:
    """ingress-nginx's docs/examples/rewrite: ``/something(/|$)(.*)`` -> ``/$2``."""
    annotations = {NGINX + "rewrite-target": "/$2"}
    config = build_config(
        [*_service("http-svc"), _ingress("rewrite", HOST, [THE_DOCS_EXAMPLE], annotations)]
    )
    assert config.rejected() == ()
    for asked, sent in [
        (b"/something", b"/"),
        (b"/something/", b"/"),
        (b"/something/new", b"/new"),
        (b"/SomeThing/new?x=1", b"/new?x=1"),
    ]:
        assert _forward(config, asked).target == sent
    with pytest.raises(Exception, match="no rule"):
        _forward(config, b"/other")


def test_a_path_equal_to_the_rewrite_target_is_not_rewritten() -> None:
    """ingress-nginx writes no rewrite for it: ``/`` beside ``/api`` keeps its path."""
    paths = [("/", "Prefix", "web"), ("/api", "Prefix", "api")]
    annotations = {NGINX + "rewrite-target": "/"}
    config = build_config(
        [*_service("web"), *_service("api"), _ingress("a", HOST, paths, annotations)]
    )
    assert _forward(config, b"/page?x=1").target == b"/page?x=1"
    assert _forward(config, b"/api/users?x=1").target == b"/?x=1"


@pytest.mark.parametrize(
    ("annotations", "path_type", "regex"),
    [
        (REGEX, "Prefix", True),
        (REGEX, "ImplementationSpecific", True),
        (REGEX, "Exact", False),
        ({NGINX + "rewrite-target": "/"}, "Prefix", True),
        ({NGINX + "rewrite-target": "/"}, "Exact", False),
        ({NGINX + "use-regex": "false"}, "Prefix", False),
        ({}, "ImplementationSpecific", False),
    ],
)
def test_use_regex_or_rewrite_target_make_prefix_paths_regexes_and_exact_stays_exact(
    annotations: Mapping[str, str], path_type: str, regex: bool
) -> None:
    config = build_config([_ingress("a", HOST, [("/api", path_type, "api")], annotations)])
    assert _service_of(config, HOST, "/api") == "api"
    # a regex /api also matches /API and /apix; a literal one neither
    assert (_service_of(config, HOST, "/API") == "api") is regex
    assert (_service_of(config, HOST, "/apix") == "api") is (regex and path_type != "Exact")


def test_a_refused_pattern_rejects_that_path_only() -> None:
    objects = [
        _ingress("bad", HOST, [("/ok/(.*)", "Prefix", "ok"), ("/(a)\\1", "Prefix", "no")], REGEX),
        _ingress("other", "other.example.com", [("/", "Prefix", "other")]),
    ]
    config = build_config(objects)
    [problem] = config.rejected()
    assert (problem.kind, problem.name) == ("Ingress", "default/bad")
    assert problem.field == "spec.rules[0].http.paths[1].path"
    assert "RE2" in problem.reason
    assert "invalid escape sequence" in problem.reason
    assert _service_of(config, HOST, "/ok/x") == "ok"
    assert _service_of(config, HOST, "/a") is None
    assert _service_of(config, "other.example.com", "/a") == "other"


def test_the_same_regex_path_of_a_newer_ingress_is_rejected() -> None:
    objects = [
        _ingress("old", HOST, [("/v[0-9]", "Prefix", "old")], REGEX, "2024-01-01T00:00:00Z"),
        _ingress("new", HOST, [("/v[0-9]", "Prefix", "new")], REGEX, "2025-01-01T00:00:00Z"),
    ]
    config = build_config(objects)
    [problem] = config.rejected()
    assert problem.name == "default/new"
    assert "default/old" in problem.reason
    assert _service_of(config, HOST, "/v1") == "old"


def test_a_literal_ingress_on_the_same_host_is_not_turned_into_a_regex() -> None:
    """ingress-nginx would make ``/static`` ``~* "^/static"`` for the whole host."""
    objects = [
        _ingress("regex", HOST, [("/api/v[0-9]+", "Prefix", "api")], REGEX),
        _ingress("literal", HOST, [("/static", "Prefix", "static")]),
    ]
    config = build_config(objects)
    assert _service_of(config, HOST, "/API/v2/x") == "api"
    assert _service_of(config, HOST, "/static/x.css") == "static"
    assert _service_of(config, HOST, "/STATIC/x.css") is None
    assert _service_of(config, HOST, "/staticx") is None


def test_a_config_without_regex_paths_has_no_regex_index() -> None:
    config = build_config([_ingress("a", HOST, [("/api", "Prefix", "api")])])
    assert config.regex is None


# -- precedence ----------------------------------------------------------------------


def _mixed() -> RouteConfig:
    return build_config(
        [
            _ingress(
                "regex",
                HOST,
                [("/api/v[0-9]+", "Prefix", "versions"), ("/a", "Prefix", "short-regex")],
                REGEX,
            ),
            _ingress(
                "literal",
                HOST,
                [
                    ("/api", "Prefix", "api"),
                    ("/api/v1/very/long/path", "Prefix", "long"),
                    ("/api/v2", "Exact", "exact"),
                    ("/abc", "Prefix", "abc"),
                ],
            ),
        ]
    )


@pytest.mark.parametrize(
    ("path", "service", "why"),
    [
        ("/api/v2", "exact", "a literal Exact match wins outright"),
        ("/api/v3", "versions", "the regex (12 characters) is longer than /api"),
        ("/api/v1/very/long/path/x", "long", "the literal path is longer than the regex"),
        ("/api/x", "api", "only the literal rule matches"),
        ("/abc", "abc", "a tie in length goes to the literal rule"),
        ("/abd", "short-regex", "the regex /a matches /abd (no literal rule does)"),
    ],
)
def test_precedence_between_regex_and_literal_rules_of_one_host(
    path: str, service: str, why: str
) -> None:
    assert _service_of(_mixed(), HOST, path) == service, why


def test_within_one_regex_ingress_the_longer_pattern_wins_as_ingress_nginx_warns() -> None:
    """ingress-nginx's documented warning: ``/foo/bar/[A-Z0-9]{3}`` is longer than
    ``/foo/bar/bar``, so it takes ``/foo/bar/bar``."""
    paths = [("/foo/bar/bar", "Prefix", "bar"), ("/foo/bar/[A-Z0-9]{3}", "Prefix", "three")]
    config = build_config([_ingress("regex", HOST, paths, REGEX)])
    assert _service_of(config, HOST, "/foo/bar/bar") == "three"
    assert _service_of(config, HOST, "/foo/bar/barn") == "three"
    assert _service_of(config, HOST, "/foo/bar/b") is None


def test_the_docs_path_priority_example_with_the_other_ingress_left_literal() -> None:
    """ingress-nginx's "Path Priority" example. The regex Ingress's path is the longest,
    as there; the literal Ingress keeps Kubernetes' meaning, in which ``Prefix /foo/bar``
    and ``Prefix /foo/bar/`` are the same rule, so the second is rejected."""
    objects = [
        _ingress(
            "test-ingress-1",
            HOST,
            [("/foo/bar", "Prefix", "service1"), ("/foo/bar/", "Prefix", "service2")],
            created="2024-01-01T00:00:00Z",
        ),
        _ingress(
            "test-ingress-2",
            HOST,
            [("/foo/bar/(.+)", "ImplementationSpecific", "service3")],
            {NGINX + "rewrite-target": "/$1"},
            created="2024-01-02T00:00:00Z",
        ),
    ]
    config = build_config(objects)
    assert _service_of(config, HOST, "/foo/bar/1") == "service3"
    assert _service_of(config, HOST, "/foo/bar") == "service1"
    assert _service_of(config, HOST, "/foo/bar/") == "service1"
    [problem] = config.rejected()
    assert problem.field == "spec.rules[0].http.paths[1]"


def test_a_regex_only_host_is_selected_before_a_wildcard_with_literal_rules() -> None:
    config = build_config(
        [
            _ingress("regex", "a.example.com", [("/r[0-9]", "Prefix", "regex")], REGEX),
            _ingress("wild", "*.example.com", [("/", "Prefix", "wild")]),
            _ingress("any", "", [("/", "Prefix", "any")]),
        ]
    )
    assert _service_of(config, "a.example.com", "/r1") == "regex"
    assert _service_of(config, "a.example.com", "/x") is None  # the wildcard is not consulted
    assert _service_of(config, "b.example.com", "/r1") == "wild"


def test_a_literal_exact_host_is_selected_before_a_regex_wildcard_and_any_host() -> None:
    config = build_config(
        [
            _ingress("wild", "*.example.com", [("/r[0-9]", "Prefix", "wild")], REGEX),
            _ingress("any", "", [("/x(.*)", "Prefix", "any")], REGEX),
            _ingress("exact", "a.example.com", [("/lit", "Prefix", "exact")]),
        ]
    )
    assert _service_of(config, "a.example.com", "/r1") is None
    assert _service_of(config, "a.example.com", "/lit") == "exact"
    assert _service_of(config, "b.example.com", "/R1") == "wild"
    assert _service_of(config, "10.0.0.1", "/xyz") == "any"
    assert _service_of(config, "elsewhere.org", "/xyz") == "any"


def test_the_incremental_builder_adds_and_drops_the_regex_index() -> None:
    builder = ConfigBuilder()
    literal = _ingress("literal", HOST, [("/a", "Prefix", "lit")])
    regex = _ingress("regex", HOST, [("/a[0-9]", "Prefix", "re")], REGEX)
    builder.put(literal)
    assert builder.build().regex is None
    builder.put(regex)
    config = builder.build()
    assert _service_of(config, HOST, "/a1") == "re"
    builder.delete(regex)
    config = builder.build()
    assert config.regex is None
    assert _service_of(config, HOST, "/a1") is None
    assert _service_of(config, HOST, "/a") == "lit"


# -- the property: precedence against a naive reference ------------------------------

HOSTS = ["a.com", "b.a.com", "*.a.com", ""]
REQUEST_HOSTS = ["a.com", "b.a.com", "q.a.com", "zz.com", "127.0.0.1", "B.A.COM:8080"]
LITERAL_SEGMENTS = ["a", "b", "aa", "A"]
REGEX_PIECES = ["/a", "/b", "/aa", "/A", "/", "[ab]", ".*", "(/|$)", "(.*)", "b?", "|/b", "/a+"]
REQUEST_SEGMENTS = ["a", "b", "aa", "A", "B", "ab", "x"]


@dataclass(frozen=True)
class Rule:
    ingress: int  # the Ingress's position: older first
    position: int  # its place in the Ingress
    host: str
    path: str
    path_type: str
    regex: bool  # the Ingress uses regex

    @property
    def service(self) -> str:
        return f"s{self.ingress}-{self.position}"


@st.composite
def _rules(draw: st.DrawFn) -> list[Rule]:
    rules = []
    for ingress in range(draw(st.integers(1, 4))):
        regex = draw(st.booleans())
        host = draw(st.sampled_from(HOSTS))
        for position in range(draw(st.integers(1, 4))):
            path_type = draw(st.sampled_from(["Exact", "Prefix", "ImplementationSpecific"]))
            if regex and path_type != "Exact":
                path = "".join(
                    draw(st.lists(st.sampled_from(REGEX_PIECES), min_size=1, max_size=4))
                )
                path = path if path.startswith("/") else "/" + path
            else:
                segments = draw(st.lists(st.sampled_from(LITERAL_SEGMENTS), max_size=3))
                slash: bool = draw(st.booleans())
                path = "/" + "/".join(segments) + ("/" if segments and slash else "")
            rules.append(Rule(ingress, position, host, path, path_type, regex))
    return rules


def _objects(rules: list[Rule]) -> list[dict[str, Any]]:
    by_ingress: dict[int, list[Rule]] = {}
    for rule in rules:
        by_ingress.setdefault(rule.ingress, []).append(rule)
    return [
        _ingress(
            f"i{index}",
            group[0].host,
            [(r.path, r.path_type, r.service) for r in group],
            REGEX if group[0].regex else None,
            f"2024-01-{index + 1:02d}T00:00:00Z",
        )
        for index, group in by_ingress.items()
    ]


def _reference(rules: list[Rule], host: str, path: str) -> tuple[str | None, tuple[bytes, ...]]:
    """The precedence rule written as plainly as possible: Python's ``re``, not RE2; a
    linear scan for the host; the reference trie for the literal rules of that host."""
    literal: dict[str, ReferenceRouter] = {}
    regex: dict[str, list[Rule]] = {}
    for rule in rules:  # in age order, as the builder adds them
        if rule.regex and rule.path_type != "Exact":
            taken = regex.setdefault(rule.host, [])
            if all(other.path != rule.path for other in taken):
                taken.append(rule)
        else:
            with suppress(RouteConflictError, InvalidRuleError):
                literal.setdefault(rule.host, ReferenceRouter()).add(
                    "", rule.path, rule.path_type, rule
                )
    hosts = {h for h, router in literal.items() if len(router)} | set(regex)
    name = normalize_request_host(host)
    selected = next(
        (
            h
            for h in (name, wildcard_for(name) if name else None, "")
            if h is not None and h in hosts
        ),
        None,
    )
    if selected is None:
        return None, ()
    router = literal.get(selected)
    found: Rule | None = router.match("", path) if router is not None else None
    if found is not None and found.path_type == "Exact":
        return found.service, ()
    best: tuple[int, int, int, int] | None = None  # (length, literal, -ingress, -position)
    winner: tuple[str | None, tuple[bytes, ...]] = (None, ())
    if found is not None:
        best, winner = (len(found.path), 1, 0, 0), (found.service, ())
    for rule in regex.get(selected, []):
        match = re.search("^" + rule.path, path, re.IGNORECASE)
        key = (len(rule.path), 0, -rule.ingress, -rule.position)
        if match is not None and (best is None or key > best):
            groups = tuple((g or "").encode() for g in match.groups())
            best, winner = key, (rule.service, groups)
    return winner


def _request_paths() -> st.SearchStrategy[str]:
    return st.builds(
        lambda segments, slash: "/" + "/".join(segments) + slash,
        st.lists(st.sampled_from(REQUEST_SEGMENTS), max_size=4),
        st.sampled_from(["", "", "/"]),
    )


@pytest.mark.slow
@settings(max_examples=300, deadline=None, report_multiple_bugs=False)
@given(
    _rules(),
    st.lists(st.tuples(st.sampled_from(REQUEST_HOSTS), _request_paths()), min_size=1, max_size=8),
)
def test_regex_and_literal_precedence_agrees_with_the_reference(
    rules: list[Rule], requests: list[tuple[str, str]]
) -> None:
    services = {rule.service for rule in rules}
    config = build_config([*_objects(rules), *(o for n in services for o in _service(n))])
    for host, path in requests:
        want_service, want_groups = _reference(rules, host, path)
        assert _service_of(config, host, path) == want_service, (host, path)
        if "//" not in path:  # the proxy merges slashes before it matches, as nginx does
            assert _decided_service(config, host, path) == want_service, (host, path)
        if config.regex is not None:
            found = config.router.match(host, path)
            chosen = config.regex.choose(host, path.encode(), found, config.router.default)
            groups = chosen[1] if chosen is not None else None
            assert (groups or ())[: len(want_groups)] == want_groups
            assert all(not g for g in (groups or ())[len(want_groups) :])


# -- explain -------------------------------------------------------------------------


def test_explain_shows_the_regex_rules_the_winner_and_the_scope() -> None:
    text = str(explain_route(_mixed(), HOST, "/api/v3/users?x=1"))
    assert "exact host 'app.example.com' (it has regex rules)" in text
    assert "literal rule: Prefix '/api' (4 characters)" in text
    assert "-> ~* '^/api/v[0-9]+'" in text
    assert "~* '^/a' (Prefix, default/regex, 2 characters): matches" in text
    assert SCOPE_NOTE in text
    assert "default/versions:80 (Ingress default/regex)" in text
    assert "longer than the literal rule's path (4)" in text


def test_explain_shows_the_rewrite_with_its_captures() -> None:
    annotations = {NGINX + "rewrite-target": "/$2"}
    config = build_config(
        [*_service("http-svc"), _ingress("rewrite", HOST, [THE_DOCS_EXAMPLE], annotations)]
    )
    explanation = explain_route(config, HOST, "/something/new?x=1")
    assert explanation.target == b"/new?x=1"
    text = str(explanation)
    assert "$1='/', $2='new'" in text
    assert "rewrite: upstream is sent '/new?x=1'" in text


def test_explain_of_a_literal_only_host_is_the_tries() -> None:
    config = _mixed()
    explanation = explain_route(config, "other.example.com", "/x")
    assert explanation.site is None
    assert str(explanation) == str(config.router.explain("other.example.com", b"/x"))


@pytest.mark.e2e
def test_check_explain_from_manifest_files(tmp_path: Any) -> None:
    import yaml

    manifest = tmp_path / "ingresses.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                _ingress("rewrite", HOST, [THE_DOCS_EXAMPLE], {NGINX + "rewrite-target": "/$2"}),
                _ingress("literal", HOST, [("/something/else", "Prefix", "lit")]),
            ]
        )
    )
    done = run_controller("check", "-f", str(manifest), "--explain", HOST, "/something/x")
    assert done.returncode == 0, done.stderr
    assert "-> ~* '^/something(/|$)(.*)'" in done.stdout
    assert "rewrite: upstream is sent '/x'" in done.stdout
    bad = run_controller("check", "-f", str(manifest), "--explain", HOST, "nothing")
    assert bad.returncode == 2
    assert "must start with '/'" in bad.stderr


# -- end to end ------------------------------------------------------------------------


@dataclass
class Site:
    config: RouteConfig
    port: int
    backends: dict[str, RawBackend]

    async def get(self, path: str, host: str = HOST) -> tuple[Reply, str | None, Request | None]:
        """A GET on a new connection: the answer, which Service got it, what it received."""
        before = {name: len(b.requests) for name, b in self.backends.items()}
        client = await RawClient.connect(self.port)
        try:
            await client.send(
                b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode())
            )
            reply = await client.reply()
        finally:
            await client.aclose()
        assert reply is not None, "the proxy closed without an answer"
        for name, backend in self.backends.items():
            if len(backend.requests) > before[name]:
                return reply, name, backend.requests[-1]
        return reply, None, None


@asynccontextmanager
async def serving(services: Sequence[str], ingresses: list[dict[str, Any]]) -> AsyncIterator[Site]:
    """The proxy on 127.0.0.1 in front of one raw backend per Service."""
    backends = {name: RawBackend() for name in services}
    async with trio.open_nursery() as nursery:
        objects = list(ingresses)
        for name, backend in backends.items():
            objects += _service(name, await nursery.start(backend.serve))
        config = build_config(objects)
        proxy = Proxy(config, tls=TLSContexts())
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Site(config, listeners[0].socket.getsockname()[1], backends)
        nursery.cancel_scope.cancel()


@pytest.mark.e2e
def test_end_to_end_the_docs_rewrite_with_captures_and_x_forwarded_prefix() -> None:
    annotations = {NGINX + "rewrite-target": "/$2", NGINX + "x-forwarded-prefix": "/something"}

    async def scenario() -> None:
        ingress = _ingress("rewrite", HOST, [THE_DOCS_EXAMPLE], annotations)
        async with serving(["http-svc"], [ingress]) as site:
            for asked, sent in [
                ("/something", b"/"),
                ("/something/", b"/"),
                ("/something/new", b"/new"),
                ("/SOMETHING/new/deeper?page=2", b"/new/deeper?page=2"),
                ("/something/a%20b", b"/a%20b"),
            ]:
                reply, service, request = await site.get(asked)
                assert (reply.status, service) == (200, "http-svc"), asked
                assert request is not None
                assert request.target == sent, asked
                assert request.header(b"x-forwarded-prefix") == [b"/something"]
            reply, service, _ = await site.get("/somethingelse/x")
            assert (reply.status, service) == (404, None)  # (/|$) needs / or the end

    _run(scenario)


@pytest.mark.e2e
def test_end_to_end_x_forwarded_prefix_with_a_capture() -> None:
    annotations = {NGINX + "rewrite-target": "/$2", NGINX + "x-forwarded-prefix": "/$1"}

    async def scenario() -> None:
        ingress = _ingress("tenants", HOST, [("/(t[0-9]+)/(.*)", "Prefix", "app")], annotations)
        async with serving(["app"], [ingress]) as site:
            reply, service, request = await site.get("/t42/orders")
            assert (reply.status, service) == (200, "app")
            assert request is not None
            assert request.target == b"/orders"
            assert request.header(b"x-forwarded-prefix") == [b"/t42"]

    _run(scenario)


@pytest.mark.e2e
def test_end_to_end_regex_and_literal_ingresses_share_a_host() -> None:
    async def scenario() -> None:
        ingresses = [
            _ingress("regex", HOST, [("/api/v[0-9]+", "Prefix", "versions")], REGEX),
            _ingress("literal", HOST, [("/api", "Prefix", "api"), ("/api/v2", "Exact", "exact")]),
        ]
        async with serving(["versions", "api", "exact"], ingresses) as site:
            for path, expected in [
                ("/api/v3/x", "versions"),  # the regex is longer than /api
                ("/Api/V3", "versions"),  # and case-insensitive
                ("/api/v2", "exact"),  # a literal Exact match wins
                ("/api/users", "api"),
                ("/API/users", None),  # the literal Ingress stays case-sensitive: 404
            ]:
                reply, service, request = await site.get(path)
                assert service == expected, path
                assert reply.status == (200 if expected else 404), path
                if request is not None:
                    assert request.target == path.encode()  # no rewrite without one asked

    _run(scenario)


@pytest.mark.e2e
def test_end_to_end_a_refused_pattern_leaves_the_rest_serving() -> None:
    async def scenario() -> None:
        ingresses = [
            _ingress(
                "bad", HOST, [("/(a)\\1", "Prefix", "bad"), ("/good.*", "Prefix", "good")], REGEX
            ),
            _ingress("other", "other.example.com", [("/", "Prefix", "other")]),
        ]
        async with serving(["bad", "good", "other"], ingresses) as site:
            assert [p.field for p in site.config.rejected()] == ["spec.rules[0].http.paths[0].path"]
            assert (await site.get("/goods"))[1] == "good"
            assert (await site.get("/aa"))[0].status == 404
            assert (await site.get("/x", "other.example.com"))[1] == "other"

    _run(scenario)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, report_multiple_bugs=False)
@given(
    st.lists(st.tuples(st.booleans(), _rules()), min_size=1, max_size=6),
    st.lists(st.tuples(st.sampled_from(REQUEST_HOSTS), _request_paths()), min_size=4, max_size=8),
)
def test_the_incremental_builder_routes_as_a_whole_build_after_every_change(
    changes: list[tuple[bool, list[Rule]]], requests: list[tuple[str, str]]
) -> None:
    """Ingresses put and deleted in turn: the regex index follows, shadow hosts included."""
    builder = ConfigBuilder()
    held: dict[str, dict[str, Any]] = {}
    for delete, rules in changes:
        for ingress in _objects(rules):
            name = ingress["metadata"]["name"]
            if delete and name in held:
                builder.delete(held.pop(name))
            else:
                held[name] = ingress
                builder.put(ingress)
        incremental, whole = builder.build(), build_config(list(held.values()))
        for host, path in requests:
            assert _service_of(incremental, host, path) == _service_of(whole, host, path)


# -- the literal start: a path that cannot match is turned away before RE2 -------------

PATTERN_PIECES = [
    "/a", "/B", "b", "/", "[ab]", "[|]", "[^]|]", ".*", "(/|$)", "(.*)", "b?", "a*", "a{0,2}",
    "|/b", "/a+", "\\.", "\\|", "(a|b)", "(?:x|/)", "é", "$",
]  # fmt: skip
PATH_PIECES = ["a", "A", "b", "B", "/", ".", "|", "x", "é", "É", "ab"]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(PATTERN_PIECES), min_size=1, max_size=5).map(
        lambda p: "/" + "".join(p)
    ),
    st.lists(st.lists(st.sampled_from(PATH_PIECES), max_size=6).map("".join), max_size=5),
)
def test_the_literal_start_never_turns_away_a_path_the_pattern_matches(
    path: str, requests: list[str]
) -> None:
    """``searcher`` with the literal start answers as RE2's own search, on patterns with
    alternation, classes, escapes and quantifiers, and paths in any case and in Latin-1."""
    try:
        pattern = compile_path(path)
    except ValueError:
        return
    search = searcher(pattern, literal_start(path))
    for request in requests:
        raw = ("/" + request).encode("latin-1")
        found = pattern.search(raw)
        groups = search(raw)
        assert (groups is None) == (found is None), (path, raw)
        if found is not None:
            expected = tuple(g or b"" for g in found.groups()[:9])
            assert groups is not None
            assert groups[: len(expected)] == expected


def test_the_literal_start_of_common_paths() -> None:
    assert literal_start("/api(/|$)(.*)") == b"/api"
    assert literal_start("/V2/users/([0-9]+)") == b"/v2/users/"
    assert literal_start("/ab?c") == b"/a"  # b may be left out
    assert literal_start("/a|/b") == b""  # the second alternative may start anywhere
    assert literal_start("/x(a|b)") == b"/x"  # an alternation inside a group does not
    assert literal_start("/caf\u00e9/x") == b"/caf"  # ASCII only: RE2 folds Latin-1 itself
