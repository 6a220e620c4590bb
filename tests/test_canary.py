"""Canary Ingresses: their annotations, the merge onto the main rule, the choice per request,
and end to end over real sockets, with a main and a canary backend that say which answered.

The expected behaviour is ingress-nginx's (its docs' Canary section, its e2e tests
``test/e2e/annotations/canary.go``), except where a test says why fastroute differs: a
canary applies to the host and path it names, not to every rule of its Service.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fastroute.ingress import ConfigBuilder, build_config
from fastroute.ingress.annotations import read_policy
from fastroute.ingress.canary import describe_canary
from fastroute.ingress.model import (
    Backend,
    Canary,
    Endpoint,
    Policy,
    Problem,
    RouteConfig,
    Split,
    Target,
)
from fastroute.proxy.canary import choose, cookie_value
from fastroute.proxy.decide import Forward, decide
from fastroute.proxy.server import Proxy
from tests.objects import ingress as ingress_object
from tests.objects import service_at
from tests.polling import DEADLINE, run_within
from tests.raw import BackendConnection, RawBackend, RawClient, Request, response

NGINX = "nginx.ingress.kubernetes.io/"
HOST = "app.example.com"
OTHER = "other.example.com"

Obj = dict[str, Any]


# -- objects -------------------------------------------------------------------------


def service(name: str, port: int | None) -> list[Obj]:
    """Service ``name`` with one endpoint on 127.0.0.1:port (none if port is None)."""
    return service_at(port, name)


def ingress(
    name: str,
    to: str,
    annotations: Mapping[str, str] | None = None,
    *,
    host: str = HOST,
    path: str = "/",
    path_type: str = "Prefix",
    stamp: str = "",
    default: bool = False,
) -> Obj:
    return ingress_object(
        name,
        host,
        paths=[(path, path_type, to)],
        annotations=annotations or {},
        created=stamp,
        default_backend=to if default else None,
    )


def canary_ingress(annotations: Mapping[str, str], **options: Any) -> Obj:
    """Ingress ``default/app-canary`` to Service ``canary``, with ``canary: "true"``."""
    marked = {NGINX + "canary": "true"} | prefixed(annotations)
    return ingress("app-canary", "canary", marked, **options)


def prefixed(annotations: Mapping[str, str] | None) -> dict[str, str]:
    return {NGINX + k: v for k, v in (annotations or {}).items()}


def objects(canary: Mapping[str, str], main: Mapping[str, str] | None = None) -> list[Obj]:
    """Service web (port 1001) behind Ingress app, Service canary (port 1002) as its canary."""
    return [
        *service("web", 1001),
        *service("canary", 1002),
        ingress("app", "web", prefixed(main)),
        canary_ingress(canary),
    ]


def problems_of(config: RouteConfig, ingress_name: str) -> list[Problem]:
    return [p for p in config.problems if p.name == ingress_name]


def route(config: RouteConfig, host: str = HOST, path: str = "/") -> Target:
    found = config.router.match(host, path)
    assert isinstance(found, Target)
    return found


# -- annotations ---------------------------------------------------------------------


def _read(annotations: Mapping[str, str]) -> tuple[Policy, dict[str, tuple[str, bool]]]:
    policy, notes = read_policy({NGINX + k: v for k, v in annotations.items()})
    return policy, {key.removeprefix(NGINX): (reason, warning) for key, reason, warning in notes}


def test_the_canary_annotations_are_read_into_the_rules() -> None:
    policy, notes = _read(
        {
            "canary": "true",
            "canary-by-header": "X-Canary",
            "canary-by-header-value": "yes",
            "canary-by-cookie": "canary_cookie",
            "canary-weight": "25",
            "canary-weight-total": "200",
        }
    )
    assert notes == {}
    assert policy.canary == Canary("X-Canary", "yes", "", "canary_cookie", 25, 200)
    assert not policy.plain


def test_canary_alone_is_a_canary_with_no_rule_but_weight_zero() -> None:
    policy, notes = _read({"canary": "true"})
    assert notes == {}
    assert policy.canary == Canary()
    assert policy.canary.weight == 0
    assert policy.canary.weight_total == 100


@pytest.mark.parametrize(
    ("annotation", "value", "said"),
    [
        ("canary", "yes", "'yes'"),
        ("canary-weight", "-1", "'-1'"),
        ("canary-weight", "ten", "'ten'"),
        ("canary-weight-total", "0", "'0'"),
        ("canary-by-header", "X Canary", "'X Canary'"),
        ("canary-by-cookie", "a=b", "'a=b'"),
        ("canary-by-header-pattern", "[(", "RE2"),
        ("canary-by-header-pattern", "(a)\\1", "RE2"),  # a backreference: not linear time
    ],
)
def test_a_malformed_value_is_rejected_naming_the_annotation_and_value(
    annotation: str, value: str, said: str
) -> None:
    annotations = {"canary": "true", "canary-by-header": "X-Canary", annotation: value}
    config = build_config(
        [
            *service("web", 1001),
            *service("canary", 1002),
            ingress("app", "web"),
            canary_ingress(annotations),
        ]
    )
    rejected = [
        p
        for p in problems_of(config, "default/app-canary")
        if not p.warning and p.field.startswith("metadata.annotations")
    ]
    assert [p.field for p in rejected] == [f"metadata.annotations[{NGINX}{annotation}]"]
    assert said in rejected[0].reason
    assert value in rejected[0].reason or annotation == "canary-by-header-pattern"


def test_a_rejected_weight_leaves_the_canary_with_ingress_nginx_default_of_zero() -> None:
    config = build_config(objects({"canary-weight": "lots"}))
    assert route(config).split is not None
    assert route(config).policy.canary == Canary(weight=0)


def test_canary_annotations_without_canary_true_are_ignored_with_a_warning() -> None:
    policy, notes = _read({"canary-weight": "50", "canary-by-header": "X-Canary"})
    assert policy.canary is None
    assert notes["canary-weight"] == ('has no effect without canary: "true"; ignored', True)
    assert notes["canary-by-header"][1] is True


def test_header_value_and_pattern_need_the_header_and_value_beats_pattern() -> None:
    policy, notes = _read({"canary": "true", "canary-by-header-value": "yes"})
    assert policy.canary == Canary()
    assert "without canary-by-header" in notes["canary-by-header-value"][0]
    policy, notes = _read(
        {
            "canary": "true",
            "canary-by-header": "X-Canary",
            "canary-by-header-value": "yes",
            "canary-by-header-pattern": "^y",
        }
    )
    assert policy.canary == Canary(header="X-Canary", header_value="yes")
    assert notes["canary-by-header-pattern"][1] is True


def test_a_weight_above_the_total_sends_everything_and_says_so() -> None:
    policy, notes = _read({"canary": "true", "canary-weight": "150"})
    assert policy.canary == Canary(weight=150)
    assert "every request" in notes["canary-weight"][0]
    config = build_config(objects({"canary-weight": "150"}))
    split = route(config).split
    assert split is not None
    assert split.weights == (0, 100)


def test_a_canary_ingress_other_annotations_are_ignored_with_a_warning() -> None:
    policy, notes = _read(
        {"canary": "true", "rewrite-target": "/v2", "whitelist-source-range": "10.0.0.0/8"}
    )
    assert policy == Policy(canary=Canary())
    assert notes["rewrite-target"] == (
        "ignored on a canary Ingress: the main Ingress's applies to its requests",
        True,
    )
    assert notes["whitelist-source-range"][1] is True


# -- the weighted split and the choice -----------------------------------------------


ANNOTATED = Policy(read_timeout=5.0)


def _target(name: str, policy: Policy = ANNOTATED) -> Target:
    backend = Backend("default", name, 80, (Endpoint("10.0.0.1", 80),))
    return Target("default/app", backend, policy)


def test_a_split_gives_each_target_its_weight_of_the_draws() -> None:
    a, b, c = _target("a"), _target("b"), _target("c")
    split = Split((a, b, c), (1, 0, 3))
    assert split.total == 4
    assert split.pick(0.0) is a
    assert split.pick(0.999) is a
    assert split.pick(1.0) is c  # b's weight is 0: never picked
    assert split.pick(3.999) is c
    assert split.pick(4.0) is c  # a draw at the total still lands on a weighted target


@pytest.mark.parametrize("weights", [(), (1,), (0, 0), (-1, 2)])
def test_a_split_needs_a_weight_per_target_and_some_weight(weights: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="weight"):
        Split((_target("a"), _target("b")), weights)


def test_a_split_of_a_plain_route_is_refused_since_decide_would_not_see_it() -> None:
    with pytest.raises(ValueError, match="plain"):
        Split((_target("a", Policy()), _target("b")), (1, 1))


def _canaried(rules: Canary) -> Target:
    from fastroute.ingress.canary import with_canary

    return with_canary(_target("web"), _target("canary").backend, Policy(canary=rules))


def _headers(fields: Mapping[bytes, bytes]) -> Callable[[bytes], bytes | None]:
    return fields.get


ALWAYS_HEADER = Canary(header="X-Canary", cookie="c", weight=50)
# a draw below 0.5 sends ALWAYS_HEADER's weight to the main backend, above to the canary
TO_MAIN, TO_CANARY = 0.0, 0.99


@pytest.mark.parametrize(
    ("rules", "fields", "draw", "expected"),
    [
        # header: always and never decide, other values pass on to the cookie, then the weight
        (ALWAYS_HEADER, {b"x-canary": b"always"}, TO_MAIN, "canary"),
        (ALWAYS_HEADER, {b"x-canary": b"never"}, TO_CANARY, "web"),
        (ALWAYS_HEADER, {b"x-canary": b"Always"}, TO_MAIN, "web"),  # values are case-sensitive
        (ALWAYS_HEADER, {b"x-canary": b"other"}, TO_CANARY, "canary"),  # left to the weight
        # the header before the cookie
        (ALWAYS_HEADER, {b"x-canary": b"never", b"cookie": b"c=always"}, TO_CANARY, "web"),
        (ALWAYS_HEADER, {b"x-canary": b"always", b"cookie": b"c=never"}, TO_MAIN, "canary"),
        (ALWAYS_HEADER, {b"x-canary": b"other", b"cookie": b"c=always"}, TO_MAIN, "canary"),
        # the cookie before the weight
        (ALWAYS_HEADER, {b"cookie": b"a=1; c=never"}, TO_CANARY, "web"),
        (ALWAYS_HEADER, {b"cookie": b"c=always"}, TO_MAIN, "canary"),
        (ALWAYS_HEADER, {b"cookie": b"c=sometimes"}, TO_MAIN, "web"),
        (ALWAYS_HEADER, {b"cookie": b"c=sometimes"}, TO_CANARY, "canary"),
        # a header value: only that value; "always" is no longer special
        (Canary(header="X-Canary", header_value="yes"), {b"x-canary": b"yes"}, 0.0, "canary"),
        (Canary(header="X-Canary", header_value="yes"), {b"x-canary": b"always"}, 0.0, "web"),
        (
            Canary(header="X-Canary", header_value="yes", weight=100),
            {b"x-canary": b"never"},
            0.0,
            "canary",  # "never" is not special either: the weight decides
        ),
        # a pattern: found anywhere in the value, case-sensitive
        (
            Canary(header="X-C", header_pattern="^Do[A-Z][a-z]+y$"),
            {b"x-c": b"DoCanary"},
            0,
            "canary",
        ),
        (Canary(header="X-C", header_pattern="^Do[A-Z][a-z]+y$"), {b"x-c": b"Docanary"}, 0, "web"),
        (Canary(header="X-C", header_pattern="beta"), {b"x-c": b"v2-beta-1"}, 0.0, "canary"),
        # the weight alone
        (Canary(weight=0), {}, 0.0, "web"),
        (Canary(weight=100), {}, 0.99999, "canary"),
        (Canary(weight=1, weight_total=1000), {}, 0.9995, "canary"),
        (Canary(weight=1, weight_total=1000), {}, 0.998, "web"),
    ],
)
def test_the_choice_goes_header_then_cookie_then_weight(
    rules: Canary, fields: Mapping[bytes, bytes], draw: float, expected: str
) -> None:
    chosen = choose(_canaried(rules), _headers(fields), lambda: draw)
    assert chosen.backend.service == expected
    assert chosen.split is None


def _reference(rules: Canary, fields: Mapping[bytes, bytes], draw: float) -> str:
    """ingress-nginx's choice (its balancer's ``route_to_alternative_balancer``), written
    out as plainly as it reads there, with fastroute's weight / total."""
    value = fields.get(rules.header.lower().encode()) if rules.header else None
    if value is not None:
        text = value.decode("latin-1")
        if rules.header_value:
            if text == rules.header_value:
                return "canary"
        elif rules.header_pattern:
            if re.search(rules.header_pattern, text):
                return "canary"
        elif text == "always":
            return "canary"
        elif text == "never":
            return "web"
    if rules.cookie and b"cookie" in fields:
        jar: dict[str, str] = {}
        for pair in fields[b"cookie"].decode("latin-1").split(";"):
            name, equals, crumb = pair.partition("=")
            if equals:
                jar.setdefault(name.strip().lower(), crumb.strip())
        cookie = jar.get(rules.cookie.lower())
        if cookie == "always":
            return "canary"
        if cookie == "never":
            return "web"
    weight = min(rules.weight, rules.weight_total)
    return "canary" if draw * rules.weight_total >= rules.weight_total - weight else "web"


