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

Several worker processes share one set of metrics through prometheus_client's
multiprocess mode: it is chosen when ``prometheus_client`` is first imported, by the
``PROMETHEUS_MULTIPROC_DIR`` environment variable. The controller registers its reload
and readiness metrics on the same registry (``controller.reload_metrics``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "NO_ROUTE", "Metrics"]

# What ``generate_latest`` writes: the classic text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The label value of requests that matched no Ingress (or no Service), as in ingress-nginx.
NO_ROUTE = "-"

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


class Metrics:
    """The proxy's Prometheus metrics.

    Args:
        registry: where the metrics are registered; a new registry by default, so that
            several proxies in one process (tests, embedding) never collide in the global one.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
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
        # The hot path: one dict lookup for both label children of a request, instead of
        # prometheus_client's label validation and locking on every call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def request(self, ingress: str, service: str, status: int, seconds: float) -> None:
        """Count one answered request and how long it took (``""`` ingress or service: none)."""
        try:
            count, duration = self._children[ingress, service, status]
        except KeyError:
            count, duration = self._add_children(ingress, service, status)
        count.inc()
        duration.observe(seconds)

    def _add_children(self, ingress: str, service: str, status: int) -> tuple[Counter, Histogram]:
        labels = (ingress or NO_ROUTE, service or NO_ROUTE)
        children = (
            self._requests.labels(*labels, str(status)),
            self._duration.labels(*labels),
        )
        self._children[ingress, service, status] = children
        return children

    def upstream_error(self, service: str, endpoint: str, reason: str) -> None:
        """Count one failed attempt to reach ``endpoint`` (reason: connect, timeout, broken)."""
        self._upstream_errors.labels(service or NO_ROUTE, endpoint or NO_ROUTE, reason).inc()

    def auth_request(self, ingress: str, outcome: str, cached: bool, seconds: float | None) -> None:
        """An external auth check: its outcome, and how long its subrequest took (if one)."""
        ingress = ingress or NO_ROUTE
        self._auth_requests.labels(ingress, outcome, "true" if cached else "false").inc()
        if seconds is not None:
            self._auth_duration.labels(ingress).observe(seconds)

    def passthrough_connection(self, ingress: str, service: str, result: str) -> None:
        """Count one ssl-passthrough connection that ended (``result``: relayed, ...)."""
        self._passthrough.labels(ingress or NO_ROUTE, service or NO_ROUTE, result).inc()

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
        """The metrics in Prometheus' text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
