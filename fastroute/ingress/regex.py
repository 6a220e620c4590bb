"""Regex paths (``use-regex``, ``rewrite-target``): compiled by RE2, kept beside the trie.

ingress-nginx turns the Prefix and ImplementationSpecific paths of an Ingress that sets
``use-regex: "true"`` or ``rewrite-target`` into ``location ~* "^PATH"``: a regular
expression searched from the start of the path, case-insensitive. fastroute does the
same, but only for the Ingress that asked: ingress-nginx applies it to every path of the
host, across Ingresses (its documented trap), while here the other Ingresses' rules keep
the Kubernetes semantics of the compiled trie. Exact paths stay exact.

Patterns are compiled by RE2, whose matching time is linear in the path: an Ingress
author cannot stall the proxy with a catastrophic pattern. What RE2 refuses
(backreferences, lookaround, a malformed pattern) rejects that one path, with RE2's reason.

Precedence on one host, between its literal rules (the trie) and its regex rules:

1. Host selection is the trie's: the most specific host with rules of either kind (an
   exact host, else a wildcard, else the host-less rules); less specific hosts are not
   consulted.
2. A literal Exact match wins outright, as nginx's ``location =``.
3. Otherwise the longest of the literal Prefix match and the regex rules that match
   wins, each path counted in characters as written (ingress-nginx orders its locations
   by that length). On equal length the literal rule wins; among regex rules of equal
   length, the older Ingress's, then the one written first.
4. Nothing matches: the default backend.

``RegexIndex`` holds, in a second ``Router`` keyed by host (so that host normalization and
wildcard lookup are the compiled ones), a ``RegexSite`` per host that has regex rules. A
config without regex rules has none, and a host with only literal rules is never looked
at unless a regex host could shadow it (a regex wildcard or host-less rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import re2

from fastroute import Router
from fastroute.ingress.model import Policy, Target

__all__ = [
    "Groups",
    "RegexIndex",
    "RegexRule",
    "RegexSite",
    "compile_path",
    "expand",
    "is_regex_rule",
    "rewrite",
]

Groups = tuple[bytes, ...]  # $1..$9 of the regex that matched ($0 is not offered)
NO_GROUPS: Groups = (b"",) * 9
REGEX_PATH_TYPES = frozenset({"Prefix", "ImplementationSpecific"})

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False  # nginx's ~*
# byte by byte, as nginx's PCRE (no UTF mode): a path that is not UTF-8 still matches, and
# its captures keep every byte
_OPTIONS.encoding = re2.Options.Encoding.LATIN1
_OPTIONS.log_errors = False  # the reason goes into the Problem, not to stderr
_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", 0)  # "^" is in the pattern


def is_regex_rule(policy: Policy, path_type: str) -> bool:
    """Whether an Ingress's path is a regex: ingress-nginx's rule, Exact paths excepted."""
    return (policy.use_regex or policy.rewrite_target is not None) and (
        path_type in REGEX_PATH_TYPES
    )


@lru_cache(maxsize=4096)
def compile_path(path: str) -> Any:
    """``path`` as ingress-nginx writes it, ``~* "^PATH"``: searched, case-insensitive.

    Raises:
        ValueError: RE2 refuses the pattern (its reason is in the message).
    """
    if not path.startswith("/"):
        raise ValueError(f"a path must start with '/', got {path!r}")
    try:
        return re2.compile(b"^" + path.encode("utf-8"), _OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else "refused"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"regex {path!r} is refused by RE2 ({reason}); fastroute matches regex paths "
            "with RE2, which has no backreferences or lookaround"
        ) from None


@dataclass(frozen=True, slots=True)
class RegexRule:
    """One regex path of one Ingress on one host."""

    ingress: str  # "namespace/name"
    path: str  # as written
    path_type: str
    target: Target
    pattern: Any = field(repr=False, compare=False)  # compile_path(path)
    order: int = 0  # the host's rules: older Ingress first, then as written
    # what a request runs: the captures of the path searched for, or None
    search: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", searcher(self.pattern, literal_start(self.path)))


@dataclass(frozen=True, slots=True)
class Choice:
    """What one host's rules chose for a path, and why (for ``explain``)."""

    route: Any  # a Target, the default backend, or None
    groups: Groups | None  # the regex's captures, if a regex rule won
    regex: RegexRule | None  # the regex rule that won, if one did
    literal_length: int  # the literal rule's path length; -1: none matched
    matching: tuple[RegexRule, ...]  # the regex rules whose pattern matches, best first
    reason: str


