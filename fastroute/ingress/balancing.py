"""How a route picks the endpoint of its backend: the values ``load-balance``,
``upstream-hash-by`` and the ``affinity`` annotations are read into.

Frozen values only; ``balancing_syntax`` reads them from text, and the proxy's
``hashing``, ``ewma`` and ``affinity`` modules act on them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AFFINITY_MODES", "CANARY_BEHAVIORS", "LOAD_BALANCE", "Affinity", "HashKey"]

LOAD_BALANCE = ("round_robin", "ewma")
AFFINITY_MODES = ("balanced", "persistent")
CANARY_BEHAVIORS = ("sticky", "legacy")


@dataclass(frozen=True, slots=True)
class HashKey:
    """An ``upstream-hash-by`` key: text and nginx variables, joined per request.

    Each part is ``("", text)`` for literal text, ``(variable, "")`` for a variable such
    as ``request_uri``, or ``(kind, name)`` for ``http_``/``cookie_``/``arg_`` ones
    (``("http_", "x-user")``: the header's name as it is looked up, lower case with
    dashes; cookie and argument names as written).
    """

    text: str  # as written, for notes and explain
    parts: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Affinity:
    """``affinity: cookie`` and its ``session-cookie-*`` settings (ingress-nginx's defaults).

    ``path`` None: the cookie's Path is the path of the rule that matched (for a regex
    path, its literal start; see ``fastroute.proxy.affinity.cookie_path``).
    """

    mode: str = "balanced"  # or "persistent"
    canary_behavior: str = "sticky"  # or "legacy": canaries ignore the cookie
    name: str = "INGRESSCOOKIE"
    path: str | None = None
    domain: str = ""
    samesite: str = ""  # "None", "Lax", "Strict"; "": no attribute
    conditional_samesite_none: bool = False  # no SameSite=None for browsers that reject it
    secure: bool = False  # Secure even over plain HTTP (over HTTPS it always is)
    max_age: int | None = None  # seconds: Max-Age
    expires: int | None = None  # seconds from now: Expires
    change_on_failure: bool = False  # a failed sticky endpoint: the cookie moves
    regex_paths: bool = False  # the Ingress asked for use-regex
