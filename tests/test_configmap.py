"""The controller ConfigMap (``--configmap``): ingress-nginx's keys, formats and defaults.

Formats and defaults are ingress-nginx's, as its docs
(``docs/user-guide/nginx-configuration/configmap.md``) and its e2e tests
(``test/e2e/settings/*.go``) state them. Then the builder (a ConfigMap change reads again
what depends on it, and nothing else), and the controller, on manifest files and on the
Kubernetes API emulator, picking up a change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from controller.__main__ import _options, _parser
from controller.app import Controller, Options
from controller.kube.publisher import PublishOptions
from controller.kube.source import KubeSource
from fastroute.ingress import ConfigBuilder, RouteConfig, build_config
from fastroute.ingress.balancing import HashKey
from fastroute.ingress.configmap import KEYS, ConfigMapLookup, configmap_data, read_settings
from fastroute.ingress.settings import DEFAULT_SETTINGS, Settings
from tests.cli import run_controller
from tests.echo import Echo
from tests.kubeapi import KubeAPI
from tests.objects import config_map
from tests.polling import DEADLINE, wait_for
from tests.sites import HOST, site_objects
from tests.test_kube_source import backends, plain_kubeconfig, running, site

pytest_plugins = ["tests.kubeapi.fixtures"]

MIB = 1024 * 1024
CONTROLLER_CONFIGMAP = "ingress/controller"


def configmap(ref: str, data: Mapping[str, Any]) -> dict[str, Any]:
    ns, _, name = ref.partition("/")
    return config_map(name, data, ns)


def ingress(name: str, host: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": dict(annotations or {})},
        "spec": {
            "ingressClassName": "fastroute",
            "rules": [
                {
                    "host": host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


def notes_for(notes: list[tuple[str, str, bool]], key: str) -> list[tuple[str, bool]]:
    return [(reason, warning) for k, reason, warning in notes if k == key]


# -- every key, its format, its default ---------------------------------------------------

# (key, value as a ConfigMap writes it, Settings field, what it means)
GOOD: list[tuple[str, str, str, Any]] = [
    ("use-forwarded-headers", "true", "use_forwarded_headers", True),
    ("compute-full-forwarded-for", "True", "compute_full_forwarded_for", True),
    ("forwarded-for-header", "X-Client-Address", "forwarded_for_header", "X-Client-Address"),
    (
        "proxy-real-ip-cidr",
        "10.0.0.0/8, 192.168.1.7",
        "proxy_real_ip_cidr",
        ("10.0.0.0/8", "192.168.1.7/32"),
    ),
    ("enable-real-ip", "TRUE", "enable_real_ip", True),
    ("use-proxy-protocol", "true", "use_proxy_protocol", True),
    ("proxy-body-size", "8m", "proxy_body_size", 8 * MIB),
    ("proxy-body-size", "512k", "proxy_body_size", 512 * 1024),
    ("proxy-body-size", "0", "proxy_body_size", 0),
    ("proxy-connect-timeout", "50", "proxy_connect_timeout", 50.0),
    ("proxy-read-timeout", "600", "proxy_read_timeout", 600.0),
    ("proxy-send-timeout", "2m", "proxy_send_timeout", 120.0),
    ("proxy-send-timeout", "500ms", "proxy_send_timeout", 0.5),
    (
        "proxy-next-upstream",
        "timeout http_502",
        "proxy_next_upstream",
        frozenset({"timeout", "http_502"}),
    ),
    ("proxy-next-upstream", "off", "proxy_next_upstream", frozenset({"off"})),
    ("proxy-next-upstream-tries", "0", "proxy_next_upstream_tries", 0),
    ("proxy-next-upstream-tries", "888888", "proxy_next_upstream_tries", 888888),
    ("ssl-redirect", "false", "ssl_redirect", False),
    ("force-ssl-redirect", "true", "force_ssl_redirect", True),
    ("hsts", "false", "hsts", False),
    ("hsts-max-age", "86400", "hsts_max_age", 86400),
    ("hsts-include-subdomains", "false", "hsts_include_subdomains", False),
    ("hsts-preload", "true", "hsts_preload", True),
    ("ssl-protocols", "TLSv1.3", "ssl_protocols", ("TLSv1.3",)),
    ("ssl-protocols", "TLSv1.3 TLSv1.2", "ssl_protocols", ("TLSv1.2", "TLSv1.3")),
    (
        "ssl-ciphers",
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-SHA",
        "ssl_ciphers",
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-SHA",
    ),
    ("limit-req-status-code", "429", "limit_req_status_code", 429),
    ("limit-conn-status-code", "429", "limit_conn_status_code", 429),
    (
        "whitelist-source-range",
        "1.1.1.1, 10.0.0.0/8",
        "whitelist_source_range",
        ("1.1.1.1/32", "10.0.0.0/8"),
    ),
    ("denylist-source-range", "2001:db8::/32", "denylist_source_range", ("2001:db8::/32",)),
    ("custom-http-errors", "404,415, 503", "custom_http_errors", frozenset({404, 415, 503})),
    ("keep-alive", "140", "keep_alive", 140.0),
    ("keep-alive", "0", "keep_alive", 0.0),
    ("upstream-keepalive-connections", "128", "upstream_keepalive_connections", 128),
    ("upstream-keepalive-timeout", "120", "upstream_keepalive_timeout", 120.0),
    ("allow-snippet-annotations", "false", "allow_snippet_annotations", False),
    ("load-balance", "ewma", "load_balance", "ewma"),
    ("load-balance", "ROUND_ROBIN", "load_balance", "round_robin"),
    (
        "upstream-hash-by",
        "$remote_addr",
        "upstream_hash_by",
        HashKey("$remote_addr", (("remote_addr", ""),)),
    ),
    *[
        (key, f" {value} ", key.replace("-", "_"), value)
        for key, value in (
            ("global-auth-url", "http://auth.example/check"),
            ("global-auth-method", "GET"),
            ("global-auth-signin", "https://login.example/start"),
            ("global-auth-signin-redirect-param", "next"),
            ("global-auth-response-headers", "X-User, X-Email"),
            ("global-auth-request-redirect", "https://app.example/"),
            ("global-auth-cache-key", "$http_authorization"),
            ("global-auth-cache-duration", "200 1m"),
            ("global-auth-always-set-cookie", "true"),
            ("no-auth-locations", "/public"),
        )
    ],
]
# kept as written and read with each Ingress's annotations, where a malformed value fails
# the routes closed (tests/test_external_auth.py)
READ_WITH_ANNOTATIONS = {
    key for key, _, field, _ in GOOD if field.startswith(("global_auth", "no_auth"))
}

# (key, malformed value, what the reason says)
BAD: list[tuple[str, str, str]] = [
    ("use-forwarded-headers", "yes", "expected 'true' or 'false', got 'yes'"),
    ("compute-full-forwarded-for", "", "expected 'true' or 'false'"),
    ("forwarded-for-header", "X Forwarded For", "not a header name"),
    ("proxy-real-ip-cidr", "10.0.0.0/33", "'10.0.0.0/33' in '10.0.0.0/33' is not an IP address"),
    ("proxy-real-ip-cidr", " , ", "expected a comma-separated list of CIDRs"),
    ("enable-real-ip", "on", "expected 'true' or 'false'"),
    ("use-proxy-protocol", "enabled", "expected 'true' or 'false'"),
    ("proxy-body-size", "1 megabyte", "expected a size such as '512', '8k', '1m' or '2g'"),
    ("proxy-body-size", "-1", "expected a size"),
    ("proxy-connect-timeout", "50k", "expected a time such as '30', '30s'"),  # ingress-nginx's e2e
    ("proxy-read-timeout", "0", "expected more than 0 seconds, got '0'"),
    ("proxy-send-timeout", "soon", "expected a time"),
    ("proxy-next-upstream", "error sometimes", "unknown case 'sometimes'"),
    ("proxy-next-upstream", "off error", "'off' cannot be combined with other cases"),
    ("proxy-next-upstream", "", "expected cases such as 'error timeout', or 'off'"),
    ("proxy-next-upstream-tries", "-1", "expected a whole number"),
    ("ssl-redirect", "maybe", "expected 'true' or 'false'"),
    ("force-ssl-redirect", "2", "expected 'true' or 'false'"),
    ("hsts", "yes", "expected 'true' or 'false'"),
    ("hsts-max-age", "1y", "expected a whole number"),
    ("hsts-include-subdomains", "no", "expected 'true' or 'false'"),
    ("hsts-preload", "y", "expected 'true' or 'false'"),
    ("ssl-protocols", "TLSv1.1", "TLSv1.1 refused: broken or deprecated (RFC 8996)"),
    ("ssl-protocols", "SSLv2", "SSLv2 refused"),
    ("ssl-protocols", "TLSv1.4", "unknown protocol 'TLSv1.4'"),
    ("ssl-ciphers", "NOT-A-CIPHER", "OpenSSL knows no cipher in 'NOT-A-CIPHER'"),
    ("limit-req-status-code", "200", "expected a number from 400 to 599, got '200'"),
    ("limit-conn-status-code", "600", "expected a number from 400 to 599"),
    ("custom-http-errors", "404,abc", "'abc' in '404,abc' is not a status code from 300 to 599"),
    ("custom-http-errors", "200", "'200' in '200' is not a status code from 300 to 599"),
    ("keep-alive", "75s5", "expected a time"),
    ("upstream-keepalive-connections", "many", "expected a whole number"),
    ("upstream-keepalive-timeout", "-5", "expected a time"),
    ("allow-snippet-annotations", "sure", "expected 'true' or 'false'"),
    ("load-balance", "least_conn", "expected round_robin or ewma, got 'least_conn'"),
    ("upstream-hash-by", "$binary_remote_addr", "$binary_remote_addr in '$binary_remote_addr' is"),
]


@pytest.mark.parametrize(("key", "value", "field", "expected"), GOOD)
def test_each_key_reads_ingress_nginx_format(
    key: str, value: str, field: str, expected: object
) -> None:
    settings, notes = read_settings({key: value})
    assert getattr(settings, field) == expected
    assert notes == []
    # nothing else moved
    assert replace(settings, **{field: getattr(DEFAULT_SETTINGS, field)}) == DEFAULT_SETTINGS


@pytest.mark.parametrize(("key", "value", "reason"), BAD)
def test_a_malformed_value_rejects_the_key_with_the_reason_and_keeps_the_default(
    key: str, value: str, reason: str
) -> None:
    # another key beside it, which applies
    other, other_value, other_field, meaning = GOOD[0] if key != GOOD[0][0] else GOOD[1]
    settings, notes = read_settings({key: value, other: other_value})
    assert settings == replace(DEFAULT_SETTINGS, **{other_field: meaning})
    ((said, warning),) = notes_for(notes, key)
    assert not warning
    assert reason in said
    assert said.endswith("the default is kept")


# the allow and deny lists: a malformed one is kept as written, and fails closed
PROTECTIONS_BAD: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "whitelist-source-range",
        "1.1.1.1, example.com",
        "'example.com' in '1.1.1.1, example.com' is not an IP address",
        ("1.1.1.1", "example.com"),
    ),
    (
        "denylist-source-range",
        "10.0.0.0/8,,300.1.1.1",
        "'300.1.1.1' in '10.0.0.0/8,,300.1.1.1' is not an IP address",
        ("10.0.0.0/8", "300.1.1.1"),
    ),
]


@pytest.mark.parametrize(("key", "value", "reason", "kept"), PROTECTIONS_BAD)
def test_a_malformed_allow_or_deny_list_is_kept_so_that_its_routes_fail_closed(
    key: str, value: str, reason: str, kept: tuple[str, ...]
) -> None:
    settings, notes = read_settings({key: value})
    assert getattr(settings, KEYS[key][1]) == kept
    ((said, warning),) = notes_for(notes, key)
    assert not warning
    assert reason in said
    assert f"every route without its own {key} annotation answers 503" in said


def test_the_tables_cover_every_key_read() -> None:
    """A key added to the table without a good and a bad value here fails this."""
    assert {key for key, *_ in GOOD} == set(KEYS)
    bad = {key for key, *_ in BAD} | {key for key, *_ in PROTECTIONS_BAD}
    assert bad | READ_WITH_ANNOTATIONS == set(KEYS)
    assert {field for _, _, field, _ in GOOD} | {"add_headers", "proxy_set_headers"} == {
        f.name for f in fields(Settings)
    }


def test_unknown_keys_are_warnings_and_change_nothing() -> None:
    settings, notes = read_settings(
        {"map-hash-bucket-size": "128", "proxy-body-szie": "8m", "hsts": "false"}
    )
    assert settings == replace(DEFAULT_SETTINGS, hsts=False)
    assert sorted(notes) == [
        ("map-hash-bucket-size", "not a ConfigMap key fastroute implements; ignored", True),
        ("proxy-body-szie", "not a ConfigMap key fastroute implements; ignored", True),
    ]


def test_old_tls_protocols_are_refused_and_the_rest_of_the_list_is_used() -> None:
    settings, notes = read_settings({"ssl-protocols": "TLSv1 TLSv1.1 TLSv1.2"})
    assert settings.ssl_protocols == ("TLSv1.2",)
    ((reason, warning),) = notes_for(notes, "ssl-protocols")
    assert warning
    assert "TLSv1, TLSv1.1 refused" in reason
    assert "serving TLSv1.2" in reason


def test_allowing_snippets_is_accepted_with_a_warning_that_they_never_run() -> None:
    settings, notes = read_settings({"allow-snippet-annotations": "true"})
    assert settings.allow_snippet_annotations
    ((reason, warning),) = notes_for(notes, "allow-snippet-annotations")
    assert warning
    assert "never executed" in reason


# ingress-nginx's documented defaults, as a ConfigMap would spell them out
INGRESS_NGINX_DEFAULTS = {
    "use-forwarded-headers": "false",
    "compute-full-forwarded-for": "false",
    "forwarded-for-header": "X-Forwarded-For",
    "proxy-real-ip-cidr": "0.0.0.0/0",
    "enable-real-ip": "false",
    "use-proxy-protocol": "false",
    "ssl-redirect": "true",
    "force-ssl-redirect": "false",
    "hsts": "true",
    "hsts-max-age": "31536000",
    "hsts-include-subdomains": "true",
    "hsts-preload": "false",
    "ssl-protocols": "TLSv1.2 TLSv1.3",
    "ssl-ciphers": (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"
    ),
    "limit-req-status-code": "503",
    "limit-conn-status-code": "503",
    "whitelist-source-range": "",
    "denylist-source-range": "",
    "custom-http-errors": "",
    "keep-alive": "75",
    "upstream-keepalive-connections": "320",
    "upstream-keepalive-timeout": "60",
    "allow-snippet-annotations": "false",
}
# the keys whose default is the controller's flag: ingress-nginx's value, flag
FLAG_DEFAULTS = {
    "proxy-body-size": ("1m", "max_body_size"),
    "proxy-connect-timeout": ("5", "connect_timeout"),
    "proxy-read-timeout": ("60", "upstream_timeout"),
}


def test_an_empty_configmap_means_ingress_nginx_defaults() -> None:
    """A ConfigMap that spells out ingress-nginx's documented defaults changes nothing."""
    empty, notes = read_settings({})
    assert notes == []
    assert empty == DEFAULT_SETTINGS
    spelt_out, notes = read_settings(INGRESS_NGINX_DEFAULTS)
    assert notes == []
    assert spelt_out == DEFAULT_SETTINGS
    assert DEFAULT_SETTINGS.hsts_value == "max-age=31536000; includeSubDomains"


