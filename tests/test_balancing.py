"""Which pod answers: ``load-balance``, ``upstream-hash-by`` and cookie ``affinity``.

Three layers, as the code is built: the sans-I/O pieces alone (hash keys, the ring, peak
EWMA, the cookie), with hypothesis measuring what consistent hashing promises; then the
real proxy over 127.0.0.1 in front of several real backends that each say who they are,
so that which endpoint answered is visible. The expected behaviour is ingress-nginx's
(its docs and e2e tests ``affinity.go``, ``upstreamhashby.go``, ``loadbalance/``), except
where a test says why fastroute differs.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.ingress import build_config
from fastroute.ingress.annotations import read_policy
from fastroute.ingress.balancing import Affinity, HashKey
from fastroute.ingress.balancing_syntax import read_hash_key
from fastroute.ingress.model import Backend, Endpoint, Policy, RouteConfig, Target
from fastroute.ingress.syntax import Malformed
from fastroute.proxy.affinity import (
    cookie_path,
    endpoint_token,
    names_backend,
    same_site_none_compatible,
    session_key,
    set_cookie_line,
)
from fastroute.proxy.balancer import Balancer
from fastroute.proxy.choosing import Choice, Chooser
from fastroute.proxy.ewma import PeakEwma
from fastroute.proxy.hashing import Ring, request_key, subsets
from fastroute.proxy.server import Proxy
from tests.objects import endpoint_slice, ingress, service
from tests.polling import DEADLINE
from tests.raw import BackendConnection, RawBackend, RawClient, Reply, Request, response
from tests.sites import closed_port

HOST = b"shop.example.com"
NGINX = "nginx.ingress.kubernetes.io/"
Obj = dict[str, Any]


# ================================================================== hash keys


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("$request_uri", (("request_uri", ""),)),
        ("$host$request_uri", (("host", ""), ("request_uri", ""))),
        ("${request_uri}-text-value", (("request_uri", ""), ("", "-text-value"))),
        ("$http_x_user", (("http_", "x-user"),)),
        ("$cookie_session:$arg_id", (("cookie_", "session"), ("", ":"), ("arg_", "id"))),
        ("v1-\\$literal-$remote_addr", (("", "v1-$literal-"), ("remote_addr", ""))),
    ],
)
def test_hash_keys_are_read_as_nginx_complex_values(
    text: str, parts: tuple[tuple[str, str], ...]
) -> None:
    assert read_hash_key(text) == HashKey(text, parts)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("$binary_remote_addr", "$binary_remote_addr in '$binary_remote_addr' is not a variable"),
        ("${upstream_addr}", "$upstream_addr in '${upstream_addr}' is not a variable"),
        ("$http_", "$http_ in '$http_' is not a variable"),
        ("fixed-text", "names no variable"),
        ("", "expected nginx variables"),
    ],
)
def test_a_hash_key_fastroute_cannot_evaluate_is_refused_with_the_reason(
    text: str, reason: str
) -> None:
    with pytest.raises(Malformed, match=re.escape(reason)):
        read_hash_key(text)


def _headers(fields: dict[bytes, bytes]) -> Callable[[bytes], bytes | None]:
    return fields.get


@pytest.mark.parametrize(
    ("key", "target", "expected"),
    [
        ("$request_uri", b"/cart?id=7", b"/cart?id=7"),
        ("$request_uri", b"http://shop.example.com/cart?id=7", b"/cart?id=7"),
        ("$uri|$args", b"/cart?id=7&x=1", b"/cart|id=7&x=1"),
        ("$host", b"/", b"shop.example.com"),
        ("$remote_addr-$scheme", b"/", b"203.0.113.9-https"),
        ("$http_x_user", b"/", b"ann"),
        ("$cookie_session", b"/", b"s3"),
        ("$arg_ID.$arg_missing.", b"/p?a=1&id=42&id=43", b"42.."),
    ],
)
def test_a_hash_key_is_evaluated_from_the_request(key: str, target: bytes, expected: bytes) -> None:
    header = _headers({b"x-user": b"ann", b"cookie": b"theme=dark; session=s3"})
    got = request_key(
        read_hash_key(key),
        target=target,
        host=b"Shop.Example.com:8443",
        client="203.0.113.9",
        scheme="https",
        header=header,
    )
    assert got == expected


# ================================================================== the ring


def _endpoints(count: int, base: int = 0) -> list[Endpoint]:
    return [Endpoint(f"10.1.{(base + i) // 250}.{(base + i) % 250}", 8080) for i in range(count)]


KEYS = [b"/item/%d" % i for i in range(3000)]


@settings(max_examples=25, deadline=None)
@given(count=st.integers(2, 24), leaving=st.integers(0, 23), seed=st.integers(0, 2**32))
def test_when_one_endpoint_of_n_leaves_only_its_keys_move_about_one_in_n(
    count: int, leaving: int, seed: int
) -> None:
    endpoints = _endpoints(count, base=seed % 1000)
    gone = endpoints[leaving % count]
    before = Ring(endpoints)
    after = Ring([e for e in endpoints if e != gone])
    moved = [k for k in KEYS if before.find(k) != after.find(k)]
    # no key of another endpoint moves; every key of the one that left does
    assert all(before.find(k) == gone for k in moved)
    assert sum(before.find(k) == gone for k in KEYS) == len(moved)
    # and those are about 1/N of all keys (160 points each: within half again, plus the
    # sampling noise of 3000 keys)
    assert len(moved) / len(KEYS) <= 1.5 / count + 0.02


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 24), seed=st.integers(0, 2**32))
def test_when_one_endpoint_joins_it_takes_about_one_in_n_plus_one_and_nothing_else_moves(
    count: int, seed: int
) -> None:
    endpoints = _endpoints(count + 1, base=seed % 1000)
    newcomer = endpoints[-1]
    before, after = Ring(endpoints[:-1]), Ring(endpoints)
    moved = [k for k in KEYS if before.find(k) != after.find(k)]
    assert all(after.find(k) == newcomer for k in moved)
    assert len(moved) / len(KEYS) <= 1.5 / (count + 1) + 0.02


@given(st.permutations(_endpoints(7)))
def test_the_ring_depends_on_the_endpoints_not_their_order(shuffled: list[Endpoint]) -> None:
    reference, other = Ring(_endpoints(7)), Ring(shuffled)
    assert all(reference.find(k) == other.find(k) for k in KEYS[:500])


def test_keys_spread_over_every_endpoint_within_a_few_percent_of_even() -> None:
    ring = Ring(_endpoints(5))
    shares = Counter(ring.find(k) for k in KEYS)
    assert len(shares) == 5
    assert all(abs(n / len(KEYS) - 0.2) < 0.06 for n in shares.values())


def test_subsets_are_cut_in_sorted_order_and_the_last_filled_from_the_first() -> None:
    endpoints = _endpoints(7)
    groups = subsets(list(reversed(endpoints)), 3)
    assert groups == [tuple(endpoints[0:3]), tuple(endpoints[3:6]), (endpoints[6], *endpoints[:2])]


# ================================================================== peak EWMA

A, B, C = _endpoints(3)


def test_the_faster_endpoint_wins_once_both_are_measured() -> None:
    ewma = PeakEwma(rng=random.Random(0))
    ewma.observed(A, 0.200, now=0.0)
    ewma.observed(B, 0.010, now=0.0)
    assert all(ewma.order([A, B], now=0.1)[0] == B for _ in range(50))


def test_a_slow_down_is_believed_at_once_and_a_recovery_only_gradually() -> None:
    ewma = PeakEwma(rng=random.Random(0))
    ewma.observed(A, 0.010, now=0.0)
    ewma.observed(A, 0.500, now=1.0)  # peak: replaces the average
    assert ewma.cost(A, now=1.0) == pytest.approx(0.500)
    ewma.observed(A, 0.010, now=2.0)  # one good reading after 1 s of a 10 s decay
    assert 0.40 < ewma.cost(A, now=2.0) < 0.50


def test_an_idle_endpoint_decays_toward_zero_so_it_is_tried_again() -> None:
    ewma = PeakEwma(rng=random.Random(0))
    ewma.observed(A, 1.0, now=0.0)
    ewma.observed(B, 0.05, now=0.0)
    assert ewma.order([A, B], now=0.0)[0] == B
    # 60 s later A's second-old reading weighs exp(-6); B was just measured again
    ewma.observed(B, 0.05, now=60.0)
    assert ewma.cost(A, now=60.0) < ewma.cost(B, now=60.0)


def test_requests_in_flight_multiply_the_cost() -> None:
    ewma = PeakEwma(rng=random.Random(0))
    ewma.observed(A, 0.010, now=0.0)
    ewma.observed(B, 0.015, now=0.0)
    for _ in range(2):
        ewma.started(A)
    assert ewma.cost(A, now=0.0) == pytest.approx(0.030)
    assert ewma.order([A, B], now=0.0)[0] == B
    ewma.finished(A, 0.010, now=0.0)
    ewma.finished(A, None, now=0.0)  # a failure: counted out, no reading
    assert ewma.order([A, B], now=0.0)[0] == A


def test_two_random_choices_never_pick_the_worst_of_three() -> None:
    ewma = PeakEwma(rng=random.Random(3))
    for endpoint, latency in ((A, 0.01), (B, 0.02), (C, 0.50)):
        ewma.observed(endpoint, latency, now=0.0)
    firsts = Counter(ewma.order([A, B, C], now=0.0)[0] for _ in range(300))
    assert firsts[C] == 0
    assert firsts[B] > 0  # B wins whenever A is not drawn: not always the fastest
    assert ewma.order([A, B, C], now=0.0)[1:] in ([A, B], [A, C], [B, C])


def test_a_new_endpoint_starts_at_the_mean_of_the_others_not_at_zero() -> None:
    ewma = PeakEwma(rng=random.Random(0))
    ewma.observed(A, 0.1, now=0.0)
    ewma.observed(B, 0.3, now=0.0)
    ewma.order([A, B, C], now=0.0)
    assert ewma.cost(C, now=0.0) == pytest.approx(0.2)


# ================================================================== the cookie

BACKEND = Backend("shop", "web", 80, endpoints=tuple(_endpoints(3)))


def test_a_persistent_token_is_the_same_everywhere_and_reveals_no_address() -> None:
    endpoint = BACKEND.endpoints[1]
    token = endpoint_token(BACKEND, endpoint)
    again = Backend("shop", "web", 80, endpoints=tuple(reversed(BACKEND.endpoints)))
    assert endpoint_token(again, endpoint) == token  # another config, same endpoint
    assert re.fullmatch(rb"[0-9a-f]{32}", token)
    assert endpoint.address.encode() not in token
    other = Backend("shop", "api", 80, endpoints=BACKEND.endpoints)
    assert endpoint_token(other, endpoint) != token  # another backend's cookie names nothing
    assert len({endpoint_token(BACKEND, e) for e in BACKEND.endpoints}) == 3


def test_the_set_cookie_line_carries_every_attribute_asked_for() -> None:
    affinity = Affinity(
        name="route", domain="shop.example.com", samesite="Lax", max_age=259200, expires=172800
    )
    line = set_cookie_line(
        affinity, b"abc", path="/cart", https=False, user_agent=None, wall_now=1_700_000_000
    )
    assert line == (
        b"Set-Cookie: route=abc; Path=/cart; Domain=shop.example.com; "
        b"Expires=Thu, 16 Nov 2023 22:13:20 GMT; Max-Age=259200; HttpOnly; SameSite=Lax\r\n"
    )
    secure = set_cookie_line(Affinity(), b"v", path="/", https=True, user_agent=None, wall_now=0)
    assert secure == b"Set-Cookie: INGRESSCOOKIE=v; Path=/; Secure; HttpOnly\r\n"


@pytest.mark.parametrize(
    ("agent", "compatible"),
    [
        (b"Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36", True),
        (b"Mozilla/5.0 (Windows NT 10.0) Chrome/58.0.3029 Safari/537.36", False),
        (b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_1 like Mac OS X) Safari/604.1", False),
        (b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) Version/12.1 Safari/605.1", False),
        (b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) Chrome/120 Safari/537.36", True),
    ],
)
def test_samesite_none_is_left_out_for_browsers_that_reject_it_when_asked(
    agent: bytes, compatible: bool
) -> None:
    affinity = Affinity(samesite="None", conditional_samesite_none=True)
    line = set_cookie_line(affinity, b"v", path="/", https=True, user_agent=agent, wall_now=0)
    assert same_site_none_compatible(agent) is compatible
    assert (b"SameSite=None" in line) is compatible
    plain = replace(affinity, conditional_samesite_none=False)
    unconditional = set_cookie_line(plain, b"v", path="/", https=True, user_agent=agent, wall_now=0)
    assert b"SameSite=None" in unconditional


@pytest.mark.parametrize(
    ("affinity", "rule_path", "expected"),
    [
        (Affinity(), "/something", "/something"),
        (Affinity(path="/foo/bar"), "/something", "/foo/bar"),
        (Affinity(), "", "/"),
        (Affinity(regex_paths=True), "/api/v[0-9]+/(.*)", "/api/"),
        (Affinity(regex_paths=True), "/api(/|$)(.*)", "/"),
        (Affinity(regex_paths=True), "/static/", "/static/"),
        (Affinity(regex_paths=True, path="/foo/bar"), "/api/(.*)", "/foo/bar"),
    ],
)
def test_the_cookie_path_is_the_rules_and_a_regex_rule_gives_its_literal_start(
    affinity: Affinity, rule_path: str, expected: str
) -> None:
    assert cookie_path(affinity, rule_path) == expected


# ================================================================== the chooser, sans I/O


def _route(affinity: Affinity, backend: Backend = BACKEND) -> Target:
    return Target("shop/web", backend, Policy(affinity=affinity), path="/")


def test_a_persistent_cookie_whose_endpoint_is_gone_is_replaced_by_the_one_that_answered() -> None:
    chooser = Chooser(Balancer(), random.Random(0))
    gone = BACKEND.endpoints[0]
    cookie = endpoint_token(BACKEND, gone)
    smaller = Backend("shop", "web", 80, endpoints=BACKEND.endpoints[1:])
    route = _route(Affinity(mode="persistent"), smaller)
    choice = Choice(cookie)
    order = chooser.attempts(route, choice, list(smaller.endpoints), now=0.0)
    assert gone not in order
    line = chooser.answered(route, choice, order[0], wall_now=0.0)
    assert line.startswith(b"Set-Cookie: INGRESSCOOKIE=" + endpoint_token(smaller, order[0]))


def test_a_balanced_key_goes_where_the_ring_says_in_any_process() -> None:
    route = _route(Affinity())
    first, second = Chooser(Balancer(), random.Random(1)), Chooser(Balancer(), random.Random(2))
    fresh = Choice(b"")
    order = first.attempts(route, fresh, list(BACKEND.endpoints), now=0.0)
    issued = first.answered(route, fresh, order[0], wall_now=0.0)
    key = re.search(rb"INGRESSCOOKIE=([0-9a-f]{32});", issued)
    assert key is not None
    again = second.attempts(route, Choice(key[1]), list(reversed(BACKEND.endpoints)), now=9.0)
    assert again[0] == order[0]


def test_new_sessions_and_ewma_choices_avoid_an_endpoint_in_its_failure_window() -> None:
    balancer = Balancer()
    down = BACKEND.endpoints[0]
    balancer.failed(down, now=0.0, reason="connect: refused")
    chooser = Chooser(balancer, random.Random(0))
    sticky = _route(Affinity())
    ewma = Target("shop/web", BACKEND, Policy(load_balance="ewma"), path="/")
    for _ in range(50):
        order = chooser.attempts(sticky, Choice(b""), list(BACKEND.endpoints), now=0.5)
        assert order[0] != down
        assert chooser.attempts(ewma, None, list(BACKEND.endpoints), now=0.5)[-1] == down


CANARY = Backend("shop", "web-canary", 80, endpoints=tuple(_endpoints(2, base=50)))


def test_a_session_names_its_backend_so_that_a_canary_can_keep_its_own() -> None:
    key = session_key(BACKEND, 12345)
    assert names_backend(BACKEND, key)
    assert not names_backend(CANARY, key)
    token = endpoint_token(CANARY, CANARY.endpoints[0])
    assert names_backend(CANARY, token)
    assert not names_backend(BACKEND, token)


def test_a_balanced_key_of_another_backend_is_no_cookie_and_a_new_one_is_issued() -> None:
    chooser = Chooser(Balancer(), random.Random(0))
    route = _route(Affinity())
    choice = Choice(session_key(CANARY, 7))
    order = chooser.attempts(route, choice, list(BACKEND.endpoints), now=0.0)
    issued = re.search(
        rb"INGRESSCOOKIE=([0-9a-f]{32});", chooser.answered(route, choice, order[0], 0)
    )
    assert issued is not None
    assert names_backend(BACKEND, issued[1])


@pytest.mark.parametrize("mode", ["balanced", "persistent"])
def test_endpoints_gone_between_the_plan_and_the_forward_leave_nothing_to_try(mode: str) -> None:
    chooser = Chooser(Balancer(), random.Random(0))
    empty = Backend("shop", "web", 80, problem="no endpoints")
    assert chooser.attempts(_route(Affinity(mode=mode), empty), Choice(b""), [], now=0.0) == []


# ================================================================== reading the annotations


def test_the_affinity_annotations_are_read_into_one_value() -> None:
    policy, notes = read_policy(
        {
            NGINX + "affinity": "cookie",
            NGINX + "affinity-mode": "persistent",
            NGINX + "affinity-canary-behavior": "legacy",
            NGINX + "session-cookie-name": "SERVERID",
            NGINX + "session-cookie-path": "/shop",
            NGINX + "session-cookie-domain": ".example.com",
            NGINX + "session-cookie-samesite": "none",
            NGINX + "session-cookie-conditional-samesite-none": "true",
            NGINX + "session-cookie-secure": "true",
            NGINX + "session-cookie-max-age": "60",
            NGINX + "session-cookie-expires": "120",
            NGINX + "session-cookie-change-on-failure": "true",
        }
    )
    assert notes == []
    assert policy.affinity == Affinity(
        mode="persistent",
        canary_behavior="legacy",
        name="SERVERID",
        path="/shop",
        domain=".example.com",
        samesite="None",
        conditional_samesite_none=True,
        secure=True,
        max_age=60,
        expires=120,
        change_on_failure=True,
    )
    assert not policy.plain


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("affinity", "ip", "expected cookie, got 'ip'"),
        ("affinity-mode", "sticky", "expected balanced or persistent"),
        ("affinity-canary-behavior", "always", "expected sticky or legacy"),
        ("session-cookie-name", "my cookie", "expected a cookie name"),
        ("session-cookie-path", "/a;Domain=evil.example", "without spaces or ';'"),
        ("session-cookie-samesite", "Sometimes", "expected None, Lax or Strict"),
        ("session-cookie-max-age", "1d", "expected a whole number of seconds"),
        ("load-balance", "least_conn", "expected round_robin or ewma"),
        ("upstream-hash-by", "$request_body", "$request_body in '$request_body' is not"),
        ("upstream-hash-by-subset-size", "0", "expected a number at least 1"),
    ],
)
def test_a_malformed_balancing_annotation_is_rejected_with_the_reason(
    name: str, value: str, reason: str
) -> None:
    extra = {NGINX + "affinity": "cookie"} if name.startswith("session") else {}
    _, notes = read_policy({NGINX + name: value, **extra})
    assert any(key == NGINX + name and reason in why and not warn for key, why, warn in notes)


def test_what_picks_the_endpoint_follows_ingress_nginx_precedence_and_says_what_lost() -> None:
    _policy, notes = read_policy(
        {
            NGINX + "affinity": "cookie",
            NGINX + "upstream-hash-by": "$request_uri",
            NGINX + "load-balance": "ewma",
        }
    )
    said = {key: why for key, why, _ in notes}
    assert "affinity picks the endpoint instead" in said[NGINX + "upstream-hash-by"]
    assert "affinity picks the endpoint instead" in said[NGINX + "load-balance"]
    _, subset_alone = read_policy({NGINX + "upstream-hash-by-subset": "true"})
    assert subset_alone == [
        (NGINX + "upstream-hash-by-subset", "has no effect without upstream-hash-by", True)
    ]


# ================================================================== end to end


def pod(name: str) -> Callable[[BackendConnection, Request], Awaitable[None]]:
    """A backend that answers every request with its own name."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        await connection.send(response(name.encode()))

    return answer


