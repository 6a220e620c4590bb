"""A deliberately naive reference matcher, to check the compiled ``fastroute.Router`` against.

Everything here is a literal transcription of the matcher contract: rules live in one list,
and every question (which host is selected, which rules match, which one wins, does a new
rule conflict) is answered by a linear scan over that list. No tries, no hash tables, no
cleverness: if this module and the compiled router disagree, the spec decides which is right,
and it should be obvious from reading this file what the spec says.

The error classes and ``Route`` are shared with fastroute: they are plain data, not logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastroute.errors import InvalidRuleError, RouteConflictError, RouteNotFoundError
from fastroute.routes import Route

PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")

Scope = Literal["exact", "wildcard", "any"]

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


# --------------------------------------------------------------------------- text helpers


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only (``str.lower`` would also fold e.g. the Kelvin sign into ``k``)."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def as_text(value: object, what: str) -> str:
    """The request host or path as text; bytes from the wire are UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return value
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def is_ipv4(text: str) -> bool:
    """An IPv4 address, as the router reads one: digits and dots only.

    No DNS name is all-numeric (its top label never is), so this also covers the short
    and odd forms an IP parser would accept or refuse ("10.1", "999.1.1.1").
    """
    digits = "0123456789"
    return text[-1:] in tuple(digits) and all(c in digits or c == "." for c in text)


# --------------------------------------------------------------------------- request side


def normalize_request_host(raw: str | bytes | None) -> str:
    """The Host header as the host tables see it; ``""`` means "no named host"."""
    if raw is None:
        return ""
    host = as_text(raw, "host")
    if host.startswith("["):  # an IPv6 literal, with or without a port
        return ""
    colon = host.find(":")
    if colon >= 0:  # strip ":port" (everything from the first colon)
        host = host[:colon]
    host = ascii_lower(host)
    if host.endswith("."):
        host = host[:-1]
    if is_ipv4(host):
        return ""
    return host


def wildcard_for(host: str) -> str | None:
    """The wildcard rule host that would cover ``host``: ``bar.foo.com`` -> ``*.foo.com``."""
    dot = host.find(".")
    if dot <= 0:  # no dot, or an empty first label
        return None
    return "*." + host[dot + 1 :]


def normalize_request_path(raw: str | bytes) -> str:
    path = as_text(raw, "path")
    return path if path else "/"


# --------------------------------------------------------------------------- rule side


def host_problem(host: str) -> str | None:
    """Why a (lower-cased, trailing-dot-stripped, non-empty) rule host is invalid, or None."""
    if any(ord(c) > 0x7F for c in host):
        return "host is not ASCII; give an internationalized name in its IDNA (xn--) form"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in host):
        return "host contains a control character"
    if ":" in host or "[" in host or "]" in host:
        return "host may not contain a port or an IPv6 address"
    if is_ipv4(host):
        return "host may not be an IP address"
    if len(host) > 253:
        return "host name is longer than 253 characters"
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if not labels:
            return "a wildcard alone is not a host"
    for label in labels:
        if "*" in label:
            return "a wildcard is only allowed as the whole first label"
        if not label:
            return "host has an empty label"
        if len(label) > 63:
            return "host label is longer than 63 characters"
        if not set(label) <= _LABEL_CHARS:
            return "host label has an invalid character"
        if label.startswith("-") or label.endswith("-"):
            return "host label starts or ends with a hyphen"
    return None


def path_problem(path: str, path_type: str) -> str | None:
    """Why a rule path is invalid for its path type, or None."""
    if not path.startswith("/"):
        return "path must start with /"
    for c in path:
        if ord(c) < 0x20 or ord(c) == 0x7F:
            return "path contains a control character"
        if "\ud800" <= c <= "\udfff":  # no UTF-8 for it: not text a request can carry
            return "path is not valid Unicode text: it has a lone surrogate"
        if c == " ":
            return "path contains a space"
        if c in "?#":
            return f"path contains {c!r}: a query or fragment is not part of a path"
    if path_type != "ImplementationSpecific":  # the Kubernetes API's extra rules
        for bad in ("//", "/./", "/../", "%2f", "%2F"):
            if bad in path:
                return f"path contains {bad!r}"
        if path.endswith(("/..", "/.")):
            return "path ends with a dot segment"
    return None


def normalize_rule_host(host: str) -> str:
    host = ascii_lower(host)
    if host.endswith(".") and host != ".":  # "." is two empty labels, not "no host"
        host = host[:-1]
    return host


def is_exact(route: Route) -> bool:
    return route.path_type == "Exact"


def normalized_path(route: Route) -> str:
    """Exact paths as given; Prefix-like paths with one trailing slash stripped."""
    if is_exact(route) or not route.path.endswith("/"):
        return route.path
    return route.path[:-1]


def effective_key(route: Route) -> tuple[str, bool, str]:
    """Two rules with the same key match exactly the same requests."""
    return (route.host, is_exact(route), normalized_path(route))


