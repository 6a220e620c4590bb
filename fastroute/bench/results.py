"""The figures a run produces, as plain dataclasses that the report prints and JSON keeps.

Kept apart from the code that measures them so that the table and the JSON file can
never show different numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OK",
    "BuildRow",
    "Cell",
    "MatchRow",
    "MemoryRow",
    "PeerInfo",
    "Results",
    "Target",
]

OK = "ok"
"""The status of a cell that holds a figure. Others: "not installed", "n/a" (the peer
cannot express the scenario), "skipped" (too slow at this size), "disagrees" (it
routed the sample differently from fastroute, so it is not compared) and "error";
"checked" only while a run is in progress, between the check and the timing."""


@dataclass
class Cell:
    """One peer on one size: a figure (ns per call, or ms per build) or why there is none."""

    status: str
    value: float | None = None
    detail: str = ""
    checked: int = 0  # requests whose answer was compared with fastroute's
    mismatches: int = 0


@dataclass
class MatchRow:
    """One size and scenario: fastroute, the loop-overhead reference, and each peer."""

    size: int
    scenario: str
    title: str
    requests: int
    distinct: int
    overhead_ns: float  # the same loop calling operator.is_: not subtracted anywhere
    fastroute_ns: float  # bytes host and path, as an h11 proxy has them
    fastroute_str_ns: float  # the same requests as str
    fastroute_wrong: int  # answers (bytes and str) that differ from the expected backend
    peers: dict[str, Cell] = field(default_factory=dict)


@dataclass
class BuildRow:
    """Build time for one size: fastroute's add loop, and each peer's build."""

    size: int
    fastroute_ms: float
    fastroute_builds: int
    peers: dict[str, Cell] = field(default_factory=dict)


@dataclass
class MemoryRow:
    """Memory of one built router, in MB."""

    size: int
    fastroute_retained_mb: float
    fastroute_peak_mb: float
    fastroute_rss_mb: float | None
    pytrie_retained_mb: float
    pytrie_peak_mb: float


@dataclass
class PeerInfo:
    """A peer as found on this machine."""

    name: str
    installed: bool
    version: str | None
    note: str


@dataclass(frozen=True)
class Target:
    """One goal from the issue, checked against this run's figures."""

    name: str
    text: str
    value: float | None
    limit: float
    ok: bool | None  # None: this run did not measure what the goal is about


@dataclass
class Results:
    """Everything one run measured, in the order it is printed."""

    machine: dict[str, str]
    config: dict[str, Any]
    peers: list[PeerInfo]
    match: list[MatchRow] = field(default_factory=list)
    build: list[BuildRow] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def row(self, size: int, scenario: str) -> MatchRow | None:
        """The match row for ``size`` and ``scenario``, if measured."""
        return next((r for r in self.match if r.size == size and r.scenario == scenario), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of everything."""
        return dataclasses.asdict(self)
