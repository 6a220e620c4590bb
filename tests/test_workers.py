"""``python -m controller serve --workers N``, run for real, and its signals.

Each test starts the real command line as a subprocess on 127.0.0.1 with an
``echo.Echo`` backend (in the test's own trio loop) and talks to it with httpx. With
several workers sharing a port, port 0 cannot be used (each worker would get a
different one), so the tests pick free ports themselves. The process's log goes to a
file the tests read (worker PIDs, which worker served what). Every wait polls with a
deadline, and every process started is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cli import run_controller
from tests.echo import Echo
from tests.polling import DEADLINE, wait_for
from tests.sites import site_objects

pytestmark = pytest.mark.e2e

GRACE = 8.0  # the --shutdown-grace the drain tests give


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@dataclass
class Running:
    """A controller started as ``python -m controller serve``."""

    process: subprocess.Popen[bytes]
    log: Path
    http: int
    status: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> dict[int, int]:
        """The current worker PID of each worker index, from the supervisor's log."""
        found = re.findall(r"worker (\d+) started: pid (\d+)", self.text())
        return {int(index): int(pid) for index, pid in found}

    def pids_that(self, what: str) -> set[int]:
        """The PIDs of the processes that logged a line containing ``what``."""
        pattern = r"\[(\d+)\]: [^\n]*" + re.escape(what)
        return {int(pid) for pid in re.findall(pattern, self.text())}

    async def get(self, path: str, *, port: int | None = None) -> httpx.Response:
        """GET on a new connection (so the kernel picks a worker anew each time)."""

        def call() -> httpx.Response:
            with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                url = f"http://127.0.0.1:{port or self.http}{path}"
                return client.get(url, headers={"host": "site.example.com"})

        return await trio.to_thread.run_sync(call)

    async def readyz(self) -> int | None:
        """/readyz's status, or None while nothing listens on the status port."""
        try:
            return (await self.get("/readyz", port=self.status)).status_code
        except httpx.TransportError:
            return None

    async def metric(self, name: str, **labels: str) -> float | None:
        text = (await self.get("/metrics", port=self.status)).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    async def exit_status(self, timeout: float) -> int:
        return await trio.to_thread.run_sync(partial(self.process.wait, timeout))


@contextlib.asynccontextmanager
async def controller(
    tmp_path: Path, backend_port: int, *arguments: str, workers: int = 2
) -> AsyncIterator[Running]:
    """Start the controller on the manifest of ``_objects``; stop it (and its workers) after."""
    manifests = tmp_path / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "site.yaml").write_text(yaml.safe_dump_all(site_objects(backend_port, "/")))
    http, https, status = _free_ports(3)
    log = tmp_path / "controller.log"
    command = [
        sys.executable,
        "-m",
        "controller",
        "serve",
        "--manifests",
        str(manifests),
        "--bind",
        "127.0.0.1",
        "--http-port",
        str(http),
        "--https-port",
        str(https),
        "--status-port",
        str(status),
        "--workers",
        str(workers),
        "--shutdown-grace",
        str(GRACE),
        *arguments,
    ]
    with log.open("wb") as output:
        # TMPDIR: the supervisor's metrics folder lands in tmp_path, even if it is SIGKILLed
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=output, env=env)
    running = Running(process, log, http, status)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.send_signal(signal.SIGINT)  # twice: stop at once
            try:
                process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in running.workers().values():  # only if the supervisor could not stop them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


async def ready(running: Running) -> None:
    async def check() -> bool:
        return await running.readyz() == 200

    await wait_for(check, "the supervisor ready (/readyz 200)", interval=0.05)