class RegexSite:
    """The regex rules of one host, longest path first, and its literal rules' lengths."""

    __slots__ = ("host", "literal", "rules")

    def __init__(
        self,
        host: str,
        rules: Iterable[RegexRule],
        literal: Iterable[tuple[Any, str, str]],
    ) -> None:
        self.host = host  # the rule host: "a.com", "*.a.com", or "" for any host
        self.rules = tuple(sorted(rules, key=lambda r: (-len(r.path), r.order)))
        # id(target) -> (its rule's path length, Exact, the target): the trie returns the
        # target, this says how long the rule that chose it was
        self.literal: dict[int, tuple[int, bool, Any]] = {
            id(target): (len(path), path_type == "Exact", target)
            for target, path, path_type in literal
        }

    def _literal(self, found: Any) -> tuple[int, bool]:
        known = self.literal.get(id(found))
        if known is None or known[2] is not found:
            return -1, False  # the default backend, or a less specific host's rule
        return known[0], known[1]

    def choose(self, path: bytes, found: Any, default: Any) -> tuple[Any, Groups | None]:
        """The route for ``path`` given what the trie ``found`` for it, and the captures."""
        route, groups, _ = self._choose(path, found, default)
        return route, groups

    def _choose(
        self, path: bytes, found: Any, default: Any
    ) -> tuple[Any, Groups | None, RegexRule | None]:
        length, exact = self._literal(found)
        if exact:
            return found, None, None
        for rule in self.rules:
            if len(rule.path) <= length:
                break  # ties go to the literal rule
            groups = rule.search(path)
            if groups is not None:
                return rule.target, groups, rule
        return (found if length >= 0 else default), None, None

    def explain(self, path: bytes, found: Any, default: Any) -> Choice:
        """``choose``, with every regex rule weighed and the reason."""
        length, exact = self._literal(found)
        matching = tuple(r for r in self.rules if r.pattern.search(path) is not None)
        route, groups, winner = self._choose(path, found, default)
        if exact:
            reason = "a literal Exact rule wins over regex rules (nginx's location =)"
        elif winner is not None and length >= 0:
            reason = (
                f"regex {winner.path!r} ({len(winner.path)} characters) is longer than the "
                f"literal rule's path ({length})"
            )
        elif winner is not None:
            reason = f"regex {winner.path!r} is the longest matching path of this host"
        elif length >= 0:
            reason = (
                "the literal rule's path is at least as long as every matching regex"
                if matching
                else "no regex rule matches; the literal rule does"
            )
        else:
            reason = "no rule of this host matches; the default backend"
        return Choice(route, groups, winner, length, matching, reason)


_META = frozenset("\\.^$|?*+()[]{}")


def literal_start(path: str) -> bytes:
    """What every path the regex ``^path`` matches starts with, lower case (ASCII only,
    so that bytes.lower() folds it as RE2 does); b"" when that cannot be told."""
    if _alternates(path):  # "^/a|/b": the second alternative is searched anywhere
        return b""
    end = 0
    while end < len(path) and path[end] not in _META and path[end].isascii():
        end += 1
    if end < len(path) and path[end] in "?*{":  # the last character may be left out
        end -= 1
    return path[:end].lower().encode("ascii")


def _alternates(path: str) -> bool:
    """Whether ``path`` has a ``|`` outside any group; True when unsure."""
    depth, i, in_class = 0, 0, False
    while i < len(path):
        char = path[i]
        if char == "\\":
            i += 1
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if path[i + 1 : i + 2] == "^":
                i += 1
            if path[i + 1 : i + 2] == "]":  # a "]" first in a class is one of its members
                i += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return True
        elif char == "|" and depth == 0:
            return True
        i += 1
    return depth != 0 or in_class


def searcher(pattern: Any, start: bytes = b"") -> Callable[[bytes], Groups | None]:
    """``pattern`` searched in a path: its captures ($1..$9), or None.

    A path that does not begin with the pattern's literal ``start`` (in any case) is
    turned away before RE2 is asked: on a host with several regex paths, most are misses.
    RE2's own matcher gives the spans of the groups; the ``re2`` module's Match objects
    around them cost three times the search itself.
    """
    regexp = getattr(pattern, "_regexp", None)
    match = getattr(regexp, "Match", None)
    size = len(start)
    if match is None:  # another google-re2 layout: its public API
        return lambda path: _groups_of(pattern.search(path))

    def search(path: bytes) -> Groups | None:
        if size and path[:size].lower() != start:
            return None
        spans = match(_UNANCHORED, path, 0, len(path))
        if spans[0][0] < 0:
            return None
        if len(spans) == 1:
            return NO_GROUPS
        found = tuple(path[a:b] if a >= 0 else b"" for a, b in spans[1:10])
        return found + NO_GROUPS[len(found) :]

    return search


def _groups_of(match: Any) -> Groups | None:
    return None if match is None else _groups(match)


