"""What a config serves and uses, kept up to date as the builder works.

On a swap the proxy forgets what left the configuration (metrics series, round-robin
turns, endpoint health). The builder counts, for each backend name and each endpoint,
how many of its host records use it, adding a host's backends when the host is built and
taking the last build's away, and notes what left since its previous ``InUse``: a proxy
that served that one reads the departures, at the cost of what left; any other compares
the two configs' sets (``departed``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

from fastroute.ingress.model import Backend, Departures, Endpoint, InUse, RouteConfig, Target

__all__ = ["UseCounts", "departed", "in_use_of", "target_backends"]

_K = TypeVar("_K")

_serials = itertools.count(1)  # InUse serials, unique in the process


class UseCounts:
    """Reference counts of backend names and endpoints, the Ingresses served, what left
    since the last ``in_use``, and the ``InUse`` they make."""

    __slots__ = (
        "_chained",
        "_changed",
        "_endpoints",
        "_ingresses",
        "_left",
        "_made",
        "_names",
    )

    def __init__(self) -> None:
        self._names: dict[str, int] = {}
        self._endpoints: dict[Endpoint, int] = {}
        self._ingresses: set[str] = set()
        self._made = InUse(serial=next(_serials))
        # what left since _made, by kind; and which kinds gained or lost a key
        self._left: tuple[set[str], set[str], set[Endpoint]] = (set(), set(), set())
        self._changed = [False, False, False]  # ingresses, backends, endpoints
        self._chained = True  # _left holds all that left since _made

    def add(self, backends: Iterable[Backend]) -> None:
        """One more use of each of ``backends`` (a backend listed twice counts twice)."""
        for backend in backends:
            if _count(self._names, backend.name, 1):
                self._left[1].discard(backend.name)
                self._changed[1] = True
            for endpoint in (*backend.endpoints, *backend.terminating):
                if _count(self._endpoints, endpoint, 1):
                    self._left[2].discard(endpoint)
                    self._changed[2] = True

    def remove(self, backends: Iterable[Backend]) -> None:
        """Take back the uses ``add`` counted for ``backends``."""
        for backend in backends:
            if _count(self._names, backend.name, -1):
                if backend.name in self._made.backends:  # else it came and went since
                    self._left[1].add(backend.name)
                self._changed[1] = True
            for endpoint in (*backend.endpoints, *backend.terminating):
                if _count(self._endpoints, endpoint, -1):
                    if endpoint in self._made.endpoints:
                        self._left[2].add(endpoint)
                    self._changed[2] = True

    def ingress(self, key: str, served: bool) -> None:
        """Ingress ``key`` is served now (``served``), or no longer."""
        if served:
            self._ingresses.add(key)
            self._left[0].discard(key)
        else:
            self._ingresses.discard(key)
            if key in self._made.ingresses:
                self._left[0].add(key)
        self._changed[0] = True

    def reset(self) -> None:
        """Forget the counts (the builder adds every host again); the next ``InUse`` has
        no departures (what left is found by comparing sets)."""
        self._names.clear()
        self._endpoints.clear()
        self._chained = False
        self._changed[1] = self._changed[2] = True

    def in_use(self) -> InUse:
        """What is served and used now; the same object until something appears or leaves."""
        made = self._made
        if not any(self._changed):
            return made
        ingresses, backends, endpoints = self._changed
        left_ingresses, left_backends, left_endpoints = self._left
        departures = None
        if self._chained:
            departures = Departures(
                made.serial,
                frozenset(left_ingresses),
                frozenset(left_backends),
                frozenset(left_endpoints),
            )
        made = self._made = InUse(
            frozenset(self._ingresses) if ingresses else made.ingresses,
            frozenset(self._names) if backends else made.backends,
            frozenset(self._endpoints) if endpoints else made.endpoints,
            next(_serials),
            departures,
        )
        for left in self._left:
            left.clear()
        self._changed = [False, False, False]
        self._chained = True
        return made


def _count(counts: dict[_K, int], key: _K, step: int) -> bool:
    """Move ``key``'s count by ``step``; whether the key appeared or left."""
    count = counts.get(key, 0) + step
    if count > 0:
        counts[key] = count
        return count == step
    counts.pop(key, None)
    return True


def departed(before: InUse, after: InUse) -> Departures:
    """What ``before`` served or used and ``after`` does not: ``after``'s departures when
    they are relative to ``before``, else the differences of their sets."""
    found = after.departures
    if found is not None and before.serial and found.since == before.serial:
        return found
    return Departures(
        before.serial,
        before.ingresses - after.ingresses,
        before.backends - after.backends,
        before.endpoints - after.endpoints,
    )


def target_backends(target: Target | None) -> Iterator[Backend]:
    """Every backend a target sends to: its own, its error backend, its split's."""
    if target is None:
        return
    yield target.backend
    if target.error_backend is not None:
        yield target.error_backend
    if target.split is not None:
        for other in target.split.targets[1:]:
            yield from target_backends(other)


def in_use_of(config: RouteConfig) -> InUse:
    """What ``config`` serves and uses: as the builder recorded it, else by walking its
    rules, its default and its passthrough hosts (a config made by hand)."""
    if config.in_use is not None:
        return config.in_use
    names: set[str] = set()
    endpoints: set[Endpoint] = set()
    targets: list[Target | None] = [
        route.backend for route in config.router.routes() if isinstance(route.backend, Target)
    ]
    default = config.router.default
    targets.append(default if isinstance(default, Target) else None)
    targets.extend(config.passthrough.values())
    for target in targets:
        for backend in target_backends(target):
            names.add(backend.name)
            endpoints.update(backend.endpoints, backend.terminating)
    return InUse(frozenset(config.ingresses), frozenset(names), frozenset(endpoints))
