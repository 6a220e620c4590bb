"""Property tests aimed at the compiled matcher's 8-bytes-at-a-time code paths.

The router scans path elements and Host headers a machine word (8 bytes) at a time, loads
the last word of a path ending-aligned, stores short elements inline and long ones padded,
and hashes insertions and lookups by two different routines. Every one of those has an edge
at a multiple of 8 bytes, so these tests build elements and host labels whose lengths sit on
either side of 8, 16 and 24, put ``/``, ``:`` and upper-case letters at every offset, and check
the compiled router against the naive reference.

Routers larger than the CPU cache take another path through the lookup (every level of the
request is located and prefetched before the walk), so one test runs against a router kept
that large by filler rules on a host that no request names.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute import RouteError, Router
from tests.reference import ReferenceRouter

LENGTHS = [0, 1, 6, 7, 8, 9, 15, 16, 17, 23, 24, 25]


@st.composite
def elements(draw: st.DrawFn) -> str:
    """A path element whose length straddles a word boundary, from a tiny alphabet."""
    length = draw(st.sampled_from(LENGTHS))
    return "".join(draw(st.lists(st.sampled_from("ab"), min_size=length, max_size=length)))


@st.composite
def labels(draw: st.DrawFn) -> str:
    length = draw(st.sampled_from([1, 6, 7, 8, 9, 15, 16, 17]))
    return "".join(draw(st.lists(st.sampled_from("xy"), min_size=length, max_size=length)))


@st.composite
def rule_sets(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str, str]]]:
    hosts = ["", *[".".join(draw(st.lists(labels(), min_size=1, max_size=3))) for _ in range(3)]]
    hosts += ["*." + h for h in hosts[1:] if "." in h]
    rules = []
    for _ in range(draw(st.integers(1, 12))):
        parts = draw(st.lists(elements(), min_size=1, max_size=3))
        path = "/" + "/".join(parts)
        if draw(st.booleans()):
            path += "/"
        path_type = draw(st.sampled_from(["Exact", "Prefix", "ImplementationSpecific"]))
        rules.append((draw(st.sampled_from(hosts)), path, path_type))
    return hosts, rules


def _request_host(data: st.DataObject, hosts: list[str]) -> str:
    draw = data.draw
    host = draw(st.sampled_from(hosts)).replace("*", draw(st.sampled_from(["q", "qqqqqqqq"])))
    if host and draw(st.booleans()):
        i = draw(st.integers(0, len(host) - 1))
        host = host[:i] + host[i].upper() + host[i + 1 :]
    if host and draw(st.booleans()):
        host += "."
    if draw(st.booleans()):
        host += ":" + draw(st.sampled_from(["1", "8080", "1234567"]))
    return host


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(data=st.data(), rules=rule_sets())
def test_long_elements_and_hosts_match_the_reference(
    data: st.DataObject, rules: tuple[list[str], list[tuple[str, str, str]]]
) -> None:
    hosts, specs = rules
    router, reference = Router(), ReferenceRouter()
    added: list[str] = []
    for n, (host, path, path_type) in enumerate(specs):
        try:
            reference.add(host, path, path_type, n)
        except RouteError:
            continue  # invalid or a conflict: the other property tests cover how it fails
        router.add(host, path, path_type, n)
        added.append(path)
    router.set_default("default")
    reference.set_default("default")

    for _ in range(20):
        host = _request_host(data, hosts)
        base = data.draw(st.sampled_from(added)) if added else "/"
        path = base + data.draw(
            st.sampled_from(["", "/", "/a", "b", "/" + "a" * 8, "/" + "b" * 9, "//"])
        )
        cut = data.draw(st.integers(0, len(path)))
        for candidate in (path, path[:cut] or "/"):
            want = reference.match(host, candidate)
            assert router.match(host, candidate) == want, (host, candidate)
            assert router.match(host.encode(), candidate.encode()) == want, (host, candidate)


@settings(max_examples=200, deadline=None)
@given(host=st.text(alphabet="aB.:-9", max_size=40), path=st.text(alphabet="a/B.", max_size=40))
def test_arbitrary_short_alphabet_requests_agree(host: str, path: str) -> None:
    """Whatever a client sends, the router answers as the reference does (and never raises)."""
    router, reference = Router(), ReferenceRouter()
    for rule_host in ["", "aaaaaaaa.bbbbbbbbb", "*.bbbbbbbbb", "a"]:
        for rule_path, path_type in [("/", "Prefix"), ("/aaaaaaaa", "Prefix"), ("/a/a", "Exact")]:
            router.add(rule_host, rule_path, path_type, (rule_host, rule_path))
            reference.add(rule_host, rule_path, path_type, (rule_host, rule_path))
    assert router.match(host, path) == reference.match(host, path)


FILLER_HOST = "filler.example.net"


@pytest.fixture(scope="module")
def large_router() -> Router:
    """A router whose table is past the size where lookups prefetch every level."""
    router = Router()
    for i in range(12_000):
        router.add(FILLER_HOST, f"/f{i % 97}/g{i}/h", "Prefix", ("filler", i))
    assert "slots=" in repr(router)
    slots = int(repr(router).split("slots=")[1].split()[0])
    assert slots >= 1 << 15, repr(router)
    return router


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(data=st.data(), rules=rule_sets())
def test_large_router_matches_the_reference(
    large_router: Router, data: st.DataObject, rules: tuple[list[str], list[tuple[str, str, str]]]
) -> None:
    """The prefetching lookup answers as the reference does; removal leaves no trace."""
    hosts, specs = rules
    reference = ReferenceRouter()
    added: list[tuple[str, str, str]] = []
    try:
        for n, (host, path, path_type) in enumerate(specs):
            try:
                reference.add(host, path, path_type, n)
            except RouteError:
                continue
            large_router.add(host, path, path_type, n)
            added.append((host, path, path_type))
        for _ in range(20):
            host = _request_host(data, hosts)
            assert FILLER_HOST not in host.lower()
            base = data.draw(st.sampled_from([p for _, p, _ in added])) if added else "/"
            path = base + data.draw(st.sampled_from(["", "/", "/a", "/" + "b" * 9, "//"]))
            assert large_router.match(host, path) == reference.match(host, path), (host, path)
    finally:
        for host, path, path_type in added:
            large_router.remove(host, path, path_type)
    assert len(large_router) == 12_000
    assert large_router.match(FILLER_HOST, "/f5/g5/h/x") == ("filler", 5)
