"""The controller's own metrics: configuration reloads and readiness.

They describe the application (a config built from a source and installed, a process
ready for traffic), not the proxy a user embeds, so they live here and are registered
on the proxy's registry: one ``/metrics`` page shows both. Named as ingress-nginx's
``nginx_ingress_controller_config_last_reload_successful(_timestamp_seconds)``, with
the ``fastroute_`` prefix, so the same dashboards and alerts carry over:

- ``fastroute_config_reloads_total{result}``: counter (result: success, failure)
- ``fastroute_config_last_reload_successful``: gauge, 1 or 0
- ``fastroute_config_last_reload_successful_timestamp_seconds``: gauge, Unix time
- ``fastroute_ready``: gauge, processes ready to serve

With worker processes (prometheus_client's multiprocess mode) each gauge says how the
processes' values combine: ``fastroute_ready`` sums to the number of ready processes
(the supervisor's ``/readyz`` reads it), and the last reload counts as successful only
if it was in every live process.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ReloadMetrics"]


class ReloadMetrics:
    """Reloads counted by result, and whether this process is ready.

    Args:
        registry: where the metrics are registered (the proxy's ``Metrics.registry``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        reloads = Counter(
            "fastroute_config_reloads",
            "Configuration reloads, by result: a failure is a manifest that did not parse "
            "or a config that could not be built.",
            ["result"],
            registry=registry,
        )
        # Both outcomes exist from the start, so a rate() over failures is 0, not absent.
        self._results = {True: reloads.labels("success"), False: reloads.labels("failure")}
        self._last_ok = Gauge(
            "fastroute_config_last_reload_successful",
            "Whether the last configuration reload succeeded (in every worker process).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._last_ok_time = Gauge(
            "fastroute_config_last_reload_successful_timestamp_seconds",
            "When the last successful configuration reload happened (Unix time).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._ready = Gauge(
            "fastroute_ready",
            "Proxy processes ready to serve: a config is loaded and they are not draining.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def config_reload(self, ok: bool) -> None:
        """Count one configuration reload and remember whether (and when) it succeeded."""
        self._results[ok].inc()
        self._last_ok.set(1 if ok else 0)
        if ok:
            self._last_ok_time.set(time.time())

    def set_ready(self, ready: bool) -> None:
        """Report whether this process serves (``/readyz`` of a supervisor sums them)."""
        self._ready.set(1 if ready else 0)
