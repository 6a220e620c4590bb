"""What one request costs the proxy at many connections: instructions, system calls,
scheduler turns, counted over a fixed number of requests, so a busy machine does not
change the figures.

The proxy (the real ``Proxy`` on the bench's manifests) runs in a process of its own,
in front of the bench's nginx backend; a client in this process keeps N keep-alive
connections busy, each sending its next request as soon as its answer is in (``wrk``'s
closed loop). After a warm-up on the same connections, a window of a fixed number of
requests is measured in one of three ways:

- ``instructions``: the proxy runs under ``valgrind --tool=callgrind``; its counters are
  zeroed before the window and dumped after it (``callgrind_control``): user-space
  instructions per request.
- ``syscalls``: ``strace -c -f`` is attached to the proxy for the window: system calls per
  request, by name.
- ``turns``: a trio instrument in the proxy counts task steps (scheduler turns), waits for
  I/O (``epoll_wait``) and garbage collections in the window.

Under valgrind or strace the proxy is the slowest party by far, so the client and the
backend have always answered by the time it looks: the saturated regime of a wrk run,
where the proxy's single core sets the pace.

Usage: ``python -m bench.fair_cost [--connections 64,256] [--requests 5000]
[--measure instructions,syscalls,turns] [--python PYTHON]``. ``--python``: an interpreter
with another build installed (the one before a change); ``--serve`` is what the proxy
process runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

from bench.proxy_peers import (  # noqa: E402
    BACKEND_BODY,
    PROBES,
    Processes,
    start_backend,
    write_manifests,
)

WARM_UP = 4  # requests per connection before the window
START_DEADLINE = 300.0  # seconds for the proxy to listen (valgrind starts slowly)


# --- the proxy process -------------------------------------------------------------------------


class _Counts:
    """A trio instrument: task steps and I/O waits; and garbage collections, by generation."""

    def __init__(self) -> None:
        self.steps = 0
        self.io_waits = 0
        self.collections = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]  # the longest pause of each generation (wall clock)
        self._began = 0.0
        gc.callbacks.append(self._collected)

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        generation = info["generation"]
        if phase == "start":
            self.collections[generation] += 1
            self._began = time.perf_counter()
        else:
            took = (time.perf_counter() - self._began) * 1e3
            self.longest_ms[generation] = max(self.longest_ms[generation], took)

    def before_task_step(self, task: object) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1

    def zero(self) -> None:
        self.steps = self.io_waits = 0
        self.collections = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "io_waits": self.io_waits,
            "collections": self.collections,
            "longest_ms": self.longest_ms,
            "tracked_objects": len(gc.get_objects()),
        }


def serve(backend_port: int, port_file: Path, counts_file: Path | None) -> None:
    """Run the proxy on the bench's manifests; write its port to ``port_file``. With
    ``counts_file``: SIGUSR1 zeroes the instrument's counts, SIGUSR2 writes them there."""
    import trio
    import trio.abc

    from controller.manifests import load_manifests
    from fastroute.ingress import ClassPolicy, build_config
    from fastroute.proxy.metrics import Metrics
    from fastroute.proxy.server import Proxy

    folder = Path(tempfile.mkdtemp(prefix="fastroute-fair-cost-"))
    write_manifests(folder, backend_port)
    objects = load_manifests([folder]).objects
    shutil.rmtree(folder)
    # with request metrics, as the controller runs it
    config = build_config(objects, classes=ClassPolicy(adopt_classless=True))
    proxy = Proxy(config, metrics=Metrics())
    counts = _Counts()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            port_file.write_text(str(port))
            if counts_file is not None:
                await _answer_signals(counts, counts_file)

    instruments: list[trio.abc.Instrument] = []
    if counts_file is not None:
        instruments.append(counts)  # type: ignore[arg-type]
    trio.run(main, instruments=instruments)


