"""The processes of the proxy benchmark: one backend and the proxies compared in front of it.

Every process starts in a session of its own, so stopping it means signalling its whole
process group (nginx's workers, fastroute's worker processes) and nothing else. All of
them listen on 127.0.0.1, on ports the kernel picked, and each is declared ready only
once it answers over HTTP, polled against a deadline.

Every proxy serves the same routes (``ROUTES``), all to the one backend; ``PROBES`` are
the requests the load rotates through, each of which one route must answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import yaml

__all__ = [
    "ANNOTATED_PROBES",
    "AUTH_PROBES",
    "BACKEND_BODY",
    "CANARY_PROBES",
    "PROBES",
    "REGEX_PROBES",
    "ROUTES",
    "Fastroute",
    "Processes",
    "Route",
    "check_answers",
    "fastroute_flags",
    "find_tool",
    "free_port",
    "get",
    "start_aiohttp",
    "start_backend",
    "start_fastroute",
    "start_haproxy",
    "start_nginx_proxy",
    "write_manifests",
    "write_swap_ingress",
]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BACKEND_BODY = b"hello from backend\n"
READY_DEADLINE = 20.0  # seconds for a process to answer after it starts
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class Route:
    """One Ingress path rule; every route goes to the one backend."""

    host: str
    path: str
    path_type: Literal["Prefix", "Exact"]


ROUTES = (
    Route("www.bench.test", "/", "Prefix"),
    Route("www.bench.test", "/static", "Prefix"),
    Route("api.bench.test", "/v1", "Prefix"),
    Route("api.bench.test", "/v1/health", "Exact"),
    Route("api.bench.test", "/v2/users", "Prefix"),
    Route("shop.bench.test", "/cart", "Exact"),
    Route("shop.bench.test", "/items", "Prefix"),
)
PROBES = (
    ("api.bench.test", "/v1/users/42"),
    ("www.bench.test", "/"),
    ("shop.bench.test", "/cart"),
    ("api.bench.test", "/v1/health"),
    ("www.bench.test", "/static/app.js"),
    ("shop.bench.test", "/items/7?color=red"),
    ("api.bench.test", "/v2/users"),
    ("www.bench.test", "/index.html"),
)
# The same routes again under hosts of an Ingress with the annotations a migrated cluster
# typically carries: what a route pays for its per-route plan, next to a plain one.
ANNOTATED_PREFIX = "policy-"
ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/enable-cors": "true",
    "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8,127.0.0.1/32",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "30",
    "nginx.ingress.kubernetes.io/proxy-connect-timeout": "3",
    "nginx.ingress.kubernetes.io/x-forwarded-prefix": "/shop",
}
ANNOTATED_PROBES = tuple((ANNOTATED_PREFIX + host, path) for host, path in PROBES)
# The same routes under hosts with a canary Ingress on each rule (another Service, the same
# backend): what a route pays for choosing between its main backend and its canary.
CANARY_PREFIX = "canary-"
CANARY_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/canary": "true",
    "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
    "nginx.ingress.kubernetes.io/canary-weight": "50",
}
CANARY_PROBES = tuple((CANARY_PREFIX + host, path) for host, path in PROBES)
# An Ingress with regex paths and a capture rewrite (ingress-nginx's docs example), on a host
# of its own: what a regex route costs. The plain hosts share the config with it, so they
# show what regex support costs a host that has no regex rules.
REGEX_HOST = "regex.bench.test"
REGEX_ANNOTATIONS = {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
REGEX_ROUTES = (
    Route(REGEX_HOST, "/v1(/|$)(.*)", "Prefix"),
    Route(REGEX_HOST, "/v2/users/([0-9]+)(.*)", "Prefix"),
    Route(REGEX_HOST, "/static(/|$)(.*)", "Prefix"),
    Route(REGEX_HOST, "/v1/health", "Exact"),
)
# The same routes under hosts of an Ingress with external auth (auth-url) and a warm auth
# cache: what a protected route pays once its answers are cached. The auth service is the
# backend itself (it answers 200 to anything), asked once per cache key.
AUTH_PREFIX = "auth-"
AUTH_PROBES = tuple((AUTH_PREFIX + host, path) for host, path in PROBES)


def auth_annotations(backend_port: int) -> dict[str, str]:
    return {
        "nginx.ingress.kubernetes.io/auth-url": f"http://127.0.0.1:{backend_port}/auth",
        "nginx.ingress.kubernetes.io/auth-cache-key": "$host",
        "nginx.ingress.kubernetes.io/auth-cache-duration": "200 1h",
    }


REGEX_PROBES = (
    (REGEX_HOST, "/v1/users/42"),
    (REGEX_HOST, "/v2/users/7/orders"),
    (REGEX_HOST, "/static/app.js"),
    (REGEX_HOST, "/v1/health"),
)


def find_tool(name: str) -> str | None:
    """Where ``name`` is installed (nginx is in /usr/sbin, not on every user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def free_port() -> int:
    """A port nobody listens on right now (bind to port 0, read it, close)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Processes:
    """Every process the benchmark started, so that one ``finally`` stops them all."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, subprocess.Popen[str], Path | None]] = {}

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        log: Path | None = None,
        stdout: int | None = None,
        cwd: Path = REPO,
    ) -> subprocess.Popen[str]:
        """Start ``command`` in a new session; stderr goes to ``log`` (or with stdout)."""
        err: IO[str] | int = log.open("w") if log else subprocess.STDOUT
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if stdout is None else stdout,
                stderr=err,
                text=True,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            if not isinstance(err, int):
                err.close()  # the child has its own copy
        self._running[process.pid] = (name, process, log)
        return process

    def stop(self, process: subprocess.Popen[str]) -> None:
        """SIGTERM to the process group, SIGKILL after a grace period; then reap.

        Descendants that left the group (fastroute's workers run in sessions of their
        own) are noted first and killed by PID if they outlive their parent.
        """
        self._running.pop(process.pid, None)
        descendants = _descendants(process.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):  # the group is gone already
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=STOP_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # workers left in the group
            os.killpg(process.pid, signal.SIGKILL)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop_all(self) -> None:
        """Stop everything still running, the last started first."""
        for _, process, _ in reversed(list(self._running.values())):
            self.stop(process)

    def log_tail(self, process: subprocess.Popen[str], lines: int = 20) -> str:
        """The end of what the process wrote to its log, for error messages."""
        entry = self._running.get(process.pid)
        log = entry[2] if entry else None
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _descendants(pid: int) -> list[int]:
    """The PIDs of ``pid``'s children, grandchildren... from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the ")"
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def cpu_times(pid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of ``pid`` and its descendants so far, from /proc (Linux).

    Per request, they say where a proxy's time goes: the kernel's part is mostly the
    sockets' (a send on loopback carries the packet to its reader and wakes it), which
    every proxy pays alike; the user part is the proxy's own code. A busy shared machine
    moves them too, so proxies are compared round by round, not across runs.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    user = kernel = 0
    for one in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        user += int(fields[11])  # utime
        kernel += int(fields[12])  # stime
    return user / ticks, kernel / ticks


def get(port: int, host: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on 127.0.0.1:PORT with a Host header: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _wait_ready(
    processes: Processes,
    process: subprocess.Popen[str],
    name: str,
    port: int,
    *,
    path: str = "/",
    status: int | None = None,
    answers_probes: bool = False,
) -> None:
    """Poll until the process answers HTTP on ``port``; fail at the deadline.

    With ``status``, until ``path`` answers that status. With ``answers_probes``, until
    every probe gets the backend's answer: a proxy may listen before its routes are
    loaded (and each of several workers loads its own).
    """
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode} before answering:\n"
                + processes.log_tail(process)
            )
        try:
            if answers_probes:
                check_answers(name, port)
            else:
                got, _ = get(port, "localhost", path, timeout=1.0)
                if status is not None and got != status:
                    raise RuntimeError(f"{path} answered {got}, not {status}")
            return
        except (OSError, RuntimeError) as error:  # refused, reset, or not routing yet
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not answer on 127.0.0.1:{port} within {READY_DEADLINE:.0f} s "
                    f"({error}):\n" + processes.log_tail(process)
                ) from None
        time.sleep(0.02)  # a poll interval, bounded by the deadline above


def check_answers(name: str, port: int, probes: Sequence[tuple[str, str]] = PROBES) -> None:
    """Every probe must get the backend's answer, or nobody is timed while it 404s."""
    wrong = []
    for host, path in probes:
        status, body = get(port, host, path)
        if status != 200 or body != BACKEND_BODY:
            wrong.append(f"  {host}{path}: {status} {body[:80]!r}")
    if wrong:
        raise RuntimeError(f"{name} does not answer every route:\n" + "\n".join(wrong))