def objects(ports: dict[str, int], annotations: dict[str, str], **extra: Any) -> list[Obj]:
    """Service ``web`` with one endpoint per port, behind an Ingress for HOST with
    ``annotations`` (without prefix) on the rules of ``extra["paths"]`` (default "/")."""
    slices = [endpoint_slice("web", port, name=f"web-{name}") for name, port in ports.items()]
    paths = [(path, "Prefix", "web") for path in extra.get("paths", ["/"])]
    prefixed = {NGINX + k: v for k, v in annotations.items()}
    return [service(), *slices, ingress("shop", HOST.decode(), paths=paths, annotations=prefixed)]


@dataclass
class Replica:
    proxy: Proxy
    port: int

    async def get(self, path: bytes = b"/", *fields: bytes) -> Reply:
        """One GET on a new connection; the reply, which must come."""
        client = await RawClient.connect(self.port)
        try:
            head = [b"GET %s HTTP/1.1" % path, b"Host: " + HOST, *fields]
            await client.send(b"\r\n".join([*head, b"", b""]))
            reply = await client.reply()
        finally:
            await client.aclose()
        assert reply is not None, "the proxy closed without an answer"
        return reply


class Cluster:
    """Pods and proxy replicas in one nursery."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.ports: dict[str, int] = {}

    async def pods(self, *names: str, answer: Callable[[str], Any] = pod) -> dict[str, int]:
        for name in names:
            self.ports[name] = await self.nursery.start(RawBackend(answer(name)).serve)
        return {name: self.ports[name] for name in names}

    async def replica(self, config: RouteConfig) -> Replica:
        proxy = Proxy(config)
        listeners = await self.nursery.start(proxy.serve, "127.0.0.1", 0)
        return Replica(proxy, listeners[0].socket.getsockname()[1])


@asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        yield Cluster(nursery)
        nursery.cancel_scope.cancel()


def run(test: Callable[[Cluster], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(DEADLINE * 3):
            async with cluster() as c:
                await test(c)

    trio.run(bounded)


def cookie_of(reply: Reply, name: bytes = b"INGRESSCOOKIE") -> bytes | None:
    """The value the reply's Set-Cookie gives cookie ``name``, or None."""
    line = reply.header(b"set-cookie")
    if line is None:
        return None
    pair = line.split(b";")[0]
    key, _, value = pair.partition(b"=")
    return value if key == name else None


