"""One kind's list-then-watch loop, under trio: the only code that streams from the API.

The loop, as client-go's reflector runs it, with the cases that libraries get wrong:

1. **List** in pages (``limit``/``continue``) from the latest state. If the snapshot behind
   the continue token expires between pages (410), the list starts over unpaged. The pages
   replace the cache at once, diffed against it: what is gone was deleted meanwhile.
2. **Watch** from the list's ``resourceVersion`` with ``allowWatchBookmarks=true`` and a
   server-side ``timeoutSeconds`` (jittered so a fleet does not reconnect in step). Every
   event moves the resume point, BOOKMARKs included (they exist to move it when nothing of
   this kind changes, so that a resume does not fall out of the server's history).
3. When the stream **ends** (the server's timeout, a dropped connection), watch again from
   the last resourceVersion seen: no re-list, no lost events.
4. **410 Gone** (as the watch's HTTP status, or as an ``ERROR`` event in a 200 stream, the
   two forms servers use) means that resourceVersion is out of the server's history:
   re-list and diff (step 1). lightkube's own watch retries from the same expired version
   in a loop; kr8s re-watches it forever.
5. **Errors** (server unreachable, 5xx, 429, a refused credential) back off exponentially
   with jitter (``Backoff``) and retry the same step; a watch that was healthy resets it.
6. A **watchdog**: a watch that sends nothing (no event, no bookmark) for ``watchdog``
   seconds is given up as a dead connection and resumed. It is the stream's read timeout.

Watch streams are split on ``\\n`` only: a Kubernetes JSON encoder leaves U+0085 and U+2028
unescaped inside strings, and ``str.splitlines`` (so httpx's ``aiter_lines``) splits there.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import random
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from lightkube import AsyncClient
from lightkube.core.resource import NamespacedResource, Resource, api_info

from controller.kube.client import CredentialError, http_client
from controller.kube.store import Cache, Change

__all__ = ["ApiStatusError", "Backoff", "Reflector", "WatchOptions"]

log = logging.getLogger("fastroute.controller.kube")

MAX_LINE = 64 * 1024 * 1024  # one watch event; etcd's object limit is 1.5 MiB
MAX_PAGES = 1_000_000  # a bound on one list's pages (500 million objects at 500 a page)
HEALTHY_WATCH = 1.0  # seconds: a watch lasting this long (or sending events) resets the backoff


@dataclass(frozen=True)
class WatchOptions:
    """How a reflector lists and watches; the defaults suit a real cluster, tests shorten them.

    Attributes:
        page_size: objects per list page (``limit``); 0 lists in one response.
        watch_timeout: ``timeoutSeconds`` asked of the server, plus up to 25 % jitter.
        watchdog: seconds of silence after which a watch is given up (None: twice
            ``watch_timeout``; a server sends a bookmark about every minute anyway).
        backoff_initial, backoff_max: the first and the longest wait after an error.
        request_timeout: connecting, and each list page.
    """

    page_size: int = 500
    watch_timeout: float = 300.0
    watchdog: float | None = None
    backoff_initial: float = 0.8
    backoff_max: float = 30.0
    request_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.page_size < 0:
            raise ValueError(f"page_size must be 0 or more, got {self.page_size}")
        for name in ("watch_timeout", "backoff_initial", "backoff_max", "request_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.watchdog is not None and not (self.watchdog > 0 and math.isfinite(self.watchdog)):
            raise ValueError(f"watchdog must be a positive number of seconds, got {self.watchdog}")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")

    @property
    def silence_limit(self) -> float:
        """The watchdog, in seconds."""
        return self.watchdog if self.watchdog is not None else 2 * self.watch_timeout


@dataclass
class Backoff:
    """Exponential backoff with jitter: the n-th wait is drawn from [d/2, d], d = initial * 2^n,
    capped at ``maximum``. The jitter keeps a fleet of controllers from retrying in step
    after an API server restart."""

    initial: float
    maximum: float
    rng: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0

    def next(self) -> float:
        """The next wait, in seconds."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.failures = 0


class _Outcome(enum.Enum):
    ENDED = "ended"  # the stream ended cleanly (the server's timeout): resume
    EXPIRED = "expired"  # 410: the resume point is gone, re-list
    BROKEN = "broken"  # an error: back off, then resume
    UNREADABLE = "unreadable"  # the server sent what we cannot parse: back off, re-list