# --- nginx -----------------------------------------------------------------------------------


def _nginx_conf(workdir: Path, http_block: str) -> str:
    """One worker, everything (pid, logs, temp files) under ``workdir``."""
    temps = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
worker_rlimit_nofile 32768;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    default_type text/plain;
    # connections are never recycled during a run, on any side: a steady state
    keepalive_requests 10000000;
    keepalive_timeout 75s;
{temps}
{http_block}
}}
"""


def _start_nginx(
    processes: Processes, workdir: Path, name: str, http_block: str
) -> tuple[int, int]:
    """nginx with ``http_block``: its port, and the PID of its master process."""
    workdir.mkdir(mode=0o755)  # nginx's worker runs as nobody when started by root
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(_nginx_conf(workdir, http_block.replace("PORT", str(port))))
    command = [
        find_tool("nginx") or "nginx",
        "-p",
        str(workdir),
        "-e",
        str(workdir / "error.log"),
        "-c",
        str(config),
    ]
    process = processes.start(name, [*command, "-g", "daemon off;"], log=workdir / "stderr.log")
    _wait_ready(processes, process, name, port)
    return port, process.pid


def start_backend(processes: Processes, workdir: Path) -> int:
    """The backend: nginx answering ``BACKEND_BODY`` on every path; its port."""
    block = """    server {
        listen 127.0.0.1:PORT backlog=4096;
        location / { return 200 "hello from backend\\n"; }
    }"""
    return _start_nginx(processes, workdir, "backend nginx", block)[0]


def _nginx_locations(route: Route) -> list[str]:
    """Ingress path semantics in nginx: Prefix matches whole path elements."""
    if route.path_type == "Exact":
        return [f"= {route.path}"]
    if route.path == "/":
        return ["/"]
    return [f"= {route.path}", f"{route.path}/"]


def start_nginx_proxy(processes: Processes, workdir: Path, backend_port: int) -> tuple[int, int]:
    """nginx as the reverse proxy: a server block per host, locations per route; its port
    and PID (its worker is a child of that process)."""
    servers = ["    server { listen 127.0.0.1:PORT default_server; return 404; }"]
    for host in dict.fromkeys(route.host for route in ROUTES):
        locations = [
            f"        location {where} {{ proxy_pass http://backend; }}"
            for route in ROUTES
            if route.host == host
            for where in _nginx_locations(route)
        ]
        servers.append(
            f"    server {{\n        listen 127.0.0.1:PORT;\n        server_name {host};\n"
            + "\n".join(locations)
            + "\n    }"
        )
    block = f"""    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 512;
        keepalive_requests 10000000;
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
""" + "\n".join(servers)
    return _start_nginx(processes, workdir, "nginx proxy", block)


# --- the trio floor ------------------------------------------------------------------------


def start_trio_floor(
    processes: Processes, workdir: Path, backend_port: int, *, kind: str = "checkpoint"
) -> tuple[int, int]:
    """The bare trio forwarder of ``bench.fair_cost`` (no parsing, no routing, the proxy's
    socket handling): what trio alone reaches on this machine. Its port and PID.

    ``kind``: ``codec``, with fastroute's compiled head parsing and writing on top, and
    nothing else of a proxy's work: what a request loop with no Python of its own would
    reach; ``pump``, the same work with every connection driven by one task from an epoll
    of its own: what that loop reaches without a scheduler turn per wait.
    """
    workdir.mkdir()
    port_file = workdir / "port"
    command = [sys.executable, "-m", "bench.fair_cost", "--serve-bare", kind]
    process = processes.start(
        f"trio floor ({kind})", [*command, str(backend_port), str(port_file)], log=workdir / "log"
    )
    deadline = time.monotonic() + READY_DEADLINE
    while not (port_file.exists() and port_file.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the trio floor did not start:\n" + processes.log_tail(process))
        time.sleep(0.02)  # a poll interval, bounded by the deadline above
    port = int(port_file.read_text())
    _wait_ready(processes, process, "trio floor", port)
    return port, process.pid


# --- HAProxy ---------------------------------------------------------------------------------


def _haproxy_conditions(route: Route, index: int) -> list[str]:
    """Ingress path semantics as HAProxy ACLs named ``r<index>`` (repeated names: any of them)."""
    name = f"r{index}"
    if route.path_type == "Exact":
        return [f"    acl {name} path {route.path}"]
    if route.path == "/":
        return [f"    acl {name} path_beg /"]
    return [f"    acl {name} path {route.path}", f"    acl {name} path_beg {route.path}/"]


def start_haproxy(processes: Processes, workdir: Path, backend_port: int) -> tuple[int, int]:
    """HAProxy as the reverse proxy: one thread, an ACL per route, keep-alive to the backend
    (idle server connections shared by all clients, as nginx's ``keepalive`` pool), no
    logs; its port and PID."""
    workdir.mkdir(mode=0o755)
    port = free_port()
    hosts = list(dict.fromkeys(route.host for route in ROUTES))
    acls = [
        f"    acl h{i} req.hdr(host),field(1,:) -m str -i {host}" for i, host in enumerate(hosts)
    ]
    uses = []
    for index, route in enumerate(ROUTES):
        acls += _haproxy_conditions(route, index)
        uses.append(f"    use_backend backend if h{hosts.index(route.host)} r{index}")
    config = workdir / "haproxy.cfg"
    config.write_text(
        "\n".join(
            [
                "global",
                "    nbthread 1",
                "    maxconn 8192",  # two descriptors each: within a 20,000 limit
                f"    pidfile {workdir / 'haproxy.pid'}",
                "defaults",
                "    mode http",
                "    maxconn 8192",  # two descriptors each: within a 20,000 limit
                "    option http-keep-alive",
                "    timeout connect 5s",
                "    timeout client 75s",
                "    timeout server 75s",
                "    timeout http-keep-alive 75s",
                "frontend proxy",
                f"    bind 127.0.0.1:{port}",
                "    option forwardfor",
                "    http-request set-header X-Forwarded-Proto http",
                *acls,
                *uses,
                "    default_backend not_found",
                "backend not_found",
                "    http-request return status 404",
                "backend backend",
                "    http-reuse always",
                f"    server backend 127.0.0.1:{backend_port}",
                "",
            ]
        )
    )
    command = [find_tool("haproxy") or "haproxy", "-db", "-f", str(config)]
    process = processes.start("haproxy proxy", command, log=workdir / "stderr.log")
    _wait_ready(processes, process, "haproxy proxy", port, status=404)
    return port, process.pid


# --- aiohttp ---------------------------------------------------------------------------------


def start_aiohttp(processes: Processes, workdir: Path, backend_port: int) -> tuple[int, int]:
    """``bench/aiohttp_proxy.py`` in a process of its own; its port and PID."""
    port = free_port()
    routes = [[r.host, r.path, r.path_type] for r in ROUTES]
    command = [sys.executable, str(BENCH / "aiohttp_proxy.py"), "--port", str(port)]
    command += ["--backend-port", str(backend_port), "--routes", json.dumps(routes)]
    process = processes.start("aiohttp proxy", command, log=workdir / "aiohttp.log")
    _wait_ready(processes, process, "aiohttp proxy", port)
    return port, process.pid


# --- fastroute -------------------------------------------------------------------------------


def fastroute_flags() -> set[str]:
    """The flags ``python -m controller serve --help`` lists (newer ones may be missing)."""
    command = [sys.executable, "-m", "controller", "serve", "--help"]
    shown = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=REPO, timeout=60
    )
    return {word.rstrip(",") for word in shown.stdout.split() if word.startswith("--")}


def _manifest(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def _ingress(
    name: str,
    routes: Sequence[Route],
    annotations: dict[str, str] | None = None,
    service: str = "backend",
) -> dict[str, Any]:
    rules = []
    for host in dict.fromkeys(route.host for route in routes):
        paths = [
            {
                "path": route.path,
                "pathType": route.path_type,
                "backend": {"service": {"name": service, "port": {"name": "http"}}},
            }
            for route in routes
            if route.host == host
        ]
        rules.append({"host": host, "http": {"paths": paths}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "bench", "annotations": annotations or {}},
        "spec": {"rules": rules},  # no class: served by --watch-ingress-without-class
    }


def _backend_objects(name: str, backend_port: int) -> list[dict[str, Any]]:
    """Service ``name`` and its EndpointSlice to the backend."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend_port}]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-1",
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend_port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }
    return [service, endpoints]


