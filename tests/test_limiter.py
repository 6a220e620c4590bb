"""Per-client limits: how many requests a client gets through, and when, with explicit times.

The semantics are nginx's ``limit_req ... burst=rate*multiplier nodelay`` and
``limit_conn`` as ingress-nginx configures them (its docs' "Rate Limiting" and
test/e2e/annotations/limitconnections.go): after a quiet spell ``burst + 1`` requests go
through at once, then one per ``1/rate`` seconds; refused requests do not count.
"""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.ingress.model import RateLimit
from fastroute.proxy.limiter import ClientLimits

ROUTE = "shop/web"
CLIENT = "192.0.2.10"


def admitted(limits: ClientLimits, limit: RateLimit, times: list[float], **kw: str) -> int:
    """How many of the requests sent at ``times`` got through."""
    route = kw.get("route", ROUTE)
    address = kw.get("address", CLIENT)
    return sum(limits.admit(route, limit, address, t) is None for t in times)


def test_a_burst_of_rate_times_multiplier_plus_one_goes_through_then_the_rest_is_refused() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=2, burst_multiplier=5)  # burst 10
    answers = [limits.admit(ROUTE, limit, CLIENT, 0.0) for _ in range(15)]
    assert answers == [None] * 11 + [503] * 4


def test_the_refusal_status_is_the_limits() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=1, burst_multiplier=0, status=429)
    assert limits.admit(ROUTE, limit, CLIENT, 0.0) is None
    assert limits.admit(ROUTE, limit, CLIENT, 0.0) == 429


def test_the_bucket_refills_at_the_rate() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=4, burst_multiplier=1)  # burst 4: five at once
    assert admitted(limits, limit, [0.0] * 8) == 5
    # a quarter second drains one request's worth: one more, not two
    assert admitted(limits, limit, [0.25, 0.25]) == 1
    # one second drains four
    assert admitted(limits, limit, [1.25] * 6) == 4
    # after a long quiet spell, a whole burst again
    assert admitted(limits, limit, [100.0] * 8) == 5


def test_refused_requests_do_not_count() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=1, burst_multiplier=0)
    assert admitted(limits, limit, [0.0]) == 1
    # a client hammering every 0.1 s still gets one request a second through
    times = [i / 10 for i in range(1, 51)]
    assert admitted(limits, limit, times) == 5


def test_steady_traffic_at_the_rate_is_never_refused() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=10, burst_multiplier=0)
    times = [i / 8 for i in range(400)]  # 8 a second, under 10
    assert admitted(limits, limit, times) == len(times)


def test_rpm_limits_per_minute_with_its_own_burst() -> None:
    limits = ClientLimits()
    limit = RateLimit(rpm=6, burst_multiplier=1)  # burst 6: seven at once
    assert admitted(limits, limit, [0.0] * 10) == 7
    assert admitted(limits, limit, [5.0]) == 0
    assert admitted(limits, limit, [10.0, 10.0]) == 1  # one per 10 s
    assert admitted(limits, limit, [20.0, 30.0, 40.0]) == 3


def test_rps_and_rpm_together_each_must_pass() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=5, rpm=6, burst_multiplier=1)
    # rps alone would let 6 through now and 5 more each second; rpm allows 7, then 1 per 10 s
    assert admitted(limits, limit, [0.0] * 10) == 6  # the per-second burst binds first
    assert admitted(limits, limit, [1.0] * 10) == 1  # now the per-minute bucket binds
    assert admitted(limits, limit, [2.0] * 10) == 0
    assert admitted(limits, limit, [11.0] * 10) == 1


def test_a_request_refused_by_one_rate_does_not_count_toward_the_other() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=1, rpm=600, burst_multiplier=0)
    # 100 requests in the first second: the rps bucket admits one; had the refused 99 been
    # counted by the rpm bucket (burst 0, 10/s), it would refuse the next second's request
    assert admitted(limits, limit, [i / 100 for i in range(100)]) == 1
    assert admitted(limits, limit, [1.0]) == 1


