"""Config swaps under load: SIGHUPs to the controller while wrk runs, counted from /metrics.

The controller reloads its manifests on SIGHUP and counts every reload in
``fastroute_config_reloads_total{result}``. Signals sent while a reload runs fold into
one more reload, so each SIGHUP here waits for the counter to show the one before it
swapped in: ``count`` signals are ``count`` swaps. Every tenth signal follows a rewrite
of a manifest, so those configs really differ; the routes under load never change, so
any failed request is the swap's fault.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from bench.proxy_peers import PROBES, Fastroute, Processes, check_answers, get, write_swap_ingress
from bench.wrk import WrkResult, finish_wrk, start_wrk

__all__ = ["Swaps", "reloads", "run_swaps"]

SWAP_BUDGET = 0.04  # seconds of load per swap asked for (a swap takes 15-30 ms under load)
SWAP_LEAD = 0.5  # seconds of load before the first SIGHUP
SWAP_TAIL = 1.5  # seconds of load after the last one
RELOADS_METRIC = "fastroute_config_reloads_total"


@dataclass(frozen=True)
class Swaps:
    """Config swaps under load: what was sent, what the controller counted, what failed."""

    sighups: int
    seconds: float  # from the first SIGHUP to the last
    during: float  # successful reloads counted while wrk ran
    settled: float  # ... and once the controller had caught up
    failed_reloads: float
    load: WrkResult
    alive: bool  # the controller was still running afterwards
    answering: bool  # and every route still answered

    def lines(self) -> list[str]:
        ok = self.load.failed == 0 and self.alive and self.answering
        return [
            f"{self.sighups} SIGHUPs over {self.seconds:.1f} s to the controller "
            f"(a manifest rewritten every 10th), under wrk c64 for {self.load.seconds:.0f} s "
            f"({self.load.rps:,.0f} req/s)",
            f"{RELOADS_METRIC}: +{self.during:g} successful during the load, "
            f"+{self.settled:g} once settled, +{self.failed_reloads:g} failed",
            f"failed requests: {self.load.non_2xx} non-2xx + {self.load.socket_errors} socket "
            f"errors of {self.load.requests:,}; controller "
            f"{'running' if self.alive else 'DEAD'}, routes "
            f"{'answering' if self.answering else 'NOT answering'}   target 0   "
            + ("met" if ok else "MISSED"),
        ]


def reloads(port: int) -> dict[str, float] | None:
    """``fastroute_config_reloads_total`` from /metrics by its labels (``result="success"``).

    None when /metrics does not answer or lacks the counter.
    """
    status, body = get(port, "localhost", "/metrics")
    if status != 200:
        return None
    found: dict[str, float] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        sample = re.match(r"(\w+)(?:\{(.*)\})?\s+(\S+)", line)
        if sample and sample[1] == RELOADS_METRIC:
            labels = sample[2] or ""
            found[labels] = found.get(labels, 0.0) + float(sample[3])
    return found or None


def _total(counts: dict[str, float] | None) -> float:
    return sum(counts.values()) if counts else 0.0


def _successes(counts: dict[str, float] | None) -> float:
    """Reloads that installed a config: the ``success`` label, or all if unlabelled."""
    if not counts:
        return 0.0
    labelled = [v for k, v in counts.items() if "success" in k]
    return sum(labelled) if labelled else _total(counts)


def _settled(fast: Fastroute, port: int, deadline: float) -> dict[str, float] | None:
    """The reload counters once they stop moving (0.5 s unchanged) or at the deadline."""
    last, since = reloads(port), time.monotonic()
    while time.monotonic() < deadline and fast.process.poll() is None:
        time.sleep(0.05)  # a poll interval, bounded by the deadline
        now = reloads(port)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            break
    return last


def run_swaps(
    processes: Processes, fast: Fastroute, script: Path, count: int, duration: int
) -> Swaps | str:
    """``count`` swaps under load, one after another; a reason string if impossible."""
    port = fast.status_port
    if port is None:
        return "skipped: the controller has no --status-port to count reloads"
    first = reloads(port)
    if first is None:
        return f"skipped: /metrics has no {RELOADS_METRIC}"
    # One SIGHUP first, unloaded: a controller without the handler would just exit.
    os.kill(fast.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _total(reloads(port) if fast.process.poll() is None else None) <= _total(first):
        if fast.process.poll() is not None or time.monotonic() > deadline:
            state = "exited" if fast.process.poll() is not None else "did not reload"
            return f"skipped: the controller {state} on SIGHUP"
        time.sleep(0.02)  # a poll interval, bounded by the deadline
    before = reloads(port)
    seconds = max(duration, math.ceil(SWAP_LEAD + count * SWAP_BUDGET + SWAP_TAIL))
    wrk = start_wrk(
        processes, fast.port, host=PROBES[0][0], connections=64, seconds=seconds, script=script
    )
    start = time.monotonic() + SWAP_LEAD
    stop_by = start + seconds - SWAP_LEAD - SWAP_TAIL
    expected = _total(before)
    time.sleep(SWAP_LEAD)
    sent_count = 0
    while sent_count < count and time.monotonic() < stop_by:
        if sent_count % 10 == 0:  # a config that really differs, every tenth swap
            write_swap_ingress(fast.manifests, sent_count // 10 + 1)
        os.kill(fast.process.pid, signal.SIGHUP)
        sent_count += 1
        expected += 1
        while _total(reloads(port)) < expected and time.monotonic() < stop_by:
            time.sleep(0.001)  # a poll interval, bounded by the load's end
    sent = time.monotonic() - start
    load = finish_wrk(processes, wrk, seconds)
    alive = fast.process.poll() is None
    during = reloads(port) if alive else None
    after = _settled(fast, port, time.monotonic() + 30) if alive else None
    try:
        check_answers("fastroute", fast.port)
        answering = True
    except (OSError, RuntimeError):
        answering = False
    return Swaps(
        sighups=sent_count,
        seconds=sent,
        during=_successes(during) - _successes(before),
        settled=_successes(after) - _successes(before),
        failed_reloads=_total(after) - _successes(after) - (_total(before) - _successes(before)),
        load=load,
        alive=alive,
        answering=answering,
    )
