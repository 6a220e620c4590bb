"""Who the client is behind trusted proxies: the ConfigMap's ``use-forwarded-headers``,
``enable-real-ip``, ``forwarded-for-header``, ``compute-full-forwarded-for`` and
``proxy-real-ip-cidr``, as ingress-nginx reads them.

nginx's realip module with ``real_ip_recursive on``: when the peer is in
``proxy-real-ip-cidr``, the header ``forwarded-for-header`` names holds a chain of
addresses, the nearest last. The client is the rightmost address not in those networks
(every proxy on the way being trusted), or the leftmost when all are. An entry that is
not an address ends the walk at the last good one: nothing left of it can be believed.

That address is what allow and deny lists and rate limits judge, and what ``X-Real-IP``
says. ``use-forwarded-headers`` also believes the peer's ``X-Forwarded-Proto``,
``-Host`` and ``-Port``; ``enable-real-ip`` only the address. Upstream,
``X-Forwarded-For`` is the real client's address, or, with
``compute-full-forwarded-for``, the peer's chain with the peer appended.

The networks are parsed once per ``Settings`` object (``ClientTrust.of``), never per request.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastroute.ingress.settings import Settings

__all__ = ["ClientTrust", "Identity"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Identity(NamedTuple):
    """What one request says about its client, as ``forward_head`` takes it."""

    address: str  # the real client: what decide judges
    client_ip: bytes  # X-Forwarded-For's own entry (the peer when the chain is kept)
    trusted: bool  # believe the peer's X-Forwarded-Proto/-Host/-Port and identity fields
    chain: bool  # keep the peer's X-Forwarded-For chain before ``client_ip``
    real_ip: bytes  # X-Real-IP: the real client


class ClientTrust:
    """The settings' rules for believing a peer about its client, networks parsed once."""

    __slots__ = ("_peers", "believe_headers", "chain", "header", "networks")

    def __init__(self, settings: Settings) -> None:
        self.believe_headers = settings.use_forwarded_headers
        self.chain = settings.use_forwarded_headers and settings.compute_full_forwarded_for
        self.header = settings.forwarded_for_header.lower().encode("ascii")
        networks: list[Network] = [
            ipaddress.ip_network(cidr, strict=False) for cidr in settings.proxy_real_ip_cidr
        ]
        if ipaddress.ip_network("0.0.0.0/0") in networks:
            # ingress-nginx's default means any peer: an IPv6 one too, on a dual-stack listener
            networks.append(ipaddress.ip_network("::/0"))
        self.networks = tuple(networks)
        self._peers: dict[str, bool] = {}  # peer address -> trusted, for connections in use

    @staticmethod
    def wanted(settings: Settings) -> bool:
        """Whether ``settings`` ask for anything but the peer's own address."""
        return settings.use_forwarded_headers or settings.enable_real_ip

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is in ``proxy-real-ip-cidr``."""
        known = self._peers.get(address)
        if known is None:
            ip = _address(address)
            known = ip is not None and self._in_networks(ip)
            if len(self._peers) >= 4096:  # many peers: forget rather than grow
                self._peers.clear()
            self._peers[address] = known
        return known

    def _in_networks(self, ip: Address) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def real_client(self, peer: str, chain: bytes | None) -> str:
        """The client behind ``peer``, walking ``chain`` (the header's value) leftwards."""
        if not chain or not self.trusts(peer):
            return peer
        client = peer
        for entry in reversed(chain.split(b",")):
            ip = _entry_address(entry.strip())
            if ip is None:
                break
            client = str(ip)
            if not self._in_networks(ip):
                break
        return client

    def identify(self, peer: str, fields: Callable[[bytes], bytes | None]) -> Identity:
        """What a request from ``peer`` says of its client; ``fields(name)`` is the value
        of the request's fields named ``name``, joined by commas (None: none)."""
        address = self.real_client(peer, fields(self.header))
        real = address.encode("ascii")
        if not self.believe_headers or not self.trusts(peer):
            return Identity(address, real, False, False, real)
        if self.chain:
            return Identity(address, peer.encode("ascii"), True, True, real)
        return Identity(address, real, True, False, real)


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _entry_address(entry: bytes) -> Address | None:
    """An X-Forwarded-For entry's address: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``."""
    try:
        text = entry.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return _address(text)