def path_matches(route: Route, request_path: str) -> bool:
    if is_exact(route):
        return request_path == route.path
    prefix = normalized_path(route)  # Prefix "/" becomes "" and so matches every "/..." path
    return request_path == prefix or request_path.startswith(prefix + "/")


def precedence(route: Route) -> tuple[int, int]:
    """Sort key, best first: longest normalized path, then Exact before Prefix."""
    return (-len(normalized_path(route)), 0 if is_exact(route) else 1)


# --------------------------------------------------------------------------- the router


@dataclass(frozen=True)
class ReferenceExplanation:
    host: str
    scope: Scope
    rule_host: str
    candidates: tuple[Route, ...]
    not_consulted: tuple[Route, ...]
    winner: Route | None
    backend: Any


class ReferenceRouter:
    """Same public behaviour as ``fastroute.Router``, by linear scans over a list."""

    def __init__(self) -> None:
        self.rules: list[Route] = []
        self.default: Any = None

    def __len__(self) -> int:
        return len(self.rules)

    def routes(self) -> list[Route]:
        return list(self.rules)

    def set_default(self, backend: Any) -> None:
        self.default = backend

    def _make_route(self, host: str, path: str, path_type: str, backend: Any) -> Route:
        for value in (host, path, path_type):
            if not isinstance(value, str):
                raise TypeError(f"expected str, got {type(value).__name__}")
        if path_type not in PATH_TYPES:
            raise InvalidRuleError(host, path, path_type, f"unknown path type {path_type!r}")
        problem = path_problem(path, path_type)
        if problem is not None:
            raise InvalidRuleError(host, path, path_type, problem)
        normalized = normalize_rule_host(host)
        if normalized:
            problem = host_problem(normalized)
            if problem is not None:
                raise InvalidRuleError(host, path, path_type, problem)
        return Route(normalized, path, path_type, backend)

    def find(self, route: Route) -> Route | None:
        for existing in self.rules:
            if effective_key(existing) == effective_key(route):
                return existing
        return None

    def add(self, host: str, path: str, path_type: str, backend: Any) -> None:
        route = self._make_route(host, path, path_type, backend)
        existing = self.find(route)
        if existing is not None:
            raise RouteConflictError(existing, route)
        self.rules.append(route)

    def remove(self, host: str, path: str, path_type: str) -> Any:
        route = self._make_route(host, path, path_type, None)
        existing = self.find(route)
        if existing is None:
            raise RouteNotFoundError(route.host, path, path_type)
        self.rules.remove(existing)
        return existing.backend

    def _select(self, host: str) -> tuple[Scope, str]:
        """Pick the one host whose rules are consulted. No fallthrough afterwards."""
        rule_hosts = {rule.host for rule in self.rules}
        if host and not host.startswith("*.") and host in rule_hosts:
            return "exact", host
        wildcard = wildcard_for(host)
        if wildcard is not None and wildcard in rule_hosts:
            return "wildcard", wildcard
        return "any", ""

    def explain(self, host: str | bytes | None, path: str | bytes) -> ReferenceExplanation:
        request_host = normalize_request_host(host)
        request_path = normalize_request_path(path)
        scope, rule_host = self._select(request_host)

        # A request path that does not start with "/" matches no rule: every rule path
        # starts with "/", and Prefix "/" (normalized "") needs "/" after it.
        matching = [rule for rule in self.rules if path_matches(rule, request_path)]
        candidates = sorted((r for r in matching if r.host == rule_host), key=precedence)

        skipped_hosts: list[str] = []
        if scope == "exact":
            wildcard = wildcard_for(request_host)
            if wildcard is not None:
                skipped_hosts.append(wildcard)
        if scope in ("exact", "wildcard"):
            skipped_hosts.append("")
        not_consulted = tuple(r for r in matching if r.host in skipped_hosts)

        winner = candidates[0] if candidates else None
        backend = winner.backend if winner is not None else self.default
        return ReferenceExplanation(
            # shown as text: bytes that are not UTF-8 as U+FFFD, as the router shows them
            host=request_host.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
            scope=scope,
            rule_host=rule_host,
            candidates=tuple(candidates),
            not_consulted=not_consulted,
            winner=winner,
            backend=backend,
        )

    def match(self, host: str | bytes | None, path: str | bytes) -> Any:
        return self.explain(host, path).backend


def respelled(route: Route) -> tuple[str, str, str]:
    """The same effective rule written differently (host, path, path type): host case and
    dot, one trailing slash, Prefix <-> ImplementationSpecific where both are valid."""
    host = route.host.upper() + "." if route.host else ""
    path, path_type = route.path, route.path_type
    if path_type != "Exact":
        # Only one trailing slash is ignored: "/a/" is "/a", but "/a//" is "/a/".
        if path.endswith("/") and not path.endswith("//"):
            path = path[:-1] or "/"
        elif not path.endswith("/"):
            path += "/"
        other = "Prefix" if path_type == "ImplementationSpecific" else "ImplementationSpecific"
        if path_problem(path, other) is None:
            path_type = other
    return host, path, path_type
