"""Per-request decisions: forward, redirect to HTTPS, or an error status, from a real config."""

from __future__ import annotations

from typing import Any

import pytest

from fastroute.errors import BadRequestError, NoRouteError, ProxyError, ServiceUnavailableError
from fastroute.ingress import build_config
from fastroute.ingress.certs import self_signed_certificate, tls_secret
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.decide import Answer, Forward, decide
from tests.objects import ingress, service_at

Obj = dict[str, Any]


def _ingress(name: str, host: str, paths: list[tuple[str, str]], **extra: Any) -> Obj:
    annotations = extra.pop("annotations", {})
    routes = [(path, "Prefix", svc) for path, svc in paths]
    found = ingress(name, host, paths=routes, annotations=annotations)
    found["spec"].update(extra)
    return found


def _service_with_endpoint(name: str) -> list[Obj]:
    return service_at(8080, name)


@pytest.fixture(scope="module")
def config() -> RouteConfig:
    certificate = self_signed_certificate(["secure.example.com"])
    objects = [
        *_service_with_endpoint("web"),
        *_service_with_endpoint("api"),
        {"kind": "Service", "metadata": {"name": "empty"}, "spec": {"ports": [{"port": 80}]}},
        tls_secret("default", "secure-tls", certificate),
        _ingress("plain", "plain.example.com", [("/", "web"), ("/api", "api"), ("/down", "empty")]),
        _ingress(
            "secure",
            "secure.example.com",
            [("/", "web")],
            tls=[{"hosts": ["secure.example.com"], "secretName": "secure-tls"}],
        ),
        _ingress(
            "no-redirect",
            "optout.example.com",
            [("/", "web")],
            tls=[{"hosts": ["optout.example.com"], "secretName": "secure-tls"}],
            annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
        ),
        _ingress(
            "forced",
            "forced.example.com",
            [("/", "web")],
            annotations={"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"},
        ),
        _ingress(
            "rewritten",
            "rewrite.example.com",
            [("/echo-hostname", "web")],
            annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/"},
        ),
    ]
    return build_config(objects)


def forward(
    config: RouteConfig, target: bytes, host: bytes | None, scheme: str = "http"
) -> Forward:
    decision = decide(config, method=b"GET", target=target, host=host, scheme=scheme)
    assert isinstance(decision, Forward), decision
    return decision


def test_host_and_path_pick_the_service(config: RouteConfig) -> None:
    decision = forward(config, b"/api/v1/items?page=2", b"PLAIN.example.com:8080")
    assert decision.route.backend.service == "api"
    assert decision.target == b"/api/v1/items?page=2"
    assert decision.host == b"PLAIN.example.com:8080"


def test_the_path_is_forwarded_as_it_was_matched(config: RouteConfig) -> None:
    """The api Service must not receive ``/static/..``: it could route on the raw path."""
    decision = forward(config, b"/static/../api/x?q=1", b"plain.example.com")
    assert decision.route.backend.service == "api"
    assert decision.target == b"/api/x?q=1"


def test_an_absolute_form_target_names_the_host(config: RouteConfig) -> None:
    decision = forward(config, b"http://plain.example.com/api", b"other.example.com")
    assert decision.route.backend.service == "api"
    assert decision.target == b"/api"
    # the Host sent upstream must be the one routed on, not the client's Host field
    assert (decision.host, decision.host_from_target) == (b"plain.example.com", True)
    assert not forward(config, b"/api", b"plain.example.com").host_from_target


def test_plain_http_to_a_tls_host_is_redirected_with_308(config: RouteConfig) -> None:
    decision = decide(
        config, method=b"POST", target=b"/cart?id=7", host=b"secure.example.com:80", scheme="http"
    )
    assert decision == Answer(308, ((b"Location", b"https://secure.example.com/cart?id=7"),))
    assert forward(config, b"/cart", b"secure.example.com", scheme="https").route.tls


def test_a_redirect_names_the_https_port_unless_it_is_443(config: RouteConfig) -> None:
    decision = decide(
        config,
        method=b"GET",
        target=b"/a",
        host=b"secure.example.com",
        scheme="http",
        https_port=8443,
    )
    assert decision == Answer(308, ((b"Location", b"https://secure.example.com:8443/a"),))


def test_acme_challenges_are_never_redirected(config: RouteConfig) -> None:
    decision = forward(config, b"/.well-known/acme-challenge/token123", b"secure.example.com")
    assert decision.route.backend.service == "web"


def test_ssl_redirect_false_and_force_ssl_redirect(config: RouteConfig) -> None:
    assert forward(config, b"/", b"optout.example.com").route.tls
    forced = decide(config, method=b"GET", target=b"/x", host=b"forced.example.com", scheme="http")
    assert forced == Answer(308, ((b"Location", b"https://forced.example.com/x"),))


def test_rewrite_target_replaces_the_path_and_keeps_the_query(config: RouteConfig) -> None:
    decision = forward(config, b"/echo-hostname/deeper?x=1", b"rewrite.example.com")
    assert decision.target == b"/?x=1"


@pytest.mark.parametrize(
    ("target", "host", "error", "status", "detail"),
    [
        (b"/", b"nowhere.example.com", NoRouteError, 404, "no rule for host 'nowhere.example.com'"),
        (b"/down", b"plain.example.com", ServiceUnavailableError, 503, "has no ready endpoints"),
        (b"/", None, BadRequestError, 400, "no Host header"),
        (b"/%zz", b"plain.example.com", BadRequestError, 400, "%zz"),
    ],
    ids=["no-route", "no-endpoints", "no-host", "bad-escape"],
)
def test_errors_carry_their_status_and_a_reason(
    config: RouteConfig,
    target: bytes,
    host: bytes | None,
    error: type[ProxyError],
    status: int,
    detail: str,
) -> None:
    with pytest.raises(error) as raised:
        decide(config, method=b"GET", target=target, host=host, scheme="http")
    assert raised.value.status == status
    assert detail in raised.value.detail
