"""The controller at scale: 10,000 Ingresses in the API server emulator, on 127.0.0.1.

The emulator (``tests/kubeapi``, in this process) holds N Ingresses spread over up to 100
namespaces, each with its own host and ``--paths`` Prefix paths (10,000 x 10 = 100,000
rules), a Service and an EndpointSlice per Ingress, and a ``blue`` and a ``green`` Service
per namespace. Every EndpointSlice points at one of two real backends in this process,
which answer ``blue`` or ``green``, so the traffic itself says which Service it reached.

The real controller (``python -m controller``) is started ``--starts`` times and timed from
spawn to ``/readyz`` 200, with its memory at that moment. The last one stays up: then, one
update at a time, a random path of an Ingress is switched between the blue and green
Services and timed from the write to the first request through the proxy that reaches the
new color. The updates cycle through ``--pool`` Ingresses picked at random. Memory is read
after a warm-up, every tenth of the run and after the last update, since a controller that
swaps configs for weeks must not grow.

With ``--publish-address`` the controller publishes every Ingress's status. The emulator
then starts with the statuses already published (as a restarted controller finds them),
unless ``--first-publication``: then none is, the controller writes all N as soon as it
leads, and the updates run while it does; those made before the last status was written
are reported on their own.

Usage: ``python bench/controller_scale.py [--ingresses 10000] [--paths 10] [--updates 1000]
[--starts 3] [--pool 50] [--publish-address ADDR [--first-publication]
[--status-write-rate N]] [--quick]
[--json FILE] [--log-dir DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import math
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median
from types import FrameType
from typing import Any

from bench.proxy_peers import Processes, free_port, get
from tests.kubeapi import KubeAPI  # the API server emulator lives with the tests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

__all__ = [
    "Memory",
    "cluster_objects",
    "ingress",
    "log_problems",
    "main",
    "parse_cpu_seconds",
    "parse_memory",
    "parse_samples",
    "percentile",
    "reloads",
    "series_count",
]

# targets, from the issue
READY_TARGET_S = 5.0
P99_TARGET_MS = 100.0
# RSS growth after the warm-up that counts as none: allocator noise, not a leak; a leak of
# a few KiB per update still shows over 1,000 updates (and in the RSS trend reported)
GROWTH_TOLERANCE, GROWTH_FLOOR_MIB = 0.01, 2.0

NAMESPACES = 100
COLORS = ("blue", "green")
INGRESS_CLASS = "fastroute"
CLASS_CONTROLLER = "fastroute.io/ingress-controller"
PORT_NAME = "http"
SERVICE_PORT = 80

READY_DEADLINE = 120.0  # seconds from spawn to /readyz 200 before the run is abandoned
UPDATE_DEADLINE = 10.0  # seconds for traffic to follow one update; later counts as failed
FAILURES_IN_A_ROW = 5  # this many failed updates in a row end the update phase
WARM_UP = 100  # updates before the "warm" memory reading (fewer in short runs)
# Updates cycle through this many Ingresses (picked at random): the first request to an
# Ingress's Service adds request metric series (about 5 KiB each) for good, which would
# read as a leak of the config swaps if every update touched a new Ingress.
POOL = 50
# Polling the proxy after a write: every POLL_FRACTION of the time elapsed so far, between
# POLL_MIN and POLL_MAX, so a figure is late by at most 2.5 % (or 1 ms) while an update
# that takes seconds does not flood the proxy (and its access log) with requests.
POLL_MIN, POLL_MAX, POLL_FRACTION = 0.001, 0.025, 0.025
REQUEST_TIMEOUT = 5.0


# -- the cluster's objects ------------------------------------------------------------------


def namespace_of(index: int, namespaces: int) -> str:
    """Ingress ``index``'s namespace: Ingresses are dealt round the namespaces."""
    return f"bench-{index % namespaces:02d}"


def host_of(index: int) -> str:
    return f"app-{index}.example.com"


def service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ]
        },
    }