WORDS = st.sampled_from(["always", "never", "yes", "DoCanary", "Always", "", "no"])


@settings(max_examples=500, deadline=None)
@given(
    rules=st.builds(
        Canary,
        header=st.sampled_from(["", "X-Canary"]),
        header_value=st.sampled_from(["", "yes"]),
        header_pattern=st.sampled_from(["", "^Do[A-Z]", "es$"]),
        cookie=st.sampled_from(["", "c"]),
        weight=st.integers(0, 120),
        weight_total=st.sampled_from([1, 10, 100, 1000]),
    ),
    header=st.none() | WORDS,
    cookie=st.none() | st.builds(lambda a, b: f"a={a}; c={b}", WORDS, WORDS),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_the_choice_is_the_reference_one(
    rules: Canary, header: str | None, cookie: str | None, draw: float
) -> None:
    if rules.header_value and rules.header_pattern:
        rules = dataclasses.replace(rules, header_pattern="")  # the annotations allow one
    fields = {}
    if header is not None:
        fields[b"x-canary"] = header.encode()
    if cookie is not None:
        fields[b"cookie"] = cookie.encode()
    chosen = choose(_canaried(rules), _headers(fields), lambda: draw)
    assert chosen.backend.service == _reference(rules, fields, draw)


def test_a_route_without_a_split_is_its_own_choice() -> None:
    target = _target("web")
    assert choose(target, _headers({}), lambda: 0.5) is target


@pytest.mark.parametrize(
    ("field", "name", "value"),
    [
        (b"c=always", b"c", b"always"),
        (b"a=1;  c=never ; d=x", b"c", b"never"),
        (b"C=always", b"c", b"always"),  # nginx's $cookie_ finds names in any case
        (b"cc=always", b"c", None),
        (b"c", b"c", None),
        (b"", b"c", None),
    ],
)
def test_cookie_values_are_found_by_name(field: bytes, name: bytes, value: bytes | None) -> None:
    assert cookie_value(field, name) == value


def test_describe_canary_says_each_rule_in_order() -> None:
    target = _canaried(
        Canary(header="X-Canary", header_pattern="^beta", cookie="c", weight=20, weight_total=200)
    )
    assert describe_canary(target) == [
        "canary: default/canary:80 beside default/web:80",
        "header X-Canary: matching '^beta' (RE2, anywhere in the value) -> canary; any other "
        "value -> the rules below",
        "cookie c: 'always' -> canary, 'never' -> main, any other value -> the weight",
        "weight: 20 in 200 (10.0%) -> canary, the rest -> main",
    ]
    assert describe_canary(_target("web")) == []


def test_describe_canary_from_a_built_config() -> None:
    config = build_config(objects({"canary-by-header": "X-Canary", "canary-weight": "5"}))
    lines = describe_canary(route(config))
    assert lines[0] == "canary: default/canary:80 beside default/web:80"
    assert lines[1].startswith("header X-Canary: 'always' -> canary, 'never' -> main")
    assert lines[-1] == "weight: 5 in 100 (5.0%) -> canary, the rest -> main"


# -- the build -----------------------------------------------------------------------


def test_a_canary_merges_onto_the_main_rule_instead_of_conflicting() -> None:
    config = build_config(objects({"canary-weight": "30"}))
    assert config.problems == ()
    target = route(config)
    assert target.ingress == "default/app"
    assert target.backend.service == "web"
    assert target.split is not None
    main, canary = target.split.targets
    assert (main.backend.service, canary.backend.service) == ("web", "canary")
    assert target.split.weights == (70, 30)
    assert config.ingresses == ("default/app", "default/app-canary")


def test_an_older_canary_still_merges_onto_the_newer_main_rule() -> None:
    config = build_config(
        [
            *service("web", 1001),
            *service("canary", 1002),
            ingress("app", "web", stamp="2026-02-01T00:00:00Z"),
            canary_ingress({"canary-weight": "10"}, stamp="2026-01-01T00:00:00Z"),
        ]
    )
    assert config.problems == ()
    target = route(config)
    assert target.backend.service == "web"
    assert target.split is not None


def test_the_canary_is_served_under_the_main_ingress_policy() -> None:
    config = build_config(
        objects(
            {"canary-weight": "100", "proxy-read-timeout": "99", "upstream-vhost": "canary.x"},
            main={"proxy-read-timeout": "7", "upstream-vhost": "main.internal"},
        )
    )
    target = route(config)
    assert target.split is not None
    canary = target.split.targets[1]
    assert canary.policy.read_timeout == 7
    assert canary.policy.upstream_vhost == "main.internal"
    assert canary.policy is target.policy
    assert canary.ingress == "default/app"  # logs and metrics: the main's Ingress, its Service
    assert canary.backend.service == "canary"
    warned = {p.field for p in problems_of(config, "default/app-canary") if p.warning}
    assert warned == {
        f"metadata.annotations[{NGINX}proxy-read-timeout]",
        f"metadata.annotations[{NGINX}upstream-vhost]",
    }


def test_a_canary_with_no_main_rule_is_not_served_and_reported() -> None:
    config = build_config(
        [*service("canary", 1002), canary_ingress({"canary-by-header": "X-Canary"})]
    )
    assert config.router.match(HOST, "/") is None  # ingress-nginx: 404 for the canary's host
    (problem,) = problems_of(config, "default/app-canary")
    assert not problem.warning
    assert problem.field == "spec.rules[0].http.paths[0]"
    assert "no Ingress routes Prefix '/' on app.example.com" in problem.reason


@pytest.mark.parametrize(
    ("path", "path_type"),
    [("/api", "Prefix"), ("/", "Exact")],
)
def test_a_canary_merges_onto_the_same_path_and_path_type_only(path: str, path_type: str) -> None:
    config = build_config(
        [
            *service("web", 1001),
            *service("canary", 1002),
            ingress("app", "web"),
            canary_ingress({"canary-weight": "100"}, path=path, path_type=path_type),
        ]
    )
    assert route(config).split is None
    (problem,) = problems_of(config, "default/app-canary")
    assert f"no Ingress routes {path_type} {path!r}" in problem.reason


def test_a_canary_applies_to_its_host_and_path_not_to_every_rule_of_the_service() -> None:
    """ingress-nginx attaches a canary to the main rule's Service, so another Ingress of that
    Service gets it too; fastroute attaches it to the host and path it names."""
    config = build_config(
        [
            *service("web", 1001),
            *service("canary", 1002),
            ingress("app", "web"),
            ingress("other", "web", host=OTHER),
            canary_ingress({"canary-weight": "100"}),
        ]
    )
    assert route(config).split is not None
    assert route(config, OTHER).split is None
    assert route(config, OTHER).backend.service == "web"


def test_a_second_canary_for_the_same_rule_is_refused() -> None:
    second = ingress(
        "second-canary",
        "canary2",
        {NGINX + "canary": "true", NGINX + "canary-weight": "100"},
        stamp="2026-03-01T00:00:00Z",
    )
    config = build_config([*objects({"canary-weight": "10"}), *service("canary2", 1003), second])
    target = route(config)
    assert target.split is not None
    assert target.split.targets[1].backend.service == "canary"
    (problem,) = problems_of(config, "default/second-canary")
    assert "already has a canary, from the older Ingress default/app-canary" in problem.reason


def test_a_canary_in_another_namespace_is_refused() -> None:
    """ingress-nginx merges a canary from any namespace; fastroute does not, or one tenant
    could take any share of another's traffic with a canary on its host and path."""
    elsewhere = canary_ingress({"canary-weight": "100"})
    elsewhere["metadata"]["namespace"] = "other"
    moved = [
        {**o, "metadata": {**o["metadata"], "namespace": "other"}} for o in service("canary", 1002)
    ]
    config = build_config([*service("web", 1001), *moved, ingress("app", "web"), elsewhere])
    assert route(config).split is None
    (problem,) = problems_of(config, "other/app-canary")
    assert "in another namespace" in problem.reason
    assert "default/app" in problem.reason


def test_a_canary_to_the_main_rule_own_service_is_refused() -> None:
    config = build_config(
        [
            *service("web", 1001),
            ingress("app", "web"),
            ingress("app-canary", "web", {NGINX + "canary": "true", NGINX + "canary-weight": "50"}),
        ]
    )
    assert route(config).split is None
    (problem,) = problems_of(config, "default/app-canary")
    assert "is the main rule's own" in problem.reason


def test_a_canary_default_backend_merges_onto_the_catch_all_and_is_never_it() -> None:
    canary = ingress(
        "app-canary",
        "canary",
        {NGINX + "canary": "true", NGINX + "canary-weight": "40"},
        default=True,
    )
    alone = build_config([*service("canary", 1002), canary])
    assert alone.router.default is None
    assert "no catch-all default backend" in problems_of(alone, "default/app-canary")[0].reason
    config = build_config(
        [
            *service("web", 1001),
            *service("canary", 1002),
            ingress("app", "web", default=True),
            canary,
        ]
    )
    catch_all = config.router.default
    assert isinstance(catch_all, Target)
    assert catch_all.backend.service == "web"
    assert catch_all.split is not None
    assert catch_all.split.weights == (60, 40)
    assert config.problems == ()


def test_a_canary_ingress_tls_entries_are_ignored_with_a_warning() -> None:
    """ingress-nginx builds no server from a canary Ingress: its TLS section neither adds a
    certificate nor turns on the HTTPS redirect of the main rule's host."""
    canary = canary_ingress({"canary-weight": "10"})
    canary["spec"]["tls"] = [{"hosts": [HOST], "secretName": "missing"}]
    config = build_config(
        [*service("web", 1001), *service("canary", 1002), ingress("app", "web"), canary]
    )
    assert route(config).split is not None
    assert not route(config).tls
    assert config.certificate_for(HOST) is None
    (problem,) = problems_of(config, "default/app-canary")
    assert problem.warning
    assert problem.field == "spec.tls"
    assert "the main Ingress's TLS applies" in problem.reason


def test_adding_and_removing_a_canary_updates_the_main_route_incrementally() -> None:
    builder = ConfigBuilder()
    base = [*service("web", 1001), *service("canary", 1002), ingress("app", "web")]
    for obj in base:
        builder.put(obj)
    assert route(builder.build()).split is None
    canary = canary_ingress({"canary-weight": "30"})
    builder.put(canary)
    built = builder.build()
    split = route(built).split
    assert split is not None
    assert split.weights == (70, 30)
    assert route(built) == route(build_config([*base, canary]))
    builder.put(canary_ingress({"canary-weight": "80"}))
    split = route(builder.build()).split
    assert split is not None
    assert split.weights == (20, 80)
    # the canary's endpoints change: the main route's split follows
    builder.put(service("canary", 2002)[1])
    split = route(builder.build()).split
    assert split is not None
    assert split.targets[1].backend.endpoints == (Endpoint("127.0.0.1", 2002),)
    builder.delete(canary)
    after = builder.build()
    assert route(after).split is None
    assert after.problems == ()
    # the main rule goes: the canary is left without one, and says so
    builder.put(canary)
    builder.delete(base[-1])
    orphaned = builder.build()
    assert orphaned.router.match(HOST, "/") is None
    assert "no Ingress routes" in problems_of(orphaned, "default/app-canary")[0].reason


# -- decide --------------------------------------------------------------------------


def _decide(config: RouteConfig, fields: Mapping[bytes, bytes], target: bytes = b"/") -> Forward:
    plan = decide(
        config,
        method=b"GET",
        target=target,
        host=HOST.encode(),
        scheme="http",
        header=_headers(fields),
    )
    assert isinstance(plan, Forward)
    return plan


def test_decide_forwards_to_the_chosen_target() -> None:
    config = build_config(objects({"canary-by-header": "X-Canary"}))
    assert _decide(config, {b"x-canary": b"always"}).route.backend.service == "canary"
    assert _decide(config, {b"x-canary": b"never"}).route.backend.service == "web"
    assert _decide(config, {}).route.backend.service == "web"  # weight 0


def test_decide_sends_a_catch_all_request_to_the_catch_all_canary() -> None:
    canary = ingress(
        "app-canary",
        "canary",
        {NGINX + "canary": "true", NGINX + "canary-by-header": "X-Canary"},
        default=True,
    )
    config = build_config(
        [
            *service("web", 1001),
            *service("canary", 1002),
            ingress("app", "web", default=True),
            canary,
        ]
    )
    assert _decide(config, {b"x-canary": b"always"}).route.backend.service == "canary"
    assert _decide(config, {}).route.backend.service == "web"


def test_a_route_without_a_canary_stays_plain() -> None:
    config = build_config([*service("web", 1001), ingress("app", "web")])
    assert route(config).policy.plain
    assert route(config).split is None


# -- end to end ----------------------------------------------------------------------


async def _named(name: bytes, connection: BackendConnection, request: Request) -> None:
    await connection.send(response(name))


@dataclass
class Served:
    port: int
    main: RawBackend
    canary: RawBackend

    async def who(self, path: str = "/", host: str = HOST, extra: bytes = b"") -> bytes:
        """Which backend answered a GET (its body), or the status if the proxy did."""
        client = await RawClient.connect(self.port)
        try:
            await client.send(
                b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path.encode(), host.encode(), extra)
            )
            reply = await client.reply()
        finally:
            await client.aclose()
        assert reply is not None
        return reply.body if reply.status == 200 else b"%d" % reply.status


