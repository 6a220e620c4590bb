"""The compiled Kubernetes Ingress matcher.

``Router`` holds Ingress rules (host, path, path type, backend) and answers
``match(host, path)`` with the backend the Kubernetes Ingress semantics choose.
"""

from collections.abc import Iterator
from typing import Any

from typing_extensions import disjoint_base

from fastroute.routes import Explanation, Route

PATH_TYPES: tuple[str, ...]
"""The path types ``add`` accepts: ``"Exact"``, ``"Prefix"``, ``"ImplementationSpecific"``."""

@disjoint_base
class Router:
    """Ingress rules compiled into a host table and one path trie per host.

    Precedence, in order:

    1. Host: an exact host that has rules, else a wildcard host (``*.foo.com``
       covers exactly one more label) that has rules, else the rules with no
       host. Once a host is selected, the rules of less specific hosts are not
       consulted (as in ingress-nginx, where each host is its own server).
    2. Path, among the selected host's rules: the longest match wins; on equal
       length Exact beats Prefix. Prefix matches whole ``/``-separated elements,
       ignoring a trailing slash. ``ImplementationSpecific`` matches as Prefix.
    3. Nothing matched: the default backend, else ``None``.

    A router is not safe to mutate while another thread matches on it; build a
    new one, or mutate between requests.
    """

    def __init__(self) -> None: ...
    def add(self, host: str, path: str, path_type: str, backend: Any) -> None:
        """Add a rule.

        Args:
            host: ``""`` for any host, ``"foo.bar.com"`` or ``"*.bar.com"``. Case is
                folded and a trailing dot dropped; IP addresses, ports, ``*`` outside
                the first label, empty labels and non-ASCII names are refused
                (give an internationalized name in its IDNA ``xn--`` form).
            path: starts with ``/``. For Exact and Prefix, Kubernetes forbids
                ``//``, ``/./``, ``/../``, ``%2f`` and a trailing ``/.`` or ``/..``.
            path_type: ``"Exact"``, ``"Prefix"`` or ``"ImplementationSpecific"``.
            backend: any object; ``match`` returns it as is.

        Raises:
            InvalidRuleError: the rule is malformed (a ``ValueError``).
            RouteConflictError: a rule matching exactly the same requests is
                already present (``Prefix /a`` and ``Prefix /a/`` are the same rule).
        """
    def remove(self, host: str, path: str, path_type: str) -> Any:
        """Remove the rule that ``add(host, path, path_type, ...)`` would have added.

        Returns the removed rule's backend.

        Raises:
            InvalidRuleError: the rule is malformed.
            RouteNotFoundError: no such rule (a ``LookupError``).
        """
    def copy(self) -> Router:
        """An independent router with the same rules, default backend and ``routes()`` order.

        Much cheaper than adding every rule again: derive a new router from an old one
        by copying it and then adding or removing the rules that changed, while the old
        one keeps serving. Backends are shared, not copied.
        """
    def __copy__(self) -> Router: ...
    def set_default(self, backend: Any) -> None:
        """Set the backend returned when no rule matches (``spec.defaultBackend``).

        ``None`` clears it.
        """
    @property
    def default(self) -> Any:
        """The default backend, or None."""
    def match(self, host: str | bytes | None, path: str | bytes) -> Any:
        """Return the backend for a request, the default backend, or None.

        Args:
            host: the raw ``Host`` header: any case, with or without ``:port`` and
                a trailing dot; ``""``, ``None``, or an IP literal select the rules
                for any host.
            path: the request path without the query, as ``str`` or ``bytes``. It is
                matched as given: decoding and normalizing it is the caller's job.
        """
    def explain(self, host: str | bytes | None, path: str | bytes) -> Explanation:
        """Say which rule ``match(host, path)`` picks and why.

        ``explain(h, p).backend is match(h, p)`` always holds.
        """
    def routes(self) -> Iterator[Route]:
        """Iterate over the rules, in the order they were added."""
    def __len__(self) -> int:
        """The number of rules."""
