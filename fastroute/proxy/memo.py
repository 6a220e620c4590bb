"""Values derived once from a frozen config object and reused for every request it serves.

A route's policy objects (its networks, its CORS settings) live as long as the RouteConfig
that holds them; what the proxy compiles from them is kept by the object's identity, with
the object itself held so that its ``id`` cannot be reused meanwhile. Emptied when full, so
memory stays bounded however many configs come and go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ByIdentity"]

K = TypeVar("K")
V = TypeVar("V")


class ByIdentity(Generic[K, V]):
    """``build(key)``, computed once per key object (compared by identity)."""

    __slots__ = ("_build", "_entries", "_size")

    def __init__(self, build: Callable[[K], V], size: int) -> None:
        self._build = build
        self._size = size
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        entry = self._entries.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1]
        if len(self._entries) >= self._size:
            self._entries.clear()
        value = self._build(key)
        self._entries[id(key)] = (key, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
