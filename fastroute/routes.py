"""Plain value types the router hands back: rules and explanations.

They live outside the compiled module so that other code (and ``pickle``) can
use them without caring how the router stores its rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["Explanation", "HostScope", "Route"]

HostScope = Literal["exact", "wildcard", "any"]


class Route(NamedTuple):
    """One rule as the router holds it.

    ``host`` is normalized: lower case, no trailing dot, ``""`` for a rule that
    applies to any host, ``"*.example.com"`` for a wildcard. ``path`` and
    ``path_type`` are as they were added.
    """

    host: str
    path: str
    path_type: str
    backend: Any


def _rule_text(route: Route) -> str:
    return f"{route.path_type} {route.path!r}"


def _host_text(scope: HostScope, rule_host: str) -> str:
    if scope == "any":
        return "rules for any host"
    return f"{scope} host {rule_host!r}"


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why ``Router.match(host, path)`` returned what it returned.

    Matching has two steps, and this records both. First one host is selected:
    an exact host with rules, else a wildcard host with rules, else the rules
    for any host. Then, among that host's rules only, the longest matching path
    wins and Exact beats Prefix on a tie; with no match, the default backend.

    Attributes:
        host: the request host after normalization (``""`` when absent or not a name).
        path: the request path as matched.
        scope: which host table was selected: ``"exact"``, ``"wildcard"`` or ``"any"``.
        rule_host: the selected rule host (``"foo.com"``, ``"*.foo.com"`` or ``""``).
        candidates: rules of the selected host whose path matches, best first.
        not_consulted: rules of less specific hosts that match the path but were not
            considered, because a more specific host was selected.
        winner: the rule that decided, or None when none matched.
        backend: exactly what ``match()`` returns for this request.
        reason: one sentence saying why.
    """

    host: str
    path: str
    scope: HostScope
    rule_host: str
    candidates: tuple[Route, ...]
    not_consulted: tuple[Route, ...]
    winner: Route | None
    backend: Any
    reason: str

    def __str__(self) -> str:
        lines = [
            f"request: host {self.host!r} path {self.path!r}",
            f"host:    {_host_text(self.scope, self.rule_host)}",
        ]
        if self.candidates:
            lines.append("matching rules, best first:")
            for route in self.candidates:
                mark = "->" if route is self.winner else "  "
                lines.append(f"  {mark} {_rule_text(route)} => {route.backend!r}")
        else:
            lines.append("matching rules: none")
        for route in self.not_consulted:
            where = f"host {route.host!r}" if route.host else "any host"
            lines.append(f"  not consulted: {_rule_text(route)} on {where} => {route.backend!r}")
        lines.append(f"result:  {self.backend!r} ({self.reason})")
        return "\n".join(lines)
