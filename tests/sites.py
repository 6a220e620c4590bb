"""One small site for end-to-end tests: objects routing site.example.com to a backend.

Several test files serve the same thing (an Ingress ``default/site`` in front of Service
``default/web`` with one endpoint on 127.0.0.1), as objects or as a manifest file.
"""

from __future__ import annotations

import socket
from typing import Any

HOST = "site.example.com"


def site_objects(backend_port: int, path: str = "/") -> list[dict[str, Any]]:
    """Service default/web (one endpoint on ``backend_port``) behind Ingress default/site."""
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"port": backend_port}],
            "endpoints": [{"addresses": ["127.0.0.1"]}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "site"},
            "spec": {
                "ingressClassName": "fastroute",
                "rules": [
                    {
                        "host": HOST,
                        "http": {
                            "paths": [{"path": path, "pathType": "Prefix", "backend": backend}]
                        },
                    }
                ],
            },
        },
    ]


def closed_port() -> int:
    """A port with nothing listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
