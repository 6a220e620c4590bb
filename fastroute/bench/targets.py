"""The issue's performance goals, each computed from this run's figures (never typed in).

A goal is stated for 100,000 rules (and 10, for the scaling one). When a run did not
measure those sizes (``--quick``, or other ``--sizes``) the line still shows the
figure at the largest measured size, but does not call it a pass or a miss.
"""

from __future__ import annotations

from fastroute.bench.results import OK, MatchRow, Results, Target

__all__ = ["BIG", "SMALL", "compute_targets"]

BIG = 100_000
SMALL = 10

PREFIX_NS = 100.0  # prefix hit with host at 100k rules, median ns
SCALING = 1.3  # prefix hit at 100k rules / at 10 rules
VS_PYTRIE = 4.0  # pytrie ns / fastroute ns, prefix hit at 100k
VS_HTTP_ROUTER = 2.0  # http-router ns / fastroute ns, exact hit without host at 100k
BUILD_MS = 100.0  # add 100k rules
MEMORY_MB = 60.0  # a router of 100k rules


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return f"- not checked, the target is for {BIG:,} rules"
    return "OK" if ok else "MISSED"


def _checked(size: int, ok: bool) -> bool | None:
    return ok if size == BIG else None


def _peer_ns(row: MatchRow | None, peer: str) -> float | None:
    cell = row.peers.get(peer) if row else None
    return cell.value if cell is not None and cell.status == OK else None


def compute_targets(results: Results) -> list[Target]:
    """One ``Target`` per goal, for the largest size measured."""
    sizes = sorted({row.size for row in results.match})
    if not sizes:
        return []
    big, small = sizes[-1], sizes[0]
    out: list[Target] = []

    prefix = results.row(big, "prefix_hit")
    if prefix is not None:
        ns = prefix.fastroute_ns
        ok = _checked(big, ns <= PREFIX_NS)
        out.append(Target(
            "prefix_hit_ns",
            f"prefix hit with host @{big:,}: {ns:.1f} ns "
            f"(target <= {PREFIX_NS:g} ns) {_verdict(ok)}",
            ns, PREFIX_NS, ok,
        ))  # fmt: skip

    first = results.row(small, "prefix_hit")
    if prefix is not None and first is not None and big != small:
        ratio = prefix.fastroute_ns / first.fastroute_ns
        ok = _checked(big, ratio <= SCALING) if small == SMALL else None
        out.append(Target(
            "prefix_hit_scaling",
            f"prefix hit @{big:,} / @{small:,} rules: {ratio:.2f}x "
            f"(target <= {SCALING:g}x, {BIG:,} vs {SMALL}) {_verdict(ok)}",
            ratio, SCALING, ok,
        ))  # fmt: skip

    trie_ns = _peer_ns(prefix, "pytrie")
    if prefix is not None:
        if trie_ns is None:
            text = f"vs pytrie, prefix hit @{big:,}: no pytrie figure (target >= {VS_PYTRIE:g}x)"
            out.append(Target("vs_pytrie", text, None, VS_PYTRIE, None))
        else:
            ratio = trie_ns / prefix.fastroute_ns
            ok = _checked(big, ratio >= VS_PYTRIE)
            out.append(Target(
                "vs_pytrie",
                f"vs pytrie, prefix hit @{big:,}: {ratio:.2f}x faster "
                f"(target >= {VS_PYTRIE:g}x) {_verdict(ok)}",
                ratio, VS_PYTRIE, ok,
            ))  # fmt: skip

    nohost = results.row(big, "exact_nohost")
    router_ns = _peer_ns(nohost, "http-router")
    if nohost is not None:
        if router_ns is None:
            cell = nohost.peers.get("http-router")
            why = cell.status if cell else "not run"
            text = (
                f"vs http-router, exact hit without host @{big:,}: {why} "
                f"(target >= {VS_HTTP_ROUTER:g}x)"
            )
            out.append(Target("vs_http_router", text, None, VS_HTTP_ROUTER, None))
        else:
            ratio = router_ns / nohost.fastroute_str_ns
            ok = _checked(big, ratio >= VS_HTTP_ROUTER)
            out.append(Target(
                "vs_http_router",
                f"vs http-router, exact hit without host @{big:,} (both str): {ratio:.2f}x faster "
                f"(target >= {VS_HTTP_ROUTER:g}x) {_verdict(ok)}",
                ratio, VS_HTTP_ROUTER, ok,
            ))  # fmt: skip

    build = next((b for b in results.build if b.size == big), None)
    if build is not None:
        ok = _checked(big, build.fastroute_ms <= BUILD_MS)
        out.append(Target(
            "build_ms",
            f"build @{big:,}: {build.fastroute_ms:.1f} ms (target <= {BUILD_MS:g} ms) "
            f"{_verdict(ok)}",
            build.fastroute_ms, BUILD_MS, ok,
        ))  # fmt: skip

    memory = next((m for m in results.memory if m.size == big), None)
    if memory is not None:
        figures = [memory.fastroute_retained_mb, memory.fastroute_rss_mb or 0.0]
        worst = max(figures)
        ok = _checked(big, worst <= MEMORY_MB)
        rss = "n/a" if memory.fastroute_rss_mb is None else f"{memory.fastroute_rss_mb:.1f} MB"
        out.append(Target(
            "memory_mb",
            f"memory @{big:,}: {worst:.1f} MB, the larger of traced "
            f"{memory.fastroute_retained_mb:.1f} MB and RSS {rss} "
            f"(target <= {MEMORY_MB:g} MB) {_verdict(ok)}",
            worst, MEMORY_MB, ok,
        ))  # fmt: skip
    return out
