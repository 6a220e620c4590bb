"""Ingress annotations -> the route policy: each annotation's values, its rejections, and
the protections that fail closed (the routes answer 503 rather than serve unprotected)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network
from typing import Any

import pytest

from fastroute.ingress import build_config
from fastroute.ingress.annotations import ANNOTATIONS, FIRST_PORT, NO_EFFECT, SNIPPETS, read_policy
from fastroute.ingress.external_auth import ANNOTATION_NAMES as EXTERNAL_AUTH_ANNOTATIONS
from fastroute.ingress.model import Cors, Policy, RateLimit, UpstreamTLS
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings
from tests.objects import ingress

NGINX = "nginx.ingress.kubernetes.io/"
OURS = "fastroute.io/"
MiB = 1024 * 1024
Notes = list[tuple[str, str, bool]]


def read(annotations: Mapping[str, Any], **options: Any) -> tuple[Policy, Notes]:
    """read_policy over annotations written without their prefix (nginx's is added)."""
    return read_policy({NGINX + k: v for k, v in annotations.items()}, **options)


def rejections(notes: Notes) -> dict[str, str]:
    return {key: reason for key, reason, warning in notes if not warning}


def warnings(notes: Notes) -> dict[str, str]:
    return {key: reason for key, reason, warning in notes if warning}


DEFAULT = Policy(hsts=DEFAULT_SETTINGS.hsts_value)


def test_no_annotations_read_as_the_plain_policy() -> None:
    policy, notes = read_policy({})
    assert policy == DEFAULT
    assert policy.plain
    assert policy.hsts == "max-age=31536000; includeSubDomains"
    assert notes == []


# (annotation, value, Policy field, what the field becomes)
GOOD: list[tuple[str, str, str, Any]] = [
    ("ssl-redirect", "false", "ssl_redirect", False),
    ("force-ssl-redirect", "TRUE", "force_ssl_redirect", True),
    ("rewrite-target", "/api", "rewrite_target", "/api"),
    ("rewrite-target", "/new/$2", "rewrite_target", "/new/$2"),
    ("use-regex", "true", "use_regex", True),
    ("proxy-body-size", "8m", "max_body_bytes", 8 * MiB),
    ("proxy-body-size", "512k", "max_body_bytes", 512 * 1024),
    ("proxy-body-size", "2G", "max_body_bytes", 2 * 1024 * MiB),
    ("proxy-body-size", "100", "max_body_bytes", 100),
    ("proxy-body-size", "0", "max_body_bytes", 0),
    ("proxy-connect-timeout", "15", "connect_timeout", 15.0),
    ("proxy-read-timeout", "1m", "read_timeout", 60.0),
    ("proxy-read-timeout", "500ms", "read_timeout", 0.5),
    ("proxy-send-timeout", "1m30s", "send_timeout", 90.0),
    ("proxy-send-timeout", "2h", "send_timeout", 7200.0),
    (
        "proxy-next-upstream",
        "error timeout http_502",
        "next_upstream",
        {"error", "timeout", "http_502"},
    ),
    ("proxy-next-upstream", "off", "next_upstream", {"off"}),
    ("proxy-next-upstream-tries", "3", "next_upstream_tries", 3),
    ("proxy-next-upstream-tries", "0", "next_upstream_tries", 0),
    ("proxy-next-upstream-timeout", "10s", "next_upstream_timeout", 10.0),
    ("proxy-next-upstream-timeout", "0", "next_upstream_timeout", 0.0),
    (
        "whitelist-source-range",
        "10.0.0.0/8, 192.168.1.5",
        "allow",
        (ip_network("10.0.0.0/8"), ip_network("192.168.1.5/32")),
    ),
    ("allowlist-source-range", "2001:db8::/32", "allow", (ip_network("2001:db8::/32"),)),
    ("denylist-source-range", "203.0.113.0/24", "deny", (ip_network("203.0.113.0/24"),)),
    (
        "permanent-redirect",
        "https://new.example.com/x",
        "redirect",
        (301, "https://new.example.com/x"),
    ),
    (
        "temporal-redirect",
        "http://maint.example.com",
        "redirect",
        (302, "http://maint.example.com"),
    ),
    ("app-root", "/app", "app_root", "/app"),
    ("from-to-www-redirect", "true", "from_to_www", True),
    (
        "server-alias",
        "Alias.example.com, *.b.example.com,alias.example.com",
        "aliases",
        ("alias.example.com", "*.b.example.com"),
    ),
    ("upstream-vhost", "internal.example.svc:8080", "upstream_vhost", "internal.example.svc:8080"),
    ("x-forwarded-prefix", "/api", "forwarded_prefix", "/api"),
    ("proxy-http-version", "1.0", "proxy_http_version", "1.0"),
    ("enable-access-log", "false", "access_log", False),
    ("service-upstream", "true", "service_upstream", True),
    ("default-backend", "errors", "default_backend", ("errors", FIRST_PORT)),
    ("custom-http-errors", "404, 503", "custom_http_errors", {404, 503}),
]


@pytest.mark.parametrize(("name", "value", "field", "expected"), GOOD)
def test_a_good_value_sets_its_policy_field(
    name: str, value: str, field: str, expected: Any
) -> None:
    policy, notes = read({name: value})
    assert getattr(policy, field) == expected
    assert getattr(DEFAULT, field) != expected  # the annotation changed what the route does
    assert notes == []
    assert not policy.refused


# (annotation, value, a word the reason must hold besides the value)
MALFORMED: list[tuple[str, str, str]] = [
    ("ssl-redirect", "maybe", "true"),
    ("force-ssl-redirect", "1", "true"),
    ("rewrite-target", "api", "'/'"),
    ("rewrite-target", "/$host/x", "$1 to $9"),
    ("rewrite-target", "/$0", "$1 to $9"),
    ("rewrite-target", "/a b", "spaces"),
    ("proxy-body-size", "8mb", "size"),
    ("proxy-body-size", "-1", "size"),
    ("proxy-body-size", "1.5m", "size"),
    ("client-body-buffer-size", "lots", "size"),
    ("proxy-request-buffering", "yes", "'on'"),
    ("proxy-buffering", "true", "'on'"),
    ("proxy-buffer-size", "4x", "size"),
    ("proxy-buffers-number", "0", "at least 1"),
    ("proxy-max-temp-file-size", "big", "size"),
    ("proxy-connect-timeout", "0", "longer than 0"),
    ("proxy-connect-timeout", "soon", "time"),
    ("proxy-read-timeout", "5 s", "time"),
    ("proxy-read-timeout", "1m1m", "time"),
    ("proxy-send-timeout", "30sec", "time"),
    ("proxy-next-upstream", "error http_418", "http_418"),
    ("proxy-next-upstream", "off error", "'off'"),
    ("proxy-next-upstream-tries", "-1", "whole number"),
    ("proxy-next-upstream-timeout", "10x", "time"),
    ("permanent-redirect", "javascript:alert(1)", "http"),
    ("temporal-redirect", "https://a.example.com/\r\nX-Evil: 1", "http"),
    ("app-root", "app", "'/'"),
    ("from-to-www-redirect", "yes", "true"),
    ("server-alias", "bad_host!", "host name"),
    ("server-alias", "a.example.com,-b.example.com", "host name"),
    ("upstream-vhost", "a.example.com\r\nX-Evil: 1", "host name"),
    ("upstream-vhost", "a.example.com:99999", "65535"),
    ("x-forwarded-prefix", "/a\r\nX-Evil: 1", "control character"),
    ("x-forwarded-prefix", "/a\x00", "control character"),
    ("proxy-http-version", "2", "1.1"),
    ("enable-access-log", "nope", "true"),
    ("service-upstream", "1", "true"),
    ("default-backend", "Not_A_Service", "Service"),
    ("custom-http-errors", "404,302", "400 to 599"),
    ("custom-http-errors", "not-found", "400 to 599"),
    ("backend-protocol", "GRPC", "needs HTTP/2, not supported yet"),
    ("backend-protocol", "grpcs", "needs HTTP/2, not supported yet"),
    ("backend-protocol", "FCGI", "needs FastCGI, not supported yet"),
    ("backend-protocol", "SPDY", "HTTPS"),
    ("use-regex", "yes", "true"),
    ("ssl-passthrough", "on", "true"),
]


@pytest.mark.parametrize(("name", "value", "why"), MALFORMED)
def test_a_malformed_value_is_rejected_with_its_reason_and_the_default_applies(
    name: str, value: str, why: str
) -> None:
    policy, notes = read({name: value})
    [(key, reason)] = rejections(notes).items()
    assert key == NGINX + name
    assert repr(value) in reason
    assert why in reason
    assert policy == DEFAULT  # served as without the annotation, not refused
    assert not ANNOTATIONS[name].protection


PROTECTIONS_MALFORMED: list[tuple[str, str]] = [
    ("whitelist-source-range", "10.0.0.0/33"),
    ("whitelist-source-range", ""),
    ("allowlist-source-range", "everyone"),
    ("denylist-source-range", "1.2.3"),
    ("limit-rps", "ten"),
    ("limit-rpm", "-5"),
    ("limit-burst-multiplier", "0"),
    ("limit-connections", "2.5"),
    ("limit-whitelist", "10.0.0.0/8,nope"),
]


@pytest.mark.parametrize(("name", "value"), PROTECTIONS_MALFORMED)
def test_a_malformed_protection_fails_closed(name: str, value: str) -> None:
    policy, notes = read({name: value, "limit-rps": "5"} if name != "limit-rps" else {name: value})
    assert rejections(notes).keys() == {NGINX + name}
    assert repr(value) in rejections(notes)[NGINX + name]
    assert NGINX + name in policy.refused  # the routes answer 503, saying which annotation
    assert not policy.plain
    assert ANNOTATIONS[name].protection


@pytest.mark.parametrize("name", ["auth-something-new"])
def test_an_auth_annotation_fails_closed_until_authentication_exists(name: str) -> None:
    policy, notes = read({name: "https://auth.example.com/check"})
    assert "authentication" in rejections(notes)[NGINX + name]
    assert NGINX + name in policy.refused


def test_a_good_protection_next_to_a_malformed_one_still_refuses() -> None:
    policy, _ = read({"allowlist-source-range": "10.0.0.0/8", "denylist-source-range": "nope"})
    assert policy.allow == (ip_network("10.0.0.0/8"),)
    assert "denylist-source-range" in policy.refused


def test_allowlist_wins_over_whitelist_and_says_so() -> None:
    policy, notes = read(
        {"whitelist-source-range": "10.0.0.0/8", "allowlist-source-range": "192.168.0.0/16"}
    )
    assert policy.allow == (ip_network("192.168.0.0/16"),)
    assert "allowlist-source-range" in warnings(notes)[NGINX + "whitelist-source-range"]


# -- both prefixes --------------------------------------------------------------------


def test_the_fastroute_prefix_is_read_too() -> None:
    policy, notes = read_policy({OURS + "proxy-body-size": "2m", OURS + "ssl-redirect": "false"})
    assert policy.max_body_bytes == 2 * MiB
    assert policy.ssl_redirect is False
    assert notes == []


def test_the_fastroute_prefix_wins_over_nginx_and_the_loser_is_named() -> None:
    policy, notes = read_policy({NGINX + "proxy-body-size": "1m", OURS + "proxy-body-size": "8m"})
    assert policy.max_body_bytes == 8 * MiB
    assert OURS + "proxy-body-size" in warnings(notes)[NGINX + "proxy-body-size"]


def test_both_prefixes_with_the_same_value_say_nothing() -> None:
    policy, notes = read_policy({NGINX + "limit-rps": "5", OURS + "limit-rps": "5"})
    assert policy.limit is not None
    assert policy.limit.rps == 5
    assert notes == []


def test_a_malformed_fastroute_protection_fails_closed_even_if_nginx_s_is_good() -> None:
    policy, notes = read_policy({NGINX + "limit-rps": "5", OURS + "limit-rps": "five"})
    assert OURS + "limit-rps" in policy.refused
    assert OURS + "limit-rps" in rejections(notes)


def test_an_unknown_fastroute_annotation_is_a_warning() -> None:
    policy, notes = read_policy({OURS + "proxy-bdy-size": "8m"})
    assert "not a fastroute annotation" in warnings(notes)[OURS + "proxy-bdy-size"]
    assert policy == DEFAULT


# -- groups: CORS, rate limits, upstream TLS, redirects -------------------------------


def test_enable_cors_alone_gives_ingress_nginx_s_defaults() -> None:
    policy, _ = read({"enable-cors": "true"})
    assert policy.cors == Cors()
    assert policy.cors.origins == ("*",)
    assert policy.cors.max_age == 1728000


def test_cors_settings_are_read_when_cors_is_enabled() -> None:
    policy, notes = read(
        {
            "enable-cors": "true",
            "cors-allow-origin": "https://app.example.com, https://*.example.org:8443, null",
            "cors-allow-methods": "GET,POST",
            "cors-allow-headers": "X-Token, Content-Type",
            "cors-expose-headers": "X-Request-Id",
            "cors-allow-credentials": "false",
            "cors-max-age": "600",
        }
    )
    assert notes == []
    assert policy.cors == Cors(
        origins=("https://app.example.com", "https://*.example.org:8443", "null"),
        methods="GET, POST",
        headers="X-Token, Content-Type",
        expose_headers="X-Request-Id",
        credentials=False,
        max_age=600,
    )


def test_a_star_among_origins_allows_every_origin() -> None:
    policy, _ = read({"enable-cors": "true", "cors-allow-origin": "https://a.example.com, *"})
    assert policy.cors is not None
    assert policy.cors.origins == ("*",)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cors-allow-methods", "GET;DROP"),
        ("cors-allow-headers", "X-A\r\nX-B: 1"),
        ("cors-expose-headers", "X Y(z)"),
        ("cors-allow-credentials", "sometimes"),
        ("cors-max-age", "forever"),
        ("enable-cors", "yes"),
    ],
)
def test_a_malformed_cors_value_keeps_the_cors_default(name: str, value: str) -> None:
    policy, notes = read({"enable-cors": "true", name: value})
    assert repr(value) in rejections(notes)[NGINX + name]
    expected = None if name == "enable-cors" else Cors()
    assert policy.cors == expected
    assert not policy.refused


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("https://a.example.com, ftp//b.example.com", ("https://a.example.com",)),
        ("https://a.example.com/path", ()),
        ("https://$host", ()),
        (" , ", ()),
    ],
)
def test_a_malformed_origin_is_dropped_never_widened_to_every_origin(
    value: str, kept: tuple[str, ...]
) -> None:
    policy, notes = read({"enable-cors": "true", "cors-allow-origin": value})
    assert repr(value) in rejections(notes)[NGINX + "cors-allow-origin"]
    assert policy.cors is not None
    assert policy.cors.origins == kept


