"""``auth-tls-*``: client certificates (mutual TLS), as ingress-nginx reads them.

The annotations say which CA bundle a host's TLS handshakes verify client certificates
against (``auth-tls-secret``, a Secret's ``ca.crt`` in the Ingress's own namespace, and
its ``ca.crl`` revocation lists when it has one, as ingress-nginx reads them), whether
a certificate is required (``auth-tls-verify-client``), how deep the chain may be, and
what the routes do with the verdict. ingress-nginx sets them on the server block, so
they belong to the host: its oldest Ingress that sets ``auth-tls-secret`` decides for
every route on it (``host_client_auth``, ``on_host``).

Client certificates protect the routes, so the settings fail closed: a malformed value,
a Secret that is missing or holds no usable CA bundle, makes the Ingress's routes answer
503, and the other Ingresses on its host too (ingress-nginx refuses the whole server).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from cryptography import x509

from fastroute.ingress.canary import read_pattern
from fastroute.ingress.model import ClientAuth, Policy, Problem
from fastroute.ingress.syntax import Malformed, read_int

__all__ = [
    "CRL_KEY",
    "SECRET_ANNOTATION",
    "VERIFY_MODES",
    "client_auth_map",
    "client_auth_policy",
    "host_client_auth",
    "ignored_on_host",
    "on_host",
    "read_error_page",
    "read_match_cn",
    "read_secret",
    "read_verify_client",
    "read_verify_depth",
    "revocation_lists",
    "secret_key",
]

SECRET_ANNOTATION = "auth-tls-secret"
CRL_KEY = "ca.crl"  # revocation lists, read when the Secret has them (nginx's ssl_crl)
VERIFY_MODES = ("on", "off", "optional", "optional_no_ca")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a Secret's or namespace's
_URL = re.compile(r"https?://[^/\s?#]+[!-~]*")


def read_secret(text: str, namespace: str) -> str:
    """``namespace/name`` or ``name`` of a Secret in ``namespace``: ``"namespace/name"``."""
    word = text.strip()
    secret_namespace, _, name = word.rpartition("/")
    secret_namespace = secret_namespace or namespace
    if not _NAME.fullmatch(name) or not _NAME.fullmatch(secret_namespace):
        raise Malformed(f"expected 'namespace/name' or 'name' of a Secret, got {text!r}")
    if secret_namespace != namespace:
        raise Malformed(
            f"Secret {word!r} is in another namespace than the Ingress ({namespace}); only "
            "Secrets of the Ingress's own namespace can be used"
        )
    return f"{secret_namespace}/{name}"


def read_verify_client(text: str) -> str:
    word = text.strip()
    if word not in VERIFY_MODES:
        raise Malformed(f"expected one of {', '.join(VERIFY_MODES)}, got {text!r}")
    return word


def read_verify_depth(text: str) -> int:
    """A chain depth; 0 means ingress-nginx's default, 1 (the CA signs the certificate)."""
    return read_int(text, low=0) or 1


def read_error_page(text: str) -> str:
    """An absolute URL. nginx serves a path here by an internal redirect, which fastroute
    does not make: it would be judged again, and refused again."""
    url = text.strip()
    if _URL.fullmatch(url) is None:
        raise Malformed(
            f"expected an absolute http:// or https:// URL without spaces, got {text!r} "
            "(a path is not supported: write the whole URL)"
        )
    return url


def read_match_cn(text: str) -> str:
    """``CN=`` and a regular expression (RE2), found anywhere in the subject DN."""
    if not text.startswith("CN="):
        raise Malformed(f"expected 'CN=' followed by a regular expression, got {text!r}")
    return read_pattern(text)


def secret_key(policy: Policy) -> tuple[str, str] | None:
    """(namespace, name) of the Secret a policy's client certificates are verified with."""
    if policy.client_auth is None:
        return None
    namespace, _, name = policy.client_auth.secret.partition("/")
    return namespace, name


_CRL_START = b"-----BEGIN X509 CRL-----"


