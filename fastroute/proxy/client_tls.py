"""TLS for hosts that ask for client certificates: pyOpenSSL over the trio socket.

The stdlib ``ssl`` module cannot ask for a certificate and still finish the handshake
when the certificate fails verification, cannot limit the chain's depth, and does not
show the client's chain: nginx's verdicts (400 or a redirect, ``optional_no_ca``, the
``FAILED:<reason>`` upstream field) would be impossible. So a connection whose SNI names
such a host (``RouteConfig.client_auth``; the ClientHello is peeked at first) is served
by an OpenSSL connection over memory BIOs instead: one ``SSL.Context`` per host, with
the host's certificate, its CA bundle (the trust store, and the names sent in the
CertificateRequest), the verify depth, and a verify callback that notes the last error
and lets the handshake finish, as nginx's does. ``OpenSSLChannel`` is that connection
behind the ``Channel`` methods, with the verdict (``peer``) worked out once.

Sessions are never resumed on these contexts (no cache, no tickets): a resumed session
skips verification, and the verdict would be lost. Renegotiation is refused: the verdict
is the first handshake's, for the connection's life.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from contextlib import suppress

import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto

from fastroute.ingress.certs import Certificate
from fastroute.ingress.client_auth import revocation_lists
from fastroute.ingress.model import ClientAuth
from fastroute.proxy.channel import READ_SIZE, SocketChannel
from fastroute.proxy.client_certs import PeerCertificate, peer_certificate

__all__ = ["OpenSSLChannel", "client_auth_context", "client_auth_handshake"]

log = logging.getLogger("fastroute.proxy")

_VERSIONS = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}
_SESSION_ID = b"fastroute-client-auth"  # OpenSSL wants one on contexts that verify clients


class _Verification:
    """What the verify callback saw on one connection: the last error (0: none)."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error = 0


def _noted(connection: SSL.Connection, _: crypto.X509, error: int, depth: int, ok: int) -> bool:
    """Note a failure and go on: the routes judge it, as nginx's do."""
    if not ok:
        verification = connection.get_app_data()
        if isinstance(verification, _Verification):
            verification.error = error
    return True


def _error_text(code: int) -> str:
    """OpenSSL's text for an ``X509_V_ERR_*`` code, as nginx puts it after ``FAILED:``."""
    try:
        from OpenSSL._util import ffi, lib  # OpenSSL's own binding: not in its public API

        return str(ffi.string(lib.X509_verify_cert_error_string(code)).decode("ascii"))
    except (ImportError, AttributeError):
        return f"certificate verify error {code}"