Objects = Callable[[int, int], list[Obj]]


@asynccontextmanager
async def serving(make: Objects) -> AsyncIterator[Served]:
    """The proxy in front of two raw backends whose answers name them: ``main`` and
    ``canary``; ``make(main_port, canary_port)`` gives the objects."""
    main = RawBackend(lambda c, r: _named(b"main", c, r))
    canary = RawBackend(lambda c, r: _named(b"canary", c, r))
    async with trio.open_nursery() as nursery:
        main_port = await nursery.start(main.serve)
        canary_port = await nursery.start(canary.serve)
        proxy = Proxy(build_config(make(main_port, canary_port)))
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield Served(listeners[0].socket.getsockname()[1], main, canary)
        nursery.cancel_scope.cancel()


def pair(canary: Mapping[str, str], main: Mapping[str, str] | None = None) -> Objects:
    """Service web -> main backend behind Ingress app; Service canary -> canary backend
    behind Ingress app-canary with ``canary`` annotations."""

    def make(main_port: int, canary_port: int) -> list[Obj]:
        return [
            *service("web", main_port),
            *service("canary", canary_port),
            ingress("app", "web", prefixed(main)),
            canary_ingress(canary),
        ]

    return make


def run(test: Callable[[], Any]) -> None:
    run_within(test, DEADLINE * 6)