def write_manifests(folder: Path, backend_port: int) -> None:
    """The Services (the canary's too, to the same backend), their EndpointSlices, and the
    Ingresses of ``ROUTES``: plain, annotated, with a canary, and with external auth."""
    (folder / "backend.yaml").write_text(
        _manifest(
            [
                *_backend_objects("backend", backend_port),
                *_backend_objects("backend-canary", backend_port),
            ]
        )
    )
    annotated = [Route(ANNOTATED_PREFIX + r.host, r.path, r.path_type) for r in ROUTES]
    canaried = [Route(CANARY_PREFIX + r.host, r.path, r.path_type) for r in ROUTES]
    authed = [Route(AUTH_PREFIX + r.host, r.path, r.path_type) for r in ROUTES]
    (folder / "ingress.yaml").write_text(
        _manifest(
            [
                _ingress("bench", ROUTES),
                _ingress("annotated", annotated, ANNOTATIONS),
                _ingress("canary-main", canaried),
                _ingress("canary", canaried, CANARY_ANNOTATIONS, "backend-canary"),
                _ingress("regex", REGEX_ROUTES, REGEX_ANNOTATIONS),
                _ingress("auth", authed, auth_annotations(backend_port)),
            ]
        )
    )
    write_swap_ingress(folder, 0)


