"""What the tests' certificate builders share: the key usage a CA certificate carries."""

from __future__ import annotations

from cryptography import x509

__all__ = ["CA_KEY_USAGE"]

# signs certificates and CRLs, nothing else (RFC 5280 §4.2.1.3); OpenSSL wants it critical
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