def serve_bare(backend_port: int, port_file: Path, counts_file: Path | None, kind: str) -> None:
    """A measuring stick, not a proxy: the least a trio task per connection can do to
    forward these requests. No parsing beyond finding the end of a head and the backend's
    Content-Length, no routing, no timeouts, one upstream connection per client
    connection; sockets driven as ``fastroute.proxy.channel`` drives them (a checkpoint,
    then a try, before each reply; ``wait-first``: a wait for readiness instead).
    What it costs per request is trio's share of the proxy's: two waits, two scheduler
    turns, the system calls.

    ``codec``: the same, plus the work of fastroute's that is compiled already: the request
    head parsed and written anew for the upstream (``fastroute._http``), a plan found by
    target, Host and scheme in a dict, the answer's head parsed and written anew for the
    client. What a request loop with nothing of its own in Python would cost, about.

    ``pump``: the codec floor's work, with every connection driven by one task that waits
    on an epoll of its own (each socket registered once, edge-triggered) and serves the
    ready ones in the order the kernel reports them, as ``fastroute.proxy.plain_loop``
    does: what that costs without a scheduler turn per wait."""
    import socket as sockets

    import trio
    import trio.abc
    from trio.lowlevel import checkpoint, wait_readable

    from fastroute._http import parse_request, parse_response

    counts = _Counts()
    wait_first = kind == "wait-first"
    codec = kind == "codec"
    plans: dict[tuple[bytes, bytes | None, str], bytes] = {}  # the upstream's target

    async def reply(sock: sockets.socket) -> bytes:
        if wait_first:
            await wait_readable(sock)
        else:
            await checkpoint()
        while True:
            try:
                return sock.recv(65536)
            except BlockingIOError:
                await wait_readable(sock)

    async def forward(downstream: sockets.socket) -> None:
        upstream = sockets.create_connection(("127.0.0.1", backend_port))
        upstream.setblocking(False)
        downstream.setblocking(False)
        try:
            while True:
                data = await reply(downstream)
                if not data:
                    return
                if codec:
                    head = parse_request(data, 65536)
                    assert head is not None  # the client's requests come whole
                    key = (head.target, head.host, "http")
                    target = plans.get(key) or plans.setdefault(key, head.target)
                    data = head.forward_head(target, b"127.0.0.1", b"http", b"80", False)
                upstream.send(data)
                answer = await reply(upstream)
                if codec:
                    response = parse_response(answer, 65536, False)
                    while response is None or len(answer) < response.size + response.content_length:
                        answer += await reply(upstream)
                        response = parse_response(answer, 65536, False)
                    downstream.send(response.client_head(False) + answer[response.size :])
                    continue
                head_end = answer.index(b"\r\n\r\n") + 4
                length = int(answer.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                while len(answer) < head_end + length:
                    answer += await reply(upstream)
                downstream.send(answer)
        except OSError:  # the client left (wrk stopping): this connection only
            pass
        finally:
            upstream.close()
            downstream.close()

    # ``pump``: one task drives every connection from an epoll of its own (edge-triggered,
    # each socket registered once), in the order the kernel reports them ready
    pump = select.epoll() if kind == "pump" else None
    pairs: dict[int, tuple[list[Any], bool]] = {}  # fd: ([client, upstream, answer], client?)

    def client_ready(pair: list[Any]) -> None:
        client, upstream, _ = pair
        try:
            data = client.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            for sock in (client, upstream):
                pairs.pop(sock.fileno(), None)
                sock.close()
            return
        head = parse_request(data, 65536)
        assert head is not None  # the client's requests come whole
        key = (head.target, head.host, "http")
        target = plans.get(key) or plans.setdefault(key, head.target)
        upstream.send(head.forward_head(target, b"127.0.0.1", b"http", b"80", False))

    def upstream_ready(pair: list[Any]) -> None:
        try:
            answer = pair[2] + pair[1].recv(65536)
        except BlockingIOError:
            return
        response = parse_response(answer, 65536, False)
        if response is None or len(answer) < response.size + response.content_length:
            pair[2] = answer
            return
        pair[2] = b""
        pair[0].send(response.client_head(False) + answer[response.size :])

    async def run_pump() -> None:
        assert pump is not None
        while True:
            await wait_readable(pump.fileno())
            for fd, _ in pump.poll(0):
                found = pairs.get(fd)
                if found is not None:
                    (client_ready if found[1] else upstream_ready)(found[0])

    def pumped(downstream: sockets.socket) -> None:
        assert pump is not None
        upstream = sockets.create_connection(("127.0.0.1", backend_port))
        pair = [downstream, upstream, b""]
        for sock, is_client in ((downstream, True), (upstream, False)):
            sock.setblocking(False)
            pairs[sock.fileno()] = (pair, is_client)
            pump.register(sock.fileno(), select.EPOLLIN | select.EPOLLET)

    async def main() -> None:
        listener = sockets.create_server(("127.0.0.1", 0), backlog=4096)
        listener.setblocking(False)
        port_file.write_text(str(listener.getsockname()[1]))
        async with trio.open_nursery() as nursery:
            if counts_file is not None:
                nursery.start_soon(_answer_signals, counts, counts_file)
            if pump is not None:
                nursery.start_soon(run_pump)
            while True:
                await wait_readable(listener)
                while True:  # every connection waiting, as a server's accept loop does
                    try:
                        accepted, _ = listener.accept()
                    except BlockingIOError:
                        break
                    if pump is not None:
                        pumped(accepted)
                    else:
                        nursery.start_soon(forward, accepted)

    instruments: list[trio.abc.Instrument] = []
    if counts_file is not None:
        instruments.append(counts)  # type: ignore[arg-type]
    trio.run(main, instruments=instruments)


async def _answer_signals(counts: _Counts, counts_file: Path) -> None:
    """SIGUSR1 zeroes ``counts``, SIGUSR2 writes them to ``counts_file``."""
    import trio

    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1:
                counts.zero()
            else:
                counts_file.write_text(json.dumps(counts.as_dict()))


FLOOR_TASKS = 64  # tasks taking turns, so one loop of the scheduler serves many


def trio_floor(kind: str, count: int) -> None:
    """``count`` scheduler round trips shared by ``FLOOR_TASKS`` tasks: ``checkpoint``s,
    or waits for sockets that are always readable (``wait_readable``: an epoll_ctl to
    re-arm the socket, its share of an epoll_wait, and the round trip)."""
    import trio
    from trio.lowlevel import checkpoint, wait_readable

    async def turns(left: socket.socket) -> None:
        for _ in range(count // FLOOR_TASKS):
            if kind == "checkpoint":
                await checkpoint()
            else:
                await wait_readable(left)

    async def main() -> None:
        pairs = [socket.socketpair() for _ in range(FLOOR_TASKS)]
        for _, right in pairs:
            right.send(b"x")  # never read: the left end stays readable
        async with trio.open_nursery() as nursery:
            for left, _ in pairs:
                nursery.start_soon(turns, left)

    trio.run(main)


def _find_the_bench_in(folder: Path) -> None:
    """``folder`` (a child's working directory) gets ``bench``: ``-m`` finds it there, while a
    baseline interpreter still imports its own fastroute, not this checkout's."""
    link = folder / "bench"
    if not link.exists():
        link.symlink_to(BENCH)


def _floor_instructions(kind: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out"]
        command += [sys.executable, "-m", "bench.fair_cost", "--one-floor", kind, str(count)]
        _find_the_bench_in(Path(folder))
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=folder)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found[1])


# --- the client --------------------------------------------------------------------------------


class Client:
    """``connections`` keep-alive connections, each sending its next request when its
    answer is in, rotating through ``PROBES``."""

    def __init__(self, port: int, connections: int) -> None:
        self.requests = [
            b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode())
            for host, path in PROBES
        ]
        self.selector = selectors.DefaultSelector()
        self.started = False
        self.sockets = []
        for i in range(connections):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            self.sockets.append(sock)
            self.selector.register(sock, selectors.EVENT_READ, [i, b""])

    def run(self, count: int, deadline: float) -> None:
        """Until ``count`` answers are in (the last ones may still be in flight then, so
        the next ``run`` finishes them first: no request is counted twice or lost)."""
        done = 0
        sent = 0
        if not self.started:
            self.started = True
            for key in self.selector.get_map().values():
                self._send(key.fileobj, key.data)  # type: ignore[arg-type]
            sent = len(self.sockets)
        while done < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {count} answers before the deadline")
            for key, _ in self.selector.select(timeout=1.0):
                sock, state = key.fileobj, key.data
                data = sock.recv(65536)  # type: ignore[union-attr]
                if not data:
                    raise RuntimeError("the proxy closed a connection")
                state[1] += data
                if state[1].endswith(BACKEND_BODY):
                    if not state[1].startswith(b"HTTP/1.1 200 "):
                        raise RuntimeError(f"unexpected answer: {state[1][:200]!r}")
                    state[1] = b""
                    done += 1
                    self._send(sock, state)  # type: ignore[arg-type]
                    sent += 1

    def _send(self, sock: socket.socket, state: list[Any]) -> None:
        state[0] += 1
        sock.sendall(self.requests[state[0] % len(self.requests)])

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.selector.close()