def endpoint_slice(service_name: str, namespace: str, port: int) -> dict[str, Any]:
    """One ready endpoint on 127.0.0.1:``port``, as the EndpointSlice controller writes it."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-x7k2p",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }


def ingress(
    index: int,
    namespaces: int,
    paths: int,
    switched: Mapping[int, str] | None = None,
    published: str | None = None,
) -> dict[str, Any]:
    """Ingress ``app-{index}``: paths ``/p0``... to its own Service ``app-{index}``, except
    those in ``switched`` (path number -> ``blue`` or ``green``), which go to that Service;
    with ``published``, its status already names that address (as a restarted controller
    finds it)."""
    switched = switched or {}
    own = f"app-{index}"
    rules = [
        {
            "path": f"/p{k}",
            "pathType": "Prefix",
            "backend": {
                "service": {"name": switched.get(k, own), "port": {"number": SERVICE_PORT}}
            },
        }
        for k in range(paths)
    ]
    made: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": own, "namespace": namespace_of(index, namespaces)},
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [{"host": host_of(index), "http": {"paths": rules}}],
        },
    }
    if published:
        made["status"] = {"loadBalancer": {"ingress": [{"ip": published}]}}
    return made


def cluster_objects(
    ingresses: int,
    paths: int,
    ports: Mapping[str, int],
    namespaces: int = NAMESPACES,
    published: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Everything the emulator holds: the class; per namespace, the Namespace and the blue
    and green Services with their slices; per Ingress, itself, its Service and its slice,
    which points at the blue backend (so every path answers ``blue`` until switched)."""
    yield {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS},
        "spec": {"controller": CLASS_CONTROLLER},
    }
    for n in range(min(namespaces, ingresses)):
        ns = namespace_of(n, namespaces)
        yield {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        for color in COLORS:
            yield service(color, ns)
            yield endpoint_slice(color, ns, ports[color])
    for i in range(ingresses):
        ns = namespace_of(i, namespaces)
        yield service(f"app-{i}", ns)
        yield endpoint_slice(f"app-{i}", ns, ports["blue"])
        yield ingress(i, namespaces, paths, published=published)


# -- the two backends ---------------------------------------------------------------------


class _ColorServer(ThreadingHTTPServer):
    body: bytes = b""


class _ColorHandler(BaseHTTPRequestHandler):
    """Any GET: 200 with the server's color, keep-alive (HTTP/1.1 with Content-Length)."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection's thread ends after this

    def do_GET(self) -> None:
        assert isinstance(self.server, _ColorServer)
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: thousands of polls would bury the report."""


class Backend:
    """A backend on 127.0.0.1 answering every request with ``{color}\\n``."""

    def __init__(self, color: str) -> None:
        self.color = color
        self.body = f"{color}\n".encode()
        self._server = _ColorServer(("127.0.0.1", 0), _ColorHandler)
        self._server.body = self.body
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"backend-{color}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- reading the controller: HTTP, /metrics, /proc, its log -------------------------------


@dataclass(frozen=True)
class Memory:
    """A process's resident memory now and at its peak, in MiB."""

    rss_mib: float
    hwm_mib: float


def parse_memory(status: str) -> Memory:
    """``VmRSS`` and ``VmHWM`` from the text of ``/proc/PID/status``.

    Raises:
        ValueError: either line is missing (not Linux, or a zombie process).
    """
    found: dict[str, float] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            if unit != "kB":
                raise ValueError(f"unexpected unit in /proc status: {line!r}")
            found[key] = int(number) / 1024
    if len(found) != 2:
        raise ValueError("/proc status has no VmRSS and VmHWM lines")
    return Memory(found["VmRSS"], found["VmHWM"])


def read_memory(pid: int) -> Memory:
    return parse_memory(Path(f"/proc/{pid}/status").read_text())


def parse_cpu_seconds(stat: str) -> float:
    """User plus system CPU seconds from the text of ``/proc/PID/stat``.

    The load on a shared machine stretches wall-clock figures; the CPU a process spent on
    the same work barely moves, so it compares runs made under different loads.
    """
    fields = stat.rpartition(")")[2].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_cpu_seconds(pid: int) -> float:
    return parse_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` in a Prometheus text exposition: (labels, value)."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None or match[1] != name:
            continue
        labels = {
            key: re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), value)
            for key, value in _LABEL.findall(match[2] or "")
        }
        samples.append((labels, float(match[3])))
    return samples


def reloads(metrics_text: str) -> dict[str, int]:
    """``fastroute_config_reloads_total`` by result (``success``, ``failure``)."""
    return {
        labels.get("result", ""): int(value)
        for labels, value in parse_samples(metrics_text, "fastroute_config_reloads_total")
    }


def series_count(metrics_text: str) -> int:
    """How many samples a Prometheus text exposition holds (its lines that are not comments)."""
    return sum(1 for line in metrics_text.splitlines() if line and not line.startswith("#"))


def log_problems(text: str) -> list[str]:
    """The controller's log lines at WARNING and above (its format: date time LEVEL ...)."""
    problems = []
    for line in text.splitlines():
        fields = line.split(maxsplit=3)
        if len(fields) > 2 and fields[2] in ("WARNING", "ERROR", "CRITICAL"):
            problems.append(line)
    return problems


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile: a value that was measured, never interpolated."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class ProxyClient:
    """One keep-alive HTTP/1.1 connection to the proxy, opened again when it breaks."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)

    def get(self, host: str, path: str) -> tuple[int, bytes] | str:
        """(status, body), or what went wrong with the connection."""
        try:
            self._connection.request("GET", path, headers={"Host": host})
            response = self._connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            self._connection.close()  # the next request connects again
            return type(error).__name__

    def close(self) -> None:
        self._connection.close()


# -- the controller process ---------------------------------------------------------------


@dataclass
class Controller:
    """A controller process and the ports it was told to serve on."""

    process: subprocess.Popen[str]
    http_port: int
    status_port: int
    log: Path

    def metrics(self) -> str:
        status, body = get(self.status_port, "127.0.0.1", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.decode()


@dataclass(frozen=True)
class Start:
    """One start of the controller: seconds from spawn to ready, memory at that moment."""

    ready_s: float
    memory: Memory


def start_controller(
    processes: Processes, kubeconfig: Path, log: Path, args: argparse.Namespace
) -> tuple[Controller, Start]:
    """Spawn ``python -m controller`` and wait for ``/readyz`` 200; the time it took."""
    http_port, https_port, status_port = free_port(), free_port(), free_port()
    command = [
        sys.executable, "-m", "controller", "--kubeconfig", str(kubeconfig),
        "--bind", "127.0.0.1", "--http-port", str(http_port), "--https-port", str(https_port),
        "--status-port", str(status_port), "--log-level", args.controller_log_level,
        "--shutdown-grace", "2",  # stopping is not timed; no request is in flight then
    ]  # fmt: skip
    if args.publish_address:
        command += ["--publish-address", args.publish_address]
    if args.status_write_rate is not None:
        command += ["--status-write-rate", str(args.status_write_rate)]
    spawned = time.perf_counter()
    process = processes.start("controller", command, log=log)
    controller = Controller(process, http_port, status_port, log)
    deadline = spawned + READY_DEADLINE
    while True:  # bounded by the deadline
        if process.poll() is not None:
            raise RuntimeError(
                f"the controller exited with {process.returncode} before it was ready:\n"
                + processes.log_tail(process)
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(status_port, "127.0.0.1", "/readyz", timeout=1.0)[0] == 200:
                ready = time.perf_counter() - spawned
                return controller, Start(ready, read_memory(process.pid))
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"the controller was not ready within {READY_DEADLINE:.0f} s:\n"
                + processes.log_tail(process)
            )
        time.sleep(0.01)


def check_serving(
    controller: Controller, backends: Mapping[str, Backend], args: argparse.Namespace
) -> None:
    """The first, a middle and the last Ingress answer blue on their first and last paths:
    nobody is timed against a proxy that 404s."""
    wrong = []
    for i in sorted({0, args.ingresses // 2, args.ingresses - 1}):
        for k in sorted({0, args.paths - 1}):
            answer = get(controller.http_port, host_of(i), f"/p{k}", timeout=REQUEST_TIMEOUT)
            if answer != (200, backends["blue"].body):
                wrong.append(f"  {host_of(i)}/p{k}: {answer!r}")
    if wrong:
        raise RuntimeError("the proxy does not serve the Ingresses:\n" + "\n".join(wrong))


# -- updates --------------------------------------------------------------------------------


@dataclass
class Updates:
    """The update phase: a latency per update seen, and what went wrong otherwise."""

    requested: int
    pool: int
    latencies_ms: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # update -> what the proxy answered
    stray_answers: Counter[str] = field(default_factory=Counter)  # neither color, or errors
    stale_before: int = 0  # the path did not answer its current color before the write
    warm_after: int = 0
    warm: Memory | None = None
    end: Memory | None = None
    rss_trend: list[tuple[int, float]] = field(default_factory=list)  # (updates, MiB)
    series_warm: int | None = None  # samples on /metrics
    series_end: int | None = None
    reloads_before: dict[str, int] = field(default_factory=dict)
    reloads_after: dict[str, int] = field(default_factory=dict)
    stopped_early: str | None = None
    # --first-publication: latencies of the updates written while statuses were still
    # being published, and when the last status was (seconds after the updates began)
    cpu_s: float | None = None  # the controller's CPU seconds over the update phase
    during_publication_ms: list[float] = field(default_factory=list)
    statuses_at_start: int = 0
    statuses_written: int = 0
    publication_done_s: float | None = None

    @property
    def growth_mib(self) -> float | None:
        if self.warm is None or self.end is None:
            return None
        return self.end.rss_mib - self.warm.rss_mib


def _describe(answer: tuple[int, bytes] | str) -> str:
    if isinstance(answer, str):
        return answer
    status, body = answer
    return f"{status} {body[:40]!r}"


def _follow(
    client: ProxyClient,
    host: str,
    path: str,
    want: bytes,
    old: bytes,
    written: float,
    updates: Updates,
) -> float | str:
    """Poll until ``want`` answers: the time seen, or (at the deadline) the last answer."""
    last: tuple[int, bytes] | str = "no request"
    while True:  # bounded by UPDATE_DEADLINE
        answer = client.get(host, path)
        now = time.perf_counter()
        if answer == (200, want):
            return now
        if answer != (200, old):
            updates.stray_answers[_describe(answer)] += 1
        last = answer
        elapsed = now - written
        if elapsed > UPDATE_DEADLINE:
            return _describe(last)
        time.sleep(min(POLL_MAX, max(POLL_MIN, elapsed * POLL_FRACTION)))


class StatusWrites:
    """Counts the status writes the emulator accepted, reading only the new ones each time."""

    def __init__(self, api: KubeAPI) -> None:
        self._api = api
        self._read = 0
        self.count = 0

    def update(self) -> int:
        writes = self._api.writes
        new = writes[self._read :]  # appended under the emulator's lock; a slice is a copy
        self._read += len(new)
        self.count += sum(1 for w in new if w.code == 200 and w.path.endswith("/status"))
        return self.count


def run_updates(
    api: KubeAPI, controller: Controller, backends: Mapping[str, Backend], args: argparse.Namespace
) -> Updates:
    """Switch a random path of the next Ingress of the pool at a time; time the write to
    the first request that reaches the new color."""
    rng = random.Random(args.seed)
    pool = rng.sample(range(args.ingresses), min(args.pool, args.ingresses))
    warm_after = min(WARM_UP, args.updates // 3)
    updates = Updates(requested=args.updates, pool=len(pool), warm_after=warm_after)
    updates.reloads_before = reloads(controller.metrics())
    cpu_before = read_cpu_seconds(controller.process.pid)
    switched: dict[int, dict[int, str]] = {}  # Ingress -> path -> the color Service it names
    client = ProxyClient(controller.http_port)
    in_a_row = 0
    trend_every = max(1, args.updates // 10)
    statuses = StatusWrites(api) if args.first_publication else None
    began = time.perf_counter()
    if statuses is not None:
        updates.statuses_at_start = statuses.update()
    try:
        for n in range(1, args.updates + 1):
            publishing = statuses is not None and statuses.update() < args.ingresses
            if statuses is not None and not publishing and updates.publication_done_s is None:
                updates.publication_done_s = time.perf_counter() - began
            i, k = pool[(n - 1) % len(pool)], rng.randrange(args.paths)
            current = switched.get(i, {}).get(k, "blue")  # its own Service points at blue
            new = "green" if current == "blue" else "blue"
            host, path = host_of(i), f"/p{k}"
            old, want = backends[current].body, backends[new].body
            if client.get(host, path) != (200, old):
                updates.stale_before += 1
            switched[i] = {**switched.get(i, {}), k: new}
            written = time.perf_counter()
            # the status stays, as on a real API server, which ignores it in a PUT
            api.update(ingress(i, NAMESPACES, args.paths, switched[i], args.publish_address))
            seen = _follow(client, host, path, want, old, written, updates)
            if isinstance(seen, float):
                updates.latencies_ms.append((seen - written) * 1000)
                if publishing:
                    updates.during_publication_ms.append((seen - written) * 1000)
                in_a_row = 0
            else:
                updates.failed.append(f"update {n} ({host}{path} to {new}): last answer {seen}")
                in_a_row += 1
            if controller.process.poll() is not None:
                updates.stopped_early = f"the controller exited ({controller.process.returncode})"
                break
            if in_a_row >= FAILURES_IN_A_ROW:
                updates.stopped_early = f"{in_a_row} updates in a row were not followed"
                break
            if n == updates.warm_after:
                updates.warm = read_memory(controller.process.pid)
                updates.series_warm = series_count(controller.metrics())
            if n % trend_every == 0:  # growth from noise: a trend, not just two readings
                updates.rss_trend.append((n, read_memory(controller.process.pid).rss_mib))
            if n % 50 == 0 or n == args.updates:
                _progress(_update_progress(n, updates))
        if updates.stopped_early is None:
            updates.cpu_s = read_cpu_seconds(controller.process.pid) - cpu_before
            updates.end = read_memory(controller.process.pid)
            metrics = controller.metrics()
            updates.reloads_after = reloads(metrics)
            updates.series_end = series_count(metrics)
        if statuses is not None:
            updates.statuses_written = statuses.update()
    finally:
        client.close()
    return updates


def _update_progress(n: int, updates: Updates) -> str:
    done = updates.latencies_ms
    if not done:
        return f"update {n}/{updates.requested}: none followed yet, {len(updates.failed)} failed"
    return (
        f"update {n}/{updates.requested}: p50 {percentile(done, 50):.0f} ms, "
        f"p99 {percentile(done, 99):.0f} ms, max {max(done):.0f} ms, "
        f"{len(updates.failed)} failed"
    )


# -- the report -----------------------------------------------------------------------------


def _row(measure: str, figure: str, target: str = "", ok: bool | None = None) -> str:
    verdict = "" if ok is None else ("met" if ok else "**MISSED**")
    return f"| {measure} | {figure} | {target} | {verdict} |"


def _report(
    args: argparse.Namespace, versions: str, objects: int, starts: list[Start], updates: Updates
) -> list[str]:
    ready = median(s.ready_s for s in starts)
    each = ", ".join(f"{s.ready_s:.2f}" for s in starts)
    rss = median(s.memory.rss_mib for s in starts)
    hwm = median(s.memory.hwm_mib for s in starts)
    rows = [
        _row("time to first ready, median", f"{ready:.2f} s", f"< {READY_TARGET_S:g} s",
             ready < READY_TARGET_S),
        _row("time to first ready, each start", f"{each} s"),
        _row("RSS at ready, median (peak)", f"{rss:.0f} MiB ({hwm:.0f} MiB)"),
    ]  # fmt: skip
    lat = updates.latencies_ms
    done = len(lat) + len(updates.failed)
    if lat:
        p99 = percentile(lat, 99)
        rows += [
            _row("update to traffic, p50", f"{percentile(lat, 50):.1f} ms"),
            _row("update to traffic, p90", f"{percentile(lat, 90):.1f} ms"),
            _row("update to traffic, p99", f"{p99:.1f} ms", f"< {P99_TARGET_MS:g} ms",
                 p99 < P99_TARGET_MS),
            _row("update to traffic, max", f"{max(lat):.1f} ms"),
        ]  # fmt: skip
    if updates.cpu_s is not None and done:
        rows.append(
            _row(
                "controller CPU per update (user + system)", f"{updates.cpu_s * 1000 / done:.1f} ms"
            )
        )
    if args.first_publication:
        rows += _publication_rows(args, updates)
    rows.append(
        _row(f"updates not followed within {UPDATE_DEADLINE:g} s",
             f"{len(updates.failed)} of {done}", "0", not updates.failed and done > 0)
    )  # fmt: skip
    warm, end, growth = updates.warm, updates.end, updates.growth_mib
    if warm is not None and end is not None and growth is not None:
        allowed = max(GROWTH_FLOOR_MIB, GROWTH_TOLERANCE * warm.rss_mib)
        per_update = growth * 1024 / max(1, done - updates.warm_after)
        rows += [
            _row(f"RSS after {updates.warm_after} updates (warm)", f"{warm.rss_mib:.0f} MiB"),
            _row(f"RSS after {done} updates (peak so far)",
                 f"{end.rss_mib:.0f} MiB ({end.hwm_mib:.0f} MiB)"),
            _row("RSS growth after the warm-up",
                 f"{growth:+.1f} MiB ({growth / warm.rss_mib:+.1%}; {per_update:+.1f} KiB/update)",
                 f"none (<= {allowed:.1f} MiB)", growth <= allowed),
        ]  # fmt: skip
    if updates.rss_trend:
        every = updates.rss_trend[0][0]
        trend = ", ".join(f"{rss:.0f}" for _, rss in updates.rss_trend)
        rows.append(_row(f"RSS every {every} updates", f"{trend} MiB"))
    if updates.series_warm is not None and updates.series_end is not None:
        series = f"{updates.series_warm:,} to {updates.series_end:,}"
        rows.append(_row("samples on /metrics, warm to end", series))
    if updates.reloads_after:
        during = {
            result: count - updates.reloads_before.get(result, 0)
            for result, count in updates.reloads_after.items()
        }
        figure = f"{during.get('success', 0)} ok, {during.get('failure', 0)} failed"
        rows.append(_row(f"config reloads during the {done} updates", figure))
    load = os.getloadavg()
    lines = [
        f"fastroute controller scale benchmark: {args.ingresses:,} Ingresses x {args.paths} "
        f"paths = {args.ingresses * args.paths:,} rules in "
        f"{min(NAMESPACES, args.ingresses)} namespaces, {objects:,} objects in the emulator",
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f}; {versions}",
        f"{args.starts} start(s); {args.updates} updates (seed {args.seed}) cycling through "
        f"{min(args.pool, args.ingresses)} Ingresses, one at a time, "
        f"polled through the proxy (latency late by at most {POLL_FRACTION:.1%} or "
        f"{POLL_MIN * 1000:g} ms)",
        "",
        "| measure | figure | target | |",
        "| --- | ---: | --- | --- |",
        *rows,
    ]
    if updates.stopped_early:
        lines.append(f"\nthe update phase stopped early: {updates.stopped_early}")
    if updates.stale_before:
        lines.append(
            f"\n{updates.stale_before} path(s) did not answer their current color before "
            "their update was written"
        )
    if updates.stray_answers:
        lines.append("\nanswers that were neither the old nor the new color while polling:")
        lines += [f"  {count} x {what}" for what, count in updates.stray_answers.most_common()]
    if updates.failed:
        lines.append("\nupdates not followed:")
        lines += [f"  {line}" for line in updates.failed[:10]]
    return lines


def _publication_rows(args: argparse.Namespace, updates: Updates) -> list[str]:
    """The first publication: how far it had gone, and the updates made while it ran."""
    during = updates.during_publication_ms
    done = updates.publication_done_s
    rows = [
        _row("statuses written before the updates began",
             f"{updates.statuses_at_start:,} of {args.ingresses:,}"),
        _row("first publication done, after the updates began",
             f"{done:.1f} s" if done is not None
             else f"not within the run ({updates.statuses_written:,} written)"),
    ]  # fmt: skip
    if during:
        p99 = percentile(during, 99)
        rows += [
            _row(f"update to traffic while publishing, p50 ({len(during)} updates)",
                 f"{percentile(during, 50):.1f} ms"),
            _row("update to traffic while publishing, p99", f"{p99:.1f} ms",
                 f"< {P99_TARGET_MS:g} ms", p99 < P99_TARGET_MS),
            _row("update to traffic while publishing, max", f"{max(during):.1f} ms"),
        ]  # fmt: skip
    return rows


def _log_summary(logs: Sequence[Path]) -> list[str]:
    problems = [line for log in logs for line in log_problems(log.read_text(errors="replace"))]
    lines = [f"controller logs: {len(problems)} line(s) at WARNING or above"]
    lines += [f"  {line[:300]}" for line in problems[:10]]
    return lines


def _versions() -> str:
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return f"fastroute {git.stdout.strip() or '?'}, Python {platform.python_version()}"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the whole run --------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path, logs: Path) -> tuple[list[str], dict[str, Any]]:
    """Backends, emulator, the starts and the updates; the report and its figures."""
    versions = _versions()  # before: a commit made during a long run is not what ran
    processes = Processes()
    api = KubeAPI()
    backends: dict[str, Backend] = {}
    with contextlib.ExitStack() as cleanup:  # unwinds last-in first: controller first
        for color in COLORS:
            backends[color] = Backend(color)
            cleanup.callback(backends[color].stop)
        api.start()
        cleanup.callback(api.stop)
        cleanup.callback(processes.stop_all)
        ports = {color: backend.port for color, backend in backends.items()}
        setup = time.perf_counter()
        published = None if args.first_publication else args.publish_address
        objects = api.create_many(
            cluster_objects(args.ingresses, args.paths, ports, published=published)
        )
        _progress(f"{objects:,} objects in the emulator in {time.perf_counter() - setup:.1f} s")
        # The emulator stands for the API server (a Go program): its own collector's pauses
        # over 30,000 objects, in this process, are not the controller's latency.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
        kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")

        starts: list[Start] = []
        controller_logs: list[Path] = []
        controller: Controller | None = None
        for n in range(1, args.starts + 1):
            if controller is not None:
                processes.stop(controller.process)
            log = logs / f"controller-{n}.log"
            controller_logs.append(log)
            controller, start = start_controller(processes, kubeconfig, log, args)
            starts.append(start)
            _progress(
                f"start {n}/{args.starts}: ready in {start.ready_s:.2f} s, "
                f"RSS {start.memory.rss_mib:.0f} MiB (peak {start.memory.hwm_mib:.0f} MiB)"
            )
        assert controller is not None
        check_serving(controller, backends, args)
        updates = run_updates(api, controller, backends, args)
        processes.stop(controller.process)

    lines = [*_report(args, versions, objects, starts, updates), "", *_log_summary(controller_logs)]
    data: dict[str, Any] = {
        "ingresses": args.ingresses,
        "paths": args.paths,
        "objects": objects,
        "starts": [asdict(s) for s in starts],
        "ready_s_median": median(s.ready_s for s in starts),
        "updates": {
            **asdict(updates),
            "followed": len(updates.latencies_ms),
            "growth_mib": updates.growth_mib,
        },
        "log_problems": [
            p for log in controller_logs for p in log_problems(log.read_text(errors="replace"))
        ],
    }
    return lines, data


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM too runs the ``finally`` blocks that stop everything


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ingresses", type=int, default=10_000, help="Ingresses (10000)")
    parser.add_argument("--paths", type=int, default=10, help="Prefix paths per Ingress (10)")
    parser.add_argument("--updates", type=int, default=1000, help="updates timed (1000)")
    parser.add_argument("--starts", type=int, default=3, help="controller starts timed (3)")
    parser.add_argument("--seed", type=int, default=1, help="which Ingresses are updated (1)")
    parser.add_argument(
        "--pool", type=int, default=POOL, help=f"Ingresses the updates cycle through ({POOL})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200 Ingresses, 30 updates, 1 start"
    )
    parser.add_argument(
        "--controller-log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the controller's --log-level (INFO: with an access log line per poll)",
    )
    parser.add_argument(
        "--publish-address",
        metavar="ADDR",
        help="passed to the controller, which then publishes every Ingress's status "
        "(the emulator starts with it published, as a restarted controller finds it)",
    )
    parser.add_argument(
        "--first-publication",
        action="store_true",
        help="with --publish-address: the emulator starts with no status published, and the "
        "updates are timed while the controller writes them all (one start)",
    )
    parser.add_argument(
        "--status-write-rate",
        type=float,
        metavar="PER_SECOND",
        help="passed to the controller: status writes per second at most (its default if left out)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--log-dir", type=Path, metavar="DIR", help="keep the controller's logs here"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.ingresses, args.updates, args.starts = 200, 30, 1
    if min(args.ingresses, args.paths, args.updates, args.starts, args.pool) < 1:
        parser.error("--ingresses, --paths, --updates, --starts and --pool must be positive")
    if args.first_publication:
        if not args.publish_address:
            parser.error("--first-publication needs --publish-address")
        args.starts = 1  # a second start would find every status published
    if not Path("/proc/self/status").exists():
        parser.error("memory is read from /proc/PID/status: this benchmark needs Linux")
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="fastroute-controller-bench-") as tmp:
        logs = args.log_dir or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        try:
            lines, data = run(args, Path(tmp), logs)
        except KeyboardInterrupt:
            print("interrupted: everything started was stopped", file=sys.stderr)
            return 130
        except RuntimeError as error:  # a process did not come up, or did not route
            print(f"failed: {error}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
