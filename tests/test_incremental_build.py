"""``ConfigBuilder``: after any sequence of changes, the config it builds by redoing only
what changed is the config a full translation of the same objects gives.

Random objects are drawn from small pools of names, hosts, paths, Services and Secrets,
so that changes collide: two Ingresses claim one route or one TLS host, a wildcard TLS
host covers another Ingress's host, a Service an Ingress names comes and goes, a
certificate expires between two builds.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastroute.ingress import ConfigBuilder, RouteConfig, build_config
from fastroute.ingress.certs import self_signed_certificate, tls_secret
from fastroute.ingress.spec import reads_the_same

Obj = dict[str, Any]

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=20)  # after the short-lived certificate expires
EARLY = NOW - timedelta(days=20)  # before the "future" certificate is valid
NAMESPACES = ["default", "shop"]
IN_NAMESPACES = ["default", "default", "default", "shop"]
# each pool has a bad value or two among the good ones, which are repeated to be common
HOSTS = ["a.example.com", "b.example.com", "A.Example.com.", "*.example.com", "", "x.*.com"]
TLS_HOSTS = ["a.example.com", "b.example.com", "*.example.com", "c.example.com"]
PATHS = ["/", "/api", "/api/", "/api/v1", "/static", "/", "/api", "relative"]
PATH_TYPES = ["Prefix", "Exact", "ImplementationSpecific", "Prefix", "Exact", "Wrong"]
SERVICES = ["web", "api", "web", "api", "gone"]
SECRETS = ["wild", "a-only", "short", "future", "broken", "missing"]
STAMPS = ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", ""]


def _secrets() -> dict[str, Obj]:
    """One Secret per kind of certificate situation, per namespace."""
    made = {
        "wild": self_signed_certificate(["*.example.com", "b.example.com"], now=NOW),
        "a-only": self_signed_certificate(["a.example.com"], now=NOW),
        "short": self_signed_certificate(["a.example.com", "b.example.com"], days=10, now=NOW),
        "future": self_signed_certificate(["c.example.com"], now=NOW + timedelta(days=10)),
    }
    secrets: dict[str, Obj] = {}
    for ns in NAMESPACES:
        for name, certificate in made.items():
            secrets[f"{ns}/{name}"] = tls_secret(ns, name, certificate)
        secrets[f"{ns}/broken"] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "broken", "namespace": ns},
            "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm8="},
        }
    return secrets


SECRET_OBJECTS = _secrets()


def backend(service: str, port: int | str) -> Obj:
    ref: Obj = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": service, "port": ref}}


usable_backends = st.builds(backend, st.sampled_from(SERVICES), st.sampled_from([80, 8080]))
backends = st.one_of(
    usable_backends,
    usable_backends,
    usable_backends,
    st.builds(backend, st.sampled_from(SERVICES), st.sampled_from(["http", "nope"])),
    st.just({"resource": {"kind": "Bucket", "name": "b"}}),
)

paths = st.builds(
    lambda path, path_type, to: {"path": path, "pathType": path_type, "backend": to},
    st.sampled_from(PATHS),
    st.sampled_from(PATH_TYPES),
    backends,
)

rules = st.builds(
    lambda host, items: (
        ({"host": host} if host else {}) | ({"http": {"paths": items}} if items else {})
    ),
    st.sampled_from(HOSTS),
    st.lists(paths, min_size=1, max_size=3) | st.just([]),
)

tls_entries = st.builds(
    lambda hosts, secret: {"hosts": hosts} | ({"secretName": secret} if secret else {}),
    st.lists(st.sampled_from(TLS_HOSTS), min_size=1, max_size=2) | st.just([]),
    st.sampled_from([*SECRETS, ""]),
)


@st.composite
def ingresses(draw: st.DrawFn) -> Obj:
    metadata: Obj = {
        "name": draw(st.sampled_from(["one", "two", "three", "four"])),
        "namespace": draw(st.sampled_from(IN_NAMESPACES)),
    }
    stamp = draw(st.sampled_from(STAMPS))
    if stamp:
        metadata["creationTimestamp"] = stamp
    annotations = draw(
        st.sampled_from(
            [
                {},
                {},
                {},
                {"kubernetes.io/ingress.class": "nginx"},
                {"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
                {"nginx.ingress.kubernetes.io/ssl-redirect": "maybe"},
                {
                    "nginx.ingress.kubernetes.io/canary": "true",
                    "nginx.ingress.kubernetes.io/canary-weight": "30",
                },
                {
                    "nginx.ingress.kubernetes.io/auth-type": "basic",
                    "nginx.ingress.kubernetes.io/auth-secret": "users",
                },
                {
                    "nginx.ingress.kubernetes.io/auth-type": "basic",
                    "nginx.ingress.kubernetes.io/auth-secret": "default/users",
                },
            ]
        )
    )
    if annotations:
        metadata["annotations"] = annotations
    spec: Obj = {}
    class_name = draw(st.sampled_from(["fastroute", "fastroute", "fastroute", "other", None]))
    if class_name:
        spec["ingressClassName"] = class_name
    spec["rules"] = draw(st.lists(rules, min_size=1, max_size=3) | st.just([]))
    if draw(st.booleans()):
        spec["defaultBackend"] = draw(backends)
    spec["tls"] = draw(st.lists(tls_entries, max_size=2))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


@st.composite
def services(draw: st.DrawFn) -> Obj:
    ports = draw(
        st.lists(
            st.sampled_from(
                [{"port": 80, "name": "http"}, {"port": 8080}, {"port": 80}, {"port": 443}]
            ),
            min_size=1,
            max_size=2,
        )
    )
    spec: Obj = {"ports": ports}
    if draw(st.booleans()) and draw(st.booleans()):
        spec = {"type": "ExternalName", "externalName": "elsewhere.example.net", "ports": ports}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": draw(st.sampled_from(SERVICES)),
            "namespace": draw(st.sampled_from(IN_NAMESPACES)),
        },
        "spec": spec,
    }


@st.composite
def endpoint_slices(draw: st.DrawFn) -> Obj:
    service = draw(st.sampled_from(SERVICES))
    addresses = draw(st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]), max_size=2))
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": draw(st.sampled_from(["s1", "s2"])),
            "namespace": draw(st.sampled_from(IN_NAMESPACES)),
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": draw(st.sampled_from(["http", ""])), "port": 8080}],
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": draw(st.booleans())}} for a in addresses
        ],
    }


ingress_classes = st.builds(
    lambda controller, default: {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "other"}
        | (
            {"annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}}
            if default
            else {}
        ),
        "spec": {"controller": controller},
    },
    st.sampled_from(["fastroute.io/ingress-controller", "example.com/else"]),
    st.booleans(),
)


def _users(namespace: str, *lines: bytes) -> Obj:
    """An htpasswd Secret ``users`` (auth-type: basic); without lines, one with no users."""
    data = {"auth": base64.b64encode(b"".join(lines)).decode()} if lines else {}
    metadata = {"name": "users", "namespace": namespace}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": data}


_SHA = b"{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest())
USER_SECRETS = [
    _users("default", b"alice:" + _SHA + b"\n"),
    _users("default", b"alice:" + _SHA + b"\nbob:" + _SHA + b"\nbad line\n"),
    _users("default"),
    _users("shop", b"carol:" + _SHA + b"\n"),
]

secrets = (
    st.sampled_from([SECRET_OBJECTS[f"default/{name}"] for name in SECRETS if name != "missing"])
    | st.sampled_from(sorted(SECRET_OBJECTS.values(), key=str))
    | st.sampled_from(USER_SECRETS)
)


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, Any, bool]]:
    """Changes among a few objects, so the same ones come, change and go many times;
    each is followed by a build, or batched with the next ones."""
    pool = [
        *draw(st.lists(ingresses(), min_size=1, max_size=4)),
        *draw(st.lists(services(), min_size=1, max_size=3)),
        *draw(st.lists(endpoint_slices(), min_size=1, max_size=3)),
        *draw(st.lists(secrets, min_size=1, max_size=3)),
        *draw(st.lists(ingress_classes, max_size=1)),
    ]
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["put", "put", "delete"]), st.sampled_from(pool), st.booleans()
            )
            | st.tuples(st.just("clock"), st.sampled_from([NOW, LATER, EARLY]), st.booleans()),
            min_size=5,
            max_size=40,
        )
    )


def summary(config: RouteConfig) -> tuple[Any, ...]:
    """Everything about a config the proxy and the controller use."""
    routes = sorted(config.router.routes(), key=repr)
    return (
        routes,
        config.router.default,
        dict(config.certificates),
        config.ingresses,
        config.problems,
    )


def key(obj: Obj) -> tuple[str, str, str]:
    metadata = obj["metadata"]
    return obj["kind"], metadata.get("namespace", ""), metadata["name"]


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps())
def test_builds_after_changes_equal_a_full_translation(
    changes: list[tuple[str, Any, bool]],
) -> None:
    builder = ConfigBuilder(now=NOW)
    held: dict[tuple[str, str, str], Obj] = {}
    for i, (action, value, build) in enumerate(changes):
        if action == "clock":
            builder.now = value
        elif action == "put":
            builder.put(value)
            held[key(value)] = value
        else:
            builder.delete(value)
            held.pop(key(value), None)
        if build or i == len(changes) - 1:
            assert builder.now is not None
            expected = build_config(held.values(), now=builder.now)
            assert summary(builder.build()) == summary(expected)


def test_a_change_redoes_only_the_hosts_it_touches() -> None:
    """The point of the builder: one Ingress changing leaves the others' routes alone."""
    builder = ConfigBuilder(now=NOW)
    for i in range(50):
        builder.put(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": f"app-{i}", "namespace": "default"},
                "spec": {
                    "ingressClassName": "fastroute",
                    "rules": [
                        {
                            "host": f"app-{i}.example.com",
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "pathType": "Prefix",
                                        "backend": backend("web", 80),
                                    }
                                ]
                            },
                        }
                    ],
                },
            }
        )
    first = builder.build()
    changed = first.router.match("app-7.example.com", "/")
    assert changed is not None
    assert changed.backend.service == "web"
    builder.put(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "app-7", "namespace": "default"},
            "spec": {
                "ingressClassName": "fastroute",
                "rules": [
                    {
                        "host": "app-7.example.com",
                        "http": {
                            "paths": [
                                {"path": "/", "pathType": "Prefix", "backend": backend("api", 80)}
                            ]
                        },
                    }
                ],
            },
        }
    )
    second = builder.build()
    assert second.router.match("app-7.example.com", "/").backend.service == "api"
    # the old config is untouched (requests in flight keep it), the other hosts' targets
    # are the very same objects: nothing was translated again for them
    assert first.router.match("app-7.example.com", "/").backend.service == "web"
    assert second.router.match("app-8.example.com", "/") is first.router.match(
        "app-8.example.com", "/"
    )


