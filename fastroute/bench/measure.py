"""Timing and memory measurements, each done one way for every implementation.

Match time is the median over repeats of a tight loop over the request sample,
divided by the number of calls: it includes the loop and the Python call, which
every caller pays too (the loop-overhead reference shows how much that is). The
collector is off while timing, as in ``timeit``. Build time covers only the
``add`` loop, on rule tuples made beforehand. Memory is what tracemalloc sees the
build allocate (the router allocates through ``PyMem_*``), and the change in
resident memory when a fresh process builds the router.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "BuildTiming",
    "CallTiming",
    "Memory",
    "RouterLike",
    "Timed",
    "estimate_call_ns",
    "rss_delta_mb",
    "time_build",
    "time_side_by_side",
    "traced_build_mb",
]

_MB = 1024 * 1024


class RouterLike(Protocol):
    """What ``time_build`` needs: fastroute's ``Router`` and ``PyTrie`` both qualify."""

    def add(self, host: str, path: str, path_type: str, backend: Any, /) -> None: ...


@dataclass(frozen=True)
class CallTiming:
    """The median time of one call, from ``repeats`` loops of ``loops`` passes each."""

    median_ns: float
    min_ns: float
    repeats: int
    loops: int
    calls: int  # calls per pass: the sample size


@dataclass(frozen=True)
class BuildTiming:
    """The median time of the add loop over ``builds`` fresh builds."""

    median_ms: float
    min_ms: float
    builds: int


@dataclass(frozen=True)
class Memory:
    """What building a router allocated, in MB."""

    retained_mb: float  # still allocated with the router alive
    peak_mb: float  # the most allocated at once during the build


@contextmanager
def _gc_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _loop(fn: Callable[..., Any], args: Sequence[Any], arity: int, passes: int) -> int:
    """Nanoseconds for ``passes`` passes of ``fn`` over ``args``; nothing but the calls."""
    if arity == 2:
        start = time.perf_counter_ns()
        for _ in range(passes):
            for a, b in args:
                fn(a, b)
        return time.perf_counter_ns() - start
    start = time.perf_counter_ns()
    for _ in range(passes):
        for a in args:
            fn(a)
    return time.perf_counter_ns() - start


def estimate_call_ns(fn: Callable[..., Any], args: Sequence[Any], arity: int) -> float:
    """A rough ns per call from a growing prefix of ``args``, cheap even for slow peers.

    One untimed call first (a first call may do one-off work), then prefixes of 4, 16,
    64... items until one takes 5 ms or covers the sample: a router that needs
    milliseconds per call is found out after a handful of calls.
    """
    _loop(fn, args[:1], arity, 1)
    count = min(len(args), 4)
    while True:
        elapsed = _loop(fn, args[:count], arity, 1)
        if elapsed >= 5_000_000 or count >= len(args):
            return elapsed / count
        count = min(len(args), count * 4)


@dataclass(frozen=True)
class Timed:
    """One thing to time: ``fn`` called on each item of ``args`` (unpacked when arity 2)."""

    fn: Callable[..., Any]
    args: Sequence[Any]
    arity: int


def time_side_by_side(
    entries: Sequence[Timed], *, repeat: int, min_time: float
) -> list[CallTiming | Exception]:
    """Median ns per call of each entry, timed in turns.

    Each entry gets a number of passes that lasts at least ``min_time`` s; then
    ``repeat`` rounds each run every entry once. Taking turns spreads any slowdown of
    the machine over all entries alike, so the ratios between them hold even when the
    absolute figures wobble. An entry that raises is left out; its exception is returned
    in its place.
    """
    results: list[CallTiming | Exception] = []
    passes: list[int] = []
    with _gc_off():
        for entry in entries:
            if not entry.args:
                raise ValueError("nothing to time: the sample is empty")
            try:
                warm = _loop(entry.fn, entry.args, entry.arity, 1)  # warms caches; calibrates
            except Exception as error:
                results.append(error)
                passes.append(0)
                continue
            results.append(CallTiming(0.0, 0.0, repeat, 0, len(entry.args)))
            passes.append(max(1, math.ceil(min_time * 1e9 / max(warm, 1))))
        totals: list[list[int]] = [[] for _ in entries]
        for _ in range(repeat):
            for entry, count, out in zip(entries, passes, totals, strict=True):
                if count:
                    out.append(_loop(entry.fn, entry.args, entry.arity, count))
    for i, (entry, count, out) in enumerate(zip(entries, passes, totals, strict=True)):
        if count:
            calls = count * len(entry.args)
            results[i] = CallTiming(
                median_ns=statistics.median(out) / calls,
                min_ns=min(out) / calls,
                repeats=repeat,
                loops=count,
                calls=len(entry.args),
            )
    return results


def _build_once(make: Callable[[], RouterLike], rules: Iterable[Sequence[Any]]) -> int:
    router = make()
    add = router.add
    gc.collect()
    start = time.perf_counter_ns()
    for host, path, path_type, backend in rules:
        add(host, path, path_type, backend)
    elapsed = time.perf_counter_ns() - start
    del router, add
    return elapsed


def time_build(
    make: Callable[[], RouterLike],
    rules: Sequence[Sequence[Any]],
    *,
    repeat: int,
    budget: float = 1.0,
) -> BuildTiming:
    """Median ms to ``add`` all ``rules`` to a fresh ``make()``.

    Up to ``repeat`` builds, fewer when they would take longer than ``budget`` s
    (at least three). The collector stays on: a real build runs with it.
    """
    times = [_build_once(make, rules)]
    while len(times) < repeat and (len(times) < 3 or sum(times) < budget * 1e9):
        times.append(_build_once(make, rules))
    return BuildTiming(statistics.median(times) / 1e6, min(times) / 1e6, len(times))


def traced_build_mb(build: Callable[[], object]) -> tuple[Memory, object]:
    """What ``build()`` allocates, as tracemalloc sees it; returns the built object too.

    Only allocations made during the build are counted: rule tuples and backends made
    beforehand are not.
    """
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        built = build()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Memory((current - base) / _MB, (peak - base) / _MB), built


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_child(size: int, seed: int) -> None:
    """In a fresh process: print the resident-memory growth of building ``size`` rules."""
    from fastroute import Router
    from fastroute.bench.workload import make_rules

    rules = make_rules(size, seed)
    gc.collect()
    before = _rss_bytes()
    router = Router()
    for host, path, path_type, backend in rules:
        router.add(host, path, path_type, backend)
    gc.collect()
    after = _rss_bytes()
    print(json.dumps({"rules": len(router), "rss_delta": after - before}))


def rss_delta_mb(size: int, seed: int, *, timeout: float = 120.0) -> float | None:
    """Resident-memory growth of a build in a fresh process, in MB; None if not available.

    Coarse (whole pages, and memory freed earlier in that process may be reused), but
    it also sees allocations that bypass tracemalloc.
    """
    if not Path("/proc/self/statm").exists():
        return None
    import fastroute

    package_parent = str(Path(fastroute.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    code = f"from fastroute.bench.measure import rss_child; rss_child({size}, {seed})"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=True,
        )
        return float(json.loads(done.stdout.strip().splitlines()[-1])["rss_delta"]) / _MB
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return None
