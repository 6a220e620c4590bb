"""The balancer: which endpoint the proxy tries first, and which it avoids after a failure.

What users notice: load spread evenly (round robin), a dead pod skipped for a while and then
tried again, no 503 while any endpoint could still answer, counting that survives a config
reload, and retries that never repeat a POST the upstream may have seen. Time is passed in,
so nothing here sleeps.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.ingress.model import Backend, Endpoint
from fastroute.proxy.balancer import Balancer, may_retry

A, B, C, D = (Endpoint(f"10.0.0.{i}", 8080) for i in range(1, 5))
SENTINEL = Endpoint("10.9.9.9", 8080)  # never fails; see is_down()


def backend(
    *endpoints: Endpoint,
    terminating: tuple[Endpoint, ...] = (),
    name: str = "svc",
    port: int | str = 80,
) -> Backend:
    return Backend("ns", name, port, endpoints=endpoints, terminating=terminating)


def firsts(balancer: Balancer, be: Backend, calls: int, *, now: float = 0.0) -> Counter[Endpoint]:
    """How often each endpoint came first over ``calls`` requests: the load it gets."""
    return Counter(balancer.attempts(be, now=now)[0] for _ in range(calls))


def is_down(balancer: Balancer, endpoint: Endpoint, *, now: float) -> bool:
    """Whether the proxy would avoid ``endpoint`` now, seen as a user sees it.

    Two requests to a backend of ``endpoint`` and a healthy sentinel: a healthy endpoint is
    tried first by one of them (round robin), an endpoint that is down by neither.
    """
    probe = backend(endpoint, SENTINEL, name="probe")
    return all(balancer.attempts(probe, now=now)[0] == SENTINEL for _ in range(2))


# --------------------------------------------------------------------------- round robin


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_round_robin_gives_each_endpoint_the_same_share(k: int) -> None:
    """Over N requests, each of k endpoints is tried first exactly N/k times, in order."""
    eps = tuple(Endpoint(f"10.0.1.{i}", 80) for i in range(k))
    balancer, be = Balancer(), backend(*eps)
    orders = [balancer.attempts(be, now=0.0) for _ in range(6 * k)]
    assert Counter(o[0] for o in orders) == dict.fromkeys(eps, 6)
    for call, order in enumerate(orders):
        i = call % k
        assert order == [*eps[i:], *eps[:i]]  # the rest follow, so a retry moves on in turn


def test_backends_take_turns_independently() -> None:
    """Traffic to one service does not shift the turn of another."""
    balancer = Balancer()
    web, api = backend(A, B, name="web"), backend(C, D, name="api")
    assert balancer.attempts(web, now=0)[0] == A
    assert balancer.attempts(web, now=0)[0] == B
    assert balancer.attempts(api, now=0)[0] == C
    assert balancer.attempts(web, now=0)[0] == A


# --------------------------------------------------------------------------- passive health


def test_failed_endpoint_goes_last_until_its_window_ends() -> None:
    """A refused connect puts the pod last for base_backoff seconds, then it is back."""
    balancer, be = Balancer(), backend(A, B, C)
    balancer.failed(B, now=10.0, reason="connect: connection refused")
    # Six requests in the window: B is never first, yet always still listed (last).
    orders = [balancer.attempts(be, now=10.5) for _ in range(6)]
    assert all(order[-1] == B and sorted(order, key=str) == [A, B, C] for order in orders)
    assert is_down(balancer, B, now=10.999)
    assert not is_down(balancer, B, now=11.0)  # the window is [failure, failure + 1.0)
    assert firsts(balancer, be, 6, now=11.0) == {A: 2, B: 2, C: 2}


def test_healthy_endpoints_share_a_failed_ones_load_evenly() -> None:
    """The pod after a dead one does not take the dead one's share on top of its own."""
    balancer, be = Balancer(base_backoff=100.0, max_backoff=100.0), backend(A, B, C)
    balancer.failed(B, now=0.0, reason="connect: timeout")
    assert firsts(balancer, be, 60, now=1.0) == {A: 30, C: 30}


def test_backoff_doubles_on_each_failure_in_a_row_up_to_the_cap() -> None:
    """A pod that keeps failing when tried again is avoided 1, 2, 4 s ... at most max."""
    balancer = Balancer(base_backoff=1.0, max_backoff=5.0)
    now = 0.0
    for window in [1.0, 2.0, 4.0, 5.0, 5.0]:
        balancer.failed(A, now=now, reason="connect: connection refused")
        assert is_down(balancer, A, now=now + window - 0.001)
        assert not is_down(balancer, A, now=now + window)
        now += window  # tried again as soon as it is back, and it fails again


