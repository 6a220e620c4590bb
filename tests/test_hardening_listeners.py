"""The listening side under abuse: floods of idle connections, the descriptor limit, bad SNI.

Regression tests for three defects an adversarial run found, each over real sockets on
127.0.0.1 (raw sockets, so the test sees exactly what a client sees):

- the status port (/healthz, /readyz) starved by a few hundred idle or slow connections;
- ``--max-connections`` not bounding accepted sockets, and the process at its descriptor
  limit: probes unanswered, a warning per accept attempt;
- a non-ASCII SNI name printing CPython's "Exception ignored" traceback on stderr.

The descriptor-limit test runs the real controller (``python -m controller``) in a
subprocess with a low RLIMIT_NOFILE, and reads its stderr. Every wait is bounded.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import yaml
from OpenSSL import SSL

import fastroute.proxy.tls
from controller.status import HEAD_TIMEOUT, serve_status
from fastroute.ingress import build_config
from fastroute.proxy.listener import AcceptBackoff, LogThrottle
from fastroute.proxy.metrics import Metrics
from fastroute.proxy.server import Limits, Proxy
from fastroute.proxy.tls import TLSContexts
from tests.echo import Echo
from tests.polling import DEADLINE, WaitTimeoutError, wait_for_sync
from tests.sites import HOST, closed_port, site_objects

PROMPT = 1.0  # "promptly": well under the probes' 3 s timeout
GET = b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"


async def _read_response(stream: trio.SocketStream) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert found is not None, head
    length = int(found.group(1))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return int(head.split(b" ", 2)[1]), body


async def _closed_by_server(stream: trio.SocketStream) -> bool:
    """Whether the server closed ``stream`` (end of stream or a reset), reading what comes."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    return True


# ------------------------------------------------------------------ 7: the status port


@pytest.mark.e2e
def test_status_probes_answer_promptly_under_hundreds_of_idle_and_slow_connections() -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            status = partial(serve_status, ready=lambda: True, metrics_text=lambda: b"")
            port = await nursery.start(status, "127.0.0.1", 0)
            flood: list[trio.SocketStream] = []
            with trio.fail_after(DEADLINE):
                for index in range(400):
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    if index % 2:  # slow: a head that never ends
                        await stream.send_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
                    flood.append(stream)
            for _ in range(5):  # a readiness probe, five times in a row (kubelet's failures)
                started = trio.current_time()
                with trio.fail_after(PROMPT):
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                    async with probe:
                        await probe.send_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                        status_code, body = await _read_response(probe)
                assert (status_code, body) == (200, b"ready\n")
                assert trio.current_time() - started < PROMPT
            # the head timeout runs from accept: the newest idle connection is closed in time
            with trio.fail_after(HEAD_TIMEOUT + 2.0):
                assert await _closed_by_server(flood[-2])
            for stream in flood:
                await stream.aclose()
            nursery.cancel_scope.cancel()

    trio.run(scenario)


# ------------------------------------------------------------ 8: --max-connections, EMFILE


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_accept_backoff_grows_and_logs_an_episode_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    backoff = AcceptBackoff(logging.getLogger("test.backoff"), "http", clock=clock)
    emfile = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level("WARNING", logger="test.backoff"):
        pauses = []
        for _ in range(10):
            pauses.append(backoff.failed(emfile))
            clock.now += pauses[-1]
        assert pauses == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0]
        backoff.succeeded()  # one connection closed, one accept went through: same episode
        assert backoff.failed(emfile) == 0.01  # but no pause after descriptors came back
        clock.now += 5.0
        backoff.succeeded()  # accepts work again, 5 s after the last failure
    aborted = OSError(errno.ECONNABORTED, "Software caused connection abort")
    assert not backoff.retry(emfile)
    assert all(backoff.retry(aborted) for _ in range(AcceptBackoff.MAX_RETRIES))
    assert not backoff.retry(aborted)  # an error that repeats must not spin the loop
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("http: accept failed: Too many open files; pausing")
    assert lines[1].startswith("http: accepting again after 11 failed attempts")