def build(ports: dict[str, int], **annotations: str) -> RouteConfig:
    """The config for ``ports``, with annotations given as keywords (``_`` for ``-``)."""
    config = build_config(objects(ports, {k.replace("_", "-"): v for k, v in annotations.items()}))
    assert not config.rejected(), config.rejected()
    return config


PODS = ("a", "b", "c")


@pytest.mark.parametrize("mode", ["balanced", "persistent"])
@pytest.mark.e2e
def test_a_cookie_issued_by_one_replica_sticks_on_another(mode: str) -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        # each replica builds its own config from the same objects, as two controllers do
        one = await c.replica(build(ports, affinity="cookie", affinity_mode=mode))
        two = await c.replica(build(ports, affinity="cookie", affinity_mode=mode))
        for _ in range(6):  # whichever pod a new session lands on
            first = await one.get()
            cookie = cookie_of(first)
            assert cookie is not None
            assert re.fullmatch(rb"[0-9a-f]{32}", cookie)
            for replica in (two, one, two):
                again = await replica.get(b"/", b"Cookie: INGRESSCOOKIE=" + cookie)
                assert again.body == first.body
                assert again.header(b"set-cookie") is None  # a valid cookie is not reissued

    run(test)


@pytest.mark.e2e
def test_without_a_cookie_new_sessions_spread_over_every_pod() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        for mode in ("persistent", "balanced"):
            proxy = await c.replica(build(ports, affinity="cookie", affinity_mode=mode))
            answered = {(await proxy.get()).body for _ in range(60)}
            assert answered == {b"a", b"b", b"c"}, mode

    run(test)


