"""Property tests: the compiled ``Router`` against the naive ``reference.ReferenceRouter``.

Rules and requests come from a deliberately small alphabet (a handful of hosts, path segments
"a", "b", "aa" and a few troublemakers) so that overlapping prefixes, exact/prefix ties,
trailing-slash twins, conflicts and host-selection corner cases turn up in most examples.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute import (
    Explanation,
    Route,
    RouteConflictError,
    RouteError,
    RouteNotFoundError,
    Router,
)
from tests.reference import ReferenceExplanation, ReferenceRouter, respelled

# One shrunk counterexample per test is enough, and keeps a failing run short.
SETTINGS = settings(max_examples=300, deadline=None, report_multiple_bugs=False)

PATH_TYPES = ["Exact", "Prefix", "ImplementationSpecific"]

# Rule hosts: mostly valid and overlapping (exact hosts under wildcards, nested wildcards),
# some spelled differently but equal once normalized, a few invalid.
RULE_HOSTS = (
    ["", "", "", "", "a.com", "a.com", "a.com", "b.a.com", "b.a.com", "*.a.com", "*.a.com"] * 3
    + ["x.b.a.com", "*.b.a.com"] * 2
    + ["A.com", "b.a.com.", "*.A.COM", "X.B.A.COM."]
    + ["*", "a..com", "*.*.a.com"]
)

# Request hosts before decoration: the rule hosts' names, names only a wildcard covers, names
# nothing covers, a literal "*.a.com", IP literals.
REQUEST_HOSTS = [
    "",
    "a.com",
    "b.a.com",
    "x.b.a.com",
    "q.a.com",
    "q.b.a.com",
    "c.x.b.a.com",
    "com",
    "zz.com",
    "*.a.com",
    ".a.com",
    "127.0.0.1",
    "[::1]",
]

SEGMENTS = ["a", "b", "aa"] * 8 + ["", "A", ".", "..", "%2f", "%2F"]

SUFFIXES = ["", "", "", "/", "/a", "a", "//", "/b/", "/aa", "/.", "/A"]


@st.composite
def rule_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(SEGMENTS), max_size=3))
    path = "/" + "/".join(segments)
    trailing_slash = draw(st.booleans())
    if segments and trailing_slash:
        path += "/"
    if draw(st.integers(0, 39)) == 0:  # now and then, a path without its leading slash
        path = path[1:]
    return path


@st.composite
def request_hosts(draw: st.DrawFn, seeds: list[str]) -> str | None:
    """A Host header: mostly a name some rule host covers, decorated now and then."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return None
    if seeds and kind < 12:
        host = draw(st.sampled_from(seeds)).replace("*", draw(st.sampled_from(["q", "x", "b"])))
    else:
        host = draw(st.sampled_from(REQUEST_HOSTS))
    if draw(st.integers(0, 3)) == 0:
        host = host.upper()
    if host and not host.startswith("[") and draw(st.integers(0, 3)) == 0:
        host += "."
    if draw(st.integers(0, 3)) == 0:
        host += ":8080"
    return host


