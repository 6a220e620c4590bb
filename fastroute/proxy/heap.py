"""The garbage collector and a proxy that runs for days: what start-up built is not scanned.

CPython's cyclic collector scans every tracked object on each full collection, and a
proxy under load triggers one every few tens of thousands of requests (a burst of
requests in flight leaves objects that live past a young collection). Nearly all of
what it scans never changes: modules, functions, classes, the first configuration. On
the event loop's only thread, that pause holds every connection at once, which is what
shows as the tail latency at many connections. ``settle`` moves what exists after the
first configuration is installed out of the collector's reach (``gc.freeze``), once per
process; what is built later (other configurations, connections) is collected as before.
Frozen objects are still freed when their last reference goes; only a cycle among them
that becomes garbage stays, which bounds the cost to one start-up's worth.

The young generation is collected every ``YOUNG_THRESHOLD`` allocations instead of
CPython's 700, which suits a short script. A young collection also walks every container
a young object is (a rebuilt configuration's tables and lists of thousands of objects), so
in a controller following 10,000 Ingresses each one took 15-45 ms, and came every few
updates: those were the updates that took over 100 ms to reach traffic. Collected fifty
times less often, each costs about the same, and the old generations keep their ratios.
"""

from __future__ import annotations

import gc

__all__ = ["settle"]

YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython: 700)

_settled = False


def settle() -> None:
    """Collect once, then leave every object now alive out of later collections, and
    collect the young generation less often (once)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