def test_log_throttle_says_how_many_it_skipped(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval=10.0, clock=clock)
    with caplog.at_level("INFO", logger="test.throttle"):
        for second in range(25):
            clock.now = float(second)
            throttle.log(logging.INFO, "bad hello from %s", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "bad hello from x",
        "bad hello from x (and 9 more like it in the last 10 s)",
        "bad hello from x (and 9 more like it in the last 10 s)",
    ]


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
@pytest.mark.e2e
def test_max_connections_bounds_the_sockets_accepted() -> None:
    limit = 10

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend = Echo("web")
            backend_port = await nursery.start(backend.serve)
            proxy = Proxy(
                build_config(site_objects(backend_port)), limits=Limits(max_connections=limit)
            )
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            await trio.testing.wait_all_tasks_blocked()
            before = _open_descriptors()
            stalled: list[trio.SocketStream] = []
            with trio.fail_after(DEADLINE):
                for _ in range(3 * limit):  # heads that never end: none is idle
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n")
                    stalled.append(stream)
                await trio.testing.wait_all_tasks_blocked()  # the proxy took what it takes
            accepted = _open_descriptors() - before - len(stalled)
            assert accepted == limit  # the others wait in the kernel's backlog
            for stream in stalled:
                await stream.aclose()
            with trio.fail_after(DEADLINE):  # the slots come back: a client is served
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client:
                    await client.send_all(GET)
                    status_code, _ = await _read_response(client)
            assert status_code == 200
            nursery.cancel_scope.cancel()

    trio.run(scenario)


@pytest.mark.e2e
def test_at_max_connections_the_longest_idle_keep_alive_connection_makes_room() -> None:
    limit = 3

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend = Echo("web")
            backend_port = await nursery.start(backend.serve)
            metrics = Metrics()
            proxy = Proxy(
                build_config(site_objects(backend_port)),
                limits=Limits(max_connections=limit),  # head timeout (idle close): 60 s
                metrics=metrics,
            )
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            idle: list[trio.SocketStream] = []
            with trio.fail_after(DEADLINE):
                for _ in range(limit):  # one request each, then idle keep-alive
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    await stream.send_all(GET)
                    assert (await _read_response(stream))[0] == 200
                    idle.append(stream)
            with trio.fail_after(PROMPT):  # not after the 60 s idle timeout
                newcomer = await trio.open_tcp_stream("127.0.0.1", port)
                await newcomer.send_all(GET)
                assert (await _read_response(newcomer))[0] == 200
            with trio.fail_after(DEADLINE):
                assert await _closed_by_server(idle[0])  # the longest idle made room
            await newcomer.send_all(GET)  # the others, and the newcomer, stay usable
            with trio.fail_after(DEADLINE):
                assert (await _read_response(newcomer))[0] == 200
            closed = b'fastroute_idle_connections_closed_total{limit="max_connections"} 1.0'
            assert closed in metrics.text()
            for stream in [*idle, newcomer]:
                await stream.aclose()
            nursery.cancel_scope.cancel()

    trio.run(scenario)


class _Controller:
    """``python -m controller`` in a subprocess; its stderr lines collected by a thread."""

    def __init__(self, manifests: Path, *, max_descriptors: int | None = None) -> None:
        def limit_descriptors() -> None:
            if max_descriptors is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_descriptors, max_descriptors))

        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "--manifests",
                str(manifests),
                "--bind",
                "127.0.0.1",
                "--http-port",
                "0",
                "--https-port",
                "0",
                "--status-port",
                "0",
                "--no-watch",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_descriptors,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        listening = self.wait_for(r"listening on .*: http (\d+), https (\d+), status (\d+)")
        self.http, self.https, self.status = (int(p) for p in listening.groups())

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stderr line matching ``pattern``, polled for until the deadline."""

        def found() -> re.Match[str] | None:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None:
                raise AssertionError(f"exited, no line matching {pattern!r} in:\n{self.output}")
            return None

        try:
            return wait_for_sync(found, f"a line matching {pattern!r}")
        except WaitTimeoutError as error:
            raise AssertionError(f"{error} in:\n{self.output}") from None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> str:
        """SIGTERM, then wait (kill at the deadline); everything it wrote on stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(DEADLINE)
        self._reader.join(DEADLINE)
        return "".join(self.lines)


@contextmanager
def _controller(tmp_path: Path, max_descriptors: int | None = None) -> Iterator[_Controller]:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump_all(site_objects(closed_port())))
    controller = _Controller(tmp_path, max_descriptors=max_descriptors)
    try:
        yield controller
    finally:
        controller.stop()