def test_cors_settings_without_enable_cors_do_nothing_and_say_so() -> None:
    policy, notes = read({"cors-allow-origin": "https://a.example.com"})
    assert policy.cors is None
    assert "enable-cors" in warnings(notes)[NGINX + "cors-allow-origin"]


def test_rate_limits_take_their_statuses_from_the_configmap() -> None:
    settings = Settings(limit_req_status_code=429, limit_conn_status_code=503)
    policy, notes = read(
        {
            "limit-rps": "10",
            "limit-rpm": "300",
            "limit-burst-multiplier": "3",
            "limit-connections": "4",
            "limit-whitelist": "10.0.0.0/8, 127.0.0.1",
        },
        settings=settings,
    )
    assert notes == []
    assert policy.limit == RateLimit(
        rps=10,
        rpm=300,
        burst_multiplier=3,
        connections=4,
        exempt=(ip_network("10.0.0.0/8"), ip_network("127.0.0.1/32")),
        status=429,
        connections_status=503,
    )


def test_a_rate_limit_annotation_without_a_rate_does_nothing_and_says_so() -> None:
    policy, notes = read({"limit-whitelist": "10.0.0.0/8", "limit-rps": "0"})
    assert policy.limit is None
    assert "limit-rps" in warnings(notes)[NGINX + "limit-whitelist"]