@st.composite
def request_paths(draw: st.DrawFn, seeds: list[str]) -> str:
    """A request path: a rule path with a suffix, a random path, or something odd."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(["", "*", "a", "/", "//", "/a?x"]))
    base = draw(st.sampled_from(seeds)) if seeds and kind < 7 else draw(rule_paths())
    path = base + draw(st.sampled_from(SUFFIXES))
    if draw(st.integers(0, 5)) == 0 and path.endswith("/") and len(path) > 1:
        path = path[:-1]
    if draw(st.integers(0, 7)) == 0:
        path = path.swapcase()
    return path


Request = tuple[str | None, str]


@st.composite
def requests(draw: st.DrawFn, hosts: list[str], paths: list[str]) -> list[Request]:
    return draw(
        st.lists(st.tuples(request_hosts(hosts), request_paths(paths)), min_size=1, max_size=25)
    )


@dataclass(frozen=True)
class RuleSpec:
    host: str
    path: str
    path_type: str


rule_specs = st.builds(
    RuleSpec,
    host=st.sampled_from(RULE_HOSTS),
    path=rule_paths(),
    path_type=st.sampled_from(PATH_TYPES),
)


@dataclass(frozen=True)
class Scenario:
    rules: list[RuleSpec]
    requests: list[Request]
    default: str | None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    rules = draw(st.lists(rule_specs, min_size=1, max_size=30))
    request_list = draw(requests([r.host for r in rules], [r.path for r in rules]))
    default = draw(st.sampled_from([None, "default-backend"]))
    return Scenario(rules, request_list, default)


# --------------------------------------------------------------------------- helpers


def _keys(routes: tuple[Route, ...]) -> list[tuple[str, str, str]]:
    return sorted((r.host, r.path, r.path_type) for r in routes)


def _forms(host: str | None, path: str) -> list[tuple[str | bytes | None, str | bytes]]:
    host_bytes = None if host is None else host.encode()
    return [(host, path), (host_bytes, path.encode()), (host_bytes, path), (host, path.encode())]


def _assert_same_explanation(got: Explanation, want: ReferenceExplanation) -> None:
    assert got.host == want.host
    assert got.scope == want.scope
    assert got.rule_host == want.rule_host
    assert got.candidates == want.candidates
    assert got.winner == want.winner
    assert _keys(got.not_consulted) == _keys(want.not_consulted)
    assert got.backend is want.backend


def _assert_agree(router: Router, reference: ReferenceRouter, host: str | None, path: str) -> None:
    want = reference.explain(host, path)
    for host_form, path_form in _forms(host, path):
        assert router.match(host_form, path_form) is want.backend, (host_form, path_form)
    got = router.explain(host, path)
    assert got.backend is router.match(host, path)
    _assert_same_explanation(got, want)


def _attempt(action: Callable[[], Any]) -> tuple[Any, RouteError | RouteNotFoundError | None]:
    """Run ``action``; return (its result, None) or (None, the routing error it raised)."""
    try:
        return action(), None
    except (RouteError, RouteNotFoundError) as error:
        return None, error


def _add_both(router: Router, reference: ReferenceRouter, rule: RuleSpec, backend: Any) -> None:
    """Add to both; the router must refuse exactly what the reference refuses, and why."""
    _, refused = _attempt(lambda: reference.add(rule.host, rule.path, rule.path_type, backend))
    _, error = _attempt(lambda: router.add(rule.host, rule.path, rule.path_type, backend))
    assert type(error) is type(refused), (rule, error, refused)
    if isinstance(refused, RouteConflictError):
        assert isinstance(error, RouteConflictError)
        assert error.existing == refused.existing
        assert error.existing.backend is refused.existing.backend


def _assert_same_rules(router: Router, reference: ReferenceRouter) -> None:
    assert len(router) == len(reference)
    assert list(router.routes()) == reference.routes()


# --------------------------------------------------------------------------- properties


@pytest.mark.slow
@SETTINGS
@given(scenario=scenarios())
def test_match_and_explain_agree_with_reference(scenario: Scenario) -> None:
    router, reference = Router(), ReferenceRouter()
    router.set_default(scenario.default)
    reference.set_default(scenario.default)
    for i, rule in enumerate(scenario.rules):
        _add_both(router, reference, rule, f"backend-{i}")
    _assert_same_rules(router, reference)
    for host, path in scenario.requests:
        _assert_agree(router, reference, host, path)
    # and a sweep: every rule path, and one element below it, on a name each rule host covers
    hosts = sorted({rule.host.replace("*", "w") for rule in scenario.rules})
    paths = sorted({rule.path + suffix for rule in scenario.rules for suffix in ("", "/a")})
    for host in hosts:
        for path in paths:
            _assert_agree(router, reference, host, path)


@dataclass(frozen=True)
class Op:
    """add / remove a rule spec, remove the n-th present rule respelled, set the default,
    or go on with a copy of the router (the original must not change after that)."""

    kind: str
    rule: RuleSpec
    index: int
    respell: bool


ops = st.builds(
    Op,
    kind=st.sampled_from(
        ["add"] * 4 + ["remove", "remove-present", "remove-present", "default", "copy"]
    ),
    rule=rule_specs,
    index=st.integers(0, 50),
    respell=st.booleans(),
)


def _respelled(route: Route) -> RuleSpec:
    """The same effective rule, written differently (``reference.respelled``)."""
    return RuleSpec(*respelled(route))


def _remove_both(router: Router, reference: ReferenceRouter, rule: RuleSpec) -> None:
    removed, refused = _attempt(lambda: reference.remove(rule.host, rule.path, rule.path_type))
    got, error = _attempt(lambda: router.remove(rule.host, rule.path, rule.path_type))
    assert type(error) is type(refused), (rule, error, refused)
    assert got is removed


@pytest.mark.slow
@SETTINGS
@given(
    op_list=st.lists(ops, max_size=30),
    probes=requests(
        ["a.com", "b.a.com", "x.b.a.com", "*.a.com", "*.b.a.com"],
        ["/", "/a", "/a/", "/a/b", "/aa", "/b/a/", "/A"],
    ),
)
def test_add_remove_sequences_agree_with_reference(
    op_list: list[Op], probes: list[Request]
) -> None:
    router, reference = Router(), ReferenceRouter()
    left: list[tuple[Router, ReferenceRouter]] = []  # routers copied, and what they held
    for i, op in enumerate(op_list):
        if op.kind == "copy":
            left.append((router, copy.deepcopy(reference)))
            router = copy.copy(router) if op.respell else router.copy()
        elif op.kind == "add":
            _add_both(router, reference, op.rule, f"backend-{i}")
        elif op.kind == "remove":
            _remove_both(router, reference, op.rule)
        elif op.kind == "remove-present" and len(reference):
            present = reference.routes()[op.index % len(reference)]
            spec = RuleSpec(present.host, present.path, present.path_type)
            _remove_both(router, reference, _respelled(present) if op.respell else spec)
        elif op.kind == "default":
            default = f"default-{i}" if op.respell else None
            router.set_default(default)
            reference.set_default(default)
            assert router.default is default
        _assert_same_rules(router, reference)
        for host, path in probes:
            _assert_agree(router, reference, host, path)
    for original, held in left:
        _assert_same_rules(original, held)
        for host, path in probes:
            _assert_agree(original, held, host, path)
