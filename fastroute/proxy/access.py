"""Who may send requests to a route: ``denylist-source-range`` and ``whitelist-source-range``.

ingress-nginx writes a route's lists as nginx ``deny`` rules, then ``allow`` rules, then
``deny all`` when there is an allowlist; nginx takes the first rule that matches. So:

* an address in the denylist is refused, even when the allowlist holds it too;
* with an allowlist, only the addresses in it are let in (an IPv6 client is refused by a
  list of IPv4 networks alone);
* with a denylist alone, everyone else is let in.

An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports for an
IPv4 peer) is judged as the IPv4 address it carries, as nginx does. An address that does
not parse is refused whenever a list applies: these lists are protections, so they fail
closed.

Fast for the short lists Ingresses carry: the client's address is parsed once (and a
bounded cache remembers the latest ones), and each network is compiled once, on first use,
into an integer and a mask. No I/O.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network

from fastroute.ingress.model import Networks
from fastroute.proxy.memo import ByIdentity

__all__ = ["Lists", "allowed", "within"]

# (IPv6?, the address as an integer), or None when it does not parse
Parsed = tuple[bool, int] | None
# (IPv4 rules, IPv6 rules), each (network, mask) as integers
Rules = tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]

_CACHE_SIZE = 4096  # entries in each cache below; emptied when full, so memory stays bounded
_addresses: dict[str, Parsed] = {}
_MAPPED = 0xFFFF  # the top 96 bits of an IPv4-mapped IPv6 address


def _parse(address: str) -> Parsed:
    try:
        if ":" in address:
            # a link-local address may carry its interface ("fe80::1%eth0"): not part of it
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address.partition("%")[0]))
            if value >> 32 == _MAPPED:
                return (False, value & 0xFFFFFFFF)
            return (True, value)
        return (False, int.from_bytes(socket.inet_pton(socket.AF_INET, address)))
    except (OSError, ValueError):
        return None


def _parsed(address: str) -> Parsed:
    try:
        return _addresses[address]
    except KeyError:
        pass
    if len(_addresses) >= _CACHE_SIZE:
        _addresses.clear()
    parsed = _addresses[address] = _parse(address)
    return parsed


def _compile(networks: Networks) -> Rules:
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    for network in networks:
        rule = (int(network.network_address), int(network.netmask))
        (v4 if isinstance(network, IPv4Network) else v6).append(rule)
    return (tuple(v4), tuple(v6))


_rules: ByIdentity[Networks, Rules] = ByIdentity(_compile, size=_CACHE_SIZE)


def _holds(networks: Networks, parsed: tuple[bool, int]) -> bool:
    return _matches(_rules(networks), parsed)


def _matches(rules: Rules, parsed: tuple[bool, int]) -> bool:
    ipv6, value = parsed
    # a plain loop: any() would build a generator on every request
    for network, mask in rules[ipv6]:  # noqa: SIM110
        if value & mask == network:
            return True
    return False


class Lists:
    """A route's allow and deny lists, compiled once: ``permits`` is ``allowed`` without
    looking the lists up again on every request."""

    __slots__ = ("_allow", "_deny")

    def __init__(self, allow: Networks | None, deny: Networks) -> None:
        self._allow = _compile(allow) if allow is not None else None
        self._deny = _compile(deny) if deny else None

    def permits(self, address: str) -> bool:
        """``allowed(address, allow, deny)``."""
        if self._allow is None and self._deny is None:
            return True
        parsed = _parsed(address)
        if parsed is None:
            return False
        if self._deny is not None and _matches(self._deny, parsed):
            return False
        return self._allow is None or _matches(self._allow, parsed)


def within(address: str, networks: Networks) -> bool:
    """Whether ``address`` (an IP address as text) is in one of ``networks``.

    An address that does not parse is in none.
    """
    if not networks:
        return False
    parsed = _parsed(address)
    return parsed is not None and _holds(networks, parsed)


def allowed(address: str, allow: Networks | None, deny: Networks) -> bool:
    """Whether a client at ``address`` may use a route with these lists (else 403).

    Args:
        address: the client's real address (after PROXY protocol and trusted
            ``X-Forwarded-For``), e.g. ``"192.0.2.1"`` or ``"2001:db8::1"``.
        allow: the allowlist, or None when the route has none (everyone but the denied).
        deny: the denylist; it wins over the allowlist.
    """
    if allow is None and not deny:
        return True
    parsed = _parsed(address)
    if parsed is None:
        return False
    if deny and _holds(deny, parsed):
        return False
    return allow is None or _holds(allow, parsed)
