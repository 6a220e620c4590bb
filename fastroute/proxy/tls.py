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
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import NamedTuple

import trio

from fastroute.ingress.certs import Certificate, self_signed_certificate
from fastroute.ingress.model import RouteConfig
from fastroute.proxy.listener import LogThrottle

__all__ = ["TLSContexts", "TLSState", "context_for", "pem_path", "send_handshake_alert"]

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


class TLSState(NamedTuple):
    """A config and the SSLContexts of its certificates: what handshakes are served from."""

    config: RouteConfig | None
    contexts: dict[Certificate, ssl.SSLContext]


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

    def prepare(self, config: RouteConfig) -> TLSState:
        """Contexts for ``config``'s certificates, reusing those already built (no swap)."""
        built = self._state.contexts
        contexts: dict[Certificate, ssl.SSLContext] = {}
        for certificate in set(config.certificates.values()):
            contexts[certificate] = built.get(certificate) or context_for(certificate)
        return TLSState(config, contexts)

    def use(self, state: TLSState) -> None:
        """Serve handshakes from ``state`` on: one assignment."""
        self._state = state

    def install(self, config: RouteConfig) -> None:
        """``prepare`` and ``use`` in one call."""
        self.use(self.prepare(config))

    def certificate_for(self, server_name: str | None) -> Certificate:
        """The certificate a handshake for ``server_name`` gets."""
        config = self._state.config
        found = config.certificate_for(server_name) if config is not None else None
        return found or self.default

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        config, contexts = self._state
        found = config.certificate_for(server_name) if config is not None else None
        chosen = contexts.get(found) if found is not None else None
        connection.context = chosen or self._default_context