@pytest.mark.e2e
def test_the_cookie_has_ingress_nginx_attributes_and_the_rules_path() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        config = build_config(
            objects(
                ports,
                {
                    "affinity": "cookie",
                    "session-cookie-name": "SERVERID",
                    "session-cookie-max-age": "259200",
                    "session-cookie-expires": "172800",
                    "session-cookie-samesite": "Strict",
                },
                paths=["/something", "/somewhereelse"],
            )
        )
        proxy = await c.replica(config)
        for path in (b"/something", b"/somewhereelse"):
            line = (await proxy.get(path + b"/x")).header(b"set-cookie")
            assert line is not None
            attributes = [a.strip() for a in line.split(b";")]
            assert attributes[0].startswith(b"SERVERID=")
            assert b"Path=" + path in attributes
            assert b"Max-Age=259200" in attributes
            assert b"HttpOnly" in attributes
            assert b"SameSite=Strict" in attributes
            assert b"Secure" not in attributes  # plain HTTP, session-cookie-secure unset
            assert not any(a.startswith(b"Domain=") for a in attributes)
            expires = next(a for a in attributes if a.startswith(b"Expires="))
            stamp = parsedate_to_datetime(expires.removeprefix(b"Expires=").decode())
            assert stamp.tzinfo is not None
            assert stamp.year >= 2024

    run(test)