def test_clients_and_routes_have_separate_buckets() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=1, burst_multiplier=0)
    assert admitted(limits, limit, [0.0, 0.0]) == 1
    assert admitted(limits, limit, [0.0, 0.0], address="192.0.2.11") == 1
    assert admitted(limits, limit, [0.0, 0.0], route="shop/admin") == 1
    assert admitted(limits, limit, [0.0]) == 0


def test_exempt_networks_are_never_limited() -> None:
    limits = ClientLimits()
    limit = RateLimit(
        rps=1, burst_multiplier=0, exempt=(ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"))
    )
    assert admitted(limits, limit, [0.0] * 50, address="10.1.2.3") == 50
    assert admitted(limits, limit, [0.0] * 50, address="2001:db8::9") == 50
    assert admitted(limits, limit, [0.0] * 50, address="::ffff:10.1.2.3") == 50
    assert admitted(limits, limit, [0.0] * 50, address="11.1.2.3") == 1
    assert limits.tracked() == 1  # the exempt ones left no state


def test_a_clock_reading_from_the_past_gives_no_credit() -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=1, burst_multiplier=0)
    assert admitted(limits, limit, [10.0]) == 1
    assert admitted(limits, limit, [5.0, 9.5]) == 0
    assert admitted(limits, limit, [11.0]) == 1


def test_memory_stays_at_the_cap_whatever_the_number_of_addresses() -> None:
    cap = 65_536
    limits = ClientLimits()
    limit = RateLimit(rps=1, burst_multiplier=0)
    for i in range(200_000):
        address = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
        assert limits.admit(ROUTE, limit, address, 0.0) is None  # each one new
        assert limits.tracked() <= cap
    assert limits.tracked() == cap


def test_the_address_used_longest_ago_is_forgotten_and_starts_with_a_full_burst() -> None:
    limits = ClientLimits(capacity=3)
    limit = RateLimit(rps=1, burst_multiplier=0)
    for address in ("a", "b", "c"):
        assert admitted(limits, limit, [0.0, 0.0], address=address) == 1
    assert admitted(limits, limit, [0.0], address="a") == 0  # "a" used most lately now
    assert admitted(limits, limit, [0.0], address="d") == 1  # forgets "b"
    assert admitted(limits, limit, [0.0], address="a") == 0  # "a" still remembered
    assert admitted(limits, limit, [0.0], address="c") == 0
    assert admitted(limits, limit, [0.0], address="b") == 1  # "b" starts over
    assert limits.tracked() == 3


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity 0"):
        ClientLimits(capacity=0)


def test_no_rate_set_admits_and_keeps_nothing() -> None:
    limits = ClientLimits()
    assert admitted(limits, RateLimit(connections=1), [0.0] * 10) == 10
    assert limits.tracked() == 0


# limit-connections


def test_connections_beyond_the_limit_are_refused_until_one_is_released() -> None:
    limits = ClientLimits()
    limit = RateLimit(connections=8)
    held = [limits.enter(ROUTE, limit, CLIENT) for _ in range(20)]
    granted = [h for h in held if h is not None]
    assert len(granted) == 8  # as ingress-nginx's e2e test: 8 of 20 at once
    assert limits.enter(ROUTE, limit, "192.0.2.99") is not None  # another client is free
    granted[0].release()
    again = limits.enter(ROUTE, limit, CLIENT)
    assert again is not None
    assert limits.enter(ROUTE, limit, CLIENT) is None


def test_release_is_idempotent() -> None:
    limits = ClientLimits()
    limit = RateLimit(connections=2)
    first = limits.enter(ROUTE, limit, CLIENT)
    second = limits.enter(ROUTE, limit, CLIENT)
    assert first is not None
    assert second is not None
    first.release()
    first.release()
    first.release()
    assert limits.in_progress(ROUTE, CLIENT) == 1
    assert limits.enter(ROUTE, limit, CLIENT) is not None
    assert limits.enter(ROUTE, limit, CLIENT) is None