def client_auth_context(
    certificate: Certificate,
    auth: ClientAuth,
    protocols: Sequence[str],
    ciphers: str,
    alpn: Sequence[str],
) -> SSL.Context:
    """A server context serving ``certificate`` that asks for a client certificate
    verified against ``auth``'s CA bundle (build it off the event loop)."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    versions = [_VERSIONS[p] for p in protocols if p in _VERSIONS] or [SSL.TLS1_2_VERSION]
    context.set_min_proto_version(min(versions))
    context.set_max_proto_version(max(versions))
    try:
        context.set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError) as error:
        log.error("ssl-ciphers %r refused for a client certificate host: %s", ciphers, error)
    chain = x509.load_pem_x509_certificates(certificate.chain_pem)
    context.use_certificate(chain[0])
    for extra in chain[1:]:
        context.add_extra_chain_cert(extra)
    key = load_pem_private_key(certificate.key_pem, password=None)
    context.use_privatekey(key)  # type: ignore[arg-type]
    store = context.get_cert_store()
    assert store is not None
    for ca in x509.load_pem_x509_certificates(auth.ca):
        store.add_cert(crypto.X509.from_cryptography(ca))  # the trust store
        context.add_client_ca(ca)  # its name in the CertificateRequest
    if auth.crl:  # as nginx's ssl_crl: every certificate of the chain is checked
        for crl in revocation_lists(auth.crl):
            store.add_crl(crl)
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)
    context.set_verify(SSL.VERIFY_PEER, _noted)
    context.set_verify_depth(auth.depth)
    context.set_session_id(_SESSION_ID)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # no resumption (it would skip verification), no renegotiation (the verdict is the
    # first handshake's, for the connection's life)
    context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
    offered = [protocol.encode("ascii") for protocol in alpn]

    def select(_: SSL.Connection, asked: list[bytes]) -> bytes | SSL._NoOverlappingProtocols:
        chosen = next((p for p in offered if p in asked), None)
        return SSL.NO_OVERLAPPING_PROTOCOLS if chosen is None else chosen

    context.set_alpn_select_callback(select)
    return context


class OpenSSLChannel:
    """A server-side OpenSSL connection over a TCP socket, behind the ``Channel`` methods."""

    __slots__ = ("peer", "raw", "sock", "tls")

    def __init__(self, tls: SSL.Connection, sock: socket.socket, peer: PeerCertificate) -> None:
        self.tls = tls
        self.sock = sock
        self.raw = SocketChannel(sock)
        self.peer = peer

    def _outgoing(self) -> bytes:
        """What OpenSSL has written for the peer and nobody sent yet."""
        chunks = []
        while True:  # bounded: each read empties the BIO by up to READ_SIZE
            try:
                chunks.append(self.tls.bio_read(READ_SIZE))
            except SSL.WantReadError:
                return b"".join(chunks)

    async def recv(self) -> bytes:
        while True:  # each turn decrypts, or feeds more bytes from the socket
            try:
                return bytes(self.tls.recv(READ_SIZE))
            except SSL.WantReadError:
                pending = self._outgoing()
                if pending:
                    await self.raw.send(pending)
                incoming = await self.raw.recv()
                if not incoming:
                    return b""
                self.tls.bio_write(incoming)
            except SSL.Error:  # close_notify, an alert, a broken record: the peer is done
                return b""

    async def recv_reply(self) -> bytes:
        return await self.recv()

    def send_some(self, data: bytes) -> int:
        return 0  # TLS records go out through ``send``

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:  # a memory BIO takes it all, a record at a time
                view = view[self.tls.send(view) :]
        except SSL.Error as error:
            raise trio.BrokenResourceError(f"TLS: {error}") from None
        await self.raw.send(self._outgoing())

    def close(self) -> None:
        self.raw.close()

    def peer_gone(self) -> bool:
        return self.raw.peer_gone()

    async def linger(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            try:
                while await self.recv():
                    pass
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass


async def client_auth_handshake(
    sock: socket.socket,
    context: SSL.Context,
    auth: ClientAuth,
    server_name: str,
    deadline: float,
) -> OpenSSLChannel | None:
    """The server side of a handshake that asks for a client certificate, done by
    ``deadline``; None when it failed (the client was sent OpenSSL's alert, if any)."""
    tls = SSL.Connection(context, None)
    tls.set_accept_state()
    verification = _Verification()
    tls.set_app_data(verification)
    raw = SocketChannel(sock)
    channel = OpenSSLChannel(tls, sock, PeerCertificate(server_name, auth))
    with trio.move_on_at(deadline):
        try:
            while True:  # each turn feeds the handshake more bytes; the deadline bounds it
                try:
                    tls.do_handshake()
                    break
                except SSL.WantReadError:
                    pending = channel._outgoing()
                    if pending:
                        await raw.send(pending)
                    incoming = await raw.recv()
                    if not incoming:
                        return None
                    tls.bio_write(incoming)
            pending = channel._outgoing()
            if pending:
                await raw.send(pending)
        except SSL.Error:
            alert = channel._outgoing()  # why it was refused, for the client
            if alert:
                with suppress(OSError, trio.BrokenResourceError):
                    await raw.send(alert)
            return None
        except (OSError, trio.BrokenResourceError):
            return None
        certificate = tls.get_peer_certificate(as_cryptography=True)
        error = verification.error if certificate is not None else 0
        channel.peer = peer_certificate(
            server_name, auth, certificate, error, _error_text(error) if error else ""
        )
        return channel
    return None
