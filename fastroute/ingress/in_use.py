"""Which backends and endpoints a config's routes use, kept up to date as hosts change.

The proxy forgets what left the configuration (metrics series, round-robin turns,
endpoint health) by comparing two configs' ``InUse`` sets. The builder counts, for each
backend name and each endpoint, how many of its host records use it, adding a host's
backends when the host is built and taking the last build's away: a build costs what
changed, and a new ``InUse`` is made only when a name or an endpoint appeared or left.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from fastroute.ingress.model import Backend, Endpoint, InUse, RouteConfig, Target

__all__ = ["UseCounts", "in_use_of", "target_backends"]

_K = TypeVar("_K")


class UseCounts:
    """Reference counts of backend names and endpoints, and the ``InUse`` they make."""

    __slots__ = ("_endpoints", "_made", "_names")

    def __init__(self) -> None:
        self._names: dict[str, int] = {}
        self._endpoints: dict[Endpoint, int] = {}
        self._made: InUse | None = InUse()  # None: a key appeared or left since it was made

    def add(self, backends: Iterable[Backend]) -> None:
        """One more use of each of ``backends`` (a backend listed twice counts twice)."""
        for backend in backends:
            if _count(self._names, backend.name, 1):
                self._made = None
            for endpoint in (*backend.endpoints, *backend.terminating):
                if _count(self._endpoints, endpoint, 1):
                    self._made = None

    def remove(self, backends: Iterable[Backend]) -> None:
        """Take back the uses ``add`` counted for ``backends``."""
        for backend in backends:
            if _count(self._names, backend.name, -1):
                self._made = None
            for endpoint in (*backend.endpoints, *backend.terminating):
                if _count(self._endpoints, endpoint, -1):
                    self._made = None

    def in_use(self) -> InUse:
        """What is used now; the same object until something appears or leaves."""
        made = self._made
        if made is None:
            made = self._made = InUse(frozenset(self._names), frozenset(self._endpoints))
        return made


def _count(counts: dict[_K, int], key: _K, step: int) -> bool:
    """Move ``key``'s count by ``step``; whether the key appeared or left."""
    count = counts.get(key, 0) + step
    if count > 0:
        counts[key] = count
        return count == step
    counts.pop(key, None)
    return True


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
    """What ``config``'s routes use: as the builder recorded it, else by walking its rules,
    its default and its passthrough hosts (a config made by hand)."""
    if config.in_use is not None:
        return config.in_use
    counts = UseCounts()
    for route in config.router.routes():
        if isinstance(route.backend, Target):
            counts.add(target_backends(route.backend))
    default = config.router.default
    counts.add(target_backends(default if isinstance(default, Target) else None))
    for target in config.passthrough.values():
        counts.add(target_backends(target))
    return counts.in_use()