def test_backend_protocol_https_reads_the_proxy_ssl_annotations() -> None:
    policy, notes = read(
        {
            "backend-protocol": "HTTPS",
            "proxy-ssl-verify": "on",
            "proxy-ssl-name": "pods.internal.example",
            "proxy-ssl-server-name": "on",
            "proxy-ssl-verify-depth": "2",
            "proxy-ssl-protocols": "TLSv1.3",
            "proxy-ssl-secret": "default/pod-ca",
        }
    )
    assert notes == []  # proxy-ssl-secret is the build's to read: no "unknown" warning
    assert policy.upstream_tls == UpstreamTLS(
        verify=True,
        name="pods.internal.example",
        send_sni=True,
        verify_depth=2,
        protocols=("TLSv1.3",),
    )


def test_backend_protocol_https_alone_speaks_tls_without_verifying() -> None:
    policy, _ = read({"backend-protocol": "https"})
    assert policy.upstream_tls == UpstreamTLS()
    assert policy.upstream_tls.verify is False


@pytest.mark.parametrize("protocol", ["HTTP", "AUTO_HTTP"])
def test_plain_backend_protocols_keep_plain_http(protocol: str) -> None:
    policy, notes = read({"backend-protocol": protocol})
    assert policy.upstream_tls is None
    assert notes == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("proxy-ssl-verify", "yes"),
        ("proxy-ssl-server-name", "true"),
        ("proxy-ssl-verify-depth", "deep"),
        ("proxy-ssl-protocols", "TLSv1 TLSv1.1"),
        ("proxy-ssl-name", "bad name"),
    ],
)
def test_a_malformed_proxy_ssl_value_keeps_its_default(name: str, value: str) -> None:
    policy, notes = read({"backend-protocol": "HTTPS", name: value})
    assert repr(value) in rejections(notes)[NGINX + name]
    assert policy.upstream_tls == UpstreamTLS()


