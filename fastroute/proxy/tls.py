"""TLS termination: one SSLContext per certificate, picked by SNI during the handshake.

Certificates come from a RouteConfig (exact host, then wildcard) and, for any other name,
from a default certificate (generated self-signed if none is given), as ingress-nginx
does. The ``Host`` header, not SNI, picks the route, as the Ingress spec says.

The stdlib ``ssl`` module loads certificates only from files, so each one goes through
an anonymous in-memory file (``memfd_create`` on Linux), or a private temporary file
that is removed at once elsewhere. That happens when a config is installed, in a worker
thread, never during a handshake.

A ClientHello whose server name is not ASCII (raw UTF-8 instead of an ``xn--`` A-label)
never reaches the SNI callback: CPython's ``_servername_callback`` (Modules/_ssl.c) decodes
the name as ASCII first and, when that fails, reports the error through
``sys.unraisablehook`` (a traceback on stderr, per handshake, outside logging) and ends the
handshake with an ``internal_error`` alert. The refusal is right; the report is not: a
``sys.unraisablehook`` wrapper (``_SNIErrorHook``) turns exactly that report into a
rate-limited line on the ``fastroute.proxy`` logger and passes every other one on.
``send_handshake_alert`` makes sure the client gets the alert.

Hosts that ask for client certificates (``auth-tls-*``) are served from OpenSSL contexts
of their own (``client_tls``), built here with the others and picked by the accept loop
from the ClientHello's SNI before any handshake (``client_auth_for``).
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import NamedTuple

import trio
from OpenSSL import SSL

from fastroute.ingress.certs import Certificate, self_signed_certificate
from fastroute.ingress.model import ClientAuth, RouteConfig
from fastroute.proxy.client_tls import client_auth_context
from fastroute.proxy.listener import LogThrottle

__all__ = [
    "TLSContexts",
    "TLSState",
    "apply_protocols",
    "context_for",
    "pem_path",
    "send_handshake_alert",
]

ALPN = ["http/1.1"]

log = logging.getLogger("fastroute.proxy")
_BAD_SERVER_NAMES = LogThrottle(log, interval=10.0)  # any client can send them at will


def _is_undecodable_server_name(args: sys.UnraisableHookArgs) -> bool:
    """Whether ``args`` is ``_ssl``'s report of a ClientHello server name that is not ASCII.

    ``_servername_callback`` calls ``PyErr_WriteUnraisable(servername_bytes)`` when
    ``PyUnicode_FromEncodedObject(servername_bytes, "ascii")`` fails: the object is the
    name's bytes, the error an ASCII UnicodeDecodeError of those same bytes.
    """
    error = args.exc_value
    return (
        isinstance(error, UnicodeDecodeError)
        and error.encoding == "ascii"
        and isinstance(args.object, bytes)
        and error.object == args.object
    )


class _SNIErrorHook:
    """A ``sys.unraisablehook`` that logs undecodable SNI names and passes the rest on."""

    def __init__(self, previous: Callable[[sys.UnraisableHookArgs], object]) -> None:
        self.previous = previous

    def __call__(self, args: sys.UnraisableHookArgs) -> None:
        if _is_undecodable_server_name(args):
            name = args.object
            assert isinstance(name, bytes)
            _BAD_SERVER_NAMES.log(
                logging.WARNING,
                "TLS handshake refused: the SNI server name %r is not ASCII "
                "(an internationalized name must be sent as its xn-- A-label)",
                name[:100],
            )
            return
        self.previous(args)


async def send_handshake_alert(tls_stream: trio.SSLStream[trio.SocketStream]) -> None:
    """Send what OpenSSL wrote before it refused a handshake: the fatal alert saying why.

    ``trio.SSLStream`` turns the SSLError into BrokenResourceError without sending the
    bytes OpenSSL left in its outgoing buffer, so the client would see the connection just
    close ("unexpected EOF") instead of, say, ``internal_error`` for an SNI name that is not
    ASCII. That buffer is trio's private ``_outgoing`` MemoryBIO: without it, nothing is sent.
    """
    outgoing = getattr(tls_stream, "_outgoing", None)
    if not isinstance(outgoing, ssl.MemoryBIO) or not outgoing.pending:
        return
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):  # client gone
        await tls_stream.transport_stream.send_all(outgoing.read())


def _install_sni_error_hook() -> None:
    """Route ``_ssl``'s reports of undecodable SNI names to the log (once per process)."""
    if not isinstance(sys.unraisablehook, _SNIErrorHook):
        sys.unraisablehook = _SNIErrorHook(sys.unraisablehook)


@contextmanager
def pem_path(data: bytes) -> Iterator[str]:
    """A path that reads as ``data`` for as long as the context is open."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fastroute-pem")
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as private:  # mode 0700
        path = os.path.join(private, "pem")
        with open(path, "wb") as out:
            out.write(data)
        yield path


def context_for(certificate: Certificate) -> ssl.SSLContext:
    """A server SSLContext serving ``certificate``: TLS 1.2 or later, HTTP/1.1 by ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    with pem_path(certificate.chain_pem + b"\n" + certificate.key_pem) as path:
        context.load_cert_chain(path)
    return context


# (ssl-protocols, ssl-ciphers): what the listener's handshakes offer
Offer = tuple[tuple[str, ...], str]


