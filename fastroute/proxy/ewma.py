"""``load-balance: ewma``: peak-EWMA of each endpoint's latency, two random choices.

Sans-I/O, like ``balancer``: every time is passed in (``now``, one monotonic clock), and
the proxy reports what happened. What ingress-nginx's ``ewma`` balancer does (after
Finagle's PeakEwma), kept true here:

* Each endpoint has a moving average of its latency that decays with *time*, not with
  the number of samples: an old reading weighs ``exp(-age / DECAY)``. Reading the score
  decays it toward 0 too, so an endpoint that was slow and then left alone is tried
  again after a while instead of never.
* Peak: a sample above the average replaces it at once (a slow-down is believed
  immediately; a recovery only gradually).
* The cost of an endpoint is its average times (requests in flight to it + 1), so a
  fast endpoint that is already busy loses to an idle one that is a little slower.
* Power of two choices: two endpoints are drawn at random and the cheaper one gets the
  request. Always taking the cheapest would send every replica's burst to the same one.
* An endpoint seen for the first time starts at the mean of the others' averages (slow
  start): a new pod with no history would otherwise score 0 and take everything.

The order returned is the choice first, then the others cheapest first: the retries of
``proxy-next-upstream``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from fastroute.ingress.model import Endpoint

__all__ = ["DECAY", "PeakEwma"]

DECAY = 10.0  # seconds: a reading this old weighs 1/e (ingress-nginx's DECAY_TIME)
MAX_ENDPOINTS = 4096  # readings kept; beyond, those of idle endpoints are dropped


@dataclass(slots=True)
class _Stat:
    ewma: float  # seconds
    touched: float  # when ewma was last updated
    in_flight: int = 0


class PeakEwma:
    """Latency-aware choice among a backend's endpoints.

    >>> a, b = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    >>> ewma = PeakEwma(rng=random.Random(1))
    >>> ewma.observed(a, 0.500, now=0.0)  # a took 500 ms
    >>> ewma.observed(b, 0.010, now=0.0)
    >>> ewma.order([a, b], now=0.0)[0] == b
    True
    """

    __slots__ = ("_rng", "_stats", "decay")

    def __init__(self, *, decay: float = DECAY, rng: random.Random | None = None) -> None:
        if not (math.isfinite(decay) and decay > 0):
            raise ValueError(f"decay must be a positive number of seconds, got {decay!r}")
        self.decay = decay
        self._rng = rng or random.Random()
        self._stats: dict[Endpoint, _Stat] = {}

    def cost(self, endpoint: Endpoint, now: float) -> float:
        """The endpoint's latency average decayed to ``now``, times its requests in flight + 1."""
        stat = self._stats.get(endpoint)
        if stat is None:
            return 0.0
        return self._decayed(stat, 0.0, now) * (stat.in_flight + 1)

    def order(self, endpoints: Sequence[Endpoint], now: float) -> list[Endpoint]:
        """The endpoints to try, best first: the better of two drawn at random, then the
        others cheapest first."""
        if len(endpoints) < 2:
            return list(endpoints)
        self._slow_start(endpoints, now)
        first, second = self._rng.sample(range(len(endpoints)), 2)
        a, b = endpoints[first], endpoints[second]
        pick = b if self.cost(b, now) < self.cost(a, now) else a
        rest = sorted((e for e in endpoints if e != pick), key=lambda e: self.cost(e, now))
        return [pick, *rest]

    def started(self, endpoint: Endpoint) -> None:
        """A request went to ``endpoint``: it counts as in flight until ``finished``."""
        stat = self._stats.get(endpoint)
        if stat is None:
            if len(self._stats) >= MAX_ENDPOINTS:  # endpoints come and go: stay bounded
                self._stats = {e: s for e, s in self._stats.items() if s.in_flight}
            stat = self._stats[endpoint] = _Stat(0.0, -math.inf)
        stat.in_flight += 1

    def finished(self, endpoint: Endpoint, latency: float | None, now: float) -> None:
        """The request to ``endpoint`` is over; ``latency`` is how long its response took
        to start, None if it failed (passive health keeps failed endpoints out)."""
        stat = self._stats.get(endpoint)
        if stat is None:
            return
        stat.in_flight = max(0, stat.in_flight - 1)
        if latency is not None:
            self.observed(endpoint, latency, now)

    @contextmanager
    def measuring(self, endpoint: Endpoint, clock: Callable[[], float]) -> Iterator[None]:
        """``started`` and ``finished`` around one exchange: the endpoint is in flight for
        the block, and its latency (``clock`` readings) is folded in if the block ends
        without an exception."""
        began = clock()
        self.started(endpoint)
        try:
            yield
        except BaseException:
            self.finished(endpoint, None, clock())
            raise
        now = clock()
        self.finished(endpoint, now - began, now)

    def observed(self, endpoint: Endpoint, latency: float, now: float) -> None:
        """Fold one latency reading (seconds) into the endpoint's average."""
        stat = self._stats.get(endpoint)
        if stat is None:
            self._stats[endpoint] = _Stat(latency, now)
            return
        stat.ewma = latency if latency > stat.ewma else self._decayed(stat, latency, now)
        stat.touched = now

    def forget_missing(self, live: Iterable[Endpoint]) -> None:
        """Drop what is known of endpoints that are gone (one that comes back starts over)."""
        keep = set(live)
        self._stats = {e: s for e, s in self._stats.items() if e in keep or s.in_flight}

    def forget(self, endpoints: Iterable[Endpoint]) -> None:
        """Drop what is known of ``endpoints``, which left the config (as ``forget_missing``,
        at the cost of what left)."""
        stats = self._stats
        if stats:
            for endpoint in endpoints:
                stat = stats.get(endpoint)
                if stat is not None and not stat.in_flight:
                    del stats[endpoint]

    def _decayed(self, stat: _Stat, sample: float, now: float) -> float:
        age = max(0.0, now - stat.touched)
        weight = math.exp(-age / self.decay) if age != math.inf else 0.0
        return stat.ewma * weight + sample * (1.0 - weight)

    def _slow_start(self, endpoints: Sequence[Endpoint], now: float) -> None:
        """Endpoints never measured start at the mean of those that were."""
        stats = self._stats
        unknown = [e for e in endpoints if e not in stats or stats[e].touched == -math.inf]
        if not unknown or len(unknown) == len(endpoints):
            return
        known = [self._decayed(stats[e], 0.0, now) for e in endpoints if e not in unknown]
        mean = sum(known) / len(known)
        for e in unknown:
            stat = stats.get(e)
            if stat is None:
                stats[e] = _Stat(mean, now)
            else:
                stat.ewma, stat.touched = mean, now
