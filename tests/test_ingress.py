"""Kubernetes objects -> RouteConfig: routing, classes, services, conflicts, and what is rejected.

The example manifests are the ones in ``examples/`` (real users' Ingresses); the tests add
the EndpointSlices a cluster would have, pointing at addresses on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fastroute.ingress import Backend, ClassPolicy, RouteConfig, Target, build_config
from fastroute.ingress.certs import self_signed_certificate, tls_secret

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NGINX_TOO = ClassPolicy(class_names=frozenset({"fastroute", "nginx"}))
Obj = dict[str, Any]


def manifest(name: str) -> list[Obj]:
    with (EXAMPLES / name).open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def endpoint_slice(
    service: str,
    port: int,
    *addresses: str,
    port_name: str = "",
    ns: str = "default",
    **conditions: bool,
) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-abc",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": dict(conditions)} for a in addresses],
    }


def service(name: str, port: int, *, target: int | str | None = None, port_name: str = "") -> Obj:
    spec_port: Obj = {"port": port, "protocol": "TCP"}
    if port_name:
        spec_port["name"] = port_name
    if target is not None:
        spec_port["targetPort"] = target
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [spec_port]},
    }


def ingress(
    name: str, *rules: tuple[str, str, str, str, int], created: str = "", **spec: Any
) -> Obj:
    """An Ingress of class fastroute; rules are (host, path, pathType, service, port)."""
    by_host: dict[str, list[Obj]] = {}
    for host, path, path_type, svc, port in rules:
        by_host.setdefault(host, []).append(
            {
                "path": path,
                "pathType": path_type,
                "backend": {"service": {"name": svc, "port": {"number": port}}},
            }
        )
    metadata: Obj = {"name": name, "namespace": "default"}
    if created:
        metadata["creationTimestamp"] = created
    body: Obj = {"ingressClassName": "fastroute", **spec}
    if by_host:
        body["rules"] = [
            ({"host": host} if host else {}) | {"http": {"paths": paths}}
            for host, paths in by_host.items()
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": body,
    }


def routed(config: RouteConfig, host: str, path: str) -> str | None:
    """The Service a request reaches, or None."""
    target = config.router.match(host, path)
    return None if target is None else target.backend.service


def reasons(config: RouteConfig) -> str:
    return "\n".join(str(p) for p in config.problems)


# ------------------------------------------------------------------ the example manifests


def test_default_backend_example_routes_as_its_chapter_says() -> None:
    objects = [
        *manifest("05-default-backend.yaml"),
        endpoint_slice("sample-ingress-svc-1", 80, "127.0.0.1", port_name="http-port"),
        endpoint_slice("sample-ingress-svc-2", 80, "127.0.0.2", port_name="http-port"),
        endpoint_slice("sample-ingress-default", 80, "127.0.0.3", port_name="http-port"),
    ]
    config = build_config(objects, classes=NGINX_TOO)
    assert config.ingresses == ("default/sample-ingress-by-nginx",)
    host = "sample.example.com"
    assert routed(config, host, "/path1/") == "sample-ingress-svc-1"
    assert routed(config, host, "/path1/deeper") == "sample-ingress-svc-1"
    assert routed(config, host, "/path2") == "sample-ingress-svc-2"
    assert routed(config, host, "/anything-else") == "sample-ingress-default"
    # the chapter's "anything else": its defaultBackend is also the catch-all, for other
    # hosts and for an IP address as Host
    assert routed(config, "other.example.com", "/path1") == "sample-ingress-default"
    assert routed(config, "192.0.2.7:80", "/") == "sample-ingress-default"
    assert routed(config, "[2001:db8::1]", "/path2") == "sample-ingress-default"
    target = config.router.match(host, "/path1")
    assert target is not None
    # targetPort 80 behind Service port 8888: the EndpointSlice's port is what is dialled
    assert [str(e) for e in target.backend.endpoints] == ["127.0.0.1:80"]
    assert target.tls is True
    assert target.policy.ssl_redirect is False  # nginx.ingress.kubernetes.io/ssl-redirect: "false"
    assert "Secret default/tls-sample not found" in reasons(config)


def test_examples_of_another_class_are_left_to_their_controller() -> None:
    config = build_config(manifest("05-default-backend.yaml"))
    assert config.ingresses == ()
    assert config.router.match("sample.example.com", "/path1") is None
    assert config.problems == ()  # not ours is not a problem


def test_legacy_v1beta1_manifests_are_converted_with_a_warning() -> None:
    objects = [
        *manifest("04-legacy-v1beta1.yaml"),
        service("jordy-node-port-svc", 80),
        service("scappy-node-port-svc", 80),
        endpoint_slice("jordy-node-port-svc", 8080, "127.0.0.1"),
        endpoint_slice("scappy-node-port-svc", 8081, "127.0.0.2"),
    ]
    config = build_config(objects, classes=ClassPolicy(adopt_classless=True))
    assert routed(config, "jordy.niniz.com", "/") == "jordy-node-port-svc"
    assert routed(config, "scappy.niniz.com", "/x") == "scappy-node-port-svc"
    assert routed(config, "niniz.com", "/jordy/a") == "jordy-node-port-svc"
    assert routed(config, "niniz.com", "/scappy") == "scappy-node-port-svc"
    warnings = [p for p in config.problems if p.warning and p.field == "apiVersion"]
    assert {p.name for p in warnings} == {
        "default/basic-niniz-ing",
        "default/basic-niniz-ing-multi-path",
    }
    assert all("extensions/v1beta1" in p.reason for p in warnings)


def test_rewrite_target_and_unknown_nginx_annotations() -> None:
    objects = manifest("01-basic-rewrite.yaml")
    objects[0]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-cookie-path"] = (
        "/ /app"
    )
    objects += [
        service("hostname-service", 80),
        endpoint_slice("hostname-service", 9000, "127.0.0.1"),
    ]
    config = build_config(objects, classes=NGINX_TOO)
    target = config.match("alicek106.example.com", "/echo-hostname/x")
    assert target is not None
    assert target.policy.rewrite_target == "/"
    ignored = [p for p in config.problems if "proxy-cookie-path" in p.field]
    assert len(ignored) == 1
    assert ignored[0].warning
    assert "ignored" in ignored[0].reason


def test_hosts_without_a_class_need_a_default_class_or_adoption() -> None:
    objects = [
        *manifest("03-name-based-virtual-hosts.yaml"),
        endpoint_slice("echo-v1", 3000, "127.0.0.1"),
        endpoint_slice("echo-v2", 3000, "127.0.0.2"),
    ]
    assert build_config(objects).ingresses == ()
    default_class = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": "fr",
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": "fastroute.io/ingress-controller"},
    }
    config = build_config([*objects, default_class])
    assert routed(config, "v1.echo.192.168.49.5.sslip.io", "/") == "echo-v1"
    assert routed(config, "V2.echo.192.168.49.5.sslip.io:80", "/any") == "echo-v2"
    someone_elses = {**default_class, "spec": {"controller": "k8s.io/ingress-nginx"}}
    assert build_config([*objects, someone_elses]).ingresses == ()


def test_ingress_class_name_must_name_an_ingress_class_of_ours() -> None:
    mine = {
        "kind": "IngressClass",
        "metadata": {"name": "edge"},
        "spec": {"controller": "fastroute.io/ingress-controller"},
    }
    objects = [
        service("web", 80),
        endpoint_slice("web", 8080, "127.0.0.1"),
        ingress("a", ("a.com", "/", "Prefix", "web", 80), ingressClassName="edge"),
        ingress("b", ("b.com", "/", "Prefix", "web", 80), ingressClassName="other"),
    ]
    config = build_config([*objects, mine])
    assert config.ingresses == ("default/a",)
    assert build_config(objects).ingresses == ()


def test_tls_secret_certificate_is_served_by_sni() -> None:
    objects = manifest("02-tls.yaml")
    certificate = self_signed_certificate(["https-example.foo.com"])
    objects[0] = tls_secret("default", "testsecret-tls", certificate)
    objects += [service("service1", 80), endpoint_slice("service1", 8443, "127.0.0.1")]
    config = build_config(objects, classes=ClassPolicy(adopt_classless=True))
    found = config.certificate_for("HTTPS-example.foo.com.")
    assert found is not None
    assert found.names == ("https-example.foo.com",)
    assert config.certificate_for("unknown.foo.com") is None
    target = config.router.match("https-example.foo.com", "/")
    assert target is not None
    assert target.tls is True
    assert target.policy.ssl_redirect is True
    assert config.rejected() == ()


def test_broken_tls_secret_is_reported_and_the_routes_still_work() -> None:
    objects = manifest("02-tls.yaml")  # its Secret has empty tls.crt and tls.key
    objects += [service("service1", 80), endpoint_slice("service1", 8443, "127.0.0.1")]
    config = build_config(objects, classes=ClassPolicy(adopt_classless=True))
    assert config.certificate_for("https-example.foo.com") is None
    assert routed(config, "https-example.foo.com", "/") == "service1"
    problems = [p for p in config.rejected() if p.field == "spec.tls[0].secretName"]
    assert len(problems) == 1
    assert "testsecret-tls" in problems[0].reason
    assert "default certificate" in problems[0].reason


def test_certificate_that_does_not_name_the_host_falls_back_to_the_default() -> None:
    wrong = self_signed_certificate(["elsewhere.example.org"])
    objects = [
        tls_secret("default", "wrong", wrong),
        service("web", 80),
        endpoint_slice("web", 8080, "127.0.0.1"),
        ingress(
            "a",
            ("a.com", "/", "Prefix", "web", 80),
            tls=[{"hosts": ["a.com"], "secretName": "wrong"}],
        ),
    ]
    config = build_config(objects)
    assert config.certificate_for("a.com") is None
    assert any("does not name 'a.com'" in p.reason for p in config.rejected())


# ------------------------------------------------------------------ precedence across Ingresses


def test_same_host_and_path_in_two_ingresses_the_oldest_wins() -> None:
    objects = [
        service("old", 80),
        service("new", 80),
        endpoint_slice("old", 8080, "127.0.0.1"),
        endpoint_slice("new", 8080, "127.0.0.2"),
        ingress("newer", ("a.com", "/api/", "Prefix", "new", 80), created="2026-02-01T00:00:00Z"),
        ingress("older", ("a.com", "/api", "Prefix", "old", 80), created="2026-01-01T00:00:00Z"),
    ]
    config = build_config(objects)
    assert routed(config, "a.com", "/api/x") == "old"
    [problem] = config.rejected()
    assert problem.name == "default/newer"
    assert problem.field == "spec.rules[0].http.paths[0]"
    assert "older Ingress default/older" in problem.reason


def test_rules_of_all_ingresses_of_a_host_are_merged_before_precedence() -> None:
    objects = [
        service("short", 80),
        service("long", 80),
        endpoint_slice("short", 8080, "127.0.0.1"),
        endpoint_slice("long", 8080, "127.0.0.2"),
        ingress("a", ("a.com", "/api", "Prefix", "short", 80)),
        ingress("b", ("a.com", "/api/v2", "Prefix", "long", 80)),
    ]
    config = build_config(objects)
    assert routed(config, "a.com", "/api/v2/x") == "long"
    assert routed(config, "a.com", "/api/v1") == "short"


def test_several_catch_all_default_backends_the_oldest_wins() -> None:
    objects = [
        service("one", 80),
        service("two", 80),
        ingress("first", created="2026-01-01T00:00:00Z", defaultBackend=_backend("one")),
        ingress("second", created="2026-01-02T00:00:00Z", defaultBackend=_backend("two")),
    ]
    config = build_config(objects)
    assert routed(config, "anything.example", "/x") == "one"
    assert [p.name for p in config.rejected()] == ["default/second"]


def test_an_explicit_root_rule_beats_another_ingress_default_backend() -> None:
    objects = [
        service("root", 80),
        service("fallback", 80),
        service("api", 80),
        ingress("explicit", ("a.com", "/", "Prefix", "root", 80)),
        ingress(
            "with-default",
            ("a.com", "/api", "Prefix", "api", 80),
            defaultBackend=_backend("fallback"),
        ),
    ]
    config = build_config(objects)
    assert routed(config, "a.com", "/other") == "root"
    assert routed(config, "a.com", "/api/1") == "api"


def _backend(name: str, port: int = 80) -> Obj:
    return {"service": {"name": name, "port": {"number": port}}}


# ------------------------------------------------------------------ services and endpoints


def test_service_port_by_name_and_target_port() -> None:
    objects = [
        service("web", 80, target="http", port_name="http"),
        endpoint_slice("web", 8080, "10.0.0.1", port_name="http"),
        {
            **ingress("a"),
            "spec": {
                "ingressClassName": "fastroute",
                "rules": [
                    {
                        "host": "a.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "web", "port": {"name": "http"}}
                                    },
                                }
                            ]
                        },
                    }
                ],
            },
        },
    ]
    config = build_config(objects)
    target = config.router.match("a.com", "/")
    assert target is not None
    assert target.backend.port == "http"
    assert [str(e) for e in target.backend.usable()] == ["10.0.0.1:8080"]


def test_not_ready_endpoints_are_skipped_and_terminating_ones_kept_as_last_resort() -> None:
    slice_ = endpoint_slice("web", 8080, "10.0.0.1", "10.0.0.2", "10.0.0.3")
    slice_["endpoints"][1]["conditions"] = {"ready": False, "serving": False}
    slice_["endpoints"][2]["conditions"] = {"ready": False, "serving": True, "terminating": True}
    objects = [service("web", 80), slice_, ingress("a", ("a.com", "/", "Prefix", "web", 80))]
    backend = _only_backend(build_config(objects))
    assert [str(e) for e in backend.endpoints] == ["10.0.0.1:8080"]
    assert [str(e) for e in backend.terminating] == ["10.0.0.3:8080"]
    assert [str(e) for e in backend.usable()] == ["10.0.0.1:8080"]
    slice_["endpoints"][0]["conditions"] = {"ready": False}
    backend = _only_backend(build_config(objects))
    assert [str(e) for e in backend.usable()] == ["10.0.0.3:8080"]


def test_legacy_endpoints_are_read_when_there_is_no_endpoint_slice() -> None:
    endpoints = {
        "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": "default"},
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.9"}],
                "notReadyAddresses": [{"ip": "10.0.0.8"}],
                "ports": [{"port": 8080}],
            }
        ],
    }
    objects = [service("web", 80), endpoints, ingress("a", ("a.com", "/", "Prefix", "web", 80))]
    assert [str(e) for e in _only_backend(build_config(objects)).usable()] == ["10.0.0.9:8080"]


@pytest.mark.parametrize(
    ("objects", "reason"),
    [
        ([], "Service default/web not found"),
        ([service("web", 81)], "has no port 80 (it has 81)"),
        ([service("web", 80)], "has no ready endpoints"),
    ],
    ids=["no-service", "no-such-port", "no-endpoints"],
)
def test_a_backend_without_endpoints_says_why(objects: list[Obj], reason: str) -> None:
    config = build_config([*objects, ingress("a", ("a.com", "/", "Prefix", "web", 80))])
    backend = _only_backend(config)
    assert backend.usable() == ()
    assert reason in backend.problem


def _only_backend(config: RouteConfig) -> Backend:
    target = config.router.match("a.com", "/")
    assert isinstance(target, Target)
    return target.backend


# ------------------------------------------------------------------ bad input loses nothing


def test_one_bad_object_never_takes_the_others_down() -> None:
    bad_host = ingress("bad-host", ("foo.*.com", "/", "Prefix", "web", 80))
    bad_path = ingress(
        "bad-path", ("b.com", "relative", "Prefix", "web", 80), ("b.com", "/ok", "Exact", "web", 80)
    )
    bad_type = ingress("bad-type", ("c.com", "/", "Regex", "web", 80))
    no_service = ingress("no-service")
    no_service["spec"]["rules"] = [
        {"host": "d.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {}}]}}
    ]
    nameless = ingress("x")
    del nameless["metadata"]["name"]
    objects: list[Any] = [
        service("web", 80),
        endpoint_slice("web", 8080, "127.0.0.1"),
        bad_host,
        bad_path,
        bad_type,
        no_service,
        nameless,
        "not an object",
        ingress("good", ("good.com", "/", "Prefix", "web", 80)),
    ]
    config = build_config(objects)
    assert routed(config, "good.com", "/") == "web"
    assert routed(config, "b.com", "/ok") == "web"
    problems = {(p.name, p.field): p.reason for p in config.rejected()}
    assert "'*' is only allowed" in problems[("default/bad-host", "spec.rules[0].http.paths[0]")]
    assert "absolute" in problems[("default/bad-path", "spec.rules[0].http.paths[0]")]
    assert (
        "unknown path type 'Regex'" in problems[("default/bad-type", "spec.rules[0].http.paths[0]")]
    )
    assert "service.name" in problems[("default/no-service", "spec.rules[0].http.paths[0].backend")]
    assert "needs a name" in problems[("?", "metadata.name")]
    assert "not a Kubernetes object: str" in problems[("#7", "")]


def test_a_bad_host_with_a_default_backend_is_reported_and_the_rest_served() -> None:
    """The host's implicit ``/`` rule for the default backend is refused like its paths."""
    bad = ingress("bad-host", defaultBackend={"service": {"name": "web", "port": {"number": 80}}})
    bad["spec"]["rules"] = [{"host": "foo.*.com"}]
    config = build_config(
        [service("web", 80), bad, ingress("good", ("good.com", "/", "Prefix", "web", 80))]
    )
    assert routed(config, "good.com", "/") == "web"
    problems = {(p.name, p.field): p.reason for p in config.rejected()}
    assert "'*' is only allowed" in problems[("default/bad-host", "spec.defaultBackend")]