# --- measuring ---------------------------------------------------------------------------------


def _wait_for_port(port_file: Path, process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {process.returncode}")
        if port_file.exists() and port_file.read_text():
            return int(port_file.read_text())
        time.sleep(0.2)  # a poll interval, bounded by the deadline
    raise RuntimeError(f"the proxy did not listen within {START_DEADLINE:.0f} s")


def _wait_for_file(path: Path, seconds: float = 120.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            time.sleep(0.5)  # let the writer finish
            return path.read_text()
        time.sleep(0.2)
    raise RuntimeError(f"nothing written to {path} within {seconds:.0f} s")


def measure(
    how: str,
    processes: Processes,
    workdir: Path,
    backend: int,
    connections: int,
    requests: int,
    keep: Path | None = None,
    python: str = sys.executable,
    bare: str | None = None,
) -> dict[str, Any]:
    """One window of ``requests`` requests over ``connections`` connections, measured ``how``."""
    port_file = workdir / f"port-{how}-{connections}"
    counts_file = workdir / f"counts-{connections}" if how == "turns" else None
    command = [python, "-m", "bench.fair_cost"]
    _find_the_bench_in(workdir)
    if bare:
        command += ["--serve-bare", bare, str(backend), str(port_file)]
    else:
        command += ["--serve", str(backend), str(port_file)]
    if counts_file is not None:
        command += ["--counts", str(counts_file)]
    for old in (port_file, counts_file, *workdir.glob(f"callgrind-{connections}.out*")):
        if old is not None:
            old.unlink(missing_ok=True)  # from an earlier window at this count
    callgrind_out = workdir / f"callgrind-{connections}.out"
    if how == "instructions":
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={callgrind_out}",
            *command,
        ]
    log = workdir / f"proxy-{how}.log"
    proxy = processes.start(f"proxy ({how})", command, log=log, cwd=workdir)
    client: Client | None = None
    tracer: subprocess.Popen[str] | None = None
    try:
        port = _wait_for_port(port_file, proxy)
        client = Client(port, connections)
        client.run(WARM_UP * connections, time.monotonic() + START_DEADLINE)
        result: dict[str, Any] = {"how": how, "connections": connections, "requests": requests}
        if bare:
            result["proxy"] = f"bare trio forwarder ({bare})"
        if how == "instructions":
            subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, timeout=120,
                           capture_output=True)  # fmt: skip
            client.run(requests, time.monotonic() + 1800)
            subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, timeout=120,
                           capture_output=True)  # fmt: skip
            dumps = sorted(workdir.glob(f"callgrind-{connections}.out.*"))
            text = _wait_for_file(dumps[-1]) if dumps else ""
            found = re.search(r"^summary:\s+(\d+)", text, re.MULTILINE)
            if found is None:
                raise RuntimeError("no summary in the callgrind dump")
            result["instructions_per_request"] = int(found[1]) / requests
            if keep is not None:  # for callgrind_annotate
                shutil.copy(dumps[-1], keep / f"callgrind-c{connections}.out")
        elif how == "syscalls":
            trace = workdir / f"strace-{connections}.txt"
            tracer = processes.start(
                "strace", ["strace", "-c", "-f", "-o", str(trace), "-p", str(proxy.pid)]
            )
            time.sleep(1.0)  # strace attaches to every thread
            client.run(requests, time.monotonic() + 600)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=60)
            calls = _strace_calls(_wait_for_file(trace))
            result["syscalls_per_request"] = {
                name: round(n / requests, 3) for name, n in calls.items() if n / requests >= 0.01
            }
            result["syscalls_per_request_total"] = round(sum(calls.values()) / requests, 3)
        else:
            assert counts_file is not None
            os.kill(proxy.pid, signal.SIGUSR1)
            time.sleep(0.5)
            client.run(requests, time.monotonic() + 600)
            os.kill(proxy.pid, signal.SIGUSR2)
            counts = json.loads(_wait_for_file(counts_file))
            result["task_steps_per_request"] = counts["steps"] / requests
            result["io_waits_per_request"] = counts["io_waits"] / requests
            result["collections_per_1000_requests"] = [
                round(n * 1000 / requests, 2) for n in counts["collections"]
            ]
            result["longest_collection_ms"] = [round(ms, 2) for ms in counts["longest_ms"]]
            result["tracked_objects"] = counts["tracked_objects"]
        return result
    finally:
        if client is not None:
            client.close()
        if tracer is not None and tracer.poll() is None:
            processes.stop(tracer)
        processes.stop(proxy)