class ApiStatusError(Exception):
    """The API server answered a request with an error status (its ``Status`` message)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}" if message else f"{code} {reason}")
        self.code = code
        self.reason = reason


def _status_error(response: httpx.Response) -> ApiStatusError:
    reason, message = response.reason_phrase, ""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or "")
    return ApiStatusError(response.status_code, reason, message)


def _say(error: Exception) -> str:
    """An error for a log line (httpx's transport errors often have no message)."""
    return str(error) or type(error).__name__


def _resource_version(obj: object) -> str | None:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return version if isinstance(version, str) and version else None


async def _lines(response: httpx.Response) -> AsyncGenerator[bytearray]:
    """A watch stream's non-empty lines, split on ``\\n`` only."""
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:  # bounded by the buffer's length
            if end > start:
                yield buffer[start:end]
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_LINE:
            raise ValueError(f"a watch event longer than {MAX_LINE} bytes")
    if buffer.strip():
        yield buffer


class Reflector:
    """Keeps ``cache`` equal to one kind's objects on the server (in one namespace, or all).

    Args:
        client: the lightkube client (its configuration, credentials and HTTP client).
        resource: the lightkube resource class, e.g. ``lightkube.resources.core_v1.Service``.
        namespace: one namespace; None: all (cluster-scoped kinds ignore it).
        field_selector: e.g. ``type=kubernetes.io/tls`` for TLS Secrets only.
        options: page size, timeouts and backoff.
        on_change: called with each change to the cache, in order, from this task.

    Attributes:
        synced: set once the first list is in ``cache``.
        resource_version: where the next watch resumes (the last event or bookmark seen).
        lists, watches: how many lists completed and watches were opened (for logs and tests).
    """

    def __init__(
        self,
        client: AsyncClient,
        resource: type[Resource],
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        options: WatchOptions | None = None,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        info = api_info(resource)
        definition = info.resource
        namespaced = issubclass(resource, NamespacedResource)
        self.namespace = namespace if namespaced else None
        self.field_selector = field_selector
        self.options = options or WatchOptions()
        self.on_change = on_change
        self.cache = Cache(definition.kind, definition.api_version)
        self.synced = trio.Event()
        self.resource_version: str | None = None
        self.lists = 0
        self.watches = 0
        prefix = f"apis/{definition.group}" if definition.group else "api"
        scope = f"/namespaces/{self.namespace}" if self.namespace is not None else ""
        # relative, so that a server URL with a path (a proxy, Rancher) keeps it
        self.path = f"{prefix}/{definition.version}{scope}/{info.plural}"
        where = f"in {self.namespace}" if self.namespace is not None else "in all namespaces"
        selected = f" ({field_selector})" if field_selector else ""
        self.name = f"{info.plural}{selected} {where}" if namespaced else info.plural + selected
        self._http = http_client(client)
        self._backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)

    def __repr__(self) -> str:
        return (
            f"<Reflector {self.name}: {len(self.cache)} objects, "
            f"resourceVersion {self.resource_version}, synced={self.synced.is_set()}>"
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """List, then watch, until cancelled; ``task_status.started()`` after the first list."""
        backoff = self._backoff
        listing = True
        expired_in_a_row = 0
        while True:  # until cancelled; every pass makes one request, and failures sleep
            if listing:
                try:
                    await self._list()
                except (httpx.HTTPError, CredentialError, ApiStatusError, ValueError) as error:
                    delay = backoff.next()
                    log.warning(
                        "%s: list failed (%s); again in %.1f s", self.name, _say(error), delay
                    )
                    await trio.sleep(delay)
                    continue
                listing = False
                if not self.synced.is_set():
                    self.synced.set()
                    task_status.started()
            outcome, events, lasted = await self._watch()
            if outcome is _Outcome.EXPIRED:
                listing = True
                expired_in_a_row = 1 if events else expired_in_a_row + 1
                log.info(
                    "%s: resourceVersion %s is too old (410 Gone); listing again",
                    self.name,
                    self.resource_version,
                )
                if expired_in_a_row > 1:  # 410 right after a list: do not spin
                    await trio.sleep(backoff.next())
                continue
            expired_in_a_row = 0
            healthy = events > 0 or lasted >= HEALTHY_WATCH
            if healthy:
                backoff.reset()
            if outcome is _Outcome.UNREADABLE:
                listing = True
            elif outcome is _Outcome.ENDED and healthy:
                continue
            await trio.sleep(backoff.next())

    # -- list ----------------------------------------------------------------------------

    async def _list(self) -> None:
        """One complete list into the cache; the changes it made are emitted."""
        items: list[Any] = []
        limit = self.options.page_size
        token = ""
        version: str | None = None
        for _ in range(MAX_PAGES):
            params = {"limit": str(limit)} if limit else {}
            if token:
                params["continue"] = token
            if self.field_selector:
                params["fieldSelector"] = self.field_selector
            response = await self._http.get(
                self.path, params=params, timeout=self.options.request_timeout
            )
            if response.status_code == 410 and token:
                # the snapshot behind the continue token is gone: start over, in one piece
                log.info("%s: list snapshot expired between pages; listing unpaged", self.name)
                items, limit, token = [], 0, ""
                continue
            if response.status_code != 200:
                raise _status_error(response)
            page = await trio.to_thread.run_sync(json.loads, response.content)
            metadata = page.get("metadata") if isinstance(page, dict) else None
            page_items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(metadata, dict) or not isinstance(page_items, list | None):
                raise ValueError("the list answer is not a Kubernetes list")
            items += page_items or []
            token = str(metadata.get("continue") or "")
            if not token:
                version = metadata.get("resourceVersion")
                break
        else:
            raise ValueError(f"more than {MAX_PAGES} pages")
        if not isinstance(version, str) or not version:
            raise ValueError("the list answer has no resourceVersion")
        changes, skipped = self.cache.replace(items)
        for problem in skipped:
            log.error("%s: skipped %s", self.name, problem)
        self.resource_version = version
        self.lists += 1
        log.info(
            "%s: listed %d objects at resourceVersion %s (%d changes)",
            self.name,
            len(self.cache),
            version,
            len(changes),
        )
        for change in changes:
            self._emit(change)

    # -- watch ---------------------------------------------------------------------------

    async def _watch(self) -> tuple[_Outcome, int, float]:
        """One watch request, to its end: how it ended, the events it gave, how long it lasted."""
        options = self.options
        seconds = max(1, round(options.watch_timeout * (1 + 0.25 * random.random())))
        params = {
            "watch": "true",
            "resourceVersion": self.resource_version or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        # the read timeout is the watchdog: no byte for that long and the stream is dead
        timeout = httpx.Timeout(options.request_timeout, read=options.silence_limit)
        started = trio.current_time()
        events = 0
        self.watches += 1

        def lasted() -> float:
            return trio.current_time() - started

        try:
            async with self._http.stream("GET", self.path, params=params, timeout=timeout) as r:
                if r.status_code == 410:
                    await r.aread()
                    return _Outcome.EXPIRED, events, lasted()
                if r.status_code != 200:
                    await r.aread()
                    log.warning("%s: watch refused: %s", self.name, _status_error(r))
                    return _Outcome.BROKEN, events, lasted()
                async with aclosing(_lines(r)) as lines:
                    async for line in lines:
                        outcome = self._event(line)
                        if outcome is not None:
                            return outcome, events, lasted()
                        events += 1
        except httpx.ReadTimeout:
            log.warning("%s: watch silent for %g s; reconnecting", self.name, options.silence_limit)
            return _Outcome.BROKEN, events, lasted()
        except (httpx.HTTPError, CredentialError) as error:
            log.warning("%s: watch failed: %s", self.name, _say(error))
            return _Outcome.BROKEN, events, lasted()
        except ValueError as error:  # a line too long to be an event
            log.error("%s: unreadable watch stream: %s", self.name, error)
            return _Outcome.UNREADABLE, events, lasted()
        return _Outcome.ENDED, events, lasted()

    def _event(self, line: bytearray) -> _Outcome | None:
        """Apply one watch event; an outcome when the stream must end here."""
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
            if not isinstance(obj, dict):
                raise TypeError("its object is not a JSON object")
        except (ValueError, KeyError, TypeError) as error:
            log.error("%s: unreadable watch event (%s); listing again", self.name, error)
            return _Outcome.UNREADABLE
        if kind == "ERROR":
            if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                return _Outcome.EXPIRED
            log.warning("%s: watch error: %s", self.name, obj.get("message") or obj)
            return _Outcome.BROKEN
        version = _resource_version(obj)
        if kind != "BOOKMARK":
            try:
                change = self.cache.apply(str(kind), obj)
            except ValueError as error:
                log.error("%s: skipped a %s event: %s", self.name, kind, error)
            else:
                self._emit(change)
        if version is not None:
            self.resource_version = version
        return None

    def _emit(self, change: Change) -> None:
        if self.on_change is not None:
            self.on_change(change)