def test_the_keys_a_flag_overlaps_default_to_the_flag_which_defaults_to_ingress_nginx() -> None:
    """proxy-body-size 1m, proxy-connect-timeout 5 s, proxy-read-timeout 60 s: unset in the
    settings, so the controller's flags apply, and their defaults are ingress-nginx's."""
    args = _parser().parse_args(["--manifests", "."])
    for key, (value, flag) in FLAG_DEFAULTS.items():
        field = KEYS[key][1]
        assert getattr(DEFAULT_SETTINGS, field) is None
        documented, _ = read_settings({key: value})
        assert getattr(documented, field) == getattr(args, flag), key


def test_defaults_given_are_the_value_of_the_keys_left_out() -> None:
    """The controller's flags: a key set wins, a key left out (or rejected) keeps them."""
    flags = replace(
        DEFAULT_SETTINGS, use_forwarded_headers=True, proxy_real_ip_cidr=("10.0.0.0/8",)
    )
    settings, _ = read_settings({"use-forwarded-headers": "false"}, defaults=flags)
    assert settings == replace(flags, use_forwarded_headers=False)
    settings, _ = read_settings({"proxy-real-ip-cidr": "nowhere"}, defaults=flags)
    assert settings == flags


def test_values_a_yaml_file_did_not_quote_are_read_as_written() -> None:
    obj = yaml.safe_load("data:\n  keep-alive: 30\n  hsts: false\n  proxy-body-size: 8m\n")
    settings, notes = read_settings(configmap_data(obj))
    assert notes == []
    assert (settings.keep_alive, settings.hsts, settings.proxy_body_size) == (30.0, False, 8 * MIB)


