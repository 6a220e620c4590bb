"""One small site for end-to-end tests: objects routing site.example.com to a backend.

Several test files serve the same thing (an Ingress ``default/site`` in front of Service
``default/web`` with one endpoint on 127.0.0.1), as objects or as a manifest file.
"""

from __future__ import annotations

import socket
from typing import Any

from tests.objects import ingress, service_at

HOST = "site.example.com"


def site_objects(backend_port: int, path: str = "/") -> list[dict[str, Any]]:
    """Service default/web (one endpoint on ``backend_port``) behind Ingress default/site."""
    return [
        *service_at(backend_port, namespace=None),
        ingress("site", HOST, paths=[(path, "Prefix", "web")], namespace=None),
    ]


def closed_port() -> int:
    """A port with nothing listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