def apply_protocols(context: ssl.SSLContext, offer: Offer) -> str | None:
    """Make ``context`` offer ``ssl-protocols`` and ``ssl-ciphers``; why not, if it cannot.

    The versions and the cipher list are applied together or not at all: a cipher list
    OpenSSL refuses leaves the context as it was. The cipher list covers TLS 1.2 and
    below; TLS 1.3's suites are OpenSSL's own (nginx's ``ssl_ciphers`` is the same).
    """
    protocols, ciphers = offer
    try:
        versions = [ssl.TLSVersion[name.replace(".", "_")] for name in protocols]
    except KeyError as error:
        return f"ssl-protocols: unknown protocol {error}"
    if not versions:
        return "ssl-protocols: no protocol"
    try:
        # tried on a scratch context first: OpenSSL may leave an empty list behind when
        # it refuses one, and the context in use would then refuse every handshake
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError as error:
        return f"ssl-ciphers {ciphers!r} refused by OpenSSL: {error}"
    context.set_ciphers(ciphers)
    context.minimum_version = min(versions)
    context.maximum_version = max(versions)
    return None


def _offer_of(config: RouteConfig) -> Offer:
    return config.settings.ssl_protocols, config.settings.ssl_ciphers


class ClientAuthContext(NamedTuple):
    """A host's OpenSSL context that asks for client certificates (``client_tls``)."""

    context: SSL.Context
    auth: ClientAuth
    made_of: tuple[Certificate, ClientAuth, Offer]  # what it was built from, for reuse


class TLSState(NamedTuple):
    """A config and the SSLContexts of its certificates: what handshakes are served from."""

    config: RouteConfig | None
    contexts: dict[Certificate, ssl.SSLContext]
    # the hosts that ask for client certificates (RouteConfig.client_auth), by host
    client_auth: Mapping[str, ClientAuthContext] = {}


class TLSContexts:
    """The SSLContexts of one RouteConfig plus the default, and the SNI callback.

    ``listener_context`` is what the HTTPS listener wraps connections with; its SNI
    callback swaps in the context of the certificate for the name the client asked for.
    ``prepare`` builds the contexts of a new config (call it in a worker thread) and
    ``use`` swaps them in: one reference, so a handshake sees the old config and its
    contexts or the new ones, never a mix. ``install`` does both.
    """

    def __init__(self, default: Certificate | None = None) -> None:
        _install_sni_error_hook()
        self.default = default or self_signed_certificate()
        self._default_context = context_for(self.default)
        self._state: TLSState = TLSState(None, {})
        self.listener_context = context_for(self.default)
        self.listener_context.sni_callback = self._pick
        self._offer: Offer | None = None  # what the listener's context offers (None: defaults)

    def prepare(self, config: RouteConfig) -> TLSState:
        """Contexts for ``config``'s certificates, reusing those already built (no swap)."""
        built = self._state.contexts
        contexts: dict[Certificate, ssl.SSLContext] = {}
        for certificate in set(config.certificates.values()):
            known = built.get(certificate)
            if known is None:
                known = context_for(certificate)
                apply_protocols(known, _offer_of(config))
            contexts[certificate] = known
        return TLSState(config, contexts, self._client_auth_contexts(config))

    def _client_auth_contexts(self, config: RouteConfig) -> dict[str, ClientAuthContext]:
        """The OpenSSL contexts of ``config``'s client certificate hosts, reusing those
        already built from the same certificate, settings and offer."""
        built = {made.made_of: made for made in self._state.client_auth.values()}
        offer = _offer_of(config)
        contexts: dict[str, ClientAuthContext] = {}
        for host, auth in config.client_auth.items():
            if auth is None:
                continue
            certificate = config.certificate_for(host) or self.default
            made_of = (certificate, auth, offer)
            known = built.get(made_of)
            if known is None:
                context = client_auth_context(certificate, auth, *offer, ALPN)
                known = built[made_of] = ClientAuthContext(context, auth, made_of)
            contexts[host] = known
        return contexts

    def client_auth_for(self, server_name: str) -> ClientAuthContext | None:
        """The context a handshake for ``server_name`` is served from when its host asks
        for client certificates; None when it asks for none."""
        state = self._state
        if not state.client_auth or state.config is None:
            return None
        auth = state.config.client_auth_for(server_name)
        if auth is None:
            return None
        name = server_name.lower().rstrip(".")
        found = state.client_auth.get(name)
        if found is None:
            found = state.client_auth.get("*." + name.partition(".")[2])
        return found

    def use(self, state: TLSState) -> None:
        """Serve handshakes from ``state`` on: one assignment (and the config's
        ssl-protocols and ssl-ciphers, when they changed)."""
        self._state = state
        if state.config is not None:
            self._offer_settings(state.config)

    def install(self, config: RouteConfig) -> None:
        """``prepare`` and ``use`` in one call."""
        self.use(self.prepare(config))

    def _offer_settings(self, config: RouteConfig) -> None:
        """Offer ``config``'s ssl-protocols and ssl-ciphers in the handshakes to come.

        The SNI callback swaps the certificate's context in after the ClientHello is read,
        when the versions and ciphers are already the listener context's: that context is
        the one that counts, and the certificates' contexts follow it. A cipher list
        OpenSSL refuses keeps what was offered before, with a log line saying why.
        """
        offer = _offer_of(config)
        if offer == self._offer:
            return
        problem = apply_protocols(self.listener_context, offer)
        if problem is not None:
            log.error("TLS settings not applied, the previous ones stay: %s", problem)
            return
        self._offer = offer
        for context in (self._default_context, *self._state.contexts.values()):
            apply_protocols(context, offer)

    def certificate_for(self, server_name: str | None) -> Certificate:
        """The certificate a handshake for ``server_name`` gets."""
        config = self._state.config
        found = config.certificate_for(server_name) if config is not None else None
        return found or self.default

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        config, contexts = self._state.config, self._state.contexts
        found = config.certificate_for(server_name) if config is not None else None
        chosen = contexts.get(found) if found is not None else None
        connection.context = chosen or self._default_context