# -- add-headers and proxy-set-headers: headers from another ConfigMap --------------------


def lookup_in(*objects: Mapping[str, Any]) -> ConfigMapLookup:
    held = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in objects}

    def lookup(ref: str) -> Mapping[str, str] | None:
        found = held.get(ref)
        return None if found is None else configmap_data(found)

    return lookup


@pytest.mark.parametrize(
    ("key", "field"), [("add-headers", "add_headers"), ("proxy-set-headers", "proxy_set_headers")]
)
def test_a_header_configmap_gives_its_headers(key: str, field: str) -> None:
    headers = configmap(
        "ingress/headers", {"X-First": "Prepare for trouble!", "X-Second": "And make it double!"}
    )
    settings, notes = read_settings({key: "ingress/headers"}, lookup_in(headers))
    assert notes == []
    assert getattr(settings, field) == (
        ("X-First", "Prepare for trouble!"),
        ("X-Second", "And make it double!"),
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("headers", "expected a ConfigMap as namespace/name, got 'headers'"),
        (
            "ingress/headers/extra",
            "expected a ConfigMap as namespace/name, got 'ingress/headers/extra'",
        ),
        ("ingress/absent", "ConfigMap ingress/absent not found; no headers are set"),
    ],
)
def test_a_header_configmap_that_cannot_be_found_is_rejected(value: str, reason: str) -> None:
    headers = configmap("ingress/headers", {"X-A": "a"})
    settings, notes = read_settings({"add-headers": value}, lookup_in(headers))
    assert settings.add_headers == ()
    assert notes == [("add-headers", reason, False)]


