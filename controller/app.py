"""The controller: the proxy's listeners, fed from manifest files that are watched.

A change to any watched file rebuilds the RouteConfig off the request path and swaps it
in. If a file fails to parse, the last good config keeps serving and the reason is
logged. At startup, with nothing to keep, the files that do parse are served. Objects
that parse but cannot be used are skipped one by one, each with a logged reason (see
``fastroute.ingress``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
import watchfiles

from controller.manifests import MANIFEST_SUFFIXES, load_manifests
from fastroute.ingress import ClassPolicy, RouteConfig, build_config
from fastroute.proxy.headers import TrustedProxies
from fastroute.proxy.server import Limits, Proxy
from fastroute.proxy.tls import TLSContexts

__all__ = ["Controller", "Options"]

log = logging.getLogger("fastroute.controller")


@dataclass(frozen=True)
class Options:
    """Everything the controller is told on its command line."""

    manifests: Sequence[Path]
    bind: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    classes: ClassPolicy = field(default_factory=ClassPolicy)
    trusted_proxies: Sequence[str] = ()
    limits: Limits = field(default_factory=Limits)
    https_redirect_port: int = 443  # what HTTP-to-HTTPS redirects point to
    watch: bool = True


@dataclass(frozen=True)
class Listening:
    """Where the controller's listeners ended up (ports 0 become real ports)."""

    http_port: int
    https_port: int


class Controller:
    """Loads manifests into a proxy and keeps them in sync while it runs."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.proxy = Proxy(
            None,
            limits=options.limits,
            trusted=TrustedProxies(options.trusted_proxies),
            tls=TLSContexts(),
            https_redirect_port=options.https_redirect_port,
        )
        self.reloads = 0  # configs installed, the first one included

    def build(self) -> RouteConfig | None:
        """A config from the manifests, or None to keep the current one."""
        loaded = load_manifests(self.options.manifests)
        for error in loaded.errors:
            log.error("manifest: %s", error)
        if not loaded.complete and self.proxy.ready:
            log.error("keeping the last good configuration until the manifests parse again")
            return None
        config = build_config(loaded.objects, classes=self.options.classes)
        for problem in config.problems:
            (log.warning if problem.warning else log.error)("%s", problem)
        return config

    async def reload(self) -> bool:
        """Rebuild from the manifests and swap the result in; whether anything changed."""
        config = await trio.to_thread.run_sync(self.build)
        if config is None:
            return False
        await self.proxy.load(config)
        self.reloads += 1
        log.info(
            "serving %d Ingress(es): %s",
            len(config.ingresses),
            ", ".join(config.ingresses) or "none",
        )
        return True

    async def run(
        self, *, task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``task_status.started`` gets the bound ports."""
        options = self.options
        async with trio.open_nursery() as nursery:
            http = await nursery.start(
                partial(self.proxy.serve, scheme="http"), options.bind, options.http_port
            )
            https = await nursery.start(
                partial(self.proxy.serve, scheme="https"), options.bind, options.https_port
            )
            await self.reload()
            if options.watch:
                nursery.start_soon(self._watch)
            task_status.started(
                Listening(http[0].socket.getsockname()[1], https[0].socket.getsockname()[1])
            )

    async def _watch(self) -> None:
        """Reload on every change to the manifests (bursts of changes reload once).

        Folders are watched rather than files: editors save by writing a new file and
        renaming it over the old one, which a watch on the file itself would lose.
        """
        dirs = {p.resolve() for p in self.options.manifests if p.is_dir()}
        files = {p.resolve() for p in self.options.manifests if not p.is_dir()}

        def relevant(path: str) -> bool:
            changed = Path(path)
            return changed in files or (
                changed.parent in dirs and changed.suffix in MANIFEST_SUFFIXES
            )

        folders = dirs | {f.parent for f in files}
        async for changes in watchfiles.awatch(*folders, debounce=200, step=50, recursive=False):
            paths = sorted({path for _, path in changes if relevant(path)})
            if paths:
                log.info("manifests changed: %s", ", ".join(paths))
                await self.reload()