@pytest.mark.e2e
def test_the_cookie_takes_the_path_domain_and_secure_asked_for_even_over_plain_http() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        asked = {
            "affinity": "cookie",
            "session-cookie-path": "/foo/bar",
            "session-cookie-domain": "example.com",
            "session-cookie-secure": "true",
        }
        proxy = await c.replica(build_config(objects(ports, asked, paths=["/something"])))
        line = (await proxy.get(b"/something")).header(b"set-cookie")
        assert line is not None
        attributes = [a.strip() for a in line.split(b";")]
        assert b"Path=/foo/bar" in attributes
        assert b"Domain=example.com" in attributes
        assert b"Secure" in attributes
        # the same route once its affinity is removed: no cookie
        other = build_config(objects(ports, {}, paths=["/something"]))
        proxy.proxy.swap(other)
        assert (await proxy.get(b"/something")).header(b"set-cookie") is None

    run(test)


@pytest.mark.e2e
def test_a_cookie_still_names_its_pod_after_a_config_swap_that_adds_pods() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods("a", "b", "c", "d", "e")
        first = {k: ports[k] for k in ("a", "b")}
        replica = await c.replica(build(first, affinity="cookie", affinity_mode="persistent"))
        sessions = []
        for _ in range(4):
            reply = await replica.get()
            sessions.append((cookie_of(reply), reply.body))
        replica.proxy.swap(build(ports, affinity="cookie", affinity_mode="persistent"))
        for cookie, body in sessions:
            assert cookie is not None
            reply = await replica.get(b"/", b"Cookie: theme=dark; INGRESSCOOKIE=" + cookie)
            assert reply.body == body
            assert reply.header(b"set-cookie") is None

    run(test)