def test_failures_seen_while_down_do_not_lengthen_the_window() -> None:
    """Many requests in flight can see one outage; that is one failure, not ten."""
    balancer = Balancer()
    for t in [0.0, 0.1, 0.5, 0.9]:
        balancer.failed(A, now=t, reason="connect: connection refused")
    assert not is_down(balancer, A, now=1.0)
    balancer.failed(A, now=1.0, reason="connect: connection refused")  # tried again: fails
    assert is_down(balancer, A, now=2.999)
    assert not is_down(balancer, A, now=3.0)  # the second window: 2 s, not 2**5


def test_success_clears_the_record_and_restarts_backoff() -> None:
    """A pod that answers is healthy at once, and its next failure costs base_backoff only."""
    balancer = Balancer()
    balancer.failed(A, now=0.0, reason="connect: timeout")
    balancer.failed(A, now=1.0, reason="connect: timeout")  # second window: 2 s
    assert is_down(balancer, A, now=2.0)
    balancer.succeeded(A)  # tried anyway (everything was down) and it answered
    assert not is_down(balancer, A, now=2.0)
    balancer.failed(A, now=5.0, reason="connect: timeout")
    assert not is_down(balancer, A, now=6.0)


def test_a_failure_long_after_the_last_starts_a_new_backoff() -> None:
    """Once max_backoff has passed since its window ended, an old failure is forgotten."""
    balancer = Balancer(base_backoff=1.0, max_backoff=4.0)
    balancer.failed(A, now=0.0, reason="first")  # window ends at 1.0
    balancer.failed(A, now=4.999, reason="soon after")  # same incident: doubled to 2 s
    assert is_down(balancer, A, now=6.5)
    balancer.failed(B, now=0.0, reason="first")
    balancer.failed(B, now=5.0, reason="much later")  # 1.0 + 4.0: a new incident, 1 s
    assert not is_down(balancer, B, now=6.0)


def test_stale_records_are_dropped_without_forget_missing() -> None:
    """An endpoint that failed once and then left the cluster is not remembered forever."""
    balancer = Balancer(base_backoff=1.0, max_backoff=4.0)
    balancer.failed(A, now=0.0, reason="pod deleted")  # and never seen again
    balancer.failed(B, now=3.0, reason="connect: timeout")
    assert "10.0.0.1:8080" in repr(balancer)  # still within max_backoff of its window
    balancer.failed(C, now=5.0, reason="connect: timeout")  # 1.0 + 4.0: A is stale
    assert "10.0.0.1:8080" not in repr(balancer)
    assert "10.0.0.2:8080" in repr(balancer)


def test_every_endpoint_down_still_tries_them_all_in_turn() -> None:
    """Like nginx: when all pods failed recently, try them anyway rather than answer 503."""
    balancer, be = Balancer(), backend(A, B, C)
    for ep in (A, B, C):
        balancer.failed(ep, now=0.0, reason="connect: connection refused")
    assert [balancer.attempts(be, now=0.5) for _ in range(4)] == [
        [A, B, C],
        [B, C, A],
        [C, A, B],
        [A, B, C],
    ]


def test_some_down_healthy_first_then_the_down_ones() -> None:
    """The order the proxy retries in: every healthy pod before any that just failed."""
    balancer, be = Balancer(), backend(A, B, C, D)
    balancer.failed(A, now=0.0, reason="x")
    balancer.failed(C, now=0.0, reason="x")
    for _ in range(4):
        order = balancer.attempts(be, now=0.5)
        assert set(order[:2]) == {B, D}
        assert set(order[2:]) == {A, C}


def test_health_is_per_endpoint_and_shared_between_backends() -> None:
    """A dead pod is dead for every Service port name that leads to it."""
    balancer = Balancer()
    by_number, by_name = backend(A, B, port=80), backend(A, B, port="http")
    assert balancer.attempts(by_number, now=0.0)[0] == A
    balancer.failed(A, now=0.0, reason="connect: connection refused")
    assert balancer.attempts(by_name, now=0.5) == [B, A]  # its own turn (first), A avoided
    assert balancer.attempts(by_number, now=0.5) == [B, A]


# --------------------------------------------------------------------------- which endpoints