def test_headers_that_would_break_the_message_are_left_out_with_the_reason() -> None:
    headers = configmap(
        "ingress/headers",
        {
            "X-Fine": "yes",
            "X-Split": "a\r\nSet-Cookie: stolen=1",
            "X-Newline": "a\nb",
            "X-Bell": "a\x07b",
            "Bad Name": "x",
            "Content-Length": "0",
            "Transfer-Encoding": "chunked",
            "Host": "elsewhere.example.com",
            "X-Request-Start": "t=${msec}",
        },
    )
    settings, notes = read_settings({"proxy-set-headers": "ingress/headers"}, lookup_in(headers))
    assert settings.proxy_set_headers == (("X-Fine", "yes"), ("X-Request-Start", "t=${msec}"))
    said = {reason for _, reason, warning in notes if not warning}
    assert len(said) == 7
    assert (
        "ConfigMap ingress/headers: header 'X-Split': 'a\\r\\nSet-Cookie: stolen=1' is not a "
        "header value: it holds a control character (CR, LF, NUL...); that header is not set"
    ) in said
    assert any("header 'X-Newline': 'a\\nb' is not a header value" in r for r in said)
    assert any("header 'X-Bell': 'a\\x07b' is not a header value" in r for r in said)
    assert any("ConfigMap ingress/headers: 'Bad Name' is not a header name" in r for r in said)
    for framing in ("Content-Length", "Transfer-Encoding", "Host"):
        assert any(f"{framing!r} frames or routes the message" in r for r in said), framing
    warned = [reason for _, reason, warning in notes if warning]
    assert len(warned) == 1
    assert "nginx variables" in warned[0]
    assert "not expanded" in warned[0]