@pytest.mark.e2e
def test_e2e_header_always_never_and_other_values() -> None:
    async def main() -> None:
        async with serving(pair({"canary-by-header": "CanaryByHeader"})) as site:
            assert await site.who(extra=b"CanaryByHeader: always\r\n") == b"canary"
            assert await site.who(extra=b"canarybyheader: always\r\n") == b"canary"  # any case
            assert await site.who(extra=b"CanaryByHeader: never\r\n") == b"main"
            assert await site.who(extra=b"CanaryByHeader: badvalue\r\n") == b"main"
            assert await site.who() == b"main"
        async with serving(
            pair({"canary-by-header": "CanaryByHeader", "canary-weight": "100"})
        ) as site:
            # "never" wins over the weight; other values are left to it
            assert await site.who(extra=b"CanaryByHeader: never\r\n") == b"main"
            assert await site.who(extra=b"CanaryByHeader: badvalue\r\n") == b"canary"

    run(main)


@pytest.mark.e2e
def test_e2e_header_value_and_pattern() -> None:
    async def main() -> None:
        value = {"canary-by-header": "CanaryByHeader", "canary-by-header-value": "DoCanary"}
        async with serving(pair(value)) as site:
            assert await site.who(extra=b"CanaryByHeader: DoCanary\r\n") == b"canary"
            assert await site.who(extra=b"CanaryByHeader: always\r\n") == b"main"
            assert await site.who(extra=b"CanaryByHeader: docanary\r\n") == b"main"
        pattern = {"canary-by-header": "CanaryByHeader", "canary-by-header-pattern": "^Do[A-Z]"}
        async with serving(pair(pattern)) as site:
            assert await site.who(extra=b"CanaryByHeader: DoCanary\r\n") == b"canary"
            assert await site.who(extra=b"CanaryByHeader: Docanary\r\n") == b"main"
            assert await site.who(extra=b"CanaryByHeader: always\r\n") == b"main"

    run(main)


