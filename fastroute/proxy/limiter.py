"""``limit-rps``, ``limit-rpm`` and ``limit-connections``: per route, per client address.

What ingress-nginx configures, and so this (per replica, as there):

* Requests per second and per minute are nginx's ``limit_req`` with ``burst=rate x
  limit-burst-multiplier nodelay``: a leaky bucket whose level (the *excess*) drains at the
  rate, and to which each admitted request adds one. A request is refused when it would
  take the excess above the burst; refused requests add nothing. After a quiet spell a
  client may send ``burst + 1`` requests at once, then one per ``1/rate`` seconds. Nothing
  is delayed (``nodelay``): a request goes at once or is refused with ``limit.status``.
* With both rates set, a request must pass both, and only then counts toward both.
* ``limit-connections`` is nginx's ``limit_conn``: requests in progress at once from one
  address; one more is refused with ``limit.connections_status``.
* Addresses in ``limit-whitelist`` (``limit.exempt``) are never limited or counted.

State is per route (a name the caller chooses; ingress-nginx's zones are per Ingress) and
per address, in one process. Time is passed in as ``now``, one monotonic clock's reading in
seconds, so nothing here reads a clock or sleeps. One trio thread calls it: no locks.

Memory is bounded whatever the number of addresses. The rate state keeps at most
``capacity`` (route, address) entries; when a new one comes in, the one used longest ago is
forgotten, in O(1) (nginx's zone also drops its oldest states when full). A forgotten client
starts again as a new one: with a whole burst to spend. That can only favour a client whose
entry went unused while ``capacity`` others came in after it. The connection counts hold
only addresses with requests in progress, so the proxy's own connection limit bounds them.
"""

from __future__ import annotations

from collections import OrderedDict

from fastroute.ingress.model import RateLimit
from fastroute.proxy.access import within

__all__ = ["DEFAULT_CAPACITY", "ClientLimits", "Held"]

DEFAULT_CAPACITY = 65_536


class Held:
    """One request counted toward ``limit-connections``; :meth:`release` when it is done.

    Usable as a context manager. Releasing twice counts once.
    """

    __slots__ = ("_counts", "_key")

    def __init__(self, counts: dict[tuple[str, str], int] | None, key: tuple[str, str]) -> None:
        self._counts = counts
        self._key = key

    def release(self) -> None:
        counts = self._counts
        if counts is None:
            return
        self._counts = None
        left = counts[self._key] - 1
        if left:
            counts[self._key] = left
        else:
            del counts[self._key]

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


# what an address that is not counted holds: releasing it does nothing
_UNCOUNTED = Held(None, ("", ""))


class ClientLimits:
    """The per-client rate and connection state of one proxy process.

    Args:
        capacity: how many (route, address) rate entries are kept at most.
    """

    __slots__ = ("_buckets", "_capacity", "_in_progress")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity}: must be at least 1")
        self._capacity = capacity
        # (route, address) -> [last admitted at, rps excess, rpm excess], oldest used first
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._in_progress: dict[tuple[str, str], int] = {}

    def admit(self, route: str, limit: RateLimit, address: str, now: float) -> int | None:
        """The status to answer a request with (``limit.status``), or None to let it through.

        Args:
            route: whose limits these are, e.g. the Ingress's ``"namespace/name"``.
            limit: the route's limits.
            address: the client's real address.
            now: the time, in seconds, on a monotonic clock.
        """
        rps = limit.rps
        rpm = limit.rpm
        if not (rps or rpm) or (limit.exempt and within(address, limit.exempt)):
            return None
        key = (route, address)
        buckets = self._buckets
        entry = buckets.get(key)
        if entry is None:
            # nginx's new state: this request admitted, with nothing in excess
            if len(buckets) >= self._capacity:
                buckets.popitem(last=False)
            buckets[key] = [now, 0.0, 0.0]
            return None
        buckets.move_to_end(key)
        elapsed = now - entry[0]
        if elapsed < 0.0:  # a reading from before the last one: no time has passed
            elapsed = 0.0
        multiplier = limit.burst_multiplier
        # excess = what is left after draining, plus this request, never below zero
        per_second = 0.0
        if rps:
            per_second = entry[1] - rps * elapsed + 1.0
            if per_second < 0.0:
                per_second = 0.0
            elif per_second > rps * multiplier:
                return limit.status
        per_minute = 0.0
        if rpm:
            per_minute = entry[2] - rpm * elapsed / 60.0 + 1.0
            if per_minute < 0.0:
                per_minute = 0.0
            elif per_minute > rpm * multiplier:
                return limit.status
        if elapsed:
            entry[0] = now
        entry[1] = per_second
        entry[2] = per_minute
        return None

    def enter(self, route: str, limit: RateLimit, address: str) -> Held | None:
        """Count one request in progress from ``address``; None: refuse it.

        Refused means ``limit.connections`` requests from that address are in progress on
        this route already: answer ``limit.connections_status``. Otherwise release the
        returned :class:`Held` when the request is done (its response sent or abandoned).
        """
        most = limit.connections
        if not most or (limit.exempt and within(address, limit.exempt)):
            return _UNCOUNTED
        key = (route, address)
        counts = self._in_progress
        current = counts.get(key, 0)
        if current >= most:
            return None
        counts[key] = current + 1
        return Held(counts, key)

    def tracked(self) -> int:
        """How many (route, address) entries the rate state holds now."""
        return len(self._buckets)

    def in_progress(self, route: str, address: str) -> int:
        """How many requests from ``address`` on ``route`` are counted as in progress."""
        return self._in_progress.get((route, address), 0)

    def __repr__(self) -> str:
        return (
            f"ClientLimits(tracked={len(self._buckets)}/{self._capacity}, "
            f"in_progress={sum(self._in_progress.values())})"
        )