# -- the builder -------------------------------------------------------------------------


def site_objects_with(*extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*site_objects(8080), ingress("other", "other.example.com"), *map(dict, extra)]


def target(config: RouteConfig, host: str) -> Any:
    found = config.router.match(host, "/")
    assert found is not None, host
    return found


def test_the_settings_reach_the_config_and_every_route_is_read_with_them() -> None:
    builder = ConfigBuilder(configmap=CONTROLLER_CONFIGMAP)
    for obj in site_objects_with(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "8m"})):
        builder.put(obj)
    first = builder.build()
    assert first.settings.proxy_body_size == 8 * MIB
    assert target(first, HOST).policy.max_body_bytes == 8 * MIB

    builder.put(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "2m", "hsts": "false"}))
    second = builder.build()
    assert second.settings == replace(DEFAULT_SETTINGS, proxy_body_size=2 * MIB, hsts=False)
    for host in (HOST, "other.example.com"):
        assert target(second, host).policy.max_body_bytes == 2 * MIB
    assert target(first, HOST).policy.max_body_bytes == 8 * MIB  # in-flight requests' config

    builder.delete(configmap(CONTROLLER_CONFIGMAP, {}))
    third = builder.build()
    assert third.settings == DEFAULT_SETTINGS
    assert target(third, HOST).policy.max_body_bytes is None
    assert [(p.kind, p.name, p.warning) for p in third.problems] == [
        ("ConfigMap", CONTROLLER_CONFIGMAP, True)
    ]
    assert "not found" in third.problems[0].reason


def test_unrelated_configmaps_and_unchanged_settings_read_nothing_again() -> None:
    builder = ConfigBuilder(configmap=CONTROLLER_CONFIGMAP)
    for obj in site_objects_with(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "8m"})):
        builder.put(obj)
    first = builder.build()
    builder.put(configmap("default/unrelated", {"anything": "at all"}))
    assert not builder.reads_configmap("default/unrelated")
    # the same settings, written differently: nothing to read again either
    builder.put(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "8192k"}))
    second = builder.build()
    assert second.settings == first.settings
    for host in (HOST, "other.example.com"):
        assert target(second, host) is target(first, host)


