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
"""

from __future__ import annotations

import gc

__all__ = ["settle"]

_settled = False


def settle() -> None:
    """Collect once, then leave every object now alive out of later collections (once)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
