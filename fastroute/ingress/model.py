"""What a translated snapshot is made of: frozen values the proxy reads and never changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastroute import Router

if TYPE_CHECKING:
    from fastroute.ingress.certs import Certificate

__all__ = ["Backend", "Endpoint", "Policy", "Problem", "RouteConfig", "Target"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address that serves a Service port (a pod IP, or a name for ExternalName)."""

    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Backend:
    """A Service port resolved to the endpoints that serve it.

    ``endpoints`` are ready. ``terminating`` ones still serve but are shutting down:
    Kubernetes says to use them only when no ready endpoint is left. With neither,
    ``problem`` says why, for the 503 the proxy answers and its log line.
    """

    namespace: str
    service: str
    port: int | str  # as the Ingress names it: a number or a port name
    endpoints: tuple[Endpoint, ...] = ()
    terminating: tuple[Endpoint, ...] = ()
    problem: str = ""
    # "namespace/service:port", for logs and metrics; written once, read per request
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.namespace}/{self.service}:{self.port}")

    def usable(self) -> tuple[Endpoint, ...]:
        """The endpoints to send to: ready ones, else terminating ones, else none."""
        return self.endpoints or self.terminating


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-route behaviour set by Ingress annotations (ingress-nginx's names)."""

    ssl_redirect: bool = True  # redirect plain HTTP to HTTPS when the host has TLS
    force_ssl_redirect: bool = False  # redirect even when the host has no TLS section
    rewrite_target: str | None = None  # replaces the matched path prefix


@dataclass(frozen=True, slots=True)
class Target:
    """What the router returns for a request: where it goes and under which rules."""

    ingress: str  # "namespace/name" of the Ingress the rule came from
    backend: Backend
    policy: Policy = field(default_factory=Policy)
    tls: bool = False  # the request's host is listed in a TLS section


@dataclass(frozen=True, slots=True)
class Problem:
    """An object, or a field of one, that was skipped or accepted with a warning, and why."""

    kind: str  # "Ingress", "Service", "Secret", ...
    name: str  # "namespace/name", or "name" for cluster-scoped objects
    field: str  # the field path, e.g. "spec.rules[0].http.paths[1].path"; "" for the object
    reason: str
    warning: bool = False  # True: accepted anyway (e.g. converted from a removed API)

    def __str__(self) -> str:
        where = f"{self.kind} {self.name}" + (f" {self.field}" if self.field else "")
        return f"{'warning' if self.warning else 'rejected'}: {where}: {self.reason}"


@dataclass(frozen=True)
class RouteConfig:
    """Everything the proxy needs to serve one snapshot of the cluster.

    Built whole, off the request path, then swapped in by replacing one reference:
    in-flight requests keep the config they started with. Nothing here changes after
    it is built (the router included: nobody calls its ``add`` again).
    """

    router: Router  # host + path -> Target; its default is the catch-all Target, if any
    certificates: Mapping[str, Certificate]  # TLS host ("a.com" or "*.a.com") -> certificate
    ingresses: tuple[str, ...]  # the Ingresses served, "namespace/name"
    problems: tuple[Problem, ...]  # rejected objects and fields, and warnings

    def certificate_for(self, server_name: str | None) -> Certificate | None:
        """The certificate for an SNI name: its exact host, then its wildcard, else None."""
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        found = self.certificates.get(name)
        if found is None and "." in name:
            label, _, parent = name.partition(".")
            if label and parent:
                found = self.certificates.get("*." + parent)
        return found

    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.warning)

    def rejected(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.warning)
