"""The proxy benchmark: fastroute next to nginx, HAProxy and an aiohttp proxy, under wrk.

One nginx backend answers every request; nginx (one worker), HAProxy (one thread), a
minimal aiohttp proxy (one process) and fastroute (one worker) serve the same routes in
front of it, on 127.0.0.1. Every proxy is
first checked to return the backend's answer for every route, then loaded in turn with
the same wrk command, which rotates through requests on several hosts and paths, for
each connection count, round after round (interleaved, so a slow minute on a shared
machine hurts all of them). The report gives the median of the rounds and the ratios the
project aims for, from the same run, and each proxy's CPU time per request (all its
processes, from /proc), with the kernel's part of it: what a proxy's own code costs,
apart from the sockets' work that every proxy pays. Then fastroute with ``--workers 2``
against 1, and fastroute while its config is swapped a thousand times under load
(SIGHUP), when the controller has those features.

With ``--baseline PYTHON`` (an interpreter with another build of fastroute installed, e.g.
a virtualenv made from an earlier commit), that build runs beside this one as
"fastroute-baseline", in the same interleaved rounds: a change's cost on the plain routes,
measured side by side, as the median of the rounds' ratios (req/s, and the CPU time per
request of each build's process, read from /proc). With ``--trio-floor``, the bare trio
forwarder of ``bench.fair_cost`` runs beside them too: how far trio's own socket handling
goes on this machine with nothing of a proxy's work on top; with ``--codec-floor``, the same
with fastroute's compiled head parsing and writing on top: what a request loop with no
Python of its own would reach; with ``--pump-floor``, that work with every connection driven
by one task from an epoll of its own (``fastroute.proxy.plain_loop``'s way): what it reaches
without a scheduler turn per wait.

Usage: ``python -m bench.proxy [--rounds 3] [--duration 10] [--connections 64,256]
[--quick] [--skip-aiohttp] [--skip-nginx] [--skip-haproxy] [--trio-floor] [--codec-floor]
[--pump-floor] [--baseline PYTHON]
[--swaps N] [--json FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from types import FrameType

from bench.proxy_peers import (
    ANNOTATED_PROBES,
    AUTH_PROBES,
    CANARY_PROBES,
    PROBES,
    REGEX_PROBES,
    Fastroute,
    Processes,
    check_answers,
    cpu_times,
    fastroute_flags,
    find_tool,
    start_aiohttp,
    start_backend,
    start_fastroute,
    start_haproxy,
    start_nginx_proxy,
    start_trio_floor,
)
from bench.proxy_swaps import Swaps, run_swaps
from bench.wrk import WrkResult, rotation_script, run_wrk


@dataclass
class Summary:
    """One proxy at one connection count: every round, and the medians reported."""

    proxy: str
    connections: int
    rounds: list[WrkResult] = field(default_factory=list)
    # CPU per request, per round, for the proxies whose processes are known: all of it,
    # and the kernel's part of it
    cpu_us: list[float] = field(default_factory=list)
    cpu_kernel_us: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return median(r.rps for r in self.rounds)

    @property
    def p50_ms(self) -> float:
        return median(r.p50_ms for r in self.rounds)

    @property
    def p99_ms(self) -> float:
        return median(r.p99_ms for r in self.rounds)

    @property
    def cpu_us_per_request(self) -> float | None:
        return median(self.cpu_us) if self.cpu_us else None

    @property
    def cpu_kernel_us_per_request(self) -> float | None:
        return median(self.cpu_kernel_us) if self.cpu_kernel_us else None

    @property
    def non_2xx(self) -> int:
        return sum(r.non_2xx for r in self.rounds)

    @property
    def socket_errors(self) -> int:
        return sum(r.socket_errors for r in self.rounds)


@dataclass(frozen=True)
class Target:
    """A ratio from this run and the bound the project sets for it."""

    connections: int
    label: str
    value: float | None  # None: a peer was skipped
    bound: float | None  # None: reported, no target
    at_least: bool = True

    def verdict(self) -> str:
        if self.value is None:
            return "n/a (peer skipped)"
        if self.bound is None:
            return "(no target)"
        if self.value >= self.bound if self.at_least else self.value <= self.bound:
            return "met"
        return f"MISSED by {abs(self.value - self.bound) / self.bound:.0%}"

    def line(self) -> str:
        value = "-" if self.value is None else f"{self.value:.2f}x"
        head = f"c{self.connections:<4} {self.label:<28} {value:>7}"
        if self.bound is None:
            return f"{head}   {'':<14} {self.verdict()}"
        bound = f"{'>=' if self.at_least else '<='} {self.bound:g}x"
        return f"{head}   target {bound:<7} {self.verdict()}"


ANNOTATED = "fastroute-annotated"  # fastroute, measured on its annotated routes
CANARY = "fastroute-canary"  # on the routes with a canary Ingress (by header, 50% weight)
REGEX = "fastroute-regex"  # on the regex paths with a capture rewrite
AUTH = "fastroute-auth"  # on routes with auth-url, their answers cached
CODEC_FLOOR = "codec floor"  # the trio floor with fastroute's compiled codec on top
PUMP_FLOOR = "pump floor"  # the codec floor's work, every connection driven by one task
# the same fastroute process, on other routes than the plain ones
ROUTE_SETS = {
    ANNOTATED: ANNOTATED_PROBES,
    CANARY: CANARY_PROBES,
    REGEX: REGEX_PROBES,
    AUTH: AUTH_PROBES,
}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM too runs the ``finally`` that stops everything


# the Debian package of each tool the bench runs
PACKAGES = {"nginx": "nginx-light", "wrk": "wrk", "haproxy": "haproxy"}


def ensure_tools(tools: Sequence[str] = ("nginx", "wrk", "haproxy")) -> None:
    """nginx, wrk and HAProxy, installed with apt-get when missing and root, else a clear
    exit."""
    missing = [PACKAGES[tool] for tool in tools if find_tool(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(
            f"bench/proxy.py needs {' and '.join(missing)}: install them with "
            f"`apt-get install -y {' '.join(missing)}` (as root), then run it again"
        )
    print(f"installing {', '.join(missing)} with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600)
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    subprocess.run(install, check=True, env=env, timeout=900)


def _versions() -> str:
    nginx = subprocess.run(
        [find_tool("nginx") or "nginx", "-v"], capture_output=True, text=True, timeout=30
    )
    haproxy = "HAProxy (not run)"
    if find_tool("haproxy"):
        shown = subprocess.run(
            [find_tool("haproxy") or "haproxy", "-v"], capture_output=True, text=True, timeout=30
        )
        haproxy = " ".join(shown.stdout.split()[:3])
    try:
        from importlib.metadata import version

        aiohttp = version("aiohttp")
    except ImportError:
        aiohttp = "?"
    git = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return (
        f"fastroute {git.stdout.strip() or '(not a git checkout)'}, "
        f"{nginx.stderr.strip().removeprefix('nginx version: ')}, {haproxy}, aiohttp {aiohttp}, "
        f"Python {platform.python_version()}"
    )


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _measure(
    processes: Processes,
    peers: dict[str, int],
    script: Path,
    connections: Sequence[int],
    rounds: int,
    seconds: int,
    pids: dict[str, int] | None = None,
    scripts: dict[str, Path] | None = None,
) -> dict[tuple[str, int], Summary]:
    """Every peer at every connection count, interleaved round by round.

    For the peers in ``pids``, the CPU time their processes spent per request, too;
    ``scripts`` gives some peers their own wrk script (other URLs on the same process).
    """
    pids = pids or {}
    scripts = scripts or {}
    summaries = {(p, c): Summary(p, c) for c in connections for p in peers}
    for name, port in peers.items():  # warm-up, untimed: pools filled, code paths hot
        run_wrk(
            processes,
            port,
            host=PROBES[0][0],
            connections=max(connections),
            seconds=1,
            script=scripts.get(name, script),
        )
    for round_ in range(1, rounds + 1):
        for c in connections:
            for name, port in peers.items():
                cpu_before = cpu_times(pids[name]) if name in pids else (0.0, 0.0)
                result = run_wrk(
                    processes,
                    port,
                    host=PROBES[0][0],
                    connections=c,
                    seconds=seconds,
                    script=scripts.get(name, script),
                )
                summary = summaries[(name, c)]
                summary.rounds.append(result)
                cpu = ""
                if name in pids and result.requests:
                    user, kernel = (
                        now - before
                        for now, before in zip(cpu_times(pids[name]), cpu_before, strict=True)
                    )
                    summary.cpu_us.append((user + kernel) / result.requests * 1e6)
                    summary.cpu_kernel_us.append(kernel / result.requests * 1e6)
                    cpu = (
                        f", {summary.cpu_us[-1]:.1f} us CPU/request "
                        f"({summary.cpu_kernel_us[-1]:.1f} in the kernel)"
                    )
                _progress(
                    f"round {round_}/{rounds} c{c} {name}: {result.rps:,.0f} req/s, "
                    f"p99 {result.p99_ms:.2f} ms, {result.failed} failed{cpu}"
                )
    return summaries


def _targets(summaries: dict[tuple[str, int], Summary], connections: Sequence[int]) -> list[Target]:
    def ratio(a: str, b: str, c: int, what: str) -> float | None:
        x, y = summaries.get((a, c)), summaries.get((b, c))
        if x is None or y is None:
            return None
        return float(getattr(x, what) / getattr(y, what))

    def cpu(a: str, b: str, c: int) -> float | None:
        """CPU per request, the median of the rounds' ratios (each round ran both)."""
        x, y = summaries.get((a, c)), summaries.get((b, c))
        if x is None or y is None or not x.cpu_us or not y.cpu_us:
            return None
        return median(p / q for p, q in zip(x.cpu_us, y.cpu_us, strict=True))

    def paired(c: int, what: str, other: str = "fastroute-baseline") -> float | None:
        """The median of the rounds' ratios: each round ran the two back to back, so a
        slow minute on a shared machine moves both sides of one ratio alike."""
        a, b = ("fastroute", other) if other == "fastroute-baseline" else (other, "fastroute")
        if what == "cpu":
            return cpu(a, b, c)
        x, y = summaries.get((a, c)), summaries.get((b, c))
        if x is None or y is None:
            return None
        return median(p.rps / q.rps for p, q in zip(x.rounds, y.rounds, strict=True))

    targets = []
    for c in connections:
        targets += [
            Target(c, "fastroute/nginx req/s", ratio("fastroute", "nginx", c, "rps"), 0.5),
            Target(c, "fastroute/nginx p99", ratio("fastroute", "nginx", c, "p99_ms"),
                   2.0 if c == 256 else 3.0, at_least=False),
            Target(c, "fastroute/haproxy req/s", ratio("fastroute", "haproxy", c, "rps"), None),
            Target(c, "fastroute/haproxy p99", ratio("fastroute", "haproxy", c, "p99_ms"), None,
                   at_least=False),
            Target(c, "fastroute/nginx CPU/req", cpu("fastroute", "nginx", c), None,
                   at_least=False),
            Target(c, "trio floor/nginx req/s", ratio("trio floor", "nginx", c, "rps"), None),
            Target(c, "trio floor/nginx CPU/req", cpu("trio floor", "nginx", c), None,
                   at_least=False),
            Target(c, "codec floor/nginx req/s", ratio(CODEC_FLOOR, "nginx", c, "rps"), None),
            Target(c, "codec floor/nginx p99", ratio(CODEC_FLOOR, "nginx", c, "p99_ms"), None,
                   at_least=False),
            Target(c, "codec floor/nginx CPU/req", cpu(CODEC_FLOOR, "nginx", c), None,
                   at_least=False),
            Target(c, "pump floor/nginx req/s", ratio(PUMP_FLOOR, "nginx", c, "rps"), None),
            Target(c, "pump floor/nginx p99", ratio(PUMP_FLOOR, "nginx", c, "p99_ms"), None,
                   at_least=False),
            Target(c, "pump floor/nginx CPU/req", cpu(PUMP_FLOOR, "nginx", c), None,
                   at_least=False),
            Target(c, "fastroute/trio floor req/s", ratio("fastroute", "trio floor", c, "rps"),
                   None),
            Target(c, "fastroute/aiohttp req/s", ratio("fastroute", "aiohttp", c, "rps"), 3.0),
            Target(c, "fastroute/aiohttp p99", ratio("fastroute", "aiohttp", c, "p99_ms"), 0.5,
                   at_least=False),
            Target(c, "fastroute/baseline req/s", paired(c, "rps"), 0.95),
            Target(c, "fastroute/baseline CPU/req", paired(c, "cpu"), 1.05, at_least=False),
            Target(c, "annotated/plain req/s", paired(c, "rps", ANNOTATED), 0.90),
            Target(c, "annotated/plain CPU/req", paired(c, "cpu", ANNOTATED), 1.10,
                   at_least=False),
            Target(c, "canary/plain req/s", paired(c, "rps", CANARY), None),
            Target(c, "canary/plain CPU/req", paired(c, "cpu", CANARY), None, at_least=False),
            Target(c, "regex/plain req/s", paired(c, "rps", REGEX), None),
            Target(c, "regex/plain CPU/req", paired(c, "cpu", REGEX), None, at_least=False),
            Target(c, "auth/plain req/s", paired(c, "rps", AUTH), None),
            Target(c, "auth/plain CPU/req", paired(c, "cpu", AUTH), None, at_least=False),
        ]  # fmt: skip
    optional = (
        "baseline",
        "annotated",
        "canary",
        "regex",
        "auth",
        "trio floor",
        CODEC_FLOOR,
        PUMP_FLOOR,
    )
    return [t for t in targets if t.value is not None or not any(o in t.label for o in optional)]