def test_proxy_ssl_annotations_without_https_do_nothing_and_say_so() -> None:
    policy, notes = read({"proxy-ssl-verify": "on"})
    assert policy.upstream_tls is None
    assert "backend-protocol" in warnings(notes)[NGINX + "proxy-ssl-verify"]


def test_redirect_codes() -> None:
    assert read({"permanent-redirect": "https://a.example.com", "permanent-redirect-code": "308"})[
        0
    ].redirect == (308, "https://a.example.com")
    assert read({"temporal-redirect": "https://a.example.com", "temporal-redirect-code": "307"})[
        0
    ].redirect == (307, "https://a.example.com")


@pytest.mark.parametrize(
    ("name", "code", "expected"),
    [
        ("permanent-redirect", "200", 301),
        ("permanent-redirect", "309", 301),
        ("temporal-redirect", "308", 302),
        ("temporal-redirect", "found", 302),
    ],
)
def test_a_malformed_redirect_code_keeps_the_redirect_with_its_default_code(
    name: str, code: str, expected: int
) -> None:
    policy, notes = read({name: "https://a.example.com", f"{name}-code": code})
    assert policy.redirect == (expected, "https://a.example.com")
    assert repr(code) in rejections(notes)[f"{NGINX}{name}-code"]


def test_temporal_redirect_wins_over_permanent_as_in_ingress_nginx() -> None:
    policy, notes = read(
        {
            "temporal-redirect": "https://t.example.com",
            "permanent-redirect": "https://p.example.com",
        }
    )
    assert policy.redirect == (302, "https://t.example.com")
    assert "temporal-redirect" in warnings(notes)[NGINX + "permanent-redirect"]