@pytest.mark.e2e
def test_e2e_cookie_always_and_never() -> None:
    async def main() -> None:
        async with serving(pair({"canary-by-cookie": "Canary-By-Cookie"})) as site:
            assert await site.who(extra=b"Cookie: Canary-By-Cookie=always\r\n") == b"canary"
            assert await site.who(extra=b"Cookie: a=1; Canary-By-Cookie=always\r\n") == b"canary"
            assert await site.who(extra=b"Cookie: Canary-By-Cookie=never\r\n") == b"main"
            assert await site.who(extra=b"Cookie: Canary-By-Cookie=badvalue\r\n") == b"main"
        cookie_and_weight = {"canary-by-cookie": "Canary-By-Cookie", "canary-weight": "100"}
        async with serving(pair(cookie_and_weight)) as site:
            assert await site.who(extra=b"Cookie: Canary-By-Cookie=never\r\n") == b"main"
            assert await site.who(extra=b"Cookie: Canary-By-Cookie=badvalue\r\n") == b"canary"

    run(main)


@pytest.mark.e2e
def test_e2e_header_before_cookie_before_weight() -> None:
    async def main() -> None:
        rules = {
            "canary-by-header": "CanaryByHeader",
            "canary-by-header-value": "DoCanary",
            "canary-by-cookie": "CanaryByCookie",
        }
        async with serving(pair(rules)) as site:
            both = b"CanaryByHeader: DoCanary\r\nCookie: CanaryByCookie=never\r\n"
            assert await site.who(extra=both) == b"canary"
            passed_on = b"CanaryByHeader: other\r\nCookie: CanaryByCookie=always\r\n"
            assert await site.who(extra=passed_on) == b"canary"
        async with serving(pair({**rules, "canary-weight": "100"})) as site:
            never = b"CanaryByHeader: other\r\nCookie: CanaryByCookie=never\r\n"
            assert await site.who(extra=never) == b"main"

    run(main)


