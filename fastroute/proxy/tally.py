"""Request counts kept in plain lists on the request path, handed to prometheus_client later.

prometheus_client takes a lock for every value it changes and finds a histogram's bucket
in a Python loop: about 15,000 instructions per request for one counter and one
histogram, a tenth of all the proxy spends on a request. A ``Tally`` instead adds to a
list of running totals (no lock: requests are counted by the proxy's one thread) and
``flush`` hands the growth since its last call to the prometheus_client children, before
the metrics are read (a scrape) or their series removed, and once per watchdog tick for
the files of prometheus_client's multiprocess mode.

The totals only grow, and only the proxy's thread writes them; ``flush`` may run in
another thread (the status listener renders ``/metrics`` in one), so it reads a copy and
keeps what it handed over in a list of its own: a request counted meanwhile is handed
over by the next flush, never lost or counted twice.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

__all__ = ["Tally", "bucket_index"]

# totals[0]: requests, totals[1]: their seconds added up, totals[FIRST_BUCKET + i]: those
# that fell in bucket i (the first upper bound at or above their seconds)
FIRST_BUCKET = 2


def bucket_index(bounds: Sequence[float], seconds: float) -> int:
    """Where a request of ``seconds`` is counted in a ``Tally``'s totals: prometheus_client's
    bucket (the first bound ``>=`` it; ``bounds`` ends with infinity), offset."""
    return bisect_left(bounds, seconds) + FIRST_BUCKET


class Tally:
    """The running totals of one ``(ingress, service, status)`` and the prometheus_client
    children (a counter's and a histogram's) they are handed to."""

    __slots__ = ("_handed", "count", "duration", "totals")

    def __init__(self, count: Any, duration: Any, buckets: int) -> None:
        self.count = count
        self.duration = duration
        self.totals: list[float] = [0, 0.0] + [0] * buckets
        self._handed: list[float] = list(self.totals)

    def flush(self) -> None:
        """Hand the growth since the last flush to the children (callers serialize flushes)."""
        handed = self._handed
        if self.totals[0] == handed[0]:
            return
        totals = self.totals[:]  # one copy: a request counted during this flush waits
        self.count.inc(totals[0] - handed[0])
        # prometheus_client has no public way to add many observations at once: its
        # histogram child keeps a value per bucket (not cumulative) and one for the sum
        duration = self.duration
        duration._sum.inc(totals[1] - handed[1])
        buckets = duration._buckets
        for i in range(len(buckets)):
            grown = totals[FIRST_BUCKET + i] - handed[FIRST_BUCKET + i]
            if grown:
                buckets[i].inc(grown)
        self._handed = totals