def test_a_redirect_code_without_its_redirect_does_nothing_and_says_so() -> None:
    policy, notes = read({"permanent-redirect-code": "308"})
    assert policy.redirect is None
    assert "permanent-redirect" in warnings(notes)[NGINX + "permanent-redirect-code"]


# -- custom-headers: a ConfigMap of response headers ----------------------------------


class ConfigMaps:
    """A lookup of ConfigMaps by "namespace/name" that records what it was asked."""

    def __init__(self, **data: Mapping[str, str]) -> None:
        self.data = {key.replace("__", "/"): value for key, value in data.items()}
        self.asked: list[str] = []

    def __call__(self, key: str) -> Mapping[str, str] | None:
        self.asked.append(key)
        return self.data.get(key)


def test_custom_headers_names_a_configmap_in_the_ingress_namespace() -> None:
    lookup = ConfigMaps(shop__extra={"X-Frame-Options": "DENY", "X-Shop": "one, two"})
    policy, notes = read({"custom-headers": "extra"}, namespace="shop", configmap=lookup)
    assert lookup.asked == ["shop/extra"]
    assert policy.response_headers == (("X-Frame-Options", "DENY"), ("X-Shop", "one, two"))
    assert notes == []


def test_custom_headers_may_name_another_namespace_and_replace_add_headers() -> None:
    settings = Settings(add_headers=(("X-Frame-Options", "SAMEORIGIN"), ("X-Site", "a")))
    lookup = ConfigMaps(common__headers={"x-frame-options": "DENY"})
    policy, _ = read(
        {"custom-headers": "common/headers"}, settings=settings, namespace="shop", configmap=lookup
    )
    assert policy.response_headers == (("X-Site", "a"), ("x-frame-options", "DENY"))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (None, "does not exist"),
        ({"X-Bad Name": "1"}, "header name"),
        ({"X-Ok": "1\r\nSet-Cookie: stolen=1"}, "control character"),
        ({"X-Ok": "a\nb"}, "control character"),
        ({"X-Ok": "a\x00"}, "control character"),
        ({"X-Ok": "a\x85b"}, "control character"),
        ({"X-Ok": "a\x7fb"}, "control character"),
    ],
)
def test_custom_headers_that_could_inject_a_header_are_rejected(
    data: Mapping[str, str] | None, why: str
) -> None:
    lookup = ConfigMaps(**({"shop__extra": data} if data is not None else {}))
    policy, notes = read({"custom-headers": "extra"}, namespace="shop", configmap=lookup)
    assert why in rejections(notes)[NGINX + "custom-headers"]
    assert "shop/extra" in rejections(notes)[NGINX + "custom-headers"]
    assert policy.response_headers == ()