def _groups(match: Any) -> Groups:
    groups = match.groups()
    if not groups:
        return NO_GROUPS
    found = tuple(g or b"" for g in groups[:9])
    return found + NO_GROUPS[len(found) :]


_SHADOW = object()  # a literal host more specific than a regex one: the trie decides alone


class RegexIndex:
    """The hosts with regex rules, and the literal hosts that shadow them."""

    __slots__ = ("hosts", "sites")

    def __init__(self, sites: Mapping[str, RegexSite], literal_hosts: Iterable[str]) -> None:
        self.sites = dict(sites)
        self.hosts = Router()
        for host, site in self.sites.items():
            self.hosts.add(host, "/", "Prefix", site)
        wildcards = {h[2:] for h in self.sites if h.startswith("*.")}
        any_host = "" in self.sites
        for host in literal_hosts:
            if host in self.sites or not host:
                continue
            parent = host.partition(".")[2]
            if any_host or (not host.startswith("*.") and parent in wildcards):
                self.hosts.add(host, "/", "Prefix", _SHADOW)

    def site(self, host: bytes | str | None) -> RegexSite | None:
        """The regex site the request's host selects, if that host has regex rules."""
        site = self.hosts.match(host, b"/")
        return site if isinstance(site, RegexSite) else None

    def choose(
        self, host: bytes | str | None, path: bytes, found: Any, default: Any
    ) -> tuple[Any, Groups | None] | None:
        """The route and captures for a request, or None when its host has no regex rules
        (then ``found``, the trie's answer, stands)."""
        site = self.hosts.match(host, b"/")
        if site is None or site is _SHADOW:
            return None
        result: tuple[Any, Groups | None] = site.choose(path, found, default)
        return result


# -- rewriting ---------------------------------------------------------------------------

# what may stay as it is in a path sent upstream; a capture comes from the decoded path
_SAFE = frozenset(
    b"!$&'()*+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
)


def _escaped(text: bytes) -> bytes:
    if all(byte in _SAFE for byte in text):
        return text
    return b"".join(bytes((b,)) if b in _SAFE else b"%%%02X" % b for b in text)


def expand(template: bytes, groups: Groups | None, escape: bool = True) -> bytes:
    """``$1``..``$9`` in ``template`` replaced by the captures (empty when missing)."""
    if b"$" not in template:
        return template
    captures = groups or NO_GROUPS
    out = bytearray()
    i, n = 0, len(template)
    while i < n:
        byte = template[i]
        if byte == 0x24 and i + 1 < n and 0x31 <= template[i + 1] <= 0x39:  # $1..$9
            value = captures[template[i + 1] - 0x31]
            out += _escaped(value) if escape else value
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def rewrite(template: str, groups: Groups | None, query: bytes) -> tuple[bytes, bytes]:
    """``rewrite-target`` as nginx's ``rewrite``: the whole path replaced by the template
    with its captures. The request's query is appended (after ``&`` when the template has
    one of its own), unless the template ends with ``?``. Returns (path, "?query" or b"")."""
    replaced = expand(template.encode("utf-8"), groups)
    path, mark, own = replaced.partition(b"?")
    if not mark:
        return path, query
    if not own:
        return path, b""  # a trailing "?": the request's arguments are dropped
    return path, b"?" + own + (b"&" + query[1:] if query else b"")


# -- building ----------------------------------------------------------------------------


def regex_rule(
    ingress: str, host: str, path: str, path_type: str, target: Target, taken: list[RegexRule]
) -> RegexRule:
    """The regex rule for one path of an Ingress on ``host``, after the host's ``taken``.

    Raises:
        ValueError: the host is malformed, RE2 refuses the path, or an older Ingress
            has the same regex path on this host (the reason says which).
    """
    Router().add(host, "/", "Prefix", None)  # the host is checked as the trie checks it
    pattern = compile_path(path)
    for other in taken:
        if other.path == path:
            raise ValueError(
                f"regex {path!r} on {f'host {host!r}' if host else 'any host'} is already "
                f"routed by the older Ingress {other.ingress}"
            )
    if target.policy.rewrite_target == path:  # ingress-nginx: a path equal to its target
        target = replace(target, policy=replace(target.policy, rewrite_target=None))
    return RegexRule(ingress, path, path_type, target, pattern, len(taken))


def regex_index(
    sites: Mapping[str, tuple[list[RegexRule], list[tuple[Any, str, str]]]],
    literal_hosts: Iterable[str],
) -> RegexIndex | None:
    """The index of the hosts with regex rules; None when there are none."""
    if not sites:
        return None
    built = {host: RegexSite(host, rules, literal) for host, (rules, literal) in sites.items()}
    return RegexIndex(built, literal_hosts)
