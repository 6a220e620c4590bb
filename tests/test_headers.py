"""Headers across the proxy: hop-by-hop removal, X-Forwarded-* trust, upgrades."""

from __future__ import annotations

import pytest

from fastroute.proxy.headers import (
    IDENTITY,
    Client,
    TrustedProxies,
    request_headers,
    response_headers,
    websocket_upgrade,
)

CLIENT = Client(address="203.0.113.9", scheme="https", port=443)
NOBODY = TrustedProxies()


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n for n, _ in headers]


def value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    values = [v for n, v in headers if n == name]
    assert len(values) <= 1, f"{name!r} appears {len(values)} times"
    return values[0] if values else None


def test_hop_by_hop_headers_and_those_connection_names_are_dropped() -> None:
    incoming = [
        (b"host", b"shop.example.com"),
        (b"connection", b"keep-alive, X-Secret-Hop"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret-hop", b"1"),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"proxy-authorization", b"Basic Zm9vOmJhcg=="),
        (b"upgrade", b"websocket"),
        (b"accept", b"*/*"),
    ]
    out = request_headers(incoming, CLIENT, NOBODY)
    assert b"accept" in names(out)
    assert value(out, b"host") == b"shop.example.com"
    for hop in (b"connection", b"keep-alive", b"x-secret-hop", b"te", b"transfer-encoding"):
        assert hop not in names(out), hop
    assert b"proxy-authorization" not in names(out)
    assert b"upgrade" not in names(out)  # an upgrade continues only when the proxy says so


def test_forwarded_headers_from_an_untrusted_client_are_replaced() -> None:
    spoofed = [
        (b"host", b"a.example.com:8443"),
        (b"x-forwarded-for", b"10.9.9.9"),
        (b"x-forwarded-proto", b"http"),
        (b"x-real-ip", b"10.9.9.9"),
    ]
    out = request_headers(spoofed, CLIENT, NOBODY)
    assert value(out, b"x-forwarded-for") == b"203.0.113.9"
    assert value(out, b"x-real-ip") == b"203.0.113.9"
    assert value(out, b"x-forwarded-proto") == b"https"
    assert value(out, b"x-forwarded-host") == b"a.example.com:8443"
    assert value(out, b"x-forwarded-port") == b"443"


def test_a_trusted_proxy_chain_is_extended_and_its_values_kept() -> None:
    balancer = Client(address="10.0.0.5", scheme="http", port=80)
    trusted = TrustedProxies(["10.0.0.0/8"])
    incoming = [
        (b"host", b"a.example.com"),
        (b"x-forwarded-for", b"198.51.100.1, 192.0.2.4"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-port", b"443"),
        (b"x-real-ip", b"198.51.100.1"),
    ]
    out = request_headers(incoming, balancer, trusted)
    assert value(out, b"x-forwarded-for") == b"198.51.100.1, 192.0.2.4, 10.0.0.5"
    assert value(out, b"x-forwarded-proto") == b"https"
    assert value(out, b"x-forwarded-port") == b"443"
    assert value(out, b"x-real-ip") == b"198.51.100.1"
    assert value(out, b"x-forwarded-host") == b"a.example.com"  # not sent: set from Host


def test_several_forwarded_for_headers_from_a_trusted_proxy_are_joined_in_order() -> None:
    trusted = TrustedProxies(["10.0.0.5"])
    incoming = [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")]
    out = request_headers(incoming, Client("10.0.0.5", "http", 80), trusted)
    assert value(out, b"x-forwarded-for") == b"1.1.1.1, 2.2.2.2, 10.0.0.5"


def test_upgrade_is_forwarded_when_the_proxy_tunnels_it() -> None:
    incoming = [
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"k"),
    ]
    out = request_headers(incoming, CLIENT, NOBODY, upgrade=b"websocket")
    assert value(out, b"connection") == b"upgrade"
    assert value(out, b"upgrade") == b"websocket"
    assert value(out, b"sec-websocket-key") == b"k"


def test_response_hop_by_hop_headers_are_dropped_except_for_a_switch() -> None:
    upstream = [
        (b"connection", b"close, x-internal"),
        (b"x-internal", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"content-type", b"text/plain"),
    ]
    assert names(response_headers(upstream)) == [b"content-type"]
    switching = [
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-accept", b"x"),
    ]
    assert names(response_headers(switching, upgraded=True)) == [
        b"connection",
        b"upgrade",
        b"sec-websocket-accept",
    ]


@pytest.mark.parametrize(
    ("networks", "address", "trusted"),
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "11.1.2.3", False),
        (["192.0.2.7"], "192.0.2.7", True),
        (["2001:db8::/32"], "2001:db8::1", True),
        (["2001:db8::/32"], "not-an-ip", False),
        ([], "10.1.2.3", False),
    ],
)
def test_trusted_proxies(networks: list[str], address: str, trusted: bool) -> None:
    assert TrustedProxies(networks).trusts(address) is trusted


def test_a_malformed_trusted_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP address or network"):
        TrustedProxies(["10.0.0.0/33"])


def test_underscore_names_never_reach_the_upstream_even_from_a_trusted_proxy() -> None:
    # nginx's underscores_in_headers off: X_Forwarded_For reads as X-Forwarded-For to a
    # backend that maps "_" and "-" alike (CGI, PHP, WSGI).
    incoming = [(b"host", b"a.example"), (b"x_forwarded_for", b"10.9.9.9"), (b"x-ok", b"1")]
    for peers in (NOBODY, TrustedProxies([CLIENT.address])):
        out = request_headers(incoming, CLIENT, peers)
        assert b"x_forwarded_for" not in names(out)
        assert value(out, b"x-ok") == b"1"
    assert names(response_headers([(b"x_backend", b"1")])) == [b"x_backend"]


@pytest.mark.parametrize("name", sorted(IDENTITY))
def test_identity_headers_pass_from_a_trusted_proxy_only(name: bytes) -> None:
    incoming = [(b"host", b"a.example"), (b"connection", name), (name, b"SUCCESS")]
    assert name not in names(request_headers(incoming, CLIENT, NOBODY))
    trusted = TrustedProxies([CLIENT.address])
    assert value(request_headers(incoming, CLIENT, trusted), name) == b"SUCCESS"


def test_an_absolute_form_target_overrides_the_host() -> None:
    incoming = [(b"host", b"site.example.com"), (b"accept", b"*/*")]
    out = request_headers(incoming, CLIENT, NOBODY, host=b"admin.example.com", override_host=True)
    assert out[0] == (b"host", b"admin.example.com")
    assert value(out, b"host") == b"admin.example.com"
    assert value(out, b"x-forwarded-host") == b"admin.example.com"


@pytest.mark.parametrize(
    ("upgrades", "websocket"),
    [
        ([b"websocket"], True),
        ([b"WebSocket, websocket"], True),
        ([b"websocket", b"websocket"], True),
        ([b"h2c"], False),
        ([b"websocket", b"h2c"], False),
        ([b"websocket, TLS/1.0"], False),
        ([b""], False),
        ([], False),
    ],
)
def test_only_websocket_upgrades_are_passed_on(upgrades: list[bytes], websocket: bool) -> None:
    headers = [(b"connection", b"keep-alive, Upgrade"), *((b"upgrade", u) for u in upgrades)]
    assert websocket_upgrade(headers) is websocket
    assert not websocket_upgrade([(b"upgrade", b"websocket")])  # no Connection: upgrade
