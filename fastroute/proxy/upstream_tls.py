"""TLS from the proxy to the pods (``backend-protocol: HTTPS``): client contexts and checks.

One ``ssl.SSLContext`` serves every connection made with the same ``UpstreamTLS``
settings. Building one loads a CA bundle and perhaps a client key, which takes
milliseconds: ``UpstreamContexts`` builds each in a worker thread the first time it is
needed and keeps the most recently used ones, so the event loop only ever looks one up.

The settings mean what ingress-nginx's ``proxy-ssl-*`` annotations mean:

- ``verify`` off (the default): the pod's certificate is not checked at all.
- ``verify`` on: the chain must lead to ``ca`` (the system's trust store when no CA is
  given) and name ``name``, or the endpoint's address when ``name`` is empty; the names
  are the certificate's subjectAltName entries only, never its subject CN.
- ``send_sni``: the server name goes in the ClientHello; without it none is sent (nginx's
  ``proxy_ssl_server_name off``). The stdlib checks the host only for a name it also sends
  as SNI, so without SNI the name is checked here, once the handshake is done.
- ``verify_depth``: as OpenSSL counts it, the most intermediate certificates between the
  pod's certificate and the trust anchor (1, nginx's default, allows one). The stdlib has
  no setting for it: the verified chain's length is checked after the handshake.
- ``protocols``: the lowest and highest versions named bound the versions offered (a set
  with a gap, such as TLSv1 and TLSv1.3 only, offers everything between).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections import OrderedDict

import trio

from fastroute.ingress.model import Endpoint, UpstreamTLS
from fastroute.proxy.tls import pem_path

__all__ = [
    "UpstreamContexts",
    "UpstreamTLSError",
    "check_peer",
    "client_context",
    "server_hostname",
    "verified_name",
]

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


class UpstreamTLSError(ssl.SSLError):
    """A pod's TLS connection failed a check the handshake itself does not make.

    An ``OSError``, like every failure to connect, so the proxy answers it 502.
    """


def client_context(settings: UpstreamTLS) -> ssl.SSLContext:
    """A client SSLContext for ``settings``. Blocking: loads keys and maybe the trust store.

    Raises:
        ValueError: an unknown protocol name, or a CA or client certificate that does not load.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    versions = []
    for protocol in settings.protocols:
        version = _VERSIONS.get(protocol)
        if version is None:
            raise ValueError(f"unknown TLS protocol {protocol!r} (known: {', '.join(_VERSIONS)})")
        versions.append(version)
    if versions:
        context.minimum_version = min(versions)
        context.maximum_version = max(versions)
    if settings.verify:
        context.verify_mode = ssl.CERT_REQUIRED
        context.hostname_checks_common_name = False
        # with SNI, OpenSSL checks the name it sends; without, check_peer does
        context.check_hostname = settings.send_sni
        try:
            if settings.ca:
                context.load_verify_locations(cadata=settings.ca.decode("ascii"))
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (ssl.SSLError, UnicodeDecodeError) as error:
            raise ValueError(f"the CA bundle does not load: {error}") from None
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.certificate:
        try:
            with pem_path(settings.certificate + b"\n" + settings.key) as path:
                context.load_cert_chain(path)
        except ssl.SSLError as error:
            raise ValueError(f"the client certificate does not load: {error}") from None
    return context


def verified_name(settings: UpstreamTLS, endpoint: Endpoint) -> str:
    """The name the pod's certificate must carry: ``proxy-ssl-name``, else its address."""
    return settings.name or endpoint.address


def server_hostname(settings: UpstreamTLS, endpoint: Endpoint) -> str | None:
    """What to hand the stdlib as ``server_hostname``: the SNI name, or None for no SNI.

    An IP address given here is never sent as SNI (RFC 6066 forbids it); the stdlib
    still checks it against the certificate's IP address entries.
    """
    return verified_name(settings, endpoint) if settings.send_sni else None


def check_peer(
    stream: trio.SSLStream[trio.SocketStream], settings: UpstreamTLS, endpoint: Endpoint
) -> None:
    """After the handshake: the checks the stdlib cannot make (no-SNI name, chain depth).

    Raises:
        UpstreamTLSError: saying which check failed.
    """
    if not settings.verify:
        return
    if not settings.send_sni:
        wanted = verified_name(settings, endpoint)
        alt_names = (stream.getpeercert() or {}).get("subjectAltName", ())
        if not _names_match(wanted, alt_names):
            names = ", ".join(value for _, value in alt_names) or "nothing"
            raise UpstreamTLSError(f"certificate does not name {wanted!r} (it names {names})")
    length = _verified_chain_length(stream)
    if length is not None and length > settings.verify_depth + 2:
        raise UpstreamTLSError(
            f"certificate chain has {length - 2} intermediate certificates, more than "
            f"proxy-ssl-verify-depth {settings.verify_depth} allows"
        )


def _verified_chain_length(stream: trio.SSLStream[trio.SocketStream]) -> int | None:
    """How many certificates the verified chain has, trust anchor included, if known.

    ``get_verified_chain`` is public on ``ssl.SSLObject`` from Python 3.13; before, it is
    on the ``_ssl`` object under it. Neither is reachable through trio's public API.
    """
    ssl_object = getattr(stream, "_ssl_object", None)
    for holder in (ssl_object, getattr(ssl_object, "_sslobj", None)):
        method = getattr(holder, "get_verified_chain", None)
        if method is not None:
            chain = method()
            return len(chain) if chain is not None else None
    return None


def _names_match(wanted: str, alt_names: tuple[tuple[str, str], ...]) -> bool:
    """RFC 6125 as OpenSSL applies it: an IP against IP entries; a host name against DNS
    entries, a ``*`` only as a whole leftmost label standing for exactly one label."""
    try:
        address = ipaddress.ip_address(wanted.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        for kind, value in alt_names:
            if kind == "IP Address":
                try:
                    if ipaddress.ip_address(value.strip()) == address:
                        return True
                except ValueError:
                    continue
        return False
    host = wanted.lower().rstrip(".")
    label, _, parent = host.partition(".")
    for kind, value in alt_names:
        if kind != "DNS":
            continue
        name = value.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and name[2:] == parent and label and "." in parent:
            return True
    return False


class UpstreamContexts:
    """Client SSLContexts by settings, built off the event loop, the last ``size`` kept.

    A config holds a handful of distinct settings; the bound only keeps a long run of
    changing Secrets from keeping every context ever built.
    """

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self._contexts: OrderedDict[UpstreamTLS, ssl.SSLContext] = OrderedDict()

    async def context(self, settings: UpstreamTLS) -> ssl.SSLContext:
        """The context for ``settings``; built in a worker thread the first time.

        Raises:
            ValueError: the settings cannot make a context (see ``client_context``).
        """
        contexts = self._contexts
        found = contexts.get(settings)
        if found is not None:
            contexts.move_to_end(settings)
            return found
        built = await trio.to_thread.run_sync(client_context, settings)
        contexts[settings] = built
        while len(contexts) > self.size:
            contexts.popitem(last=False)
        return built

    def __len__(self) -> int:
        return len(self._contexts)
