"""Which Ingress statuses need a write, and when: the bookkeeping behind ``Publisher``.

Sans-IO and clock-free (callers pass ``now``), so every rule here is plain code, tested
without a server. The book holds, per Ingress, the status last seen (from the watch, a
snapshot, or the answer to our own write) and whether we serve it; the publisher tells it
what changed, one Ingress at a time, and asks it which writes are due. A change costs
O(1): nothing here walks every Ingress except ``sweep``, which the publisher calls when
the value to publish changes, when it starts leading, and every status interval.

The rules:

* An Ingress we serve must say ``want``; one we do not serve is cleared only if it says a
  value we published (another controller's value is left alone). ``want`` None: the
  value is not known (the publish Service cannot be read): nothing is written.
* Our own write comes back as a watch event saying what we wrote: that asks for nothing.
  An observation older than what we know (a lagging watch, a stale snapshot: by
  ``resourceVersion``, when both are integers, as etcd's are) is ignored.
* **Fights.** Another writer may keep changing what we wrote (two controllers claiming
  the same Ingress). Each write holds back the next write of the same value: by
  ``PACE_BASE`` seconds after a first write, doubling for each write that follows its
  previous one within ``PACE_QUIET``, up to ``PACE_MAX``, with jitter. A status changed
  once, long after our last write (a ``kubectl edit``, a restore from backup), is written
  back at once; so is a new value of ours (the publish Service's address changed).
* **Rate.** All writes together are held to ``WriteBudget``'s rate (a token bucket): the
  first publication of 10,000 statuses, or a restore of as many Ingresses, takes about a
  hundred seconds instead of taking the CPU the proxy and the rebuilds need (and the API
  server's). One Ingress's write back goes at once (the bucket holds a small burst).
* **Failures** (5xx, 429, 409, timeouts, a lost connection) are retried with exponential
  backoff and jitter: the first retry after 1-2 s, then up to ``RETRY_MAX``. A refusal
  that retrying cannot fix (403, 400, 422) waits for the next change or sweep.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.kube.ingress_status import WRITE_RATE, Status, as_entries, current_status
from controller.kube.reflector import Backoff
from fastroute.ingress.objects import mapping, text

__all__ = [
    "PACE_BASE",
    "PACE_MAX",
    "PACE_QUIET",
    "RETRY_FIRST",
    "RETRY_MAX",
    "WRITE_RATE",
    "StatusBook",
    "WriteBudget",
]

PACE_BASE = 1.0  # seconds a write holds back the next write of the same Ingress
PACE_MAX = 30.0  # the longest hold, in a fight that goes on
PACE_QUIET = 60.0  # a write this long after the previous one starts the holds over
RETRY_FIRST = 2.0  # the first retry after a failed write comes within this (from half of it)
RETRY_MAX = 30.0  # the longest wait between retries


@dataclass(slots=True)
class _Entry:
    """One Ingress as the book knows it."""

    namespace: str
    name: str
    obj: Mapping[str, Any] | None  # its latest version seen (None: known only from a write)
    status: Status  # status.loadBalancer.ingress as last seen, normalized
    version: str  # the resourceVersion it was seen at
    written: Status | None = None  # the value of our last successful write
    last_write: float = -math.inf
    streak: int = 0  # writes so far, each within PACE_QUIET of the one before
    hold_until: float = -math.inf  # no rewrite of the same value before this (fights)
    failures: int = 0  # failed writes in a row
    retry_at: float = -math.inf  # no write before this (backoff after a failure)
    in_flight: bool = False


def _newer(version: str, than: str) -> bool | None:
    """Whether resourceVersion ``version`` comes after ``than``; None: cannot tell."""
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return None


class StatusBook:
    """The statuses of the Ingresses, what they should say, and the writes due.

    Args:
        rng: the jitter's source (a seeded one in tests).
    """

    def __init__(self, rng: Callable[[], float] = random.random) -> None:
        self._rng = rng
        self.want: Status | None = None
        self._want_raw: list[dict[str, str]] | None = None  # want as the API spells it
        self._last_raw: object = None  # the last status parsed, as the API spelled it...
        self._last_status: Status = ()  # ...and parsed
        self.published: list[Status] = []  # values we published, newest last
        self.served: frozenset[str] = frozenset()
        self._entries: dict[str, _Entry] = {}
        self._due: list[tuple[float, int, str]] = []  # (time, sequence, key), a heap
        self._queued: dict[str, float] = {}  # key -> its time in _due (the live one)
        self._sequence = 0
        self.in_flight = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"<StatusBook {len(self._entries)} Ingresses, {len(self._queued)} queued, "
            f"{self.in_flight} in flight>"
        )

    # -- what should be ---------------------------------------------------------------

    def set_want(self, want: Status | None, remember: int = 8) -> bool:
        """The value our Ingresses should say (None: unknown); whether it changed.

        A change asks for a ``sweep``. The last ``remember`` values are kept as ours, to
        clear them from Ingresses we stop serving.
        """
        if want == self.want:
            return False
        self.want = want
        self._want_raw = None if want is None else as_entries(want)
        if want is not None and want not in self.published:
            self.published = [*self.published, want][-remember:]
        return True

    def set_served(self, served: Iterable[str], now: float) -> int:
        """The keys (``namespace/name``) of the Ingresses we serve; those that joined or
        left are checked. Returns how many were."""
        fresh = frozenset(served)
        changed = fresh.symmetric_difference(self.served)
        self.served = fresh
        for key in changed:
            self.check(key, now)
        return len(changed)

    # -- what is ----------------------------------------------------------------------

    def observe(self, key: str, obj: Mapping[str, Any], now: float) -> None:
        """An Ingress as the watch (or a snapshot) shows it now."""
        version = text(mapping(obj.get("metadata")).get("resourceVersion"))
        entry = self._entries.get(key)
        if entry is not None:
            if entry.obj is obj or _newer(version, entry.version) is False:
                return  # seen already, or older than what we know (our write's answer)
            if version == entry.version:
                entry.obj = obj  # the version our write's answer told of: nothing new
                return
        status = self._status(obj)
        if entry is None:
            namespace, _, name = key.partition("/")
            self._entries[key] = _Entry(namespace, name, obj, status, version)
        else:
            entry.obj, entry.status, entry.version = obj, status, version
        self.check(key, now)

    def forget(self, key: str) -> None:
        """The Ingress was deleted."""
        entry = self._entries.pop(key, None)
        if entry is not None and entry.in_flight:
            self.in_flight -= 1  # its write's outcome finds no entry: counted here
        self._queued.pop(key, None)  # its heap item is skipped when it comes up

    def retain(self, keys: Iterable[str]) -> None:
        """Forget every Ingress not in ``keys`` (a snapshot's: the others were deleted)."""
        keep = set(keys)
        for key in [k for k in self._entries if k not in keep]:
            self.forget(key)

    def get(self, key: str) -> Mapping[str, Any] | None:
        """The Ingress's latest version seen, or None."""
        entry = self._entries.get(key)
        return entry.obj if entry is not None else None

    def status(self, key: str) -> Status | None:
        """What the Ingress's status says, as the book knows it."""
        entry = self._entries.get(key)
        return entry.status if entry is not None else None

    def _status(self, obj: Mapping[str, Any]) -> Status:
        raw = mapping(mapping(obj.get("status")).get("loadBalancer")).get("ingress")
        if not raw:
            return ()
        if raw == self._want_raw and self.want is not None:
            return self.want  # the common case, without parsing a single address
        if raw == self._last_raw:
            return self._last_status  # as the last one parsed (thousands say the same)
        status = current_status(obj)
        self._last_raw, self._last_status = raw, status
        return status

    # -- what to write ----------------------------------------------------------------

    def needed(self, key: str) -> Status | None:
        """The value to write to this Ingress now, or None: it says what it should."""
        entry = self._entries.get(key)
        if entry is None or self.want is None:
            return None
        if key in self.served:
            return self.want if entry.status != self.want else None
        if entry.status and entry.status in self.published:
            return ()
        return None

    def check(self, key: str, now: float) -> None:
        """Queue the Ingress if it needs a write (at once, or when its hold ends)."""
        entry = self._entries.get(key)
        if entry is None or entry.in_flight:
            return
        value = self.needed(key)
        if value is None:
            return
        # the hold is for writing the same value again (a fight); a new value goes at once
        held = entry.hold_until if value == entry.written else -math.inf
        self._queue(key, max(now, entry.retry_at, held))

    def sweep(self, keys: Iterable[str], now: float) -> None:
        """``check`` each of ``keys`` (all of them: ``keys()``)."""
        for key in keys:
            self.check(key, now)

    def keys(self) -> list[str]:
        """Every Ingress the book holds (a copy: the book may change while it is walked)."""
        return list(self._entries)

    def next_due(self) -> float | None:
        """When the earliest queued write is due (None: nothing queued)."""
        while self._due:
            when, _, key = self._due[0]
            if self._queued.get(key) == when:
                return when
            heapq.heappop(self._due)  # superseded or forgotten
        return None

    def pop_due(self, now: float) -> tuple[str, str, str, Status] | None:
        """The next write due by ``now``: (key, namespace, name, value); it is then in
        flight until ``wrote`` or ``failed``. None: nothing due."""
        while True:  # bounded: each turn pops one heap item
            when = self.next_due()
            if when is None or when > now:
                return None
            _, _, key = heapq.heappop(self._due)
            del self._queued[key]
            entry = self._entries[key]
            value = self.needed(key)
            if value is None:
                continue  # fixed meanwhile (by the watch, or by someone else)
            entry.in_flight = True
            self.in_flight += 1
            return key, entry.namespace, entry.name, value

    def busy(self, now: float) -> bool:
        """A write is in flight, or due by ``now``."""
        when = self.next_due()
        return self.in_flight > 0 or (when is not None and when <= now)

    def wrote(self, key: str, value: Status, version: str, now: float) -> None:
        """A write succeeded; ``version``: the resourceVersion its answer carried."""
        entry = self._done(key)
        if entry is None:
            return
        if not version or _newer(entry.version, version) is not True:
            entry.status, entry.version = value, version or entry.version
        entry.streak = entry.streak + 1 if now - entry.last_write < PACE_QUIET else 0
        entry.written, entry.last_write = value, now
        entry.failures, entry.retry_at = 0, -math.inf
        hold = min(PACE_MAX, PACE_BASE * 2.0**entry.streak)
        entry.hold_until = now + hold * (0.5 + 0.5 * self._rng())
        self.check(key, now)

    def failed(self, key: str, now: float, *, retry: bool) -> float | None:
        """A write failed; with ``retry``, it is queued again after a backoff (returned,
        in seconds); otherwise it waits for the next change or sweep."""
        entry = self._done(key)
        if entry is None:
            return None
        backoff = Backoff(RETRY_FIRST, RETRY_MAX, rng=self._rng, failures=entry.failures)
        wait = backoff.next()
        entry.failures = backoff.failures
        entry.retry_at = now + wait
        if not retry:
            return None
        self.check(key, now)
        return wait

    def abandoned(self, key: str) -> None:
        """A write was not sent, or its outcome is unknown (leadership lost): the Ingress
        waits for the next change or sweep, without a backoff."""
        self._done(key)

    def _done(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or not entry.in_flight:
            return None
        entry.in_flight = False
        self.in_flight -= 1
        return entry

    def _queue(self, key: str, when: float) -> None:
        queued = self._queued.get(key)
        if queued is not None and queued <= when:
            return
        self._queued[key] = when
        self._sequence += 1
        heapq.heappush(self._due, (when, self._sequence, key))


class WriteBudget:
    """A token bucket: ``rate`` writes a second on average, ``burst`` at once.

    Args:
        rate: tokens added per second.
        burst: the most tokens held (so the most writes sent at once after a quiet time).
    """

    def __init__(self, rate: float = WRITE_RATE, burst: int = 10) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"the write rate must be a positive number, got {rate}")
        if burst < 1:
            raise ValueError(f"the burst must be at least 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = -math.inf  # when _tokens was last brought up to date

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def ready_at(self, now: float) -> float:
        """When the next write may be sent (``now`` if at once)."""
        self._refill(now)
        return now if self._tokens >= 1 else now + (1 - self._tokens) / self.rate

    def spend(self, now: float) -> None:
        """A write was sent."""
        self._refill(now)
        self._tokens -= 1