@pytest.mark.e2e
def test_e2e_weight_zero_and_full() -> None:
    async def main() -> None:
        async with serving(pair({"canary-weight": "0"})) as site:
            assert {await site.who() for _ in range(20)} == {b"main"}
        async with serving(pair({"canary-weight": "100"})) as site:
            assert {await site.who() for _ in range(20)} == {b"canary"}
        async with serving(pair({"canary-weight": "1000", "canary-weight-total": "1000"})) as site:
            assert {await site.who() for _ in range(20)} == {b"canary"}

    run(main)


@pytest.mark.e2e
def test_e2e_a_canary_is_scoped_to_its_host_and_path() -> None:
    """The main Service also serves another host and another path: neither gets the canary."""

    def make(main_port: int, canary_port: int) -> list[Obj]:
        return [
            *service("web", main_port),
            *service("canary", canary_port),
            ingress("app", "web"),
            ingress("app-api", "web", path="/api"),
            ingress("other", "web", host=OTHER),
            canary_ingress({"canary-weight": "100"}),
        ]

    async def main() -> None:
        async with serving(make) as site:
            assert await site.who("/") == b"canary"
            assert await site.who("/page") == b"canary"
            assert await site.who("/api/x") == b"main"
            assert await site.who("/", host=OTHER) == b"main"

    run(main)