def test_a_certificate_that_expires_between_builds_is_checked_again() -> None:
    secret = SECRET_OBJECTS["default/short"]
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {
            "ingressClassName": "fastroute",
            "tls": [{"hosts": ["a.example.com"], "secretName": "short"}],
            "rules": [{"host": "a.example.com"}],
        },
    }
    builder = ConfigBuilder(now=NOW)
    builder.put(secret)
    builder.put(ingress)
    assert "a.example.com" in builder.build().certificates
    builder.now = LATER
    later = builder.build()
    assert "a.example.com" not in later.certificates
    assert any("expired" in problem.reason for problem in later.problems)


def test_an_object_without_a_name_is_refused_and_the_rest_kept() -> None:
    builder = ConfigBuilder(now=NOW)
    with pytest.raises(ValueError, match=r"needs metadata\.name"):
        builder.put({"apiVersion": "v1", "kind": "Service", "metadata": {}})
    builder.put(SECRET_OBJECTS["default/wild"])
    assert len(builder) == 1


def test_an_ingress_whose_status_changes_reads_the_same() -> None:
    ingress: Obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "a", "namespace": "default", "resourceVersion": "1"},
        "spec": {"ingressClassName": "fastroute", "rules": [{"host": "a.example.com"}]},
    }
    published = ingress | {
        "metadata": ingress["metadata"] | {"resourceVersion": "2", "labels": {"team": "x"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
    }
    assert reads_the_same(ingress, published)
    annotated = ingress | {
        "metadata": ingress["metadata"]
        | {"annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}}
    }
    assert not reads_the_same(ingress, annotated)
    assert not reads_the_same(ingress, ingress | {"spec": {"ingressClassName": "other"}})


def _ingress_on(name: str, host: str, tls_hosts: list[str] | None = None) -> Obj:
    spec: Obj = {
        "ingressClassName": "fastroute",
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [{"path": "/", "pathType": "Prefix", "backend": backend("web", 80)}]
                },
            }
        ],
    }
    if tls_hosts:
        spec["tls"] = [{"hosts": tls_hosts, "secretName": "wild"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def test_a_host_another_ingress_still_names_follows_a_wildcard_tls_listing() -> None:
    """Two Ingresses route a.example.com; one goes. A TLS entry for *.example.com that comes
    later makes a.example.com a TLS host (plain HTTP is redirected): the builder must still
    know that a.example.com lies under example.com."""
    builder = ConfigBuilder(now=NOW)
    builder.put(SECRET_OBJECTS["default/wild"])
    builder.put(_ingress_on("one", "a.example.com"))
    builder.put(_ingress_on("two", "a.example.com"))
    builder.build()
    builder.delete(_ingress_on("one", "a.example.com"))
    builder.build()
    builder.put(_ingress_on("wild", "b.example.com", ["*.example.com"]))
    built = builder.build()
    route = built.router.match("a.example.com", "/")
    assert route is not None
    assert route.tls
    held = [
        SECRET_OBJECTS["default/wild"],
        _ingress_on("two", "a.example.com"),
        _ingress_on("wild", "b.example.com", ["*.example.com"]),
    ]
    assert summary(built) == summary(build_config(held, now=NOW))
