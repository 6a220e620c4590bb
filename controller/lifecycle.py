"""One serving process's life: serve, reload on SIGHUP, drain on SIGTERM, stop.

Kubernetes stops a pod by taking it out of the Service's endpoints and sending SIGTERM,
both at about the same time, then SIGKILL after ``terminationGracePeriodSeconds`` (30 s
by default). So on SIGTERM (or SIGINT) the process turns ``/readyz`` to 503 at once,
stops accepting, lets the requests in flight finish for up to the shutdown grace, and
exits 0. A second SIGTERM or SIGINT stops it at once. SIGHUP rereads the manifests, like
``nginx -s reload``.

A worker process of a supervisor (``--workers N``) also drains when its supervisor
disappears, so a killed supervisor never leaves workers holding the ports.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import trio

from controller.app import Controller, Options

__all__ = ["serve_until_signalled"]

log = logging.getLogger("fastroute.controller")

PARENT_CHECK_INTERVAL = 1.0  # seconds between checks that the supervisor still lives


async def serve_until_signalled(options: Options, *, supervisor: int | None = None) -> None:
    """Run a controller until SIGTERM/SIGINT has drained it (or a second one arrives).

    Args:
        supervisor: the PID of the supervisor this process works for, if any.
    """
    controller = Controller(options)
    grace = options.shutdown_grace
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            draining = False

            def begin_drain(why: str) -> None:
                """Start draining (once); the nursery is cancelled when it is done."""
                nonlocal draining
                if draining:
                    return
                draining = True
                log.info("%s: draining (up to %g s for requests in flight)", why, grace)
                nursery.start_soon(drain)

            async def drain() -> None:
                await controller.drain(grace)
                log.info("drained: stopping")
                nursery.cancel_scope.cancel()

            listening = await nursery.start(controller.run)
            log.info(
                "listening on %s: http %d, https %d%s",
                options.bind,
                listening.http_port,
                listening.https_port,
                "" if listening.status_port is None else f", status {listening.status_port}",
            )
            if supervisor is not None:
                nursery.start_soon(_drain_when_orphaned, supervisor, begin_drain)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading the manifests")
                    nursery.start_soon(controller.reload)
                elif draining:
                    log.info("%s again: stopping now", name)
                    nursery.cancel_scope.cancel()
                else:
                    begin_drain(name)


async def _drain_when_orphaned(supervisor: int, begin_drain: Callable[[str], None]) -> None:
    """Drain once the supervisor is gone (this process then has another parent)."""
    while os.getppid() == supervisor:
        await trio.sleep(PARENT_CHECK_INTERVAL)
    begin_drain(f"supervisor {supervisor} is gone")