@pytest.mark.e2e
def test_e2e_a_canary_without_main_rule_is_not_served() -> None:
    def make(main_port: int, canary_port: int) -> list[Obj]:
        return [
            *service("canary", canary_port),
            canary_ingress({"canary-by-header": "CanaryByHeader"}),
        ]

    async def main() -> None:
        async with serving(make) as site:
            assert await site.who(extra=b"CanaryByHeader: always\r\n") == b"404"
            assert site.canary.requests == []

    run(main)


@pytest.mark.e2e
def test_e2e_the_canary_gets_what_the_main_ingress_sends() -> None:
    """The canary inherits the main Ingress's annotations (here the Host sent upstream and
    X-Forwarded-Prefix); its own are ignored."""
    main_annotations = {"upstream-vhost": "main.internal", "x-forwarded-prefix": "/shop"}
    canary_annotations = {"canary-weight": "100", "upstream-vhost": "canary.internal"}

    async def main() -> None:
        async with serving(pair(canary_annotations, main_annotations)) as site:
            assert await site.who() == b"canary"
            (request,) = site.canary.requests
            assert request.header(b"host") == [b"main.internal"]
            assert request.header(b"x-forwarded-prefix") == [b"/shop"]

    run(main)


@pytest.mark.e2e
def test_e2e_a_canary_without_endpoints_answers_503() -> None:
    def make(main_port: int, canary_port: int) -> list[Obj]:
        return [
            *service("web", main_port),
            *service("canary", None),
            ingress("app", "web"),
            canary_ingress({"canary-by-header": "CanaryByHeader"}),
        ]

    async def main() -> None:
        async with serving(make) as site:
            assert await site.who(extra=b"CanaryByHeader: always\r\n") == b"503"
            assert await site.who() == b"main"

    run(main)


REQUESTS = 2000
WEIGHT = 20  # of 100
SIGMAS = 4.5


@pytest.mark.e2e
def test_e2e_the_weight_splits_requests_within_a_binomial_bound() -> None:
    """2000 requests at canary-weight 20: the canary's count is binomial(2000, 0.2), mean
    400, standard deviation sqrt(2000 x 0.2 x 0.8) ~ 17.9. The test asserts it lies within
    4.5 standard deviations of the mean (320 to 480), which a correct split misses with
    probability below 1e-5, and a split off by 5 points (300 or 500 expected) almost
    never meets. Every request is answered, by one backend or the other."""
    mean = REQUESTS * WEIGHT / 100
    bound = SIGMAS * math.sqrt(REQUESTS * (WEIGHT / 100) * (1 - WEIGHT / 100))

    async def main() -> None:
        async with serving(pair({"canary-weight": str(WEIGHT)})) as site:
            client = await RawClient.connect(site.port)
            counts = {b"main": 0, b"canary": 0}
            request = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode()
            try:
                for _ in range(REQUESTS):
                    await client.send(request)
                    reply = await client.reply()
                    assert reply is not None
                    assert reply.status == 200
                    counts[reply.body] += 1
            finally:
                await client.aclose()
            assert sum(counts.values()) == REQUESTS
            assert abs(counts[b"canary"] - mean) <= bound, counts
            assert len(site.canary.requests) == counts[b"canary"]

    run(main)


# -- canaries and session affinity ---------------------------------------------------


async def _session(site: Served, cookie: bytes = b"") -> tuple[bytes, bytes | None]:
    """Which backend answered, and the affinity cookie it set (``name=value``), if any."""
    client = await RawClient.connect(site.port)
    try:
        extra = b"Cookie: %s\r\n" % cookie if cookie else b""
        await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (HOST.encode(), extra))
        reply = await client.reply()
    finally:
        await client.aclose()
    assert reply is not None
    assert reply.status == 200
    issued = reply.header(b"set-cookie")
    return reply.body, issued.split(b";")[0] if issued else None


