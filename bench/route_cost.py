"""What one request costs the proxy, counted in instructions: plain routes, routes with
annotations, and another build's plain routes, without the noise of a shared machine.

wrk's figures (``bench/proxy.py``) move by ±10% from one run to the next on a busy 2-core
machine, more than the few percent a change costs. Instructions do not: this runs the real
``Proxy`` in one process with the bench's manifests (``proxy_peers.write_manifests``), a
trio client on keep-alive connections and a trio backend, under ``valgrind --tool=callgrind``,
twice with different request counts; the difference divided by the difference in requests
is what one request costs, start-up excluded. The same run with the client talking to the
backend directly gives their share, which is taken off. User-space instructions only: the
system calls per request are the same for every mode (``strace -c`` shows it).

Usage: ``python -m bench.route_cost [--connections 16] [--baseline PYTHON]``
(``--one MODE N`` is what each valgrind run executes).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from bench.proxy_peers import (
    ANNOTATED_PROBES,
    AUTH_PROBES,
    CANARY_PROBES,
    PROBES,
    REGEX_PROBES,
    write_manifests,
)

BODY = b"hello from backend\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 15:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s"
) % (len(BODY), BODY)
COUNTS = (400, 1200)  # requests in the two runs whose difference is measured


async def _backend(stream: trio.SocketStream) -> None:
    """Answers every request head it receives (pipelined or not) with ``RESPONSE``."""
    buffer = b""
    async with stream:
        while data := await stream.receive_some(65536):
            buffer += data
            heads = buffer.count(b"\r\n\r\n")
            if heads:
                buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :]
                await stream.send_all(RESPONSE * heads)


async def _client(port: int, probes: tuple[tuple[str, str], ...], count: int) -> None:
    requests = [
        b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode())
        for host, path in probes
    ]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for i in range(count):
            await stream.send_all(requests[i % len(requests)])
            answer = b""
            while not answer.endswith(BODY):
                answer += await stream.receive_some(65536)


async def _one(mode: str, count: int, connections: int) -> None:
    """``count`` requests over ``connections`` connections: through the proxy to the plain
    routes, to the annotated ones, to the ones with a canary, to the regex ones, to the
    ones with external auth (cached), or straight to the backend (``direct``)."""
    from controller.manifests import load_manifests
    from fastroute.ingress import ClassPolicy, build_config
    from fastroute.proxy.server import Proxy

    async with trio.open_nursery() as nursery:
        backend = (await nursery.start(trio.serve_tcp, _backend, 0))[0].socket.getsockname()[1]
        folder = Path(tempfile.mkdtemp(prefix="fastroute-route-cost-"))
        write_manifests(folder, backend)
        objects = load_manifests([folder]).objects
        shutil.rmtree(folder)
        proxy = Proxy(build_config(objects, classes=ClassPolicy(adopt_classless=True)))
        port = (await nursery.start(proxy.serve, "127.0.0.1", 0))[0].socket.getsockname()[1]
        probes = {
            "annotated": ANNOTATED_PROBES,
            "canary": CANARY_PROBES,
            "regex": REGEX_PROBES,
            "auth": AUTH_PROBES,
        }.get(mode, PROBES)
        target = backend if mode == "direct" else port
        await _client(target, probes, 50)  # warm-up: connections pooled, code paths hot
        async with trio.open_nursery() as clients:
            for _ in range(connections):
                clients.start_soon(_client, target, probes, max(count // connections, 1))
        nursery.cancel_scope.cancel()


def _instructions(python: str, mode: str, count: int, connections: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        # The run's folder holds the bench package and nothing else of the checkout, so that
        # ``-m`` finds the bench while a baseline interpreter imports its own fastroute.
        (Path(folder) / "bench").symlink_to(Path(__file__).resolve().parent)
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out"]
        command += [python, "-m", "bench.route_cost", "--one", mode, str(count)]
        command += ["--connections", str(connections)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=folder)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found[1])


def _sent(count: int, connections: int) -> int:
    """The requests ``_one`` sends for ``count``: a whole number per connection, at least 1."""
    return max(count // connections, 1) * connections


def per_request(python: str, mode: str, connections: int) -> float:
    """Instructions per request: the difference between two runs of different lengths."""
    counts = [_sent(n, connections) for n in COUNTS]
    if counts[0] == counts[1]:
        counts[1] += connections
    low, high = (_instructions(python, mode, n, connections) for n in counts)
    return (high - low) / (counts[1] - counts[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--baseline", metavar="PYTHON", help="another build's interpreter")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        trio.run(_one, args.one[0], int(args.one[1]), args.connections)
        return 0
    if shutil.which("valgrind") is None:
        print("needs valgrind (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    builds = {"this build": sys.executable}
    if args.baseline:
        builds["baseline"] = args.baseline
    direct = per_request(sys.executable, "direct", args.connections)
    print(f"client and backend alone: {direct:,.0f} instructions per request")
    proxy: dict[tuple[str, str], float] = {}
    for build, python in builds.items():
        modes: tuple[str, ...] = ("plain", "annotated", "canary", "regex", "auth")
        if build != "this build":
            modes = ("plain",)
        for mode in modes:
            proxy[(build, mode)] = per_request(python, mode, args.connections) - direct
            print(f"{build}, {mode} routes: {proxy[(build, mode)]:,.0f} instructions per request")
    plain = proxy[("this build", "plain")]
    print(f"annotated / plain: {proxy[('this build', 'annotated')] / plain:.3f}x")
    print(f"canary / plain: {proxy[('this build', 'canary')] / plain:.3f}x")
    print(f"regex / plain: {proxy[('this build', 'regex')] / plain:.3f}x")
    print(f"auth (cached) / plain: {proxy[('this build', 'auth')] / plain:.3f}x")
    if ("baseline", "plain") in proxy:
        print(f"this build / baseline, plain routes: {plain / proxy[('baseline', 'plain')]:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
