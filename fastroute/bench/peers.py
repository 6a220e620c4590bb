"""The other routers measured beside fastroute, each behind the same small adapter.

Each peer gets the workload's rules translated into its own objects, as far as it
can express them, and is called the way its users call it. What a peer cannot
express is left out (its cell says so) rather than faked. The optional peers are
imported only when built, so the benchmark runs without them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastroute.bench.pytrie import PyTrie
from fastroute.bench.workload import SCENARIOS, Rule, Scenario, Workload

__all__ = ["PEERS", "Built", "PeerSpec"]

_ALL = frozenset(SCENARIOS)


@dataclass(frozen=True)
class Built:
    """A peer built on one rule set, ready to be timed.

    ``fn`` is what the timed loop calls, with each item of ``args(scenario)``
    (unpacked when ``arity`` is 2); ``answer(item)`` is the backend the peer picks
    for that item, used to check it against fastroute before timing.
    """

    fn: Callable[..., Any]
    arity: int
    args: Callable[[Scenario], Sequence[Any]]
    answer: Callable[[Any], Any]


@dataclass(frozen=True)
class PeerSpec:
    """A peer: how to tell it is installed, what it can run, and how to build it."""

    name: str
    module: str  # imported to tell whether it is installed
    distribution: str | None  # for its version; None for the built-in baseline
    scenarios: frozenset[str]  # the scenarios it can express
    linear: bool  # matching time grows with the rule count: skip sizes that are too slow
    build: Callable[[Workload], Built]
    note: str

    def installed(self) -> bool:
        """Whether its module can be imported."""
        return importlib.util.find_spec(self.module) is not None

    def version(self) -> str | None:
        """Its installed version, or None for the built-in baseline or a missing peer."""
        if self.distribution is None:
            return None
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None


def _prefix_base(path: str) -> str:
    """A Prefix path without its trailing slash: ``/a/b/`` and ``/a/b`` are the same rule."""
    return path[:-1] if path.endswith("/") else path


# --- pytrie: the pure-Python baseline -------------------------------------------------


def _build_pytrie(workload: Workload) -> Built:
    trie = PyTrie(keys=bytes)
    add = trie.add
    for host, path, path_type, backend in workload.rules:
        add(host, path, path_type, backend)
    trie.set_default(workload.default)
    match = trie.match
    return Built(match, 2, lambda s: s.bytes_pairs, lambda item: match(*item))


# --- http-router: exact paths, no hosts --------------------------------------------------


def _build_http_router(workload: Workload) -> Built:
    from http_router import NotFoundError, Router

    router = Router()
    for rule in workload.rules:
        if not rule.host and rule.path_type == "Exact":
            router.bind(rule.backend, rule.path)
    default = workload.default

    def answer(path: str) -> Any:
        try:
            return router(path).target
        except NotFoundError:
            return default

    return Built(router, 1, lambda s: [p for _, p in s.str_pairs], answer)


# --- werkzeug: Map(host_matching=True) ----------------------------------------------------


def _werkzeug_rules(rules: Sequence[Rule]) -> list[Any]:
    from werkzeug.routing import Rule as WRule

    exact_paths = {(r.host.lower(), r.path) for r in rules if r.path_type == "Exact"}
    out: list[Any] = []
    for host, path, path_type, backend in rules:
        host = host.lower()
        if host.startswith("*."):
            hosts = ["<wildcard>" + host[1:]]
        elif host:
            hosts = [host]
        else:  # any host: a converter for named hosts, and "" for no Host header
            hosts = ["<anyhost>", ""]
        for h in hosts:
            if path_type == "Exact":
                out.append(WRule(path, endpoint=backend, host=h))
                continue
            base = _prefix_base(path)
            out.append(WRule(base + "/<path:rest>", endpoint=backend, host=h))
            if base and (host, base) not in exact_paths:  # Exact wins on the bare prefix
                out.append(WRule(base, endpoint=backend, host=h))
    return out


def _build_werkzeug(workload: Workload) -> Built:
    from werkzeug.exceptions import NotFound
    from werkzeug.routing import Map

    routes = Map(_werkzeug_rules(workload.rules), host_matching=True)
    routes.update()  # werkzeug sorts its matcher lazily, on the first match: do it here
    bind = routes.bind
    default = workload.default

    def match(host: str, path: str) -> Any:
        try:
            return bind(host.partition(":")[0]).match(path)[0]
        except NotFound:
            return default

    return Built(match, 2, lambda s: s.str_pairs, lambda item: match(*item))


# --- starlette: Host and Route, matched with route.matches(scope) -------------------------


def _endpoint(request: Any) -> None:
    """Starlette needs a callable endpoint; it is never called here."""


def _starlette_routes(rules: Sequence[Rule]) -> list[Any]:
    """Routes in the order a first-match scan needs: exact hosts, wildcard hosts, any host.

    Within a host the longest path comes first and Exact before Prefix on a tie, so
    the first match is the Ingress winner.
    """
    from starlette.routing import Host, Route, Router

    by_host: dict[str, list[Rule]] = {}
    for rule in rules:
        by_host.setdefault(rule.host.lower(), []).append(rule)

    def routes_of(host_rules: list[Rule]) -> list[Any]:
        def order(rule: Rule) -> tuple[int, int]:
            exact = rule.path_type == "Exact"
            return (-len(rule.path if exact else _prefix_base(rule.path)), 0 if exact else 1)

        out: list[Any] = []
        for rule in sorted(host_rules, key=order):
            name = rule.backend
            if rule.path_type == "Exact":
                out.append(Route(rule.path, _endpoint, name=name))
            else:
                base = _prefix_base(rule.path)
                out.append(Route(base or "/", _endpoint, name=name))
                out.append(Route(base + "/{rest:path}", _endpoint, name=name))
        return out

    exact = [h for h in by_host if h and not h.startswith("*.")]
    wild = [h for h in by_host if h.startswith("*.")]
    top: list[Any] = [Host(h, app=Router(routes_of(by_host[h]))) for h in exact]
    top += [Host("{wildcard}" + h[1:], app=Router(routes_of(by_host[h]))) for h in wild]
    top += routes_of(by_host.get("", []))
    return top


def _build_starlette(workload: Workload) -> Built:
    from starlette.routing import Host, Match

    routes = _starlette_routes(workload.rules)
    full = Match.FULL
    default = workload.default

    def match(scope: dict[str, Any]) -> Any:
        for route in routes:
            found, _ = route.matches(scope)
            if found is full:
                if type(route) is not Host:
                    return route.name
                children: list[Any] = route.routes
                for child in children:  # the selected host only: no fallthrough
                    if child.matches(scope)[0] is full:
                        return child.name
                return default
        return default

    def scopes(scenario: Scenario) -> list[dict[str, Any]]:
        return [
            {
                "type": "http",
                "method": "GET",
                "path": p,
                "root_path": "",
                "headers": [(b"host", h.encode("ascii"))] if h else [],
            }
            for h, p in scenario.str_pairs
        ]

    return Built(match, 1, scopes, match)


PEERS: tuple[PeerSpec, ...] = (
    PeerSpec(
        "pytrie",
        "fastroute.bench.pytrie",
        None,
        _ALL,
        linear=False,
        build=_build_pytrie,
        note="pytrie: fastroute.bench.pytrie, a pure-Python dict-of-dicts segment trie with "
        "the same semantics, given the same bytes.",
    ),
    PeerSpec(
        "http-router",
        "http_router",
        "http-router",
        frozenset({"exact_nohost"}),
        linear=False,
        build=_build_http_router,
        note="http-router: only the host-less Exact rules (it has no Ingress hosts or "
        "prefixes); called as router(path) with str paths; its match() has an "
        "lru_cache(1024) that holds the whole sample.",
    ),
    PeerSpec(
        "werkzeug",
        "werkzeug",
        "werkzeug",
        _ALL,
        linear=False,
        build=_build_werkzeug,
        note="werkzeug: Map(host_matching=True), Prefix p as Rules p and p/<path:rest>, "
        "*.zone as <wildcard>.zone; per call map.bind(host minus port).match(path) on str, "
        "NotFound -> default.",
    ),
    PeerSpec(
        "starlette",
        "starlette",
        "starlette",
        _ALL,
        linear=True,
        build=_build_starlette,
        note="starlette: Host(...) around a Router of Routes (Prefix p as p and "
        "p/{rest:path}, longest first); per call a first-match scan calling "
        "route.matches(scope) on a prebuilt ASGI scope, descending into the first "
        "matching Host only; no ASGI app runs.",
    ),
)
"""Every peer, in table order."""