def test_terminating_endpoints_only_when_no_ready_one_is_left() -> None:
    """Kubernetes' rule: a pod shutting down still serves, but only as a last resort."""
    balancer = Balancer()
    mixed = backend(A, B, terminating=(C,))
    assert {ep for _ in range(4) for ep in balancer.attempts(mixed, now=0.0)} == {A, B}
    draining = backend(terminating=(C, D))
    assert [balancer.attempts(draining, now=0.0) for _ in range(2)] == [[C, D], [D, C]]


def test_no_endpoints_means_no_attempts() -> None:
    """An empty backend gives [] (the proxy answers 503), and does not take a turn."""
    balancer = Balancer()
    assert balancer.attempts(backend(), now=0.0) == []
    assert balancer.attempts(backend(A, B), now=0.0)[0] == A


# --------------------------------------------------------------------------- config swaps


def test_state_survives_a_config_swap_with_the_same_endpoints() -> None:
    """A reload builds new objects; the turn and the dead pod's window carry over."""
    balancer = Balancer()
    old = backend(A, B, C)
    balancer.attempts(old, now=0.0)
    balancer.failed(C, now=0.0, reason="connect: connection refused")
    new = backend(*(Endpoint(e.address, e.port) for e in (A, B, C)))  # equal, not the same
    assert new is not old
    assert balancer.attempts(new, now=0.5) == [B, A, C]  # B's turn; C still avoided
    assert balancer.attempts(new, now=0.5) == [A, B, C]


def test_forget_missing_drops_endpoints_that_left() -> None:
    """A pod removed then re-added (or its IP reused) starts healthy; others stay down."""
    balancer = Balancer()
    balancer.failed(A, now=0.0, reason="gone")
    balancer.failed(B, now=0.0, reason="still here")
    balancer.forget_missing([B, C])
    assert not is_down(balancer, A, now=0.5)
    assert is_down(balancer, B, now=0.5)
    assert "10.0.0.1:8080" not in repr(balancer)


def test_forget_missing_can_drop_turns_of_removed_backends() -> None:
    """Turns of backends no longer routed to are dropped when the caller names the live ones."""
    balancer = Balancer()
    web, api = backend(A, B, name="web"), backend(A, B, name="api")
    balancer.attempts(web, now=0.0)
    balancer.attempts(api, now=0.0)
    balancer.forget_missing([A, B])  # no backend names: turns kept
    assert balancer.attempts(web, now=0.0)[0] == B
    balancer.forget_missing([A, B], backends=[web.name])
    assert "ns/api:80" not in repr(balancer)
    assert balancer.attempts(web, now=0.0)[0] == A  # web kept its turn
    assert balancer.attempts(api, now=0.0)[0] == A  # api starts over


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("method", "request_sent", "body_replayable", "expected"),
    [
        # Nothing reached the upstream (connect failed, or a dead pooled connection found
        # before writing): it cannot have acted, so any method moves on.
        (b"POST", False, True, True),
        (b"PATCH", False, False, True),
        (b"GET", False, True, True),
        # Bytes went out: only idempotent methods (RFC 9110 §9.2.2) may be repeated...
        *((m, True, True, True) for m in [b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT"]),
        (b"DELETE", True, True, True),
        (b"POST", True, True, False),
        (b"PATCH", True, True, False),
        (b"CONNECT", True, True, False),
        (b"LOCK", True, True, False),
        # ...and only if the body can be sent again from its start.
        (b"PUT", True, False, False),
        # Methods are case-sensitive (RFC 9110 §9.1): "get" is an unknown method.
        (b"get", True, True, False),
    ],
)
def test_may_retry(
    method: bytes, request_sent: bool, body_replayable: bool, expected: bool
) -> None:
    """Never send a non-idempotent request twice; never resend a body that is gone."""
    got = may_retry(method, request_sent=request_sent, body_replayable=body_replayable)
    assert got is expected


def test_may_retry_assumes_a_replayable_body_by_default() -> None:
    """A bodiless or buffered request is the common case and needs no extra argument."""
    assert may_retry(b"GET", request_sent=True)
    assert not may_retry(b"POST", request_sent=True)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_backoff": 0}, "base_backoff must be a positive number of seconds, got 0"),
        ({"base_backoff": -1.5}, "base_backoff must be a positive number of seconds, got -1.5"),
        ({"base_backoff": float("nan")}, "base_backoff must be a positive number of seconds"),
        ({"max_backoff": float("inf")}, "max_backoff must be a positive number of seconds"),
        ({"max_backoff": 0.0}, "max_backoff must be a positive number of seconds, got 0.0"),
        ({"max_backoff": 0.5}, "max_backoff (0.5) must be at least base_backoff (1.0)"),
        (
            {"base_backoff": 10, "max_backoff": 5},
            "max_backoff (5) must be at least base_backoff (10)",
        ),
    ],
)
def test_bad_backoff_is_refused_with_a_precise_message(
    kwargs: dict[str, float], message: str
) -> None:
    """A misconfigured flag says which value is wrong and why, at startup."""
    with pytest.raises(ValueError, match=re.escape(message)):
        Balancer(**kwargs)


