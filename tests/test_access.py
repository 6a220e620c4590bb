"""Allow and deny source ranges: who gets the route and who gets 403, as ingress-nginx decides.

The cases follow ingress-nginx's own e2e tests (ipdenylist.go, ipallowlist.go) and its
template's rule order: deny rules, then allow rules, then ``deny all`` with an allowlist.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastroute.ingress.model import Networks
from fastroute.proxy.access import Lists, allowed, within


def nets(*cidrs: str) -> Networks:
    return tuple(ip_network(c, strict=False) for c in cidrs)


DENY_ONLY = nets("18.0.0.0/8", "56.0.0.1")
BOTH_DENY = nets("18.1.0.0/16", "56.0.0.0/8")
BOTH_ALLOW = nets("18.0.0.0/8", "55.0.0.0/8")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("18.0.0.1", False),  # in a denied range
        ("56.0.0.1", False),  # the denied address
        ("56.0.0.2", True),  # everyone else gets in
        ("2001:db8::1", True),
    ],
)
def test_a_denylist_alone_refuses_only_what_it_lists(address: str, expected: bool) -> None:
    assert allowed(address, None, DENY_ONLY) is expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("18.1.0.1", False),  # denied, though the allowlist holds it too: deny wins
        ("10.10.10.10", False),  # in neither: the allowlist's "deny all"
        ("18.4.0.1", True),
        ("55.55.55.55", True),
        ("56.1.1.1", False),
    ],
)
def test_deny_is_checked_before_allow(address: str, expected: bool) -> None:
    assert allowed(address, BOTH_ALLOW, BOTH_DENY) is expected


def test_an_allowlist_alone_lets_in_only_what_it_lists() -> None:
    allow = nets("192.0.2.0/24", "2001:db8:1::/48")
    assert allowed("192.0.2.200", allow, ())
    assert allowed("2001:db8:1:ffff::7", allow, ())
    assert not allowed("192.0.3.1", allow, ())
    assert not allowed("2001:db8:2::1", allow, ())


def test_an_ipv6_client_is_refused_by_an_ipv4_only_allowlist() -> None:
    assert not allowed("2001:db8::1", nets("0.0.0.0/0"), ())


def test_an_ipv6_denylist_does_not_touch_ipv4_clients() -> None:
    assert allowed("10.0.0.1", None, nets("::/0"))
    assert not allowed("2001:db8::1", None, nets("::/0"))


def test_an_ipv4_mapped_address_is_judged_as_its_ipv4_address() -> None:
    allow = nets("192.0.2.0/24")
    assert allowed("::ffff:192.0.2.9", allow, ())
    assert not allowed("::ffff:198.51.100.9", allow, ())
    assert not allowed("::ffff:192.0.2.9", None, nets("192.0.2.9/32"))


def test_a_single_address_entry_matches_only_that_address() -> None:
    allow = nets("203.0.113.5", "2001:db8::5")
    assert allowed("203.0.113.5", allow, ())
    assert not allowed("203.0.113.6", allow, ())
    assert allowed("2001:db8::5", allow, ())
    assert allowed("2001:0db8:0000::0005", allow, ())  # another spelling of the same address
    assert not allowed("2001:db8::6", allow, ())


def test_a_link_local_address_with_its_interface_is_judged_by_its_address() -> None:
    assert allowed("fe80::1%eth0", nets("fe80::/10"), ())
    assert not allowed("fe80::1%eth0", None, nets("fe80::/10"))


@pytest.mark.parametrize("address", ["", "not-an-ip", "10.0.0", "10.0.0.256", "::g", "1.2.3.4\0"])
def test_an_address_that_does_not_parse_is_refused_when_a_list_applies(address: str) -> None:
    assert not allowed(address, nets("0.0.0.0/0", "::/0"), ())
    assert not allowed(address, None, nets("10.0.0.0/8"))
    assert allowed(address, None, ())  # no list: nothing to judge
    assert not within(address, nets("0.0.0.0/0", "::/0"))


def test_an_empty_allowlist_lets_nobody_in() -> None:
    assert not allowed("10.0.0.1", (), ())


def test_a_new_list_with_other_networks_is_judged_by_its_own_networks() -> None:
    for third in range(40):
        allow = nets(f"10.{third}.0.0/16")
        assert allowed(f"10.{third}.1.1", allow, ())
        assert not allowed(f"10.{third + 1}.1.1", allow, ())


def test_more_addresses_than_the_cache_holds_are_still_judged_right() -> None:
    allow = nets("10.0.0.0/9")
    for i in range(10_000):
        address = str(IPv4Address((10 << 24) + i * 1000))
        assert allowed(address, allow, ()) is (i * 1000 < 1 << 23)


ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(IPv6Address)
v4_networks = st.tuples(ipv4, st.integers(0, 32)).map(
    lambda p: ip_network(f"{p[0]}/{p[1]}", strict=False)
)
v6_networks = st.tuples(ipv6, st.integers(0, 128)).map(
    lambda p: ip_network(f"{p[0]}/{p[1]}", strict=False)
)
networks = st.lists(v4_networks | v6_networks, max_size=5).map(tuple)


def reference(address: str, allow: Networks | None, deny: Networks) -> bool:
    """nginx's rules, first match wins, with the ipaddress module's containment."""
    ip = ip_address(address)
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in n for n in deny if n.version == ip.version):
        return False
    return allow is None or any(ip in n for n in allow if n.version == ip.version)


@given(address=ipv4 | ipv6, allow=st.none() | networks, deny=networks)
def test_allowed_agrees_with_first_match_rules(
    address: IPv4Address | IPv6Address, allow: Networks | None, deny: Networks
) -> None:
    assert allowed(str(address), allow, deny) is reference(str(address), allow, deny)


@given(address=ipv4, network=v4_networks)
def test_a_mapped_address_gets_what_its_ipv4_address_gets(
    address: IPv4Address, network: IPv4Network
) -> None:
    mapped = f"::ffff:{address}"
    assert allowed(mapped, (network,), ()) is allowed(str(address), (network,), ())


@given(
    address=(ipv4 | ipv6).map(str) | st.sampled_from(["", "not-an-ip"]),
    allow=st.none() | networks,
    deny=networks,
)
def test_a_routes_compiled_lists_judge_as_allowed_does(
    address: str, allow: Networks | None, deny: Networks
) -> None:
    # decide compiles a route's lists once (Lists); the answer must not change
    assert Lists(allow, deny).permits(address) == allowed(address, allow, deny)
