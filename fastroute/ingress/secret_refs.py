"""Secrets that an Ingress's annotations name: one syntax for the builder and the controller.

``auth-secret`` (htpasswd), ``auth-tls-secret`` (a client-certificate CA bundle) and
``proxy-ssl-secret`` (backend TLS) each name a Secret as ``namespace/name`` or ``name``
(the Ingress's namespace). As in ingress-nginx without cross-namespace resources, the
Secret must be in the Ingress's own namespace: a reference elsewhere is a problem the
builder reports, and the controller never fetches that Secret. Reading a reference here,
once, is what keeps the Secrets the controller fetches and the Secrets the builder looks
up the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastroute.ingress.annotations import PREFIXES

__all__ = ["SECRET_ANNOTATIONS", "SecretRef", "annotation_secret", "named_secrets"]

# every annotation whose value names a Secret (without its prefix)
SECRET_ANNOTATIONS = ("auth-secret", "auth-tls-secret", "proxy-ssl-secret")
# a Secret's name: a DNS subdomain (RFC 1123), as the API server requires
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """The Secret one annotation names, or why it names nothing usable."""

    annotation: str  # the annotation as written, with its prefix
    namespace: str
    name: str
    problem: str = ""  # the value is malformed, or names another namespace: why

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


def annotation_secret(
    annotations: Mapping[str, Any], namespace: str, annotation: str
) -> SecretRef | None:
    """The Secret that ``annotation`` (without prefix) names on an Ingress in ``namespace``.

    The first prefix set wins, as for every annotation. None when it is not set.
    """
    for prefix in PREFIXES:
        value = annotations.get(prefix + annotation)
        if value is None:
            continue
        text = str(value).strip()
        secret_namespace, _, name = text.rpartition("/")
        secret_namespace = secret_namespace or namespace
        problem = ""
        if not _NAME.fullmatch(name) or not _NAME.fullmatch(secret_namespace):
            problem = f"expected 'namespace/name' or 'name' of a Secret, got {text!r}"
        elif secret_namespace != namespace:
            problem = (
                f"Secret {text!r} is in another namespace than the Ingress ({namespace}); "
                "only Secrets of the Ingress's own namespace can be used"
            )
        return SecretRef(prefix + annotation, secret_namespace, name, problem)
    return None


def named_secrets(annotations: Mapping[str, Any], namespace: str) -> list[SecretRef]:
    """The usable Secret references among an Ingress's annotations (what may be fetched).

    Malformed references and references to other namespaces are left out: they name
    nothing the builder would read.
    """
    found: list[SecretRef] = []
    for annotation in SECRET_ANNOTATIONS:
        ref = annotation_secret(annotations, namespace, annotation)
        if ref is not None and not ref.problem:
            found.append(ref)
    return found