def test_an_object_given_twice_counts_once_as_its_last_version_with_a_warning() -> None:
    first = ingress("site", ("a.com", "/", "Prefix", "web", 80))
    second = ingress("site", ("a.com", "/", "Prefix", "api", 80))
    config = build_config([service("web", 80), service("api", 80), first, second])
    assert routed(config, "a.com", "/") == "api"
    assert config.ingresses == ("default/site",)
    (warning,) = config.warnings()
    assert (warning.kind, warning.name) == ("Ingress", "default/site")
    assert "more than once" in warning.reason
    assert not config.rejected()  # not a conflict with itself


def test_problem_text_names_object_and_field() -> None:
    config = build_config(
        [ingress("a", ("a.com", "/", "Prefix", "web", 80), ("a.com", "x", "Prefix", "web", 80))]
    )
    assert any(
        str(p).startswith("rejected: Ingress default/a spec.rules[0].http.paths[1]: ")
        for p in config.problems
    )


def test_malformed_annotation_value_is_rejected_and_the_default_applies() -> None:
    objects = [
        service("web", 80),
        ingress("a", ("a.com", "/", "Prefix", "web", 80), tls=[{"hosts": ["a.com"]}]),
    ]
    objects[1]["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/ssl-redirect": "maybe"}
    config = build_config(objects)
    target = config.router.match("a.com", "/")
    assert target is not None
    assert target.policy.ssl_redirect is True
    assert any("ssl-redirect" in p.field and "'maybe'" in p.reason for p in config.rejected())


def test_rewrite_target_with_regex_captures_makes_the_paths_regexes() -> None:
    objects = [service("web", 80), ingress("a", ("a.com", "/app(/|$)(.*)", "Prefix", "web", 80))]
    objects[1]["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
    config = build_config(objects)
    assert config.rejected() == ()
    target = config.match("a.com", "/APP/x")  # searched from the start, case-insensitive
    assert target is not None
    assert target.policy.rewrite_target == "/$2"
    assert config.match("a.com", "/apps") is None