# ------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "2", "--http-port", "0"], "--workers N needs fixed --http-port"),
        (["--workers", "0"], "must be at least 1 worker"),
        (["--workers", "many"], "not a number of workers: 'many'"),
        (["--shutdown-grace", "soon"], "not a number of seconds: 'soon'"),
        (["--status-port", "99999"], "not a port"),
    ],
)
def test_the_command_line_names_what_is_wrong_with_workers_and_grace(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = run_controller("--manifests", str(tmp_path), *arguments)
    assert result.returncode == 2
    assert message in result.stderr


# ------------------------------------------------------------------- workers


def test_two_workers_share_the_port_and_ready_means_both_loaded(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            async with controller(tmp_path, backend_port) as running:
                seen: list[int] = []

                async def check() -> bool:
                    status = await running.readyz()
                    if status is not None:
                        seen.append(status)
                    return status == 200

                await wait_for(check, "/readyz 200 once the workers loaded", interval=0.05)
                assert seen[0] == 503  # the status listener answers before the workers load
                workers = set(running.workers().values())
                assert len(workers) == 2
                # by the time /readyz said 200, both workers had loaded the manifests
                assert running.pids_that("serving 1 Ingress(es)") == workers

                for _ in range(20):
                    answer = await running.get("/page")
                    assert answer.status_code == 200
                    assert answer.json()["backend"] == "web"
                # the kernel spread the 20 connections over both workers (each logs access)
                assert running.pids_that('"GET /page"') == workers
                # /metrics adds the workers' counts up, each handed to the files within a
                # watchdog tick (as ingress-nginx's own counts reach its /metrics each second)
                totals: list[float | None] = []

                async def counted() -> bool:
                    total = await running.metric(
                        "fastroute_requests_total",
                        ingress="default/site",
                        service="default/web:80",
                        status="200",
                    )
                    totals.append(total)
                    return total == 20

                await wait_for(counted, "the 20 requests in /metrics", interval=0.05)
                assert all(t is None or t <= 20 for t in totals)  # never counted twice
                assert await running.metric("fastroute_ready") == 2
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_sighup_reloads_every_worker(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            async with controller(tmp_path, backend_port, "--no-watch") as running:
                await ready(running)
                assert (await running.get("/old")).status_code == 200
                manifest = tmp_path / "manifests" / "site.yaml"
                manifest.write_text(yaml.safe_dump_all(site_objects(backend_port, "/new")))
                running.process.send_signal(signal.SIGHUP)

                async def reloaded() -> bool:  # 2 workers x (startup + SIGHUP)
                    return (
                        await running.metric("fastroute_config_reloads_total", result="success")
                        == 4
                    )

                await wait_for(reloaded, "both workers reloaded", interval=0.05)
                for _ in range(10):  # new connections, whichever worker takes them
                    assert (await running.get("/new/page")).status_code == 200
                    assert (await running.get("/old")).status_code == 404
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            async with controller(tmp_path, backend_port) as running:
                await ready(running)
                before = running.workers()
                os.kill(before[0], signal.SIGKILL)

                async def replaced() -> bool:
                    return running.workers()[0] != before[0] and await running.readyz() == 200

                await wait_for(replaced, "the killed worker replaced and ready", interval=0.05)
                assert "exited unexpectedly" in running.text()
                assert running.workers()[1] == before[1]
                assert await running.metric("fastroute_worker_restarts_total") == 1
                for _ in range(10):
                    assert (await running.get("/page")).status_code == 200
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_the_workers_of_a_killed_supervisor_stop_by_themselves(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            async with controller(tmp_path, backend_port) as running:
                await ready(running)
                workers = list(running.workers().values())
                running.process.kill()
                running.process.wait()

                async def gone() -> bool:
                    return not any(_alive(pid) for pid in workers)

                await wait_for(gone, "every worker gone", interval=0.05)
            nursery.cancel_scope.cancel()

    trio.run(scenario)


# ------------------------------------------------------------------- SIGTERM


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(
    tmp_path: Path, workers: int
) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend = Echo("web")
            backend_port = await nursery.start(backend.serve)
            async with controller(tmp_path, backend_port, workers=workers) as running:
                await ready(running)
                answers: list[httpx.Response] = []

                async def slow() -> None:
                    answers.append(await running.get("/slow"))

                nursery.start_soon(slow)

                async def in_flight() -> bool:
                    return backend.connections > 0

                await wait_for(in_flight, "a request in flight", interval=0.05)
                signalled = trio.current_time()
                running.process.send_signal(signal.SIGTERM)

                async def not_ready() -> bool:
                    return await running.readyz() in (503, None)

                # out of the Service's endpoints at once
                await wait_for(not_ready, "/readyz failing while draining", interval=0.05)

                async def refused() -> bool:  # and no new connections are taken
                    try:
                        await running.get("/page")
                    except httpx.TransportError:
                        return True
                    return False

                await wait_for(refused, "new connections refused", interval=0.05)
                backend.release.set()
                assert await running.exit_status(GRACE) == 0
                assert trio.current_time() - signalled < GRACE
                assert len(answers) == 1
                assert answers[0].status_code == 200
                assert answers[0].json()["target"] == "/slow"
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend = Echo("web")
            backend_port = await nursery.start(backend.serve)
            async with controller(tmp_path, backend_port, workers=1) as running:
                await ready(running)
                failures: list[Exception] = []

                async def slow() -> None:
                    try:
                        await running.get("/slow")
                    except httpx.TransportError as error:
                        failures.append(error)

                nursery.start_soon(slow)

                async def in_flight() -> bool:
                    return backend.connections > 0

                await wait_for(in_flight, "a request in flight", interval=0.05)
                signalled = trio.current_time()
                running.process.send_signal(signal.SIGTERM)

                async def draining() -> bool:
                    return await running.readyz() == 503

                await wait_for(draining, "/readyz 503 while draining", interval=0.05)
                running.process.send_signal(signal.SIGTERM)
                assert await running.exit_status(GRACE) == 0
                assert trio.current_time() - signalled < GRACE / 2  # did not wait for the grace

                async def cut_off() -> bool:
                    return bool(failures)

                # the request in flight was cut off, not completed
                await wait_for(cut_off, "the request in flight cut off", interval=0.05)
            backend.release.set()
            nursery.cancel_scope.cancel()

    trio.run(scenario)
