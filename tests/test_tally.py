"""Request counts held in running totals reach /metrics exactly as prometheus_client would
have counted them, whenever and from whichever thread the metrics are read."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastroute.proxy.metrics import DURATION_BUCKETS, Metrics

INGRESS, SERVICE = "default/site", "default/web:80"


def _samples(text: bytes, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of the metrics named ``prefix...``, by name and labels (no timestamps)."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _as_prometheus_counts_them(requests: list[tuple[int, float]]) -> bytes:
    """The oracle: prometheus_client's own counter and histogram, one call per request."""
    registry = CollectorRegistry()
    count = Counter("fastroute_requests", "", ["ingress", "service", "status"], registry=registry)
    duration = Histogram(
        "fastroute_request_duration_seconds",
        "",
        ["ingress", "service"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    for status, seconds in requests:
        count.labels(INGRESS, SERVICE, str(status)).inc()
        duration.labels(INGRESS, SERVICE).observe(seconds)
    return generate_latest(registry)


def _assert_same(seen: Mapping[Any, float], expected: Mapping[Any, float]) -> None:
    """Counts exactly; sums of seconds up to float rounding (added in another order)."""
    assert seen.keys() == expected.keys()
    for key, value in expected.items():
        assert seen[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


durations = st.one_of(
    st.sampled_from(DURATION_BUCKETS),  # on a bound: counted in that bucket, not the next
    st.floats(min_value=0.0, max_value=120.0, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([200, 404, 502]), durations), max_size=40),
    st.sets(st.integers(min_value=0, max_value=40)),
)
def test_counts_read_between_requests_match_prometheus_counting_each_one(
    requests: list[tuple[int, float]], reads: set[int]
) -> None:
    """Whenever /metrics is read, it shows every request counted so far, each once."""
    metrics = Metrics()
    for done, (status, seconds) in enumerate(requests):
        if done in reads:
            seen = _samples(metrics.text(), "fastroute_request")
            expected = _samples(_as_prometheus_counts_them(requests[:done]), "fastroute_request")
            _assert_same(seen, expected)
        metrics.request(INGRESS, SERVICE, status, seconds)
    seen = _samples(metrics.text(), "fastroute_request")
    _assert_same(seen, _samples(_as_prometheus_counts_them(requests), "fastroute_request"))


def test_a_scrape_in_another_thread_loses_and_doubles_nothing() -> None:
    """The status listener renders /metrics in a worker thread while requests are counted."""
    metrics = Metrics()
    stop = threading.Event()
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        while not stop.is_set():
            metrics.text()
            scrapes += 1

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        total = 0
        while total < 200_000 and (total < 20_000 or scrapes < 20):
            for _ in range(1_000):
                metrics.request(INGRESS, SERVICE, 200, 0.003)
            total += 1_000
    finally:
        stop.set()
        scraper.join()
    assert scrapes >= 1
    samples = _samples(metrics.text(), "fastroute_request")

    def sample(name: str, **extra: str) -> float:
        labels = {"ingress": INGRESS, "service": SERVICE, **extra}
        return samples[name, tuple(sorted(labels.items()))]

    assert sample("fastroute_requests_total", status="200") == total
    assert sample("fastroute_request_duration_seconds_count") == total
    assert sample("fastroute_request_duration_seconds_bucket", le="0.005") == total
    assert sample("fastroute_request_duration_seconds_bucket", le="0.0025") == 0