def _http_status(port: int, request: bytes, timeout: float) -> int:
    """Send ``request`` on a new connection; the response's status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.e2e
def test_at_the_descriptor_limit_probes_answer_and_accept_errors_log_once(
    tmp_path: Path,
) -> None:
    """The real controller with 64 descriptors; 100 idle clients would take every one."""
    with _controller(tmp_path, max_descriptors=64) as controller:
        flood: list[socket.socket] = []
        try:
            for _ in range(100):  # connect() succeeds: the kernel's backlog holds the rest
                flood.append(socket.create_connection(("127.0.0.1", controller.http)))
            controller.wait_for(r"accept failed: .*Too many open files")
            started = time.monotonic()
            for _ in range(10):  # about a second at the limit, probed all along
                probe_started = time.monotonic()
                status_code = _http_status(
                    controller.status, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", DEADLINE
                )
                assert status_code == 200
                assert time.monotonic() - probe_started < PROMPT
                time.sleep(0.1)  # spacing the probes, not waiting for the server
            assert time.monotonic() - started >= 1.0
            # a client with a request gets in: idle connections give it their descriptors
            assert _http_status(controller.http, GET, DEADLINE) in (404, 502, 503)
            failures = [line for line in controller.lines if "accept failed" in line]
            assert len(failures) == 1, "".join(failures)  # per burst, not per attempt
        finally:
            for sock in flood:
                sock.close()

        # descriptors free again: clients are answered, and once accepts have worked for a
        # while (2 s after the last failure) the log says so, once
        def accepting_again() -> bool:
            if any("accepting again after" in line for line in controller.lines):
                return True
            assert _http_status(controller.http, GET, DEADLINE) in (404, 502, 503)
            return False

        try:
            wait_for_sync(accepting_again, "the log line 'accepting again after'", interval=0.1)
        except WaitTimeoutError as error:
            raise AssertionError(f"{error}:\n{controller.output}") from None
        readyz = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
        assert _http_status(controller.status, readyz, DEADLINE) == 200
        with socket.create_connection(("127.0.0.1", controller.status), timeout=DEADLINE) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            metrics = b"".join(iter(partial(sock.recv, 65536), b"")).decode()
        assert re.search(r'fastroute_accept_errors_total\{error="EMFILE"\} [1-9]', metrics)
        assert re.search(r'idle_connections_closed_total\{limit="descriptors"\} [1-9]', metrics)
    output = "".join(controller.lines)
    assert "Traceback" not in output
    assert output.count("accepting again after") == 1
    # as nginx warns when worker_connections exceed the open file limit (once, at start)
    assert output.count("--max-connections 10000 exceeds the open file limit 64") == 1


# ---------------------------------------------------------------- 9: non-ASCII SNI


def _client_hello(port: int, server_name: bytes) -> str:
    """A TLS handshake sending ``server_name`` as raw bytes; how it ended."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        # pyOpenSSL wants a blocking socket; the kernel bounds each read instead
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(DEADLINE), 0))
        connection = SSL.Connection(context, sock)
        connection.set_tlsext_host_name(server_name)
        connection.set_connect_state()
        try:
            connection.do_handshake()
        except SSL.Error as error:
            return f"refused: {error}"
    return "completed"


@pytest.mark.e2e
def test_a_non_ascii_sni_name_is_refused_with_one_log_line_and_no_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[object] = []  # what would reach stderr: the default hook prints these
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(
        fastroute.proxy.tls, "_BAD_SERVER_NAMES", LogThrottle(fastroute.proxy.tls.log, 10.0)
    )
    outcomes: list[str] = []

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend = Echo("web")
            backend_port = await nursery.start(backend.serve)
            proxy = Proxy(build_config(site_objects(backend_port)), tls=TLSContexts())
            serve = partial(proxy.serve, scheme="https")
            port = (await nursery.start(serve, "127.0.0.1", 0))[0].socket.getsockname()[1]
            with trio.fail_after(DEADLINE):
                for name in ("ü.example.com", "例え.テスト", "ü.example.com"):
                    hello = partial(_client_hello, port, name.encode())
                    outcomes.append(await trio.to_thread.run_sync(hello))
                # ASCII that is no valid IDNA reaches the SNI callback: the default certificate,
                # as nginx and Envoy serve for a name they have none for
                for ascii_name in (HOST, "xn--a.example.com"):
                    hello = partial(_client_hello, port, ascii_name.encode())
                    outcomes.append(await trio.to_thread.run_sync(hello))
            nursery.cancel_scope.cancel()

    with caplog.at_level("WARNING", logger="fastroute.proxy"):
        trio.run(scenario)
    assert unraisable == []
    assert [o.split(":")[0] for o in outcomes] == ["refused"] * 3 + ["completed"] * 2
    assert all("alert" in outcome for outcome in outcomes[:3]), outcomes  # a TLS alert
    lines = [r for r in caplog.records if r.name == "fastroute.proxy"]
    assert len(lines) == 1  # rate-limited: one line for the three
    assert "not ASCII" in lines[0].getMessage()
    assert r"b'\xc3\xbc.example.com'" in lines[0].getMessage()


@pytest.mark.e2e
def test_a_non_ascii_sni_name_leaves_the_controllers_stderr_to_logging(tmp_path: Path) -> None:
    with _controller(tmp_path) as controller:
        for _ in range(3):
            assert _client_hello(controller.https, "ü.example.com".encode()).startswith("refused")
        controller.wait_for(r"WARNING fastroute.proxy: TLS handshake refused: .* not ASCII")
    output = "".join(controller.lines)
    assert "Exception ignored" not in output
    assert "Traceback" not in output
    assert output.count("not ASCII") == 1
