"""Why a config routes a request where it does: the trie's rules, the regex paths, and
the route's canary.

``Router.explain`` tells the trie's side. A config whose Ingresses use regex paths
(``use-regex``, ``rewrite-target``) has a second side: the host's regex rules, weighed
against the trie's winner (``regex.py`` has the precedence). ``explain_route`` tells both,
and what a regex winner's rewrite sends upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastroute.ingress.canary import describe_canary
from fastroute.ingress.model import RouteConfig, Target
from fastroute.ingress.regex import Choice, RegexSite, rewrite
from fastroute.routes import Explanation

__all__ = ["RouteExplanation", "explain_route"]

SCOPE_NOTE = (
    "regex applies only to the Ingresses that ask for it (use-regex or rewrite-target); "
    "the other Ingresses' paths on this host keep their literal Kubernetes meaning"
)


@dataclass(frozen=True, slots=True)
class RouteExplanation:
    """What ``RouteConfig.match(host, path)`` returns, and why.

    Attributes:
        trie: the trie's own explanation (literal rules only).
        site: the regex rules of the host selected, if it has any.
        choice: how the regex rules and the trie's winner were weighed, if they were.
        route: exactly what ``RouteConfig.match`` returns.
        target: the path and query a rewrite sends upstream (b"" without a rewrite).
    """

    host: str | bytes | None
    path: str
    trie: Explanation
    site: RegexSite | None
    choice: Choice | None
    route: Any
    target: bytes

    def __str__(self) -> str:
        lines = self._lines()
        if isinstance(self.route, Target):
            lines.extend(
                f"  {line}" if i else line for i, line in enumerate(describe_canary(self.route))
            )
        return "\n".join(lines)

    def _lines(self) -> list[str]:
        if self.site is None or self.choice is None:
            lines = [str(self.trie)]
            if self.target:
                lines.append(f"rewrite: upstream is sent {self.target.decode('latin-1')!r}")
            return lines
        site, choice = self.site, self.choice
        lines = [
            f"request: host {self.trie.host!r} path {self.path!r}",
            f"host:    {_scope(site.host)} (it has regex rules)",
        ]
        if choice.literal_length >= 0 and self.trie.winner is not None:
            winner = self.trie.winner
            lines.append(
                f"literal rule: {winner.path_type} {winner.path!r} ({choice.literal_length} "
                f"characters) => {_name(winner.backend)}"
            )
        else:
            lines.append("literal rule: none of this host matches")
        lines.append(f"regex rules of this host, longest first ({SCOPE_NOTE}):")
        for rule in site.rules:
            matched = rule in choice.matching
            mark = "->" if rule is choice.regex else "  "
            state = "matches" if matched else "no match"
            lines.append(
                f"  {mark} ~* {'^' + rule.path!r} ({rule.path_type}, {rule.ingress}, "
                f"{len(rule.path)} characters): {state} => {_name(rule.target)}"
            )
        if choice.groups is not None:
            shown = ", ".join(
                f"${i}={g.decode('latin-1')!r}" for i, g in enumerate(choice.groups, 1) if g
            )
            lines.append(f"captures: {shown or 'none'}")
        if self.target:
            lines.append(f"rewrite: upstream is sent {self.target.decode('latin-1')!r}")
        lines.append(f"result:  {_name(self.route)} ({choice.reason})")
        return lines


def _scope(host: str) -> str:
    if not host:
        return "rules for any host"
    return f"{'wildcard' if host.startswith('*.') else 'exact'} host {host!r}"


def _name(route: Any) -> str:
    if isinstance(route, Target):
        return f"{route.backend.name} (Ingress {route.ingress})"
    return "no route" if route is None else repr(route)


def explain_route(config: RouteConfig, host: str | bytes | None, path: str) -> RouteExplanation:
    """Explain ``config.match(host, path)``: the path as the proxy matches it (decoded,
    normalized), with an optional ``?query`` whose fate a rewrite decides."""
    path, mark, query = path.partition("?")
    raw = path.encode("utf-8")
    trie = config.router.explain(host, raw)
    site = config.regex.site(host) if config.regex is not None else None
    choice = site.explain(raw, trie.backend, config.router.default) if site else None
    route = choice.route if choice is not None else trie.backend
    target = b""
    if isinstance(route, Target) and route.policy.rewrite_target is not None:
        groups = choice.groups if choice is not None else None
        asked = b"?" + query.encode("utf-8") if mark else b""
        new_path, new_query = rewrite(route.policy.rewrite_target, groups, asked)
        target = new_path + new_query
    return RouteExplanation(host, path, trie, site, choice, route, target)