def _table(summaries: dict[tuple[str, int], Summary]) -> list[str]:
    lines = [
        "| conns | proxy | req/s | req/s range | p50 ms | p99 ms | CPU us/req (kernel) "
        "| non-2xx | socket errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries.values():
        low, high = min(r.rps for r in s.rounds), max(r.rps for r in s.rounds)
        cpu, kernel = s.cpu_us_per_request, s.cpu_kernel_us_per_request
        spent = "-" if cpu is None or kernel is None else f"{cpu:.1f} ({kernel:.1f})"
        lines.append(
            f"| {s.connections} | {s.proxy} | {s.rps:,.0f} | {low:,.0f}-{high:,.0f} "
            f"| {s.p50_ms:.2f} | {s.p99_ms:.2f} | {spent} "
            f"| {s.non_2xx} | {s.socket_errors} |"
        )
    return lines


def _scaling(
    processes: Processes, workdir: Path, backend: int, one: Fastroute, script: Path,
    flags: set[str], connections: int, rounds: int, seconds: int,
) -> tuple[float, float] | str:  # fmt: skip
    """fastroute --workers 1 and --workers 2, interleaved: (rps 1, rps 2) or why not."""
    if "--workers" not in flags:
        return "skipped: the controller has no --workers flag yet"
    two = start_fastroute(processes, workdir, backend, flags=flags, workers=2)
    try:
        check_answers("fastroute --workers 2", two.port)
        peers = {"fastroute --workers 1": one.port, "fastroute --workers 2": two.port}
        summaries = _measure(processes, peers, script, [connections], rounds, seconds)
    finally:
        processes.stop(two.process)
    return summaries[("fastroute --workers 1", connections)].rps, summaries[
        ("fastroute --workers 2", connections)
    ].rps


def _counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers like 64,256: {text!r}") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be positive: {text!r}")
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved (default 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument(
        "--connections",
        type=_counts,
        default=[64, 256],
        help="wrk connection counts, comma-separated (default 64,256)",
    )
    parser.add_argument(
        "--swaps", type=int, default=1000, help="SIGHUPs under load (1000; 0: skip)"
    )
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also measure the fastroute installed for this interpreter, side by side",
    )
    parser.add_argument(
        "--skip-scaling", action="store_true", help="no --workers 2 against --workers 1"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round of 2 s, no scaling, 100 swaps"
    )
    parser.add_argument(
        "--skip-annotated",
        action="store_true",
        help="no runs on the routes with annotations (CORS, an allowlist, timeouts, a header), "
        "with a canary, or with regex paths",
    )
    parser.add_argument("--skip-aiohttp", action="store_true")
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--skip-haproxy", action="store_true")
    parser.add_argument(
        "--trio-floor",
        action="store_true",
        help="also measure a bare trio forwarder (no parsing, no routing): trio's own ceiling",
    )
    parser.add_argument(
        "--codec-floor",
        action="store_true",
        help="also measure the bare trio forwarder with fastroute's compiled head parsing and "
        "writing on top: what a request loop with no Python of its own would reach",
    )
    parser.add_argument(
        "--pump-floor",
        action="store_true",
        help="also measure the codec floor's work with every connection driven by one task "
        "from an epoll of its own: a request loop without a scheduler turn per wait",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    return parser


def run(
    args: argparse.Namespace, tmp: Path, processes: Processes
) -> tuple[list[str], dict[str, object]]:
    """The whole benchmark: the report's lines and the same figures for JSON."""
    flags = fastroute_flags()
    load_before = os.getloadavg()
    backend = start_backend(processes, tmp / "backend")
    peers: dict[str, int] = {}
    pids: dict[str, int] = {}  # the proxies whose CPU time is read
    if not args.skip_nginx:
        peers["nginx"], pids["nginx"] = start_nginx_proxy(processes, tmp / "nginx", backend)
    if not args.skip_haproxy:
        peers["haproxy"], pids["haproxy"] = start_haproxy(processes, tmp / "haproxy", backend)
    if not args.skip_aiohttp:
        peers["aiohttp"], pids["aiohttp"] = start_aiohttp(processes, tmp, backend)
    fast = start_fastroute(processes, tmp / "fastroute", backend, flags=flags, workers=1)
    peers["fastroute"] = fast.port
    pids["fastroute"] = fast.process.pid
    if args.trio_floor:
        peers["trio floor"], pids["trio floor"] = start_trio_floor(
            processes, tmp / "trio-floor", backend
        )
    if args.codec_floor:
        peers[CODEC_FLOOR], pids[CODEC_FLOOR] = start_trio_floor(
            processes, tmp / "codec-floor", backend, kind="codec"
        )
    if args.pump_floor:
        peers[PUMP_FLOOR], pids[PUMP_FLOOR] = start_trio_floor(
            processes, tmp / "pump-floor", backend, kind="pump"
        )
    scripts: dict[str, Path] = {}
    if not args.skip_annotated:
        # the same process, on the routes of Ingresses with annotations
        for name, probes in ROUTE_SETS.items():
            peers[name] = fast.port
            pids[name] = fast.process.pid
            scripts[name] = rotation_script(tmp / f"{name}.lua", probes)
    if args.baseline:
        baseline = start_fastroute(
            processes, tmp / "baseline", backend, flags=flags, workers=1, python=args.baseline
        )
        peers["fastroute-baseline"] = baseline.port
        pids["fastroute-baseline"] = baseline.process.pid
    for name, port in peers.items():
        check_answers(name, port, ROUTE_SETS.get(name, PROBES))
    script = rotation_script(tmp / "rotate.lua", PROBES)
    summaries = _measure(
        processes, peers, script, args.connections, args.rounds, args.duration, pids, scripts
    )
    targets = _targets(summaries, args.connections)
    scaling: tuple[float, float] | str = "skipped (--quick)"
    scale_c = 256 if 256 in args.connections else max(args.connections)
    if args.skip_scaling:
        scaling = "skipped (--skip-scaling)"
    elif not args.quick:
        scaling = _scaling(
            processes, tmp / "fastroute-2", backend, fast, script, flags, scale_c,
            args.rounds, args.duration,
        )  # fmt: skip
    swaps: Swaps | str = "skipped (--swaps 0)"
    if args.swaps:
        swaps = run_swaps(processes, fast, script, args.swaps, args.duration)
    load_after = os.getloadavg()

    hosts = len({host for host, _ in PROBES})
    lines = [
        f"fastroute proxy benchmark, 127.0.0.1: wrk -t1 -d{args.duration}s --latency, "
        f"{len(PROBES)} URLs on {hosts} hosts rotated, {args.rounds} round(s) interleaved",
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; {_versions()}",
        "nginx: 1 worker; HAProxy: 1 thread; aiohttp: 1 process; fastroute: 1 worker; "
        "one nginx backend",
        "req/s, p50, p99: median of the rounds; errors: all rounds added up",
        "",
        *_table(summaries),
        "",
        "ratios (same run) against targets:",
        *(t.line() for t in targets),
        "",
    ]
    if isinstance(scaling, tuple):
        lines.append(
            f"workers: c{scale_c} --workers 1 {scaling[0]:,.0f} req/s, --workers 2 "
            f"{scaling[1]:,.0f} req/s: {scaling[1] / scaling[0]:.2f}x"
        )
    else:
        lines.append(f"workers: {scaling}")
    lines += (
        [f"swaps: {line}" for line in swaps.lines()]
        if isinstance(swaps, Swaps)
        else [f"swaps: {swaps}"]
    )
    data: dict[str, object] = {
        "results": [
            {
                **asdict(s),
                "rps": s.rps,
                "p50_ms": s.p50_ms,
                "p99_ms": s.p99_ms,
                "cpu_us_per_request": s.cpu_us_per_request,
                "cpu_kernel_us_per_request": s.cpu_kernel_us_per_request,
            }
            for s in summaries.values()
        ],
        "targets": [{**asdict(t), "verdict": t.verdict()} for t in targets],
        "scaling": list(scaling) if isinstance(scaling, tuple) else scaling,
        "swaps": asdict(swaps) if isinstance(swaps, Swaps) else swaps,
        "flags": sorted(flags),
    }
    return lines, data


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.swaps = 1, 2, 100
    if args.rounds < 1 or args.duration < 1 or args.swaps < 0:
        _parser().error("--rounds and --duration must be positive, --swaps not negative")
    ensure_tools(("nginx", "wrk") if args.skip_haproxy else ("nginx", "wrk", "haproxy"))
    signal.signal(signal.SIGTERM, _interrupt)
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="fastroute-proxy-bench-") as tmp:
        try:
            lines, data = run(args, Path(tmp), processes)
        except KeyboardInterrupt:
            print("interrupted: everything started was stopped", file=sys.stderr)
            return 130
        finally:
            processes.stop_all()
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