def test_custom_headers_with_a_malformed_name_is_rejected_without_a_lookup() -> None:
    lookup = ConfigMaps()
    _, notes = read({"custom-headers": "a/b/c"}, namespace="shop", configmap=lookup)
    assert "'a/b/c'" in rejections(notes)[NGINX + "custom-headers"]
    assert lookup.asked == []


# -- the ConfigMap's defaults ---------------------------------------------------------


def test_the_configmap_s_values_are_the_route_s_defaults() -> None:
    settings = Settings(
        proxy_body_size=4 * MiB,
        proxy_connect_timeout=2.0,
        proxy_read_timeout=120.0,
        proxy_send_timeout=30.0,
        proxy_next_upstream=frozenset({"error"}),
        proxy_next_upstream_tries=2,
        ssl_redirect=False,
        force_ssl_redirect=True,
        whitelist_source_range=("10.0.0.0/8",),
        denylist_source_range=("10.6.6.6",),
        add_headers=(("X-Site", "a"),),
        proxy_set_headers=(("X-Env", "prod"),),
        custom_http_errors=frozenset({502}),
        hsts_preload=True,
    )
    policy, notes = read_policy({}, settings)
    assert notes == []
    assert policy == Policy(
        max_body_bytes=4 * MiB,
        connect_timeout=2.0,
        read_timeout=120.0,
        send_timeout=30.0,
        next_upstream=frozenset({"error"}),
        next_upstream_tries=2,
        ssl_redirect=False,
        force_ssl_redirect=True,
        allow=(ip_network("10.0.0.0/8"),),
        deny=(ip_network("10.6.6.6/32"),),
        response_headers=(("X-Site", "a"),),
        upstream_headers=(("X-Env", "prod"),),
        custom_http_errors=frozenset({502}),
        hsts="max-age=31536000; includeSubDomains; preload",
    )


