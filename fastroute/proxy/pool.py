"""Idle upstream keep-alive connections, per endpoint. Bookkeeping only: no I/O.

The server asks for an idle connection before opening a new one, and gives a
connection back when its exchange ended cleanly. Most recently used first: the
connection least likely to have been closed by the upstream's idle timeout. Connections
this module drops (too old, or too many) are handed back to the caller to close, so
closing, which is I/O, stays in the server.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Pool"]

C = TypeVar("C")


@dataclass
class Pool(Generic[C]):
    """Idle connections by endpoint.

    Args:
        max_idle: idle connections kept per endpoint (nginx's ``keepalive``).
        idle_timeout: seconds an idle connection is kept; upstreams close theirs too.
    """

    max_idle: int = 64
    idle_timeout: float = 30.0
    # per endpoint, oldest first: (when it went idle, the connection)
    _idle: dict[Hashable, list[tuple[float, C]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_idle < 0:
            raise ValueError(f"max_idle must be 0 or more, got {self.max_idle}")
        if not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, got {self.idle_timeout}")

    def take(self, endpoint: Hashable, *, now: float) -> tuple[C | None, Sequence[C]]:
        """An idle connection to ``endpoint`` (or None), and expired ones to close."""
        idle = self._idle.get(endpoint)
        expired: Sequence[C] = ()  # the usual case: no list made for nothing to close
        while idle:
            since, connection = idle.pop()
            if now - since < self.idle_timeout:
                return connection, expired
            expired = [*expired, connection]
        return None, expired

    def give(self, endpoint: Hashable, connection: C, *, now: float) -> Sequence[C]:
        """Keep ``connection`` for reuse; returns the connections to close instead."""
        if self.max_idle == 0:
            return (connection,)
        idle = self._idle.get(endpoint)
        if idle is None:
            idle = self._idle[endpoint] = []
        idle.append((now, connection))
        overflow = len(idle) - self.max_idle
        if overflow > 0:
            dropped = [connection for _, connection in idle[:overflow]]
            del idle[:overflow]
            return dropped
        return ()

    def sweep(self, *, now: float) -> list[C]:
        """Every connection idle for longer than ``idle_timeout``, removed: close them."""
        expired: list[C] = []
        for endpoint in list(self._idle):
            kept = [e for e in self._idle[endpoint] if now - e[0] < self.idle_timeout]
            expired += [c for since, c in self._idle[endpoint] if now - since >= self.idle_timeout]
            if kept:
                self._idle[endpoint] = kept
            else:
                del self._idle[endpoint]
        return expired

    def drain(self) -> list[C]:
        """Every idle connection, removed: close them (shutting down)."""
        everything = [connection for idle in self._idle.values() for _, connection in idle]
        self._idle.clear()
        return everything

    def __len__(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def __repr__(self) -> str:
        counts = {str(endpoint): len(idle) for endpoint, idle in self._idle.items()}
        return f"<Pool idle={counts} max_idle={self.max_idle} idle_timeout={self.idle_timeout}>"