STICKY_MAIN = {"affinity": "cookie", "session-cookie-name": "route"}


@pytest.mark.e2e
def test_e2e_a_session_begun_on_either_backend_stays_there() -> None:
    """affinity-canary-behavior: sticky (the default): the canary takes the main route's
    affinity, and a request whose cookie is a session of one backend goes to that one,
    whatever the weight says (ingress-nginx's balancer checks this before any rule)."""

    async def main() -> None:
        async with serving(pair({"canary-weight": "50"}, STICKY_MAIN)) as site:
            seen: dict[bytes, bytes] = {}
            for _ in range(40):  # both backends start sessions, at 50% each
                who, cookie = await _session(site)
                assert cookie is not None
                assert cookie.startswith(b"route=")
                seen.setdefault(who, cookie)
                if len(seen) == 2:
                    break
            assert set(seen) == {b"main", b"canary"}
            for who, cookie in seen.items():
                for _ in range(10):
                    answered, reissued = await _session(site, cookie)
                    assert answered == who
                    assert reissued is None  # the session is kept, not started again

    run(main)


@pytest.mark.e2e
def test_e2e_a_session_cookie_keeps_a_client_off_the_canary_rules() -> None:
    """A session of the main backend stays there even when the header rule says canary."""

    async def main() -> None:
        rules = {"canary-by-header": "X-Canary", "canary-weight": "0"}
        async with serving(pair(rules, STICKY_MAIN)) as site:
            who, cookie = await _session(site)
            assert who == b"main"
            assert cookie is not None
            client = await RawClient.connect(site.port)
            try:
                await client.send(
                    b"GET / HTTP/1.1\r\nHost: %s\r\nX-Canary: always\r\nCookie: %s\r\n\r\n"
                    % (HOST.encode(), cookie)
                )
                reply = await client.reply()
            finally:
                await client.aclose()
            assert reply is not None
            assert reply.body == b"main"
            # without the session, the header decides
            assert await site.who(extra=b"X-Canary: always\r\n") == b"canary"

    run(main)


@pytest.mark.e2e
def test_e2e_legacy_canaries_ignore_the_main_session_affinity() -> None:
    """affinity-canary-behavior: legacy on the canary Ingress: the canary keeps its own
    affinity (here none), so it sets no cookie and a client it served is not held to it."""

    async def main() -> None:
        canary = {"canary-weight": "100", "affinity-canary-behavior": "legacy"}
        async with serving(pair(canary, STICKY_MAIN)) as site:
            for _ in range(5):
                who, cookie = await _session(site)
                assert (who, cookie) == (b"canary", None)
        async with serving(pair({"canary-weight": "100"}, STICKY_MAIN)) as site:
            who, cookie = await _session(site)
            assert who == b"canary"
            assert cookie is not None

    run(main)


def test_a_canary_keeps_its_own_balancing_annotations() -> None:
    """load-balance and upstream-hash-by on a canary Ingress shape the canary's choice of
    endpoint, and are not reported as ignored (ingress-nginx applies them to its upstream)."""
    config = build_config(
        [
            *service("web", 1001),
            *service("canary", 1002),
            ingress("app", "web"),
            canary_ingress({"canary-weight": "10", "upstream-hash-by": "$remote_addr"}),
        ]
    )
    split = route(config).split
    assert split is not None
    main_target, canary_target = split.targets
    assert main_target.policy.upstream_hash is None
    assert canary_target.policy.upstream_hash is not None
    assert canary_target.policy.upstream_hash.text == "$remote_addr"
    assert problems_of(config, "default/app-canary") == []


# -- explain, and canaries on regex paths ----------------------------------------------


@pytest.mark.e2e
def test_check_explain_shows_the_canary_rules_of_the_route(tmp_path: Any) -> None:
    import yaml

    from tests.cli import run_controller

    manifest = tmp_path / "ingresses.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                *objects({"canary-by-header": "X-Canary", "canary-weight": "20"}, STICKY_MAIN),
            ]
        )
    )
    done = run_controller("check", "-f", str(manifest), "--explain", HOST, "/")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "canary: default/canary:80 beside default/web:80" in out
    assert "session affinity: a session of main (route cookie) or canary (route cookie)" in out
    assert "header X-Canary: 'always' -> canary, 'never' -> main" in out
    assert "weight: 20 in 100 (20.0%) -> canary, the rest -> main" in out
    # the session line comes before the header rule, as the choice is made
    assert out.index("session affinity") < out.index("header X-Canary") < out.index("weight:")


def test_a_canary_merges_onto_a_regex_path_of_its_main_ingress() -> None:
    """The main Ingress's path is a regex (rewrite-target): a canary naming the same path
    joins it, and the request keeps the main route's rewrite."""
    path = "/api(/|$)(.*)"
    main = ingress("app", "web", prefixed({"rewrite-target": "/$2"}), path=path)
    canary = canary_ingress({"canary-by-header": "X-Canary"}, path=path)
    config = build_config([*service("web", 1001), *service("canary", 1002), main, canary])
    assert config.problems == ()

    to_canary = _decide(config, {b"x-canary": b"always"}, b"/API/users?q=1")
    assert to_canary.route.backend.service == "canary"
    assert to_canary.target == b"/users?q=1"
    to_main = _decide(config, {}, b"/API/users?q=1")
    assert to_main.route.backend.service == "web"
    assert to_main.target == b"/users?q=1"
