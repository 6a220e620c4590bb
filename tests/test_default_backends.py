"""The catch-all default backend, ``server-alias`` hosts and the error backend of a route.

A ``defaultBackend`` takes the requests that match no rule of any host; an alias host
serves the rules of the hosts it aliases; ``default-backend`` and ``custom-http-errors``
give a route its ``error_backend``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastroute.ingress import ConfigBuilder, RouteConfig, build_config
from fastroute.ingress.model import Target
from fastroute.proxy.server import Proxy
from tests.echo import Echo
from tests.polling import DEADLINE
from tests.test_incremental_build import summary
from tests.test_ingress import endpoint_slice, ingress, reasons, routed, service

Obj = dict[str, Any]
PREFIX = "nginx.ingress.kubernetes.io/"


def annotated(
    obj: Obj,
    *,
    aliases: tuple[str, ...] = (),
    default_backend: str = "",
    custom_http_errors: tuple[int, ...] = (),
) -> Obj:
    """``obj`` with ``server-alias``, ``default-backend`` and ``custom-http-errors``."""
    annotations = obj["metadata"].setdefault("annotations", {})
    if aliases:
        annotations[PREFIX + "server-alias"] = ", ".join(aliases)
    if default_backend:
        annotations[PREFIX + "default-backend"] = default_backend
    if custom_http_errors:
        annotations[PREFIX + "custom-http-errors"] = ",".join(map(str, custom_http_errors))
    return obj


def backend(name: str, port: int = 80) -> Obj:
    return {"service": {"name": name, "port": {"number": port}}}


def target(config: RouteConfig, host: str, path: str) -> Target:
    found = config.router.match(host, path)
    assert isinstance(found, Target), f"{host}{path} routes nowhere"
    return found


def services(*names: str) -> list[Obj]:
    return [service(name, 80) for name in names]


# ------------------------------------------------------------------ the catch-all


def test_a_default_backend_of_an_ingress_with_rules_is_the_catch_all() -> None:
    config = build_config(
        [
            *services("site", "fallback"),
            ingress(
                "site", ("a.com", "/app", "Prefix", "site", 80), defaultBackend=backend("fallback")
            ),
        ]
    )
    assert routed(config, "a.com", "/app/x") == "site"
    assert routed(config, "a.com", "/other") == "fallback"  # its own host's default
    assert routed(config, "b.com", "/app") == "fallback"  # a host no rule names
    assert routed(config, "10.1.2.3:8080", "/") == "fallback"  # an IP address as Host
    assert routed(config, "", "/app") == "fallback"  # no Host at all
    assert not config.problems


def test_host_less_rules_still_come_before_the_catch_all() -> None:
    config = build_config(
        [
            *services("any", "fallback"),
            ingress("any", ("", "/shared", "Prefix", "any", 80)),
            ingress(
                "site", ("a.com", "/", "Prefix", "any", 80), defaultBackend=backend("fallback")
            ),
        ]
    )
    assert routed(config, "10.1.2.3", "/shared/x") == "any"
    assert routed(config, "10.1.2.3", "/else") == "fallback"


def test_a_rule_less_ingress_is_the_catch_all_before_an_older_one_with_rules() -> None:
    config = build_config(
        [
            *services("site", "own-default", "global"),
            ingress(
                "site",
                ("a.com", "/app", "Prefix", "site", 80),
                created="2026-01-01T00:00:00Z",
                defaultBackend=backend("own-default"),
            ),
            ingress("global", created="2026-03-01T00:00:00Z", defaultBackend=backend("global")),
        ]
    )
    assert routed(config, "b.com", "/") == "global"
    assert routed(config, "192.0.2.1", "/app") == "global"
    # the per-host default is unchanged: a.com's unmatched paths go to its Ingress's default
    assert routed(config, "a.com", "/other") == "own-default"
    assert not config.problems


def test_among_ingresses_with_rules_the_oldest_default_backend_is_the_catch_all() -> None:
    config = build_config(
        [
            *services("web", "older", "newer"),
            ingress(
                "newer",
                ("b.com", "/", "Prefix", "web", 80),
                created="2026-02-01T00:00:00Z",
                defaultBackend=backend("newer"),
            ),
            ingress(
                "older",
                ("a.com", "/app", "Prefix", "web", 80),
                created="2026-01-01T00:00:00Z",
                defaultBackend=backend("older"),
            ),
        ]
    )
    assert routed(config, "c.com", "/") == "older"
    assert routed(config, "a.com", "/x") == "older"
    assert routed(config, "b.com", "/x") == "web"  # its explicit "/" beats its own default
    # an Ingress with rules that is not the catch-all is not at fault: its hosts use it
    assert not config.problems


def test_a_newer_rule_less_default_backend_is_rejected_naming_the_catch_all() -> None:
    config = build_config(
        [
            *services("one", "two", "three"),
            ingress(
                "with-rules", ("a.com", "/", "Prefix", "one", 80), defaultBackend=backend("one")
            ),
            ingress("first", created="2026-01-01T00:00:00Z", defaultBackend=backend("two")),
            ingress("second", created="2026-01-02T00:00:00Z", defaultBackend=backend("three")),
        ]
    )
    assert routed(config, "elsewhere.com", "/") == "two"
    rejected = {p.name: p.reason for p in config.rejected()}
    assert list(rejected) == ["default/second"]
    assert "default/first" in rejected["default/second"]


def test_an_unused_default_backend_of_host_less_rules_is_a_warning() -> None:
    config = build_config(
        [
            *services("web", "global", "unused"),
            ingress("global", created="2026-01-01T00:00:00Z", defaultBackend=backend("global")),
            ingress(
                "host-less",
                ("", "/api", "Prefix", "web", 80),
                created="2026-01-02T00:00:00Z",
                defaultBackend=backend("unused"),
            ),
        ]
    )
    assert routed(config, "a.com", "/other") == "global"
    assert [(p.name, p.warning) for p in config.problems] == [("default/host-less", True)]
    assert "default/global" in config.problems[0].reason


def test_the_catch_all_follows_changes_without_a_full_rebuild() -> None:
    builder = ConfigBuilder()
    for obj in services("site", "fallback", "global"):
        builder.put(obj)
    site = ingress("site", ("a.com", "/", "Prefix", "site", 80), defaultBackend=backend("fallback"))
    builder.put(site)
    first = builder.build()
    assert routed(first, "b.com", "/") == "fallback"
    rule_less = ingress("global", defaultBackend=backend("global"))
    builder.put(rule_less)
    second = builder.build()
    assert routed(second, "b.com", "/") == "global"
    assert second.router.match("a.com", "/") is first.router.match("a.com", "/")
    builder.delete(rule_less)
    assert routed(builder.build(), "b.com", "/") == "fallback"
    builder.delete(site)
    assert routed(builder.build(), "b.com", "/") is None


# ------------------------------------------------------------------ server-alias


def test_an_alias_serves_every_rule_of_the_hosts_of_its_ingress() -> None:
    config = build_config(
        [
            *services("a", "b", "fallback"),
            # another Ingress's rules on the same host are served on the alias too, as the
            # alias names the host's server in ingress-nginx
            ingress("app-a", ("foo.com", "/app-a", "Prefix", "a", 80)),
            annotated(
                ingress(
                    "app-b",
                    ("foo.com", "/app-b", "Prefix", "b", 80),
                    defaultBackend=backend("fallback"),
                ),
                aliases=("Bar.com", "*.bar.org"),
            ),
        ]
    )
    for host in ("foo.com", "bar.com", "BAR.com:8080", "x.bar.org"):
        assert routed(config, host, "/app-a/1") == "a", host
        assert routed(config, host, "/app-b") == "b", host
        assert routed(config, host, "/other") == "fallback", host
    assert target(config, "bar.com", "/app-b").ingress == "default/app-b"
    assert routed(config, "baz.com", "/app-a") == "fallback"  # the catch-all, not an alias
    assert not config.problems


def test_an_ingress_without_aliases_serves_only_its_hosts() -> None:
    config = build_config([*services("a"), ingress("app", ("foo.com", "/", "Prefix", "a", 80))])
    assert routed(config, "foo.com", "/") == "a"
    assert routed(config, "bar.com", "/") is None


def test_an_alias_another_ingress_names_as_a_host_is_refused_and_the_others_served() -> None:
    config = build_config(
        [
            *services("a", "b"),
            annotated(
                ingress("aliasing", ("foo.com", "/", "Prefix", "a", 80)),
                aliases=("bar.com", "baz.com"),
            ),
            ingress("owner", ("bar.com", "/own", "Prefix", "b", 80)),
        ]
    )
    assert routed(config, "bar.com", "/own") == "b"
    assert routed(config, "bar.com", "/") is None  # bar.com stays the other Ingress's host
    assert routed(config, "baz.com", "/") == "a"  # the other alias is unaffected
    problems = {(p.name, p.field): p for p in config.problems}
    refused = problems[("default/aliasing", "metadata.annotations")]
    assert not refused.warning
    assert "'bar.com'" in refused.reason
    assert "default/owner" in refused.reason


def test_an_alias_already_aliasing_other_hosts_is_refused_for_the_newer_ingress() -> None:
    config = build_config(
        [
            *services("a", "b"),
            annotated(
                ingress(
                    "older", ("foo.com", "/", "Prefix", "a", 80), created="2026-01-01T00:00:00Z"
                ),
                aliases=("alias.com",),
            ),
            annotated(
                ingress(
                    "newer", ("qux.com", "/", "Prefix", "b", 80), created="2026-02-01T00:00:00Z"
                ),
                aliases=("alias.com",),
            ),
        ]
    )
    assert routed(config, "alias.com", "/") == "a"
    [refused] = config.rejected()
    assert refused.name == "default/newer"
    assert "default/older" in refused.reason


def test_an_alias_host_gets_its_own_tls_redirect_flag() -> None:
    config = build_config(
        [
            *services("a"),
            annotated(
                ingress(
                    "app",
                    ("foo.com", "/", "Prefix", "a", 80),
                    tls=[{"hosts": ["foo.com"]}],
                ),
                aliases=("bar.com",),
            ),
        ]
    )
    assert target(config, "foo.com", "/").tls is True
    assert target(config, "bar.com", "/").tls is False


def test_alias_hosts_are_rebuilt_when_their_hosts_change() -> None:
    builder = ConfigBuilder()
    for obj in services("a", "b"):
        builder.put(obj)
    aliasing = annotated(ingress("app", ("foo.com", "/", "Prefix", "a", 80)), aliases=("bar.com",))
    builder.put(aliasing)
    assert routed(builder.build(), "bar.com", "/x") == "a"
    # another Ingress adds a path on the aliased host: the alias serves it too
    other = ingress("other", ("foo.com", "/x", "Prefix", "b", 80))
    builder.put(other)
    assert routed(builder.build(), "bar.com", "/x") == "b"
    # the Ingress changes its rules, then its aliases
    builder.put(
        annotated(ingress("app", ("foo.com", "/y", "Exact", "a", 80)), aliases=("bar.com",))
    )
    config = builder.build()
    assert routed(config, "bar.com", "/y") == "a"
    assert routed(config, "bar.com", "/") is None
    builder.put(
        annotated(ingress("app", ("foo.com", "/y", "Exact", "a", 80)), aliases=("qux.com",))
    )
    config = builder.build()
    assert routed(config, "bar.com", "/y") is None
    assert routed(config, "qux.com", "/x") == "b"
    # a host of its own for the alias takes it back
    builder.put(ingress("qux", ("qux.com", "/", "Prefix", "b", 80)))
    config = builder.build()
    assert routed(config, "qux.com", "/y") == "b"
    assert "default/qux" in reasons(config)


# ------------------------------------------------------------------ the error backend


def test_default_backend_annotation_is_the_error_backend_of_the_ingress_routes() -> None:
    config = build_config(
        [
            *services("web", "errors", "global"),
            endpoint_slice("errors", 80, "127.0.0.9"),
            ingress("global", defaultBackend=backend("global")),
            annotated(
                ingress("app", ("a.com", "/", "Prefix", "web", 80)),
                default_backend="errors",
                custom_http_errors=(404, 503),
            ),
            ingress("plain", ("b.com", "/", "Prefix", "web", 80)),
        ]
    )
    error_backend = target(config, "a.com", "/").error_backend
    assert error_backend is not None
    assert (error_backend.service, [str(e) for e in error_backend.endpoints]) == (
        "errors",
        ["127.0.0.9:80"],
    )
    assert target(config, "b.com", "/").error_backend is None
    assert not config.problems


def test_default_backend_uses_the_first_port_of_its_service() -> None:
    two_ports = service("errors", 8080)
    two_ports["spec"]["ports"].append({"port": 80, "protocol": "TCP"})
    config = build_config(
        [
            *services("web"),
            two_ports,
            annotated(
                ingress("app", ("a.com", "/", "Prefix", "web", 80)), default_backend="errors"
            ),
        ]
    )
    error_backend = target(config, "a.com", "/").error_backend
    assert error_backend is not None
    assert (error_backend.service, error_backend.port) == ("errors", 8080)


def test_custom_http_errors_without_default_backend_use_the_catch_all() -> None:
    config = build_config(
        [
            *services("web", "global"),
            ingress("global", defaultBackend=backend("global")),
            annotated(
                ingress("app", ("a.com", "/", "Prefix", "web", 80)),
                custom_http_errors=(404,),
            ),
        ]
    )
    error_backend = target(config, "a.com", "/").error_backend
    assert error_backend is not None
    assert error_backend.service == "global"
    assert routed(config, "other.com", "/") == "global"


def test_a_default_backend_naming_a_missing_service_is_a_problem_and_the_route_serves() -> None:
    config = build_config(
        [
            *services("web"),
            annotated(
                ingress("app", ("a.com", "/", "Prefix", "web", 80)),
                default_backend="missing",
            ),
        ]
    )
    found = target(config, "a.com", "/")
    assert found.backend.service == "web"
    assert found.error_backend is None
    [problem] = config.problems
    assert (problem.name, problem.warning) == ("default/app", False)
    assert "default-backend" in problem.reason
    assert "default/missing not found" in problem.reason


def test_the_error_backend_follows_its_service_and_endpoints() -> None:
    builder = ConfigBuilder()
    builder.put(service("web", 80))
    builder.put(
        annotated(ingress("app", ("a.com", "/", "Prefix", "web", 80)), default_backend="errors")
    )
    assert target(builder.build(), "a.com", "/").error_backend is None
    builder.put(service("errors", 80))
    config = builder.build()
    error_backend = target(config, "a.com", "/").error_backend
    assert error_backend is not None
    assert not error_backend.endpoints
    assert "default-backend" not in reasons(config)
    builder.put(endpoint_slice("errors", 80, "127.0.0.7"))
    error_backend = target(builder.build(), "a.com", "/").error_backend
    assert error_backend is not None
    assert [str(e) for e in error_backend.endpoints] == ["127.0.0.7:80"]


def test_the_catch_all_as_error_backend_follows_its_endpoints() -> None:
    builder = ConfigBuilder()
    for obj in services("web", "global"):
        builder.put(obj)
    builder.put(ingress("global", defaultBackend=backend("global")))
    builder.put(
        annotated(
            ingress("app", ("a.com", "/", "Prefix", "web", 80)),
            custom_http_errors=(500,),
        )
    )
    builder.put(ingress("plain", ("b.com", "/", "Prefix", "web", 80)))
    first = builder.build()
    builder.put(endpoint_slice("global", 80, "127.0.0.8"))
    second = builder.build()
    error_backend = target(second, "a.com", "/").error_backend
    assert error_backend is not None
    assert [str(e) for e in error_backend.endpoints] == ["127.0.0.8:80"]
    # a route that does not use the catch-all is not translated again
    assert second.router.match("b.com", "/") is first.router.match("b.com", "/")


# ------------------------------------------------------------------ incremental = full


HOSTS = ["a.example.com", "b.example.com", "c.example.com", "*.example.com", ""]
ANNOTATIONS: list[dict[str, Any]] = [
    {},
    {},
    {"aliases": ("c.example.com",)},
    {"aliases": ("b.example.com", "d.example.com")},
    {"default_backend": "errors"},
    {"default_backend": "gone", "custom_http_errors": (404,)},
    {"custom_http_errors": (404,)},
    {"aliases": ("d.example.com",), "default_backend": "web"},
]


@st.composite
def ingresses(draw: st.DrawFn) -> Obj:
    rules = [
        (draw(st.sampled_from(HOSTS)), draw(st.sampled_from(["/", "/api"])), "Prefix", svc, 80)
        for svc in draw(st.lists(st.sampled_from(["web", "errors"]), max_size=2))
    ]
    spec: Obj = {}
    if draw(st.booleans()):
        spec["defaultBackend"] = backend(draw(st.sampled_from(["web", "errors", "gone"])))
    obj = ingress(
        draw(st.sampled_from(["one", "two", "three"])),
        *rules,
        created=draw(st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"])),
        **spec,
    )
    return annotated(obj, **draw(st.sampled_from(ANNOTATIONS)))


changes = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "delete"]),
        st.one_of(
            ingresses(),
            st.sampled_from(
                [
                    *services("web", "errors"),
                    service("errors", 8080),  # default-backend's first port changes
                    endpoint_slice("errors", 80, "127.0.0.5"),
                    endpoint_slice("web", 80, "127.0.0.6"),
                ]
            ),
        ),
        st.booleans(),
    ),
    min_size=3,
    max_size=25,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(changes)
def test_builds_after_changes_equal_a_full_translation(steps: list[tuple[str, Obj, bool]]) -> None:
    builder = ConfigBuilder()
    held: dict[tuple[str, str], Obj] = {}
    for i, (action, obj, build) in enumerate(steps):
        where = (obj["kind"], obj["metadata"]["name"])
        if action == "put":
            builder.put(obj)
            held[where] = obj
        else:
            builder.delete(obj)
            held.pop(where, None)
        if build or i == len(steps) - 1:
            assert summary(builder.build()) == summary(build_config(held.values()))


# ------------------------------------------------------------------ end to end


@asynccontextmanager
async def proxied(objects: list[Obj]) -> Any:
    """The proxy serving ``objects``, whose Services "site" and "fallback" are live Echos."""
    async with trio.open_nursery() as nursery:
        site, fallback = Echo("site"), Echo("fallback")
        live = {
            "site": await nursery.start(site.serve),
            "fallback": await nursery.start(fallback.serve),
        }
        slices = [endpoint_slice(name, port, "127.0.0.1") for name, port in live.items()]
        proxy = Proxy(build_config([*services(*live), *slices, *objects]))
        listeners = await nursery.start(proxy.serve, "127.0.0.1", 0)
        yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def backend_seen(url: str, host: str, path: str) -> tuple[int, str]:
    def call() -> tuple[int, str]:
        with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
            response = client.get(url + path, headers={"host": host})
            return response.status_code, response.json()["backend"]

    return await trio.to_thread.run_sync(call)


@pytest.mark.e2e
def test_end_to_end_unknown_hosts_and_ip_hosts_reach_the_default_backend() -> None:
    async def scenario() -> None:
        objects = [
            annotated(
                ingress(
                    "site",
                    ("site.example.com", "/app", "Prefix", "site", 80),
                    defaultBackend=backend("fallback"),
                ),
                aliases=("alias.example.com",),
            )
        ]
        async with proxied(objects) as url:
            assert await backend_seen(url, "site.example.com", "/app/1") == (200, "site")
            assert await backend_seen(url, "site.example.com", "/else") == (200, "fallback")
            assert await backend_seen(url, "alias.example.com", "/app") == (200, "site")
            assert await backend_seen(url, "unknown.example.com", "/app") == (200, "fallback")
            assert await backend_seen(url, "127.0.0.1", "/") == (200, "fallback")

    async def bounded() -> None:
        with trio.fail_after(DEADLINE * 3):
            await scenario()

    trio.run(bounded)
