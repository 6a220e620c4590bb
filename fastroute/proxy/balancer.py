"""Which endpoint of a Backend to try next, and for how long to avoid one that failed.

Sans-I/O bookkeeping, like httpcore's pool: the proxy asks :meth:`Balancer.attempts` for
the order in which to try a backend's endpoints, tries them itself, and reports back with
:meth:`Balancer.failed` and :meth:`Balancer.succeeded`. Nothing here touches a socket or
reads a clock: every time is passed in as ``now``, a reading of one monotonic clock
(``trio.current_time()``), so tests are deterministic and never sleep. One trio thread
calls it, so there are no locks.

What ingress-nginx users expect, and what this keeps true:

* Round robin. Each backend (by ``Backend.name``) has a counter that advances by one per
  :meth:`~Balancer.attempts` call; with every endpoint healthy, the call ``c`` starts at
  endpoint ``c mod k`` and goes on in order, so over ``N`` calls each of ``k`` endpoints
  comes first exactly ``N/k`` times.
* Passive health (nginx's ``max_fails``/``fail_timeout``, with backoff). An endpoint
  reported failed is *down* until ``now + backoff``: it still appears in the list, but
  after every healthy one. The backoff starts at ``base_backoff``, and doubles up to
  ``max_backoff`` each time the endpoint fails again once its window is over (that is,
  when it is tried again and still fails). Failures reported while it is already down do
  not lengthen the window: many requests in flight can see one outage at once.
* Healthy endpoints share the load evenly: while one is down, the counter walks over the
  healthy ones only, so the endpoint after the failed one does not take its share too.
* Never fail for want of trying: when every endpoint is down, all are returned anyway (in
  round-robin order), as nginx does. The list is empty only when ``backend.usable()`` is.
* State is keyed by what it describes, not by config objects: the counter by backend name,
  the health by :class:`Endpoint` (address, port). A new RouteConfig with the same
  endpoints carries on where the old one was. Endpoints that leave the cluster are dropped
  by :meth:`~Balancer.forget_missing`, or on their own once their record goes stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fastroute.ingress.model import Backend, Endpoint

__all__ = ["IDEMPOTENT_METHODS", "Balancer", "may_retry"]

# RFC 9110 §9.2.2. Methods are case-sensitive (§9.1): b"get" is not GET.
IDEMPOTENT_METHODS: frozenset[bytes] = frozenset(
    {b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"}
)


def may_retry(method: bytes, *, request_sent: bool, body_replayable: bool = True) -> bool:
    """Whether a request whose upstream attempt failed may be sent to the next endpoint.

    Two questions, asked in this order:

    1. Could the upstream have seen the request? If not, it cannot have acted on it, and
       any method may go elsewhere. Pass ``request_sent=False`` when the connect failed,
       or when a pooled connection was found dead *before* any byte of this request was
       written to it.
    2. If it could (``request_sent=True``: any byte was written, e.g. a pooled connection
       that died while we waited for the response), only an idempotent method may be
       repeated (RFC 9110 §9.2.2: the server may have applied it once already), and
       only if its body can be sent again: pass ``body_replayable=False`` when part of a
       streamed request body went upstream and was not kept. A request with no body, or
       one whose body is buffered whole, is replayable (the default).

    Args:
        method: The request method as it came off the wire (h11 gives bytes), e.g. b"GET".
        request_sent: Whether any byte of this request was written to the failed upstream.
        body_replayable: Whether the proxy can send the request body again from its start.

    Returns:
        True if the proxy may try the next endpoint; False if it must answer 502 instead.
    """
    if not request_sent:
        return True
    return body_replayable and method in IDEMPOTENT_METHODS


@dataclass(slots=True)
class _Health:
    """The passive-health record of one endpoint that failed and has not succeeded since."""

    failures: int  # failed windows in a row (reports while already down are not counted)
    backoff: float  # the length of the current window, seconds
    until: float  # down while now < until; then tried again, and still remembered
    reason: str  # the last failure, for the repr and the log line


class Balancer:
    """Round-robin with passive health checks, over the endpoints of each Backend.

    >>> ep1, ep2 = Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080)
    >>> backend = Backend("ns", "svc", 80, endpoints=(ep1, ep2))
    >>> balancer = Balancer()
    >>> [str(e) for e in balancer.attempts(backend, now=0.0)]
    ['10.0.0.1:8080', '10.0.0.2:8080']
    >>> balancer.failed(ep2, now=0.0, reason="connection refused")
    >>> [str(e) for e in balancer.attempts(backend, now=0.5)]  # ep2's turn, but it is down
    ['10.0.0.1:8080', '10.0.0.2:8080']
    >>> _ = balancer.attempts(backend, now=1.0)  # its 1 s window is over: ep2 is back
    >>> [str(e) for e in balancer.attempts(backend, now=1.0)]
    ['10.0.0.2:8080', '10.0.0.1:8080']
    """

    __slots__ = ("_counters", "_health", "_next_prune", "_now", "base_backoff", "max_backoff")

    def __init__(self, *, base_backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        """Set up an empty balancer.

        Args:
            base_backoff: Seconds an endpoint is avoided after its first failure.
            max_backoff: The longest it is avoided, however often it fails in a row.
                A record is also forgotten once the endpoint has gone this long past its
                window without failing again (a later failure starts from ``base_backoff``).

        Raises:
            ValueError: A backoff is not a positive finite number, or max is below base.
        """
        for name, value in (("base_backoff", base_backoff), ("max_backoff", max_backoff)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if max_backoff < base_backoff:
            raise ValueError(
                f"max_backoff ({max_backoff!r}) must be at least base_backoff ({base_backoff!r})"
            )
        self.base_backoff = float(base_backoff)
        self.max_backoff = float(max_backoff)
        # Backend name -> attempts() calls so far. Not reduced mod the endpoint count: the
        # count of *healthy* endpoints varies, and `counter mod healthy` spreads load
        # evenly over them only if the counter runs on (Python ints do not overflow).
        self._counters: dict[str, int] = {}
        # Endpoints that failed and have not succeeded since; a small dict (usually empty).
        self._health: dict[Endpoint, _Health] = {}
        self._now = -math.inf  # the latest `now` seen: the repr's "as of"
        self._next_prune = -math.inf  # when failed() next sweeps out stale records

    # ------------------------------------------------------------------ the proxy's calls

    def attempts(self, backend: Backend, *, now: float) -> list[Endpoint]:
        """The endpoints to try for one request, best first; advances the round robin.

        Healthy endpoints come first, starting at this backend's next round-robin turn;
        endpoints in their failure window come last, so they are still tried when nothing
        else is left. Each call moves the backend's turn on by one.

        Args:
            backend: The route's backend; its ``usable()`` endpoints are the candidates.
            now: The monotonic clock, in seconds.

        Returns:
            A permutation of ``backend.usable()``: empty only if that is (the caller then
            answers 503 with ``backend.problem``).
        """
        if now > self._now:
            self._now = now
        usable = backend.usable()
        if len(usable) < 2:  # nothing to rotate or to order by health
            return list(usable)
        name = backend.name
        counter = self._counters.get(name, 0)
        self._counters[name] = counter + 1
        health = self._health
        if health:  # usually empty: then no endpoint is down, and no lookups are made
            healthy: list[Endpoint] = []
            down: list[Endpoint] = []
            for e in usable:
                h = health.get(e)
                (down if h is not None and now < h.until else healthy).append(e)
            if down:
                # Each group takes its own turn, so healthy endpoints share the load evenly.
                return _rotated(healthy, counter) + _rotated(down, counter)
        i = counter % len(usable)
        return [*usable[i:], *usable[:i]]

    def failed(self, endpoint: Endpoint, *, now: float, reason: str) -> None:
        """Record that connecting to ``endpoint``, or a connection to it, failed.

        Report what says the endpoint is unwell: a refused or timed-out connect, a reset
        on a fresh connection. A pooled keep-alive connection that the server closed while
        idle is not the endpoint's fault; retry it without reporting.

        Args:
            endpoint: The endpoint that failed.
            now: The monotonic clock, in seconds.
            reason: What happened, e.g. "connect: connection refused" (shown in the repr).
        """
        if now > self._now:
            self._now = now
        if now >= self._next_prune:
            self._prune(now)
            self._next_prune = now + self.max_backoff
        h = self._health.get(endpoint)
        if h is None or self._stale(h, now):
            self._health[endpoint] = _Health(1, self.base_backoff, now + self.base_backoff, reason)
        elif now < h.until:
            h.reason = reason  # already down: the same outage seen by another request
        else:
            h.failures += 1
            h.backoff = min(h.backoff * 2, self.max_backoff)
            h.until = now + h.backoff
            h.reason = reason

    def is_down(self, endpoint: Endpoint, now: float) -> bool:
        """Whether ``endpoint`` is in its failure window (tried only after the others)."""
        h = self._health.get(endpoint)
        return h is not None and now < h.until

    def succeeded(self, endpoint: Endpoint) -> None:
        """Record that ``endpoint`` answered: it is healthy, and its backoff starts over."""
        if self._health:  # usually empty: no endpoint to hash
            self._health.pop(endpoint, None)

    # ------------------------------------------------------------------ config changes

    def forget_missing(
        self, live: Iterable[Endpoint], *, backends: Iterable[str] | None = None
    ) -> None:
        """Drop the health of endpoints that are gone, after a config swap.

        Args:
            live: Every endpoint the new config still uses; the others are forgotten (if
                one comes back, it starts healthy).
            backends: If given, the names of the backends still in use; the round-robin
                turns of the others are dropped too. (Left alone, a removed backend costs
                one small int, and keeps its turn should it come back.)
        """
        keep = set(live)
        self._health = {e: h for e, h in self._health.items() if e in keep}
        if backends is not None:
            names = set(backends)
            self._counters = {n: c for n, c in self._counters.items() if n in names}

    def forget(self, endpoints: Iterable[Endpoint], backends: Iterable[str] = ()) -> None:
        """Drop the health of ``endpoints`` and the turns of ``backends``, which left the
        config: the swap's cost is what left, not what stays."""
        health, counters = self._health, self._counters
        if health:
            for endpoint in endpoints:
                health.pop(endpoint, None)
        for name in backends:
            counters.pop(name, None)

    # ------------------------------------------------------------------ internals

    def _stale(self, h: _Health, now: float) -> bool:
        # Long past its window with no new failure: a later failure is a new incident,
        # as nginx forgets its fails after fail_timeout. This also bounds the dict.
        return now >= h.until + self.max_backoff

    def _prune(self, now: float) -> None:
        stale = [e for e, h in self._health.items() if self._stale(h, now)]
        for e in stale:
            del self._health[e]

    def __repr__(self) -> str:
        turns = ", ".join(f"{name}: {c}" for name, c in self._counters.items())
        down = ", ".join(
            f"{e}: failures={h.failures} left={max(0.0, h.until - self._now):.1f}s"
            f" reason={h.reason!r}"
            for e, h in self._health.items()
        )
        now = "-" if self._now == -math.inf else f"{self._now:g}"
        return f"<Balancer turns={{{turns}}} failed={{{down}}} now={now}>"


def _rotated(endpoints: list[Endpoint], counter: int) -> list[Endpoint]:
    """``endpoints`` starting at the counter's turn among them, wrapping around."""
    if not endpoints:
        return endpoints
    i = counter % len(endpoints)
    return endpoints[i:] + endpoints[:i]