def test_equal_base_and_max_is_a_fixed_backoff() -> None:
    """max == base is allowed: every failure costs the same window."""
    balancer = Balancer(base_backoff=2.0, max_backoff=2.0)
    balancer.failed(A, now=0.0, reason="x")
    balancer.failed(A, now=2.0, reason="x")
    assert not is_down(balancer, A, now=4.0)


# --------------------------------------------------------------------------- repr


def test_repr_shows_turns_and_failed_endpoints() -> None:
    """Logs and debuggers see each backend's turn and what is down, why, for how long."""
    balancer = Balancer()
    assert repr(balancer) == "<Balancer turns={} failed={} now=->"
    be = backend(A, B)
    balancer.attempts(be, now=100.0)
    balancer.failed(B, now=100.0, reason="connect: connection refused")
    balancer.attempts(be, now=100.25)
    assert repr(balancer) == (
        "<Balancer turns={ns/svc:80: 2} failed={10.0.0.2:8080: failures=1 left=0.8s"
        " reason='connect: connection refused'} now=100.25>"
    )
    balancer.succeeded(B)
    assert repr(balancer) == "<Balancer turns={ns/svc:80: 2} failed={} now=100.25>"


# --------------------------------------------------------------------------- property


@dataclass
class Reference:
    """The health rules, written naively: the expected down set for the property test."""

    base: float
    cap: float
    records: dict[Endpoint, tuple[float, float]] = field(default_factory=dict)  # backoff, until

    def failed(self, ep: Endpoint, now: float) -> None:
        record = self.records.get(ep)
        if record is None or now >= record[1] + self.cap:
            self.records[ep] = (self.base, now + self.base)
        elif now >= record[1]:
            backoff = min(record[0] * 2, self.cap)
            self.records[ep] = (backoff, now + backoff)

    def down(self, ep: Endpoint, now: float) -> bool:
        return ep in self.records and now < self.records[ep][1]


POOL = (A, B, C, D)
endpoint_lists = st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)).map(tuple)
operations = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 8.0]),  # how much time passes first
        st.one_of(
            st.tuples(st.just("attempts"), endpoint_lists, endpoint_lists),
            st.tuples(st.sampled_from(["failed", "succeeded"]), st.sampled_from(POOL)),
            st.tuples(st.just("forget"), endpoint_lists),
        ),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=operations, base=st.sampled_from([0.5, 1.0]), cap=st.sampled_from([1.0, 4.0]))
def test_attempts_is_a_permutation_with_healthy_first(
    ops: list[tuple[float, tuple[object, ...]]], base: float, cap: float
) -> None:
    """Whatever happened before, every usable endpoint is offered once, healthy ones first."""
    balancer, ref, now = Balancer(base_backoff=base, max_backoff=cap), Reference(base, cap), 0.0
    for step, op in ops:
        now += step
        match op:
            case ("attempts", tuple(ready), tuple(terminating)):
                be = backend(*ready, terminating=terminating)
                got = balancer.attempts(be, now=now)
                usable = be.usable()
                assert Counter(got) == Counter(usable)
                healthy = [ep for ep in usable if not ref.down(ep, now)]
                assert set(got[: len(healthy)]) == set(healthy)
            case ("failed", Endpoint() as ep):
                balancer.failed(ep, now=now, reason="property")
                ref.failed(ep, now)
            case ("succeeded", Endpoint() as ep):
                balancer.succeeded(ep)
                ref.records.pop(ep, None)
            case ("forget", tuple(live)):
                balancer.forget_missing(live)
                ref.records = {ep: r for ep, r in ref.records.items() if ep in live}
            case _:
                raise AssertionError(op)