def write_swap_ingress(folder: Path, generation: int) -> None:
    """A second Ingress whose paths change with ``generation``, so swapped configs differ.

    It is written next to the manifest and renamed over it, so a reload never reads half
    a file. Its host is not one the load uses, and ``ROUTES`` stay as they are.
    """
    routes = [Route("swap.bench.test", f"/generation/{generation}/{i}", "Prefix") for i in range(4)]
    target = folder / "swap.yaml"
    staging = folder / ".swap.yaml.tmp"  # not a manifest suffix: never read as one
    staging.write_text(_manifest([_ingress("swap", routes)]))
    os.replace(staging, target)


@dataclass(frozen=True)
class Fastroute:
    """A running ``python -m controller serve``."""

    process: subprocess.Popen[str]
    port: int
    status_port: int | None  # None when the controller has no --status-port yet
    manifests: Path


def start_fastroute(
    processes: Processes,
    workdir: Path,
    backend_port: int,
    *,
    flags: set[str],
    workers: int | None = None,
    python: str | None = None,
) -> Fastroute:
    """The controller on generated manifests, with the status listener if it has one.

    ``python``: another interpreter whose installed fastroute to run (a baseline build),
    started outside this source tree so that it imports its own.
    """
    workdir.mkdir()
    manifests = workdir / "manifests"
    manifests.mkdir()
    write_manifests(manifests, backend_port)
    port, https_port = free_port(), free_port()
    command = [python or sys.executable, "-m", "controller", "serve"]
    command += ["--manifests", str(manifests)]
    command += ["--bind", "127.0.0.1", "--http-port", str(port), "--https-port", str(https_port)]
    command += ["--no-watch", "--watch-ingress-without-class", "--log-level", "WARNING"]
    if workers is not None and "--workers" in flags:
        command += ["--workers", str(workers)]
    status_port = free_port() if "--status-port" in flags else None
    if status_port is not None:
        command += ["--status-port", str(status_port)]
    if "--shutdown-grace" in flags:  # idle at the end of a bench: no need to wait long
        command += ["--shutdown-grace", "2"]
    name = f"fastroute ({workers or 1} worker{'s' if (workers or 1) > 1 else ''})"
    if python is not None:
        name += " baseline"
    process = processes.start(
        name, command, log=workdir / "controller.log", cwd=workdir if python else REPO
    )
    if status_port is not None:  # 200 once every worker has loaded its config
        status_name = f"{name} status listener"
        _wait_ready(processes, process, status_name, status_port, path="/readyz", status=200)
    _wait_ready(processes, process, name, port, answers_probes=True)
    return Fastroute(process, port, status_port, manifests)
