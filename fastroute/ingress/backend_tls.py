"""``proxy-ssl-secret``: the Secret that backend TLS (``backend-protocol: HTTPS``) trusts.

The Secret's ``ca.crt`` is the CA bundle the pods' certificates are verified against;
its ``tls.crt`` and ``tls.key``, when present, are the client certificate the proxy
presents to them (mutual TLS). As in ingress-nginx, the Secret is named
``namespace/name`` (or just ``name``: the Ingress's namespace) and must be in the
Ingress's own namespace.

The setting protects the pods' traffic, so it fails closed: a reference that is
malformed, a Secret that is missing or unusable, makes the Ingress's routes answer 503
(``Policy.refused``) instead of sending to pods nobody could verify.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cryptography import x509

from fastroute.ingress.certs import CERT_KEY, KEY_KEY, Certificate
from fastroute.ingress.model import Policy, Problem
from fastroute.ingress.secret_refs import SecretRef, annotation_secret

__all__ = [
    "CA_KEY",
    "SECRET_ANNOTATION",
    "SecretRef",
    "ca_bundle",
    "has_client_certificate",
    "secret_reference",
    "secret_value",
    "upstream_policy",
]

SECRET_ANNOTATION = "proxy-ssl-secret"
CA_KEY = "ca.crt"


def secret_reference(annotations: Mapping[str, Any], namespace: str) -> SecretRef | None:
    """The Secret an Ingress's annotations name for backend TLS; None when they name none."""
    return annotation_secret(annotations, namespace, SECRET_ANNOTATION)


def has_client_certificate(secret: Mapping[str, Any]) -> bool:
    """Whether a Secret carries a client certificate (``tls.crt`` or ``tls.key``)."""
    return any(
        key in section
        for section in (_section(secret, "data"), _section(secret, "stringData"))
        for key in (CERT_KEY, KEY_KEY)
    )


def upstream_policy(
    ingress: str,
    policy: Policy,
    ref: SecretRef | None,
    secret: Mapping[str, Any] | None,
    client: Certificate | str | None,
) -> tuple[Policy, Problem | None]:
    """``policy`` with the Secret's CA and client certificate in its backend TLS settings.

    ``client`` is the Secret's ``tls.crt``/``tls.key`` loaded (or why it cannot be), None
    when it has neither. Returns the policy and the problem to report, if any: refused
    (503) when the Secret cannot be used.
    """
    if ref is None:
        return policy, None
    where = f"metadata.annotations[{ref.annotation}]"
    if policy.upstream_tls is None:
        reason = "has no effect without backend-protocol: HTTPS"
        return policy, Problem("Ingress", ingress, where, reason, warning=True)
    reason = ref.problem or _unusable(ref, secret)
    if not reason:
        assert secret is not None
        ca = _value(secret, CA_KEY)
        assert isinstance(ca, bytes)
        settings = replace(policy.upstream_tls, ca=ca)
        if isinstance(client, str):
            reason = f"its client certificate is unusable: {client}"
        elif client is not None:
            settings = replace(settings, certificate=client.chain_pem, key=client.key_pem)
        if not reason:
            return replace(policy, upstream_tls=settings), None
    reason += "; the Ingress's routes answer 503"
    refused = replace(policy, refused=f"{ref.annotation}: {reason}")
    return refused, Problem("Ingress", ingress, where, reason)


def _unusable(ref: SecretRef, secret: Mapping[str, Any] | None) -> str:
    """Why the Secret's ``ca.crt`` cannot be the CA bundle, or "" when it can."""
    found = ca_bundle(f"{ref.namespace}/{ref.name}", secret, "pods are verified with")
    return found if isinstance(found, str) else ""


def ca_bundle(name: str, secret: Mapping[str, Any] | None, purpose: str) -> bytes | str:
    """Secret ``name``'s ``ca.crt`` (PEM certificates), or why it cannot be the CA bundle
    that ``purpose`` says ("pods are verified with")."""
    shown = f"Secret {name}"
    if secret is None:
        return f"{shown} not found"
    ca = _value(secret, CA_KEY)
    if isinstance(ca, str):
        return f"{shown}: {ca}"
    if not ca.strip():
        return f"{shown}: {CA_KEY} is missing or empty (the CA bundle {purpose})"
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError as error:
        return f"{shown}: {CA_KEY} is not a PEM certificate bundle: {error}"
    return ca


def secret_value(secret: Mapping[str, Any] | None, key: str) -> bytes | str:
    """A Secret's value for ``key`` as bytes (b"" when absent), or why it is unreadable."""
    return b"" if secret is None else _value(secret, key)


def _section(secret: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = secret.get(name)
    return section if isinstance(section, Mapping) else {}


def _value(secret: Mapping[str, Any], key: str) -> bytes | str:
    """A Secret's value as bytes (``stringData`` wins over base64 ``data``), or why not."""
    plain = _section(secret, "stringData").get(key)
    if isinstance(plain, str):
        return plain.encode("utf-8", "replace")
    encoded = _section(secret, "data").get(key)
    if encoded is None:
        return b""
    if not isinstance(encoded, str):
        return f"data.{key} must be a base64 string"
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        return f"data.{key} is not valid base64: {error}"