def test_annotations_override_the_configmap() -> None:
    settings = Settings(
        proxy_body_size=4 * MiB,
        proxy_read_timeout=120.0,
        whitelist_source_range=("10.0.0.0/8", "172.16.0.0/12"),
        custom_http_errors=frozenset({502}),
    )
    policy, _ = read(
        {
            "proxy-body-size": "0",
            "proxy-read-timeout": "5",
            "whitelist-source-range": "192.168.0.0/16",
            "custom-http-errors": "404",
        },
        settings=settings,
    )
    assert policy.max_body_bytes == 0
    assert policy.read_timeout == 5.0
    assert policy.allow == (ip_network("192.168.0.0/16"),)  # replaces the list, no merge
    assert policy.custom_http_errors == {404}


def test_a_rejected_annotation_falls_back_to_the_configmap_not_to_fastroute_s_default() -> None:
    settings = Settings(proxy_body_size=4 * MiB, hsts=False)
    policy, _ = read({"proxy-body-size": "huge"}, settings=settings)
    assert policy.max_body_bytes == 4 * MiB
    assert policy.hsts == ""


def test_a_malformed_configmap_allowlist_fails_closed_unless_an_annotation_replaces_it() -> None:
    settings = Settings(whitelist_source_range=("10.0.0.0/8", "nonsense"))
    policy, _ = read_policy({}, settings)
    assert "whitelist-source-range" in policy.refused
    policy, _ = read({"whitelist-source-range": "10.0.0.0/8"}, settings=settings)
    assert not policy.refused
    assert policy.allow == (ip_network("10.0.0.0/8"),)


# -- what is never executed or not implemented ----------------------------------------


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_a_snippet_is_never_executed_and_the_warning_names_a_replacement(name: str) -> None:
    policy, notes = read({name: "more_set_headers 'X-Evil: 1';"})
    reason = warnings(notes)[NGINX + name]
    assert "never executed" in reason
    assert SNIPPETS[name] in reason
    assert policy == DEFAULT
    assert not policy.refused


def test_the_configuration_snippet_warning_names_the_typed_annotations() -> None:
    _, notes = read({"configuration-snippet": "return 301 https://x/;"})
    reason = warnings(notes)[NGINX + "configuration-snippet"]
    for replacement in ("add-headers", "custom-headers", "proxy-set-headers", "permanent-redirect"):
        assert replacement in reason


@pytest.mark.parametrize(
    "name",
    [
        "client-body-buffer-size",
        "proxy-request-buffering",
        "proxy-buffering",
        "proxy-buffer-size",
        "proxy-buffers-number",
        "proxy-max-temp-file-size",
    ],
)
def test_buffering_annotations_are_accepted_as_no_ops(name: str) -> None:
    value = {"proxy-request-buffering": "off", "proxy-buffering": "on"}.get(name, "16")
    value = "8k" if name.endswith("size") else value
    policy, notes = read({name: value})
    assert notes == [(NGINX + name, NO_EFFECT, True)]
    assert policy == DEFAULT
    assert policy.plain


@pytest.mark.parametrize(
    ("name", "feature"),
    [
        ("proxy-cookie-path", "ignored"),
        ("limit-rate", "ignored"),
    ],
)
def test_other_nginx_annotations_are_ignored_with_a_warning(name: str, feature: str) -> None:
    policy, notes = read({name: "true"})
    reason = warnings(notes)[NGINX + name]
    assert "not implemented by fastroute" in reason
    assert feature in reason
    assert policy == DEFAULT


# -- the table, for the migration report ----------------------------------------------

