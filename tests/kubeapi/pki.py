"""A throwaway certificate authority for the emulator's HTTPS: server and client certificates.

Keys are ECDSA P-256: a few milliseconds to generate (RSA-2048 takes tens), and both Go's
crypto/tls (kubectl) and OpenSSL (Python's ssl, so httpx and lightkube) accept them for server
and client authentication. Certificates carry the extensions strict verifiers insist on
(SubjectAltName, key usages, subject/authority key identifiers).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PKI", "Credentials"]

_VALIDITY = datetime.timedelta(days=2)
_SKEW = datetime.timedelta(minutes=5)  # not-before a little in the past, for clock skew


@dataclass(frozen=True, slots=True)
class Credentials:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.crt`` and ``stem.key`` (mode 0600) into a directory."""
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return cert, key


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class PKI:
    """A CA plus the server certificate it signed; issues client certificates on demand."""

    ca_cert_pem: bytes
    ca_key: ec.EllipticCurvePrivateKey
    server: Credentials

    @classmethod
    def generate(cls, hosts: Iterable[str] = ("127.0.0.1", "localhost")) -> PKI:
        """A new CA and a server certificate for ``hosts`` (IP addresses or DNS names)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = _name("fastroute-kubeapi-ca")
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        ca = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(ca=True),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        server = cls._issue(ca, key, _name("kube-apiserver"), list(hosts), server=True)
        return cls(ca_pem, key, server)

    def client(self, user: str, groups: Iterable[str] = ()) -> Credentials:
        """A client certificate for ``user`` (CN) in ``groups`` (O), as the apiserver reads them."""
        ca = x509.load_pem_x509_certificate(self.ca_cert_pem)
        return self._issue(ca, self.ca_key, _name(user, groups), [], server=False)

    @staticmethod
    def _issue(
        ca: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        subject: x509.Name,
        hosts: list[str],
        *,
        server: bool,
    ) -> Credentials:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(ca=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return Credentials(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def server_context(self) -> ssl.SSLContext:
        """The server side: this certificate, and client certificates optional but checked.

        Optional, not required, because a bearer token is the other way in; a certificate
        that is presented must chain to this CA or the handshake fails, as with the real
        ``--client-ca-file``.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # HTTP/1.1 only: chunked watch streams are what this emulator is about (no h2).
        context.set_alpn_protocols(["http/1.1"])
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=self.ca_cert_pem.decode())
        # load_cert_chain reads files only: a private temporary directory, removed at once.
        with tempfile.TemporaryDirectory(prefix="kubeapi-tls-") as directory:
            cert, key = self.server.write(Path(directory), "server")
            context.load_cert_chain(os.fspath(cert), os.fspath(key))
        return context

    def client_context(self, credentials: Credentials | None = None) -> ssl.SSLContext:
        """A client side that trusts this CA, optionally presenting a client certificate."""
        context = ssl.create_default_context(cadata=self.ca_cert_pem.decode())
        if credentials is not None:
            with tempfile.TemporaryDirectory(prefix="kubeapi-tls-") as directory:
                cert, key = credentials.write(Path(directory), "client")
                context.load_cert_chain(os.fspath(cert), os.fspath(key))
        return context


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures for every certificate; signing certificates and CRLs for the CA only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
