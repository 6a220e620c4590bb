"""The proxy's Prometheus metrics, named in the style of ingress-nginx's.

ingress-nginx exposes ``nginx_ingress_controller_requests`` and
``nginx_ingress_controller_request_duration_seconds`` by ingress and service; the
same dashboards and alerts carry over with the ``fastroute_`` prefix:

- ``fastroute_requests_total{ingress,service,status}``: counter
- ``fastroute_request_duration_seconds{ingress,service}``: histogram
- ``fastroute_upstream_errors_total{service,endpoint,reason}``: counter
- ``fastroute_accept_errors_total{error}``: counter (errno name: EMFILE, ENFILE, ...)
- ``fastroute_idle_connections_closed_total{limit}``: counter, closed for room (limit:
  max_connections, descriptors)
- ``fastroute_ssl_passthrough_connections_total{ingress,service,result}``: counter, TLS
  connections relayed undecrypted, counted when they end (result: relayed, unreachable,
  no_endpoints)
- ``fastroute_basic_auth_checks_total{result}``: counter, passwords checked for
  ``auth-type: basic`` (result: cached, passed, refused, timeout)

Bounded by the configuration. Every ``ingress``, ``service`` and ``endpoint`` label
value names an object of the configuration served: a request that matched no Ingress is
counted under ``-``, whatever host and path it asked for. When a new configuration is
installed (``configure``), the series of Ingresses, backends and endpoints that left it
are removed, at the cost of what left (an index of the series by those labels), so the
series count follows the configuration, not its history. With ``max_ingresses``
(``--metrics-max-ingresses``), only the oldest Ingresses have series of their own; the
others share ``ingress="_other",service="_other"`` (``OTHER``), so do requests that
finish after their Ingress or backend left.

Requests are counted in running totals (``fastroute.proxy.tally``) and handed to
prometheus_client by ``flush``: before ``text`` renders, before series are removed, and,
in multiprocess mode, every watchdog tick.

Several worker processes share one set of metrics through prometheus_client's
multiprocess mode: it is chosen when ``prometheus_client`` is first imported, by the
``PROMETHEUS_MULTIPROC_DIR`` environment variable. The controller registers its reload
and readiness metrics on the same registry (``controller.reload_metrics``). Its files
can only grow: a removed series is dropped from the worker's memory, but its last values
stay in the files, and so in ``/metrics``, until the supervisor restarts (prometheus_client
cannot remove series in that mode); ``max_ingresses`` bounds them there.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from fastroute.ingress.in_use import departed
from fastroute.proxy.tally import Tally, bucket_index

if TYPE_CHECKING:
    from fastroute.ingress.model import Departures, Endpoint, InUse

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "NO_ROUTE", "OTHER", "Metrics"]

# What ``generate_latest`` writes: the classic text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The label value of requests that matched no Ingress (or no Service), as in ingress-nginx.
NO_ROUTE = "-"

# The label value of Ingresses (and their Services) that have no series of their own:
# beyond ``max_ingresses``, or gone from the configuration when their request finished.
# Kubernetes names cannot start with "_", so it never names an object.
OTHER = "_other"

# Prometheus' default buckets start at 5 ms, coarse for a proxy that adds well under one;
# the top ones reach the default upstream timeout (60 s) so slow backends stay visible.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# prometheus_client's upper bounds for them, infinity last
_BOUNDS = (*DURATION_BUCKETS, float("inf"))


class Metrics:
    """The proxy's Prometheus metrics.

    Args:
        registry: where the metrics are registered; a new registry by default, so that
            several proxies in one process (tests, embedding) never collide in the global one.
        max_ingresses: how many Ingresses have series of their own, the oldest first
            (None: all; 0: none, as ingress-nginx's ``--metrics-per-host=false`` drops
            its host label); the others share ``OTHER``.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, max_ingresses: int | None = None
    ) -> None:
        if max_ingresses is not None and max_ingresses < 0:
            raise ValueError(f"max_ingresses must be 0 or more, got {max_ingresses}")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_ingresses = max_ingresses
        self._requests = Counter(
            "fastroute_requests",
            "Requests answered, by Ingress (namespace/name), Service (namespace/name:port) "
            "and status code; '-' when none matched.",
            ["ingress", "service", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "fastroute_request_duration_seconds",
            "Time from a request's head to the end of its answer, by Ingress and Service.",
            ["ingress", "service"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._upstream_errors = Counter(
            "fastroute_upstream_errors",
            "Failed attempts to reach an endpoint, by Service, endpoint and reason "
            "(connect, timeout, broken).",
            ["service", "endpoint", "reason"],
            registry=self.registry,
        )
        self._accept_errors = Counter(
            "fastroute_accept_errors",
            "Failed accepts on the traffic listeners, by errno name: EMFILE or ENFILE means "
            "out of file descriptors (accepting pauses until it works again).",
            ["error"],
            registry=self.registry,
        )
        self._idle_closed = Counter(
            "fastroute_idle_connections_closed",
            "Idle client connections (keep-alive, or no request sent yet) closed to make room "
            "for new ones, by the limit reached: max_connections (--max-connections) or "
            "descriptors (the process's file descriptor limit).",
            ["limit"],
            registry=self.registry,
        )
        self._passthrough = Counter(
            "fastroute_ssl_passthrough_connections",
            "TLS connections relayed undecrypted (ssl-passthrough), by Ingress, Service and "
            "result: relayed, unreachable (no endpoint took the connection), no_endpoints.",
            ["ingress", "service", "result"],
            registry=self.registry,
        )
        self._basic_auth = Counter(
            "fastroute_basic_auth_checks",
            "Passwords checked for auth-type: basic, by result: cached (verified a moment ago: "
            "no hash checked), passed, refused (a hash checked, no match; unknown users too), "
            "timeout (answered 500).",
            ["result"],
            registry=self.registry,
        )
        self._auth_requests = Counter(
            "fastroute_auth_requests",
            "External auth checks (auth-url), by Ingress, outcome (allowed, unauthorized, "
            "forbidden, refused: another status, error, timeout, unreachable) and whether "
            "the answer came from the auth cache.",
            ["ingress", "outcome", "cached"],
            registry=self.registry,
        )
        self._auth_duration = Histogram(
            "fastroute_auth_request_duration_seconds",
            "Time an auth subrequest took (cached answers excluded), by Ingress.",
            ["ingress"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        # The hot path: one dict lookup for a request's running totals, which ``flush``
        # hands to prometheus_client (``fastroute.proxy.tally``), instead of its label
        # validation, locking and bucket search on every request.
        self._children: dict[tuple[str, str, int], Tally] = {}
        self._flushing = threading.Lock()  # flushes come from the proxy's thread and a scrape's
        # its keys by Ingress and by Service, to drop the ones whose labels change
        self._cached: dict[str, dict[str, set[tuple[str, str, int]]]] = {
            "ingress": {},
            "service": {},
        }
        # the series written, by the config object a label names (see _Series)
        self._series = series = _Series(
            {
                self._requests: ("ingress", "service", None),
                self._duration: ("ingress", "service"),
                self._upstream_errors: ("service", "endpoint", None),
                self._passthrough: ("ingress", "service", None),
                self._auth_requests: ("ingress", None, None),
                self._auth_duration: ("ingress",),
            }
        )
        # prometheus_client's multiprocess mode: other processes read the files
        self.in_files = series.multiprocess
        # the configuration served (``configure``); None: not told, every label is taken
        self._live: frozenset[str] | None = None  # its Ingresses
        self._labelled: frozenset[str] | None = None  # those with series of their own
        self._in_use: InUse | None = None  # its backends and endpoints

    # ------------------------------------------------------------------ the configuration

    def configure(
        self, ingresses: Sequence[str], in_use: InUse, gone: Departures | None = None
    ) -> int:
        """The configuration now served: its Ingresses, oldest first, what it serves and
        uses, and what left since the one served before (None: found by comparing the
        sets). The series of what left are removed (and of Ingresses no longer among the
        oldest ``max_ingresses``); returns how many.

        The work is what left (``InUse.departures``), and ``max_ingresses`` when set.
        """
        before = self._in_use
        if in_use is before:
            return 0
        cap = self.max_ingresses
        live = in_use.ingresses
        labelled = live if cap is None else frozenset(ingresses[:cap])
        old_labelled = self._labelled
        self._live, self._labelled, self._in_use = live, labelled, in_use
        if before is None or old_labelled is None:
            self._uncache_all()  # labels were taken as they came
            return 0
        if gone is None:
            gone = departed(before, in_use)
        removed = 0
        series = self._series
        # counts still held are handed over first, while their series exist
        if cap is None:
            self._uncache("ingress", gone.ingresses)
            removed += series.forget("ingress", gone.ingresses)
        else:
            # left, or now with a label of its own (or no longer)
            self._uncache("ingress", gone.ingresses | (old_labelled ^ labelled))
            removed += series.forget("ingress", old_labelled - labelled)
        self._uncache("service", gone.backends)
        removed += series.forget("service", gone.backends)
        removed += series.forget("endpoint", (str(e) for e in gone.endpoints))
        return removed

    def _uncache(self, kind: str, values: Iterable[str]) -> None:
        """Drop the cached children of requests of these Ingresses (or Services)."""
        index, other = (
            self._cached[kind],
            self._cached["service" if kind == "ingress" else "ingress"],
        )
        children = self._children
        for value in values:
            for key in index.pop(value, ()):
                tally = children.pop(key, None)
                if tally is not None:
                    with self._flushing:
                        tally.flush()  # what it counted goes to the labels it had
                name = key[0] if kind == "service" else key[1]
                keys = other.get(name)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del other[name]

    def _uncache_all(self) -> None:
        self.flush()
        self._children = {}
        self._cached = {"ingress": {}, "service": {}}

    def _ingress_label(self, ingress: str) -> str:
        """``ingress``'s label value: its own, ``NO_ROUTE``, or ``OTHER``."""
        if not ingress or ingress == NO_ROUTE:
            return NO_ROUTE
        labelled = self._labelled
        return ingress if labelled is None or ingress in labelled else OTHER

    def _service_label(self, service: str) -> str:
        """``service``'s label value: its own while the configuration uses it."""
        if not service or service == NO_ROUTE:
            return NO_ROUTE
        in_use = self._in_use
        return service if in_use is None or service in in_use.backends else OTHER

    def _endpoint_label(self, endpoint: Endpoint | str) -> str:
        """``endpoint``'s label value: its own while the configuration uses it."""
        if not endpoint:
            return NO_ROUTE
        in_use = self._in_use
        if in_use is None or isinstance(endpoint, str) or endpoint in in_use.endpoints:
            return str(endpoint)
        return OTHER

    # ------------------------------------------------------------------ counting

    def request(self, ingress: str, service: str, status: int, seconds: float) -> None:
        """Count one answered request and how long it took (``""`` ingress or service: none)."""
        try:
            totals = self._children[ingress, service, status].totals
        except KeyError:
            added = self._add_children(ingress, service, status, seconds)
            if added is None:
                return
            totals = added
        totals[0] += 1
        totals[1] += seconds
        totals[bucket_index(_BOUNDS, seconds)] += 1

    def flush(self) -> None:
        """Hand the requests counted since the last flush to prometheus_client.

        ``text`` does it before it renders; with prometheus_client's multiprocess mode
        (``--workers``), whose files other processes read, the proxy does it every
        watchdog tick. Safe from another thread than the one counting requests.
        """
        with self._flushing:
            for tally in list(self._children.values()):
                tally.flush()

    def _add_children(
        self, ingress: str, service: str, status: int, seconds: float
    ) -> list[float] | None:
        """The running totals of a new key, or None when the request was counted at once."""
        label = self._ingress_label(ingress)
        labels = (label, OTHER if label == OTHER else self._service_label(service))
        series = self._series
        children = (
            series.child(self._requests, (*labels, str(status))),
            series.child(self._duration, labels),
        )
        # a request of an Ingress or Service that left is counted, not cached: its key
        # would never be dropped
        live, in_use = self._live, self._in_use
        if (live is None or ingress in live or label == NO_ROUTE) and (
            in_use is None or label == OTHER or service in in_use.backends or labels[1] == NO_ROUTE
        ):
            key = (ingress, service, status)
            tally = Tally(*children, len(_BOUNDS))
            self._children[key] = tally
            self._cached["ingress"].setdefault(ingress, set()).add(key)
            self._cached["service"].setdefault(service, set()).add(key)
            return tally.totals
        children[0].inc()
        children[1].observe(seconds)
        return None

    def upstream_error(self, service: str, endpoint: Endpoint | str, reason: str) -> None:
        """Count one failed attempt to reach ``endpoint`` (reason: connect, timeout, broken)."""
        labels = (self._service_label(service), self._endpoint_label(endpoint), reason)
        self._series.child(self._upstream_errors, labels).inc()

    def auth_request(self, ingress: str, outcome: str, cached: bool, seconds: float | None) -> None:
        """An external auth check: its outcome, and how long its subrequest took (if one)."""
        label = self._ingress_label(ingress)
        labels = (label, outcome, "true" if cached else "false")
        self._series.child(self._auth_requests, labels).inc()
        if seconds is not None:
            self._series.child(self._auth_duration, (label,)).observe(seconds)

    def passthrough_connection(self, ingress: str, service: str, result: str) -> None:
        """Count one ssl-passthrough connection that ended (``result``: relayed, ...)."""
        label = self._ingress_label(ingress)
        labels = (label, OTHER if label == OTHER else self._service_label(service), result)
        self._series.child(self._passthrough, labels).inc()

    def basic_auth_check(self, result: str) -> None:
        """Count one password checked for basic auth (``result``: cached, passed, ...)."""
        self._basic_auth.labels(result).inc()

    def accept_error(self, error: str) -> None:
        """Count one failed accept on a traffic listener (``error``: the errno's name)."""
        self._accept_errors.labels(error).inc()

    def idle_connection_closed(self, limit: str) -> None:
        """Count one idle client connection closed to make room (``limit``: which one)."""
        self._idle_closed.labels(limit).inc()

    def text(self) -> bytes:
        """The metrics in Prometheus' text format (``CONTENT_TYPE``), counts flushed first."""
        self.flush()
        return generate_latest(self.registry)


class _Series:
    """The label sets written to each labelled metric, indexed by the value of each label
    that names a configuration object (ingress, service, endpoint), so that the series of
    an object that left are found without looking at the others.

    ``NO_ROUTE`` and ``OTHER`` name no object: their series are never removed (there are
    few of them: one per status, reason or result).
    """

    __slots__ = ("_by", "_kinds", "multiprocess")

    def __init__(self, kinds: dict[Any, tuple[str | None, ...]]) -> None:
        self._kinds = kinds  # metric -> the kind of object each of its labels names
        self._by: dict[str, dict[str, set[tuple[Any, tuple[str, ...]]]]] = {
            "ingress": {},
            "service": {},
            "endpoint": {},
        }
        self.multiprocess = any(
            name in os.environ for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
        )

    def child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """``metric.labels(*labels)``, the series noted under the objects its labels name."""
        for kind, value in zip(self._kinds[metric], labels, strict=True):
            if kind is not None and value != NO_ROUTE and value != OTHER:
                self._by[kind].setdefault(value, set()).add((metric, labels))
        return metric.labels(*labels)

    def forget(self, kind: str, values: Iterable[str]) -> int:
        """Remove the series that name any of ``values`` (of ``kind``); how many."""
        index = self._by[kind]
        removed = 0
        for value in values:
            for metric, labels in index.pop(value, ()):
                self._unindex(metric, labels, kind)
                self._remove(metric, labels)
                removed += 1
        return removed

    def _unindex(self, metric: Any, labels: tuple[str, ...], skip: str) -> None:
        """Drop the series from the indexes of its other labels."""
        for kind, value in zip(self._kinds[metric], labels, strict=True):
            if kind is None or kind == skip:
                continue
            found = self._by[kind].get(value)
            if found is not None:
                found.discard((metric, labels))
                if not found:
                    del self._by[kind][value]

    def _remove(self, metric: Any, labels: tuple[str, ...]) -> None:
        if not self.multiprocess:
            metric.remove(*labels)
            return
        # the worker's files keep the series (see the module's docstring): the child is
        # dropped from memory all the same, without a warning per series
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            metric.remove(*labels)
