"""A kept plan is the plan ``decide`` would make: only plain routes' plans are kept, and
only for the config they were made under."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.errors import ProxyError
from fastroute.ingress import build_config
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.decide import Forward, decide
from fastroute.proxy.plain_plans import PlainPlans
from fastroute.proxy.server import Proxy
from tests.objects import ingress, service_at
from tests.polling import run_within as run
from tests.raw import RawBackend, RawClient

ALLOW_ONLY_TEN = {"nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8"}


def _config(backend_port: int = 8080) -> RouteConfig:
    """A plain Ingress, one whose route checks the client, and one with an exact path."""
    return build_config(
        [
            *service_at(backend_port),
            ingress("plain", "plain.example.com", paths=[("/", "Prefix", "web")]),
            ingress("guarded", "guarded.example.com", annotations=ALLOW_ONLY_TEN),
            ingress("exact", "exact.example.com", paths=[("/only", "Exact", "web")]),
        ]
    )


def _decide(config: RouteConfig, target: bytes, host: bytes, client: str) -> object:
    try:
        return decide(config, method=b"GET", target=target, host=host, scheme="http", client=client)
    except ProxyError as error:  # the refusal is part of what is compared
        return type(error).__name__


targets = st.sampled_from([b"/", b"/only", b"/only/", b"/a/../only", b"/x?y=1", b"/%6Fnly"])
hosts = st.sampled_from([b"plain.example.com", b"guarded.example.com", b"exact.example.com"])
clients = st.sampled_from(["10.1.2.3", "192.0.2.7"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(targets, hosts, clients), min_size=1, max_size=30))
def test_a_kept_plan_is_what_decide_makes_for_every_request(
    requests: list[tuple[bytes, bytes, str]],
) -> None:
    config = _config()
    plans = PlainPlans()
    for target, host, client in requests:
        key = (target, host, "http")
        kept = plans.get(config, key)
        made = _decide(config, target, host, client)
        if kept is not None:
            assert kept.plan == made  # the same route, target, host and fields
        plans.keep(config, key, made)


def test_a_route_that_checks_the_client_is_decided_for_every_request() -> None:
    config = _config()
    plans = PlainPlans()
    key = (b"/", b"guarded.example.com", "http")
    allowed = _decide(config, b"/", b"guarded.example.com", "10.1.2.3")
    assert isinstance(allowed, Forward)
    plans.keep(config, key, allowed)
    assert plans.get(config, key) is None  # a client outside 10/8 must still get its 403
    assert len(plans) == 0


def test_plans_of_an_older_config_are_never_used() -> None:
    old, new = _config(8080), _config(9090)
    plans = PlainPlans()
    key = (b"/", b"plain.example.com", "http")
    plan = _decide(old, b"/", b"plain.example.com", "10.1.2.3")
    plans.keep(old, key, plan)
    kept = plans.get(old, key)
    assert kept is not None
    assert kept.plan is plan
    assert plans.get(new, key) is None  # the new config's endpoints are elsewhere
    fresh = _decide(new, b"/", b"plain.example.com", "10.1.2.3")
    assert isinstance(fresh, Forward)
    assert [e.port for e in fresh.route.backend.endpoints] == [9090]
    plans.keep(new, key, fresh)
    assert plans.get(old, key) is None
    kept = plans.get(new, key)
    assert kept is not None
    assert kept.plan is fresh


def test_endless_distinct_targets_never_hold_more_than_the_size() -> None:
    config = _config()
    plans = PlainPlans(size=16)
    for n in range(1_000):
        target = b"/page/%d" % n
        plans.keep(
            config,
            (target, b"plain.example.com", "http"),
            _decide(config, target, b"plain.example.com", "10.1.2.3"),
        )
        assert len(plans) <= 16


@pytest.mark.e2e
def test_after_a_swap_the_same_url_goes_where_the_new_config_says_and_the_old_is_freed() -> None:
    """Through the real proxy: a URL asked for again after a swap reaches the new
    config's endpoint, and the old config is not kept alive by the plans made under it."""

    async def scenario() -> None:
        first, second = RawBackend(), RawBackend()
        async with trio.open_nursery() as nursery:
            first_port = await nursery.start(first.serve)
            second_port = await nursery.start(second.serve)
            old = _config(first_port)
            proxy = Proxy(old)
            listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
            client = await RawClient.connect(listeners[0].socket.getsockname()[1])
            ask = b"GET /page HTTP/1.1\r\nHost: plain.example.com\r\n\r\n"
            for _ in range(2):  # the second is served from the kept plan
                await client.send(ask)
                reply = await client.reply()
                assert reply is not None
                assert reply.status == 200
            assert len(first.requests) == 2
            freed = weakref.ref(old)
            proxy.swap(_config(second_port))
            del old
            gc.collect()
            assert freed() is None  # nothing holds the old config's plans
            await client.send(ask)
            reply = await client.reply()
            assert reply is not None
            assert reply.status == 200
            assert (len(first.requests), len(second.requests)) == (2, 1)
            await client.aclose()
            nursery.cancel_scope.cancel()

    run(scenario)