@pytest.mark.e2e
def test_a_pod_gone_rebalances_its_sessions_and_issues_a_new_cookie() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        replica = await c.replica(build(ports, affinity="cookie", affinity_mode="persistent"))
        reply = await replica.get()
        cookie, owner = cookie_of(reply), reply.body.decode()
        assert cookie is not None
        left = {k: v for k, v in ports.items() if k != owner}
        replica.proxy.swap(build(left, affinity="cookie", affinity_mode="persistent"))
        moved = await replica.get(b"/", b"Cookie: INGRESSCOOKIE=" + cookie)
        assert moved.status == 200
        assert moved.body.decode() in left
        new_cookie = cookie_of(moved)
        assert new_cookie is not None
        assert new_cookie != cookie
        for _ in range(5):  # and the new cookie sticks to the pod that answered
            again = await replica.get(b"/", b"Cookie: INGRESSCOOKIE=" + new_cookie)
            assert again.body == moved.body

    run(test)


@pytest.mark.e2e
def test_a_balanced_session_whose_pod_is_gone_moves_alike_in_every_replica() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        one = await c.replica(build(ports, affinity="cookie"))
        two = await c.replica(build(ports, affinity="cookie"))
        reply = await one.get()
        cookie, owner = cookie_of(reply), reply.body.decode()
        assert cookie is not None
        left = {k: v for k, v in ports.items() if k != owner}
        one.proxy.swap(build(left, affinity="cookie"))
        two.proxy.swap(build(left, affinity="cookie"))
        field = b"Cookie: INGRESSCOOKIE=" + cookie
        there = {(await r.get(b"/", field)).body for r in (one, two, one, two)}
        assert len(there) == 1
        assert there.pop().decode() in left

    run(test)