def _strace_calls(text: str) -> dict[str, int]:
    """Calls by name from ``strace -c``'s table (the errors column may be empty)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = int(fields[3])
    return calls


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", default="64,256")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--measure", default="instructions,syscalls,turns")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="a folder to copy the callgrind dumps to")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter (and its build) the proxy runs"
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="a folder holding another copy of fastroute/ and controller/ (built) to measure",
    )
    parser.add_argument(
        "--bare",
        choices=("checkpoint", "wait-first", "codec", "pump"),
        help="measure the bare trio forwarder instead, its replies read as channel.py does "
        "(checkpoint) or after a wait for readiness (wait-first), or as channel.py does "
        "with fastroute's compiled head parsing and writing on top (codec), or that work "
        "with every connection driven by one task from an epoll of its own (pump)",
    )
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="instructions of one trio checkpoint and of one wait_readable on a ready socket",
    )
    parser.add_argument("--one-floor", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.counts)
        return 0
    if args.serve_bare:
        serve_bare(
            int(args.serve_bare[1]), Path(args.serve_bare[2]), args.counts, args.serve_bare[0]
        )
        return 0
    if args.one_floor:
        trio_floor(args.one_floor[0], int(args.one_floor[1]))
        return 0
    if args.floor:
        for kind in ("checkpoint", "wait_readable"):
            low, high = (_floor_instructions(kind, n) for n in (20_000, 60_000))
            print(f"{kind}: {(high - low) / 40_000:,.0f} instructions each, {FLOOR_TASKS} tasks")
        return 0
    hows = args.measure.split(",")
    tools = {"instructions": "valgrind", "syscalls": "strace"}
    for how in hows:
        if how not in ("instructions", "syscalls", "turns"):
            parser.error(f"unknown measure {how!r}")
        if how in tools and shutil.which(tools[how]) is None:
            parser.error(f"--measure {how} needs {tools[how]} (apt-get install -y {tools[how]})")
    if args.source:  # imported before the installed build (the proxy's process inherits it)
        os.environ["PYTHONPATH"] = str(args.source.resolve())
    signal.signal(signal.SIGTERM, _interrupt)  # stop what was started, as on Ctrl-C
    processes = Processes()
    results = []
    with tempfile.TemporaryDirectory(prefix="fastroute-fair-cost-") as tmp:
        try:
            backend = start_backend(processes, Path(tmp) / "backend")
            for how in hows:
                for c in (int(n) for n in args.connections.split(",")):
                    result = measure(
                        how,
                        processes,
                        Path(tmp),
                        backend,
                        c,
                        args.requests,
                        args.keep,
                        args.python,
                        args.bare,
                    )
                    print(json.dumps(result), flush=True)
                    results.append(result)
        finally:
            processes.stop_all()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