def test_a_malformed_configmap_allow_list_refuses_the_routes_it_would_protect() -> None:
    """Fail closed: a broken whitelist-source-range must not open every route to everyone;
    an Ingress with its own allow list is not affected."""
    own = ingress(
        "own",
        "own.example.com",
        {"nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8"},
    )
    config = build_config(
        [
            *site_objects(8080),
            own,
            configmap(CONTROLLER_CONFIGMAP, {"whitelist-source-range": "10.0.0.0/8, intranet"}),
        ],
        configmap=CONTROLLER_CONFIGMAP,
    )
    assert "whitelist-source-range" in target(config, HOST).policy.refused
    assert target(config, "own.example.com").policy.refused == ""
    (problem,) = config.rejected()
    assert (problem.kind, problem.field) == ("ConfigMap", "data[whitelist-source-range]")


def test_a_bad_key_is_a_configmap_problem_and_the_rest_applies() -> None:
    config = build_config(
        [
            *site_objects(8080),
            configmap(
                CONTROLLER_CONFIGMAP,
                {"proxy-body-size": "lots", "hsts-max-age": "600", "gzip-level": "5"},
            ),
        ],
        configmap=CONTROLLER_CONFIGMAP,
    )
    assert config.settings == replace(DEFAULT_SETTINGS, hsts_max_age=600)
    assert [(p.kind, p.name, p.field, p.warning) for p in config.problems] == [
        ("ConfigMap", CONTROLLER_CONFIGMAP, "data[gzip-level]", True),
        ("ConfigMap", CONTROLLER_CONFIGMAP, "data[proxy-body-size]", False),
    ]
    assert "expected a size" in config.rejected()[0].reason
    assert "rejected: ConfigMap ingress/controller data[proxy-body-size]: " in str(
        config.rejected()[0]
    )
    assert config.ingresses == ("default/site",)


def test_a_header_configmap_change_reads_the_settings_again() -> None:
    builder = ConfigBuilder(configmap=CONTROLLER_CONFIGMAP)
    for obj in [
        *site_objects(8080),
        configmap(CONTROLLER_CONFIGMAP, {"add-headers": "ingress/headers"}),
    ]:
        builder.put(obj)
    missing = builder.build()
    assert missing.settings.add_headers == ()
    assert [p.reason for p in missing.rejected()] == [
        "ConfigMap ingress/headers not found; no headers are set"
    ]
    assert builder.reads_configmap("ingress/headers")

    builder.put(configmap("ingress/headers", {"X-Served-By": "fastroute"}))
    found = builder.build()
    assert found.settings.add_headers == (("X-Served-By", "fastroute"),)
    assert found.problems == ()

    builder.put(configmap("ingress/headers", {"X-Served-By": "fastroute", "X-Zone": "a"}))
    assert builder.build().settings.add_headers == (("X-Served-By", "fastroute"), ("X-Zone", "a"))


def test_an_ingress_naming_a_configmap_is_read_again_when_it_changes() -> None:
    builder = ConfigBuilder()
    for obj in [
        *site_objects(8080),
        ingress("named", "named.example.com", {"fastroute.io/custom-headers": "custom"}),
    ]:
        builder.put(obj)
    before = builder.build()
    assert target(before, "named.example.com").policy.response_headers == ()
    assert builder.reads_configmap("default/custom")

    builder.put(configmap("default/custom", {"X-Team": "blue"}))
    after = builder.build()
    assert target(after, "named.example.com").policy.response_headers == (("X-Team", "blue"),)
    assert target(after, HOST) is target(before, HOST)  # it names no ConfigMap

    # once the Ingress names it no more, or is gone, the ConfigMap's changes are nobody's
    builder.put(ingress("named", "named.example.com"))
    builder.build()
    assert not builder.reads_configmap("default/custom")
    named = ingress("named", "named.example.com", {"fastroute.io/custom-headers": "custom"})
    builder.put(named)
    builder.build()
    assert builder.reads_configmap("default/custom")
    builder.delete(named)
    builder.build()
    assert not builder.reads_configmap("default/custom")


def test_incremental_builds_equal_a_full_translation_after_configmap_changes() -> None:
    objects: dict[str, dict[str, Any]] = {}
    builder = ConfigBuilder(configmap=CONTROLLER_CONFIGMAP)

    def put(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        objects[f"{obj['kind']}/{meta.get('namespace', 'default')}/{meta['name']}"] = obj
        builder.put(obj)

    def summary(config: RouteConfig) -> tuple[Any, ...]:
        hosts = (HOST, "other.example.com", "named.example.com")
        routes = tuple((h, config.router.match(h, "/")) for h in hosts)
        return config.settings, routes, config.problems

    for obj in site_objects_with(
        ingress("named", "named.example.com", {"fastroute.io/custom-headers": "default/custom"})
    ):
        put(obj)
    steps = [
        configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "8m", "add-headers": "ingress/h"}),
        configmap("ingress/h", {"X-A": "1"}),
        configmap("default/custom", {"X-B": "2"}),
        configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "bad", "add-headers": "ingress/h"}),
        configmap("ingress/h", {"X-A": "1\n2"}),
        configmap("default/custom", {"X-B": "3"}),
    ]
    for step in steps:
        put(step)
        assert summary(builder.build()) == summary(
            build_config(objects.values(), configmap=CONTROLLER_CONFIGMAP)
        )