@pytest.mark.parametrize("change", [True, False])
@pytest.mark.e2e
def test_change_on_failure_moves_the_cookie_to_the_pod_that_answered(change: bool) -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods("a", "b")
        dead = {"dead": closed_port()}
        annotations = {
            "affinity": "cookie",
            "affinity_mode": "persistent",
            "session_cookie_change_on_failure": "true" if change else "false",
        }
        everyone = build({**ports, **dead}, **annotations)
        replica = await c.replica(everyone)
        dead_endpoint = Endpoint("127.0.0.1", dead["dead"])
        token = endpoint_token(everyone.router.match(HOST, "/").backend, dead_endpoint)
        reply = await replica.get(b"/", b"Cookie: INGRESSCOOKIE=" + token)
        assert reply.status == 200
        assert reply.body in (b"a", b"b")
        moved = cookie_of(reply)
        if change:
            assert moved is not None
            again = await replica.get(b"/", b"Cookie: INGRESSCOOKIE=" + moved)
            assert again.body == reply.body
        else:
            assert moved is None

    run(test)


@pytest.mark.e2e
def test_upstream_hash_by_request_uri_sends_one_uri_to_one_pod() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods("a", "b", "c", "d", "e", "f")
        one = await c.replica(build(ports, upstream_hash_by="$request_uri"))
        two = await c.replica(build(ports, upstream_hash_by="$request_uri"))
        owners = {}
        for i in range(12):
            path = b"/item/%d" % i
            answered = {(await r.get(path)).body for r in (one, two, one, two)}
            assert len(answered) == 1, path
            owners[path] = answered.pop()
        assert len(set(owners.values())) > 1  # different URIs spread

    run(test)