def test_a_held_request_is_released_by_its_with_block_even_on_error() -> None:
    limits = ClientLimits()
    limit = RateLimit(connections=1)
    held = limits.enter(ROUTE, limit, CLIENT)
    assert held is not None
    with pytest.raises(RuntimeError), held:
        raise RuntimeError("upstream went away")
    assert limits.in_progress(ROUTE, CLIENT) == 0
    assert limits.enter(ROUTE, limit, CLIENT) is not None


def test_released_clients_leave_no_state() -> None:
    limits = ClientLimits()
    limit = RateLimit(connections=1)
    for i in range(1000):
        held = limits.enter(ROUTE, limit, f"10.0.{i >> 8}.{i & 255}")
        assert held is not None
        held.release()
    assert "in_progress=0" in repr(limits)


def test_exempt_and_unlimited_connections_are_not_counted() -> None:
    limits = ClientLimits()
    exempt = RateLimit(connections=1, exempt=(ip_network("10.0.0.0/8"),))
    held = [limits.enter(ROUTE, exempt, "10.0.0.1") for _ in range(5)]
    assert all(h is not None for h in held)
    assert limits.in_progress(ROUTE, "10.0.0.1") == 0
    unlimited = RateLimit(rps=5)
    assert all(limits.enter(ROUTE, unlimited, CLIENT) is not None for _ in range(5))
    assert limits.in_progress(ROUTE, CLIENT) == 0


def test_connections_are_per_route() -> None:
    limits = ClientLimits()
    limit = RateLimit(connections=1)
    assert limits.enter(ROUTE, limit, CLIENT) is not None
    assert limits.enter("shop/admin", limit, CLIENT) is not None
    assert limits.enter(ROUTE, limit, CLIENT) is None


# the bound, as a property


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 20),
    multiplier=st.integers(0, 6),
    gaps=st.lists(st.floats(0.0, 0.5, allow_nan=False), min_size=1, max_size=200),
    window=st.tuples(st.integers(0, 199), st.integers(0, 199)),
)
def test_no_window_admits_more_than_rate_times_its_length_plus_burst_plus_one(
    rate: int, multiplier: int, gaps: list[float], window: tuple[int, int]
) -> None:
    limits = ClientLimits()
    limit = RateLimit(rps=rate, burst_multiplier=multiplier)
    now = 0.0
    times = []
    for gap in gaps:
        now += gap
        times.append(now)
    passed = [t for t in times if limits.admit(ROUTE, limit, CLIENT, t) is None]
    first, last = sorted(window)
    first, last = min(first, len(passed) - 1), min(last, len(passed) - 1)
    count = last - first + 1
    span = passed[last] - passed[first]
    assert count <= rate * span + rate * multiplier + 1 + 1e-9


@settings(max_examples=100, deadline=None)
@given(rate=st.integers(1, 20), multiplier=st.integers(1, 6), seconds=st.integers(1, 30))
def test_a_client_sending_faster_than_the_rate_gets_exactly_rate_per_second_after_its_burst(
    rate: int, multiplier: int, seconds: int
) -> None:
    # (with a burst of 0, a request that comes later than 1/rate forfeits the difference,
    # as in nginx: only a burst of at least one carries credit over between requests)
    limits = ClientLimits()
    limit = RateLimit(rps=rate, burst_multiplier=multiplier)
    # the whole burst at once, then more than rate requests a second, on a grid whose every
    # step is an exact binary fraction
    burst = rate * multiplier
    step = 1 / 64
    grid = [i * step for i in range(seconds * 64 + 1) for _ in range(max(1, rate // 16 + 1))]
    got = admitted(limits, limit, [0.0] * (burst + 1) + grid)
    assert rate * seconds + burst <= got <= rate * seconds + burst + 1
