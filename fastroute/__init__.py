"""fastroute: Kubernetes Ingress routing, compiled.

``Router`` matches a request's host and path against Ingress rules with the
networking.k8s.io/v1 semantics; see its docstring for the precedence rules.
"""

from fastroute._match import PATH_TYPES, Router
from fastroute.errors import (
    FastrouteError,
    InvalidRuleError,
    RouteConflictError,
    RouteError,
    RouteNotFoundError,
)
from fastroute.routes import Explanation, HostScope, Route

__version__ = "0.1.0"

__all__ = [
    "PATH_TYPES",
    "Explanation",
    "FastrouteError",
    "HostScope",
    "InvalidRuleError",
    "Route",
    "RouteConflictError",
    "RouteError",
    "RouteNotFoundError",
    "Router",
    "__version__",
]