@pytest.mark.e2e
def test_upstream_hash_by_a_header_ignores_the_rest_of_the_request() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        proxy = await c.replica(build(ports, upstream_hash_by="tenant-$http_x_tenant"))
        for tenant in (b"t1", b"t2", b"t3"):
            answered = {
                (await proxy.get(b"/page/%d" % i, b"X-Tenant: " + tenant)).body for i in range(6)
            }
            assert len(answered) == 1, tenant

    run(test)


@pytest.mark.e2e
def test_upstream_hash_by_subset_spreads_one_key_over_its_subset_only() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods("a", "b", "c", "d", "e", "f")
        proxy = await c.replica(
            build(
                ports,
                upstream_hash_by="$request_uri",
                upstream_hash_by_subset="true",
                upstream_hash_by_subset_size="3",
            )
        )
        answered = {(await proxy.get(b"/same")).body for _ in range(60)}
        assert len(answered) == 3  # ingress-nginx's e2e: exactly the subset's size

    run(test)


@pytest.mark.e2e
def test_an_unknown_hash_variable_is_reported_and_the_route_round_robins() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        config = build_config(objects(ports, {"upstream-hash-by": "$ssl_client_s_dn"}))
        reasons = [p.reason for p in config.problems]
        assert any("$ssl_client_s_dn" in r and "not a variable" in r for r in reasons), reasons
        proxy = await c.replica(config)
        assert {(await proxy.get(b"/same")).body for _ in range(9)} == {b"a", b"b", b"c"}

    run(test)


def slow_pod(name: str) -> Callable[[BackendConnection, Request], Awaitable[None]]:
    """A pod that takes 100 ms to answer when its name starts with "slow"."""

    async def answer(connection: BackendConnection, request: Request) -> None:
        if name.startswith("slow"):
            await trio.sleep(0.1)
        await connection.send(response(name.encode()))

    return answer


@pytest.mark.e2e
def test_ewma_sends_little_to_a_slow_pod_where_round_robin_sends_its_share() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods("fast1", "fast2", "slow", answer=slow_pod)
        ewma = await c.replica(build(ports, load_balance="ewma"))
        round_robin = await c.replica(build(ports))
        by_ewma = Counter([(await ewma.get()).body for _ in range(30)])
        by_turns = Counter([(await round_robin.get()).body for _ in range(30)])
        assert sum(by_ewma.values()) == 30  # nothing failed
        assert by_turns[b"slow"] == 10
        assert by_ewma[b"slow"] <= 4

    run(test)


@pytest.mark.e2e
def test_the_configmap_sets_the_default_and_an_annotation_overrides_it() -> None:
    async def test(c: Cluster) -> None:
        ports = await c.pods(*PODS)
        configmap = {
            "kind": "ConfigMap",
            "metadata": {"name": "fastroute", "namespace": "default"},
            "data": {"upstream-hash-by": "$request_uri"},
        }
        hashed = build_config([*objects(ports, {}), configmap], configmap="default/fastroute")
        proxy = await c.replica(hashed)
        assert len({(await proxy.get(b"/same")).body for _ in range(9)}) == 1
        overridden = build_config(
            [*objects(ports, {"affinity": "cookie", "affinity-mode": "persistent"}), configmap],
            configmap="default/fastroute",
        )
        proxy.proxy.swap(overridden)
        replies = [await proxy.get(b"/same") for _ in range(9)]
        assert {r.body for r in replies} == {b"a", b"b", b"c"}  # new sessions, in turn
        assert all(cookie_of(r) for r in replies)

    run(test)