# -- the controller ----------------------------------------------------------------------


@pytest.mark.e2e
def test_the_command_line_takes_a_configmap_as_namespace_and_name() -> None:
    result = run_controller("--manifests", ".", "--configmap", "controller")
    assert result.returncode == 2
    assert "a ConfigMap is named NAMESPACE/NAME, got 'controller'" in result.stderr
    result = run_controller("--manifests", ".", "--configmap", "Bad_NS/controller")
    assert result.returncode == 2
    assert "not a namespace name: 'Bad_NS'" in result.stderr


def test_trusted_proxies_are_the_forwarded_header_keys_unless_the_configmap_sets_them(
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "site.yaml"
    options = Options(
        manifests=[tmp_path], trusted_proxies=["10.0.0.0/8"], configmap=CONTROLLER_CONFIGMAP
    )
    manifest.write_text(yaml.safe_dump_all(site_objects(8080)))
    config = Controller(options).manifest_source().read().config
    assert config is not None
    assert config.settings.use_forwarded_headers
    assert config.settings.proxy_real_ip_cidr == ("10.0.0.0/8",)

    cm = configmap(CONTROLLER_CONFIGMAP, {"proxy-real-ip-cidr": "192.168.0.0/16"})
    manifest.write_text(yaml.safe_dump_all([*site_objects(8080), cm]))
    config = Controller(options).manifest_source().read().config
    assert config is not None
    assert config.settings.use_forwarded_headers  # the flag: the key is not set
    assert config.settings.proxy_real_ip_cidr == ("192.168.0.0/16",)  # the key wins


@pytest.mark.e2e
def test_the_default_body_limit_is_ingress_nginx_1m(tmp_path: Path) -> None:
    """Uploads ingress-nginx refused (proxy-body-size 1m) are refused with no flag given."""

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            (tmp_path / "site.yaml").write_text(yaml.safe_dump_all(site_objects(backend_port)))
            args = _parser().parse_args(["--manifests", str(tmp_path), "--no-watch"])
            options = replace(
                _options(args, args.manifests), bind="127.0.0.1", http_port=0, https_port=0
            )
            listening = await nursery.start(Controller(options).run)

            def post(size: int) -> int:
                with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                    url = f"http://127.0.0.1:{listening.http_port}/upload"
                    response = client.post(url, headers={"host": HOST}, content=b"x" * size)
                    return response.status_code

            assert await trio.to_thread.run_sync(post, MIB) == 200
            assert await trio.to_thread.run_sync(post, MIB + 1) == 413
            nursery.cancel_scope.cancel()

    trio.run(scenario)


@pytest.mark.e2e
def test_the_configmap_body_limit_wins_over_the_flag_and_0_lifts_it(tmp_path: Path) -> None:
    """proxy-body-size from the ConfigMap reaches every route: over it, 413; "0" lifts the
    limit, the flag's 1m included."""
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(
        yaml.safe_dump(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "2k"}))
    )

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            backend_port = await nursery.start(Echo("web").serve)
            (tmp_path / "site.yaml").write_text(yaml.safe_dump_all(site_objects(backend_port)))
            args = _parser().parse_args(
                ["--manifests", str(tmp_path), "--no-watch", "--configmap", CONTROLLER_CONFIGMAP]
            )
            options = replace(
                _options(args, args.manifests), bind="127.0.0.1", http_port=0, https_port=0
            )
            controller = Controller(options)
            listening = await nursery.start(controller.run)

            def post(size: int) -> int:
                with httpx.Client(trust_env=False, timeout=DEADLINE) as client:
                    url = f"http://127.0.0.1:{listening.http_port}/upload"
                    response = client.post(url, headers={"host": HOST}, content=b"x" * size)
                    return response.status_code

            assert await trio.to_thread.run_sync(post, 2048) == 200
            assert await trio.to_thread.run_sync(post, 2049) == 413

            settings_file.write_text(
                yaml.safe_dump(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "0"}))
            )
            assert await controller.reload()
            assert await trio.to_thread.run_sync(post, 2 * MIB) == 200
            nursery.cancel_scope.cancel()

    trio.run(scenario)


