"""The plain-text report: machine, match table, build and memory tables, notes, targets.

Columns are sized to their contents, so the table stays aligned whatever a cell says
("not installed", "skipped (linear scan; > 3 s)", a figure).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from fastroute.bench.results import OK, Cell, Results

__all__ = ["render"]

_PEERS = ("pytrie", "http-router", "werkzeug", "starlette")
_WIDTH = 96  # notes are wrapped to this; tables are as wide as their cells


def _ns(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ratio(slow: float | None, fast: float) -> str:
    return "-" if slow is None or fast <= 0 else f"{slow / fast:.1f}x"


def _cell(cell: Cell | None, number: str = "ns") -> str:
    """A peer's figure, or why it has none."""
    if cell is None:
        return "-"
    if cell.status == OK and cell.value is not None:
        return _ns(cell.value) if number == "ns" else _ms(cell.value)
    if cell.status == "n/a":
        return "-"
    if cell.status == "skipped":
        return f"skipped ({cell.detail})" if cell.detail else "skipped"
    return cell.status


def _value(cell: Cell | None) -> float | None:
    return cell.value if cell is not None and cell.status == OK else None


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], left: frozenset[int] = frozenset()
) -> list[str]:
    """Align ``rows`` under ``headers``: the columns in ``left`` flush left, others right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _header(results: Results) -> list[str]:
    m, c = results.machine, results.config
    peers = ", ".join(
        f"{p.name} (not installed)" if not p.installed
        else f"{p.name} {p.version}" if p.version
        else f"{p.name} (built in)"
        for p in results.peers
    )  # fmt: skip
    return [
        "fastroute.bench: Kubernetes Ingress matching, fastroute beside its peers",
        f"cpu:       {m['cpu']} ({m['cpus']} CPUs), {m['os']}",
        f"python:    {m['python']} {m['python_build']}",
        f"fastroute: {m['fastroute']} from {m['fastroute_module']}",
        f"peers:     {peers}",
        f"method:    median of {c['repeat']} repeats, each >= {c['min_time_s'] * 1e3:g} ms of "
        f"calls over {c['sample']:,} requests per scenario (seed {c['seed']}), collector off",
    ]


def _match_table(results: Results) -> list[str]:
    headers = [
        "rules", "scenario", "loop+call", "fastroute", "fr str", "pytrie", "pytrie/fr",
        "http-router", "h-r/fr str", "werkzeug", "starlette",
    ]  # fmt: skip
    rows = []
    for r in results.match:
        peers = r.peers
        rows.append([
            f"{r.size:,}",
            r.title + (" (WRONG)" if r.fastroute_wrong else ""),
            _ns(r.overhead_ns),
            _ns(r.fastroute_ns),
            _ns(r.fastroute_str_ns),
            _cell(peers.get("pytrie")),
            _ratio(_value(peers.get("pytrie")), r.fastroute_ns),
            _cell(peers.get("http-router")),
            _ratio(_value(peers.get("http-router")), r.fastroute_str_ns),
            _cell(peers.get("werkzeug")),
            _cell(peers.get("starlette")),
        ])  # fmt: skip
    return [
        "Match: median ns per call (lower is better). fastroute and pytrie get bytes, as an h11",
        "proxy has them; 'fr str' is fastroute on the same requests as str, the input of",
        "http-router, werkzeug and starlette.",
        *_table(headers, rows, left=frozenset({1})),
    ]


def _build_table(results: Results) -> list[str]:
    headers = ["rules", "fastroute", "pytrie", "pytrie/fr", *_PEERS[1:]]
    rows = []
    for b in results.build:
        trie = b.peers.get("pytrie")
        rows.append([
            f"{b.size:,}",
            _ms(b.fastroute_ms),
            _cell(trie, "ms"),
            _ratio(_value(trie), b.fastroute_ms),
            *(_cell(b.peers.get(p), "ms") for p in _PEERS[1:]),
        ])  # fmt: skip
    return [
        "Build: median ms to add every rule to a fresh router (fastroute: the add loop only,",
        "on prebuilt rule tuples; peers: translating the rules and building, up to",
        "--repeat builds within about a second).",
        *_table(headers, rows),
    ]


def _memory_table(results: Results) -> list[str]:
    headers = ["rules", "fr traced", "fr peak", "fr RSS", "pytrie traced", "pytrie peak"]
    rows = [
        [
            f"{m.size:,}",
            _mb(m.fastroute_retained_mb),
            _mb(m.fastroute_peak_mb),
            _mb(m.fastroute_rss_mb),
            _mb(m.pytrie_retained_mb),
            _mb(m.pytrie_peak_mb),
        ]
        for m in results.memory
    ]
    return [
        "Memory: MB allocated by building the router, as tracemalloc sees it (retained with",
        "the router alive, and peak during the build); RSS is the resident-memory growth",
        "of the same build in a fresh process.",
        *_table(headers, rows),
    ]


def _notes(results: Results) -> list[str]:
    notes = [
        f"Requests: {results.config['sample']:,} per scenario, drawn across the whole rule "
        "set; about half the Host headers carry a port or mixed case. A prefix hit extends a "
        "Prefix rule by 1-2 segments; a near miss follows a rule's first segments, then "
        "turns off; an unknown host falls to the host-less rules, then to the default.",
        "loop+call: the same loop calling operator.is_(host, path), a C function of the same "
        "arity: the part of every figure that is the Python loop and call. Not subtracted.",
        "x columns: the peer's time / fastroute's (above 1x, fastroute is faster).",
        "'-': the peer cannot express that scenario. Each peer is checked against fastroute "
        "on the sample before it is timed; one that routes differently is reported and not "
        "timed.",
        "skipped: a peer is not run at a size where its build is foreseen (from the last "
        f"size) to take over {results.config['build_budget_s']:g} s, nor on a scenario that "
        f"would take it over {results.config['scenario_budget_s']:g} s.",
        *(p.note for p in results.peers if p.installed),
    ]
    return ["Notes:", *(_item(note) for note in notes)]


def _item(text: str) -> str:
    return textwrap.fill(text, width=_WIDTH, initial_indent="- ", subsequent_indent="  ")


def render(results: Results) -> str:
    """The whole report as one string."""
    parts = [
        _header(results),
        _match_table(results),
        _build_table(results),
        _memory_table(results),
        _notes(results),
    ]
    if results.problems:
        parts.append(["Problems:", *(_item(p) for p in results.problems)])
    parts.append(["Targets:", *(_item(t.text) for t in results.targets)])
    return "\n\n".join("\n".join(part) for part in parts) + "\n"