ISSUE_ANNOTATIONS = [
    "ssl-redirect",
    "force-ssl-redirect",
    "rewrite-target",
    "use-regex",
    "proxy-body-size",
    "client-body-buffer-size",
    "proxy-request-buffering",
    "proxy-buffering",
    "proxy-buffer-size",
    "proxy-buffers-number",
    "proxy-max-temp-file-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-whitelist",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "app-root",
    "from-to-www-redirect",
    "server-alias",
    "upstream-vhost",
    "x-forwarded-prefix",
    "custom-headers",
    "proxy-http-version",
    "enable-access-log",
    "service-upstream",
    "default-backend",
    "custom-http-errors",
    "backend-protocol",
    "proxy-ssl-verify",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-verify-depth",
    "proxy-ssl-protocols",
    "proxy-ssl-secret",
    "load-balance",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-secure",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-change-on-failure",
    "ssl-passthrough",
    # issue 11: canaries
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
    # issue 12: basic authentication
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    # issue 12: external authentication
    *EXTERNAL_AUTH_ANNOTATIONS,
    # issue 12: how allow lists and authentication combine
    "satisfy",
    # issue 12: client certificates
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-error-page",
    "auth-tls-match-cn",
]


def test_the_table_lists_every_annotation_of_the_issue_with_a_summary() -> None:
    assert set(ANNOTATIONS) == set(ISSUE_ANNOTATIONS)
    assert all(entry.summary for entry in ANNOTATIONS.values())
    protections = {name for name, entry in ANNOTATIONS.items() if entry.protection}
    assert protections == {
        "whitelist-source-range",
        "allowlist-source-range",
        "denylist-source-range",
        "limit-rps",
        "limit-rpm",
        "limit-burst-multiplier",
        "limit-connections",
        "limit-whitelist",
        "auth-type",
        "auth-secret",
        "auth-secret-type",
        "auth-realm",
        *EXTERNAL_AUTH_ANNOTATIONS,
        *(name for name in ISSUE_ANNOTATIONS if name.startswith("auth-tls-")),
    }
    policy_fields = set(Policy.__dataclass_fields__)
    for entry in ANNOTATIONS.values():
        assert not entry.field or entry.field.partition(".")[0] in policy_fields, entry.name


# -- through the build: one Ingress's bad annotation leaves the others alone ----------


def _ingress(name: str, path: str, annotations: dict[str, str]) -> dict[str, Any]:
    paths = [(path, "Prefix", "web")]
    return ingress(name, "shop.example.com", paths=paths, annotations=annotations)


def test_a_bad_protection_refuses_only_its_own_ingress_s_routes() -> None:
    web = {"kind": "Service", "metadata": {"name": "web", "namespace": "default"}}
    web["spec"] = {"ports": [{"port": 80}]}
    config = build_config(
        [
            web,
            _ingress("admin", "/admin", {NGINX + "whitelist-source-range": "10.0.0.0/33"}),
            _ingress("shop", "/", {NGINX + "limit-rps": "20"}),
        ]
    )
    admin = config.router.match("shop.example.com", "/admin/users")
    shop = config.router.match("shop.example.com", "/cart")
    assert admin is not None
    assert shop is not None
    assert "whitelist-source-range" in admin.policy.refused
    assert not shop.policy.refused
    assert shop.policy.limit is not None
    assert shop.policy.limit.rps == 20
    [problem] = config.rejected()
    assert problem.name == "default/admin"
    assert problem.field == f"metadata.annotations[{NGINX}whitelist-source-range]"
    assert "'10.0.0.0/33'" in problem.reason


def test_custom_headers_keep_non_ascii_text_in_values() -> None:
    lookup = ConfigMaps(shop__extra={"X-Team": "café crème"})
    policy, notes = read({"custom-headers": "extra"}, namespace="shop", configmap=lookup)
    assert policy.response_headers == (("X-Team", "café crème"),)
    assert notes == []


def test_yaml_booleans_and_numbers_in_a_manifest_read_as_their_text() -> None:
    policy, notes = read({"enable-cors": True, "limit-rps": 5, "ssl-redirect": False})
    assert notes == []
    assert policy.cors == Cors()
    assert policy.limit is not None
    assert policy.limit.rps == 5
    assert policy.ssl_redirect is False
