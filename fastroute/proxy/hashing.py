"""Consistent hashing: ``upstream-hash-by`` keys, built per request and placed on a ring.

Sans-I/O. ``request_key`` joins an ``upstream-hash-by`` key's text and nginx variables
from one request; a ``Ring`` maps a key to one endpoint of a backend. The ring is
ketama-style, as ingress-nginx's (``resty.chash``): each endpoint owns ``POINTS`` points
at hashes of its address and port, and a key belongs to the first point at or after its
own hash. Two properties follow, and the tests check both:

* The ring depends only on the set of endpoints, not on their order or on the process:
  every replica, and every config with the same endpoints, sends a key to the same one.
* When one endpoint of N leaves, only its keys move (about 1/N of them); when one joins,
  it takes about 1/N of the keys, each from the endpoint that had it, and no other key
  moves.

``upstream-hash-by-subset`` hashes to a *subset* of ``size`` endpoints instead, one of
which is chosen at random per request (ingress-nginx's ``chashsubset``): the endpoints,
sorted, are cut into subsets in order, the last one filled up from the start.

BLAKE2b is the hash: fast in CPython, and well spread whatever the keys look like.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Sequence

from fastroute.ingress.balancing import HashKey
from fastroute.ingress.model import Endpoint

__all__ = ["POINTS", "Ring", "key_hash", "query_argument", "request_cookie", "request_key"]

POINTS = 160  # per endpoint: spreads keys within a few percent of an even share


def key_hash(data: bytes) -> int:
    """A 64-bit position on the ring."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    """Keys to members, consistently. Members are anything with a stable ``str``."""

    __slots__ = ("_owners", "_points", "members")

    def __init__(self, members: Sequence[object], points: int = POINTS) -> None:
        self.members = tuple(members)
        placed: list[tuple[int, int]] = []
        for index, member in enumerate(self.members):
            name = str(member).encode()
            placed += [(key_hash(b"%s#%d" % (name, i)), index) for i in range(points)]
        # a tie between two members' points (vanishingly rare) goes to the smaller name,
        # so the order the members came in never matters
        placed.sort(key=lambda p: (p[0], str(self.members[p[1]])))
        self._points = [position for position, _ in placed]
        self._owners = [index for _, index in placed]

    def index(self, key: bytes) -> int:
        """The index in ``members`` of the member that owns ``key``."""
        at = bisect.bisect_left(self._points, key_hash(key))
        return self._owners[at if at < len(self._points) else 0]

    def find(self, key: bytes) -> object:
        return self.members[self.index(key)]


def subsets(endpoints: Sequence[Endpoint], size: int) -> list[tuple[Endpoint, ...]]:
    """``endpoints`` (sorted, so every replica cuts them alike) in subsets of ``size``; the
    last is filled up from the first endpoints so that all are the same size."""
    ordered = sorted(endpoints, key=lambda e: (e.address, e.port))
    count = -(-len(ordered) // size)
    padded = ordered + ordered[: count * size - len(ordered)]
    return [tuple(padded[i * size : (i + 1) * size]) for i in range(count)]


def request_cookie(cookie_header: bytes | None, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in a Cookie field (the first one so named), or None."""
    if not cookie_header:
        return None
    for pair in cookie_header.split(b";"):
        key, eq, value = pair.partition(b"=")
        if eq and key.strip() == name:
            return value.strip()
    return None


def query_argument(query: bytes, name: bytes) -> bytes:
    """nginx's ``$arg_NAME``: the first argument so named (names compared without case),
    as sent (not decoded); b"" when absent."""
    lowered = name.lower()
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key.lower() == lowered:
            return value
    return b""


def request_key(
    key: HashKey,
    *,
    target: bytes,
    host: bytes,
    client: str,
    scheme: str,
    header: Callable[[bytes], bytes | None],
) -> bytes:
    """The key of one request, as nginx would evaluate the same complex value.

    Args:
        key: The route's ``upstream-hash-by``.
        target: The request target as the client sent it (absolute-form too).
        host: The host the request is for (the Host field or the target's authority).
        client: The real client address (``$remote_addr``).
        scheme: ``"http"`` or ``"https"``.
        header: A request field's value by lower-case name.
    """
    if not target.startswith(b"/"):  # absolute-form: $request_uri is its path and query
        start = target.find(b"/", target.find(b"//") + 2 if b"//" in target else 0)
        target = target[start:] if start >= 0 else b"/"
    path, _, query = target.partition(b"?")
    out: list[bytes] = []
    for kind, name in key.parts:
        if not kind:
            out.append(name.encode())
        elif kind == "request_uri":
            out.append(target)
        elif kind == "uri":
            out.append(path)
        elif kind in ("args", "query_string"):
            out.append(query)
        elif kind == "remote_addr":
            out.append(client.encode())
        elif kind == "host":
            out.append(_host_name(host).lower())
        elif kind == "scheme":
            out.append(scheme.encode())
        elif kind == "http_":
            out.append(header(name.encode()) or b"")
        elif kind == "cookie_":
            out.append(request_cookie(header(b"cookie"), name.encode()) or b"")
        else:  # "arg_"
            out.append(query_argument(query, name.encode()))
    return b"".join(out)


def _host_name(host: bytes) -> bytes:
    """nginx's ``$host``: the name without the port (IPv6 literals keep their brackets)."""
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    return host.partition(b":")[0].rstrip(b".")
