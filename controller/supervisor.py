"""``--workers N``: one serving process per core, sharing the HTTP and HTTPS ports.

The supervisor starts N workers (``python -m controller`` with the same arguments, one
worker each), and each binds the ports with SO_REUSEPORT, so the kernel spreads new
connections over them; each loads and watches the manifests itself. The supervisor:

- restarts a worker that exits unexpectedly, after a backoff that grows while it keeps
  failing (0.5 s doubling to 30 s, back to 0.5 s once a worker has lived a minute);
- forwards SIGHUP (reload) to every worker, once it is ready;
- on SIGTERM/SIGINT turns ``/readyz`` to 503, forwards SIGTERM so every worker drains,
  and waits for them for the grace period plus a margin, then kills what is left;
  a second SIGTERM/SIGINT is forwarded too, and workers then stop at once;
- alone serves the status listener. Workers write their metrics to files in a private
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode), which
  ``/metrics`` adds up. A worker reports readiness in the ``fastroute_ready`` gauge
  (1 once its first config is loaded, 0 while draining), and ``/readyz`` is 200 only
  when every current worker's gauge says 1.

Workers run in their own session, so a Ctrl-C in a terminal reaches only the supervisor,
which turns it into one orderly SIGTERM per worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from controller.app import naming_the_listener
from controller.status import serve_status

__all__ = ["Supervisor", "worker_command"]

log = logging.getLogger("fastroute.supervisor")

FIRST_BACKOFF = 0.5  # seconds before restarting a worker that died
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a worker that lived this long resets the backoff
STOP_MARGIN = 5.0  # beyond the grace period, for a worker to exit before it is killed
RELOAD_POLL = 0.1  # seconds between looks at a worker that is to reload once ready


class Supervisor:
    """Keeps ``workers`` worker processes running and answers the status port for them.

    Args:
        command: the worker command line (it must end in worker mode: ``--workers 1``).
        workers: how many workers to keep running (at least 2).
        bind, status_port: where the status listener listens (``None``: nowhere).
        grace: the workers' shutdown grace period, in seconds.
    """

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        *,
        bind: str,
        status_port: int | None,
        grace: float,
    ) -> None:
        if workers < 2:
            raise ValueError(f"a supervisor needs at least 2 workers, got {workers}")
        self.command = list(command)
        self.workers = workers
        self.bind = bind
        self.status_port = status_port
        self.grace = grace
        self.draining = False
        self._stopping = trio.Event()  # set with draining, to cut a restart backoff short
        self.killed = 0  # workers killed because they outlived the grace period
        self.processes: list[trio.Process | None] = [None] * workers
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="fastroute-metrics-"))
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        self._restarts = Counter(
            "fastroute_worker_restarts",
            "Worker processes restarted after they exited unexpectedly.",
            registry=self.registry,
        )

    def ready(self) -> bool:
        """Whether every worker has loaded a config and none is draining."""
        if self.draining:
            return False
        live = self._live()
        return len(live) == self.workers and all(self._worker_ready(p.pid) for p in live)

    def _live(self) -> list[trio.Process]:
        return [p for p in self.processes if p is not None and p.returncode is None]

    def _worker_ready(self, pid: int) -> bool:
        """What the worker's ``fastroute_ready`` gauge says (no file yet: not ready)."""
        path = self.metrics_dir / f"gauge_livesum_{pid}.db"
        if not path.exists():
            return False
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            if metric.name == "fastroute_ready":
                return any(sample.value >= 1 for sample in metric.samples)
        return False

    def metrics_text(self) -> bytes:
        """Every worker's metrics added up, and the supervisor's own."""
        return generate_latest(self.registry)

    async def run(self) -> int:
        """Supervise until the workers have stopped after SIGTERM/SIGINT; the exit status."""
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    if self.status_port is not None:
                        with naming_the_listener("status", self.bind, self.status_port):
                            port = await nursery.start(
                                partial(
                                    serve_status, ready=self.ready, metrics_text=self.metrics_text
                                ),
                                self.bind,
                                self.status_port,
                            )
                        log.info("status listener on %s:%d", self.bind, port)
                    nursery.start_soon(self._signals, signals, nursery)
                    async with trio.open_nursery() as workers:
                        for index in range(self.workers):
                            workers.start_soon(self._keep_running, index)
                    nursery.cancel_scope.cancel()  # every worker has stopped
        finally:
            for process in self.processes:  # only if the supervisor itself failed
                if process is not None and process.returncode is None:
                    process.kill()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 1 if self.killed else 0

    async def _signals(self, signals: AsyncIterator[int], nursery: trio.Nursery) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info("SIGHUP: telling every worker to reload")
                nursery.start_soon(self._reload, self._live())
                continue
            log.info(
                "%s: %s",
                name,
                "stopping the workers now" if self.draining else "draining the workers",
            )
            if not self.draining:
                self.draining = True
                self._stopping.set()
                nursery.start_soon(self._kill_after, self.grace + STOP_MARGIN)
            self._send(signal.SIGTERM)

    async def _reload(self, workers: list[trio.Process]) -> None:
        """SIGHUP each worker once it is ready.

        Before then a worker may not yet handle SIGHUP (it would die of it), and it reads
        the manifests anyway; one in the middle of its first load gets the SIGHUP after
        it, so it rereads what may have changed since. A worker replaced meanwhile reads
        them afresh.
        """
        waiting = set(workers)
        while waiting and not self.draining:
            for process in list(waiting):
                if process.returncode is not None or process not in self.processes:
                    waiting.discard(process)
                elif self._worker_ready(process.pid):
                    process.send_signal(signal.SIGHUP)
                    waiting.discard(process)
            if waiting:
                await trio.sleep(RELOAD_POLL)

    def _send(self, signum: int) -> None:
        for process in self.processes:
            if process is not None and process.returncode is None:
                process.send_signal(signum)

    async def _kill_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        for process in self.processes:
            if process is not None and process.returncode is None:
                log.error(
                    "worker pid %d did not stop within %g s: killing it", process.pid, seconds
                )
                self.killed += 1
                process.kill()

    async def _keep_running(self, index: int) -> None:
        """Run worker ``index`` until draining, restarting it whenever it dies."""
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        env.pop("prometheus_multiproc_dir", None)  # the old spelling would win in some versions
        backoff = FIRST_BACKOFF
        while not self.draining:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                self.command, env=env, start_new_session=True
            )
            self.processes[index] = process
            log.info("worker %d started: pid %d", index, process.pid)
            if self.draining:  # the signal came while it started: it never got the SIGTERM
                process.send_signal(signal.SIGTERM)
            status = await process.wait()
            # its gauges no longer count, but its counters (requests served) still do
            mark_process_dead(process.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
            if self.draining:
                log.info("worker %d (pid %d) stopped with status %d", index, process.pid, status)
                return
            if trio.current_time() - started > STABLE_AFTER:
                backoff = FIRST_BACKOFF
            log.error(
                "worker %d (pid %d) exited unexpectedly with status %d: restarting in %g s",
                index,
                process.pid,
                status,
                backoff,
            )
            self._restarts.inc()
            with trio.move_on_after(backoff):
                await self._stopping.wait()
            backoff = min(backoff * 2, MAX_BACKOFF)


def worker_command(argv: Sequence[str]) -> list[str]:
    """The command line of a worker: this one, as a single worker of this process."""
    return [
        sys.executable,
        "-m",
        "controller",
        *argv,
        "--workers",
        "1",
        "--worker-of",
        str(os.getpid()),
    ]
