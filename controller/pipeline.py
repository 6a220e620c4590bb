"""The one way a configuration reaches the proxy, whatever its source.

A ``Source`` (manifest files, or the Kubernetes API) says when what it holds has changed
and builds a RouteConfig from it; the ``Pipeline`` does everything else, the same way
for every source:

- coalescing: changes that arrive while a build runs, and ``reload`` requests (SIGHUP),
  fold into one more build, never one each; a build always reads the source as it is
  when the build starts, so the last state wins. A burst of changes is first left to
  settle (``debounce`` quiet seconds, ``max_delay`` at most); a ``reload`` is not.
- builds take turns (one task runs them all), so an older config is never installed
  after a newer one;
- a build that fails (an exception, or input the source could not read) keeps the
  current config serving and counts as a failed reload; at startup, with nothing to
  keep, what could be read is served, still counted as a failure;
- installing: the proxy loads the config, then ``on_config`` (the Kubernetes source's
  publisher: Ingress status and Events) gets it with the objects it was built from;
- counting reloads by result and reporting readiness (``ReloadMetrics``): ready once a
  config is in, the source is whole (every kind listed) and no drain has begun.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from controller.reload_metrics import ReloadMetrics
from fastroute.ingress import RouteConfig
from fastroute.proxy.server import Proxy

__all__ = ["Built", "OnConfig", "Pipeline", "Source"]

log = logging.getLogger("fastroute.controller")

OnConfig = Callable[[RouteConfig, Sequence[Mapping[str, Any]]], Awaitable[None]]


@dataclass(frozen=True)
class Built:
    """What a source built.

    Attributes:
        config: the config to install; None: keep the current one.
        objects: the objects it was built from (shared with the source: read them,
            never change them).
        complete: whether every input could be read; if not, the reload counts as
            failed even when ``config`` is installed.
    """

    config: RouteConfig | None
    objects: Sequence[Mapping[str, Any]] = ()
    complete: bool = True


class Source(Protocol):
    """Where configurations come from."""

    @property
    def ready(self) -> bool:
        """A whole configuration can be built (the Kubernetes API: every kind listed)."""
        ...

    async def watch(self, changed: Callable[[], None]) -> None:
        """Follow the source until cancelled, calling ``changed()`` whenever a build would
        see something new (and once ready, if that takes a while). Never ends on its own."""
        ...

    async def build(self, current: RouteConfig | None) -> Built:
        """A config from what the source holds now, ``current`` being the one serving.

        Slow work goes to a worker thread. Raises whatever breaks: the pipeline logs
        it and counts a failed reload.
        """
        ...


@dataclass(eq=False)
class _Round:
    """One build, and whether it installed a config (``done`` once it is over)."""

    done: trio.Event = field(default_factory=trio.Event)
    installed: bool = False


class Pipeline:
    """Builds configurations from a source and installs them into ``proxy``.

    Attributes:
        source: the source being followed (``follow``), None before and after.
        reloads: configs installed, the first one included.
        configured: set once the first config is in the proxy.
        draining: set by ``drain``: readiness stays off from then on.
    """

    def __init__(self, proxy: Proxy, metrics: ReloadMetrics) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self.source: Source | None = None
        self.reloads = 0
        self.configured = trio.Event()
        self.draining = False
        self._on_config: OnConfig | None = None
        self._debounce = 0.0
        self._max_delay = 0.0
        self._due = trio.Event()  # a build is asked for
        self._urgent = False  # by ``reload``: no settling
        self._changes = 0  # changes seen, for settling
        self._next = _Round()  # the build that will cover requests made now

    @property
    def ready(self) -> bool:
        """What ``/readyz`` says: a config is loaded, the source is whole (a proxy ready
        with no routes 404s everything), and no drain has begun."""
        return (
            self.source is not None and self.source.ready and self.proxy.ready and not self.draining
        )

    def drain(self) -> None:
        """Turn readiness off for good (the proxy is about to stop)."""
        self.draining = True
        self.metrics.set_ready(False)

    def changed(self) -> None:
        """The source's news: a build is due once the burst has settled."""
        self._changes += 1
        self._due.set()

    async def reload(self) -> bool:
        """Build and install now (SIGHUP); whether a config was installed.

        Returns once a build that started after the call is over: requests made while
        one runs share the next. False at once when no source is being followed.
        """
        if self.source is None:
            return False
        covering = self._next
        self._urgent = True
        self._due.set()
        await covering.done.wait()
        return covering.installed

    async def follow(
        self,
        source: Source,
        *,
        on_config: OnConfig | None = None,
        debounce: float = 0.0,
        max_delay: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Build from ``source`` and install, until cancelled.

        ``task_status.started()`` once a first build from the whole source is over
        (installed or not), so that listeners open after the first load.

        Args:
            on_config: called with each config installed and the objects it came from.
            debounce: seconds without a change that end a burst.
            max_delay: seconds at most between a burst's first change and its build.
        """
        if not (debounce >= 0 and math.isfinite(debounce)):
            raise ValueError(f"debounce must be 0 or more seconds, got {debounce}")
        if not (max_delay >= debounce and math.isfinite(max_delay)):
            raise ValueError(f"max_delay must be at least debounce ({debounce}), got {max_delay}")
        if self.source is not None:
            raise RuntimeError("the pipeline already follows a source")
        self.source, self._on_config = source, on_config
        self._debounce, self._max_delay = debounce, max_delay
        started = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(source.watch, self.changed)
                self._due.set()  # the first build, as soon as the source is whole
                while True:  # until cancelled: one build per burst or run of requests
                    await self._due.wait()
                    await self._settle()
                    self._due = trio.Event()  # requests from here on ask for the next
                    self._urgent = False
                    current, self._next = self._next, _Round()
                    whole = source.ready
                    try:
                        current.installed = whole and await self._reload_once(source)
                    finally:
                        current.done.set()
                    if whole and not started:
                        started = True
                        task_status.started()
        finally:
            self.source = self._on_config = None
            self._next.done.set()  # nobody waits for a build that will never run

    async def _settle(self) -> None:
        """Wait for a burst to end: ``debounce`` quiet seconds, ``max_delay`` at most; a
        ``reload`` request ends the wait at once."""
        if self._urgent or self._debounce == 0:
            return
        with trio.move_on_after(self._max_delay):
            while not self._urgent:  # bounded by max_delay
                seen = self._changes
                await trio.sleep(self._debounce)
                if self._changes == seen:
                    return

    async def _reload_once(self, source: Source) -> bool:
        """One build, installed if it gave a config; whether it did."""
        started = trio.current_time()
        previous = self.proxy.config
        try:
            built = await source.build(previous)
        except Exception:
            # a build that breaks must not take the pipeline (or the server) with it
            log.exception("building the configuration failed; the current one keeps serving")
            self.metrics.config_reload(False)
            return False
        config = built.config
        if config is None:
            self.metrics.config_reload(built.complete)
            return False
        try:
            await self.proxy.load(config)
            if self._on_config is not None:
                await self._on_config(config, built.objects)
        except Exception:
            log.exception("installing the configuration failed")
            self.metrics.config_reload(False)
            return False
        self.reloads += 1
        self.metrics.config_reload(built.complete)
        self.configured.set()
        self.metrics.set_ready(self.ready)
        log.info(
            "serving %d Ingress(es)%s, built from %d objects in %.0f ms",
            len(config.ingresses),
            _difference(previous.ingresses if previous else (), config.ingresses),
            len(built.objects),
            (trio.current_time() - started) * 1000,
        )
        return True


def _difference(before: Iterable[str], after: Iterable[str]) -> str:
    """`` (+a/new, -a/old)``: the Ingresses served now and not before, and the reverse."""
    old, new = set(before), set(after)
    changes = [f"+{n}" for n in sorted(new - old)] + [f"-{n}" for n in sorted(old - new)]
    if len(changes) > 10:
        changes = [*changes[:10], f"and {len(changes) - 10} more"]
    return f" ({', '.join(changes)})" if changes else ""
