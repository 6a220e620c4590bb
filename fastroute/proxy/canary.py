"""Per request: which target of a split route serves it. No I/O.

A canary's rules are tried in ingress-nginx's order (its balancer's choice of the
alternative backend):

1. A request whose affinity cookie is a session of one of the backends stays there
   (the main route's affinity; the canary's too, which is the main route's unless the
   canary Ingress says ``affinity-canary-behavior: legacy``).
2. ``canary-by-header``: with ``canary-by-header-value``, that exact value sends the
   request to the canary; with ``canary-by-header-pattern``, a value the RE2 pattern
   finds a match in (anywhere, case-sensitive) does; with neither, ``always`` sends it
   to the canary and ``never`` to the main backend. Any other value, or no such header,
   leaves the choice to the next rule.
3. ``canary-by-cookie``: ``always`` or ``never``, likewise; other values pass on.
4. The weights: each target gets ``weight / total`` of what is left.

A split without canary rules (several weighted backends) goes by its weights alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastroute.ingress.canary import compile_pattern
from fastroute.ingress.model import Canary, Target
from fastroute.proxy.affinity import names_backend
from fastroute.proxy.hashing import request_cookie
from fastroute.proxy.memo import ByIdentity

__all__ = ["choose", "cookie_value"]

Draw = Callable[[], float]  # uniform in [0, 1)


@dataclass(frozen=True, slots=True)
class _Rules:
    """A canary's rules in the form a request is checked against, made once per rules."""

    header: bytes  # lower case, as ``header`` looks fields up; b"" for none
    value: bytes  # canary-by-header-value; b"" for none
    pattern: Any  # the compiled canary-by-header-pattern, or None
    cookie: bytes  # b"" for none


def _compiled(rules: Canary) -> _Rules:
    pattern = None
    if rules.header and not rules.header_value and rules.header_pattern:
        pattern = compile_pattern(rules.header_pattern)
    return _Rules(
        header=rules.header.lower().encode("latin-1"),
        value=rules.header_value.encode("latin-1"),
        pattern=pattern,
        cookie=rules.cookie.encode("latin-1"),
    )


_rules_of: ByIdentity[Canary, _Rules] = ByIdentity(_compiled, size=4096)


def cookie_value(cookies: bytes, name: bytes) -> bytes | None:
    """The value of cookie ``name`` (any case, as nginx's ``$cookie_`` finds it) in a
    ``Cookie`` field, or None."""
    wanted = name.lower()
    for pair in cookies.split(b";"):
        key, equals, value = pair.partition(b"=")
        if equals and key.strip().lower() == wanted:
            return value.strip()
    return None


def _by_rules(rules: _Rules, header: Callable[[bytes], bytes | None]) -> bool | None:
    """True: the canary; False: the main backend; None: the header and cookie rules
    leave it to the weights."""
    if rules.header:
        value = header(rules.header)
        if value is not None:
            if rules.value:
                if value == rules.value:
                    return True
            elif rules.pattern is not None:
                if rules.pattern.search(value.decode("latin-1")) is not None:
                    return True
            elif value == b"always":
                return True
            elif value == b"never":
                return False
    if rules.cookie:
        cookies = header(b"cookie")
        if cookies is not None:
            value = cookie_value(cookies, rules.cookie)
            if value == b"always":
                return True
            if value == b"never":
                return False
    return None


def _affinitized(target: Target, cookies: bytes) -> bool:
    """Whether the request's affinity cookie is a session of the target's backend (as
    ingress-nginx's balancer checks both before any canary rule)."""
    affinity = target.policy.affinity
    if affinity is None:
        return False
    return names_backend(target.backend, request_cookie(cookies, affinity.name.encode()))


def choose(
    route: Target, header: Callable[[bytes], bytes | None], draw: Draw = random.random
) -> Target:
    """The target of ``route``'s split that serves this request (``route`` itself if
    it has no split)."""
    split = route.split
    if split is None:
        return route
    canary = route.policy.canary
    if canary is not None and len(split.targets) == 2:
        main, alternative = split.targets
        sessions = main.policy.affinity is not None or alternative.policy.affinity is not None
        cookies = header(b"cookie") if sessions else None
        if cookies is not None:  # a session begun on either backend stays there
            if _affinitized(main, cookies):
                return main
            if _affinitized(alternative, cookies):
                return alternative
        decided = _by_rules(_rules_of(canary), header)
        if decided is not None:
            return split.targets[1] if decided else split.targets[0]
    return split.pick(draw() * split.total)
