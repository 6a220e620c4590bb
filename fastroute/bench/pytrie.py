"""A pure-Python segment trie with fastroute's semantics: the fair baseline.

This is what a careful Python programmer would write instead of a compiled matcher,
so "N times faster than pure Python" is measured against something worth beating:
one dict lookup for a well-formed exact host, one for an Exact path, then a walk down
nested dicts keyed by path segment: no regexes, no attribute lookups in the hot path,
and no allocation beyond normalizing an unusual Host header and the ``split``. It
keeps its tables in the type the requests come in (``bytes`` from h11, or ``str``),
so nothing is decoded per request.

Semantics (those of ``fastroute.Router``): the host is selected first (an exact host
that has rules, else a ``*.`` wildcard one label up that has rules, else the rules
for any host), with no fallthrough to a less specific host; among that host's rules an
Exact path equal to the request wins, else the longest Prefix, compared element-wise
on ``/``-separated segments with a trailing slash ignored; else the default backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PATH_TYPES", "PyTrie"]

PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")

Key = str | bytes
# A host's rules: Exact paths -> backend, and the root of its Prefix trie. A trie
# node is a dict from segment to child node; a node where a Prefix rule ends also
# holds the key None mapped to a 1-tuple (backend,) (a box, so a None backend is
# told apart from "no rule here" by a single lookup).
Table = tuple[dict[Key, Any], dict[Any, Any]]
Matcher = Callable[[Key | None, Key], Any]

_MISSING: Any = object()


def _new_table() -> Table:
    return ({}, {})


class PyTrie:
    """Ingress rules in dicts: ``add`` like ``Router.add``, ``match`` like ``Router.match``.

    ``keys`` is the type the requests will come in (``bytes`` or ``str``); rules are
    always added as ``str`` and converted once, here.
    """

    def __init__(self, *, keys: type[str] | type[bytes] = bytes) -> None:
        self._bytes = keys is bytes
        self._exact_hosts: dict[Key, Table] = {}
        self._wild_hosts: dict[Key, Table] = {}  # keyed by the part after "*."
        self._any: Table = _new_table()
        self._default: list[Any] = [None]
        self._count = 0
        self.match: Matcher = self._make_match()

    def _key(self, text: str) -> Key:
        return text.encode("ascii") if self._bytes else text

    def add(self, host: str, path: str, path_type: str, backend: Any) -> None:
        """Add a rule; a rule matching exactly the requests of an existing one is refused."""
        if path_type not in PATH_TYPES:
            raise ValueError(f"unknown path type {path_type!r}")
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} does not start with '/'")
        name = host.lower()
        if name.endswith("."):
            name = name[:-1]
        if not name:
            table = self._any
        elif name.startswith("*."):
            table = self._wild_hosts.setdefault(self._key(name[2:]), _new_table())
        else:
            table = self._exact_hosts.setdefault(self._key(name), _new_table())
        exact, node = table
        if path_type == "Exact":
            key = self._key(path)
            if key in exact:
                raise ValueError(f"Exact {path!r} on {host!r} is already there")
            exact[key] = backend
        else:
            base = path[:-1] if path.endswith("/") else path
            for segment in base[1:].split("/") if base else ():
                node = node.setdefault(self._key(segment), {})
            if None in node:
                raise ValueError(f"Prefix {path!r} on {host!r} is already there")
            node[None] = (backend,)
        self._count += 1

    def set_default(self, backend: Any) -> None:
        """Set what ``match`` returns when no rule matches."""
        self._default[0] = backend

    @property
    def default(self) -> Any:
        """The default backend, or None."""
        return self._default[0]

    def __len__(self) -> int:
        return self._count

    def _make_match(self) -> Matcher:
        """Build ``match`` as a closure over the tables: the fastest plain Python lookup."""
        exact_get = self._exact_hosts.get
        wild_get = self._wild_hosts.get
        any_table = self._any
        default = self._default
        # The punctuation in the requests' type; Any because str and bytes mix in no way.
        consts: tuple[Any, ...] = (":", ".", "/", "[")
        if self._bytes:
            consts = tuple(c.encode() for c in consts)
        colon, dot, slash, bracket = consts

        def host_table(host: Key) -> Table:
            """Normalize a raw Host header and pick its table (the slow path)."""
            name: Any = host.lower()
            if colon in name:
                if name[:1] == bracket:  # an IPv6 literal: not a name
                    return any_table
                name = name.partition(colon)[0]
            if name[-1:] == dot:
                name = name[:-1]
            if not name:
                return any_table
            table = exact_get(name)
            if table is not None:
                return table
            first, sep, parent = name.partition(dot)
            if not (sep and first) or name.rpartition(dot)[2].isdigit():
                return any_table  # one label, or an IPv4 literal
            table = wild_get(parent)
            return any_table if table is None else table

        def match(host: Key | None, path: Key) -> Any:
            # A well-formed header (lower case, no port) is found in one lookup.
            table = exact_get(host) if host else any_table
            if table is None:
                table = host_table(host)  # type: ignore[arg-type]
            exact: dict[Key, Any]
            node: Any
            exact, node = table
            backend = exact.get(path, _MISSING)
            if backend is not _MISSING:
                return backend
            if path[:1] == slash:
                best = node.get(None)
                for segment in path[1:].split(slash):
                    node = node.get(segment)
                    if node is None:
                        break
                    box = node.get(None)
                    if box is not None:
                        best = box
            elif path:  # no leading slash ("*", "a"): no rule matches
                best = None
            else:  # an empty path is taken as "/"
                backend = exact.get(slash, _MISSING)
                if backend is not _MISSING:
                    return backend
                best = node.get(None)
            return default[0] if best is None else best[0]

        return match
