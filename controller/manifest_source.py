"""Manifest files and folders as the controller's source, watched for changes.

Every build reads the files again (``controller.manifests``). If a file fails to parse,
the build keeps the config that is serving (the reload counts as failed) and the reason
is logged; at startup, with nothing to keep, the files that do parse are served.

Folders are watched rather than files: editors save by writing a new file and renaming
it over the old one, which a watch on the file itself would lose.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import trio
import watchfiles

from controller.manifests import MANIFEST_SUFFIXES, load_manifests
from controller.pipeline import Built
from fastroute.ingress import ClassPolicy, RouteConfig, build_config
from fastroute.ingress.settings import Settings

__all__ = ["ManifestSource"]

log = logging.getLogger("fastroute.controller")


class ManifestSource:
    """The objects in manifest files and folders (a ``controller.pipeline.Source``).

    Args:
        paths: the files and folders (a folder: its ``.yaml``, ``.yml``, ``.json`` files).
        watching: whether changes to them are followed (else only ``reload`` reads them).
        classes, configmap, settings_defaults, ssl_passthrough: as ``build_config`` takes them.
    """

    ready = True  # files are whole whenever they are read

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        watching: bool = True,
        classes: ClassPolicy | None = None,
        configmap: str | None = None,
        settings_defaults: Settings | None = None,
        ssl_passthrough: bool = False,
    ) -> None:
        self.paths = tuple(paths)
        self.watching = watching
        self.classes = classes or ClassPolicy()
        self.configmap = configmap
        self.settings_defaults = settings_defaults
        self.ssl_passthrough = ssl_passthrough

    async def build(self, current: RouteConfig | None) -> Built:
        """A config from the files as they are now (``current``: the one serving)."""
        return await trio.to_thread.run_sync(self.read, current is not None)

    def read(self, serving: bool = False) -> Built:
        """A config from the files, read in this thread; with a config ``serving``, files
        that do not parse give none (the serving one is kept)."""
        loaded = load_manifests(self.paths)
        for error in loaded.errors:
            log.error("manifest: %s", error)
        if not loaded.complete and serving:
            log.error("keeping the last good configuration until the manifests parse again")
            return Built(None, complete=False)
        config = build_config(
            loaded.objects,
            classes=self.classes,
            configmap=self.configmap,
            settings_defaults=self.settings_defaults,
            ssl_passthrough=self.ssl_passthrough,
        )
        for problem in config.problems:
            (log.warning if problem.warning else log.error)("%s", problem)
        return Built(config, loaded.objects, complete=loaded.complete)

    async def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed()`` on every change to the manifests, until cancelled.

        watchfiles folds a burst of changes into one (``debounce``). It waits for changes
        in a thread that checks ``stop`` every ``step`` ms but otherwise returns only
        every 5 s; setting ``stop`` as soon as the watch is cancelled lets the process
        stop at once rather than up to 5 s later.
        """
        if not self.watching:
            await trio.sleep_forever()
        dirs = {p.resolve() for p in self.paths if p.is_dir()}
        files = {p.resolve() for p in self.paths if not p.is_dir()}

        def relevant(path: str) -> bool:
            candidate = Path(path)
            return candidate in files or (
                candidate.parent in dirs and candidate.suffix in MANIFEST_SUFFIXES
            )

        folders = dirs | {f.parent for f in files}
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_when_cancelled, stop)
            async for changes in watchfiles.awatch(
                *folders, debounce=200, step=50, recursive=False, stop_event=stop
            ):
                paths = sorted({path for _, path in changes if relevant(path)})
                if paths:
                    log.info("manifests changed: %s", ", ".join(paths))
                    changed()
            nursery.cancel_scope.cancel()


async def _set_when_cancelled(event: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        event.set()