@pytest.mark.e2e
def test_the_controller_on_manifests_follows_its_configmap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastroute.controller")
    site = tmp_path / "site.yaml"
    settings_file = tmp_path / "settings.yaml"
    site.write_text(yaml.safe_dump_all(site_objects(8080)))
    settings_file.write_text(
        yaml.safe_dump(configmap(CONTROLLER_CONFIGMAP, {"proxy-read-timeout": "600"}))
    )

    async def settings_become(controller: Controller, wanted: Settings) -> None:
        with trio.fail_after(DEADLINE):
            while controller.proxy.config is None or controller.proxy.config.settings != wanted:
                await trio.sleep(0.05)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            controller = Controller(
                Options(
                    manifests=[tmp_path],
                    bind="127.0.0.1",
                    http_port=0,
                    https_port=0,
                    configmap=CONTROLLER_CONFIGMAP,
                    watch=False,  # reloads come from here (the file watch has its own tests)
                )
            )
            await nursery.start(controller.run)
            await settings_become(controller, replace(DEFAULT_SETTINGS, proxy_read_timeout=600.0))

            settings_file.write_text(
                yaml.safe_dump(
                    configmap(
                        CONTROLLER_CONFIGMAP, {"proxy-read-timeout": "30", "keep-alive": "never"}
                    )
                )
            )
            assert await controller.reload()
            await settings_become(controller, replace(DEFAULT_SETTINGS, proxy_read_timeout=30.0))
            nursery.cancel_scope.cancel()

    trio.run(scenario)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "rejected: ConfigMap ingress/controller data[keep-alive]: expected a time" in m
        for m in logged
    ), logged


@pytest.mark.e2e
def test_the_controller_on_the_api_follows_its_configmap_and_reports_bad_keys(
    kubeapi: KubeAPI, tmp_path: Path
) -> None:
    api = kubeapi
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress"}})
    api.create(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "8m"}))
    publish = PublishOptions(election_id="fastroute-leader", namespace="ingress", pod_name="pod-a")

    async def scenario() -> None:
        async with backends("a") as ports:
            site(api, ports["a"])
            kubeconfig = plain_kubeconfig(api, tmp_path)
            async with running(
                kubeconfig, ports, configmap=CONTROLLER_CONFIGMAP, publish=publish
            ) as run:
                controller = run.controller

                def settings() -> Settings | None:
                    config = controller.proxy.config
                    return None if config is None else config.settings

                async def settings_are(wanted: Settings) -> bool:
                    return settings() == wanted

                await wait_for(
                    lambda: settings_are(replace(DEFAULT_SETTINGS, proxy_body_size=8 * MIB)),
                    "the ConfigMap's proxy-body-size",
                )

                api.update(
                    configmap(
                        CONTROLLER_CONFIGMAP,
                        {"proxy-body-size": "2m", "add-headers": "ingress/headers"},
                    )
                )
                api.create(configmap("ingress/headers", {"X-Served-By": "fastroute"}))
                await wait_for(
                    lambda: settings_are(
                        replace(
                            DEFAULT_SETTINGS,
                            proxy_body_size=2 * MIB,
                            add_headers=(("X-Served-By", "fastroute"),),
                        )
                    ),
                    "the changed ConfigMap and the headers it names",
                )

                # a ConfigMap nothing reads: cached, and no rebuild for it
                source = controller.source
                assert isinstance(source, KubeSource)
                rebuilds = controller.reloads
                api.create(configmap("default/unrelated", {"x": "y"}))

                async def cached() -> bool:
                    return any(
                        r.cache.get(("default", "unrelated")) is not None
                        for r in source.reflectors
                        if r.cache.kind == "ConfigMap"
                    )

                await wait_for(cached, "the unrelated ConfigMap reaches the cache")
                assert not source.pending
                assert controller.reloads == rebuilds

                # a bad value: the key keeps its default, and a Warning Event says why
                api.update(configmap(CONTROLLER_CONFIGMAP, {"proxy-body-size": "huge"}))
                await wait_for(lambda: settings_are(DEFAULT_SETTINGS), "the rejected key")

                async def event_posted() -> bool:
                    return any(
                        e["involvedObject"]["kind"] == "ConfigMap"
                        and e["involvedObject"]["name"] == "controller"
                        for e in api.list("Event", namespace="ingress")
                    )

                await wait_for(event_posted, "a Warning Event on the ConfigMap")

    trio.run(scenario)
    (event,) = [
        e
        for e in api.list("Event", namespace="ingress")
        if e["involvedObject"]["kind"] == "ConfigMap"
    ]
    assert event["type"] == "Warning"
    assert event["reason"] == "Rejected"
    assert event["involvedObject"]["apiVersion"] == "v1"
    assert event["message"].startswith("data[proxy-body-size]: expected a size such as")
