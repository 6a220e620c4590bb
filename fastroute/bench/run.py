"""One benchmark run: for each size, build and check everything, then time it side by side.

Order of work per size: make the workload; time fastroute's build; check that
fastroute routes every sampled request to the expected backend; build each peer and
check its answers against fastroute's on the sample (a peer that routes differently
is reported and not timed); then, scenario by scenario, time fastroute, the
loop-overhead reference and every peer that passed, taking turns; last, memory.
Every step that could take long on a slow peer is foreseen and skipped past a
budget, so no size and peer can hold the run for minutes.
"""

from __future__ import annotations

import gc
import operator
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastroute import Router
from fastroute.bench.machine import machine_info
from fastroute.bench.measure import (
    CallTiming,
    Timed,
    estimate_call_ns,
    rss_delta_mb,
    time_build,
    time_side_by_side,
    traced_build_mb,
)
from fastroute.bench.peers import PEERS, Built, PeerSpec
from fastroute.bench.pytrie import PyTrie
from fastroute.bench.results import (
    OK,
    BuildRow,
    Cell,
    MatchRow,
    MemoryRow,
    PeerInfo,
    Results,
)
from fastroute.bench.targets import compute_targets
from fastroute.bench.workload import Rule, Scenario, Workload, make_workload

__all__ = ["Config", "run"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    """How much to measure and how long anything may take."""

    sizes: tuple[int, ...] = (10, 1000, 10000, 100000)
    repeat: int = 7  # timed repeats per figure; the median is reported
    min_time: float = 0.02  # seconds each timed repeat lasts at least
    seed: int = 1
    sample: int = 1000  # requests per scenario
    scenario_budget: float = 5.0  # seconds a peer may need for one scenario
    build_budget: float = 20.0  # seconds a peer's build may be foreseen to take
    quick: bool = False


@dataclass
class _PeerHistory:
    """What a peer cost at the last size, to foresee the cost at the next one."""

    size: int
    build_s: float
    too_slow: bool  # every scenario it could run was skipped for time


@dataclass
class _SizeRun:
    """What one size has gathered so far: fastroute's answers, rows, and what to time."""

    workload: Workload
    router: Router
    answers: dict[str, list[Any]]
    rows: dict[str, MatchRow]
    build: BuildRow
    to_time: dict[str, list[tuple[str, Timed]]]  # scenario -> (peer, what to call)


def _build_router(rules: Sequence[Rule], default: Any) -> Router:
    router = Router()
    for host, path, path_type, backend in rules:
        router.add(host, path, path_type, backend)
    router.set_default(default)
    return router


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_mismatch(
    items: Sequence[Any], got: Sequence[Any], want: Sequence[Any]
) -> tuple[int, str]:
    """How many answers differ, and the first difference in words."""
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    if not bad:
        return 0, ""
    i = bad[0]
    return len(bad), f"e.g. {_show(items[i])}: got {got[i]!r}, expected {want[i]!r}"


def _time_peer_build(spec: PeerSpec, workload: Workload, repeat: int) -> tuple[list[float], Built]:
    """Seconds per build of ``spec``: up to ``repeat`` builds within about a second."""
    times: list[float] = []
    while True:
        gc.collect()
        start = time.perf_counter()
        built = spec.build(workload)
        times.append(time.perf_counter() - start)
        if len(times) >= repeat or sum(times) > 1.0:
            return times, built
        del built


class _Runner:
    """Holds the configuration and what has been measured so far."""

    def __init__(self, config: Config, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.installed = {p.name for p in PEERS if p.installed()}
        self.history: dict[str, _PeerHistory] = {}
        self.results = Results(
            machine=machine_info(),
            config={
                "sizes": list(config.sizes),
                "repeat": config.repeat,
                "min_time_s": config.min_time,
                "seed": config.seed,
                "sample": config.sample,
                "scenario_budget_s": config.scenario_budget,
                "build_budget_s": config.build_budget,
                "quick": config.quick,
            },
            peers=[PeerInfo(p.name, p.name in self.installed, p.version(), p.note) for p in PEERS],
        )

    def run(self) -> Results:
        for size in self.config.sizes:
            started = time.perf_counter()
            self.run_size(size)
            self.progress(f"{size} rules: done in {time.perf_counter() - started:.1f} s")
        self.results.targets = compute_targets(self.results)
        return self.results

    def run_size(self, size: int) -> None:
        cfg = self.config
        self.progress(f"{size} rules: workload")
        workload = make_workload(size, cfg.seed, cfg.sample)
        self.progress(f"{size} rules: fastroute build and check")
        build = time_build(Router, workload.rules, repeat=cfg.repeat)
        run = _SizeRun(
            workload=workload,
            router=_build_router(workload.rules, workload.default),
            answers={},
            rows={},
            build=BuildRow(size, build.median_ms, build.builds),
            to_time={key: [] for key in workload.scenarios},
        )
        for key, scenario in workload.scenarios.items():
            run.answers[key], run.rows[key] = self.check_fastroute(run.router, scenario, size)
        for spec in PEERS:
            self.prepare_peer(spec, run)
        for key, scenario in workload.scenarios.items():
            self.progress(f"{size} rules: timing {scenario.title}")
            self.time_row(run, scenario, run.rows[key])
        self.results.match.extend(run.rows.values())
        self.results.build.append(run.build)
        del run
        gc.collect()
        self.progress(f"{size} rules: memory")
        self.results.memory.append(self.memory(workload))

    def check_fastroute(
        self, router: Router, scenario: Scenario, size: int
    ) -> tuple[list[Any], MatchRow]:
        """fastroute's answers on the sample (bytes and str) against the expected backends."""
        got = [router.match(h, p) for h, p in scenario.bytes_pairs]
        got_str = [router.match(h, p) for h, p in scenario.str_pairs]
        want = scenario.expected
        wrong, example = _first_mismatch(scenario.bytes_pairs, got, want)
        wrong_str, example_str = _first_mismatch(scenario.str_pairs, got_str, want)
        for count, text, kind in ((wrong, example, "bytes"), (wrong_str, example_str, "str")):
            if count:
                self.results.problems.append(
                    f"fastroute routed {count}/{len(want)} {scenario.title!r} requests "
                    f"({kind}) at {size} rules to the wrong backend, {text}"
                )
        row = MatchRow(
            size=size,
            scenario=scenario.key,
            title=scenario.title,
            requests=len(want),
            distinct=scenario.distinct,
            overhead_ns=0.0,
            fastroute_ns=0.0,
            fastroute_str_ns=0.0,
            fastroute_wrong=wrong + wrong_str,
        )
        return got, row

    def skip_reason(self, spec: PeerSpec, size: int) -> str:
        """Why ``spec`` should not even be built at ``size``, foreseen from the last size.

        A build is foreseen to grow in proportion to the rule count. Matching time is
        not foreseen (a small rule set says little about a big one): the peer is built
        and probed, unless it is a linear scan that was already too slow at a smaller size.
        """
        last = self.history.get(spec.name)
        if last is None or last.size >= size:
            return ""
        build_s = last.build_s * size / last.size
        if build_s > self.config.build_budget:
            return f"build est. {build_s:.0f} s"
        if spec.linear and last.too_slow:
            return f"linear scan; > {self.config.scenario_budget:g} s"
        return ""

    def prepare_peer(self, spec: PeerSpec, run: _SizeRun) -> None:
        """Build ``spec`` and check it on every scenario it can express; queue what passed."""
        size = run.workload.size

        def mark(status: str, detail: str = "", everywhere: bool = False) -> None:
            run.build.peers[spec.name] = Cell(status, detail=detail)
            for key, row in run.rows.items():
                shown = everywhere or key in spec.scenarios
                row.peers[spec.name] = Cell(status if shown else "n/a", detail=detail)

        if spec.name not in self.installed:
            mark("not installed", everywhere=True)
            return
        reason = self.skip_reason(spec, size)
        if reason:
            self.progress(f"{size} rules: {spec.name} skipped ({reason})")
            mark("skipped", reason)
            return
        self.progress(f"{size} rules: {spec.name} build and check")
        try:
            times, built = _time_peer_build(spec, run.workload, self.config.repeat)
        except Exception as error:  # a peer that cannot take the rules is reported, not fatal
            mark("error", f"build failed: {type(error).__name__}: {error}")
            self.results.problems.append(f"{spec.name} could not build {size} rules: {error}")
            return
        build_s = statistics.median(times)
        run.build.peers[spec.name] = Cell(OK, build_s * 1e3, detail=f"{len(times)} builds")
        statuses = []
        for key, row in run.rows.items():
            if key not in spec.scenarios:
                row.peers[spec.name] = Cell("n/a")
                continue
            scenario = run.workload.scenarios[key]
            cell, args = self.check_peer(spec, built, size, scenario, run.answers[key])
            row.peers[spec.name] = cell
            statuses.append(cell.status)
            if args is not None:
                run.to_time[key].append((spec.name, Timed(built.fn, args, built.arity)))
        too_slow = bool(statuses) and all(status == "skipped" for status in statuses)
        self.history[spec.name] = _PeerHistory(size, build_s, too_slow)

    def check_peer(
        self, spec: PeerSpec, built: Built, size: int, scenario: Scenario, want: list[Any]
    ) -> tuple[Cell, Sequence[Any] | None]:
        """Check one peer on one scenario; the arguments to time it with if it passed."""
        args = built.args(scenario)
        try:
            estimate = estimate_call_ns(built.answer, args, 1)
            calls = len(args) * (self.config.repeat + 2)
            if estimate * calls / 1e9 > self.config.scenario_budget:
                kind = "linear scan; " if spec.linear else ""
                return Cell("skipped", detail=f"{kind}> {self.config.scenario_budget:g} s"), None
            got = [built.answer(item) for item in args]
        except Exception as error:  # a peer that breaks is reported, not fatal
            return self.peer_error(spec, scenario, size, error), None
        wrong, example = _first_mismatch(scenario.str_pairs, got, want)
        if wrong:
            self.results.problems.append(
                f"{spec.name} disagrees with fastroute on {wrong}/{len(want)} "
                f"{scenario.title!r} requests at {size} rules, {example}; not compared"
            )
            return Cell("disagrees", detail=example, checked=len(want), mismatches=wrong), None
        return Cell("checked", checked=len(want)), args

    def peer_error(self, spec: PeerSpec, scenario: Scenario, size: int, error: Exception) -> Cell:
        detail = f"{type(error).__name__}: {error}"
        self.results.problems.append(
            f"{spec.name} failed on {scenario.title!r} at {size} rules: {detail}"
        )
        return Cell("error", detail=detail)

    def time_row(self, run: _SizeRun, scenario: Scenario, row: MatchRow) -> None:
        """Time fastroute, the overhead reference and the checked peers, taking turns."""
        match = run.router.match
        peers = run.to_time[scenario.key]
        entries = [
            Timed(operator.is_, scenario.bytes_pairs, 2),
            Timed(match, scenario.bytes_pairs, 2),
            Timed(match, scenario.str_pairs, 2),
            *(timed for _, timed in peers),
        ]
        timings = time_side_by_side(
            entries, repeat=self.config.repeat, min_time=self.config.min_time
        )
        ours = [t for t in timings[:3] if isinstance(t, CallTiming)]
        if len(ours) < 3:
            raise RuntimeError(f"fastroute failed while timed: {timings[:3]}")
        row.overhead_ns, row.fastroute_ns, row.fastroute_str_ns = (t.median_ns for t in ours)
        for (name, _), timing in zip(peers, timings[3:], strict=True):
            cell = row.peers[name]
            if isinstance(timing, Exception):
                spec = next(p for p in PEERS if p.name == name)
                row.peers[name] = self.peer_error(spec, scenario, row.size, timing)
            else:
                cell.status, cell.value = OK, timing.median_ns

    def memory(self, workload: Workload) -> MemoryRow:
        rules = workload.rules
        fast, router = traced_build_mb(lambda: _build_router(rules, None))
        del router

        def build_trie() -> PyTrie:
            trie = PyTrie(keys=bytes)
            for rule in rules:
                trie.add(*rule)
            return trie

        trie_mem, trie = traced_build_mb(build_trie)
        del trie
        rss = rss_delta_mb(workload.size, self.config.seed)
        return MemoryRow(
            size=workload.size,
            fastroute_retained_mb=fast.retained_mb,
            fastroute_peak_mb=fast.peak_mb,
            fastroute_rss_mb=rss,
            pytrie_retained_mb=trie_mem.retained_mb,
            pytrie_peak_mb=trie_mem.peak_mb,
        )


def run(config: Config, progress: Progress) -> Results:
    """Measure everything ``config`` asks for; ``progress`` hears what is being done."""
    return _Runner(config, progress).run()