def revocation_lists(pem: bytes) -> list[x509.CertificateRevocationList]:
    """The CRLs of a PEM file (a Secret's ``ca.crl``: one or several, as nginx's ssl_crl).

    Raises:
        ValueError: a part is not a PEM CRL, or there is none.
    """
    parts = [_CRL_START + part for part in pem.split(_CRL_START)[1:]]
    if not parts:
        raise ValueError("no -----BEGIN X509 CRL----- block")
    return [x509.load_pem_x509_crl(part) for part in parts]


def _crl_problem(secret: str, crl: bytes | str) -> str:
    """Why a Secret's ``ca.crl`` cannot be used, or "" (it can, or there is none)."""
    if isinstance(crl, str):
        return f"Secret {secret}: {crl}"
    if not crl.strip():
        return ""
    try:
        revocation_lists(crl)
    except ValueError as error:
        return f"Secret {secret}: ca.crl is not a PEM revocation list: {error}"
    return ""


def client_auth_policy(
    ingress: str, policy: Policy, ca: bytes | str, crl: bytes | str = b""
) -> tuple[Policy, Problem | None]:
    """``policy`` with its CA bundle and revocation lists (the ``ca.crt`` and ``ca.crl``
    of the Secret ``auth-tls-secret`` names, or why they cannot be used), or refused (503)
    with the problem to report."""
    auth = policy.client_auth
    if auth is None:
        return policy, None
    why = ca if isinstance(ca, str) else _crl_problem(auth.secret, crl)
    if not why and isinstance(ca, bytes) and isinstance(crl, bytes):
        usable = replace(auth, ca=ca, crl=crl if crl.strip() else b"", ingress=ingress)
        return replace(policy, client_auth=usable), None
    reason = f"{why}; the Ingress's routes answer 503"
    where = f"metadata.annotations[{SECRET_ANNOTATION}]"
    refused = f"{SECRET_ANNOTATION}: {reason}"
    if policy.refused:
        refused = f"{policy.refused}; {refused}"
    unusable = replace(auth, ca=b"", ingress=ingress)
    return replace(policy, client_auth=unusable, refused=refused), Problem(
        "Ingress", ingress, where, reason
    )


def host_client_auth(policies: Iterable[Policy]) -> ClientAuth | None:
    """A host's client certificate settings: the first policy's that has some (pass
    the host's Ingresses' policies oldest first)."""
    return next((p.client_auth for p in policies if p.client_auth is not None), None)


def on_host(policy: Policy, auth: ClientAuth | None) -> Policy:
    """``policy`` as served on a host whose client certificate settings are ``auth``.

    A route on that host answers under the host's settings whatever its own Ingress
    says; when they are unusable (their Secret), it answers 503 as theirs do.
    """
    if auth is None or policy.client_auth == auth:
        return policy
    if auth.ca:
        return replace(policy, client_auth=auth)
    reason = (
        f"the host's client certificate settings (auth-tls-secret {auth.secret}, from the "
        f"Ingress {auth.ingress}) are unusable"
    )
    return replace(policy, client_auth=auth, refused=policy.refused or reason)


def client_auth_map(
    hosts: Mapping[str, ClientAuth], hosts_under: Mapping[str, Iterable[str]]
) -> dict[str, ClientAuth | None]:
    """``RouteConfig.client_auth``: the hosts whose handshakes ask for a certificate, and
    None for every exact host a wildcard of those covers but that asks for none itself.

    Args:
        hosts: host -> its client certificate settings (usable or not).
        hosts_under: parent domain ("b.com") -> the exact hosts with rules under it.
    """
    found: dict[str, ClientAuth | None] = {
        host: auth for host, auth in hosts.items() if auth.ca and auth.verify != "off"
    }
    for host in list(found):
        if host.startswith("*."):
            for covered in hosts_under.get(host[2:], ()):
                found.setdefault(covered, None)
    return found


def ignored_on_host(host: str, ingress: str, own: ClientAuth, auth: ClientAuth) -> Problem | None:
    """The warning for an Ingress whose client certificate settings (``own``) differ
    from its host's (``auth``, an older Ingress's), which apply instead; None if equal."""
    if replace(own, ingress="") == replace(auth, ingress=""):
        return None
    reason = (
        f"auth-tls-* ignored on host {host!r}: the host asks for client certificates as "
        f"the older Ingress {auth.ingress} says, for every route on it"
    )
    return Problem("Ingress", ingress, "metadata.annotations", reason, warning=True)
