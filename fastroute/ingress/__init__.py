"""Kubernetes objects (plain dicts, as parsed from YAML or JSON) to an immutable RouteConfig.

Pure translation, no I/O: the controller feeds it a snapshot of Ingresses,
IngressClasses, Services, EndpointSlices (or legacy Endpoints) and Secrets; the
proxy serves from what it returns. Every object or field that cannot be used is
skipped with a ``Problem`` naming it and saying why; the rest still work.
"""

from fastroute.ingress.build import CONTROLLER_NAME, ClassPolicy, ConfigBuilder, build_config
from fastroute.ingress.model import Backend, Endpoint, Policy, Problem, RouteConfig, Target

__all__ = [
    "CONTROLLER_NAME",
    "Backend",
    "ClassPolicy",
    "ConfigBuilder",
    "Endpoint",
    "Policy",
    "Problem",
    "RouteConfig",
    "Target",
    "build_config",
]
