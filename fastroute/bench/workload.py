"""Deterministic Ingress-like rule sets and request samples.

Every implementation in a run is measured on the rules and requests made here, so
the figures are comparable; the same seed gives the same workload on every machine.
Each request carries the backend the Ingress semantics must pick for it, so a
wrong answer is caught before anything is timed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "DEFAULT_BACKEND",
    "SAMPLE_SIZE",
    "SCENARIOS",
    "Request",
    "Rule",
    "Scenario",
    "Workload",
    "make_rules",
    "make_workload",
]

DEFAULT_BACKEND = "default-backend"
"""What every router is given with ``set_default``: the answer for near misses."""

SAMPLE_SIZE = 1000
"""Requests per scenario: enough to spread hits over a big rule set, few enough
to stay in cache the way a hot working set does."""

SCENARIOS: dict[str, str] = {
    "prefix_hit": "prefix hit",
    "exact_hit": "exact hit",
    "near_miss": "near miss",
    "unknown_host": "unknown host",
    "exact_nohost": "exact, no host",
}
"""Scenario keys (used in JSON) and their titles (used in the table), in table order."""

_L1 = (
    "api", "shop", "media", "auth", "admin", "billing",
    "search", "catalog", "account", "internal", "static", "partners",
)  # fmt: skip
_L2 = ("v1", "v2", "v3", "beta", "public", "private", "mobile", "web")
_LN = (
    "orders", "items", "users", "carts", "payments", "reports", "events", "images",
    "profiles", "sessions", "invoices", "products", "reviews", "teams", "files", "tags",
)  # fmt: skip
_SERVICES = ("svc", "shop", "api", "web", "app", "cdn", "auth", "pay")
# Words that never occur in a rule path: appended to a request they cannot
# make it match a longer rule, and put in place of a segment they make a miss.
_TAILS = ("detail", "history", "raw", "export", "preview")
_MISSES = ("legacy", "health", "debug", "old", "tmp", "ordres", "v9")
_PORTS = (":80", ":443", ":8080", ":8443")


class Rule(NamedTuple):
    """One Ingress rule, in the order ``Router.add`` takes its arguments."""

    host: str
    path: str
    path_type: str
    backend: str


class Request(NamedTuple):
    """One request: the raw Host header, the path, and the backend it must get."""

    host: str
    path: str
    expected: str


@dataclass(frozen=True)
class Scenario:
    """A named list of requests, ready-made in both the types routers take.

    The ``bytes`` pairs are what an h11-based proxy has in hand; the ``str`` pairs
    are what Python web frameworks get. Both are built here, outside any timing.
    """

    key: str
    title: str
    requests: tuple[Request, ...]
    bytes_pairs: list[tuple[bytes, bytes]] = field(init=False, repr=False)
    str_pairs: list[tuple[str, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        str_pairs = [(r.host, r.path) for r in self.requests]
        bytes_pairs = [(h.encode("ascii"), p.encode("ascii")) for h, p in str_pairs]
        object.__setattr__(self, "str_pairs", str_pairs)
        object.__setattr__(self, "bytes_pairs", bytes_pairs)

    @property
    def expected(self) -> list[str]:
        """The backend each request must be routed to, in order."""
        return [r.expected for r in self.requests]

    @property
    def distinct(self) -> int:
        """How many different requests the sample holds (small rule sets repeat some)."""
        return len({(r.host, r.path) for r in self.requests})


@dataclass(frozen=True)
class Workload:
    """N rules plus one request sample per scenario."""

    size: int
    seed: int
    rules: list[Rule]
    scenarios: dict[str, Scenario]
    default: str = DEFAULT_BACKEND


@dataclass
class _Layout:
    """The rules grouped the way the request generators need them."""

    rules: list[Rule] = field(default_factory=list)
    exact_hosts: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)  # "zone-3.example.com" for "*.zone-3..."
    # (host, path, backend) of rules that have a host, by path type.
    prefixes: list[tuple[str, str, str]] = field(default_factory=list)
    exacts: list[tuple[str, str, str]] = field(default_factory=list)
    nohost_exacts: list[tuple[str, str]] = field(default_factory=list)
    prefix_bases: dict[str, set[str]] = field(default_factory=dict)  # host -> Prefix paths


def _random_path(rng: random.Random) -> str:
    depth = rng.randint(3, 5)
    segments = [rng.choice(_L1), rng.choice(_L2)]
    segments += [rng.choice(_LN) for _ in range(depth - 2)]
    return "/" + "/".join(segments)


def _split(total: int, parts: int) -> list[int]:
    """Split ``total`` rules over ``parts`` hosts as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _layout(size: int, seed: int) -> _Layout:
    if size < 10:
        raise ValueError(f"a workload needs at least 10 rules, not {size}")
    rng = random.Random(seed)
    n_nohost = max(1, size // 10)
    n_wild = max(1, size // 5)
    n_exact = size - n_nohost - n_wild
    out = _Layout()
    out.exact_hosts = [
        f"{rng.choice(_SERVICES)}-{i}.example.com" for i in range(max(1, size // 10))
    ]
    out.zones = [f"zone-{i}.example.com" for i in range(max(1, size // 50))]
    counter = 0

    def host_rules(host: str, count: int) -> None:
        nonlocal counter
        seen: set[tuple[str, str]] = set()
        bases = out.prefix_bases.setdefault(host, set())
        while len(seen) < count:
            path = _random_path(rng)
            # The first two rules of a host are one of each type, so that even the
            # smallest rule set has both; the rest are drawn.
            path_type = (
                ("Prefix", "Exact")[len(seen)]
                if len(seen) < 2
                else ("Prefix" if rng.random() < 0.5 else "Exact")
            )
            if (path, path_type) in seen:
                continue
            seen.add((path, path_type))
            backend = f"r{counter}"
            counter += 1
            out.rules.append(Rule(host, path, path_type, backend))
            if path_type == "Prefix":
                out.prefixes.append((host, path, backend))
                bases.add(path)
            else:
                out.exacts.append((host, path, backend))

    for host, count in zip(out.exact_hosts, _split(n_exact, len(out.exact_hosts)), strict=True):
        host_rules(host, count)
    for zone, count in zip(out.zones, _split(n_wild, len(out.zones)), strict=True):
        host_rules("*." + zone, count)
    paths: set[str] = set()
    while len(paths) < n_nohost:
        path = _random_path(rng)
        if path not in paths:
            paths.add(path)
            backend = f"r{counter}"
            counter += 1
            out.rules.append(Rule("", path, "Exact", backend))
            out.nohost_exacts.append((path, backend))
    rng.shuffle(out.rules)  # the add order should not follow the host grouping
    return out


def make_rules(size: int, seed: int = 1) -> list[Rule]:
    """The rule set alone (for measuring a build without making requests)."""
    return _layout(size, seed).rules


def _header(host: str, rng: random.Random) -> str:
    """Dress a host name the way real Host headers come: some with a port, some in mixed case."""
    if rng.random() < 0.3:
        host = "".join(c.upper() if rng.random() < 0.5 else c for c in host)
    if rng.random() < 0.3:
        host += rng.choice(_PORTS)
    return host


def _request_host(rule_host: str, rng: random.Random) -> str:
    """A Host header that selects ``rule_host`` (a name for a wildcard rule host)."""
    if rule_host.startswith("*."):
        rule_host = f"t{rng.randint(0, 99999)}{rule_host[1:]}"
    return _header(rule_host, rng)


def _extension(rng: random.Random) -> str:
    tail = f"/{rng.randint(1, 999999)}"
    if rng.random() < 0.5:
        tail += "/" + rng.choice(_TAILS)
    return tail


def _near_miss_path(host: str, path: str, bases: set[str], rng: random.Random) -> str:
    """A path that follows ``path`` for a few segments, then takes an unknown turn.

    As deep as possible without a Prefix rule of the host covering it; the rules are
    all at least three segments deep, so two shared segments are always a miss.
    """
    segments = path[1:].split("/")
    keep = len(segments) - 1
    ancestors = ("/" + "/".join(segments[:i]) for i in range(1, keep + 1))
    if any(a in bases for a in ancestors):
        keep = 2
    return "/" + "/".join([*segments[:keep], rng.choice(_MISSES)])


def _sample(
    make: Callable[[random.Random], Request], rng: random.Random, count: int
) -> tuple[Request, ...]:
    """Call ``make(rng)`` until ``count`` requests, distinct while the rules allow it."""
    seen: set[tuple[str, str]] = set()
    out: list[Request] = []
    attempts = 0
    while len(out) < count:
        request = make(rng)
        attempts += 1
        key = (request.host, request.path)
        if key in seen and attempts < count * 20:
            continue
        seen.add(key)
        out.append(request)
    return tuple(out)


def make_workload(size: int, seed: int = 1, sample: int = SAMPLE_SIZE) -> Workload:
    """Rules and request samples for ``size`` rules, the same for the same ``seed``.

    Rules: about a tenth of them on host-less Exact paths, a fifth on wildcard hosts
    (``*.zone-K.example.com``, ~10 rules each), the rest on exact hosts (~7 each);
    Prefix and Exact mixed; paths 3-5 segments deep.
    """
    layout = _layout(size, seed)
    rng = random.Random(seed * 7919 + size)

    def prefix_hit(r: random.Random) -> Request:
        host, path, backend = r.choice(layout.prefixes)
        return Request(_request_host(host, r), path + _extension(r), backend)

    def exact_hit(r: random.Random) -> Request:
        host, path, backend = r.choice(layout.exacts)
        return Request(_request_host(host, r), path, backend)

    hosted = layout.prefixes + layout.exacts

    def near_miss(r: random.Random) -> Request:
        host, path, _ = r.choice(hosted)
        miss = _near_miss_path(host, path, layout.prefix_bases[host], r)
        return Request(_request_host(host, r), miss, DEFAULT_BACKEND)

    def unknown_host(r: random.Random) -> Request:
        _, path, _ = r.choice(layout.prefixes)
        host = _header(f"unknown-{r.randint(0, 999999)}.example.net", r)
        return Request(host, path + _extension(r), DEFAULT_BACKEND)

    def exact_nohost(r: random.Random) -> Request:
        path, backend = r.choice(layout.nohost_exacts)
        return Request("", path, backend)

    makers = {
        "prefix_hit": prefix_hit,
        "exact_hit": exact_hit,
        "near_miss": near_miss,
        "unknown_host": unknown_host,
        "exact_nohost": exact_nohost,
    }
    scenarios = {
        key: Scenario(key, SCENARIOS[key], _sample(makers[key], rng, sample)) for key in SCENARIOS
    }
    return Workload(size, seed, layout.rules, scenarios)
