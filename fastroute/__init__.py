"""fastroute: Kubernetes Ingress routing, compiled.

``Router`` matches a request's host and path against Ingress rules with the
networking.k8s.io/v1 semantics; see its docstring for the precedence rules.
"""

try:
    from fastroute._match import PATH_TYPES, Router
except ModuleNotFoundError as error:  # a source tree whose extension was never built
    if error.name != "fastroute._match":
        raise
    raise ImportError(
        f"fastroute's compiled matcher is not built in {__path__[0]}: run "
        "'python -m pip install -e .' there, or run Python outside the source tree "
        "so that the installed fastroute is imported"
    ) from error
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
