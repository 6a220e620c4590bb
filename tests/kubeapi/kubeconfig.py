"""kubeconfig files pointing at the emulator, for kubectl, lightkube and the controller.

Everything is inlined (``certificate-authority-data``, ``client-certificate-data``,
``client-key-data``, ``token``) so one file is all a client needs, as with ``kind`` and ``k3s``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from .pki import Credentials

__all__ = ["kubeconfig", "write_kubeconfig"]

NAME = "kubeapi"  # the cluster, user and context name in generated files


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    server: str,
    *,
    ca_pem: bytes | None = None,
    token: str | None = None,
    client: Credentials | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    """A kubeconfig document with one cluster, one user and one (current) context."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = _b64(ca_pem)
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if client is not None:
        user["client-certificate-data"] = _b64(client.cert_pem)
        user["client-key-data"] = _b64(client.key_pem)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": cluster}],
        "users": [{"name": NAME, "user": user}],
        "contexts": [
            {"name": NAME, "context": {"cluster": NAME, "user": NAME, "namespace": namespace}}
        ],
        "current-context": NAME,
        "preferences": {},
    }


def write_kubeconfig(path: Path, document: dict[str, Any]) -> Path:
    """Write a kubeconfig document (mode 0600: it holds credentials) and return its path."""
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path
